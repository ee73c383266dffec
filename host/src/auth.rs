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
    /// Shared mode: the store cannot be asked right now.
    Unavailable,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    BadCredentials,
    /// Shared mode: the session could not be stored.
    Unavailable,
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
        let records = if storage.shared().is_some() {
            Vec::new()
        } else {
            storage.load_sessions().await?
        };
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

    /// Seconds the client must wait before trying again, if it is locked out. Shared mode asks the store
    /// (failure counts are shared); a store error does not lock anyone out.
    pub async fn locked_out(&self, ip: IpAddr) -> Option<u64> {
        if let Some(shared) = self.storage.shared() {
            return match shared.login_lock_left(&ip.to_string()).await {
                Ok(left) => left.map(|d| d.as_secs().max(1)),
                Err(e) => {
                    tracing::error!(error = %e, "login throttle lookup failed");
                    None
                }
            };
        }
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
    ) -> Result<String, LoginError> {
        // Both comparisons always run so timing does not tell which one failed.
        let user_ok = constant_time_eq(username, want_user);
        let pass_ok = constant_time_eq(password, want_password);
        if !(user_ok && pass_ok) {
            match self.storage.shared() {
                Some(shared) => {
                    match shared
                        .login_failed(&ip.to_string(), MAX_FAILURES, FAILURE_WINDOW, LOCKOUT)
                        .await
                    {
                        Ok(true) => {
                            tracing::warn!(client = %ip, "too many failed admin logins; client locked out for a minute")
                        }
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "recording a failed login failed"),
                    }
                }
                None => self.record_failure(ip),
            }
            return Err(LoginError::BadCredentials);
        }
        let mut raw = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let expires = now_ms() + SESSION_TTL.as_millis() as i64;
        if let Some(shared) = self.storage.shared() {
            let rec = SessionRecord {
                token_hash: sha256_hex(token.as_bytes()),
                expires_at_ms: expires,
            };
            let stored = async {
                shared.login_succeeded(&ip.to_string()).await?;
                shared.put_session(&rec).await
            };
            return match stored.await {
                Ok(()) => Ok(token),
                Err(e) => {
                    tracing::error!(error = %e, "storing an admin session failed");
                    Err(LoginError::Unavailable)
                }
            };
        }
        self.failures.lock().remove(&ip);
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

    /// Shared mode asks the store every time (admin calls only), so a logout on one instance ends the
    /// session on all of them.
    pub async fn check(&self, token: &str) -> SessionCheck {
        let hash = sha256_hex(token.as_bytes());
        if let Some(shared) = self.storage.shared() {
            return match shared.session_expiry(&hash).await {
                Ok(None) => SessionCheck::Unknown,
                Ok(Some(exp)) if exp <= now_ms() => SessionCheck::Expired,
                Ok(Some(_)) => SessionCheck::Valid,
                Err(e) => {
                    tracing::error!(error = %e, "session lookup failed");
                    SessionCheck::Unavailable
                }
            };
        }
        let map = self.by_hash.lock();
        match map.get(&hash) {
            None => SessionCheck::Unknown,
            Some(exp) if *exp <= now_ms() => SessionCheck::Expired,
            Some(_) => SessionCheck::Valid,
        }
    }

    pub async fn logout(&self, token: &str) -> bool {
        if let Some(shared) = self.storage.shared() {
            return shared
                .delete_session(&sha256_hex(token.as_bytes()))
                .await
                .is_ok();
        }
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
        assert_eq!(s.check(&token).await, SessionCheck::Valid);
        assert_eq!(s.check("nope").await, SessionCheck::Unknown);
        // Survives a restart, and the file holds only the hash.
        let again = Sessions::load(storage.clone()).await.unwrap();
        assert_eq!(again.check(&token).await, SessionCheck::Valid);
        let file = std::fs::read_to_string(dir.path().join("admin_sessions.json")).unwrap();
        assert!(!file.contains(&token));
        assert!(s.logout(&token).await);
        assert_eq!(s.check(&token).await, SessionCheck::Unknown);

        for _ in 0..MAX_FAILURES {
            assert!(s.locked_out(ip).await.is_none());
            assert!(s.login(ip, "admin", "bad", "admin", "pw").await.is_err());
        }
        assert!(s.locked_out(ip).await.is_some());
    }
}
