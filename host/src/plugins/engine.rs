//! The wasmtime side: one engine (component model, pooling allocator, epoch interruption), the linker (WASI p2
//! with an empty context plus the `host` interface), compilation with an on-disk cache, world detection, and
//! instances with their per-call limits.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    StoreLimits, StoreLimitsBuilder, Trap,
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

/// One epoch tick. The deadline of a call is `timeout_ms` ticks, so it is accurate to about a millisecond.
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
    ticker: Arc<Ticker>,
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
    /// Arms the deadline of the next call.
    pub fn arm(&mut self, deadline: Duration) {
        arm(&mut self.store, deadline);
    }

    /// Turns a failed call into the hook error the caller sees.
    pub fn classify(&mut self, err: wasmtime::Error) -> HookError {
        classify(&mut self.store, err)
    }

    pub fn describe(&mut self) -> Result<PluginInfo, HookError> {
        self.arm(LOAD_DEADLINE);
        let r = match &self.world {
            World::Selector(b) => b
                .grok2api_plugin_lifecycle()
                .call_describe(&mut self.store)
                .map(|i| (i.name, i.version, i.description)),
            World::PoolParser(b) => b
                .grok2api_plugin_lifecycle()
                .call_describe(&mut self.store)
                .map(|i| (i.name, i.version, i.description)),
            World::LogWebhook(b) => b
                .grok2api_plugin_lifecycle()
                .call_describe(&mut self.store)
                .map(|i| (i.name, i.version, i.description)),
        };
        let (name, version, description) = r.map_err(|e| self.classify(e))?;
        Ok(PluginInfo {
            name,
            version,
            description,
        })
    }

    fn init(&mut self, config: &str) -> Result<(), HookError> {
        self.arm(LOAD_DEADLINE);
        let r = match &self.world {
            World::Selector(b) => b
                .grok2api_plugin_lifecycle()
                .call_init(&mut self.store, config),
            World::PoolParser(b) => b
                .grok2api_plugin_lifecycle()
                .call_init(&mut self.store, config),
            World::LogWebhook(b) => b
                .grok2api_plugin_lifecycle()
                .call_init(&mut self.store, config),
        };
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(HookError::BadAnswer(format!(
                "init refused its config: {msg}"
            ))),
            Err(e) => Err(self.classify(e)),
        }
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_micros() / TICK.as_micros()).max(1) as u64
}

fn arm(store: &mut Store<HostState>, deadline: Duration) {
    let n = ticks(deadline);
    store.set_epoch_deadline(n);
    store.data().ticker.need(n);
}

/// Advances the engine's epoch every [`TICK`], but only while some armed deadline may still be ahead: a
/// loaded plugin with no call in its last deadline costs no wake-ups (a plain ticker woke the process a
/// thousand times a second for as long as a plugin was loaded, busy or not).
struct Ticker {
    /// Ticks so far (the engine's epoch, give or take the tick in progress).
    now: AtomicU64,
    /// The tick after which no armed deadline is left.
    until: AtomicU64,
    /// The thread is parked (or about to be) and must be unparked by the next `need`.
    parked: AtomicBool,
    stop: AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl Ticker {
    /// A call armed with `n` ticks: keep ticking until they are over. The two `SeqCst` pairs (`until` then
    /// `parked` here, `parked` then `until` in `run`) make sure one side sees the other: no call is left
    /// without a ticker.
    fn need(&self, n: u64) {
        // +1: the tick in progress may already have advanced the engine but not `now`.
        self.until
            .fetch_max(self.now.load(Ordering::SeqCst) + n + 1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    fn run(&self, engine: &wasmtime::Engine) {
        while !self.stop.load(Ordering::Relaxed) {
            let now = self.now.load(Ordering::SeqCst);
            if now >= self.until.load(Ordering::SeqCst) {
                self.parked.store(true, Ordering::SeqCst);
                if now >= self.until.load(Ordering::SeqCst) {
                    // An unpark that came first makes this return at once.
                    std::thread::park();
                }
                self.parked.store(false, Ordering::SeqCst);
                continue;
            }
            std::thread::sleep(TICK);
            engine.increment_epoch();
            self.now.fetch_add(1, Ordering::SeqCst);
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
    ticker: Arc<Ticker>,
    ticker_thread: Option<JoinHandle<()>>,
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

        let ticker = Arc::new(Ticker {
            now: AtomicU64::new(0),
            until: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
        });
        let ticker_thread = {
            let engine = engine.clone();
            let ticker = ticker.clone();
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || ticker.run(&engine))
                .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        let _ = ticker.thread.set(ticker_thread.thread().clone());
        Ok(PluginEngine {
            engine,
            linker,
            limits,
            cache_tag,
            ticker,
            ticker_thread: Some(ticker_thread),
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
            ticker: self.ticker.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        arm(&mut store, LOAD_DEADLINE);
        let world = match pre {
            WorldPre::Selector(p) => p.instantiate(&mut store).map(World::Selector),
            WorldPre::PoolParser(p) => p.instantiate(&mut store).map(World::PoolParser),
            WorldPre::LogWebhook(p) => p.instantiate(&mut store).map(World::LogWebhook),
        };
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
        self.ticker.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker_thread.take() {
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

    fn ticker() -> (Arc<Ticker>, wasmtime::Engine, JoinHandle<()>) {
        let engine = wasmtime::Engine::default();
        let t = Arc::new(Ticker {
            now: AtomicU64::new(0),
            until: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
        });
        let h = {
            let (t, engine) = (t.clone(), engine.clone());
            std::thread::spawn(move || t.run(&engine))
        };
        let _ = t.thread.set(h.thread().clone());
        (t, engine, h)
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(
                std::time::Instant::now() < end,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_ticker_ticks_only_while_a_deadline_is_ahead() {
        let (t, _engine, h) = ticker();
        // Nothing armed: parked, not ticking.
        wait_for("the ticker to park", || t.parked.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(t.now.load(Ordering::SeqCst), 0);
        // A call armed with 5 ticks wakes it; it ticks past them, then parks again.
        t.need(5);
        wait_for("5 ticks", || t.now.load(Ordering::SeqCst) >= 5);
        wait_for("the ticker to park again", || {
            t.parked.load(Ordering::SeqCst)
        });
        let stopped_at = t.now.load(Ordering::SeqCst);
        assert!(stopped_at <= 6 + 1, "ticked on to {stopped_at}");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(t.now.load(Ordering::SeqCst), stopped_at);
        // Many calls arming from other threads while it parks and wakes: every one gets its ticks.
        for round in 0..200u64 {
            let before = t.now.load(Ordering::SeqCst);
            t.need(2);
            wait_for("2 more ticks", || {
                t.now.load(Ordering::SeqCst) >= before + 2
            });
            if round % 50 == 0 {
                wait_for("parked", || t.parked.load(Ordering::SeqCst));
            }
        }
        t.stop.store(true, Ordering::Relaxed);
        h.thread().unpark();
        h.join().unwrap();
    }
}
