use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::Serialize;

use crate::secret::Secret;
use crate::storage::{Storage, StorageError, TokenFile, TokenRecord};
use crate::util::{now_ms, now_ms_coarse, sha256_hex};

mod shared;

/// Failures in a row (401/403) after which a token is expired.
pub const MAX_AUTH_FAILURES: u32 = 3;
const COOLDOWN_BASE: Duration = Duration::from_secs(5);
const COOLDOWN_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum TokenKind {
    #[serde(rename = "sso")]
    Normal,
    #[serde(rename = "ssoSuper")]
    Super,
}

impl TokenKind {
    /// Accepts Grok2API's names: `sso` and `ssoNormal` are the normal pool, `ssoSuper` the super pool.
    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "sso" | "ssoNormal" | "normal" => Some(TokenKind::Normal),
            "ssoSuper" | "super" => Some(TokenKind::Super),
            _ => None,
        }
    }
}

/// The status shown to operators, with Grok2API's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Unused,
    Limited,
    Expired,
    Active,
}

impl TokenStatus {
    pub fn label(self) -> &'static str {
        match self {
            TokenStatus::Unused => "未使用",
            TokenStatus::Limited => "限流中",
            TokenStatus::Expired => "失效",
            TokenStatus::Active => "正常",
        }
    }
    pub fn parse(s: &str) -> Option<TokenStatus> {
        match s {
            "未使用" | "unused" => Some(TokenStatus::Unused),
            "限流中" | "limited" => Some(TokenStatus::Limited),
            "失效" | "expired" => Some(TokenStatus::Expired),
            "正常" | "active" => Some(TokenStatus::Active),
            _ => None,
        }
    }
}

/// Fields only the admin API changes; behind a small per-token mutex the request path never takes.
#[derive(Debug, Clone)]
struct TokenMeta {
    tags: Vec<String>,
    note: String,
    last_failure_time: Option<i64>,
    last_failure_reason: Option<String>,
    extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug)]
pub struct Token {
    /// Stable public id: the first 12 hex chars of the secret's SHA-256.
    pub id: String,
    /// `id` again, shared: every request's record carries it.
    shared_id: Arc<str>,
    secret: Secret,
    /// Whether the secret can go into a header value; checked once, as it never changes.
    header_safe: bool,
    masked: Arc<str>,
    pub kind: TokenKind,
    pub created_time: Option<i64>,
    remaining_queries: AtomicI64,
    heavy_remaining_queries: AtomicI64,
    expired: AtomicBool,
    failed_count: AtomicU32,
    consecutive_429: AtomicU32,
    /// 0 when not cooling down.
    cooldown_until_ms: AtomicI64,
    last_used_ms: AtomicI64,
    in_flight: AtomicU32,
    meta: Mutex<TokenMeta>,
}

pub fn token_id(secret: &str) -> String {
    sha256_hex(secret.as_bytes())[..12].to_string()
}

impl Token {
    fn from_record(secret: String, kind: TokenKind, r: TokenRecord) -> Token {
        let id = token_id(&secret);
        Token {
            shared_id: Arc::from(id.as_str()),
            id,
            masked: Arc::from(crate::secret::mask(&secret)),
            header_safe: crate::config::header_value_safe(&secret),
            secret: Secret::new(secret),
            kind,
            created_time: r.created_time,
            remaining_queries: AtomicI64::new(r.remaining_queries),
            heavy_remaining_queries: AtomicI64::new(r.heavy_remaining_queries),
            expired: AtomicBool::new(r.status == "expired"),
            failed_count: AtomicU32::new(r.failed_count),
            consecutive_429: AtomicU32::new(0),
            cooldown_until_ms: AtomicI64::new(r.cooldown_until.unwrap_or(0)),
            last_used_ms: AtomicI64::new(r.last_used_time.unwrap_or(0)),
            in_flight: AtomicU32::new(0),
            meta: Mutex::new(TokenMeta {
                tags: r.tags,
                note: r.note,
                last_failure_time: r.last_failure_time,
                last_failure_reason: r.last_failure_reason,
                extra: r.extra,
            }),
        }
    }

    fn to_record(&self) -> TokenRecord {
        let meta = self.meta.lock().clone();
        let cooldown = self.cooldown_until_ms.load(Ordering::Relaxed);
        let last_used = self.last_used_ms.load(Ordering::Relaxed);
        TokenRecord {
            created_time: self.created_time,
            remaining_queries: self.remaining_queries.load(Ordering::Relaxed),
            heavy_remaining_queries: self.heavy_remaining_queries.load(Ordering::Relaxed),
            status: if self.is_expired() {
                "expired"
            } else {
                "active"
            }
            .into(),
            failed_count: self.failed_count.load(Ordering::Relaxed),
            last_failure_time: meta.last_failure_time,
            last_failure_reason: meta.last_failure_reason,
            tags: meta.tags,
            note: meta.note,
            cooldown_until: (cooldown > now_ms()).then_some(cooldown),
            last_used_time: (last_used > 0).then_some(last_used),
            extra: meta.extra,
        }
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }
    /// The masked form, computed once.
    pub fn masked(&self) -> String {
        self.masked.to_string()
    }
    /// The id and the masked form as a request's record carries them: no allocation per request.
    pub fn record_labels(&self) -> (Arc<str>, Arc<str>) {
        (self.shared_id.clone(), self.masked.clone())
    }
    /// Whether the secret has only bytes a header value may hold ([`crate::config::header_value_safe`]).
    pub fn header_safe(&self) -> bool {
        self.header_safe
    }
    pub fn is_expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }
    /// Milliseconds of cooldown left (0 when usable).
    pub fn cooldown_remaining_ms(&self, now: i64) -> i64 {
        (self.cooldown_until_ms.load(Ordering::Relaxed) - now).max(0)
    }
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
    pub fn failed_count(&self) -> u32 {
        self.failed_count.load(Ordering::Relaxed)
    }
    pub fn remaining_queries(&self) -> i64 {
        self.remaining_queries.load(Ordering::Relaxed)
    }
    pub fn heavy_remaining_queries(&self) -> i64 {
        self.heavy_remaining_queries.load(Ordering::Relaxed)
    }
    pub fn tags(&self) -> Vec<String> {
        self.meta.lock().tags.clone()
    }
    pub fn note(&self) -> String {
        self.meta.lock().note.clone()
    }
    pub fn last_failure(&self) -> (Option<i64>, Option<String>) {
        let m = self.meta.lock();
        (m.last_failure_time, m.last_failure_reason.clone())
    }

    fn relevant_remaining(&self) -> i64 {
        let normal = self.remaining_queries();
        match self.kind {
            TokenKind::Normal => normal,
            TokenKind::Super => normal.max(self.heavy_remaining_queries()),
        }
    }

    pub fn status(&self, now: i64) -> TokenStatus {
        if self.is_expired() {
            TokenStatus::Expired
        } else if self.cooldown_remaining_ms(now) > 0 || self.relevant_remaining() == 0 {
            TokenStatus::Limited
        } else if self.relevant_remaining() == -1 && self.last_used_ms.load(Ordering::Relaxed) == 0
        {
            TokenStatus::Unused
        } else {
            TokenStatus::Active
        }
    }

    fn usable(&self, now: i64, heavy: bool) -> bool {
        if self.is_expired() || self.cooldown_remaining_ms(now) > 0 {
            return false;
        }
        let remaining = if heavy {
            self.heavy_remaining_queries()
        } else {
            self.remaining_queries()
        };
        remaining != 0
    }
}

/// What an upstream attempt with a token came to; the pool turns it into health.
#[derive(Debug, Clone)]
pub enum Outcome {
    Success {
        /// `x-ratelimit-remaining-requests` when the upstream sends it.
        remaining: Option<i64>,
    },
    RateLimited {
        retry_after: Option<Duration>,
    },
    AuthFailed {
        status: u16,
        message: String,
    },
    /// 5xx, connect errors, timeouts: not the token's fault, no change to its health.
    Transient,
}

/// A token taken for one attempt. Counts as in flight until dropped.
pub struct TokenLease {
    token: Arc<Token>,
    pool: Arc<PoolShared>,
}

impl std::fmt::Debug for TokenLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenLease")
            .field("id", &self.token.id)
            .finish()
    }
}

impl TokenLease {
    pub fn token(&self) -> &Arc<Token> {
        &self.token
    }

    /// Records the outcome of the attempt in the token's health.
    pub fn report(&self, outcome: Outcome) {
        let t = &self.token;
        let now = now_ms_coarse();
        match outcome {
            Outcome::Success { remaining } => {
                t.last_used_ms.store(now, Ordering::Relaxed);
                t.consecutive_429.store(0, Ordering::Relaxed);
                if let Some(r) = remaining {
                    t.remaining_queries.store(r, Ordering::Relaxed);
                }
                if t.failed_count.swap(0, Ordering::Relaxed) != 0 {
                    let mut m = t.meta.lock();
                    m.last_failure_time = None;
                    m.last_failure_reason = None;
                }
            }
            Outcome::RateLimited { retry_after } => {
                let n = t.consecutive_429.fetch_add(1, Ordering::Relaxed) + 1;
                let wait = retry_after.unwrap_or_else(|| {
                    let exp = COOLDOWN_BASE.saturating_mul(1u32 << (n - 1).min(10));
                    exp.min(COOLDOWN_MAX)
                });
                t.cooldown_until_ms
                    .store(now + wait.as_millis() as i64, Ordering::Relaxed);
                tracing::warn!(token = %t.id, cooldown_s = wait.as_secs_f64(), "token rate limited; cooling down");
            }
            Outcome::AuthFailed { status, message } => {
                let n = t.failed_count.fetch_add(1, Ordering::Relaxed) + 1;
                {
                    let mut m = t.meta.lock();
                    m.last_failure_time = Some(now);
                    m.last_failure_reason = Some(format!("{status}: {message}"));
                }
                if n >= MAX_AUTH_FAILURES && !t.expired.swap(true, Ordering::Relaxed) {
                    tracing::warn!(token = %t.id, failures = n, "token expired after repeated auth failures");
                }
            }
            Outcome::Transient => return,
        }
        self.pool.mark_dirty();
    }
}

impl Drop for TokenLease {
    fn drop(&mut self) {
        self.token.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct PoolShared {
    /// Bumped on every change that should reach storage; the saver compares it with what it last wrote.
    version: AtomicU64,
}

impl PoolShared {
    fn mark_dirty(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }
}

pub struct TokenPool {
    tokens: ArcSwap<Vec<Arc<Token>>>,
    next: AtomicUsize,
    shared: Arc<PoolShared>,
    saved_version: AtomicU64,
    /// Serialises admin edits (copy-on-write of the snapshot) and saves; never taken by requests. Holds the
    /// shared-mode merge base (empty in file mode).
    edit: tokio::sync::Mutex<shared::Base>,
    storage: Arc<dyn Storage>,
}

/// Result of an add: how many were new and how many already present (left unchanged).
#[derive(Debug, Default, Serialize)]
pub struct AddResult {
    pub added: usize,
    pub existing: usize,
    pub skipped_blank: usize,
    /// Secrets with characters an HTTP header cannot carry (control characters, non-ASCII, spaces): such a
    /// token could never be sent upstream.
    pub skipped_invalid: usize,
}

impl TokenPool {
    pub async fn load(storage: Arc<dyn Storage>) -> Result<TokenPool, StorageError> {
        let file = storage.load_tokens().await?;
        let mut tokens = Vec::with_capacity(file.sso_normal.len() + file.sso_super.len());
        for (kind, map) in [
            (TokenKind::Normal, file.sso_normal),
            (TokenKind::Super, file.sso_super),
        ] {
            for (secret, record) in map {
                if secret.trim().is_empty() {
                    continue;
                }
                tokens.push(Arc::new(Token::from_record(secret, kind, record)));
            }
        }
        Ok(TokenPool {
            tokens: ArcSwap::from_pointee(tokens),
            next: AtomicUsize::new(0),
            shared: Arc::new(PoolShared {
                version: AtomicU64::new(0),
            }),
            saved_version: AtomicU64::new(0),
            edit: tokio::sync::Mutex::new(shared::Base::default()),
            storage,
        })
    }

    pub fn snapshot(&self) -> Arc<Vec<Arc<Token>>> {
        self.tokens.load_full()
    }

    pub fn len(&self) -> usize {
        self.tokens.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Picks a usable token for `model`, skipping `exclude` (ids already tried by this request).
    /// Super models use super tokens only; other models prefer normal tokens and fall back to super ones.
    /// Among usable tokens the least busy wins, starting from a rotating offset so ties spread evenly.
    pub fn pick(&self, model_is_super: bool, exclude: &[String]) -> Option<TokenLease> {
        let tokens = self.tokens.load();
        let n = tokens.len();
        if n == 0 {
            return None;
        }
        // Cooldowns are seconds long: the coarse clock is precise enough, and it is read on every request.
        let now = now_ms_coarse();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let kinds: &[TokenKind] = if model_is_super {
            &[TokenKind::Super]
        } else {
            &[TokenKind::Normal, TokenKind::Super]
        };
        for &kind in kinds {
            let mut best: Option<&Arc<Token>> = None;
            for i in 0..n {
                let t = &tokens[(start + i) % n];
                if t.kind != kind || !t.usable(now, model_is_super) || exclude.contains(&t.id) {
                    continue;
                }
                if best.is_none_or(|b| t.in_flight() < b.in_flight()) {
                    best = Some(t);
                    // Nothing beats an idle token: stop here, so a large pool is not scanned whole per
                    // request (the rotating start already spreads the idle ones).
                    if t.in_flight() == 0 {
                        break;
                    }
                }
            }
            if let Some(t) = best {
                t.in_flight.fetch_add(1, Ordering::Relaxed);
                return Some(TokenLease {
                    token: t.clone(),
                    pool: self.shared.clone(),
                });
            }
        }
        None
    }

    /// Milliseconds until the first cooling token for this kind of model is usable again, if any is cooling.
    pub fn soonest_cooldown_ms(&self, model_is_super: bool) -> Option<i64> {
        let now = now_ms();
        self.tokens
            .load()
            .iter()
            .filter(|t| !t.is_expired() && (!model_is_super || t.kind == TokenKind::Super))
            .map(|t| t.cooldown_remaining_ms(now))
            .filter(|ms| *ms > 0)
            .min()
    }

    /// Finds a token by its id or by its secret.
    pub fn find(&self, id_or_secret: &str) -> Option<Arc<Token>> {
        let key = id_or_secret.trim();
        self.tokens
            .load()
            .iter()
            .find(|t| t.id == key || t.secret.expose() == key)
            .cloned()
    }

    /// A lease on a specific token, for admin tests; not counted against selection.
    pub fn lease(&self, token: &Arc<Token>) -> TokenLease {
        token.in_flight.fetch_add(1, Ordering::Relaxed);
        TokenLease {
            token: token.clone(),
            pool: self.shared.clone(),
        }
    }

    pub async fn add(&self, secrets: &[String], kind: TokenKind) -> AddResult {
        let _g = self.edit.lock().await;
        let current = self.tokens.load_full();
        let mut next: Vec<Arc<Token>> = current.as_ref().clone();
        let mut result = AddResult::default();
        for raw in secrets {
            let secret = raw.trim();
            if secret.is_empty() {
                result.skipped_blank += 1;
                continue;
            }
            if !secret.bytes().all(|b| b.is_ascii_graphic()) {
                result.skipped_invalid += 1;
                continue;
            }
            // Re-adding a known token keeps its record (Grok2API reset quotas, tags and note).
            if next.iter().any(|t| t.secret.expose() == secret) {
                result.existing += 1;
                continue;
            }
            let record = TokenRecord {
                created_time: Some(now_ms()),
                ..TokenRecord::default()
            };
            next.push(Arc::new(Token::from_record(
                secret.to_string(),
                kind,
                record,
            )));
            result.added += 1;
        }
        if result.added > 0 {
            self.tokens.store(Arc::new(next));
            self.shared.mark_dirty();
        }
        result
    }

    /// Deletes tokens given by id or secret; returns how many were removed.
    pub async fn delete(&self, keys: &[String]) -> usize {
        let _g = self.edit.lock().await;
        let current = self.tokens.load_full();
        let keys: Vec<&str> = keys.iter().map(|k| k.trim()).collect();
        let next: Vec<Arc<Token>> = current
            .iter()
            .filter(|t| !keys.iter().any(|k| *k == t.id || *k == t.secret.expose()))
            .cloned()
            .collect();
        let removed = current.len() - next.len();
        if removed > 0 {
            self.tokens.store(Arc::new(next));
            self.shared.mark_dirty();
        }
        removed
    }

    pub fn set_tags(&self, token: &Token, tags: &[String]) -> Vec<String> {
        let mut clean: Vec<String> = Vec::new();
        for t in tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            if !clean.iter().any(|c| c == t) {
                clean.push(t.to_string());
            }
        }
        token.meta.lock().tags = clean.clone();
        self.shared.mark_dirty();
        clean
    }

    pub fn set_note(&self, token: &Token, note: &str) -> String {
        let note = note.trim().to_string();
        token.meta.lock().note = note.clone();
        self.shared.mark_dirty();
        note
    }

    /// Brings an expired or cooling token back (after a successful admin test, say).
    pub fn revive(&self, token: &Token) {
        token.expired.store(false, Ordering::Relaxed);
        token.cooldown_until_ms.store(0, Ordering::Relaxed);
        token.consecutive_429.store(0, Ordering::Relaxed);
        self.shared.mark_dirty();
    }

    pub fn all_tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self.tokens.load().iter().flat_map(|t| t.tags()).collect();
        tags.sort();
        tags.dedup();
        tags
    }

    pub fn is_dirty(&self) -> bool {
        self.shared.version.load(Ordering::Acquire) != self.saved_version.load(Ordering::Acquire)
    }

    /// Saves when something changed since the last save. The version is read before the snapshot, so a change
    /// made during the save leaves the pool dirty for the next one instead of being lost.
    pub async fn save_if_dirty(&self) -> Result<bool, StorageError> {
        if self.storage.shared().is_some() {
            return self.push_shared().await;
        }
        let _g = self.edit.lock().await;
        let version = self.shared.version.load(Ordering::Acquire);
        if version == self.saved_version.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut file = TokenFile::default();
        for t in self.tokens.load().iter() {
            let map = match t.kind {
                TokenKind::Normal => &mut file.sso_normal,
                TokenKind::Super => &mut file.sso_super,
            };
            map.insert(t.secret.expose().to_string(), t.to_record());
        }
        self.storage.save_tokens(&file).await?;
        self.saved_version.store(version, Ordering::Release);
        Ok(true)
    }

    /// Saves every `interval` while running; the caller flushes once more at shutdown.
    pub async fn run_saver(
        self: Arc<Self>,
        interval: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut stop = stop;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if let Err(e) = self.save_if_dirty().await {
                tracing::error!(error = %e, "saving token state failed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FileStorage;

    async fn pool_with(n: usize) -> (tempfile::TempDir, TokenPool) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(FileStorage::new(dir.path()).unwrap());
        let pool = TokenPool::load(storage).await.unwrap();
        let secrets: Vec<String> = (0..n).map(|i| format!("secret-token-{i}")).collect();
        pool.add(&secrets, TokenKind::Normal).await;
        (dir, pool)
    }

    #[test]
    fn header_safety_is_known_per_token() {
        // `add` refuses such secrets, but a token file written by another tool may hold them.
        for s in [
            "plain-token",
            "with\ttab",
            "with\u{1}ctl",
            "with\u{7f}del",
            "ünïcode",
        ] {
            let t = Token::from_record(s.to_string(), TokenKind::Normal, TokenRecord::default());
            let valid = http::HeaderValue::from_str(s).is_ok() || !s.is_ascii();
            assert_eq!(t.header_safe(), valid, "{s:?}");
        }
        let bad = Token::from_record("a\nb".into(), TokenKind::Normal, TokenRecord::default());
        assert!(!bad.header_safe());
    }

    #[tokio::test]
    async fn add_skips_secrets_a_header_cannot_carry() {
        let (_d, pool) = pool_with(0).await;
        let secrets: Vec<String> = ["ok-token", "has space", "ctl\u{1}x", "ünïcode", " trimmed "]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = pool.add(&secrets, TokenKind::Normal).await;
        assert_eq!((r.added, r.skipped_invalid), (2, 3));
        assert_eq!(pool.len(), 2);
    }

    #[tokio::test]
    async fn pick_spreads_load_round_robin() {
        let (_d, pool) = pool_with(3).await;
        let mut seen = std::collections::HashMap::new();
        for _ in 0..30 {
            let lease = pool.pick(false, &[]).unwrap();
            *seen.entry(lease.token().id.clone()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3);
        assert!(seen.values().all(|&c| c == 10), "{seen:?}");
    }

    #[tokio::test]
    async fn pick_prefers_least_in_flight() {
        let (_d, pool) = pool_with(2).await;
        let held = pool.pick(false, &[]).unwrap();
        for _ in 0..5 {
            let l = pool.pick(false, &[]).unwrap();
            assert_ne!(l.token().id, held.token().id);
        }
    }

    #[tokio::test]
    async fn cooldown_and_expiry() {
        let (_d, pool) = pool_with(1).await;
        let lease = pool.pick(false, &[]).unwrap();
        lease.report(Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
        });
        drop(lease);
        assert!(pool.pick(false, &[]).is_none());
        assert!(pool.soonest_cooldown_ms(false).unwrap() > 50_000);
        let t = pool.snapshot()[0].clone();
        assert_eq!(t.status(now_ms()), TokenStatus::Limited);
        pool.revive(&t);
        for _ in 0..3 {
            let l = pool.pick(false, &[]).unwrap();
            l.report(Outcome::AuthFailed {
                status: 401,
                message: "bad".into(),
            });
        }
        assert!(t.is_expired());
        assert!(pool.pick(false, &[]).is_none());
        assert_eq!(t.status(now_ms()), TokenStatus::Expired);
    }

    #[tokio::test]
    async fn success_resets_failures() {
        let (_d, pool) = pool_with(1).await;
        let l = pool.pick(false, &[]).unwrap();
        l.report(Outcome::AuthFailed {
            status: 401,
            message: "x".into(),
        });
        l.report(Outcome::Success { remaining: None });
        assert_eq!(l.token().failed_count(), 0);
        assert_eq!(l.token().last_failure(), (None, None));
    }

    #[tokio::test]
    async fn super_models_use_super_tokens_only() {
        let (_d, pool) = pool_with(2).await;
        assert!(pool.pick(true, &[]).is_none());
        pool.add(&["super-secret-token-x".into()], TokenKind::Super)
            .await;
        assert_eq!(pool.pick(true, &[]).unwrap().token().kind, TokenKind::Super);
        // Normal models prefer normal tokens.
        for _ in 0..4 {
            assert_eq!(
                pool.pick(false, &[]).unwrap().token().kind,
                TokenKind::Normal
            );
        }
    }

    #[tokio::test]
    async fn readd_keeps_record_and_save_round_trips() {
        let (dir, pool) = pool_with(1).await;
        let t = pool.snapshot()[0].clone();
        pool.set_note(&t, " keep me ");
        let r = pool
            .add(&["secret-token-0".into(), " ".into()], TokenKind::Normal)
            .await;
        assert_eq!((r.added, r.existing, r.skipped_blank), (0, 1, 1));
        assert_eq!(pool.find(&t.id).unwrap().note(), "keep me");
        assert!(pool.save_if_dirty().await.unwrap());
        assert!(!pool.save_if_dirty().await.unwrap());
        let storage = Arc::new(FileStorage::new(dir.path()).unwrap());
        let again = TokenPool::load(storage).await.unwrap();
        assert_eq!(again.find("secret-token-0").unwrap().note(), "keep me");
        assert_eq!(again.find(&t.id).unwrap().id, t.id);
    }
}
