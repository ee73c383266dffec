//! Settings: the model, its defaults, loading `setting.toml`, environment overrides and validation.
//!
//! The file is compatible with Grok2API's `setting.toml` (`[global]` and `[grok]`). Keys of the original that
//! mean nothing for an OpenAI-compatible upstream are accepted and ignored with one warning, so an existing file
//! migrates unchanged. Anything else that is wrong stops start-up with the file, the key and the problem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::secret::Secret;

/// Keys of Grok2API's file that have no meaning here: accepted, ignored, warned about once.
const IGNORED_GLOBAL_KEYS: &[&str] = &[
    "base_url",
    "image_mode",
    "image_cache_max_size_mb",
    "video_cache_max_size_mb",
    "token_refresh_interval",
    "token_refresh_scope",
    "token_zero_expire_threshold",
    "max_upload_concurrency",
    "assumed_chat_quota_per_token",
    "max_request_concurrency",
    "batch_save_threshold",
    "api_keys",
];
const IGNORED_GROK_KEYS: &[&str] = &[
    "cache_proxy_url",
    "cf_clearance",
    "x_statsig_id",
    "dynamic_statsig",
    "filtered_tags",
    "temporary",
    "show_thinking",
    "max_tls_retries",
    "max_request_concurrency",
];

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{origin}: key `{key}`: {problem}")]
    Invalid {
        origin: String,
        key: String,
        problem: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageMode {
    File,
    Redis,
    Mysql,
}

impl StorageMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageMode::File => "file",
            StorageMode::Redis => "redis",
            StorageMode::Mysql => "mysql",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct GlobalSettings {
    pub host: String,
    pub port: u16,
    pub admin_username: String,
    #[serde(serialize_with = "crate::secret::serialize_presence")]
    pub admin_password: Secret,
    pub log_level: String,
    /// `human` or `json`.
    pub log_format: String,
    pub log_max_count: usize,
    pub log_flush_interval: f64,
    pub log_models_calls: bool,
    pub timezone: String,
    /// Seconds between token-state saves when something changed.
    pub batch_save_interval: f64,
    /// Largest accepted request body on the OpenAI routes.
    pub max_body_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_grace: f64,
    /// Label request metrics with token ids (cardinality grows with the pool).
    pub metrics_per_token: bool,
    /// When set, `/metrics` needs `Authorization: Bearer <metrics_token>`.
    #[serde(serialize_with = "crate::secret::serialize_presence")]
    pub metrics_token: Secret,
    /// The built-in JSON webhook: call-log batches are POSTed here; empty = off. A secret (its path or query
    /// often is the credential): shown masked.
    #[serde(serialize_with = "crate::secret::serialize_presence")]
    pub log_webhook_url: Secret,
    /// Most webhook requests waiting in the outbox; beyond it the oldest are dropped (and counted).
    pub webhook_outbox_max: usize,
    /// Seconds one webhook request may take.
    pub webhook_timeout: f64,
    /// Attempts per webhook request before it is given up (0 = no limit; `webhook_max_age` still applies).
    pub webhook_max_attempts: u32,
    /// Seconds a webhook request is retried before it is given up.
    pub webhook_max_age: f64,
    /// Seconds before the first retry; doubles per failure (with jitter) up to `webhook_backoff_max`.
    pub webhook_backoff_base: f64,
    pub webhook_backoff_max: f64,
    /// Webhook destinations: allow and deny lists (hosts, `.domain` suffixes, IPs, CIDRs, classes). Loopback,
    /// private, link-local and metadata addresses are refused unless allowed explicitly.
    pub webhook_allow: Vec<String>,
    pub webhook_deny: Vec<String>,
    /// Seconds a client gets to send a request's headers (also how long an idle keep-alive connection waits
    /// for its next request); slower clients are disconnected.
    pub header_read_timeout: f64,
    /// Largest request head (request line + headers) accepted; larger ones get 431.
    pub max_header_bytes: usize,
    /// Most client connections open at once; further ones wait in the listen backlog. 0 = no limit.
    pub max_connections: usize,
    /// Requests per minute one client IP may make on `/v1`; 0 = no limit.
    pub rate_limit_per_minute: u32,
    /// Requests a client IP may make at once before the per-minute rate applies; 0 = `rate_limit_per_minute`.
    pub rate_limit_burst: u32,
    /// Largest non-streamed upstream answer the gateway buffers; a larger one is answered 502.
    pub max_upstream_body_bytes: usize,
}

impl Default for GlobalSettings {
    fn default() -> Self {
        GlobalSettings {
            host: "0.0.0.0".into(),
            port: 8000,
            admin_username: "admin".into(),
            admin_password: Secret::new("admin"),
            log_level: "INFO".into(),
            log_format: "human".into(),
            log_max_count: 10_000,
            log_flush_interval: 2.0,
            log_models_calls: false,
            timezone: "Asia/Shanghai".into(),
            batch_save_interval: 1.0,
            max_body_bytes: 10 * 1024 * 1024,
            shutdown_grace: 30.0,
            metrics_per_token: false,
            metrics_token: Secret::new(""),
            log_webhook_url: Secret::new(""),
            webhook_outbox_max: 5000,
            webhook_timeout: 10.0,
            webhook_max_attempts: 20,
            webhook_max_age: 86_400.0,
            webhook_backoff_base: 1.0,
            webhook_backoff_max: 300.0,
            webhook_allow: Vec::new(),
            webhook_deny: Vec::new(),
            header_read_timeout: 30.0,
            max_header_bytes: 32 * 1024,
            max_connections: 4096,
            rate_limit_per_minute: 0,
            rate_limit_burst: 0,
            max_upstream_body_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct GrokSettings {
    #[serde(serialize_with = "crate::secret::serialize_presence")]
    pub api_key: Secret,
    pub base_url: String,
    /// `Header-Name: value` with `{token}` where the pool credential goes.
    pub auth_header: String,
    pub super_models: Vec<String>,
    pub proxy_url: String,
    pub proxy_urls: Vec<String>,
    pub proxy_pool_url: String,
    pub proxy_pool_interval: u64,
    /// Seconds a fetched proxy stays after the pool API last returned it (when no token is bound to it);
    /// 0 = 3 × `proxy_pool_interval`.
    pub proxy_pool_ttl: u64,
    /// Most proxies fetched from the pool API kept at once.
    pub proxy_pool_max: usize,
    /// Pool-API destinations: allow and deny lists like `global.webhook_allow`; loopback is allowed by default
    /// (local pool services), other private addresses are not.
    pub proxy_pool_allow: Vec<String>,
    pub proxy_pool_deny: Vec<String>,
    /// Whether requests may leave directly when no proxy is usable; `auto` = only when no proxy is configured.
    pub allow_direct: DirectPolicy,
    /// Consecutive failures after which a proxy is unhealthy and its tokens are unbound.
    pub proxy_max_fails: u32,
    /// What the background health check fetches through an unhealthy proxy; empty = `base_url`'s origin.
    pub proxy_test_url: String,
    /// Seconds before the first re-check of an unhealthy proxy; doubles per failed check up to the max.
    pub proxy_check_base_secs: u64,
    pub proxy_check_max_secs: u64,
    /// Upstream statuses that make the gateway try another token (5xx always do).
    pub retry_status_codes: Vec<u16>,
    pub max_retries: u32,
    pub stream_first_response_timeout: f64,
    pub stream_chunk_timeout: f64,
    pub stream_total_timeout: f64,
    pub connect_timeout: f64,
}

impl Default for GrokSettings {
    fn default() -> Self {
        GrokSettings {
            api_key: Secret::new(""),
            base_url: "https://api.x.ai/v1".into(),
            auth_header: "Authorization: Bearer {token}".into(),
            super_models: vec!["grok-4-heavy".into()],
            proxy_url: String::new(),
            proxy_urls: Vec::new(),
            proxy_pool_url: String::new(),
            proxy_pool_interval: 300,
            proxy_pool_ttl: 0,
            proxy_pool_max: 500,
            proxy_pool_allow: Vec::new(),
            proxy_pool_deny: Vec::new(),
            allow_direct: DirectPolicy::Auto,
            proxy_max_fails: 3,
            proxy_test_url: String::new(),
            proxy_check_base_secs: 30,
            proxy_check_max_secs: 1800,
            retry_status_codes: vec![401, 403, 429],
            max_retries: 2,
            stream_first_response_timeout: 30.0,
            stream_chunk_timeout: 120.0,
            stream_total_timeout: 600.0,
            connect_timeout: 10.0,
        }
    }
}

/// `grok.allow_direct`: `"auto"` (default), `true` or `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectPolicy {
    /// Direct only while no proxy is configured at all.
    Auto,
    Allow,
    Deny,
}

impl Serialize for DirectPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DirectPolicy::Auto => s.serialize_str("auto"),
            DirectPolicy::Allow => s.serialize_bool(true),
            DirectPolicy::Deny => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for DirectPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(DirectPolicy::Allow),
            Raw::Bool(false) => Ok(DirectPolicy::Deny),
            Raw::Str(s) if s.eq_ignore_ascii_case("auto") => Ok(DirectPolicy::Auto),
            Raw::Str(s) => Err(serde::de::Error::custom(format!(
                "allow_direct must be true, false or \"auto\", got \"{s}\""
            ))),
        }
    }
}

/// `[plugins]`: WASM plugins filling the hooks (see `docs/plugins.md`). A typo in a key is an error, since a
/// silently ignored `selector` would leave the built-in serving without anyone noticing.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PluginSettings {
    /// Directory of `NAME.wasm` files; empty means `<DATA_DIR>/plugins`. Relative paths are relative to the
    /// working directory, like `DATA_DIR`.
    pub dir: String,
    /// Plugin choosing the egress proxy; empty: the built-in selector.
    pub selector: String,
    /// Plugin parsing the proxy-pool API's answers; empty: the built-in parser.
    pub pool_parser: String,
    /// Plugins turning call-log batches into webhook requests.
    pub webhooks: Vec<String>,
    /// Deadline of one plugin call, in milliseconds.
    pub timeout_ms: u64,
    /// Memory cap of one plugin instance, in MiB.
    pub memory_mb: u64,
    /// Failed calls in a row after which a plugin is disabled (until its file changes or an admin enables it).
    pub max_consecutive_errors: u32,
    /// `[plugins.config.NAME]`: passed to plugin NAME's `init` as JSON.
    pub config: std::collections::BTreeMap<String, toml::Table>,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            dir: String::new(),
            selector: String::new(),
            pool_parser: String::new(),
            webhooks: Vec::new(),
            timeout_ms: 20,
            memory_mb: 32,
            max_consecutive_errors: 10,
            config: Default::default(),
        }
    }
}

/// A plugin name: a file stem that needs no quoting anywhere (URL paths, TOML keys, file names).
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl PluginSettings {
    /// The plugin directory: `dir`, or `<data_dir>/plugins` when empty.
    pub fn dir_in(&self, data_dir: &Path) -> PathBuf {
        if self.dir.trim().is_empty() {
            data_dir.join("plugins")
        } else {
            PathBuf::from(self.dir.trim())
        }
    }

    /// Plugin `name`'s config table as JSON (`{}` when absent).
    pub fn config_json(&self, name: &str) -> String {
        self.config
            .get(name)
            .and_then(|t| serde_json::to_string(t).ok())
            .unwrap_or_else(|| "{}".to_string())
    }

    fn validate(&self, bad: &dyn Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        let names = [
            ("plugins.selector", &self.selector),
            ("plugins.pool_parser", &self.pool_parser),
        ];
        for (key, name) in names {
            if !name.is_empty() && !valid_plugin_name(name) {
                return Err(bad(
                    key,
                    format!("`{name}` is not a plugin name (letters, digits, - and _)"),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for name in &self.webhooks {
            if !valid_plugin_name(name) {
                return Err(bad(
                    "plugins.webhooks",
                    format!("`{name}` is not a plugin name (letters, digits, - and _)"),
                ));
            }
            if !seen.insert(name) {
                return Err(bad("plugins.webhooks", format!("`{name}` is listed twice")));
            }
            if name == crate::webhook::BUILTIN_SINK {
                return Err(bad(
                    "plugins.webhooks",
                    format!("`{name}` names the built-in JSON webhook (global.log_webhook_url)"),
                ));
            }
        }
        // A component implements one world, so one file cannot fill two different hooks.
        if !self.selector.is_empty() && self.selector == self.pool_parser {
            return Err(bad(
                "plugins.pool_parser",
                format!(
                    "`{}` is already the selector; a plugin fills one hook",
                    self.selector
                ),
            ));
        }
        for name in [&self.selector, &self.pool_parser] {
            if !name.is_empty() && self.webhooks.contains(name) {
                return Err(bad(
                    "plugins.webhooks",
                    format!("`{name}` already fills another hook; a plugin fills one hook"),
                ));
            }
        }
        for name in self.config.keys() {
            if !valid_plugin_name(name) {
                return Err(bad(
                    "plugins.config",
                    format!("`{name}` is not a plugin name"),
                ));
            }
        }
        if !(1..=10_000).contains(&self.timeout_ms) {
            return Err(bad("plugins.timeout_ms", "must be from 1 to 10000".into()));
        }
        if !(1..=4096).contains(&self.memory_mb) {
            return Err(bad("plugins.memory_mb", "must be from 1 to 4096".into()));
        }
        if self.max_consecutive_errors == 0 {
            return Err(bad(
                "plugins.max_consecutive_errors",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    pub global: GlobalSettings,
    pub grok: GrokSettings,
    pub plugins: PluginSettings,
}

/// Everything the process needs to start: settings plus what only the environment decides.
#[derive(Debug, Clone)]
pub struct Startup {
    pub data_dir: PathBuf,
    pub settings_path: PathBuf,
    pub settings: Settings,
    pub storage_mode: StorageMode,
    pub database_url: Option<Secret>,
    pub workers: Option<usize>,
    /// Warnings found while loading; logged once logging is up.
    pub warnings: Vec<String>,
    pub overrides: EnvOverrides,
}

/// The parsed form of `grok.auth_header`.
#[derive(Debug, Clone)]
pub struct AuthHeader {
    pub name: http::HeaderName,
    /// The value split at each `{token}`; the credential is joined back in between.
    parts: Vec<String>,
}

impl AuthHeader {
    pub fn parse(template: &str) -> Result<AuthHeader, String> {
        let (name, value) = template
            .split_once(':')
            .ok_or_else(|| "expected `Header-Name: value with {token}`".to_string())?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("`{}` is not a valid header name", name.trim()))?;
        let value = value.trim();
        if !value.contains("{token}") {
            return Err("the value must contain `{token}`".to_string());
        }
        // Checked here, so a value is valid exactly when its token is (`header_value_safe`).
        if !value.bytes().all(header_value_byte) {
            return Err("the value has characters a header cannot carry".to_string());
        }
        Ok(AuthHeader {
            name,
            parts: value.split("{token}").map(str::to_string).collect(),
        })
    }

    /// Appends the header's value with `token` (which [`header_value_safe`] accepts) to `out`: what HTTP/1.1 requests
    /// write, without building a `HeaderValue` per request.
    pub fn write_value(&self, token: &str, out: &mut Vec<u8>) {
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(token.as_bytes());
            }
            out.extend_from_slice(part.as_bytes());
        }
    }

    pub fn value(
        &self,
        token: &str,
    ) -> Result<http::HeaderValue, http::header::InvalidHeaderValue> {
        let mut hv = http::HeaderValue::from_str(&self.parts.join(token))?;
        hv.set_sensitive(true);
        Ok(hv)
    }
}

/// Whether every byte of `s` may be in a header value (`header_value_byte`). A token's answer is kept
/// (`Token::header_safe`), so requests do not check it again.
pub fn header_value_safe(s: &str) -> bool {
    s.bytes().all(header_value_byte)
}

/// A byte a header value may hold, as `http::HeaderValue` checks it: no control character but tab.
fn header_value_byte(b: u8) -> bool {
    (b >= 32 && b != 127) || b == b'\t'
}

/// Validation only checks the sign, so a huge value (1e300) must not panic here, nor overflow `Instant + d`
/// later: capped at about a century.
fn secs(v: f64) -> Duration {
    if v.is_nan() {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(v.clamp(0.0, 3.0e9))
}

impl GrokSettings {
    pub fn first_response_timeout(&self) -> Duration {
        secs(self.stream_first_response_timeout)
    }
    pub fn chunk_timeout(&self) -> Duration {
        secs(self.stream_chunk_timeout)
    }
    /// `None` when the total timeout is switched off (0), as in Grok2API.
    pub fn total_timeout(&self) -> Option<Duration> {
        (self.stream_total_timeout > 0.0).then(|| secs(self.stream_total_timeout))
    }
    pub fn connect_timeout(&self) -> Duration {
        secs(self.connect_timeout)
    }
    pub fn is_super_model(&self, model: &str) -> bool {
        self.super_models
            .iter()
            .any(|m| m.eq_ignore_ascii_case(model))
    }
    pub fn base_url_trimmed(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }
    /// `proxy_pool_ttl`, or 3 × the interval when it is 0.
    pub fn proxy_pool_ttl(&self) -> Duration {
        match self.proxy_pool_ttl {
            0 => Duration::from_secs(self.proxy_pool_interval.saturating_mul(3)),
            s => Duration::from_secs(s),
        }
    }
    /// `proxy_test_url`, or the origin of `base_url` (`scheme://host:port/`).
    pub fn proxy_test_url(&self) -> String {
        if !self.proxy_test_url.trim().is_empty() {
            return self.proxy_test_url.trim().to_string();
        }
        match reqwest::Url::parse(&self.base_url) {
            Ok(u) => format!("{}/", u.origin().ascii_serialization()),
            Err(_) => self.base_url.clone(),
        }
    }
}

impl GlobalSettings {
    /// The validated time zone (validation guarantees it parses).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai)
    }
    pub fn log_flush_every(&self) -> Duration {
        secs(self.log_flush_interval).max(Duration::from_millis(10))
    }
    pub fn batch_save_every(&self) -> Duration {
        secs(self.batch_save_interval).max(Duration::from_millis(50))
    }
    pub fn shutdown_grace(&self) -> Duration {
        secs(self.shutdown_grace)
    }
    /// The webhook destination policy (validated lists).
    pub fn webhook_policy(
        &self,
    ) -> Result<crate::netpolicy::NetPolicy, crate::netpolicy::BadEntry> {
        crate::netpolicy::NetPolicy::new(&self.webhook_allow, &self.webhook_deny, &[])
    }
    pub fn header_read_timeout(&self) -> Duration {
        secs(self.header_read_timeout)
    }
}

impl GrokSettings {
    /// The pool-API destination policy: loopback allowed unless denied.
    pub fn pool_policy(&self) -> Result<crate::netpolicy::NetPolicy, crate::netpolicy::BadEntry> {
        crate::netpolicy::NetPolicy::new(
            &self.proxy_pool_allow,
            &self.proxy_pool_deny,
            &[crate::netpolicy::Class::Loopback],
        )
    }
}

impl Settings {
    /// Parses a TOML document; `origin` names it in errors and warnings.
    pub fn from_toml(text: &str, origin: &Path) -> Result<(Settings, Vec<String>), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: origin.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            })?;
        let mut warnings = Vec::new();
        let mut ignored = Vec::new();
        for (section, value) in &table {
            let (known, legacy): (&[&str], &[&str]) = match section.as_str() {
                "global" => (GLOBAL_KEYS, IGNORED_GLOBAL_KEYS),
                "grok" => (GROK_KEYS, IGNORED_GROK_KEYS),
                // Plugin tables and sections of later features are read by their own modules.
                "plugins" | "proxy" | "storage" => continue,
                other => {
                    warnings.push(format!(
                        "{}: unknown section [{other}] ignored",
                        origin.display()
                    ));
                    continue;
                }
            };
            let Some(keys) = value.as_table() else {
                return Err(ConfigError::Invalid {
                    origin: origin.display().to_string(),
                    key: section.clone(),
                    problem: "must be a table".into(),
                });
            };
            for key in keys.keys() {
                if legacy.contains(&key.as_str()) {
                    ignored.push(format!("{section}.{key}"));
                } else if !known.contains(&key.as_str()) {
                    warnings.push(format!(
                        "{}: unknown key `{section}.{key}` ignored",
                        origin.display()
                    ));
                }
            }
        }
        if !ignored.is_empty() {
            warnings.push(format!(
                "{}: keys of Grok2API that do not apply to an OpenAI-compatible upstream are ignored: {}",
                origin.display(),
                ignored.join(", ")
            ));
        }
        let settings: Settings =
            Settings::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                path: origin.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            })?;
        Ok((settings, warnings))
    }

    /// Checks values the types cannot; `origin` names where they came from.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            problem,
        };
        let g = &self.global;
        let k = &self.grok;
        if g.host.parse::<std::net::IpAddr>().is_err() && g.host != "localhost" {
            return Err(bad(
                "global.host",
                format!("`{}` is not an IP address", g.host),
            ));
        }
        if !["trace", "debug", "info", "warn", "warning", "error"]
            .contains(&g.log_level.to_ascii_lowercase().as_str())
        {
            return Err(bad(
                "global.log_level",
                format!(
                    "`{}` is not one of DEBUG, INFO, WARNING, ERROR",
                    g.log_level
                ),
            ));
        }
        if !["human", "json"].contains(&g.log_format.as_str()) {
            return Err(bad(
                "global.log_format",
                format!("`{}` is not `human` or `json`", g.log_format),
            ));
        }
        for (key, v) in [
            ("global.batch_save_interval", g.batch_save_interval),
            ("global.log_flush_interval", g.log_flush_interval),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(
                    key,
                    format!("must be a positive number of seconds, got {v}"),
                ));
            }
        }
        for (key, v) in [
            ("global.shutdown_grace", g.shutdown_grace),
            (
                "grok.stream_first_response_timeout",
                k.stream_first_response_timeout,
            ),
            ("grok.stream_chunk_timeout", k.stream_chunk_timeout),
            ("grok.stream_total_timeout", k.stream_total_timeout),
            ("grok.connect_timeout", k.connect_timeout),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(key, format!("must be zero or more seconds, got {v}")));
            }
        }
        if k.stream_first_response_timeout <= 0.0 || k.stream_chunk_timeout <= 0.0 {
            return Err(bad(
                "grok.stream_first_response_timeout / grok.stream_chunk_timeout",
                "must be more than 0 seconds".into(),
            ));
        }
        if g.max_body_bytes < 1024 {
            return Err(bad("global.max_body_bytes", "must be at least 1024".into()));
        }
        if !(g.header_read_timeout.is_finite() && g.header_read_timeout > 0.0) {
            return Err(bad(
                "global.header_read_timeout",
                format!("must be more than 0 seconds, got {}", g.header_read_timeout),
            ));
        }
        if !(1024..=16 << 20).contains(&g.max_header_bytes) {
            return Err(bad(
                "global.max_header_bytes",
                "must be between 1024 and 16777216".into(),
            ));
        }
        if g.max_upstream_body_bytes < 1024 {
            return Err(bad(
                "global.max_upstream_body_bytes",
                "must be at least 1024".into(),
            ));
        }
        let url = reqwest::Url::parse(&k.base_url).map_err(|e| {
            bad(
                "grok.base_url",
                format!("`{}` is not a URL: {e}", k.base_url),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("grok.base_url", "must be an http or https URL".into()));
        }
        AuthHeader::parse(&k.auth_header).map_err(|e| bad("grok.auth_header", e))?;
        if let Some(code) = k
            .retry_status_codes
            .iter()
            .find(|c| !(100..=599).contains(*c))
        {
            return Err(bad(
                "grok.retry_status_codes",
                format!("{code} is not an HTTP status"),
            ));
        }
        for (i, p) in std::iter::once(&k.proxy_url)
            .chain(&k.proxy_urls)
            .enumerate()
            .filter(|(_, p)| !p.trim().is_empty())
        {
            let key = if i == 0 && !k.proxy_url.trim().is_empty() {
                "grok.proxy_url".to_string()
            } else {
                "grok.proxy_urls".to_string()
            };
            crate::proxy::normalize_proxy_url(p).map_err(|e| bad(&key, e.to_string()))?;
        }
        if !k.proxy_pool_url.trim().is_empty() {
            match reqwest::Url::parse(k.proxy_pool_url.trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    return Err(bad(
                        "grok.proxy_pool_url",
                        "must be an http or https URL of the pool API".into(),
                    ))
                }
            }
        }
        if k.proxy_pool_interval == 0 {
            return Err(bad(
                "grok.proxy_pool_interval",
                "must be at least 1 second".into(),
            ));
        }
        if k.proxy_max_fails == 0 {
            return Err(bad("grok.proxy_max_fails", "must be at least 1".into()));
        }
        if k.proxy_check_base_secs == 0 || k.proxy_check_max_secs < k.proxy_check_base_secs {
            return Err(bad(
                "grok.proxy_check_base_secs / grok.proxy_check_max_secs",
                "need 1 <= base <= max seconds".into(),
            ));
        }
        if !k.proxy_test_url.trim().is_empty() {
            match reqwest::Url::parse(k.proxy_test_url.trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    return Err(bad(
                        "grok.proxy_test_url",
                        "must be an http or https URL".into(),
                    ))
                }
            }
        }
        if k.max_retries > 10 {
            return Err(bad("grok.max_retries", "at most 10".into()));
        }
        if g.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(bad(
                "global.timezone",
                format!(
                    "`{}` is not an IANA time zone name (e.g. Asia/Shanghai, UTC)",
                    g.timezone
                ),
            ));
        }
        for (key, list) in [
            ("global.webhook_allow", &g.webhook_allow),
            ("global.webhook_deny", &g.webhook_deny),
            ("grok.proxy_pool_allow", &k.proxy_pool_allow),
            ("grok.proxy_pool_deny", &k.proxy_pool_deny),
        ] {
            crate::netpolicy::NetPolicy::new(list, &[], &[]).map_err(|e| bad(key, e.0))?;
        }
        let hook = g.log_webhook_url.expose().trim();
        if !hook.is_empty() {
            match reqwest::Url::parse(hook) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                // Never echo the URL: it is a secret.
                _ => {
                    return Err(bad(
                        "global.log_webhook_url",
                        "must be an http or https URL".into(),
                    ))
                }
            }
        }
        if g.webhook_outbox_max == 0 {
            return Err(bad(
                "global.webhook_outbox_max",
                "must be at least 1".into(),
            ));
        }
        for (key, v) in [
            ("global.webhook_timeout", g.webhook_timeout),
            ("global.webhook_max_age", g.webhook_max_age),
            ("global.webhook_backoff_base", g.webhook_backoff_base),
            ("global.webhook_backoff_max", g.webhook_backoff_max),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(
                    key,
                    format!("must be a positive number of seconds, got {v}"),
                ));
            }
        }
        if g.webhook_backoff_max < g.webhook_backoff_base {
            return Err(bad(
                "global.webhook_backoff_max",
                "must be at least global.webhook_backoff_base".into(),
            ));
        }
        self.plugins.validate(&bad)?;
        Ok(())
    }
}

const GLOBAL_KEYS: &[&str] = &[
    "host",
    "port",
    "admin_username",
    "admin_password",
    "log_level",
    "log_format",
    "log_max_count",
    "log_flush_interval",
    "log_models_calls",
    "timezone",
    "batch_save_interval",
    "max_body_bytes",
    "shutdown_grace",
    "metrics_per_token",
    "metrics_token",
    "log_webhook_url",
    "webhook_outbox_max",
    "webhook_timeout",
    "webhook_max_attempts",
    "webhook_max_age",
    "webhook_backoff_base",
    "webhook_backoff_max",
    "webhook_allow",
    "webhook_deny",
    "header_read_timeout",
    "max_header_bytes",
    "max_connections",
    "rate_limit_per_minute",
    "rate_limit_burst",
    "max_upstream_body_bytes",
];
#[cfg(test)]
const PLUGIN_KEYS: &[&str] = &[
    "dir",
    "selector",
    "pool_parser",
    "webhooks",
    "timeout_ms",
    "memory_mb",
    "max_consecutive_errors",
];
const GROK_KEYS: &[&str] = &[
    "api_key",
    "base_url",
    "auth_header",
    "super_models",
    "proxy_url",
    "proxy_urls",
    "proxy_pool_url",
    "proxy_pool_interval",
    "proxy_pool_ttl",
    "proxy_pool_max",
    "proxy_pool_allow",
    "proxy_pool_deny",
    "allow_direct",
    "proxy_max_fails",
    "proxy_test_url",
    "proxy_check_base_secs",
    "proxy_check_max_secs",
    "retry_status_codes",
    "max_retries",
    "stream_first_response_timeout",
    "stream_chunk_timeout",
    "stream_total_timeout",
    "connect_timeout",
];

/// Reads an environment variable through a lookup function so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Startup {
    /// Loads settings from `$SETTINGS_FILE`, else `$DATA_DIR/setting.toml` (default `data/`), then applies
    /// environment overrides.
    pub fn load(env: EnvLookup<'_>) -> Result<Startup, ConfigError> {
        let data_dir = PathBuf::from(env("DATA_DIR").unwrap_or_else(|| "data".into()));
        let settings_path = env("SETTINGS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("setting.toml"));
        let (mut settings, mut warnings) = match std::fs::read_to_string(&settings_path) {
            Ok(text) => Settings::from_toml(&text, &settings_path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                Settings::default(),
                vec![format!(
                    "{} not found: running with built-in defaults",
                    settings_path.display()
                )],
            ),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: settings_path,
                    source,
                })
            }
        };
        settings.validate(&settings_path.display().to_string())?;

        let env_err = |key: &str, problem: String| ConfigError::Invalid {
            origin: "environment".into(),
            key: key.into(),
            problem,
        };
        let overrides = EnvOverrides::read(env)?;
        overrides.apply(&mut settings);
        settings.validate("environment")?;
        let storage_mode = match env("STORAGE_MODE")
            .map(|s| s.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") | Some("file") => StorageMode::File,
            Some("redis") => StorageMode::Redis,
            Some("mysql") => StorageMode::Mysql,
            Some(other) => {
                return Err(env_err(
                    "STORAGE_MODE",
                    format!("`{other}` is not one of file, redis, mysql"),
                ))
            }
        };
        let database_url = env("DATABASE_URL")
            .filter(|s| !s.is_empty())
            .map(Secret::new);
        let workers = match env("WORKERS") {
            None => None,
            Some(v) => Some(
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| {
                        env_err("WORKERS", format!("`{v}` is not a number from 1 to 1024"))
                    })?,
            ),
        };
        if settings.global.admin_password.expose() == "admin" {
            warnings.push(
                "global.admin_password is the default `admin`: set it (or ADMIN_PASSWORD) before exposing the admin API"
                    .into(),
            );
        }
        if settings.grok.api_key.expose().is_empty() {
            warnings.push(
                "grok.api_key is empty: the OpenAI routes accept any client (set it or API_KEY)"
                    .into(),
            );
        }
        Ok(Startup {
            data_dir,
            settings_path,
            settings,
            storage_mode,
            database_url,
            workers,
            warnings,
            overrides,
        })
    }
}

/// Settings the environment decides over the file (`HOST`, `PORT`, `API_KEY`, `ADMIN_PASSWORD`, `LOG_LEVEL`).
/// Kept after start-up so a reloaded file gets the same overrides.
#[derive(Debug, Clone, Default)]
pub struct EnvOverrides {
    host: Option<String>,
    port: Option<u16>,
    api_key: Option<Secret>,
    admin_password: Option<Secret>,
    log_level: Option<String>,
}

impl EnvOverrides {
    pub fn read(env: EnvLookup<'_>) -> Result<EnvOverrides, ConfigError> {
        let port = match env("PORT") {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| ConfigError::Invalid {
                origin: "environment".into(),
                key: "PORT".into(),
                problem: format!("`{v}` is not a port number"),
            })?),
        };
        Ok(EnvOverrides {
            host: env("HOST"),
            port,
            api_key: env("API_KEY").map(Secret::new),
            admin_password: env("ADMIN_PASSWORD").map(Secret::new),
            log_level: env("LOG_LEVEL"),
        })
    }

    pub fn apply(&self, s: &mut Settings) {
        if let Some(v) = &self.host {
            s.global.host = v.clone();
        }
        if let Some(v) = self.port {
            s.global.port = v;
        }
        if let Some(v) = &self.api_key {
            s.grok.api_key = v.clone();
        }
        if let Some(v) = &self.admin_password {
            s.global.admin_password = v.clone();
        }
        if let Some(v) = &self.log_level {
            s.global.log_level = v.clone();
        }
    }

    /// The environment variable deciding `key` (`section.name`), if one is set.
    pub fn variable_for(&self, key: &str) -> Option<&'static str> {
        match key {
            "global.host" if self.host.is_some() => Some("HOST"),
            "global.port" if self.port.is_some() => Some("PORT"),
            "grok.api_key" if self.api_key.is_some() => Some("API_KEY"),
            "global.admin_password" if self.admin_password.is_some() => Some("ADMIN_PASSWORD"),
            "global.log_level" if self.log_level.is_some() => Some("LOG_LEVEL"),
            _ => None,
        }
    }
}

/// The running settings, swapped whole when they change. Readers take one `load` (no lock) per use.
#[derive(Debug)]
pub struct Live(arc_swap::ArcSwap<Settings>);

impl Live {
    pub fn new(s: Settings) -> Live {
        Live(arc_swap::ArcSwap::from_pointee(s))
    }
    pub fn load(&self) -> arc_swap::Guard<std::sync::Arc<Settings>> {
        self.0.load()
    }
    pub fn get(&self) -> std::sync::Arc<Settings> {
        self.0.load_full()
    }
    pub fn store(&self, s: std::sync::Arc<Settings>) {
        self.0.store(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(text: &str) -> Result<(Settings, Vec<String>), ConfigError> {
        Settings::from_toml(text, Path::new("setting.toml"))
    }

    #[test]
    fn defaults_match_grok2api() {
        let s = Settings::default();
        assert_eq!(s.grok.stream_first_response_timeout, 30.0);
        assert_eq!(s.grok.stream_chunk_timeout, 120.0);
        assert_eq!(s.grok.stream_total_timeout, 600.0);
        assert_eq!(s.global.log_max_count, 10_000);
        assert_eq!(s.global.port, 8000);
        assert_eq!(s.grok.base_url, "https://api.x.ai/v1");
        assert_eq!(s.grok.super_models, vec!["grok-4-heavy".to_string()]);
        s.validate("defaults").unwrap();
    }

    #[test]
    fn legacy_keys_are_ignored_with_one_warning() {
        let (s, warnings) = parse(
            "[grok]\napi_key = \"k\"\ncf_clearance = \"x\"\nx_statsig_id = \"y\"\n[global]\nimage_mode = \"url\"\n",
        )
        .unwrap();
        assert_eq!(s.grok.api_key.expose(), "k");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("grok.cf_clearance"));
        assert!(warnings[0].contains("global.image_mode"));
    }

    #[test]
    fn bad_type_names_file_and_key() {
        let err = parse("[grok]\nmax_retries = \"two\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("setting.toml"), "{err}");
        assert!(err.contains("max_retries"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_with_key() {
        for (text, key) in [
            (
                "[grok]\nauth_header = \"Authorization Bearer\"\n",
                "grok.auth_header",
            ),
            (
                "[grok]\nauth_header = \"Authorization: Bearer\"\n",
                "grok.auth_header",
            ),
            ("[grok]\nbase_url = \"ftp://x\"\n", "grok.base_url"),
            (
                "[grok]\nretry_status_codes = [42]\n",
                "grok.retry_status_codes",
            ),
            ("[global]\nlog_level = \"LOUD\"\n", "global.log_level"),
            ("[global]\ntimezone = \"Mars/Olympus\"\n", "global.timezone"),
            (
                "[global]\nwebhook_allow = [\"a b\"]\n",
                "global.webhook_allow",
            ),
            (
                "[global]\nwebhook_deny = [\"10.0.0.0/40\"]\n",
                "global.webhook_deny",
            ),
            (
                "[grok]\nproxy_pool_allow = [\"http://x\"]\n",
                "grok.proxy_pool_allow",
            ),
            ("[grok]\nproxy_pool_deny = [\"\"]\n", "grok.proxy_pool_deny"),
            (
                "[global]\nlog_webhook_url = \"ftp://x/secret\"\n",
                "global.log_webhook_url",
            ),
            (
                "[global]\nwebhook_outbox_max = 0\n",
                "global.webhook_outbox_max",
            ),
            (
                "[global]\nwebhook_backoff_base = 0\n",
                "global.webhook_backoff_base",
            ),
            (
                "[global]\nwebhook_backoff_base = 5\nwebhook_backoff_max = 1\n",
                "global.webhook_backoff_max",
            ),
            (
                "[grok]\nstream_chunk_timeout = -1\n",
                "grok.stream_chunk_timeout",
            ),
        ] {
            let (s, _) = parse(text).unwrap();
            let err = s.validate("setting.toml").unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn malformed_toml_is_an_error() {
        assert!(matches!(parse("[grok\n"), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn env_overrides_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let vars: HashMap<&str, String> = [
            ("DATA_DIR", dir.path().display().to_string()),
            ("PORT", "9123".into()),
            ("API_KEY", "sk-test".into()),
            ("WORKERS", "3".into()),
        ]
        .into();
        let s = Startup::load(&|k| vars.get(k).cloned()).unwrap();
        assert_eq!(s.settings.global.port, 9123);
        assert_eq!(s.settings.grok.api_key.expose(), "sk-test");
        assert_eq!(s.workers, Some(3));
        assert_eq!(s.storage_mode, StorageMode::File);

        let bad: HashMap<&str, String> = [
            ("DATA_DIR", dir.path().display().to_string()),
            ("STORAGE_MODE", "floppy".into()),
        ]
        .into();
        let err = Startup::load(&|k| bad.get(k).cloned())
            .unwrap_err()
            .to_string();
        assert!(err.contains("STORAGE_MODE"), "{err}");
    }

    #[test]
    fn example_file_documents_every_key_with_its_default() {
        let text = include_str!("../../data/setting.example.toml");
        let (s, warnings) = parse(text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        s.validate("example").unwrap();
        let d = Settings::default();
        assert_eq!(format!("{:?}", s.global), format!("{:?}", d.global));
        assert_eq!(format!("{:?}", s.grok), format!("{:?}", d.grok));
        assert_eq!(s.plugins, d.plugins);
        assert!(text.contains("\n[plugins]\n"), "[plugins] not documented");
        assert!(
            text.contains("\n# [plugins.config.NAME]"),
            "[plugins.config.NAME] not documented"
        );
        for key in PLUGIN_KEYS {
            assert!(
                text.contains(&format!("\n{key} = ")),
                "plugins.{key} not documented"
            );
        }
        for key in GLOBAL_KEYS {
            assert!(
                text.contains(&format!("\n{key} = ")),
                "global.{key} not documented"
            );
        }
        for key in GROK_KEYS {
            assert!(
                text.contains(&format!("\n{key} = ")),
                "grok.{key} not documented"
            );
        }
    }

    #[test]
    fn proxy_settings() {
        let (s, _) = parse(
            "[grok]\nallow_direct = false\nproxy_pool_interval = 10\nbase_url = \"http://h:81/v1\"\n",
        )
        .unwrap();
        assert_eq!(s.grok.allow_direct, DirectPolicy::Deny);
        assert_eq!(s.grok.proxy_pool_ttl(), Duration::from_secs(30));
        assert_eq!(s.grok.proxy_test_url(), "http://h:81/");
        let (s, _) = parse("[grok]\nallow_direct = true\n").unwrap();
        assert_eq!(s.grok.allow_direct, DirectPolicy::Allow);
        assert!(parse("[grok]\nallow_direct = \"maybe\"\n").is_err());
        for (text, key) in [
            ("[grok]\nproxy_url = \"socks4://h:1\"\n", "grok.proxy_url"),
            (
                "[grok]\nproxy_urls = [\"h:1\", \"ftp://x:1\"]\n",
                "grok.proxy_urls",
            ),
            (
                "[grok]\nproxy_pool_url = \"socks5://h:1\"\n",
                "grok.proxy_pool_url",
            ),
            ("[grok]\nproxy_max_fails = 0\n", "grok.proxy_max_fails"),
        ] {
            let (s, _) = parse(text).unwrap();
            let err = s.validate("setting.toml").unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let (s, _) = parse("[grok]\nproxy_url = \"http://u:hunter2@h:1/x y\"\n").unwrap();
        let err = s.validate("setting.toml").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn plugin_settings_parse_and_validate() {
        let (s, _) = parse(
            "[plugins]\nselector = \"least-latency\"\nwebhooks = [\"chat\"]\ntimeout_ms = 50\n\
             [plugins.config.chat]\nformat = \"slack\"\nurl = \"https://hooks.example/x\"\n",
        )
        .unwrap();
        s.validate("setting.toml").unwrap();
        assert_eq!(s.plugins.selector, "least-latency");
        assert_eq!(s.plugins.timeout_ms, 50);
        assert_eq!(s.plugins.memory_mb, 32);
        let cfg: serde_json::Value = serde_json::from_str(&s.plugins.config_json("chat")).unwrap();
        assert_eq!(cfg["format"], "slack");
        assert_eq!(s.plugins.config_json("other"), "{}");
        assert_eq!(
            s.plugins.dir_in(Path::new("/d")),
            PathBuf::from("/d/plugins")
        );

        // A typo is an error, not a silently ignored key.
        let err = parse("[plugins]\nselecter = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("selecter"), "{err}");
        for (text, key) in [
            ("[plugins]\nselector = \"../x\"\n", "plugins.selector"),
            ("[plugins]\nwebhooks = [\"builtin\"]\n", "plugins.webhooks"),
            ("[plugins]\nwebhooks = [\"builtin\"]\n", "plugins.webhooks"),
            ("[plugins]\nwebhooks = [\"a\", \"a\"]\n", "plugins.webhooks"),
            (
                "[plugins]\nselector = \"a\"\npool_parser = \"a\"\n",
                "plugins.pool_parser",
            ),
            (
                "[plugins]\nselector = \"a\"\nwebhooks = [\"a\"]\n",
                "plugins.webhooks",
            ),
            ("[plugins]\ntimeout_ms = 0\n", "plugins.timeout_ms"),
            ("[plugins]\nmemory_mb = 0\n", "plugins.memory_mb"),
            (
                "[plugins]\nmax_consecutive_errors = 0\n",
                "plugins.max_consecutive_errors",
            ),
        ] {
            let (s, _) = parse(text).unwrap();
            let err = s.validate("setting.toml").unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn auth_header_template() {
        let h = AuthHeader::parse("Cookie: sso-rw={token};sso={token}").unwrap();
        assert_eq!(h.name, "cookie");
        assert_eq!(h.value("abc").unwrap(), "sso-rw=abc;sso=abc");
        let b = AuthHeader::parse("Authorization: Bearer {token}").unwrap();
        assert_eq!(b.value("t1").unwrap(), "Bearer t1");
        // What HTTP/1.1 requests write is the same value, and a token fits exactly when a value takes it.
        for token in [
            "t1",
            "sk-abc_DEF.123",
            "has space",
            "tab\there",
            "nl\nx",
            "del\u{7f}",
            "é",
            "",
        ] {
            let mut written = Vec::new();
            h.write_value(token, &mut written);
            let built = h.value(token);
            assert_eq!(header_value_safe(token), built.is_ok(), "{token:?}");
            if let Ok(v) = built {
                assert_eq!(v.as_bytes(), &written[..], "{token:?}");
            }
        }
        assert!(AuthHeader::parse("Authorization: Bearer\u{1}{token}").is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_text_parses_or_errors(text in "[\\[\\]a-z_=\"0-9.\n -]{0,200}") {
                if let Ok((s, _)) = parse(&text) {
                    let _ = s.validate("prop");
                }
            }

            #[test]
            fn limits_round_trip(port in 1u16.., header_timeout in 0.001f64..1e6, header_bytes in 1024usize..(16 << 20), conns in 0usize..1_000_000, rate in 0u32..100_000, burst in 0u32..1000, upstream in 1024usize..(1 << 40), key in "[A-Za-z0-9_-]{0,30}") {
                let text = format!(
                    "[global]\nport = {port}\nheader_read_timeout = {header_timeout:?}\nmax_header_bytes = {header_bytes}\n\
                     max_connections = {conns}\nrate_limit_per_minute = {rate}\nrate_limit_burst = {burst}\n\
                     max_upstream_body_bytes = {upstream}\n[grok]\napi_key = \"{key}\"\n"
                );
                let (s, warnings) = parse(&text).unwrap();
                prop_assert!(warnings.is_empty());
                s.validate("prop").unwrap();
                prop_assert_eq!(s.global.port, port);
                prop_assert_eq!(s.global.header_read_timeout, header_timeout);
                prop_assert_eq!(s.global.max_header_bytes, header_bytes);
                prop_assert_eq!(s.global.max_connections, conns);
                prop_assert_eq!(s.global.rate_limit_per_minute, rate);
                prop_assert_eq!(s.global.rate_limit_burst, burst);
                prop_assert_eq!(s.global.max_upstream_body_bytes, upstream);
                prop_assert_eq!(s.grok.api_key.expose(), key.as_str());
                // Huge timeouts stay usable durations.
                let _ = std::time::Instant::now() + s.global.header_read_timeout();
            }
        }
    }

    #[test]
    fn limits_are_validated() {
        for (line, key) in [
            ("header_read_timeout = 0", "header_read_timeout"),
            ("header_read_timeout = nan", "header_read_timeout"),
            ("max_header_bytes = 100", "max_header_bytes"),
            ("max_upstream_body_bytes = 10", "max_upstream_body_bytes"),
        ] {
            let (s, _) = parse(&format!("[global]\n{line}\n")).unwrap();
            let e = s.validate("t").unwrap_err().to_string();
            assert!(e.contains(key), "{line}: {e}");
        }
        let (s, _) = parse("[grok]\nstream_total_timeout = 1e300\n").unwrap();
        s.validate("t").unwrap();
        let _ = std::time::Instant::now() + s.grok.total_timeout().unwrap();
    }
}
