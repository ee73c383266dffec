//! Persistence behind one trait. The file backend is embedded; Redis and MySQL arrive later behind the same
//! trait. Storage knows the persisted shapes and nothing of HTTP, plugins or the request path.

mod file;
pub mod types;

use async_trait::async_trait;
use thiserror::Error;

pub use file::{write_atomic, FileStorage};
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
}

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    fn mode(&self) -> StorageMode;

    /// The token pool. An unreadable store is set aside (never overwritten) and an empty pool returned.
    async fn load_tokens(&self) -> Result<TokenFile, StorageError>;
    async fn save_tokens(&self, tokens: &TokenFile) -> Result<(), StorageError>;

    /// Admin sessions that have not expired.
    async fn load_sessions(&self) -> Result<Vec<SessionRecord>, StorageError>;
    /// Replaces the stored sessions with `sessions`.
    async fn save_sessions(&self, sessions: &[SessionRecord]) -> Result<(), StorageError>;
}
