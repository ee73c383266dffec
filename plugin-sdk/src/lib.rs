//! Write [grok2api](https://github.com/) plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2`. It fills one of three hooks: choosing the
//! egress proxy of a request (`selector`), parsing the answer of a proxy-pool API (`pool-parser`) or turning
//! finished calls into webhook requests (`log-webhook`). Enable the feature of that world — exactly one — and
//! export your type with the matching macro. Plugins are pure functions: the host does all I/O, and a plugin
//! that traps, runs out of time (20 ms by default) or memory (32 MiB) is replaced by the built-in for that call.
//!
//! # A complete selector plugin
//!
//! `Cargo.toml`:
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//! [dependencies]
//! grok2api-plugin-sdk = { version = "0.1", features = ["selector"] }
//! ```
//! `src/lib.rs`:
//! ```ignore
//! use grok2api_plugin_sdk::prelude::*;
//!
//! struct Fastest;
//!
//! impl Plugin for Fastest {
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("fastest", env!("CARGO_PKG_VERSION"), "healthy proxy with the lowest latency")
//!     }
//! }
//!
//! impl SelectorPlugin for Fastest {
//!     fn select(_req: RequestInfo, candidates: Vec<Candidate>) -> Selection {
//!         candidates
//!             .iter()
//!             .filter(|c| c.healthy)
//!             .min_by_key(|c| c.ewma_latency_ms.unwrap_or(u32::MAX))
//!             .map_or(Selection::Default, |c| Selection::UseCandidate(c.id))
//!     }
//! }
//!
//! export_selector!(Fastest);
//! ```
//! Build it with `cargo build --release --target wasm32-wasip2` and copy
//! `target/wasm32-wasip2/release/fastest.wasm` into the gateway's plugin directory as `NAME.wasm` (write a temp
//! file and rename it into place: the gateway swaps plugins while serving). Then set `[plugins] selector = "NAME"`.
//!
//! Configuration: `init` receives the plugin's `[plugins.config.NAME]` table as JSON; [`parse_config`] turns it
//! into your own `serde` type. Keep it in a `static` ([`std::sync::OnceLock`] or a `thread_local!`): each
//! instance is initialised once and then reused for many calls.

#![cfg_attr(
    not(any(feature = "selector", feature = "pool-parser", feature = "log-webhook")),
    allow(unused)
)]

#[cfg(any(
    all(feature = "selector", feature = "pool-parser"),
    all(feature = "selector", feature = "log-webhook"),
    all(feature = "pool-parser", feature = "log-webhook")
))]
compile_error!("enable exactly one of the features `selector`, `pool-parser`, `log-webhook`");

mod helpers;
pub use helpers::*;

/// The generated bindings of the enabled world. Use the re-exports at the crate root instead.
#[cfg(feature = "selector")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "proxy-selector",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "grok2api_plugin_sdk::bindings",
    });
}

#[cfg(feature = "pool-parser")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "pool-parser",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "grok2api_plugin_sdk::bindings",
    });
}

#[cfg(feature = "log-webhook")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "log-webhook",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "grok2api_plugin_sdk::bindings",
    });
}

#[cfg(any(feature = "selector", feature = "pool-parser", feature = "log-webhook"))]
mod world {
    use super::bindings::grok2api::plugin;

    pub use plugin::host::Level as LogLevel;
    pub use plugin::types::{
        CallLog, Candidate, OutboundRequest, PluginInfo, ProxySource, ProxySpec, RequestInfo,
        Scheme, Selection,
    };

    impl PluginInfo {
        pub fn new(name: &str, version: &str, description: &str) -> PluginInfo {
            PluginInfo {
                name: name.into(),
                version: version.into(),
                description: description.into(),
            }
        }
    }

    impl OutboundRequest {
        /// A `POST` with a JSON body and `Content-Type: application/json`.
        pub fn post_json(url: &str, body: &serde_json::Value) -> OutboundRequest {
            OutboundRequest {
                method: "POST".into(),
                url: url.into(),
                headers: vec![("content-type".into(), "application/json".into())],
                body: serde_json::to_vec(body).unwrap_or_default(),
            }
        }

        /// Adds a header (e.g. a webhook secret; the host never logs header values).
        pub fn with_header(mut self, name: &str, value: &str) -> OutboundRequest {
            self.headers.push((name.into(), value.into()));
            self
        }
    }

    impl ProxySpec {
        /// A spec given as one proxy URL (`http://user:pass@host:port`, `socks5://host:port`, ...).
        pub fn from_url(url: &str) -> ProxySpec {
            ProxySpec {
                url: Some(url.into()),
                scheme: None,
                host: None,
                port: None,
                username: None,
                password: None,
                expires_at_ms: None,
                label: None,
            }
        }

        /// A spec given as parts; the scheme defaults to `http` on the host.
        pub fn from_parts(host: &str, port: u16) -> ProxySpec {
            ProxySpec {
                host: Some(host.into()),
                port: Some(port),
                url: None,
                ..ProxySpec::from_url("")
            }
        }
    }

    /// Writes into the gateway's log, tagged with the plugin's name.
    pub fn log(level: LogLevel, message: &str) {
        plugin::host::log(level, message)
    }
}
#[cfg(any(feature = "selector", feature = "pool-parser", feature = "log-webhook"))]
pub use world::*;

/// What every plugin provides, whatever its hook.
#[cfg(any(feature = "selector", feature = "pool-parser", feature = "log-webhook"))]
pub trait Plugin {
    /// Name, version and description, shown by the gateway's admin API.
    fn info() -> PluginInfo;
    /// Called once per instance with the plugin's config table as JSON (`{}` when there is none).
    /// An error stops the plugin from loading; the message is shown to the operator.
    fn init(config: String) -> Result<(), String> {
        let _ = config;
        Ok(())
    }
}

/// A proxy selector: picks the egress for one request.
#[cfg(feature = "selector")]
pub trait SelectorPlugin: Plugin {
    fn select(request: RequestInfo, candidates: Vec<Candidate>) -> Selection;
}

/// A pool parser: turns one answer of a proxy-pool API into proxies (an error answer is `Err`).
#[cfg(feature = "pool-parser")]
pub trait PoolParserPlugin: Plugin {
    fn parse(
        source_url: String,
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    ) -> Result<Vec<ProxySpec>, String>;
}

/// A log webhook: turns a batch of finished calls into requests the host sends.
#[cfg(feature = "log-webhook")]
pub trait LogWebhookPlugin: Plugin {
    fn deliver(batch: Vec<CallLog>) -> Vec<OutboundRequest>;
}

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::helpers::*;
    #[cfg(feature = "log-webhook")]
    pub use crate::{export_log_webhook, CallLog, LogWebhookPlugin, OutboundRequest};
    #[cfg(feature = "pool-parser")]
    pub use crate::{export_pool_parser, PoolParserPlugin, ProxySpec};
    #[cfg(feature = "selector")]
    pub use crate::{
        export_selector, Candidate, ProxySource, RequestInfo, Scheme, Selection, SelectorPlugin,
    };
    #[cfg(any(feature = "selector", feature = "pool-parser", feature = "log-webhook"))]
    pub use crate::{log, LogLevel, Plugin, PluginInfo};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __impl_lifecycle {
    ($ty:ident) => {
        impl $crate::bindings::exports::grok2api::plugin::lifecycle::Guest for $ty {
            fn describe() -> $crate::PluginInfo {
                <$ty as $crate::Plugin>::info()
            }
            fn init(
                config: ::std::string::String,
            ) -> ::std::result::Result<(), ::std::string::String> {
                <$ty as $crate::Plugin>::init(config)
            }
        }
    };
}

/// Exports a [`SelectorPlugin`] as the component's `proxy-selector` world.
#[cfg(feature = "selector")]
#[macro_export]
macro_rules! export_selector {
    ($ty:ident) => {
        $crate::__impl_lifecycle!($ty);
        impl $crate::bindings::exports::grok2api::plugin::selector::Guest for $ty {
            fn select(
                request: $crate::RequestInfo,
                candidates: ::std::vec::Vec<$crate::Candidate>,
            ) -> $crate::Selection {
                <$ty as $crate::SelectorPlugin>::select(request, candidates)
            }
        }
        $crate::bindings::__export_world!($ty with_types_in $crate::bindings);
    };
}

/// Exports a [`PoolParserPlugin`] as the component's `pool-parser` world.
#[cfg(feature = "pool-parser")]
#[macro_export]
macro_rules! export_pool_parser {
    ($ty:ident) => {
        $crate::__impl_lifecycle!($ty);
        impl $crate::bindings::exports::grok2api::plugin::parser::Guest for $ty {
            fn parse(
                source_url: ::std::string::String,
                status: u16,
                content_type: ::std::option::Option<::std::string::String>,
                body: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::ProxySpec>, ::std::string::String> {
                <$ty as $crate::PoolParserPlugin>::parse(source_url, status, content_type, body)
            }
        }
        $crate::bindings::__export_world!($ty with_types_in $crate::bindings);
    };
}

/// Exports a [`LogWebhookPlugin`] as the component's `log-webhook` world.
#[cfg(feature = "log-webhook")]
#[macro_export]
macro_rules! export_log_webhook {
    ($ty:ident) => {
        $crate::__impl_lifecycle!($ty);
        impl $crate::bindings::exports::grok2api::plugin::webhook::Guest for $ty {
            fn deliver(batch: ::std::vec::Vec<$crate::CallLog>) -> ::std::vec::Vec<$crate::OutboundRequest> {
                <$ty as $crate::LogWebhookPlugin>::deliver(batch)
            }
        }
        $crate::bindings::__export_world!($ty with_types_in $crate::bindings);
    };
}
