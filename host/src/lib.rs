//! grok2api: an OpenAI-compatible gateway in front of Grok (or any OpenAI-compatible upstream) with a pool of
//! upstream credentials, egress proxies, a call log and WASM plugins. See `ARCHITECTURE.md` for the map.

pub mod api;
pub mod auth;
pub mod calllog;
pub mod config;
pub mod hooks;
pub mod live;
pub mod netpolicy;
pub mod plugins;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod storage;
pub mod sync;
pub mod telemetry;
pub mod tokens;
pub mod upstream;
pub mod util;
pub mod webhook;
