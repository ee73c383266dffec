//! Shared mode: keeps this instance's in-memory token and proxy snapshots in step with the shared store.
//! Every `POLL` the task pushes local changes (row deltas, binding claims) and, when the store's state
//! version moved, pulls and merges. A new binding wakes it at once (the claim). The request path never waits
//! on it: requests read the local snapshots only.

use std::sync::Arc;
use std::time::Duration;

use crate::proxy::ProxyPool;
use crate::storage::Storage;
use crate::tokens::TokenPool;

/// How often the state version is read: a change made by another instance is seen within about this long
/// plus its own push interval.
pub const POLL: Duration = Duration::from_millis(500);

pub async fn run(
    storage: Arc<dyn Storage>,
    tokens: Arc<TokenPool>,
    proxies: Arc<ProxyPool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(shared) = storage.shared() else {
        return;
    };
    let mut seen: Option<u64> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let poll = tokio::select! {
            _ = tick.tick() => true,
            _ = proxies.sync_wake.notified() => false,
            _ = stop.changed() => return,
        };
        let step = async {
            if proxies.is_dirty() {
                proxies.save_if_dirty().await?;
            }
            if !poll {
                return Ok(());
            }
            if tokens.is_dirty() {
                tokens.save_if_dirty().await?;
            }
            let v = shared.state_version().await?;
            if seen != Some(v) {
                tokens.pull_shared().await?;
                proxies.pull_shared().await?;
                seen = Some(v);
            }
            Ok::<(), crate::storage::StorageError>(())
        };
        match step.await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("shared store reachable again; state in sync");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::error!(error = %e, "syncing with the shared store failed; serving from the local state and retrying");
            }
            Err(_) => {}
        }
    }
}
