//! Watching `setting.toml`: the directory is watched (editors and the gateway itself replace the file by a
//! rename, which a watch on the file would lose), events for the file are debounced on a thread, and each
//! quiet burst wakes the async side once.
//!
//! Triggers are close-after-write and rename-into-place, as for plugins: a half-written file is not read, and
//! reading it ourselves fires no event that counts.

use std::ffi::OsString;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

/// Long enough for an editor's write-then-rename burst to become one reload.
const DEBOUNCE: Duration = Duration::from_millis(150);

enum Msg {
    Changed,
    Stop,
}

/// Stops watching when dropped.
pub struct SettingsWatcher {
    _watcher: RecommendedWatcher,
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

fn relevant(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(
                RenameMode::To | RenameMode::Both | RenameMode::Any
            ))
            | EventKind::Create(_)
    )
}

impl SettingsWatcher {
    /// Calls `changed` (on the watcher's thread; keep it short, e.g. a channel send) after each burst of
    /// changes to `path`.
    pub fn start(
        path: &Path,
        changed: impl Fn() + Send + 'static,
    ) -> Result<SettingsWatcher, notify::Error> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let name: OsString = path.file_name().unwrap_or_default().to_os_string();
        let (tx, rx) = mpsc::channel::<Msg>();
        let events = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<Event>| match res {
                Ok(ev) if relevant(&ev.kind) => {
                    if ev
                        .paths
                        .iter()
                        .any(|p| p.file_name() == Some(name.as_os_str()))
                    {
                        let _ = events.send(Msg::Changed);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "settings file watch error"),
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let thread = std::thread::Builder::new()
            .name("settings-watch".into())
            .spawn(move || run(rx, changed))
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(SettingsWatcher {
            _watcher: watcher,
            tx,
            thread: Some(thread),
        })
    }
}

fn run(rx: mpsc::Receiver<Msg>, changed: impl Fn()) {
    loop {
        match rx.recv() {
            Ok(Msg::Changed) => {}
            Ok(Msg::Stop) | Err(_) => return,
        }
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(Msg::Changed) => {}
                Ok(Msg::Stop) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        changed();
    }
}

impl Drop for SettingsWatcher {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
