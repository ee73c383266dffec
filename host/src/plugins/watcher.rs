//! Hot reload: watches the plugin directory and brings each touched `NAME.wasm` in line with its file on a
//! thread of its own (compiling never happens on the request path).
//!
//! Triggers are close-after-write and rename-into-place only. Not every modify event: a half-written file must
//! not be compiled, and the host's own reads fire access events that would re-trigger forever. Removal (or a
//! rename away) unloads. Events are debounced briefly so a rename's From/To/Both events make one reload.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use super::registry::plugin_name;
use super::{PluginError, Registry};

const DEBOUNCE: Duration = Duration::from_millis(50);

enum Msg {
    Changed(String),
    Stop,
}

/// Stops watching when dropped.
pub struct Watcher {
    _watcher: RecommendedWatcher,
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

fn relevant(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(
                RenameMode::To | RenameMode::From | RenameMode::Both | RenameMode::Any
            ))
            | EventKind::Remove(_)
    )
}

impl Watcher {
    pub fn start(registry: Registry) -> Result<Watcher, PluginError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let events = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<Event>| match res {
                Ok(ev) if relevant(&ev.kind) => {
                    for p in &ev.paths {
                        if let Some(name) = plugin_name(p) {
                            let _ = events.send(Msg::Changed(name));
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "plugin directory watch error"),
            })
            .map_err(|e| PluginError::Watch(e.to_string()))?;
        watcher
            .watch(registry.dir(), RecursiveMode::NonRecursive)
            .map_err(|e| PluginError::Watch(format!("{}: {e}", registry.dir().display())))?;
        let thread = std::thread::Builder::new()
            .name("plugin-watch".into())
            .spawn(move || run(registry, rx))
            .map_err(|e| PluginError::Watch(e.to_string()))?;
        Ok(Watcher {
            _watcher: watcher,
            tx,
            thread: Some(thread),
        })
    }
}

fn run(registry: Registry, rx: mpsc::Receiver<Msg>) {
    loop {
        let mut pending = BTreeSet::new();
        match rx.recv() {
            Ok(Msg::Changed(n)) => {
                pending.insert(n);
            }
            Ok(Msg::Stop) | Err(_) => return,
        }
        // Quiet for DEBOUNCE: the burst is over.
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(Msg::Changed(n)) => {
                    pending.insert(n);
                }
                Ok(Msg::Stop) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        for name in pending {
            registry.sync_file(&name, false);
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
