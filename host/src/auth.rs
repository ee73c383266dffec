//! Admin sessions and login throttling.
//!
//! A session token is 32 random bytes (base64url, 43 characters) shown once to the browser; only its SHA-256
//! is kept and stored, so the session store on disk cannot be replayed. Failed logins are counted per client
//! address; after [`MAX_FAILURES`] within [`FAILURE_WINDOW`] that client gets 429 for [`LOCKOUT`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use parking_lot::Mutex;

use crate::secret::constant_time_eq;
use crate::storage::{SessionRecord, Storage, StorageError};
use crate::util::{now_ms, sha256_hex};

pub const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
pub const LOCKOUT: Duration = Duration::from_secs(60);
/// Bounds memory however many clients fail or log in.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, PartialEq, Eq)]
pub enum SessionCheck {
    Valid,
    Unknown,
    Expired,
}

pub struct Sessions {
    by_hash: Mutex<HashMap<String, i64>>,
    storage: Arc<dyn Storage>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

impl Sessions {
    pub async fn load(storage: Arc<dyn Storage>) -> Result<Sessions, StorageError> {
        let records = storage.load_sessions().await?;
        Ok(Sessions {
            by_hash: Mutex::new(
                records
                    .into_iter()
                    .map(|r| (r.token_hash, r.expires_at_ms))
                    .collect(),
            ),
            storage,
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Seconds the client must wait before trying again, if it is locked out.
    pub fn locked_out(&self, ip: IpAddr) -> Option<u64> {
        let f = self.failures.lock();
        let until = f.get(&ip)?.locked_until?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(left.as_secs().max(1))
    }

    /// Checks credentials in constant time, counting failures. `Ok(token)` on success.
    pub async fn login(
        &self,
        ip: IpAddr,
        username: &str,
        password: &str,
        want_user: &str,
        want_password: &str,
    ) -> Result<String, ()> {
        // Both comparisons always run so timing does not tell which one failed.
        let user_ok = constant_time_eq(username, want_user);
        let pass_ok = constant_time_eq(password, want_password);
        if !(user_ok && pass_ok) {
            self.record_failure(ip);
            return Err(());
        }
        self.failures.lock().remove(&ip);
        let mut raw = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let expires = now_ms() + SESSION_TTL.as_millis() as i64;
        {
            let mut map = self.by_hash.lock();
            let now = now_ms();
            map.retain(|_, exp| *exp > now);
            map.insert(sha256_hex(token.as_bytes()), expires);
        }
        self.persist().await;
        Ok(token)
    }

    fn record_failure(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut map = self.failures.lock();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, f| now.duration_since(f.first) < FAILURE_WINDOW);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            first: now,
            locked_until: None,
        });
        if now.duration_since(f.first) > FAILURE_WINDOW {
            *f = Failures {
                count: 0,
                first: now,
                locked_until: None,
            };
        }
        f.count += 1;
        if f.count >= MAX_FAILURES {
            f.locked_until = Some(now + LOCKOUT);
            f.count = 0;
            f.first = now;
            tracing::warn!(client = %ip, "too many failed admin logins; client locked out for a minute");
        }
    }

    pub fn check(&self, token: &str) -> SessionCheck {
        let hash = sha256_hex(token.as_bytes());
        let map = self.by_hash.lock();
        match map.get(&hash) {
            None => SessionCheck::Unknown,
            Some(exp) if *exp <= now_ms() => SessionCheck::Expired,
            Some(_) => SessionCheck::Valid,
        }
    }

    pub async fn logout(&self, token: &str) -> bool {
        let removed = self
            .by_hash
            .lock()
            .remove(&sha256_hex(token.as_bytes()))
            .is_some();
        if removed {
            self.persist().await;
        }
        removed
    }

    async fn persist(&self) {
        let records: Vec<SessionRecord> = self
            .by_hash
            .lock()
            .iter()
            .map(|(h, e)| SessionRecord {
                token_hash: h.clone(),
                expires_at_ms: *e,
            })
            .collect();
        if let Err(e) = self.storage.save_sessions(&records).await {
            // The session still works in this process; only a restart would forget it.
            tracing::error!(error = %e, "saving admin sessions failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FileStorage;

    #[tokio::test]
    async fn login_check_logout_and_throttle() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FileStorage::new(dir.path()).unwrap());
        let s = Sessions::load(storage.clone()).await.unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let token = s.login(ip, "admin", "pw", "admin", "pw").await.unwrap();
        assert_eq!(token.len(), 43);
        assert_eq!(s.check(&token), SessionCheck::Valid);
        assert_eq!(s.check("nope"), SessionCheck::Unknown);
        // Survives a restart, and the file holds only the hash.
        let again = Sessions::load(storage.clone()).await.unwrap();
        assert_eq!(again.check(&token), SessionCheck::Valid);
        let file = std::fs::read_to_string(dir.path().join("admin_sessions.json")).unwrap();
        assert!(!file.contains(&token));
        assert!(s.logout(&token).await);
        assert_eq!(s.check(&token), SessionCheck::Unknown);

        for _ in 0..MAX_FAILURES {
            assert!(s.locked_out(ip).is_none());
            assert!(s.login(ip, "admin", "bad", "admin", "pw").await.is_err());
        }
        assert!(s.locked_out(ip).is_some());
    }
}
