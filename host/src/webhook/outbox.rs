//! The outbox: webhook requests waiting to be sent, bounded, one file per request under
//! `<data>/webhook_outbox/` (written atomically before the request becomes sendable, removed once it is
//! delivered or given up). A request costs one small write however long the outbox is, and a restart reloads
//! whatever was not delivered. FIFO per sink; when full, the oldest request of all is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::hooks::OutboundRequest;
use crate::storage::StorageError;

/// Directory under the data dir.
pub const DIR: &str = "webhook_outbox";

/// A request in the outbox.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: u64,
    pub sink: Arc<str>,
    pub created_ms: i64,
    /// Attempts in this process (not persisted: a restart gives each request a fresh count).
    pub attempts: u32,
    pub req: OutboundRequest,
    in_flight: bool,
}

/// The file form of an item. Headers may hold a webhook's credential: the file lives in the data dir next to
/// `setting.toml`, which holds the same credential.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: u64,
    sink: String,
    created_ms: i64,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body_b64: String,
}

impl Item {
    fn stored(&self) -> Stored {
        Stored {
            id: self.id,
            sink: self.sink.to_string(),
            created_ms: self.created_ms,
            method: self.req.method.clone(),
            url: self.req.url.clone(),
            headers: self.req.headers.clone(),
            body_b64: base64::engine::general_purpose::STANDARD.encode(&self.req.body),
        }
    }
}

fn file_name(id: u64) -> String {
    // Zero-padded so the directory listing sorts in id (= arrival) order.
    format!("{id:020}.json")
}

/// What a change to the outbox did, for counting.
#[derive(Debug, Default)]
pub struct Evicted {
    /// Dropped because the outbox was full: (sink, id).
    pub full: Vec<(Arc<str>, u64)>,
}

pub struct Outbox {
    dir: PathBuf,
    max: usize,
    sinks: BTreeMap<Arc<str>, VecDeque<Item>>,
    len: usize,
    next_id: u64,
}

impl Outbox {
    /// Loads the directory. Requests of sinks not in `sinks` are removed (their webhook is no longer
    /// configured); unreadable files are moved aside. Returns the outbox and what was discarded, for the log.
    pub fn open(
        data_dir: &Path,
        max: usize,
        sinks: &[Arc<str>],
    ) -> Result<(Outbox, Vec<String>), StorageError> {
        let dir = data_dir.join(DIR);
        let io = |source| StorageError::Io {
            what: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        let mut ob = Outbox {
            dir,
            max,
            sinks: sinks.iter().map(|s| (s.clone(), VecDeque::new())).collect(),
            len: 0,
            next_id: 1,
        };
        let mut notes = Vec::new();
        let mut unknown = 0usize;
        let mut loaded = Vec::new();
        for path in names {
            let stored: Option<Stored> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(s) = stored else {
                let mut aside = path.clone().into_os_string();
                aside.push(".corrupt");
                let _ = std::fs::rename(&path, &aside);
                notes.push(format!(
                    "unreadable outbox file {} moved aside",
                    path.display()
                ));
                continue;
            };
            ob.next_id = ob.next_id.max(s.id + 1);
            let Some((sink, _)) = ob.sinks.get_key_value(s.sink.as_str()) else {
                unknown += 1;
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let body = base64::engine::general_purpose::STANDARD
                .decode(s.body_b64.as_bytes())
                .unwrap_or_default();
            loaded.push(Item {
                id: s.id,
                sink: sink.clone(),
                created_ms: s.created_ms,
                attempts: 0,
                req: OutboundRequest {
                    method: s.method,
                    url: s.url,
                    headers: s.headers,
                    body,
                },
                in_flight: false,
            });
        }
        if unknown > 0 {
            notes.push(format!(
                "{unknown} outbox requests of webhooks no longer configured were removed"
            ));
        }
        for item in loaded {
            ob.len += 1;
            if let Some(q) = ob.sinks.get_mut(&item.sink) {
                q.push_back(item);
            }
        }
        // A smaller `webhook_outbox_max` than at the last run: the oldest go.
        let evicted = ob.evict();
        if !evicted.full.is_empty() {
            ob.remove_files(evicted.full.iter().map(|(_, id)| *id));
            notes.push(format!(
                "{} outbox requests dropped: more than global.webhook_outbox_max",
                evicted.full.len()
            ));
        }
        Ok((ob, notes))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pending(&self, sink: &str) -> usize {
        self.sinks.get(sink).map_or(0, VecDeque::len)
    }

    /// Makes new items (ids assigned) without adding them: the caller writes their files first.
    pub fn prepare(&mut self, sink: &Arc<str>, reqs: Vec<OutboundRequest>, now: i64) -> Vec<Item> {
        reqs.into_iter()
            .map(|req| {
                let id = self.next_id;
                self.next_id += 1;
                Item {
                    id,
                    sink: sink.clone(),
                    created_ms: now,
                    attempts: 0,
                    req,
                    in_flight: false,
                }
            })
            .collect()
    }

    /// Adds prepared items; the oldest requests beyond `max` are dropped (their files are the caller's to
    /// remove, outside any lock).
    pub fn add(&mut self, items: Vec<Item>) -> Evicted {
        for item in items {
            if let Some(q) = self.sinks.get_mut(&item.sink) {
                self.len += 1;
                q.push_back(item);
            }
        }
        self.evict()
    }

    fn evict(&mut self) -> Evicted {
        let mut ev = Evicted::default();
        while self.len > self.max {
            // The sink whose oldest waiting request is the oldest of all; in-flight ones are left alone.
            let oldest = self
                .sinks
                .iter()
                .filter_map(|(s, q)| q.iter().find(|i| !i.in_flight).map(|i| (i.id, s.clone())))
                .min();
            let Some((id, sink)) = oldest else { break };
            if let Some(q) = self.sinks.get_mut(&sink) {
                q.retain(|i| i.id != id);
                self.len -= 1;
                ev.full.push((sink, id));
            }
        }
        ev
    }

    /// Up to `n` requests of `sink` to send now, marked in flight, oldest first; and the requests older than
    /// `max_age_ms`, removed (given up).
    pub fn take_due(
        &mut self,
        sink: &str,
        n: usize,
        now: i64,
        max_age_ms: i64,
    ) -> (Vec<Item>, Vec<Item>) {
        let Some(q) = self.sinks.get_mut(sink) else {
            return (Vec::new(), Vec::new());
        };
        let mut expired = Vec::new();
        q.retain(|i| {
            let keep = i.in_flight || now - i.created_ms <= max_age_ms;
            if !keep {
                expired.push(i.clone());
            }
            keep
        });
        self.len -= expired.len();
        let mut due = Vec::new();
        for i in q.iter_mut().filter(|i| !i.in_flight).take(n) {
            i.in_flight = true;
            i.attempts += 1;
            due.push(i.clone());
        }
        (due, expired)
    }

    /// Removes a request (delivered or given up). Its file is the caller's to remove.
    pub fn remove(&mut self, sink: &str, id: u64) -> bool {
        let Some(q) = self.sinks.get_mut(sink) else {
            return false;
        };
        let before = q.len();
        q.retain(|i| i.id != id);
        let gone = before != q.len();
        if gone {
            self.len -= 1;
        }
        gone
    }

    /// Puts an in-flight request back to be retried.
    pub fn release(&mut self, sink: &str, id: u64) {
        if let Some(i) = self
            .sinks
            .get_mut(sink)
            .and_then(|q| q.iter_mut().find(|i| i.id == id))
        {
            i.in_flight = false;
        }
    }

    /// Writes items' files (atomically). Blocking I/O: call from the blocking pool.
    pub fn write_files(dir: &Path, items: &[Item]) -> Result<(), StorageError> {
        for item in items {
            let bytes = serde_json::to_vec(&item.stored()).map_err(|e| StorageError::Io {
                what: DIR.into(),
                source: std::io::Error::other(e),
            })?;
            crate::storage::write_atomic(&dir.join(file_name(item.id)), &bytes)?;
        }
        Ok(())
    }

    /// Removes items' files; a file already gone is fine. Blocking I/O.
    pub fn remove_files_in(dir: &Path, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            let _ = std::fs::remove_file(dir.join(file_name(id)));
        }
    }

    fn remove_files(&self, ids: impl IntoIterator<Item = u64>) {
        Self::remove_files_in(&self.dir, ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(n: u32) -> OutboundRequest {
        OutboundRequest {
            method: "POST".into(),
            url: format!("http://127.0.0.1:9/{n}"),
            headers: vec![("x-k".into(), "v".into())],
            body: vec![n as u8, 0, 255],
        }
    }

    #[test]
    fn bounded_fifo_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let sinks = vec![a.clone(), b.clone()];
        let (mut ob, notes) = Outbox::open(dir.path(), 3, &sinks).unwrap();
        assert!(notes.is_empty());
        let items = ob.prepare(&a, vec![req(1), req(2)], 100);
        Outbox::write_files(ob.dir(), &items).unwrap();
        assert!(ob.add(items).full.is_empty());
        let items = ob.prepare(&b, vec![req(3), req(4)], 200);
        Outbox::write_files(ob.dir(), &items).unwrap();
        let ev = ob.add(items);
        // Full at 3: the oldest of all (a's first) goes.
        assert_eq!(ev.full, vec![(a.clone(), 1)]);
        ob.remove_files(ev.full.iter().map(|(_, id)| *id));
        assert_eq!((ob.len(), ob.pending("a"), ob.pending("b")), (3, 1, 2));

        let (due, expired) = ob.take_due("b", 5, 300, 1_000);
        assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), vec![3, 4]);
        assert!(expired.is_empty());
        // In flight: not handed out twice.
        assert!(ob.take_due("b", 5, 300, 1_000).0.is_empty());
        ob.release("b", 4);
        assert!(ob.remove("b", 3));
        Outbox::remove_files_in(ob.dir(), [3]);
        drop(ob);

        // Reopen: what was not delivered is back, in order, with its bytes; sink "a" is gone from the config.
        let (mut ob, notes) = Outbox::open(dir.path(), 10, std::slice::from_ref(&b)).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(ob.len(), 1);
        let (due, _) = ob.take_due("b", 5, 300, 1_000);
        assert_eq!(due[0].req, req(4));
        assert_eq!(due[0].attempts, 1);
        // New ids continue after the loaded ones.
        assert_eq!(ob.prepare(&b, vec![req(5)], 0)[0].id, 5);
        // Age limit.
        ob.release("b", 4);
        let (due, expired) = ob.take_due("b", 5, 5_000, 1_000);
        assert!(due.is_empty());
        assert_eq!(expired.len(), 1);
        assert!(ob.is_empty());
    }

    #[test]
    fn corrupt_files_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(DIR)).unwrap();
        std::fs::write(dir.path().join(DIR).join(file_name(7)), b"{not json").unwrap();
        let (ob, notes) = Outbox::open(dir.path(), 10, &[Arc::from("a")]).unwrap();
        assert!(ob.is_empty());
        assert_eq!(notes.len(), 1);
        assert!(dir
            .path()
            .join(DIR)
            .join("00000000000000000007.json.corrupt")
            .exists());
    }
}
