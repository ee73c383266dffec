//! MySQL / MariaDB backend (`STORAGE_MODE=mysql`), on `sqlx` with a connection pool. Schema in
//! `host/migrations/mysql/` (embedded at compile time, run at start-up; `_sqlx_migrations` records them):
//!
//! - `g2a_rows` (table, key) lists token and proxy rows, `g2a_groups` (table, key, group) holds their groups
//!   (see `shared.rs`); `g2a_bindings` token id → proxy URL, unique per token by its primary key;
//! - `g2a_meta`: `ver` (bumped by every row or binding change, polled by instances), `logepoch` (bumped on
//!   deletions), `logseq` (lock row serialising appends), `init` (set by the first start or an import);
//! - `g2a_sessions` hash → expiry; `g2a_login` failure counts and lockouts per client;
//! - `g2a_call_logs`: one row per entry (`seq` auto-increment, unique `entry_id`, JSON `entry`, and indexed
//!   copies of time, token id, model and success for the admin filters; `origin` tags the appending
//!   process, so its own tail can skip what it already holds).
//!
//! Every multi-row change is one transaction. The pool tests a connection before handing it out, so a
//! server that went away and came back is reconnected to; while it is away calls fail with an error and
//! callers retry on their next tick.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Connection, MySql, QueryBuilder, Row};

use super::shared::{self, Groups, LogCursor, LogTail, RowWrite, SharedState, Table};
use super::{CallLogEntry, ProxyStateFile, SessionRecord, Storage, StorageError, TokenFile};
use crate::config::StorageMode;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");

/// Rows per multi-row statement (well under the 65 535 placeholders of a prepared statement).
const CHUNK: usize = 500;
/// Rows per retention `DELETE`: small enough that no statement holds many locks or a long undo log.
const DELETE_BATCH: u64 = 5000;
/// Retention runs at most this often per instance (and after every `DELETE_BATCH` appended entries).
const RETENTION_EVERY_MS: i64 = 5000;

fn err(what: &str, e: sqlx::Error) -> StorageError {
    StorageError::Backend(format!("mysql {what}: {e}"))
}

fn table_id(t: Table) -> u8 {
    match t {
        Table::Tokens => 0,
        Table::Proxies => 1,
    }
}

/// Text from a binary or text column (keys are `VARBINARY`; reading bytes works for both kinds).
fn text(row: &MySqlRow, idx: usize) -> Result<String, StorageError> {
    let b: Vec<u8> = row.try_get(idx).map_err(|e| err("decode", e))?;
    String::from_utf8(b).map_err(|e| StorageError::Backend(format!("mysql decode: {e}")))
}

pub struct MysqlStorage {
    pool: MySqlPool,
    /// `global.log_max_count` (0: unlimited): older entries are deleted in batches.
    log_max: usize,
    /// When this instance last enforced retention (ms), and entries appended since.
    retention_at: AtomicI64,
    appended_since: AtomicI64,
    /// This process's tag on the log entries it appends.
    origin: String,
}

impl MysqlStorage {
    /// Connects, checks the server answers and runs pending migrations. Errors name the URL with its
    /// password masked.
    pub async fn connect(url: &str, log_max: usize) -> Result<MysqlStorage, StorageError> {
        let masked = super::redis::mask_url(url);
        let password = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.password().map(str::to_string));
        let scrub = |s: String| match &password {
            Some(p) if !p.is_empty() => s.replace(p.as_str(), "****"),
            _ => s,
        };
        let bad = |why: String| {
            StorageError::Config(format!(
                "DATABASE_URL {masked} is not a valid MySQL URL (mysql://user:pass@host:port/db): {}",
                scrub(why)
            ))
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "mysql" | "mariadb") {
            return Err(bad(format!("scheme `{}`", parsed.scheme())));
        }
        if parsed.path().trim_matches('/').is_empty() {
            return Err(bad("no database name".into()));
        }
        let opts = MySqlConnectOptions::from_str(&url.replacen("mariadb://", "mysql://", 1))
            .map_err(|e| bad(e.to_string()))?;
        let unreachable = |e: String| {
            StorageError::Unreachable(format!("cannot reach MySQL at {masked}: {}", scrub(e)))
        };
        // One plain connection first: a pool would retry until its timeout and report only that.
        let first = tokio::time::timeout(
            Duration::from_secs(10),
            MySqlConnection::connect_with(&opts),
        )
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        first.close().await.ok();
        let pool = MySqlPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(3))
            .idle_timeout(Some(Duration::from_secs(300)))
            .test_before_acquire(true)
            .connect_lazy_with(opts);
        MIGRATOR.run(&pool).await.map_err(|e| {
            StorageError::Unreachable(format!(
                "cannot prepare the MySQL schema at {masked}: {}",
                scrub(e.to_string())
            ))
        })?;
        Ok(MysqlStorage {
            pool,
            log_max,
            retention_at: AtomicI64::new(0),
            appended_since: AtomicI64::new(0),
            origin: shared::new_origin(),
        })
    }

    /// Inserts call-log entries tagged with `origin` ("" for imports).
    async fn insert_log(
        &self,
        entries: Vec<shared::OwnEntry>,
        origin: &str,
    ) -> Result<(), StorageError> {
        let n = entries.len();
        let rows =
            shared::encode_entries(entries.into_iter().map(|(_, e)| (e.clone(), e)).collect())
                .await?;
        for chunk in rows.chunks(CHUNK) {
            let mut tx = self.begin().await?;
            // Appends take turns on this row, so `seq` grows in commit order and a tailer that has read up
            // to some `seq` never finds an older one committed later.
            sqlx::query("SELECT v FROM g2a_meta WHERE k = 'logseq' FOR UPDATE")
                .execute(&mut *tx)
                .await
                .map_err(|e| err("append log", e))?;
            // INSERT IGNORE on the unique entry id: a retry after a lost reply writes nothing twice.
            QueryBuilder::<MySql>::new(
                "INSERT IGNORE INTO g2a_call_logs \
                 (entry_id, ts, token_id, model, success, status_code, origin, entry) ",
            )
            .push_values(chunk, |mut b, (e, json)| {
                b.push_bind(truncated(&e.id, 255))
                    .push_bind(e.timestamp)
                    .push_bind(truncated(&e.token_id, 64))
                    .push_bind(truncated(&e.model, 128))
                    .push_bind(e.success)
                    .push_bind(e.status_code)
                    .push_bind(origin)
                    .push_bind(json.as_str());
            })
            .build()
            .execute(&mut *tx)
            .await
            .map_err(|e| err("append log", e))?;
            tx.commit().await.map_err(|e| err("append log", e))?;
        }
        self.maybe_enforce_retention(n).await
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, MySql>, StorageError> {
        self.pool.begin().await.map_err(|e| err("begin", e))
    }

    async fn meta(&self, k: &str) -> Result<i64, StorageError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT v FROM g2a_meta WHERE k = ?")
            .bind(k)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| err("read meta", e))?;
        Ok(v.unwrap_or(0))
    }

    /// Deletes the oldest entries so that at most `keep` remain (0: all), in batches; returns how many.
    async fn delete_oldest(&self, keep: usize) -> Result<usize, StorageError> {
        let cutoff: Option<u64> = if keep == 0 {
            Some(u64::MAX)
        } else {
            // The newest entry to delete: an index-only walk of `keep` primary keys.
            sqlx::query_scalar("SELECT seq FROM g2a_call_logs ORDER BY seq DESC LIMIT 1 OFFSET ?")
                .bind(keep as u64)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| err("find retention cutoff", e))?
        };
        let Some(cutoff) = cutoff else {
            return Ok(0);
        };
        let mut deleted = 0usize;
        loop {
            let n = sqlx::query("DELETE FROM g2a_call_logs WHERE seq <= ? ORDER BY seq LIMIT ?")
                .bind(cutoff)
                .bind(DELETE_BATCH)
                .execute(&self.pool)
                .await
                .map_err(|e| err("delete call-log entries", e))?
                .rows_affected();
            deleted += n as usize;
            if n < DELETE_BATCH {
                return Ok(deleted);
            }
        }
    }

    /// `log_max_count` retention, now and then (it walks `log_max` index entries).
    async fn maybe_enforce_retention(&self, appended: usize) -> Result<(), StorageError> {
        if self.log_max == 0 {
            return Ok(());
        }
        let since = self
            .appended_since
            .fetch_add(appended as i64, Ordering::Relaxed)
            + appended as i64;
        let now = crate::util::now_ms();
        let last = self.retention_at.load(Ordering::Relaxed);
        if now - last < RETENTION_EVERY_MS && since < DELETE_BATCH as i64 {
            return Ok(());
        }
        self.retention_at.store(now, Ordering::Relaxed);
        self.appended_since.store(0, Ordering::Relaxed);
        let n = self.delete_oldest(self.log_max).await?;
        if n > 0 {
            tracing::debug!(deleted = n, "call-log retention in MySQL");
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for MysqlStorage {
    fn mode(&self) -> StorageMode {
        StorageMode::Mysql
    }

    fn shared(&self) -> Option<&dyn SharedState> {
        Some(self)
    }

    async fn load_tokens(&self) -> Result<TokenFile, StorageError> {
        shared::load_token_file(self).await
    }

    async fn save_tokens(&self, tokens: &TokenFile) -> Result<(), StorageError> {
        shared::replace_table(self, Table::Tokens, shared::token_rows(tokens)).await
    }

    async fn load_sessions(&self) -> Result<Vec<SessionRecord>, StorageError> {
        let rows = sqlx::query(
            "SELECT token_hash, expires_at_ms FROM g2a_sessions WHERE expires_at_ms > ? \
             ORDER BY token_hash",
        )
        .bind(crate::util::now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| err("read sessions", e))?;
        rows.iter()
            .map(|r| {
                Ok(SessionRecord {
                    token_hash: text(r, 0)?,
                    expires_at_ms: r.try_get(1).map_err(|e| err("decode", e))?,
                })
            })
            .collect()
    }

    async fn save_sessions(&self, sessions: &[SessionRecord]) -> Result<(), StorageError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM g2a_sessions")
            .execute(&mut *tx)
            .await
            .map_err(|e| err("replace sessions", e))?;
        for chunk in sessions.chunks(CHUNK) {
            QueryBuilder::<MySql>::new("INSERT INTO g2a_sessions (token_hash, expires_at_ms) ")
                .push_values(chunk, |mut b, s| {
                    b.push_bind(&s.token_hash).push_bind(s.expires_at_ms);
                })
                .push(" ON DUPLICATE KEY UPDATE expires_at_ms = VALUES(expires_at_ms)")
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|e| err("replace sessions", e))?;
        }
        tx.commit().await.map_err(|e| err("commit", e))
    }

    async fn load_call_logs(&self) -> Result<Vec<CallLogEntry>, StorageError> {
        shared::load_log(self).await
    }

    async fn append_call_logs(&self, batch: Vec<Arc<CallLogEntry>>) -> Result<(), StorageError> {
        self.append_log(&batch).await
    }

    async fn replace_call_logs(&self, mut all: Vec<Arc<CallLogEntry>>) -> Result<(), StorageError> {
        // Import/export only: the old log goes (TRUNCATE drops and recreates the table, no row-by-row
        // delete), and tailers reload.
        sqlx::query("TRUNCATE TABLE g2a_call_logs")
            .execute(&self.pool)
            .await
            .map_err(|e| err("clear call log", e))?;
        sqlx::query("UPDATE g2a_meta SET v = v + 1 WHERE k = 'logepoch'")
            .execute(&self.pool)
            .await
            .map_err(|e| err("bump log epoch", e))?;
        all.sort_by_key(|e| e.timestamp);
        for chunk in all.chunks(2000) {
            self.append_log(chunk).await?;
        }
        Ok(())
    }

    async fn load_proxy_state(&self) -> Result<ProxyStateFile, StorageError> {
        shared::load_proxy_file(self).await
    }

    async fn save_proxy_state(&self, state: &ProxyStateFile) -> Result<(), StorageError> {
        shared::replace_table(self, Table::Proxies, shared::proxy_rows(state)).await?;
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM g2a_bindings")
            .execute(&mut *tx)
            .await
            .map_err(|e| err("replace bindings", e))?;
        let pairs: Vec<_> = state.assignments.iter().collect();
        for chunk in pairs.chunks(CHUNK) {
            QueryBuilder::<MySql>::new("INSERT INTO g2a_bindings (token_id, proxy) ")
                .push_values(chunk, |mut b, (t, u)| {
                    b.push_bind(t.as_str()).push_bind(u.as_str());
                })
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|e| err("replace bindings", e))?;
        }
        bump_ver(&mut tx).await?;
        tx.commit().await.map_err(|e| err("commit", e))
    }
}

async fn bump_ver(tx: &mut sqlx::Transaction<'static, MySql>) -> Result<(), StorageError> {
    sqlx::query("UPDATE g2a_meta SET v = v + 1 WHERE k = 'ver'")
        .execute(&mut **tx)
        .await
        .map_err(|e| err("bump version", e))?;
    Ok(())
}

#[async_trait]
impl SharedState for MysqlStorage {
    async fn state_version(&self) -> Result<u64, StorageError> {
        Ok(self.meta("ver").await? as u64)
    }

    async fn load_rows(&self, table: Table) -> Result<Vec<(String, Groups)>, StorageError> {
        let rows =
            sqlx::query("SELECT rkey, grp, val FROM g2a_groups WHERE tbl = ? ORDER BY rkey, grp")
                .bind(table_id(table))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| err("read rows", e))?;
        let mut out: Vec<(String, Groups)> = Vec::new();
        for r in &rows {
            let (key, grp, val) = (text(r, 0)?, text(r, 1)?, text(r, 2)?);
            match out.last_mut() {
                Some((k, g)) if *k == key => {
                    g.insert(grp, val);
                }
                _ => out.push((key, Groups::from([(grp, val)]))),
            }
        }
        Ok(out)
    }

    async fn write_rows(
        &self,
        table: Table,
        mut writes: Vec<RowWrite>,
        mut deletes: Vec<String>,
    ) -> Result<(), StorageError> {
        if writes.is_empty() && deletes.is_empty() {
            return Ok(());
        }
        let t = table_id(table);
        // One lock order for every writer (keys sorted, `ver` last), so two instances cannot deadlock.
        writes.sort_by(|a, b| a.key.cmp(&b.key));
        deletes.sort();
        let mut tx = self.begin().await?;
        let mut changed = false;
        for chunk in deletes.chunks(CHUNK) {
            for sql in [
                "DELETE FROM g2a_groups WHERE tbl = ",
                "DELETE FROM g2a_rows WHERE tbl = ",
            ] {
                let mut q = QueryBuilder::<MySql>::new(sql);
                q.push_bind(t).push(" AND rkey IN (");
                let mut sep = q.separated(", ");
                for k in chunk {
                    sep.push_bind(k.as_str());
                }
                q.push(")");
                q.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| err("delete rows", e))?;
            }
            changed = true;
        }
        for chunk in writes.chunks(CHUNK) {
            let inserts: Vec<&RowWrite> = chunk.iter().filter(|w| w.insert).collect();
            if !inserts.is_empty() {
                QueryBuilder::<MySql>::new("INSERT IGNORE INTO g2a_rows (tbl, rkey) ")
                    .push_values(&inserts, |mut b, w| {
                        b.push_bind(t).push_bind(w.key.as_str());
                    })
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| err("insert rows", e))?;
            }
            // Updates apply only to rows still there (locked until commit, so a delete cannot slip between).
            let updates: Vec<&RowWrite> = chunk.iter().filter(|w| !w.insert).collect();
            let mut present = std::collections::HashSet::new();
            if !updates.is_empty() {
                let mut q = QueryBuilder::<MySql>::new("SELECT rkey FROM g2a_rows WHERE tbl = ");
                q.push_bind(t).push(" AND rkey IN (");
                let mut sep = q.separated(", ");
                for w in &updates {
                    sep.push_bind(w.key.as_str());
                }
                q.push(") FOR UPDATE");
                for r in q
                    .build()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| err("lock rows", e))?
                {
                    present.insert(text(&r, 0)?);
                }
            }
            let groups: Vec<(&str, &String, &String)> = chunk
                .iter()
                .filter(|w| w.insert || present.contains(&w.key))
                .flat_map(|w| w.groups.iter().map(move |(g, v)| (w.key.as_str(), g, v)))
                .collect();
            for part in groups.chunks(CHUNK) {
                QueryBuilder::<MySql>::new("INSERT INTO g2a_groups (tbl, rkey, grp, val) ")
                    .push_values(part, |mut b, (k, g, v)| {
                        b.push_bind(t)
                            .push_bind(*k)
                            .push_bind(g.as_str())
                            .push_bind(v.as_str());
                    })
                    .push(" ON DUPLICATE KEY UPDATE val = VALUES(val)")
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| err("write groups", e))?;
                changed = true;
            }
            if !inserts.is_empty() {
                changed = true;
            }
        }
        if changed {
            bump_ver(&mut tx).await?;
        }
        tx.commit().await.map_err(|e| err("commit", e))
    }

    async fn load_bindings(&self) -> Result<BTreeMap<String, String>, StorageError> {
        let rows = sqlx::query("SELECT token_id, proxy FROM g2a_bindings")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| err("read bindings", e))?;
        rows.iter()
            .map(|r| Ok((text(r, 0)?, text(r, 1)?)))
            .collect()
    }

    async fn cas_binding(
        &self,
        token_id: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Option<String>, StorageError> {
        let mut tx = self.begin().await?;
        // Each statement below locks the token's binding row (or its slot) until commit; the primary key
        // makes a second binding impossible, whichever instance comes second.
        let changed = match (expected, new) {
            (None, Some(n)) => {
                sqlx::query("INSERT IGNORE INTO g2a_bindings (token_id, proxy) VALUES (?, ?)")
                    .bind(token_id)
                    .bind(n)
                    .execute(&mut *tx)
                    .await
            }
            (Some(e), Some(n)) => {
                sqlx::query("UPDATE g2a_bindings SET proxy = ? WHERE token_id = ? AND proxy = ?")
                    .bind(n)
                    .bind(token_id)
                    .bind(e)
                    .execute(&mut *tx)
                    .await
            }
            (Some(e), None) => {
                sqlx::query("DELETE FROM g2a_bindings WHERE token_id = ? AND proxy = ?")
                    .bind(token_id)
                    .bind(e)
                    .execute(&mut *tx)
                    .await
            }
            (None, None) => Ok(Default::default()),
        }
        .map_err(|e| err("claim binding", e))?
        .rows_affected()
            > 0;
        let cur: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT proxy FROM g2a_bindings WHERE token_id = ? FOR UPDATE")
                .bind(token_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| err("claim binding", e))?;
        if changed {
            bump_ver(&mut tx).await?;
        }
        tx.commit().await.map_err(|e| err("commit", e))?;
        Ok(cur.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    async fn put_session(&self, s: &SessionRecord) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO g2a_sessions (token_hash, expires_at_ms) VALUES (?, ?) \
             ON DUPLICATE KEY UPDATE expires_at_ms = VALUES(expires_at_ms)",
        )
        .bind(&s.token_hash)
        .bind(s.expires_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| err("write session", e))?;
        // Expired sessions are swept a few at a time as new ones arrive (no server-side expiry here).
        sqlx::query("DELETE FROM g2a_sessions WHERE expires_at_ms <= ? LIMIT 100")
            .bind(crate::util::now_ms())
            .execute(&self.pool)
            .await
            .map_err(|e| err("sweep sessions", e))?;
        Ok(())
    }

    async fn delete_session(&self, token_hash: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM g2a_sessions WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(|e| err("delete session", e))?;
        Ok(())
    }

    async fn session_expiry(&self, token_hash: &str) -> Result<Option<i64>, StorageError> {
        sqlx::query_scalar(
            "SELECT expires_at_ms FROM g2a_sessions WHERE token_hash = ? AND expires_at_ms > ?",
        )
        .bind(token_hash)
        .bind(crate::util::now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| err("read session", e))
    }

    async fn login_failed(
        &self,
        client: &str,
        max: u32,
        window: Duration,
        lockout: Duration,
    ) -> Result<bool, StorageError> {
        let now = crate::util::now_ms();
        let mut tx = self.begin().await?;
        // A count whose window has passed starts again at 1.
        sqlx::query(
            "INSERT INTO g2a_login (client, failures, window_until_ms, locked_until_ms) \
             VALUES (?, 1, ?, 0) ON DUPLICATE KEY UPDATE \
             failures = IF(window_until_ms <= ?, 1, failures + 1), \
             window_until_ms = IF(window_until_ms <= ?, VALUES(window_until_ms), window_until_ms)",
        )
        .bind(client)
        .bind(now + window.as_millis() as i64)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| err("login failure", e))?;
        let n: i32 = sqlx::query_scalar("SELECT failures FROM g2a_login WHERE client = ?")
            .bind(client)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| err("login failure", e))?;
        let locked = n >= max as i32;
        if locked {
            sqlx::query(
                "UPDATE g2a_login SET failures = 0, window_until_ms = 0, locked_until_ms = ? \
                 WHERE client = ?",
            )
            .bind(now + lockout.as_millis() as i64)
            .bind(client)
            .execute(&mut *tx)
            .await
            .map_err(|e| err("login lockout", e))?;
        }
        tx.commit().await.map_err(|e| err("commit", e))?;
        Ok(locked)
    }

    async fn login_lock_left(&self, client: &str) -> Result<Option<Duration>, StorageError> {
        let until: Option<i64> =
            sqlx::query_scalar("SELECT locked_until_ms FROM g2a_login WHERE client = ?")
                .bind(client)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| err("read lockout", e))?;
        let left = until.unwrap_or(0) - crate::util::now_ms();
        Ok((left > 0).then(|| Duration::from_millis(left as u64)))
    }

    async fn login_succeeded(&self, client: &str) -> Result<(), StorageError> {
        sqlx::query("UPDATE g2a_login SET failures = 0, window_until_ms = 0 WHERE client = ?")
            .bind(client)
            .execute(&self.pool)
            .await
            .map_err(|e| err("reset login failures", e))?;
        Ok(())
    }

    async fn append_log(&self, entries: &[Arc<CallLogEntry>]) -> Result<(), StorageError> {
        self.insert_log(entries.iter().map(|e| (0, e.clone())).collect(), "")
            .await
    }

    async fn append_own_log(
        &self,
        entries: &[shared::OwnEntry],
        _cursor: &LogCursor,
    ) -> Result<Option<LogCursor>, StorageError> {
        // The tail's `seq > ?` read is one indexed range scan that skips own rows' JSON; no fast-forward.
        self.insert_log(entries.to_vec(), &self.origin).await?;
        Ok(None)
    }

    async fn tail_log(
        &self,
        cursor: &LogCursor,
        limit: usize,
        include_own: bool,
    ) -> Result<LogTail, StorageError> {
        let epoch = self.meta("logepoch").await? as u64;
        let reset = epoch != cursor.epoch && !cursor.after.is_empty();
        let after: u64 = if reset {
            0
        } else {
            cursor.after.parse().unwrap_or(0)
        };
        // Own rows come back without their JSON: they only move the cursor.
        let skip = if include_own || reset {
            ""
        } else {
            self.origin.as_str()
        };
        let rows = sqlx::query(
            "SELECT seq, IF(origin <> '' AND origin = ?, NULL, entry) FROM g2a_call_logs \
             WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(skip)
        .bind(after)
        .bind(limit as u64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| err("read call log", e))?;
        let mut out = LogTail {
            entries: Vec::with_capacity(rows.len()),
            cursor: LogCursor {
                after: if reset {
                    String::new()
                } else {
                    cursor.after.clone()
                },
                epoch,
            },
            reset,
            more: rows.len() >= limit,
        };
        for r in &rows {
            let seq: u64 = r.try_get(0).map_err(|e| err("decode", e))?;
            out.cursor.after = seq.to_string();
            let json: Option<Vec<u8>> = r.try_get(1).map_err(|e| err("decode", e))?;
            let Some(json) = json else { continue };
            match serde_json::from_slice::<CallLogEntry>(&json) {
                Ok(e) => out.entries.push(e),
                Err(e) => {
                    tracing::warn!(error = %e, seq, "skipping an unreadable call-log entry in MySQL")
                }
            }
        }
        Ok(out)
    }

    async fn trim_log(&self, keep: usize) -> Result<usize, StorageError> {
        let deleted = self.delete_oldest(keep).await?;
        sqlx::query("UPDATE g2a_meta SET v = v + 1 WHERE k = 'logepoch'")
            .execute(&self.pool)
            .await
            .map_err(|e| err("bump log epoch", e))?;
        Ok(deleted)
    }

    async fn claim_first_start(&self) -> Result<bool, StorageError> {
        let n = sqlx::query("INSERT IGNORE INTO g2a_meta (k, v) VALUES ('init', ?)")
            .bind(crate::util::now_ms())
            .execute(&self.pool)
            .await
            .map_err(|e| err("claim first start", e))?
            .rows_affected();
        Ok(n == 1)
    }
}

/// At most `max` bytes of `s`, cut at a character boundary (index columns are bounded; the JSON keeps all).
fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncated;

    #[test]
    fn index_copies_are_cut_at_char_boundaries() {
        assert_eq!(truncated("abc", 5), "abc");
        assert_eq!(truncated("abcdef", 3), "abc");
        // "é" is two bytes: a cut inside it backs off to before it.
        assert_eq!(truncated("aé", 2), "a");
    }

    #[test]
    fn migrations_are_embedded_in_order() {
        let v: Vec<i64> = super::MIGRATOR.iter().map(|m| m.version).collect();
        assert!(!v.is_empty());
        assert!(v.windows(2).all(|w| w[0] < w[1]), "{v:?}");
    }
}
