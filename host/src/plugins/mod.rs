//! WASM plugins: components that fill the hooks of `hooks.rs` (proxy selection, pool parsing, log webhooks).
//!
//! - `engine`: wasmtime (component model, pooling allocator, epoch deadlines, memory caps), WASI p2 with an
//!   empty context, compile cache, world detection.
//! - `registry`: loaded plugins by name, warm instances, hot swap (`ArcSwap`), states and statistics.
//! - `watcher`: reloads on close-after-write and rename-into-place in the plugin directory.
//! - `selector`, `pool_parser`, `webhook`: the adapters implementing the hook traits.
//!
//! Failure policy: any failed call (trap, timeout, out of memory, bad answer) drops that instance, counts an
//! error and returns `Err(HookError)`, so the caller uses its built-in for that call (fail-open). After
//! `plugins.max_consecutive_errors` in a row the plugin is disabled until its file changes or an admin
//! enables it. This module knows nothing of HTTP.

mod engine;
mod pool_parser;
mod registry;
mod selector;
mod stats;
mod watcher;
mod webhook;

use thiserror::Error;

pub use engine::{
    child_exit, compile_child, compile_in_child_process, CompileSource, Kind, PluginInfo,
};
pub use pool_parser::WasmPoolParser;
pub use registry::{
    check_file, CheckError, CheckReport, Hook, LoadOutcome, PluginStatus, Registry, State,
};
pub use selector::WasmSelector;
pub use watcher::Watcher;
pub use webhook::WasmWebhook;

/// Why a plugin could not be loaded (or the plugin system could not start).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PluginError {
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("{0}")]
    Io(String),
    #[error("not a valid component: {0}")]
    Compile(String),
    #[error("matches no plugin world: {0}")]
    NoWorld(String),
    #[error("cannot link: {0}")]
    Link(String),
    #[error("wrong hook: {0}")]
    WrongHook(String),
    #[error("start-up failed: {0}")]
    Init(String),
    #[error("trial call failed: {0}")]
    Trial(String),
    #[error("file watcher: {0}")]
    Watch(String),
}
