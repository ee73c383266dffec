//! File storage under the data directory, with Grok2API's file names. Every write is atomic: a temp file in
//! the same directory, fsync, rename, fsync of the directory. A file that cannot be read is moved aside to
//! `NAME.corrupt-<unix time>` and never overwritten.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ProxyStateFile, SessionRecord, Storage, StorageError, TokenFile};
use crate::config::StorageMode;

pub const TOKENS_FILE: &str = "token.json";
pub const SESSIONS_FILE: &str = "admin_sessions.json";
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

    async fn save_json<T: Serialize + ?Sized>(
        &self,
        name: &'static str,
        value: &T,
    ) -> Result<(), StorageError> {
        // Encode on the caller's thread (cheap, no I/O); write off the async runtime.
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| StorageError::Encode {
            what: name.into(),
            source,
        })?;
        let path = self.dir.join(name);
        blocking(move || write_atomic(&path, &bytes)).await?
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

    // --- Proxy pool state -------------------------------------------------------------------------------
    async fn load_proxy_state(&self) -> Result<ProxyStateFile, StorageError> {
        self.load_json(PROXY_STATE_FILE).await
    }

    async fn save_proxy_state(&self, state: &ProxyStateFile) -> Result<(), StorageError> {
        self.save_json(PROXY_STATE_FILE, state).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::TokenRecord;

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
}
