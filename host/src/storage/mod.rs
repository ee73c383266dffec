//! Persistence behind one trait. The file backend is embedded; Redis and MySQL are the shared backends
//! (several gateway instances on one store, see `shared.rs`). Storage knows the persisted shapes and nothing of HTTP, plugins
//! or the request path.

mod file;
pub mod mysql;
pub mod proxy_state;
pub mod redis;
pub mod shared;
pub mod transfer;
pub mod types;

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

pub use file::{decode_journal, write_atomic, FileStorage};
pub use proxy_state::{ProxyRecord, ProxyStateFile};
pub use types::{CallLogEntry, SessionRecord, TokenFile, TokenRecord};

use crate::config::StorageMode;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("I/O error on {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        source: serde_json::Error,
    },
    #[error("storage task failed: {0}")]
    Task(String),
    /// The shared store answered with an error or could not be reached while running.
    #[error("{0}")]
    Backend(String),
    /// Bad `DATABASE_URL` or mode (start-up).
    #[error("{0}")]
    Config(String),
    /// The shared store cannot be reached at start-up.
    #[error("{0}")]
    Unreachable(String),
}

/// Opens the store `STORAGE_MODE` names. Errors name the URL with its password masked.
pub async fn open(
    mode: StorageMode,
    database_url: Option<&str>,
    data_dir: &std::path::Path,
    log_max: usize,
) -> Result<Arc<dyn Storage>, StorageError> {
    match mode {
        StorageMode::File => Ok(Arc::new(FileStorage::new(data_dir)?)),
        StorageMode::Redis => {
            let url = database_url.ok_or_else(|| {
                StorageError::Config(
                    "STORAGE_MODE=redis needs DATABASE_URL (redis://[user:pass@]host:port/db)"
                        .into(),
                )
            })?;
            Ok(Arc::new(redis::RedisStorage::connect(url, log_max).await?))
        }
        StorageMode::Mysql => {
            let url = database_url.ok_or_else(|| {
                StorageError::Config(
                    "STORAGE_MODE=mysql needs DATABASE_URL (mysql://user:pass@host:port/db)".into(),
                )
            })?;
            Ok(Arc::new(mysql::MysqlStorage::connect(url, log_max).await?))
        }
    }
}

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    fn mode(&self) -> StorageMode;

    /// The shared-state operations, for backends several instances share (`None`: file).
    fn shared(&self) -> Option<&dyn shared::SharedState> {
        None
    }

    /// The token pool. An unreadable store is set aside (never overwritten) and an empty pool returned.
    async fn load_tokens(&self) -> Result<TokenFile, StorageError>;
    async fn save_tokens(&self, tokens: &TokenFile) -> Result<(), StorageError>;

    /// Admin sessions that have not expired.
    async fn load_sessions(&self) -> Result<Vec<SessionRecord>, StorageError>;
    /// Replaces the stored sessions with `sessions`.
    async fn save_sessions(&self, sessions: &[SessionRecord]) -> Result<(), StorageError>;

    // -- call log: one writer task calls these, never concurrently --

    /// Every stored entry (any order; the caller sorts and trims).
    async fn load_call_logs(&self) -> Result<Vec<CallLogEntry>, StorageError>;
    /// Makes new entries durable cheaply (file: appended to a journal).
    async fn append_call_logs(&self, batch: Vec<Arc<CallLogEntry>>) -> Result<(), StorageError>;
    /// Replaces everything stored with `all` (compaction, retention, deletion).
    async fn replace_call_logs(&self, all: Vec<Arc<CallLogEntry>>) -> Result<(), StorageError>;

    // --- Proxy pool state (`proxy_state.json`) -----------------------------------------------------------
    /// The proxy pool and token bindings. An unreadable store is set aside (never overwritten) and an empty
    /// state returned.
    async fn load_proxy_state(&self) -> Result<ProxyStateFile, StorageError>;
    async fn save_proxy_state(&self, state: &ProxyStateFile) -> Result<(), StorageError>;
}
