//! Shared mode (Redis, MySQL): the pool stays the request path's local snapshot; this merges it with the shared
//! store. A three-way merge per token and group (health, usage, meta): `Base` holds each row as this
//! instance last wrote or read it. A group changed only locally is pushed, changed only remotely is adopted,
//! changed on both sides: the local one wins at the next push (last writer wins, per group).
//! Rows present in the base but gone on one side were deleted on that side.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Token, TokenKind, TokenPool};
use crate::storage::shared::{
    changed_groups, token_from_groups, token_groups, Groups, RowWrite, Table, G_HEALTH, G_META,
    G_USAGE,
};
use crate::storage::{StorageError, TokenRecord};

/// Token id → groups as last written or read.
#[derive(Default)]
pub(super) struct Base(HashMap<String, Groups>);

fn groups_of(t: &Token) -> Groups {
    token_groups(
        t.secret.expose(),
        t.kind == TokenKind::Super,
        &t.to_record(),
    )
}

impl Token {
    fn adopt(&self, group: &str, r: &TokenRecord) {
        match group {
            G_HEALTH => {
                self.expired.store(r.status == "expired", Ordering::Relaxed);
                self.failed_count.store(r.failed_count, Ordering::Relaxed);
                self.cooldown_until_ms
                    .store(r.cooldown_until.unwrap_or(0), Ordering::Relaxed);
                let mut m = self.meta.lock();
                m.last_failure_time = r.last_failure_time;
                m.last_failure_reason = r.last_failure_reason.clone();
            }
            G_USAGE => {
                self.remaining_queries
                    .store(r.remaining_queries, Ordering::Relaxed);
                self.heavy_remaining_queries
                    .store(r.heavy_remaining_queries, Ordering::Relaxed);
                self.last_used_ms
                    .fetch_max(r.last_used_time.unwrap_or(0), Ordering::Relaxed);
            }
            G_META => {
                let mut m = self.meta.lock();
                m.tags = r.tags.clone();
                m.note = r.note.clone();
                m.extra = r.extra.clone();
            }
            _ => {}
        }
    }
}

impl TokenPool {
    /// Writes what changed locally since the base: new tokens, changed groups, deletions.
    pub(super) async fn push_shared(&self) -> Result<bool, StorageError> {
        let Some(shared) = self.storage.shared() else {
            return Ok(false);
        };
        let mut base = self.edit.lock().await;
        let version = self.shared.version.load(Ordering::Acquire);
        let current = self.tokens.load_full();
        let mut writes = Vec::new();
        let mut live = HashSet::with_capacity(current.len());
        for t in current.iter() {
            live.insert(t.id.as_str());
            let now = groups_of(t);
            let before = base.0.get(&t.id);
            let delta = changed_groups(before, &now);
            if !delta.is_empty() {
                writes.push(RowWrite {
                    key: t.id.clone(),
                    insert: before.is_none(),
                    groups: delta,
                });
            }
        }
        let deletes: Vec<String> = base
            .0
            .keys()
            .filter(|k| !live.contains(k.as_str()))
            .cloned()
            .collect();
        if writes.is_empty() && deletes.is_empty() {
            self.saved_version.store(version, Ordering::Release);
            return Ok(false);
        }
        shared
            .write_rows(Table::Tokens, writes.clone(), deletes.clone())
            .await?;
        for w in writes {
            base.0.entry(w.key).or_default().extend(w.groups);
        }
        for d in deletes {
            base.0.remove(&d);
        }
        self.saved_version.store(version, Ordering::Release);
        Ok(true)
    }

    /// Reads the shared rows and merges them in: adopts remote changes, adds tokens added elsewhere, drops
    /// tokens deleted elsewhere. Never marks the pool dirty.
    pub async fn pull_shared(&self) -> Result<(), StorageError> {
        let Some(shared) = self.storage.shared() else {
            return Ok(());
        };
        let mut base = self.edit.lock().await;
        let rows = shared.load_rows(Table::Tokens).await?;
        let current = self.tokens.load_full();
        let by_id: HashMap<&str, &Arc<Token>> =
            current.iter().map(|t| (t.id.as_str(), t)).collect();
        let mut added = Vec::new();
        let mut remote_ids = HashSet::with_capacity(rows.len());
        for (id, remote) in rows {
            let Some((secret, sup, record)) = token_from_groups(&remote) else {
                continue;
            };
            remote_ids.insert(id.clone());
            match by_id.get(id.as_str()) {
                Some(t) => {
                    let local = groups_of(t);
                    let b = base.0.entry(id).or_default();
                    for g in [G_HEALTH, G_USAGE, G_META] {
                        let (r, l, old) = (remote.get(g), local.get(g), b.get(g));
                        // A group unknown to the base (first pull) is adopted from the store.
                        let remote_changed = r != old;
                        let local_changed = old.is_some() && l != old;
                        if remote_changed && !local_changed {
                            t.adopt(g, &record);
                            if let Some(v) = r {
                                b.insert(g.to_string(), v.clone());
                            }
                        }
                    }
                    b.extend(
                        remote
                            .iter()
                            .filter(|(k, _)| !b.contains_key(*k))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect::<Vec<_>>(),
                    );
                }
                // Deleted here, the delete not pushed yet.
                None if base.0.contains_key(&id) => {}
                None => {
                    let kind = if sup {
                        TokenKind::Super
                    } else {
                        TokenKind::Normal
                    };
                    added.push(Arc::new(Token::from_record(secret, kind, record)));
                    base.0.insert(id, remote);
                }
            }
        }
        // Known to the base but gone from the store: deleted by another instance.
        let gone: HashSet<String> = current
            .iter()
            .filter(|t| base.0.contains_key(&t.id) && !remote_ids.contains(&t.id))
            .map(|t| t.id.clone())
            .collect();
        for id in &gone {
            base.0.remove(id);
        }
        if !added.is_empty() || !gone.is_empty() {
            let mut next: Vec<Arc<Token>> = current
                .iter()
                .filter(|t| !gone.contains(&t.id))
                .cloned()
                .collect();
            next.extend(added);
            self.tokens.store(Arc::new(next));
        }
        Ok(())
    }
}
