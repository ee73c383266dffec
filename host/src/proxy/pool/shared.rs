//! Shared mode (Redis, MySQL): the pool stays local for the request path; this merges it with the shared store,
//! like `tokens/pool/shared.rs` (three-way per proxy and group: health, usage, meta).
//!
//! Bindings are claimed atomically: a binding made here that differs from the base is pushed as a
//! compare-and-set from the base value; when another instance got there first the CAS fails, and this
//! instance adopts the winner's binding. A new binding wakes the sync task, so the window in which two
//! instances route one token through different proxies is one store round trip, not a tick.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;

use super::{parse_source, ProxyEntry, ProxyPool};
use crate::hooks::ProxySource;
use crate::storage::shared::{
    changed_groups, proxy_from_groups, proxy_groups, Groups, RowWrite, Table, G_HEALTH, G_META,
    G_USAGE,
};
use crate::storage::{ProxyRecord, StorageError};
use crate::util::now_ms;

#[derive(Default)]
pub(super) struct Base {
    rows: HashMap<String, Groups>,
    bindings: HashMap<String, String>,
}

impl ProxyPool {
    fn local_rows(&self) -> HashMap<String, Groups> {
        self.state_file()
            .proxies
            .into_iter()
            .map(|(url, r)| (url, proxy_groups(&r)))
            .collect()
    }

    fn local_bindings(&self) -> HashMap<String, String> {
        self.bindings
            .all()
            .into_iter()
            .filter(|(_, e)| !e.is_removed())
            .map(|(t, e)| (t, e.url.to_string()))
            .collect()
    }

    /// Makes the local binding of `token` what the store says. False when the proxy is not known here yet
    /// (the next pull adds it).
    fn adopt_binding(&self, token: &str, url: Option<&str>) -> bool {
        match url {
            None => {
                self.bindings.unbind(token);
                true
            }
            Some(u) => match self.entry(u) {
                Some(e) => {
                    self.bindings.bind(token, &e);
                    true
                }
                None => false,
            },
        }
    }

    fn adopt(&self, e: &Arc<ProxyEntry>, group: &str, r: &ProxyRecord) {
        match group {
            G_HEALTH => {
                e.fail_count.store(r.fail_count, Relaxed);
                *e.last_error.lock() = r.last_error.clone();
                let was = e.hot.healthy.swap(r.healthy, Relaxed);
                if was && !r.healthy {
                    let n = self.bindings.unbind_all(e);
                    self.schedule_check(e, 0);
                    tracing::warn!(proxy = %e.masked, unbound_tokens = n, "proxy marked unhealthy by another instance");
                } else if !was && r.healthy {
                    e.check_failures.store(0, Relaxed);
                    e.next_check_ms.store(0, Relaxed);
                }
            }
            G_USAGE => {
                e.total.store(r.total_requests, Relaxed);
                e.success.store(r.success_requests, Relaxed);
                e.last_used_ms.fetch_max(r.last_used, Relaxed);
                if let Some(s) = r.last_seen {
                    e.last_seen_ms.fetch_max(s, Relaxed);
                }
                if let Some(ms) = r.ewma_latency_ms.filter(|v| v.is_finite() && *v > 0.0) {
                    e.ewma_us.store((ms * 1000.0) as u64, Relaxed);
                }
            }
            // Configured proxies keep the source the settings give them.
            G_META if self.opts().configured_source(&e.url).is_none() => {
                if let Some(s) = r.source.as_deref().and_then(parse_source) {
                    e.source.store(super::source_code(s), Relaxed);
                }
            }
            _ => {}
        }
    }

    /// Writes local changes: proxy rows (changed groups, additions, deletions), then bindings by CAS.
    pub(super) async fn push_shared(&self) -> Result<bool, StorageError> {
        let Some(shared) = self.storage.shared() else {
            return Ok(false);
        };
        let mut base = self.save_lock.lock().await;
        let version = self.version.load(Acquire);
        let rows = self.local_rows();
        let mut writes = Vec::new();
        for (url, now) in &rows {
            let before = base.rows.get(url);
            let delta = changed_groups(before, now);
            if !delta.is_empty() {
                writes.push(RowWrite {
                    key: url.clone(),
                    insert: before.is_none(),
                    groups: delta,
                });
            }
        }
        let deletes: Vec<String> = base
            .rows
            .keys()
            .filter(|k| !rows.contains_key(*k))
            .cloned()
            .collect();
        let wrote = !writes.is_empty() || !deletes.is_empty();
        if wrote {
            shared
                .write_rows(Table::Proxies, writes.clone(), deletes.clone())
                .await?;
            for w in writes {
                base.rows.entry(w.key).or_default().extend(w.groups);
            }
            for d in deletes {
                base.rows.remove(&d);
            }
        }
        let local = self.local_bindings();
        let tokens: HashSet<String> = local.keys().chain(base.bindings.keys()).cloned().collect();
        let mut claimed = 0usize;
        for t in tokens {
            let (l, b) = (local.get(&t), base.bindings.get(&t));
            if l == b {
                continue;
            }
            claimed += 1;
            let now = shared
                .cas_binding(&t, b.map(String::as_str), l.map(String::as_str))
                .await?;
            if now.as_ref() != l {
                tracing::debug!(token = %t, "binding claimed by another instance; adopting it");
                if !self.adopt_binding(&t, now.as_deref()) {
                    // Not known here yet: forget the base so this is not taken for a local change.
                    base.bindings.remove(&t);
                    self.bindings.unbind(&t);
                    continue;
                }
            }
            match now {
                Some(u) => base.bindings.insert(t, u),
                None => base.bindings.remove(&t),
            };
        }
        self.saved_version.store(version, Release);
        Ok(wrote || claimed > 0)
    }

    /// Reads proxies and bindings from the store and merges them in. Never marks the pool dirty.
    pub async fn pull_shared(&self) -> Result<(), StorageError> {
        let Some(shared) = self.storage.shared() else {
            return Ok(());
        };
        let mut base = self.save_lock.lock().await;
        let remote_rows = shared.load_rows(Table::Proxies).await?;
        let remote_binds = shared.load_bindings().await?;
        let local = self.local_rows();
        let mut remote_urls = HashSet::with_capacity(remote_rows.len());
        let mut new = Vec::new();
        for (url, remote) in remote_rows {
            let Some(record) = proxy_from_groups(&url, &remote) else {
                continue;
            };
            remote_urls.insert(url.clone());
            match (self.entry(&url), local.get(&url)) {
                (Some(e), Some(l)) => {
                    let b = base.rows.entry(url).or_default();
                    for g in [G_HEALTH, G_USAGE, G_META] {
                        let (r, lv, old) = (remote.get(g), l.get(g), b.get(g));
                        if r != old && !(old.is_some() && lv != old) {
                            self.adopt(&e, g, &record);
                            if let Some(v) = r {
                                b.insert(g.to_string(), v.clone());
                            }
                        }
                    }
                }
                _ if base.rows.contains_key(&url) => {} // removed here, not pushed yet
                _ => new.push((url, remote, record)),
            }
        }
        if !new.is_empty() {
            let wanted = new
                .iter()
                .map(|(u, _, r)| {
                    let s = r.source.as_deref().and_then(parse_source);
                    (u.clone(), s.unwrap_or(ProxySource::Admin))
                })
                .collect();
            let made = self.insert_many(wanted, now_ms());
            for (res, (url, remote, record)) in made.into_iter().zip(new) {
                match res {
                    Ok((e, _)) => {
                        for g in [G_HEALTH, G_USAGE, G_META] {
                            self.adopt(&e, g, &record);
                        }
                        base.rows.insert(url, remote);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "a proxy from the shared store cannot be used here")
                    }
                }
            }
        }
        // Known to the base, gone from the store: removed by another instance. Configured ones stay (the
        // settings are their source of truth) and are written back at the next push.
        let gone: HashSet<String> = base
            .rows
            .keys()
            .filter(|u| !remote_urls.contains(*u))
            .cloned()
            .collect();
        for u in &gone {
            base.rows.remove(u);
        }
        if !gone.is_empty() {
            self.remove_where(|e| {
                gone.contains(&*e.url) && self.opts().configured_source(&e.url).is_none()
            });
        }
        // Bindings: adopt remote changes unless changed here too (then the next push's CAS decides).
        let local = self.local_bindings();
        let tokens: HashSet<String> = local
            .keys()
            .chain(base.bindings.keys())
            .chain(remote_binds.keys())
            .cloned()
            .collect();
        for t in tokens {
            let (l, b, r) = (local.get(&t), base.bindings.get(&t), remote_binds.get(&t));
            if r == b || l != b {
                if l == r {
                    // Both sides agree already (first pull).
                    if let Some(u) = r {
                        base.bindings.insert(t, u.clone());
                    }
                }
                continue;
            }
            if self.adopt_binding(&t, r.map(String::as_str)) {
                match r {
                    Some(u) => base.bindings.insert(t, u.clone()),
                    None => base.bindings.remove(&t),
                };
            }
        }
        Ok(())
    }
}
