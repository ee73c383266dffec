//! The wasmtime side: one engine (component model, pooling allocator, epoch interruption), the linker (WASI p2
//! with an empty context plus the `host` interface), compilation with an on-disk cache, world detection, and
//! instances with their per-call limits.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::PluginError;
use crate::hooks::HookError;

/// Generated host bindings, one module per world. The `types` records are generated in each; the adapters
/// convert from the hook types into the world's own.
pub(crate) mod bindings {
    pub mod selector {
        wasmtime::component::bindgen!({ path: "../wit", world: "proxy-selector" });
    }
    pub mod parser {
        wasmtime::component::bindgen!({ path: "../wit", world: "pool-parser" });
    }
    pub mod webhook {
        wasmtime::component::bindgen!({ path: "../wit", world: "log-webhook" });
    }
}
use bindings::{parser, selector, webhook};

/// The version of the WIT package this host implements; plugins built against any `0.1.x` load.
pub const WIT_PACKAGE: &str = "grok2api:plugin";
const WIT_VERSION_PREFIX: &str = "0.1.";

/// How often the epoch advances while a call runs past its deadline (until its store notices and traps).
const TICK: Duration = Duration::from_millis(1);
/// Deadline for `init`, `describe` and the trial call at load time: interpreted guests (Python, JS) need more
/// than a hook call's budget to start.
const LOAD_DEADLINE: Duration = Duration::from_secs(2);
/// Longest log message a plugin may write; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 2048;

/// Which hook a component fills, detected from its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Selector,
    PoolParser,
    LogWebhook,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Selector => "selector",
            Kind::PoolParser => "pool-parser",
            Kind::LogWebhook => "log-webhook",
        }
    }
    /// The WIT world it implements.
    pub fn world(self) -> &'static str {
        match self {
            Kind::Selector => "proxy-selector",
            Kind::PoolParser => "pool-parser",
            Kind::LogWebhook => "log-webhook",
        }
    }
    fn interface(self) -> &'static str {
        match self {
            Kind::Selector => "selector",
            Kind::PoolParser => "parser",
            Kind::LogWebhook => "webhook",
        }
    }
}

/// Limits of every instance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
}

/// What `describe` said.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
}

/// Per-store state: an empty WASI context, the memory limiter, and the plugin's name for its log lines.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// Set when the limiter refused a memory growth, so the trap that follows is reported as out of memory.
    oom: bool,
    plugin: Arc<str>,
    /// The current call's deadline, checked by the store's epoch callback.
    deadline: Instant,
    /// The same deadline as the watchdog sees it (see [`Deadlines`]).
    slot: Arc<AtomicU64>,
    deadlines: Arc<Deadlines>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.memory_growing(current, desired, maximum)?;
        self.oom |= !ok;
        Ok(ok)
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
    fn instances(&self) -> usize {
        self.limits.instances()
    }
    fn tables(&self) -> usize {
        self.limits.tables()
    }
    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl selector::grok2api::plugin::host::Host for HostState {
    fn log(&mut self, level: selector::grok2api::plugin::host::Level, message: String) {
        use selector::grok2api::plugin::host::Level;
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE {
            let mut end = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let plugin = &*self.plugin;
        match level {
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// A component linked for its world, ready to instantiate.
#[derive(Clone)]
pub(crate) enum WorldPre {
    Selector(selector::ProxySelectorPre<HostState>),
    PoolParser(parser::PoolParserPre<HostState>),
    LogWebhook(webhook::LogWebhookPre<HostState>),
}

impl WorldPre {
    pub fn kind(&self) -> Kind {
        match self {
            WorldPre::Selector(_) => Kind::Selector,
            WorldPre::PoolParser(_) => Kind::PoolParser,
            WorldPre::LogWebhook(_) => Kind::LogWebhook,
        }
    }
}

pub(crate) enum World {
    Selector(selector::ProxySelector),
    PoolParser(parser::PoolParser),
    LogWebhook(webhook::LogWebhook),
}

/// A live instance with its own store. Used by one call at a time; dropped after any failed call.
pub(crate) struct Instance {
    pub store: Store<HostState>,
    pub world: World,
}

impl Instance {
    /// Runs `f` (calls into the guest) under a deadline: past it, the guest traps with [`Trap::Interrupt`].
    pub fn run<R>(&mut self, deadline: Duration, f: impl FnOnce(&mut Instance) -> R) -> R {
        arm(&mut self.store, deadline);
        let r = f(self);
        disarm(&self.store);
        r
    }

    /// Turns a failed call into the hook error the caller sees.
    pub fn classify(&mut self, err: wasmtime::Error) -> HookError {
        classify(&mut self.store, err)
    }

    pub fn describe(&mut self) -> Result<PluginInfo, HookError> {
        let r = self.run(LOAD_DEADLINE, |inst| match &inst.world {
            World::Selector(b) => b
                .grok2api_plugin_lifecycle()
                .call_describe(&mut inst.store)
                .map(|i| (i.name, i.version, i.description)),
            World::PoolParser(b) => b
                .grok2api_plugin_lifecycle()
                .call_describe(&mut inst.store)
                .map(|i| (i.name, i.version, i.description)),
            World::LogWebhook(b) => b
                .grok2api_plugin_lifecycle()
                .call_describe(&mut inst.store)
                .map(|i| (i.name, i.version, i.description)),
        });
        let (name, version, description) = r.map_err(|e| self.classify(e))?;
        Ok(PluginInfo {
            name,
            version,
            description,
        })
    }

    fn init(&mut self, config: &str) -> Result<(), HookError> {
        let r = self.run(LOAD_DEADLINE, |inst| match &inst.world {
            World::Selector(b) => b
                .grok2api_plugin_lifecycle()
                .call_init(&mut inst.store, config),
            World::PoolParser(b) => b
                .grok2api_plugin_lifecycle()
                .call_init(&mut inst.store, config),
            World::LogWebhook(b) => b
                .grok2api_plugin_lifecycle()
                .call_init(&mut inst.store, config),
        });
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(HookError::BadAnswer(format!(
                "init refused its config: {msg}"
            ))),
            Err(e) => Err(self.classify(e)),
        }
    }
}

/// Sets the store's deadline `d` from now: one epoch ahead for wasmtime, the instant itself for the epoch
/// callback (see `instantiate`), and the watchdog's slot.
fn arm(store: &mut Store<HostState>, d: Duration) {
    let deadline = Instant::now() + d;
    store.set_epoch_deadline(1);
    let s = store.data_mut();
    s.deadline = deadline;
    s.deadlines.armed(&s.slot, deadline);
}

fn disarm(store: &Store<HostState>) {
    Deadlines::disarmed(&store.data().slot);
}

/// The watchdog that interrupts plugin calls running past their deadline, and otherwise stays out of the way.
///
/// Every instance has a slot: its current (or last) call's deadline and whether that call still runs. The
/// thread sleeps until the earliest deadline ahead of it. Only when a call that still runs is past its deadline
/// does it advance the engine's epoch; each store is armed one epoch ahead, so every store then in the guest
/// enters its epoch callback, which traps the late call and lets the others continue. The thread keeps
/// advancing every [`TICK`] until the late call has ended.
///
/// A plain ticker advanced the epoch every millisecond while calls were being made: a thousand wake-ups a
/// second on the cores that serve requests, about 10 µs of CPU per request through the WASM selector
/// (`bench/README.md`, tenth pass). Now a steady stream of calls costs one wake-up per deadline's length
/// (the deadline of a finished call still counts as "ahead", so calls armed meanwhile never need to wake
/// the thread), and a loaded plugin with no calls costs none.
pub(crate) struct Deadlines {
    /// Time zero of the slots' and `planned`'s nanosecond clocks.
    base: Instant,
    /// Every live instance's slot: `deadline_ns << 1 | running`. Locked by `instantiate` and the thread only.
    slots: parking_lot::Mutex<Vec<Weak<AtomicU64>>>,
    /// When the thread looks next (ns since `base`; `u64::MAX`: parked until woken).
    planned: AtomicU64,
    stop: AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
    /// Counters for the tests: epoch advances, and wake-ups asked for by `armed`.
    advances: AtomicU64,
    unparks: AtomicU64,
}

impl Deadlines {
    fn new() -> Deadlines {
        Deadlines {
            base: Instant::now(),
            slots: parking_lot::Mutex::new(Vec::new()),
            planned: AtomicU64::new(u64::MAX),
            stop: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
            advances: AtomicU64::new(0),
            unparks: AtomicU64::new(0),
        }
    }

    fn ns(&self, t: Instant) -> u64 {
        // Shifted left by one in a slot: keep the top bit free (2^62 ns is 146 years).
        t.saturating_duration_since(self.base)
            .as_nanos()
            .min(1 << 62) as u64
    }

    fn slot(&self) -> Arc<AtomicU64> {
        let slot = Arc::new(AtomicU64::new(0));
        self.slots.lock().push(Arc::downgrade(&slot));
        slot
    }

    /// A call with this `deadline` starts. The `SeqCst` store and load here and the `SeqCst` store of
    /// `planned` and loads of the slots in `run` make sure one side sees the other: either the thread's scan
    /// sees this slot, or this sees the `planned` that the scan produced and wakes the thread if it is late.
    fn armed(&self, slot: &AtomicU64, deadline: Instant) {
        let at = self.ns(deadline);
        slot.store(at << 1 | 1, Ordering::SeqCst);
        if self.planned.load(Ordering::SeqCst) > at {
            self.unparks.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// The call has ended (the slot has one writer: the instance's current caller).
    fn disarmed(slot: &AtomicU64) {
        slot.store(slot.load(Ordering::Relaxed) & !1, Ordering::Release);
    }

    /// Whether a running call is past its deadline, and the earliest deadline after `now` (finished calls
    /// included, see the type's doc).
    fn scan(&self, now: u64) -> (bool, u64) {
        let (mut late, mut next) = (false, u64::MAX);
        self.slots.lock().retain(|w| {
            let Some(slot) = w.upgrade() else {
                return false;
            };
            let v = slot.load(Ordering::SeqCst);
            let at = v >> 1;
            if v & 1 == 1 && at <= now {
                late = true;
            } else if at > now {
                next = next.min(at);
            }
            true
        });
        (late, next)
    }

    fn run(&self, engine: &wasmtime::Engine) {
        while !self.stop.load(Ordering::Relaxed) {
            let now = self.ns(Instant::now());
            let (late, mut next) = self.scan(now);
            if late {
                engine.increment_epoch();
                self.advances.fetch_add(1, Ordering::Relaxed);
                next = next.min(now + TICK.as_nanos() as u64);
            }
            self.planned.store(next, Ordering::SeqCst);
            // A call armed before the store above may not have seen it, and so not woken the thread.
            if self.scan(now).1 < next {
                continue;
            }
            if next == u64::MAX {
                std::thread::park();
            } else {
                std::thread::park_timeout(Duration::from_nanos(next - now));
            }
        }
    }
}

fn classify(store: &mut Store<HostState>, err: wasmtime::Error) -> HookError {
    if store.data().oom {
        return HookError::OutOfMemory;
    }
    if let Some(Trap::Interrupt) = err.downcast_ref::<Trap>() {
        return HookError::Timeout;
    }
    let mut msg = format!("{err:#}");
    if msg.len() > 500 {
        let mut end = 500;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
    }
    HookError::Trap(msg)
}

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompileSource {
    /// Compiled now (and written to the cache).
    Compiled,
    /// Read from the on-disk cache.
    Cache,
}

pub struct PluginEngine {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    limits: Limits,
    /// Distinguishes cache entries of other wasmtime versions or engine settings.
    cache_tag: String,
    deadlines: Arc<Deadlines>,
    watchdog: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The engine's configuration: the same in the gateway and in a compiling child process, so what one compiles
/// the other can load.
fn engine_config(memory_bytes: usize) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    // Room for a few warm instances of a dozen plugins, Python's and JS's multi-module components included.
    pool.total_component_instances(256)
        .total_core_instances(2048)
        .total_memories(512)
        .total_tables(512)
        .total_stacks(256)
        .max_core_instances_per_component(64)
        .max_memories_per_component(32)
        .max_tables_per_component(32)
        .max_component_instance_size(8 << 20)
        .max_core_instance_size(8 << 20)
        .table_elements(100_000)
        .max_memory_size(memory_bytes);
    let mut cfg = Config::new();
    cfg.wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    cfg
}

/// The program that compiles plugins in a child process (`grok2api __compile-plugin`), once the binary named
/// itself. Compiling in the gateway's own process left about 15 MB resident for good (Cranelift's heap on
/// rayon's threads, and Cranelift's code pages): 44 MB idle with one plugin compiled against 29 MB with the
/// same plugin loaded from the compile cache. Not set (tests, the library alone): compiled in process.
static COMPILER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Compile plugins by running `exe __compile-plugin` (the gateway's own binary).
pub fn compile_in_child_process(exe: PathBuf) {
    let _ = COMPILER.set(exe);
}

/// Exit codes of `__compile-plugin`.
pub mod child_exit {
    /// The component does not compile; the message is on stderr.
    pub const COMPILE_ERROR: u8 = 1;
    /// The compiled form could not be written.
    pub const WRITE_ERROR: u8 = 3;
}

/// `grok2api __compile-plugin`: compiles the component on `input` with the engine configuration for
/// `memory_bytes` and writes the compiled form to `out` (atomically).
pub fn compile_child(memory_bytes: usize, input: &[u8], out: &Path) -> Result<(), (u8, String)> {
    let engine = wasmtime::Engine::new(&engine_config(memory_bytes))
        .map_err(|e| (child_exit::COMPILE_ERROR, format!("{e:#}")))?;
    let compiled = engine
        .precompile_component(input)
        .map_err(|e| (child_exit::COMPILE_ERROR, format!("{e:#}")))?;
    crate::storage::write_atomic(out, &compiled)
        .map_err(|e| (child_exit::WRITE_ERROR, e.to_string()))
}

/// Runs the compiling child for `bytes`, which writes `cached`. `Ok(false)`: the child could not do it (no
/// binary, killed, cache not writable); the caller compiles in process.
fn compile_in_child(
    exe: &Path,
    memory_bytes: usize,
    bytes: &[u8],
    cached: &Path,
) -> Result<bool, PluginError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if let Some(dir) = cached.parent() {
        if std::fs::create_dir_all(dir).is_err() {
            return Ok(false);
        }
    }
    let child = Command::new(exe)
        .arg("__compile-plugin")
        .arg("--memory-bytes")
        .arg(memory_bytes.to_string())
        .arg(cached)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the plugin compiler process; compiling in process");
            return Ok(false);
        }
    };
    // The child reads all of its input before it compiles, so writing it all first cannot deadlock.
    let fed = child.stdin.take().map(|mut i| i.write_all(bytes));
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "the plugin compiler process failed; compiling in process");
            return Ok(false);
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match out.status.code() {
        Some(0) if !matches!(fed, Some(Err(_))) => Ok(true),
        Some(c) if c == i32::from(child_exit::COMPILE_ERROR) => Err(PluginError::Compile(stderr)),
        _ => {
            tracing::warn!(status = %out.status, stderr = %stderr, "the plugin compiler process failed; compiling in process");
            Ok(false)
        }
    }
}

impl PluginEngine {
    pub fn new(limits: Limits) -> Result<PluginEngine, PluginError> {
        let wt = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        let cfg = engine_config(limits.memory_bytes);
        let engine = wasmtime::Engine::new(&cfg).map_err(wt)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wt)?;
        // The `host` interface is the same in every world: link it once, through any world's bindings.
        selector::grok2api::plugin::host::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(wt)?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        limits.memory_bytes.hash(&mut h);
        let cache_tag = format!("wasmtime48-{:016x}", h.finish());

        let deadlines = Arc::new(Deadlines::new());
        let watchdog = {
            let engine = engine.clone();
            let deadlines = deadlines.clone();
            std::thread::Builder::new()
                .name("plugin-deadlines".into())
                .spawn(move || deadlines.run(&engine))
                .map_err(|e| {
                    PluginError::Engine(format!("cannot start the deadline watchdog: {e}"))
                })?
        };
        let _ = deadlines.thread.set(watchdog.thread().clone());
        Ok(PluginEngine {
            engine,
            linker,
            limits,
            cache_tag,
            deadlines,
            watchdog: Some(watchdog),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles `bytes` (whose SHA-256 is `sha256`), or loads the compiled form from `cache_dir`. A cache
    /// entry that cannot be read is recompiled and rewritten; a cache that cannot be written is only a warning.
    pub fn compile(
        &self,
        bytes: &[u8],
        sha256: &str,
        cache_dir: &Path,
    ) -> Result<(Component, CompileSource), PluginError> {
        let cached = cache_dir.join(format!("{sha256}-{}.cwasm", self.cache_tag));
        // Read into memory rather than mmap: a cache file truncated under a live mapping would kill the
        // process with SIGBUS.
        if let Ok(compiled) = std::fs::read(&cached) {
            // SAFETY: the cache holds only what `Component::serialize` wrote for this engine configuration (the
            // tag is in the file name, and wasmtime checks its own header); it lives in the operator's plugin
            // directory, which is trusted as much as the plugins themselves.
            match unsafe { Component::deserialize(&self.engine, &compiled) } {
                Ok(c) => return Ok((c, CompileSource::Cache)),
                Err(e) => {
                    tracing::warn!(file = %cached.display(), error = %e, "ignoring unreadable compile cache entry")
                }
            }
        }
        if let Some(exe) = COMPILER.get() {
            if compile_in_child(exe, self.limits.memory_bytes, bytes, &cached)? {
                let compiled = std::fs::read(&cached)
                    .map_err(|e| PluginError::Io(format!("{}: {e}", cached.display())))?;
                // SAFETY: as above; the child is this binary, with this engine configuration.
                match unsafe { Component::deserialize(&self.engine, &compiled) } {
                    Ok(c) => return Ok((c, CompileSource::Compiled)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot load what the plugin compiler process wrote; compiling in process")
                    }
                }
            }
        }
        let component = self.compile_uncached(bytes)?;
        match component.serialize() {
            Ok(out) => {
                let written = std::fs::create_dir_all(cache_dir)
                    .map_err(|e| e.to_string())
                    .and_then(|_| {
                        crate::storage::write_atomic(&cached, &out).map_err(|e| e.to_string())
                    });
                if let Err(e) = written {
                    tracing::warn!(file = %cached.display(), error = %e, "cannot write the compile cache");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize a compiled plugin"),
        }
        Ok((component, CompileSource::Compiled))
    }

    /// Detects the world from the component's exports and links it. A component exporting no hook, or more
    /// than one, or importing what the host does not provide, is an error naming the problem.
    /// Compiles without reading or writing the cache (`grok2api plugin check`).
    pub fn compile_uncached(&self, bytes: &[u8]) -> Result<Component, PluginError> {
        Component::new(&self.engine, bytes).map_err(|e| PluginError::Compile(format!("{e:#}")))
    }

    pub(crate) fn link(&self, component: &Component) -> Result<WorldPre, PluginError> {
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let has = |iface: &str| {
            exports.iter().any(|e| {
                e.strip_prefix(WIT_PACKAGE)
                    .and_then(|r| r.strip_prefix('/'))
                    .and_then(|r| r.strip_prefix(iface))
                    .and_then(|r| r.strip_prefix('@'))
                    .is_some_and(|v| v.starts_with(WIT_VERSION_PREFIX))
            })
        };
        let kinds: Vec<Kind> = [Kind::Selector, Kind::PoolParser, Kind::LogWebhook]
            .into_iter()
            .filter(|k| has(k.interface()))
            .collect();
        let kind = match kinds.as_slice() {
            [k] => *k,
            [] => {
                return Err(PluginError::NoWorld(format!(
                    "it exports [{}], none of {WIT_PACKAGE}/{{selector,parser,webhook}}@0.1",
                    exports.join(", ")
                )))
            }
            _ => {
                return Err(PluginError::NoWorld(
                    "it exports more than one hook interface".into(),
                ))
            }
        };
        if !has("lifecycle") {
            return Err(PluginError::NoWorld(format!(
                "it exports {}, but not {WIT_PACKAGE}/lifecycle@0.1",
                kind.interface()
            )));
        }
        let link = |e: wasmtime::Error| PluginError::Link(format!("{e:#}"));
        let pre = self.linker.instantiate_pre(component).map_err(link)?;
        Ok(match kind {
            Kind::Selector => {
                WorldPre::Selector(selector::ProxySelectorPre::new(pre).map_err(link)?)
            }
            Kind::PoolParser => {
                WorldPre::PoolParser(parser::PoolParserPre::new(pre).map_err(link)?)
            }
            Kind::LogWebhook => {
                WorldPre::LogWebhook(webhook::LogWebhookPre::new(pre).map_err(link)?)
            }
        })
    }

    /// A fresh instance, `init`-ed with `config`.
    pub(crate) fn instantiate(
        &self,
        pre: &WorldPre,
        plugin: &Arc<str>,
        config: &str,
    ) -> Result<Instance, HookError> {
        let mut wasi = WasiCtx::builder();
        // Nothing inherited, nothing reachable: no preopens, env, args or stdio are given either.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .instances(256)
                .tables(256)
                .memories(64)
                .build(),
            oom: false,
            plugin: plugin.clone(),
            deadline: Instant::now(),
            slot: self.deadlines.slot(),
            deadlines: self.deadlines.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        // Reached when the epoch advances while this store runs: some call is late, maybe not this one.
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        arm(&mut store, LOAD_DEADLINE);
        let world = match pre {
            WorldPre::Selector(p) => p.instantiate(&mut store).map(World::Selector),
            WorldPre::PoolParser(p) => p.instantiate(&mut store).map(World::PoolParser),
            WorldPre::LogWebhook(p) => p.instantiate(&mut store).map(World::LogWebhook),
        };
        disarm(&store);
        let world = match world {
            Ok(w) => w,
            Err(e) => return Err(classify(&mut store, e)),
        };
        let mut inst = Instance { store, world };
        inst.init(config)?;
        Ok(inst)
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.deadlines.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.watchdog.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// `<dir>/.cache`: compiled components, keyed by file hash and engine.
pub fn cache_dir(plugin_dir: &Path) -> PathBuf {
    plugin_dir.join(".cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watchdog() -> (Arc<Deadlines>, JoinHandle<()>) {
        let engine = wasmtime::Engine::default();
        let d = Arc::new(Deadlines::new());
        let h = {
            let d = d.clone();
            std::thread::spawn(move || d.run(&engine))
        };
        let _ = d.thread.set(h.thread().clone());
        (d, h)
    }

    fn stop(d: &Deadlines, h: JoinHandle<()>) {
        d.stop.store(true, Ordering::Relaxed);
        h.thread().unpark();
        h.join().unwrap();
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn parked(d: &Deadlines) -> bool {
        d.planned.load(Ordering::SeqCst) == u64::MAX
    }

    #[test]
    fn calls_that_end_in_time_never_advance_the_epoch() {
        let (d, h) = watchdog();
        wait_for("the watchdog to park", || parked(&d));
        let slot = d.slot();
        for _ in 0..50 {
            d.armed(&slot, Instant::now() + Duration::from_millis(5));
            Deadlines::disarmed(&slot);
        }
        // It woke for the deadline, found the call ended, and parked again without advancing.
        std::thread::sleep(Duration::from_millis(20));
        wait_for("the watchdog to park again", || parked(&d));
        assert_eq!(d.advances.load(Ordering::SeqCst), 0);
        stop(&d, h);
    }

    #[test]
    fn a_late_call_advances_the_epoch_at_its_deadline_until_it_ends() {
        let (d, h) = watchdog();
        let (slot, other) = (d.slot(), d.slot());
        let start = Instant::now();
        d.armed(&slot, start + Duration::from_millis(40));
        // A later call that ends in time changes nothing for the first.
        d.armed(&other, Instant::now() + Duration::from_millis(80));
        Deadlines::disarmed(&other);
        wait_for("the first advance", || {
            d.advances.load(Ordering::SeqCst) >= 1
        });
        assert!(
            start.elapsed() >= Duration::from_millis(40),
            "advanced after {:?}, before the deadline",
            start.elapsed()
        );
        // Still running: it keeps advancing (the store may have missed the first one), then stops once the
        // call has ended.
        wait_for("more advances", || d.advances.load(Ordering::SeqCst) >= 5);
        Deadlines::disarmed(&slot);
        std::thread::sleep(Duration::from_millis(5));
        let after = d.advances.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(d.advances.load(Ordering::SeqCst), after);
        wait_for("the watchdog to park", || parked(&d));
        stop(&d, h);
    }

    #[test]
    fn steady_calls_do_not_wake_the_watchdog_each_time() {
        let (d, h) = watchdog();
        wait_for("the watchdog to park", || parked(&d));
        // Two threads calling every 100 µs with 20 ms deadlines: the first call wakes the parked thread; the
        // ones after it fall behind a deadline the thread already waits for.
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let d = d.clone();
                std::thread::spawn(move || {
                    let slot = d.slot();
                    let end = Instant::now() + Duration::from_millis(200);
                    let mut calls = 0u64;
                    while Instant::now() < end {
                        d.armed(&slot, Instant::now() + Duration::from_millis(20));
                        Deadlines::disarmed(&slot);
                        calls += 1;
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    calls
                })
            })
            .collect();
        let calls: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        let unparks = d.unparks.load(Ordering::SeqCst);
        assert!(calls > 100, "only {calls} calls");
        assert!(unparks <= 4, "{unparks} wake-ups for {calls} calls");
        assert_eq!(d.advances.load(Ordering::SeqCst), 0);
        stop(&d, h);
    }
}
