//! What a shared backend (Redis, MySQL) offers beyond the `Storage` trait: row-level deltas with a state version
//! other instances poll, atomic binding claims, sessions and login throttling looked up per call, and a call
//! log that every instance tails.
//!
//! Tokens and proxies are stored as rows of *groups* (small JSON documents that change together: health,
//! usage, meta…). An instance writes only the groups that changed since it last wrote or read them, so two
//! instances changing different things of one token (A: cooldown, B: last use) do not overwrite each other.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    CallLogEntry, ProxyRecord, ProxyStateFile, SessionRecord, StorageError, TokenFile, TokenRecord,
};

/// One stored row: key (token id or proxy URL) → group name → JSON.
pub type Groups = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Tokens,
    Proxies,
}

/// A row write. `insert: false` writes only if the row still exists (another instance may have deleted it,
/// and a stale health update must not bring it back).
#[derive(Debug, Clone, PartialEq)]
pub struct RowWrite {
    pub key: String,
    pub groups: Groups,
    pub insert: bool,
}

/// Position in the shared call log, and the log's epoch (bumped when entries are deleted, so tailers reload).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogCursor {
    pub after: String,
    pub epoch: u64,
}

/// One of this instance's call-log entries, numbered in the order this process made them (from 1).
pub type OwnEntry = (u64, std::sync::Arc<CallLogEntry>);

/// An instance's tag on the entries it appends: random per process, so entries of an earlier run of the
/// same host count as another instance's (they are not in this process's memory).
pub fn new_origin() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Serialises entries to JSON on the blocking pool: a batch can be thousands of entries, too long to hold a
/// runtime worker (one worker serves every request in small deployments).
pub async fn encode_entries<T: Send + 'static>(
    entries: Vec<(T, std::sync::Arc<CallLogEntry>)>,
) -> Result<Vec<(T, String)>, StorageError> {
    tokio::task::spawn_blocking(move || {
        entries
            .into_iter()
            .map(|(k, e)| {
                serde_json::to_string(e.as_ref())
                    .map(|j| (k, j))
                    .map_err(|source| StorageError::Encode {
                        what: "call-log entry".into(),
                        source,
                    })
            })
            .collect()
    })
    .await
    .map_err(|e| StorageError::Task(e.to_string()))?
}

#[derive(Debug, Default)]
pub struct LogTail {
    pub entries: Vec<CallLogEntry>,
    pub cursor: LogCursor,
    /// The epoch changed since `cursor`: the reader must drop what it has and read from the start.
    pub reset: bool,
    /// The read stopped at its limit: there may be more after `cursor`.
    pub more: bool,
}

#[async_trait]
pub trait SharedState: Send + Sync + 'static {
    /// Changes whenever a token, proxy or binding row changes.
    async fn state_version(&self) -> Result<u64, StorageError>;
    async fn load_rows(&self, table: Table) -> Result<Vec<(String, Groups)>, StorageError>;
    /// Applies writes and deletes in one atomic step and bumps the state version.
    async fn write_rows(
        &self,
        table: Table,
        writes: Vec<RowWrite>,
        deletes: Vec<String>,
    ) -> Result<(), StorageError>;

    async fn load_bindings(&self) -> Result<BTreeMap<String, String>, StorageError>;
    /// Atomic compare-and-set of a token's binding (`None` = unbound). Returns the binding after the call:
    /// `new` when `expected` matched, else the current one (another instance won).
    async fn cas_binding(
        &self,
        token_id: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Option<String>, StorageError>;

    async fn put_session(&self, s: &SessionRecord) -> Result<(), StorageError>;
    async fn delete_session(&self, token_hash: &str) -> Result<(), StorageError>;
    async fn session_expiry(&self, token_hash: &str) -> Result<Option<i64>, StorageError>;

    /// Counts a failed login for `client`; at `max` within `window` the client is locked for `lockout`.
    /// Returns true when this failure locked it.
    async fn login_failed(
        &self,
        client: &str,
        max: u32,
        window: Duration,
        lockout: Duration,
    ) -> Result<bool, StorageError>;
    async fn login_lock_left(&self, client: &str) -> Result<Option<Duration>, StorageError>;
    async fn login_succeeded(&self, client: &str) -> Result<(), StorageError>;

    /// Appends entries that did not come from this instance's traffic (an import), untagged.
    async fn append_log(
        &self,
        entries: &[std::sync::Arc<CallLogEntry>],
    ) -> Result<(), StorageError>;
    /// Appends this instance's own entries, each with its number in this process (increasing), tagged with
    /// the instance so tailers can leave them out. Idempotent: a retry after a lost reply writes nothing
    /// twice. Returns `cursor` moved past them when nothing from another instance lies between `cursor` and
    /// them (the next tail then has nothing to read), else `None`.
    async fn append_own_log(
        &self,
        entries: &[OwnEntry],
        cursor: &LogCursor,
    ) -> Result<Option<LogCursor>, StorageError>;
    /// Entries after `cursor`, oldest first. This instance's own entries (already in its memory) are left
    /// out, except with `include_own` or when the epoch changed (`reset`: the reader starts over).
    async fn tail_log(
        &self,
        cursor: &LogCursor,
        limit: usize,
        include_own: bool,
    ) -> Result<LogTail, StorageError>;
    /// Keeps the newest `keep` entries; returns how many were deleted. Bumps the epoch.
    async fn trim_log(&self, keep: usize) -> Result<usize, StorageError>;

    /// True for exactly one caller on a store that was never initialised: that caller imports `data/`.
    async fn claim_first_start(&self) -> Result<bool, StorageError>;
}

// ----- whole-store reads and writes on top of `SharedState` (import/export, first start) ----------------

/// The whole shared call log, oldest first (export, and the file-compatible `load_call_logs`).
pub async fn load_log(s: &dyn SharedState) -> Result<Vec<CallLogEntry>, StorageError> {
    let mut out = Vec::new();
    let mut cursor = LogCursor::default();
    loop {
        let tail = s.tail_log(&cursor, 5000, true).await?;
        out.extend(tail.entries);
        cursor = tail.cursor;
        if !tail.more {
            return Ok(out);
        }
    }
}

/// The token pool from its rows.
pub async fn load_token_file(s: &dyn SharedState) -> Result<TokenFile, StorageError> {
    let mut f = TokenFile::default();
    for (_, g) in s.load_rows(Table::Tokens).await? {
        if let Some((secret, sup, rec)) = token_from_groups(&g) {
            if sup {
                f.sso_super.insert(secret, rec);
            } else {
                f.sso_normal.insert(secret, rec);
            }
        }
    }
    Ok(f)
}

/// The rows of a token pool, keyed by token id.
pub fn token_rows(tokens: &TokenFile) -> Vec<(String, Groups)> {
    tokens
        .sso_normal
        .iter()
        .map(|(s, r)| (s, false, r))
        .chain(tokens.sso_super.iter().map(|(s, r)| (s, true, r)))
        .map(|(s, sup, r)| {
            (
                crate::util::sha256_hex(s.as_bytes())[..12].to_string(),
                token_groups(s, sup, r),
            )
        })
        .collect()
}

/// The proxy pool and bindings from their rows.
pub async fn load_proxy_file(s: &dyn SharedState) -> Result<ProxyStateFile, StorageError> {
    let mut f = ProxyStateFile::default();
    for (key, g) in s.load_rows(Table::Proxies).await? {
        if let Some(r) = proxy_from_groups(&key, &g) {
            f.proxies.insert(key, r);
        }
    }
    for (t, u) in s.load_bindings().await? {
        if let Some(p) = f.proxies.get_mut(&u) {
            p.assigned_sso.push(t.clone());
        }
        f.assignments.insert(t, u);
    }
    Ok(f)
}

/// The rows of a proxy pool, keyed by URL (bindings are stored apart).
pub fn proxy_rows(state: &ProxyStateFile) -> Vec<(String, Groups)> {
    state
        .proxies
        .iter()
        .map(|(k, r)| {
            let url = if r.url.is_empty() {
                k.clone()
            } else {
                r.url.clone()
            };
            (url, proxy_groups(r))
        })
        .collect()
}

/// Makes `table` hold exactly `rows`: writes them all and deletes the others, in one `write_rows`.
pub async fn replace_table(
    s: &dyn SharedState,
    table: Table,
    rows: Vec<(String, Groups)>,
) -> Result<(), StorageError> {
    let keep: std::collections::HashSet<&String> = rows.iter().map(|r| &r.0).collect();
    let deletes = s
        .load_rows(table)
        .await?
        .into_iter()
        .map(|r| r.0)
        .filter(|k| !keep.contains(k))
        .collect();
    let writes = rows
        .into_iter()
        .map(|(key, groups)| RowWrite {
            key,
            groups,
            insert: true,
        })
        .collect();
    s.write_rows(table, writes, deletes).await
}

// ----- row mappings (shared by every backend) -------------------------------------------------------------

pub const G_ID: &str = "id";
pub const G_HEALTH: &str = "health";
pub const G_USAGE: &str = "usage";
pub const G_META: &str = "meta";

fn to_json(v: &serde_json::Value) -> String {
    v.to_string()
}

fn obj(groups: &Groups, name: &str) -> serde_json::Map<String, serde_json::Value> {
    groups
        .get(name)
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| match v {
            serde_json::Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default()
}

/// A token's groups: `id` (secret, pool; written once), `health`, `usage`, `meta`.
pub fn token_groups(secret: &str, super_pool: bool, r: &TokenRecord) -> Groups {
    let v = serde_json::to_value(r).unwrap_or_default();
    let pick = |keys: &[&str]| {
        let mut m = serde_json::Map::new();
        for k in keys {
            if let Some(x) = v.get(*k) {
                m.insert((*k).to_string(), x.clone());
            }
        }
        m
    };
    let health = pick(&[
        "status",
        "failedCount",
        "cooldownUntil",
        "lastFailureTime",
        "lastFailureReason",
    ]);
    let usage = pick(&["remainingQueries", "heavyremainingQueries", "lastUsedTime"]);
    // Meta: everything else (created time, tags, note, unknown keys).
    let mut meta = v.as_object().cloned().unwrap_or_default();
    for k in health.keys().chain(usage.keys()) {
        meta.remove(k);
    }
    for k in ["cooldownUntil", "lastUsedTime"] {
        meta.remove(k);
    }
    let mut g = Groups::new();
    g.insert(
        G_ID.into(),
        to_json(&serde_json::json!({"secret": secret, "super": super_pool})),
    );
    g.insert(G_HEALTH.into(), to_json(&serde_json::Value::Object(health)));
    g.insert(G_USAGE.into(), to_json(&serde_json::Value::Object(usage)));
    g.insert(G_META.into(), to_json(&serde_json::Value::Object(meta)));
    g
}

/// The record back from its groups; `None` when the row has no secret (a torn or foreign row).
pub fn token_from_groups(groups: &Groups) -> Option<(String, bool, TokenRecord)> {
    let id = obj(groups, G_ID);
    let secret = id.get("secret")?.as_str()?.to_string();
    let super_pool = id.get("super").and_then(|v| v.as_bool()).unwrap_or(false);
    let mut all = obj(groups, G_META);
    all.extend(obj(groups, G_HEALTH));
    all.extend(obj(groups, G_USAGE));
    let record: TokenRecord = serde_json::from_value(serde_json::Value::Object(all)).ok()?;
    Some((secret, super_pool, record))
}

/// A proxy's groups: `health` (healthy, failures, last error), `usage` (counters, latency, last use/seen),
/// `meta` (URL, source, unknown keys). Bindings live apart.
pub fn proxy_groups(r: &ProxyRecord) -> Groups {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("assigned_sso");
    }
    let take = |v: &mut serde_json::Value, keys: &[&str]| {
        let mut m = serde_json::Map::new();
        if let Some(o) = v.as_object_mut() {
            for k in keys {
                if let Some(x) = o.remove(*k) {
                    m.insert((*k).to_string(), x);
                }
            }
        }
        serde_json::Value::Object(m)
    };
    let health = take(&mut v, &["healthy", "fail_count", "last_error"]);
    let usage = take(
        &mut v,
        &[
            "last_used",
            "total_requests",
            "success_requests",
            "ewma_latency_ms",
            "last_seen",
        ],
    );
    let mut g = Groups::new();
    g.insert(G_HEALTH.into(), to_json(&health));
    g.insert(G_USAGE.into(), to_json(&usage));
    g.insert(G_META.into(), to_json(&v));
    g
}

pub fn proxy_from_groups(key: &str, groups: &Groups) -> Option<ProxyRecord> {
    let mut all = obj(groups, G_META);
    all.extend(obj(groups, G_HEALTH));
    all.extend(obj(groups, G_USAGE));
    let mut r: ProxyRecord = serde_json::from_value(serde_json::Value::Object(all)).ok()?;
    if r.url.is_empty() {
        r.url = key.to_string();
    }
    Some(r)
}

/// The groups of `now` that differ from `before` (all of them when there is no `before`).
pub fn changed_groups(before: Option<&Groups>, now: &Groups) -> Groups {
    now.iter()
        .filter(|(k, v)| before.and_then(|b| b.get(*k)) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_groups_round_trip_and_split() {
        let mut r = TokenRecord {
            created_time: Some(5),
            failed_count: 2,
            status: "expired".into(),
            cooldown_until: Some(99),
            last_used_time: Some(7),
            tags: vec!["a".into()],
            note: "n".into(),
            ..TokenRecord::default()
        };
        r.extra.insert("zeroCount".into(), serde_json::json!(0));
        let g = token_groups("sec", true, &r);
        assert!(g[G_HEALTH].contains("\"failedCount\":2"));
        assert!(g[G_HEALTH].contains("cooldownUntil"));
        assert!(!g[G_META].contains("cooldownUntil"));
        assert!(g[G_USAGE].contains("\"lastUsedTime\":7"));
        assert!(g[G_META].contains("zeroCount"));
        assert!(!g[G_META].contains("sec"));
        let (secret, sup, back) = token_from_groups(&g).unwrap();
        assert_eq!((secret.as_str(), sup), ("sec", true));
        assert_eq!(back, r);
        // A row without its id group is not a token.
        let mut torn = g.clone();
        torn.remove(G_ID);
        assert!(token_from_groups(&torn).is_none());
    }

    #[test]
    fn proxy_groups_round_trip_without_bindings() {
        let r = ProxyRecord {
            url: "http://u:p@h:1".into(),
            healthy: false,
            fail_count: 3,
            assigned_sso: vec!["t".into()],
            total_requests: 9,
            source: Some("admin".into()),
            ..ProxyRecord::default()
        };
        let g = proxy_groups(&r);
        assert!(g[G_HEALTH].contains("\"healthy\":false"));
        assert!(g[G_USAGE].contains("\"total_requests\":9"));
        assert!(!g.values().any(|v| v.contains("assigned_sso")));
        let back = proxy_from_groups("x", &g).unwrap();
        assert_eq!(
            back,
            ProxyRecord {
                assigned_sso: vec![],
                ..r
            }
        );
    }

    #[test]
    fn only_changed_groups_are_written() {
        let a = token_groups("s", false, &TokenRecord::default());
        let b = token_groups(
            "s",
            false,
            &TokenRecord {
                failed_count: 1,
                ..TokenRecord::default()
            },
        );
        let d = changed_groups(Some(&a), &b);
        assert_eq!(d.keys().collect::<Vec<_>>(), vec![G_HEALTH]);
        assert_eq!(changed_groups(None, &b).len(), 4);
        assert!(changed_groups(Some(&b), &b).is_empty());
    }
}
