//! Moving all state between stores: the first start on an empty shared store imports `data/`, and the CLI's
//! `export` / `import` copy everything between the configured store and a directory of files.

use std::sync::Arc;

use super::{Storage, StorageError};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub tokens: usize,
    pub proxies: usize,
    pub bindings: usize,
    pub sessions: usize,
    pub call_logs: usize,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} tokens, {} proxies, {} bindings, {} admin sessions, {} call-log entries",
            self.tokens, self.proxies, self.bindings, self.sessions, self.call_logs
        )
    }
}

/// Replaces everything in `to` with what `from` holds. Grok2API's secrets-as-keys (bindings keyed by a full
/// token, call-log `sso_full`) are turned into token ids on the way, so no secret lands where it should not.
pub async fn copy_all(from: &dyn Storage, to: &dyn Storage) -> Result<Copied, StorageError> {
    let tokens = from.load_tokens().await?;
    let id_of = |secret: &str| {
        (tokens.sso_normal.contains_key(secret) || tokens.sso_super.contains_key(secret))
            .then(|| crate::util::sha256_hex(secret.as_bytes())[..12].to_string())
    };
    let mut proxies = from.load_proxy_state().await?;
    proxies.assignments = std::mem::take(&mut proxies.assignments)
        .into_iter()
        .map(|(k, v)| (id_of(&k).unwrap_or(k), v))
        .collect();
    for p in proxies.proxies.values_mut() {
        p.assigned_sso = p
            .assigned_sso
            .iter()
            .map(|k| id_of(k).unwrap_or_else(|| k.clone()))
            .collect();
    }
    let sessions = from.load_sessions().await?;
    let mut logs = from.load_call_logs().await?;
    for e in &mut logs {
        if let Some(full) = e.sso_full.take().filter(|s| !s.is_empty()) {
            if let Some(id) = id_of(&full) {
                e.token_id = id;
            }
            if e.sso.is_empty() || e.sso == full {
                e.sso = crate::secret::mask(&full);
            }
        }
    }
    let copied = Copied {
        tokens: tokens.sso_normal.len() + tokens.sso_super.len() + tokens.legacy_sso.len(),
        proxies: proxies.proxies.len(),
        bindings: proxies.assignments.len(),
        sessions: sessions.len(),
        call_logs: logs.len(),
    };
    to.save_tokens(&tokens).await?;
    to.save_proxy_state(&proxies).await?;
    to.save_sessions(&sessions).await?;
    to.replace_call_logs(logs.into_iter().map(Arc::new).collect())
        .await?;
    if let Some(shared) = to.shared() {
        // An imported store counts as initialised: a later first start must not import `data/` over it.
        shared.claim_first_start().await?;
    }
    Ok(copied)
}
