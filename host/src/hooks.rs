//! The three seams a plugin can fill. Each has a built-in implementation next to its service (the proxy pool's
//! selector and parser, the call log's JSON webhook) and a WASM adapter in `plugins/`; both implement the same
//! trait, so the host works with no plugin at all and a plugin only ever replaces a built-in.
//!
//! Calls are synchronous and short: a WASM call is bounded by its epoch deadline, and a built-in does no I/O.
//! Records are kept small and mostly string-free, since copying them into a guest is most of a call's cost.

use std::fmt;

use thiserror::Error;

/// A hook call that failed. The caller falls back to the built-in behaviour for that call (fail-open).
#[derive(Debug, Error, Clone, PartialEq)]
pub enum HookError {
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin exceeded its time limit")]
    Timeout,
    #[error("plugin exceeded its memory limit")]
    OutOfMemory,
    #[error("plugin answer rejected: {0}")]
    BadAnswer(String),
    #[error("plugin unavailable: {0}")]
    Unavailable(String),
}

// ---------------------------------------------------------------------------------------------------------
// Proxy selection

/// Where a proxy in the pool came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxySource {
    /// `grok.proxy_url`
    Static,
    /// `grok.proxy_urls`
    List,
    /// fetched from `grok.proxy_pool_url`
    Pool,
    /// added through the admin API
    Admin,
}

impl ProxySource {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxySource::Static => "static",
            ProxySource::List => "list",
            ProxySource::Pool => "pool",
            ProxySource::Admin => "admin",
        }
    }
}

/// What a selector knows about the request. Never the token secret.
#[derive(Debug, Clone)]
pub struct SelectRequest<'a> {
    pub token_id: &'a str,
    pub model: &'a str,
    pub route: &'a str,
    pub stream: bool,
    /// Index into the candidate list of the proxy the token is bound to, if any.
    pub bound: Option<u32>,
}

/// One proxy the selector may choose, without credentials. Borrows from the pool's entries: a plugin
/// selector sees every proxy on every request, and copying each host string cost more than the call.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    /// Index in the candidate list; what [`Selection::Use`] refers to.
    pub id: u32,
    /// `http`, `https` or `socks5h`.
    pub scheme: &'static str,
    /// `host:port`, no credentials.
    pub host: &'a str,
    pub source: ProxySource,
    pub healthy: bool,
    pub consecutive_failures: u32,
    pub requests: u64,
    pub successes: u64,
    pub ewma_latency_ms: Option<u32>,
    pub bound_tokens: u32,
    pub idle_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Use the candidate with this id.
    Use(u32),
    /// Connect straight to the upstream (only valid when direct egress is allowed).
    Direct,
    /// Let the built-in selector decide.
    Default,
}

pub trait ProxySelector: Send + Sync + 'static {
    /// A short name for logs and the admin API (`builtin` or the plugin name).
    fn name(&self) -> &str;
    fn select(
        &self,
        req: &SelectRequest<'_>,
        candidates: &[Candidate<'_>],
    ) -> Result<Selection, HookError>;
}

// ---------------------------------------------------------------------------------------------------------
// Proxy-pool API parsing

/// A proxy as a pool API describes it: either a URL, or parts. The host normalises and validates it exactly as
/// any other proxy URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySpec {
    pub url: Option<String>,
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Unix ms after which the pool API says the proxy is no longer valid.
    pub expires_at_ms: Option<u64>,
    pub label: Option<String>,
}

pub trait PoolParser: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Parses one answer of the pool API. An answer that is an error (even with status 200) is `Err`.
    fn parse(
        &self,
        source_url: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<ProxySpec>, HookError>;
}

// ---------------------------------------------------------------------------------------------------------
// Call-log webhooks

/// An HTTP request a webhook wants sent. The host sends it (allow-list, retries, outbox).
#[derive(Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl fmt::Debug for OutboundRequest {
    // Headers may carry a webhook's secret: show names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .finish()
    }
}

pub trait LogWebhook: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Turns a batch of finished calls into the requests to send. An empty list sends nothing.
    fn deliver(
        &self,
        batch: &[crate::storage::CallLogEntry],
    ) -> Result<Vec<OutboundRequest>, HookError>;
}
