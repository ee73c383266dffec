//! `proxy_state.json`, in Grok2API Pro's format plus our fields. Proxy URLs are stored with their credentials
//! (needed to use them): the file is state, not a log. Bindings are keyed by token id; a Grok2API file keyed
//! by full token secrets is converted on load by the proxy pool.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProxyStateFile {
    #[serde(default)]
    pub proxies: IndexMap<String, ProxyRecord>,
    /// Token id → proxy URL.
    #[serde(default)]
    pub assignments: IndexMap<String, String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProxyRecord {
    #[serde(default)]
    pub url: String,
    #[serde(default = "yes")]
    pub healthy: bool,
    #[serde(default)]
    pub fail_count: u32,
    /// Unix ms of the last request through the proxy (0: never).
    #[serde(default)]
    pub last_used: i64,
    /// Token ids bound to the proxy; always rebuilt from `assignments`.
    #[serde(default)]
    pub assigned_sso: Vec<String>,
    #[serde(default)]
    pub total_requests: u64,
    #[serde(default)]
    pub success_requests: u64,
    /// `static`, `list`, `pool` or `admin`; absent in Grok2API files (read as `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Unix ms when the pool API last returned the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ewma_latency_ms: Option<f64>,
    /// Unknown keys survive a load/save round trip.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for ProxyRecord {
    fn default() -> Self {
        ProxyRecord {
            url: String::new(),
            healthy: true,
            fail_count: 0,
            last_used: 0,
            assigned_sso: Vec::new(),
            total_requests: 0,
            success_requests: 0,
            source: None,
            last_seen: None,
            last_error: None,
            ewma_latency_ms: None,
            extra: serde_json::Map::new(),
        }
    }
}
