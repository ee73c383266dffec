//! File storage under the data directory, with Grok2API's file names. Every write is atomic: a temp file in
//! the same directory, fsync, rename, fsync of the directory. A file that cannot be read is moved aside to
//! `NAME.corrupt-<unix time>` and never overwritten.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{CallLogEntry, ProxyStateFile, SessionRecord, Storage, StorageError, TokenFile};
use crate::config::StorageMode;

pub const TOKENS_FILE: &str = "token.json";
pub const SESSIONS_FILE: &str = "admin_sessions.json";
/// Grok2API's call-log file: `{"logs": [...oldest first...], "meta": {...}}`, rewritten at compaction only.
pub const CALL_LOGS_FILE: &str = "call_logs.json";
/// New entries since the last compaction, one JSON object a line, appended at every flush.
pub const CALL_LOGS_JOURNAL: &str = "call_logs.journal.ndjson";

#[derive(serde::Deserialize, Default)]
struct CallLogFile {
    #[serde(default)]
    logs: Vec<CallLogEntry>,
}

#[derive(serde::Serialize)]
struct CallLogFileOut<'a> {
    logs: &'a [Arc<CallLogEntry>],
    meta: serde_json::Value,
}

pub const PROXY_STATE_FILE: &str = "proxy_state.json";

#[derive(Debug, Clone)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    pub fn new(dir: impl Into<PathBuf>) -> Result<FileStorage, StorageError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| StorageError::Io {
            what: dir.display().to_string(),
            source,
        })?;
        Ok(FileStorage { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn load_json<T: DeserializeOwned + Default + Send + 'static>(
        &self,
        name: &'static str,
    ) -> Result<T, StorageError> {
        let path = self.dir.join(name);
        blocking(move || read_json_or_set_aside(&path)).await?
    }

    async fn save_json<T>(&self, name: &'static str, value: &T) -> Result<(), StorageError>
    where
        T: ToOwned + ?Sized,
        T::Owned: Serialize + Send + 'static,
    {
        // Encoding a large pool takes milliseconds: a copy goes to the blocking pool with the write, so the
        // runtime worker serving requests only pays for the copy.
        let value = value.to_owned();
        let path = self.dir.join(name);
        blocking(move || {
            let bytes =
                serde_json::to_vec_pretty(&value).map_err(|source| StorageError::Encode {
                    what: name.into(),
                    source,
                })?;
            write_atomic(&path, &bytes)
        })
        .await?
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Task(e.to_string()))
}

/// Reads a JSON file. Missing → default. Unreadable or not valid → moved aside, logged, default.
pub fn read_json_or_set_aside<T: DeserializeOwned + Default>(
    path: &Path,
) -> Result<T, StorageError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(source) => {
            return Err(StorageError::Io {
                what: path.display().to_string(),
                source,
            })
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(v),
        Err(e) => {
            let aside = set_aside(path)?;
            tracing::error!(
                file = %path.display(),
                moved_to = %aside.display(),
                error = %e,
                "unreadable state file moved aside; starting with empty state for it"
            );
            Ok(T::default())
        }
    }
}

fn set_aside(path: &Path) -> Result<PathBuf, StorageError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{secs}"));
    let mut aside = path.with_file_name(&name);
    let mut n = 1;
    while aside.exists() {
        let mut alt = name.clone();
        alt.push(format!(".{n}"));
        aside = path.with_file_name(alt);
        n += 1;
    }
    std::fs::rename(path, &aside).map_err(|source| StorageError::Io {
        what: path.display().to_string(),
        source,
    })?;
    Ok(aside)
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    use std::io::Write;
    let io = |source| StorageError::Io {
        what: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[async_trait]
impl Storage for FileStorage {
    fn mode(&self) -> StorageMode {
        StorageMode::File
    }

    async fn load_tokens(&self) -> Result<TokenFile, StorageError> {
        let mut f: TokenFile = self.load_json(TOKENS_FILE).await?;
        let migrated = f.migrate_legacy();
        if migrated > 0 {
            tracing::info!(migrated, "legacy `sso` tokens merged into `ssoNormal`");
        }
        Ok(f)
    }

    async fn save_tokens(&self, tokens: &TokenFile) -> Result<(), StorageError> {
        self.save_json(TOKENS_FILE, tokens).await
    }

    async fn load_sessions(&self) -> Result<Vec<SessionRecord>, StorageError> {
        let all: Vec<SessionRecord> = self.load_json(SESSIONS_FILE).await?;
        let now = crate::util::now_ms();
        Ok(all.into_iter().filter(|s| s.expires_at_ms > now).collect())
    }

    async fn save_sessions(&self, sessions: &[SessionRecord]) -> Result<(), StorageError> {
        self.save_json(SESSIONS_FILE, sessions).await
    }

    async fn load_call_logs(&self) -> Result<Vec<CallLogEntry>, StorageError> {
        let dir = self.dir.clone();
        blocking(move || load_call_logs(&dir)).await?
    }

    async fn append_call_logs(&self, batch: Vec<Arc<CallLogEntry>>) -> Result<(), StorageError> {
        let path = self.dir.join(CALL_LOGS_JOURNAL);
        blocking(move || {
            let io = |source| StorageError::Io {
                what: path.display().to_string(),
                source,
            };
            let mut buf = Vec::with_capacity(batch.len() * 400);
            for e in &batch {
                serde_json::to_writer(&mut buf, e.as_ref()).map_err(|source| {
                    StorageError::Encode {
                        what: CALL_LOGS_JOURNAL.into(),
                        source,
                    }
                })?;
                buf.push(b'\n');
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io)?;
            f.write_all(&buf).map_err(io)?;
            // Durable before the batch counts as persisted.
            f.sync_data().map_err(io)
        })
        .await?
    }

    async fn replace_call_logs(&self, all: Vec<Arc<CallLogEntry>>) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        blocking(move || {
            let out = CallLogFileOut {
                logs: &all,
                meta: serde_json::json!({"total_count": all.len(), "last_save": crate::util::now_ms()}),
            };
            let bytes = serde_json::to_vec_pretty(&out).map_err(|source| StorageError::Encode {
                what: CALL_LOGS_FILE.into(),
                source,
            })?;
            write_atomic(&dir.join(CALL_LOGS_FILE), &bytes)?;
            // Only once the full file is in place may the journal go; a crash in between leaves duplicates,
            // which loading removes.
            let journal = dir.join(CALL_LOGS_JOURNAL);
            match std::fs::OpenOptions::new().write(true).truncate(true).open(&journal) {
                Ok(f) => f.sync_all().map_err(|source| StorageError::Io {
                    what: journal.display().to_string(),
                    source,
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(StorageError::Io {
                    what: journal.display().to_string(),
                    source,
                }),
            }
        })
        .await?
    }

    // --- Proxy pool state -------------------------------------------------------------------------------
    async fn load_proxy_state(&self) -> Result<ProxyStateFile, StorageError> {
        self.load_json(PROXY_STATE_FILE).await
    }

    async fn save_proxy_state(&self, state: &ProxyStateFile) -> Result<(), StorageError> {
        self.save_json(PROXY_STATE_FILE, state).await
    }
}

/// Entries of a call-log journal, and how many lines could not be read (a torn last line after a crash).
pub fn decode_journal(bytes: &[u8]) -> (Vec<CallLogEntry>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    for line in bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
    {
        match serde_json::from_slice::<CallLogEntry>(line) {
            Ok(e) if !e.id.is_empty() => out.push(e),
            _ => skipped += 1,
        }
    }
    (out, skipped)
}

/// `call_logs.json` (an unreadable one is set aside) plus the journal (a torn last line from a crash is
/// skipped), without duplicates.
fn load_call_logs(dir: &Path) -> Result<Vec<CallLogEntry>, StorageError> {
    let file: CallLogFile = read_json_or_set_aside(&dir.join(CALL_LOGS_FILE))?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(file.logs.len());
    for mut e in file.logs {
        if e.id.is_empty() {
            e.id = uuid::Uuid::new_v4().to_string();
        }
        if seen.insert(e.id.clone()) {
            out.push(e);
        }
    }
    let journal = dir.join(CALL_LOGS_JOURNAL);
    let bytes = match std::fs::read(&journal) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(StorageError::Io {
                what: journal.display().to_string(),
                source,
            })
        }
    };
    let (entries, skipped) = decode_journal(&bytes);
    for e in entries {
        if seen.insert(e.id.clone()) {
            out.push(e);
        }
    }
    if skipped > 0 {
        tracing::warn!(skipped, file = %journal.display(), "skipped unreadable call-log journal lines");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::TokenRecord;

    fn entry(id: &str, ts: i64) -> Arc<CallLogEntry> {
        Arc::new(CallLogEntry {
            id: id.into(),
            timestamp: ts,
            ..CallLogEntry::default()
        })
    }

    #[tokio::test]
    async fn call_log_journal_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::new(dir.path()).unwrap();
        s.append_call_logs(vec![entry("a", 1), entry("b", 2)])
            .await
            .unwrap();
        // A crash mid-append leaves a torn line: it is skipped, the rest loads.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(CALL_LOGS_JOURNAL))
            .unwrap();
        f.write_all(b"{\"id\":\"c\",\"timest").unwrap();
        let ids: Vec<String> = s
            .load_call_logs()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec!["a", "b"]);
        s.replace_call_logs(vec![entry("a", 1), entry("b", 2)])
            .await
            .unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(CALL_LOGS_JOURNAL))
                .unwrap()
                .len(),
            0
        );
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(CALL_LOGS_FILE)).unwrap())
                .unwrap();
        assert_eq!(file["logs"].as_array().unwrap().len(), 2);
        assert_eq!(file["meta"]["total_count"], 2);
        // Duplicates between file and journal (crash after compaction, before truncation) load once.
        s.append_call_logs(vec![entry("b", 2), entry("d", 4)])
            .await
            .unwrap();
        let ids: Vec<String> = s
            .load_call_logs()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec!["a", "b", "d"]);
    }

    #[tokio::test]
    async fn grok2api_call_log_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CALL_LOGS_FILE),
            r#"{"logs": [{"id": "x1", "timestamp": 1737500000000, "sso": "eyJ0eXAiOi****",
              "sso_full": "eyJ0eXAiOiJKV1Qi.full", "model": "grok-4-fast", "success": false,
              "status_code": 0, "token_consumed": 1, "response_time": 2.71, "error_message": "boom",
              "proxy_used": "", "media_urls": []}], "meta": {"total_count": 1, "last_save": 1}}"#,
        )
        .unwrap();
        let s = FileStorage::new(dir.path()).unwrap();
        let logs = s.load_call_logs().await.unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].sso_full.as_deref(), Some("eyJ0eXAiOiJKV1Qi.full"));
        assert_eq!(logs[0].error_message, "boom");
        // Written back without the secret.
        s.replace_call_logs(logs.into_iter().map(Arc::new).collect())
            .await
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join(CALL_LOGS_FILE)).unwrap();
        assert!(!text.contains("eyJ0eXAiOiJKV1Qi.full"));
    }

    #[tokio::test]
    async fn round_trip_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::new(dir.path()).unwrap();
        assert_eq!(s.load_tokens().await.unwrap(), TokenFile::default());
        let mut f = TokenFile::default();
        f.sso_normal.insert("t1".into(), TokenRecord::default());
        s.save_tokens(&f).await.unwrap();
        assert_eq!(s.load_tokens().await.unwrap(), f);
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![TOKENS_FILE.to_string()]);
    }

    #[tokio::test]
    async fn proxy_state_round_trips_and_reads_grok2api_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::new(dir.path()).unwrap();
        assert_eq!(
            s.load_proxy_state().await.unwrap(),
            ProxyStateFile::default()
        );
        // Grok2API Pro's shape: no source / last_seen, assignments keyed by the full token.
        std::fs::write(
            dir.path().join(PROXY_STATE_FILE),
            r#"{"proxies": {"socks5h://1.2.3.4:1080": {"url": "socks5h://1.2.3.4:1080", "healthy": false,
               "fail_count": 3, "last_used": 5, "assigned_sso": ["tok"], "total_requests": 3,
               "success_requests": 10, "x": 1}}, "assignments": {"tok": "socks5h://1.2.3.4:1080"}}"#,
        )
        .unwrap();
        let f = s.load_proxy_state().await.unwrap();
        let r = &f.proxies["socks5h://1.2.3.4:1080"];
        assert!(!r.healthy);
        assert_eq!((r.fail_count, r.success_requests), (3, 10));
        assert_eq!(r.source, None);
        assert_eq!(r.extra["x"], 1);
        s.save_proxy_state(&f).await.unwrap();
        assert_eq!(s.load_proxy_state().await.unwrap(), f);
    }

    #[tokio::test]
    async fn corrupt_file_is_moved_aside_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        std::fs::write(&path, b"{\"ssoNormal\": {broken").unwrap();
        let s = FileStorage::new(dir.path()).unwrap();
        assert_eq!(s.load_tokens().await.unwrap(), TokenFile::default());
        assert!(!path.exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(
            std::fs::read(&aside[0]).unwrap(),
            b"{\"ssoNormal\": {broken"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn journal_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
                let (entries, skipped) = decode_journal(&bytes);
                let lines = bytes.split(|b| *b == b'\n').filter(|l| !l.trim_ascii().is_empty()).count();
                prop_assert_eq!(entries.len() + skipped, lines);
            }

            #[test]
            fn journal_keeps_every_valid_line(ids in prop::collection::vec("[a-z0-9-]{1,20}", 0..40), garbage in prop::collection::vec("[^\n]{1,30}", 0..10)) {
                let mut text = String::new();
                let mut g = garbage.iter();
                for (i, id) in ids.iter().enumerate() {
                    let e = CallLogEntry { id: id.clone(), timestamp: i as i64, ..CallLogEntry::default() };
                    text.push_str(&serde_json::to_string(&e).unwrap());
                    text.push('\n');
                    // Torn or foreign lines in between (never valid entries: they do not start with `{`).
                    if let Some(junk) = g.next() {
                        text.push('x');
                        text.push_str(junk);
                        text.push('\n');
                    }
                }
                let (entries, _) = decode_journal(text.as_bytes());
                let got: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
                let want: Vec<&str> = ids.iter().map(String::as_str).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
