//! Loaded plugins: one slot per name, holding the version serving now (`ArcSwap`, so a swap is one pointer
//! store and in-flight calls finish on the old version), its warm instances, its state and its statistics.
//!
//! Loading (start-up, file watcher, admin reload) runs off the request path and is serialised by one mutex the
//! request path never takes: read, hash, compile (or read the cache), link, instantiate, `init`, `describe`,
//! one trial call, then swap. A failure at any step leaves the serving version in place and is reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use super::engine::{
    cache_dir, CompileSource, Instance, Kind, Limits, PluginEngine, PluginInfo, WorldPre,
};
use super::stats::Histogram;
use super::{pool_parser, selector, webhook, PluginError};
use crate::config::{valid_plugin_name, PluginSettings};
use crate::hooks::{HookError, LogWebhook, PoolParser, ProxySelector};
use crate::util::{now_ms, sha256_hex};

/// Warm instances kept per plugin; more are created under concurrency and dropped when returned.
const MAX_IDLE: usize = 8;
/// Files larger than this are refused before compiling (Python components are ~20 MB).
const MAX_FILE_BYTES: u64 = 128 << 20;

/// Which hook a plugin is configured for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    Selector,
    PoolParser,
    Webhook,
}

impl Hook {
    fn kind(self) -> Kind {
        match self {
            Hook::Selector => Kind::Selector,
            Hook::PoolParser => Kind::PoolParser,
            Hook::Webhook => Kind::LogWebhook,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// A version is serving.
    Loaded,
    /// No version serving: the last load failed.
    Failed,
    /// Too many errors in a row; the built-in serves until the file changes or an admin enables it.
    Disabled,
    /// Configured for a hook, but there is no `NAME.wasm`.
    Missing,
}

/// One plugin as the admin API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginStatus {
    pub name: String,
    pub kind: Option<Kind>,
    pub hook: Option<Hook>,
    pub file: String,
    pub sha256: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub state: State,
    pub loaded_at_ms: Option<i64>,
    pub compiled_from: Option<CompileSource>,
    pub calls: u64,
    pub errors: u64,
    pub consecutive_errors: u32,
    pub last_error: Option<String>,
    /// The last load that failed (the serving version, if any, stays).
    pub load_error: Option<String>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

/// The result of loading one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LoadOutcome {
    Loaded { source: CompileSource, took_ms: u64 },
    Unchanged,
    Failed { error: String },
    Unloaded,
}

/// The version of a plugin that serves calls.
pub(crate) struct Loaded {
    pre: WorldPre,
    engine: Arc<PluginEngine>,
    config: String,
    idle: Mutex<Vec<Instance>>,
    info: PluginInfo,
    sha256: String,
    loaded_at_ms: i64,
    source: CompileSource,
}

#[derive(Default)]
struct SlotInfo {
    /// Hash of the file last tried, loaded or not: an unchanged failing file is not retried by the watcher.
    tried_sha256: Option<String>,
    last_error: Option<String>,
    load_error: Option<String>,
}

/// A plugin name's place in the registry. Adapters hold it directly, so a call takes no registry lock.
pub(crate) struct Slot {
    pub name: Arc<str>,
    hook: Option<Hook>,
    current: ArcSwapOption<Loaded>,
    disabled: AtomicBool,
    consecutive: AtomicU32,
    calls: AtomicU64,
    errors: AtomicU64,
    hist: Histogram,
    max_consecutive: u32,
    timeout: Duration,
    info: Mutex<SlotInfo>,
}

impl Slot {
    fn new(name: &str, hook: Option<Hook>, max_consecutive: u32, timeout: Duration) -> Slot {
        Slot {
            name: name.into(),
            hook,
            current: ArcSwapOption::empty(),
            disabled: AtomicBool::new(false),
            consecutive: AtomicU32::new(0),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            hist: Histogram::default(),
            max_consecutive,
            timeout,
            info: Mutex::new(SlotInfo::default()),
        }
    }

    /// Runs one hook call on a warm instance (or a new one). Any error drops the instance and counts; the
    /// caller then uses the built-in. The instance pool's mutex is held only to pop and push.
    pub(crate) fn call<R>(
        &self,
        f: impl FnOnce(&mut Instance) -> Result<R, HookError>,
    ) -> Result<R, HookError> {
        if self.disabled.load(Ordering::Acquire) {
            return Err(HookError::Unavailable(format!(
                "plugin {} is disabled",
                self.name
            )));
        }
        let Some(loaded) = self.current.load_full() else {
            return Err(HookError::Unavailable(format!(
                "plugin {} is not loaded",
                self.name
            )));
        };
        let pooled = loaded.idle.lock().pop();
        let mut inst = match pooled {
            Some(i) => i,
            None => match loaded
                .engine
                .instantiate(&loaded.pre, &self.name, &loaded.config)
            {
                Ok(i) => i,
                Err(e) => {
                    self.calls.fetch_add(1, Ordering::Relaxed);
                    self.failed(&e);
                    return Err(e);
                }
            },
        };
        let start = Instant::now();
        // A host import can panic under a guest: wasmtime-wasi's sync stdio `block_on`s, which panics on a
        // tokio worker (a guest `panic!` writes its message to stderr). Unwinding crosses the wasm frames
        // safely; the instance is dropped and the call fails open like a trap.
        let r = inst
            .run(self.timeout, |inst| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(inst)))
            })
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                Err(HookError::Trap(format!("host call panicked: {msg}")))
            });
        self.hist.record(start.elapsed());
        self.calls.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(v) => {
                self.consecutive.store(0, Ordering::Relaxed);
                let mut idle = loaded.idle.lock();
                if idle.len() < MAX_IDLE {
                    idle.push(inst);
                }
                Ok(v)
            }
            Err(e) => {
                drop(inst);
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// A call that failed but left the instance sound (e.g. the plugin reported an error answer): not counted
    /// against the plugin.
    fn failed(&self, e: &HookError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        self.info.lock().last_error = Some(e.to_string());
        if n >= self.max_consecutive && !self.disabled.swap(true, Ordering::AcqRel) {
            tracing::warn!(plugin = %self.name, errors = n, error = %e,
                "plugin disabled after consecutive errors; the built-in serves until its file changes or it is enabled");
        } else {
            tracing::debug!(plugin = %self.name, error = %e, "plugin call failed; using the built-in");
        }
    }

    fn status(&self, dir: &Path) -> PluginStatus {
        let cur = self.current.load_full();
        let info = self.info.lock();
        let state = if cur.is_none() {
            if dir.join(format!("{}.wasm", self.name)).is_file() {
                State::Failed
            } else {
                State::Missing
            }
        } else if self.disabled.load(Ordering::Acquire) {
            State::Disabled
        } else {
            State::Loaded
        };
        let us = |d: Duration| (d.as_nanos() as f64 / 100.0).round() / 10.0;
        PluginStatus {
            name: self.name.to_string(),
            kind: cur
                .as_ref()
                .map(|l| l.pre.kind())
                .or(self.hook.map(Hook::kind)),
            hook: self.hook,
            file: format!("{}.wasm", self.name),
            sha256: cur.as_ref().map(|l| l.sha256.clone()),
            version: cur.as_ref().map(|l| l.info.version.clone()),
            description: cur.as_ref().map(|l| l.info.description.clone()),
            state,
            loaded_at_ms: cur.as_ref().map(|l| l.loaded_at_ms),
            compiled_from: cur.as_ref().map(|l| l.source),
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            consecutive_errors: self.consecutive.load(Ordering::Relaxed),
            last_error: info.last_error.clone(),
            load_error: info.load_error.clone(),
            p50_us: self.hist.quantile(0.5).map(us),
            p99_us: self.hist.quantile(0.99).map(us),
        }
    }

    /// The file changed or went away, or an admin asked: count from zero again.
    fn reset_errors(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.disabled.store(false, Ordering::Release);
    }
}

/// The engine, made by the first load: it reserves its instance pool's address space and starts a deadline
/// watchdog thread, which a gateway without plugins should not pay for (idle RSS, and tools like valgrind cannot map
/// the reservation at all). Shared by registry generations with the same limits.
struct EngineCell {
    limits: Limits,
    engine: OnceLock<Arc<PluginEngine>>,
}

impl EngineCell {
    fn new(limits: Limits) -> EngineCell {
        EngineCell {
            limits,
            engine: OnceLock::new(),
        }
    }

    /// Loads are serialised by `load_lock`, so the engine is made once.
    fn get(&self) -> Result<&Arc<PluginEngine>, PluginError> {
        if let Some(e) = self.engine.get() {
            return Ok(e);
        }
        let made = Arc::new(PluginEngine::new(self.limits)?);
        Ok(self.engine.get_or_init(|| made))
    }
}

struct Inner {
    engine: Arc<EngineCell>,
    dir: PathBuf,
    settings: PluginSettings,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// Serialises loads; never taken by a hook call.
    load_lock: Mutex<()>,
    direct_allowed: Arc<AtomicBool>,
    selector: Option<Arc<selector::WasmSelector>>,
    pool_parser: Option<Arc<pool_parser::WasmPoolParser>>,
    webhooks: Vec<Arc<webhook::WasmWebhook>>,
}

/// The plugin registry: the set of plugins built from one `[plugins]` section, swapped whole when that section
/// changes at run time. Cloning is one `Arc` bump.
#[derive(Clone)]
pub struct Registry {
    current: Arc<ArcSwap<Core>>,
    dir: Arc<PathBuf>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn limits_of(settings: &PluginSettings) -> Limits {
    Limits {
        timeout: Duration::from_millis(settings.timeout_ms),
        memory_bytes: (settings.memory_mb as usize) << 20,
    }
}

impl Registry {
    /// Creates the registry and the plugin directory; loads nothing yet (see [`Registry::load_all`]).
    pub fn new(settings: &PluginSettings, data_dir: &Path) -> Result<Registry, PluginError> {
        let dir = settings.dir_in(data_dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| PluginError::Io(format!("{}: {e}", dir.display())))?;
        let engine = Arc::new(EngineCell::new(limits_of(settings)));
        let core = Core::new(settings, dir.clone(), engine);
        Ok(Registry {
            current: Arc::new(ArcSwap::from_pointee(core)),
            dir: Arc::new(dir),
        })
    }

    /// Applies a changed `[plugins]` section (hooks, plugin config, limits, error threshold): builds a new set,
    /// loads every plugin into it off the request path, then swaps it in; the old set serves until then.
    /// `dir` is not applied (the watcher watches one directory; it needs a restart). Returns whether anything
    /// changed. Blocking (compiles). Callers re-install the hook handles ([`Registry::selector`], …) afterwards.
    pub fn apply_settings(&self, settings: &PluginSettings) -> Result<bool, PluginError> {
        let cur = self.current.load_full();
        let mut same = settings.clone();
        same.dir = cur.inner.settings.dir.clone();
        if same == cur.inner.settings {
            return Ok(false);
        }
        let limits = limits_of(&same);
        let old = cur.inner.engine.limits;
        let engine = if old.timeout == limits.timeout && old.memory_bytes == limits.memory_bytes {
            cur.inner.engine.clone()
        } else {
            Arc::new(EngineCell::new(limits))
        };
        let core = Core::new(&same, (*self.dir).clone(), engine);
        core.set_direct_allowed(cur.inner.direct_allowed.load(Ordering::Relaxed));
        core.load_all();
        self.current.store(Arc::new(core));
        Ok(true)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configured selector, always serving the current version (or `Err(Unavailable)` while none is
    /// loaded or it is disabled: use the built-in then). `None` when `plugins.selector` is not set.
    pub fn selector(&self) -> Option<Arc<dyn ProxySelector>> {
        self.current.load().selector()
    }

    pub fn pool_parser(&self) -> Option<Arc<dyn PoolParser>> {
        self.current.load().pool_parser()
    }

    pub fn webhooks(&self) -> Vec<Arc<dyn LogWebhook>> {
        self.current.load().webhooks()
    }

    /// Whether a selector may answer `direct` (the proxy pool sets this from its own rules; default false).
    pub fn set_direct_allowed(&self, allowed: bool) {
        self.current.load().set_direct_allowed(allowed)
    }

    /// Every known plugin: configured ones and every `NAME.wasm` seen in the directory.
    pub fn list(&self) -> Vec<PluginStatus> {
        self.current.load().list()
    }

    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        self.current.load().status(name)
    }

    /// Loads every `NAME.wasm` in the directory and unloads plugins whose file is gone. Blocking (compiles):
    /// call it off the async runtime.
    pub fn load_all(&self) -> Vec<(String, LoadOutcome)> {
        self.current.load_full().load_all()
    }

    /// Brings plugin `name` in line with its file; blocking.
    pub fn sync_file(&self, name: &str, retry: bool) -> LoadOutcome {
        self.current.load_full().sync_file(name, retry)
    }

    pub fn enable(&self, name: &str) -> Option<PluginStatus> {
        self.current.load_full().enable(name)
    }
}

/// One generation of the registry: the slots and hook handles of one `[plugins]` section.
struct Core {
    inner: Arc<Inner>,
}

impl Core {
    fn new(settings: &PluginSettings, dir: PathBuf, engine: Arc<EngineCell>) -> Core {
        let timeout = engine.limits.timeout;
        let max = settings.max_consecutive_errors;
        let mut slots = BTreeMap::new();
        let mut slot = |name: &str, hook| {
            let s = Arc::new(Slot::new(name, Some(hook), max, timeout));
            slots.insert(name.to_string(), s.clone());
            s
        };
        let direct_allowed = Arc::new(AtomicBool::new(false));
        let selector = (!settings.selector.is_empty()).then(|| {
            Arc::new(selector::WasmSelector::new(
                slot(&settings.selector, Hook::Selector),
                direct_allowed.clone(),
            ))
        });
        let pool_parser = (!settings.pool_parser.is_empty()).then(|| {
            Arc::new(pool_parser::WasmPoolParser::new(slot(
                &settings.pool_parser,
                Hook::PoolParser,
            )))
        });
        let webhooks = settings
            .webhooks
            .iter()
            .map(|n| Arc::new(webhook::WasmWebhook::new(slot(n, Hook::Webhook))))
            .collect();
        Core {
            inner: Arc::new(Inner {
                engine,
                dir,
                settings: settings.clone(),
                slots: RwLock::new(slots),
                load_lock: Mutex::new(()),
                direct_allowed,
                selector,
                pool_parser,
                webhooks,
            }),
        }
    }

    /// The configured selector, always serving the current version (or `Err(Unavailable)` while none is
    /// loaded or it is disabled: use the built-in then). `None` when `plugins.selector` is not set.
    pub fn selector(&self) -> Option<Arc<dyn ProxySelector>> {
        self.inner
            .selector
            .clone()
            .map(|s| s as Arc<dyn ProxySelector>)
    }

    /// The configured pool parser; same contract as [`Registry::selector`].
    pub fn pool_parser(&self) -> Option<Arc<dyn PoolParser>> {
        self.inner
            .pool_parser
            .clone()
            .map(|p| p as Arc<dyn PoolParser>)
    }

    /// The configured webhooks, in `plugins.webhooks` order; same contract as [`Registry::selector`].
    pub fn webhooks(&self) -> Vec<Arc<dyn LogWebhook>> {
        self.inner
            .webhooks
            .iter()
            .map(|w| w.clone() as Arc<dyn LogWebhook>)
            .collect()
    }

    /// Whether a selector may answer `direct` (the proxy pool sets this from its own rules; default false).
    pub fn set_direct_allowed(&self, allowed: bool) {
        self.inner.direct_allowed.store(allowed, Ordering::Relaxed);
    }

    /// Every known plugin: configured ones and every `NAME.wasm` seen in the directory.
    pub fn list(&self) -> Vec<PluginStatus> {
        let slots: Vec<Arc<Slot>> = self.inner.slots.read().values().cloned().collect();
        slots.iter().map(|s| s.status(&self.inner.dir)).collect()
    }

    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        let slot = self.inner.slots.read().get(name).cloned()?;
        Some(slot.status(&self.inner.dir))
    }

    /// Loads every `NAME.wasm` in the directory and unloads plugins whose file is gone. Blocking (compiles):
    /// call it off the async runtime. Failed files are retried; unchanged loaded ones are kept.
    pub fn load_all(&self) -> Vec<(String, LoadOutcome)> {
        let mut names: Vec<String> = self.inner.slots.read().keys().cloned().collect();
        match std::fs::read_dir(&self.inner.dir) {
            Ok(rd) => {
                for e in rd.flatten() {
                    if let Some(n) = plugin_name(&e.path()) {
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(dir = %self.inner.dir.display(), error = %e, "cannot list the plugin directory")
            }
        }
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let o = self.sync_file(&n, true);
                (n, o)
            })
            .collect()
    }

    /// Brings plugin `name` in line with its file: loads a new or changed file, unloads a removed one.
    /// `retry` also retries a file that failed before with the same content. Blocking.
    pub fn sync_file(&self, name: &str, retry: bool) -> LoadOutcome {
        if !valid_plugin_name(name) {
            return LoadOutcome::Failed {
                error: format!("`{name}` is not a plugin name"),
            };
        }
        let _guard = self.inner.load_lock.lock();
        let path = self.inner.dir.join(format!("{name}.wasm"));
        if !path.is_file() {
            return self.unload(name);
        }
        let slot = self.slot(name);
        let start = Instant::now();
        match self.load(&slot, &path, retry) {
            Ok(None) => LoadOutcome::Unchanged,
            Ok(Some(source)) => {
                let took_ms = start.elapsed().as_millis() as u64;
                let l = slot.current.load_full();
                let (sha, version) = l
                    .as_ref()
                    .map(|l| (l.sha256.as_str(), l.info.version.as_str()))
                    .unwrap_or_default();
                tracing::info!(
                    plugin = name,
                    sha256 = sha,
                    version,
                    ?source,
                    took_ms,
                    "plugin loaded"
                );
                LoadOutcome::Loaded { source, took_ms }
            }
            Err(e) => {
                let error = e.to_string();
                let serving = slot.current.load().is_some();
                tracing::warn!(plugin = name, error = %error, old_version_serving = serving, "plugin not loaded");
                slot.info.lock().load_error = Some(error.clone());
                LoadOutcome::Failed { error }
            }
        }
    }

    /// Re-enables a disabled plugin (and retries loading its file). `None` for an unknown name.
    pub fn enable(&self, name: &str) -> Option<PluginStatus> {
        let slot = self.inner.slots.read().get(name).cloned()?;
        slot.reset_errors();
        if slot.current.load().is_none() {
            self.sync_file(name, true);
        }
        tracing::info!(plugin = name, "plugin enabled by an admin");
        Some(slot.status(&self.inner.dir))
    }

    fn slot(&self, name: &str) -> Arc<Slot> {
        if let Some(s) = self.inner.slots.read().get(name) {
            return s.clone();
        }
        let mut w = self.inner.slots.write();
        w.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Slot::new(
                    name,
                    None,
                    self.inner.settings.max_consecutive_errors,
                    self.inner.engine.limits.timeout,
                ))
            })
            .clone()
    }

    fn unload(&self, name: &str) -> LoadOutcome {
        let Some(slot) = self.inner.slots.read().get(name).cloned() else {
            return LoadOutcome::Unloaded;
        };
        let was = slot.current.swap(None);
        slot.reset_errors();
        *slot.info.lock() = SlotInfo::default();
        if slot.hook.is_none() {
            self.inner.slots.write().remove(name);
        }
        if was.is_some() {
            tracing::info!(
                plugin = name,
                "plugin file removed: unloaded, the built-in serves"
            );
        }
        LoadOutcome::Unloaded
    }

    /// `Ok(None)`: same content as the serving (or last failed) version.
    fn load(
        &self,
        slot: &Slot,
        path: &Path,
        retry: bool,
    ) -> Result<Option<CompileSource>, PluginError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| PluginError::Io(format!("{}: {e}", path.display())))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(PluginError::Compile(format!(
                "the file is larger than {} MiB",
                MAX_FILE_BYTES >> 20
            )));
        }
        let bytes =
            std::fs::read(path).map_err(|e| PluginError::Io(format!("{}: {e}", path.display())))?;
        let sha = sha256_hex(&bytes);
        let current_sha = slot.current.load().as_ref().map(|l| l.sha256.clone());
        {
            let mut info = slot.info.lock();
            if current_sha.as_deref() == Some(sha.as_str()) {
                return Ok(None);
            }
            if !retry
                && info.tried_sha256.as_deref() == Some(sha.as_str())
                && info.load_error.is_some()
            {
                return Ok(None);
            }
            info.tried_sha256 = Some(sha.clone());
        }
        let engine = self.inner.engine.get()?;
        let (component, source) = engine.compile(&bytes, &sha, &cache_dir(&self.inner.dir))?;
        let pre = engine.link(&component)?;
        if let Some(hook) = slot.hook {
            if hook.kind() != pre.kind() {
                return Err(PluginError::WrongHook(format!(
                    "it is a {} plugin, but plugins.{} names it",
                    pre.kind().as_str(),
                    match hook {
                        Hook::Selector => "selector",
                        Hook::PoolParser => "pool_parser",
                        Hook::Webhook => "webhooks",
                    }
                )));
            }
        }
        let config = self.inner.settings.config_json(&slot.name);
        let mut inst = engine
            .instantiate(&pre, &slot.name, &config)
            .map_err(|e| PluginError::Init(e.to_string()))?;
        let info = inst
            .describe()
            .map_err(|e| PluginError::Init(format!("describe: {e}")))?;
        trial(&mut inst, pre.kind(), engine.limits().timeout)?;
        let loaded = Loaded {
            pre,
            engine: engine.clone(),
            config,
            idle: Mutex::new(vec![inst]),
            info,
            sha256: sha,
            loaded_at_ms: now_ms(),
            source,
        };
        slot.current.store(Some(Arc::new(loaded)));
        slot.reset_errors();
        let mut info = slot.info.lock();
        info.load_error = None;
        info.last_error = None;
        Ok(Some(source))
    }
}

/// What `grok2api plugin check` found out about a file.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub kind: Kind,
    pub world: &'static str,
    pub info: PluginInfo,
    pub sha256: String,
    pub compile_ms: u64,
    pub trial_ms: u64,
}

/// Why `grok2api plugin check` failed: the file could not be read, or the plugin failed a step.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Unreadable(String),
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Runs a file through the same steps as loading it, on an engine with the host's limits, without touching a
/// plugin directory or its compile cache: compile, link (world detection), instantiate with `init(config)`,
/// `describe`, and the trial call of its kind.
pub fn check_file(
    path: &Path,
    settings: &PluginSettings,
    config: &str,
) -> Result<CheckReport, CheckError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| CheckError::Unreadable(format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(CheckError::Unreadable(format!(
            "{}: not a file",
            path.display()
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(PluginError::Compile(format!(
            "the file is larger than {} MiB",
            MAX_FILE_BYTES >> 20
        ))
        .into());
    }
    let bytes = std::fs::read(path)
        .map_err(|e| CheckError::Unreadable(format!("{}: {e}", path.display())))?;
    let engine = PluginEngine::new(Limits {
        timeout: Duration::from_millis(settings.timeout_ms),
        memory_bytes: (settings.memory_mb as usize) << 20,
    })?;
    let started = Instant::now();
    let component = engine.compile_uncached(&bytes)?;
    let pre = engine.link(&component)?;
    let compile_ms = started.elapsed().as_millis() as u64;
    let name: Arc<str> = plugin_name(path)
        .unwrap_or_else(|| "plugin-check".into())
        .into();
    let mut inst = engine
        .instantiate(&pre, &name, config)
        .map_err(|e| PluginError::Init(e.to_string()))?;
    let info = inst
        .describe()
        .map_err(|e| PluginError::Init(format!("describe: {e}")))?;
    let started = Instant::now();
    trial(&mut inst, pre.kind(), engine.limits().timeout)?;
    Ok(CheckReport {
        kind: pre.kind(),
        world: pre.kind().world(),
        info,
        sha256: sha256_hex(&bytes),
        compile_ms,
        trial_ms: started.elapsed().as_millis() as u64,
    })
}

/// One call with sample arguments before a version may serve. Interpreted guests get a warm-up allowance: the
/// first call of a QuickJS or SpiderMonkey instance is slower than the ones after it.
fn trial(inst: &mut Instance, kind: Kind, timeout: Duration) -> Result<(), PluginError> {
    let deadline = (timeout * 10).max(Duration::from_millis(500));
    let r = match kind {
        Kind::Selector => selector::trial(inst, deadline),
        Kind::PoolParser => pool_parser::trial(inst, deadline),
        Kind::LogWebhook => webhook::trial(inst, deadline),
    };
    r.map_err(|e| PluginError::Trial(e.to_string()))
}

/// `NAME` for `<dir>/NAME.wasm`; `None` for anything else (temp files such as `.NAME.wasm.part` included).
pub(crate) fn plugin_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    valid_plugin_name(stem).then(|| stem.to_string())
}
