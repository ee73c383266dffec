//! Live settings: changes through `POST /api/settings` or an edit of `setting.toml` take effect without a
//! restart.
//!
//! Both paths end in [`Manager::apply`]: the new settings are validated like the file at start-up, the keys that
//! truly need a restart keep their running values (and are reported), the rest is swapped into the
//! [`Live`] handle and pushed to the services that copy values at start (forwarder, proxy pool, call log, plugin
//! registry, log filter). One async mutex serialises saves and reloads; it also holds the hash of the file
//! content last applied, so the watcher event of the gateway's own save is not applied twice.

mod edit;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::api::AppInner;
use crate::config::{ConfigError, EnvOverrides, Live, Settings};
use crate::proxy::PoolOptions;
use crate::util::sha256_hex;

pub use edit::to_toml_value;
pub use watch::SettingsWatcher;

/// Sets the log level of the running subscriber (`global.log_level`); installed by the binary.
pub type LogLevelHook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Keys applied without a restart. Anything else (including keys added later and not listed here) is reported
/// as needing one, which is the safe default.
pub const LIVE_KEYS: &[&str] = &[
    "global.admin_username",
    "global.admin_password",
    "global.log_level",
    "global.log_max_count",
    "global.log_models_calls",
    "global.timezone",
    "global.max_body_bytes",
    "global.shutdown_grace",
    "global.metrics_token",
    "global.max_upstream_body_bytes",
    "grok.api_key",
    "grok.base_url",
    "grok.auth_header",
    "grok.super_models",
    "grok.proxy_url",
    "grok.proxy_urls",
    "grok.proxy_pool_url",
    "grok.proxy_pool_interval",
    "grok.proxy_pool_ttl",
    "grok.proxy_pool_max",
    "grok.allow_direct",
    "grok.proxy_max_fails",
    "grok.proxy_test_url",
    "grok.proxy_check_base_secs",
    "grok.proxy_check_max_secs",
    "grok.retry_status_codes",
    "grok.max_retries",
    "grok.stream_first_response_timeout",
    "grok.stream_chunk_timeout",
    "grok.stream_total_timeout",
    "plugins.selector",
    "plugins.pool_parser",
    "plugins.timeout_ms",
    "plugins.memory_mb",
    "plugins.max_consecutive_errors",
    "plugins.config",
];

/// `Secret` fields: serialised as `{"set": bool}`, so their changes are found by comparing the values.
const SECRET_KEYS: &[&str] = &[
    "global.admin_password",
    "global.metrics_token",
    "global.log_webhook_url",
    "grok.api_key",
];

pub fn is_live(key: &str) -> bool {
    LIVE_KEYS.contains(&key)
}

#[derive(Debug, Error)]
pub enum SettingsError {
    /// A key is unknown, has the wrong type or an invalid value; nothing was saved or applied.
    #[error("{message}")]
    Invalid { key: String, message: String },
    #[error("cannot save {path}: {message}")]
    Save { path: PathBuf, message: String },
}

impl SettingsError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> SettingsError {
        SettingsError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    fn from_config(e: ConfigError) -> SettingsError {
        match &e {
            ConfigError::Invalid { key, .. } => SettingsError::invalid(key.clone(), e.to_string()),
            // The parser quotes the offending source line, which may hold a secret: keep only the position and
            // the problem.
            ConfigError::Parse { path, message } => SettingsError::invalid(
                String::new(),
                format!("{}: {}", path.display(), without_source_lines(message)),
            ),
            _ => SettingsError::invalid(String::new(), e.to_string()),
        }
    }
}

/// What an update changed.
#[derive(Debug, Default, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Applied {
    /// Keys (`section.name`) whose value changed, live or not.
    pub changed: Vec<String>,
    /// Changed keys that keep their running value until the next start.
    pub restart_required: Vec<String>,
}

pub struct Manager {
    live: Arc<Live>,
    path: PathBuf,
    overrides: EnvOverrides,
    log_level: Option<LogLevelHook>,
    /// Serialises saves and reloads. Holds the hash of the file content last saved or looked at.
    last_hash: tokio::sync::Mutex<Option<String>>,
}

impl Manager {
    pub fn new(
        live: Arc<Live>,
        path: PathBuf,
        overrides: EnvOverrides,
        log_level: Option<LogLevelHook>,
    ) -> Manager {
        let hash = std::fs::read(&path).ok().map(|b| sha256_hex(&b));
        Manager {
            live,
            path,
            overrides,
            log_level,
            last_hash: tokio::sync::Mutex::new(hash),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The running settings as the admin API shows them: grouped by section, secrets as `{"set": bool}`,
    /// credentials in URLs masked.
    pub fn view(&self) -> Value {
        view(&self.live.load())
    }

    /// Per key: whether it applies live and which environment variable decides it, if any.
    pub fn key_info(&self) -> Value {
        let shown = self.view();
        let mut out = Map::new();
        for (sec, keys) in sections(&shown) {
            let mut m = Map::new();
            for (key, v) in keys {
                let full = format!("{sec}.{key}");
                m.insert(
                    key.clone(),
                    serde_json::json!({
                        "live": is_live(&full),
                        "secret": v.as_object().is_some_and(|o| o.contains_key("set")),
                        "env": self.overrides.variable_for(&full),
                    }),
                );
            }
            out.insert(sec.clone(), Value::Object(m));
        }
        Value::Object(out)
    }

    /// `POST /api/settings`: a partial update (`{"grok": {"max_retries": 3}, …}`; Grok2API's `grok_config`
    /// names are accepted too). Validated whole, saved to the file keeping its comments, then applied.
    pub async fn update(&self, app: &AppInner, body: &Value) -> Result<Applied, SettingsError> {
        let mut last = self.last_hash.lock().await;
        let running = self.live.get();
        let changes = self.plan(&running, body)?;
        if changes.is_empty() {
            return Ok(Applied::default());
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(SettingsError::Save {
                    path: self.path.clone(),
                    message: e.to_string(),
                })
            }
        };
        let new_text = edit::patch(&text, &changes).map_err(|m| SettingsError::invalid("", m))?;
        let new = self.parse(&new_text)?;
        edit::write_atomic_keep_mode(&self.path, new_text.as_bytes()).map_err(|e| {
            SettingsError::Save {
                path: self.path.clone(),
                message: e.to_string(),
            }
        })?;
        *last = Some(sha256_hex(new_text.as_bytes()));
        Ok(self.apply(app, new).await)
    }

    /// Re-reads the file after the watcher saw it change: a valid edit applies, an invalid one is logged with
    /// the key and the running settings stay.
    pub async fn reload_file(&self, app: &AppInner) {
        let mut last = self.last_hash.lock().await;
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "settings file unreadable; running settings kept");
                return;
            }
        };
        let hash = sha256_hex(&bytes);
        if last.as_deref() == Some(hash.as_str()) {
            return;
        }
        *last = Some(hash);
        let text = String::from_utf8_lossy(&bytes);
        match self.parse(&text) {
            Ok(new) => {
                let applied = self.apply(app, new).await;
                if applied.changed.is_empty() {
                    tracing::debug!(file = %self.path.display(), "settings file changed; no setting differs");
                }
            }
            Err(e) => {
                let key = match &e {
                    SettingsError::Invalid { key, .. } => key.clone(),
                    _ => String::new(),
                };
                tracing::error!(file = %self.path.display(), key = %key, error = %e,
                    "settings file edit rejected; running settings kept");
            }
        }
    }

    /// The file's settings with the environment overrides, validated.
    fn parse(&self, text: &str) -> Result<Settings, SettingsError> {
        // Errors name the file, not where it lives: they go back to the browser.
        let origin = Path::new(self.path.file_name().unwrap_or_default());
        let (mut s, warnings) =
            Settings::from_toml(text, origin).map_err(SettingsError::from_config)?;
        for w in warnings {
            tracing::debug!("{w}");
        }
        self.overrides.apply(&mut s);
        s.validate(&origin.display().to_string())
            .map_err(SettingsError::from_config)?;
        Ok(s)
    }

    /// Turns the request body into `(section, key, TOML value)` edits: unknown keys, keys decided by the
    /// environment and values of the wrong type are rejected here, naming the key; secrets echoed back as shown
    /// (`{"set": …}` or masked) are dropped, so they never overwrite the real value.
    fn plan(
        &self,
        running: &Settings,
        body: &Value,
    ) -> Result<Vec<(String, String, toml_edit::Item)>, SettingsError> {
        let Some(body) = body.as_object() else {
            return Err(SettingsError::invalid(
                "",
                "the body must be a JSON object of sections",
            ));
        };
        let raw = serde_json::to_value(running).unwrap_or_default();
        let shown = view(running);
        let defaults = serde_json::to_value(Settings::default()).unwrap_or_default();
        let mut out = Vec::new();
        for (name, values) in body {
            let sec = name.strip_suffix("_config").unwrap_or(name);
            if values.is_null() {
                continue;
            }
            let Some(known) = defaults.get(sec).and_then(Value::as_object) else {
                return Err(SettingsError::invalid(
                    name.clone(),
                    format!("unknown section `{name}`"),
                ));
            };
            let Some(values) = values.as_object() else {
                return Err(SettingsError::invalid(
                    sec,
                    format!("`{name}` must be an object of keys"),
                ));
            };
            for (key, v) in values {
                let full = format!("{sec}.{key}");
                if !known.contains_key(key) {
                    return Err(SettingsError::invalid(
                        &full,
                        format!("unknown setting `{full}`"),
                    ));
                }
                let cur_raw = &raw[sec][key];
                let cur_shown = &shown[sec][key];
                let v = match unmask(v, cur_raw, cur_shown) {
                    Some(v) => v,
                    None => continue,
                };
                if secret_unchanged(running, &full, &v) || v == *cur_raw {
                    continue;
                }
                if let Some(var) = self.overrides.variable_for(&full) {
                    return Err(SettingsError::invalid(
                        &full,
                        format!(
                            "`{full}` is set by the environment variable {var}; change it there"
                        ),
                    ));
                }
                let item = if full == "plugins.config" {
                    edit::config_table(&v)
                } else {
                    to_toml_value(&v).map(toml_edit::Item::Value)
                }
                .map_err(|m| SettingsError::invalid(&full, format!("`{full}`: {m}")))?;
                // The type is checked on its own, so the error names this key.
                let alone = edit::patch("", &[(sec.to_string(), key.clone(), item.clone())])
                    .map_err(|m| SettingsError::invalid(&full, m))?;
                if let Err(e) = Settings::from_toml(&alone, Path::new("request")) {
                    return Err(SettingsError::invalid(&full, format!("`{full}`: {e}")));
                }
                out.push((sec.to_string(), key.clone(), item));
            }
        }
        Ok(out)
    }

    /// Makes `new` the running settings: restart-only keys keep their running values; the services that copy
    /// values at start get theirs. Logs the changed key names (never values).
    pub async fn apply(&self, app: &AppInner, new: Settings) -> Applied {
        let old = self.live.get();
        let changed = changed_keys(&old, &new);
        let restart_required: Vec<String> = changed
            .iter()
            .filter(|k| !is_live(k) && !k.starts_with("plugins.config."))
            .cloned()
            .collect();
        let mut eff = new;
        keep_restart_only(&mut eff, &old);
        let eff = Arc::new(eff);
        self.live.store(eff.clone());
        let touched = |prefix: &str| changed.iter().any(|k| k.starts_with(prefix));

        match crate::upstream::UpstreamConfig::new(eff.clone()) {
            Ok(cfg) => app.forwarder.set_config(cfg),
            Err(e) => tracing::error!(error = %e, "upstream settings not applied"),
        }
        let proxies = app.forwarder.proxies();
        if touched("grok.proxy") || touched("grok.allow_direct") || touched("grok.base_url") {
            match PoolOptions::from_settings(&eff.grok).map(|o| proxies.apply_options(o)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => {
                    tracing::error!(error = %e, "proxy settings not fully applied")
                }
            }
            app.plugins.set_direct_allowed(proxies.direct_allowed());
        }
        if touched("global.log_max_count") || touched("global.log_models_calls") {
            if let Err(e) = app
                .calllog
                .set_limits(eff.global.log_max_count, eff.global.log_models_calls)
                .await
            {
                tracing::error!(error = %e, "call-log retention applied in memory; persisting failed");
            }
        }
        if touched("global.log_level") {
            if let Some(set) = &self.log_level {
                if let Err(e) = set(&eff.global.log_level) {
                    tracing::warn!(error = %e, "log level not changed");
                }
            }
        }
        if touched("plugins.") {
            let registry = app.plugins.clone();
            let plugins = eff.plugins.clone();
            match tokio::task::spawn_blocking(move || registry.apply_settings(&plugins)).await {
                Ok(Ok(_)) => {
                    proxies.set_selector(app.plugins.selector());
                    proxies.set_parser(app.plugins.pool_parser());
                    app.plugins.set_direct_allowed(proxies.direct_allowed());
                }
                Ok(Err(e)) => tracing::error!(error = %e, "plugin settings not applied"),
                Err(e) => tracing::error!(error = %e, "plugin settings not applied"),
            }
        }
        if !changed.is_empty() {
            tracing::info!(changed = ?changed, restart_required = ?restart_required, "settings applied");
        }
        if !restart_required.is_empty() {
            tracing::warn!(keys = ?restart_required, "these settings take effect at the next start");
        }
        Applied {
            changed,
            restart_required,
        }
    }
}

/// A TOML error message without the quoted source (`3 | key = "…"` and its marker lines).
pub(crate) fn without_source_lines(message: &str) -> String {
    message
        .lines()
        .filter(|l| !l.contains('|') && !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(": ")
}

fn sections(v: &Value) -> impl Iterator<Item = (&String, &Map<String, Value>)> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_object().map(|o| (k, o)))
}

/// Keys holding a secret by name, for keys added later that are plain strings.
fn is_secret_key(full: &str) -> bool {
    if SECRET_KEYS.contains(&full) {
        return true;
    }
    let key = full.rsplit('.').next().unwrap_or(full).to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "api_key",
        "apikey",
        "credential",
    ]
    .iter()
    .any(|w| key.contains(w))
}

/// Masks every credential a settings value can hold.
fn mask_value(full: &str, v: &Value) -> Value {
    match v {
        Value::String(s) if is_secret_key(full) => serde_json::json!({"set": !s.is_empty()}),
        Value::String(s) if full == "grok.proxy_url" => {
            Value::String(crate::proxy::mask_proxy_url(s))
        }
        Value::String(s) => Value::String(mask_url_text(s)),
        Value::Array(a) if full == "grok.proxy_urls" => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Value::String(crate::proxy::mask_proxy_url(s)),
                o => o.clone(),
            })
            .collect(),
        Value::Array(a) => a.iter().map(|x| mask_value(full, x)).collect(),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), mask_value(&format!("{full}.{k}"), x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A URL's password and query (where webhook and pool URLs carry keys) masked; other text unchanged.
fn mask_url_text(s: &str) -> String {
    if !s.contains("://") {
        return s.to_string();
    }
    match reqwest::Url::parse(s.trim()) {
        Ok(u) if u.password().is_some() || u.query().is_some() => crate::proxy::mask_url(s.trim()),
        Ok(_) => s.to_string(),
        Err(_) => crate::proxy::mask_proxy_url(s),
    }
}

pub fn view(s: &Settings) -> Value {
    let raw = serde_json::to_value(s).unwrap_or_default();
    let mut out = Map::new();
    for (sec, keys) in sections(&raw) {
        let m: Map<String, Value> = keys
            .iter()
            .map(|(k, v)| (k.clone(), mask_value(&format!("{sec}.{k}"), v)))
            .collect();
        out.insert(sec.clone(), Value::Object(m));
    }
    Value::Object(out)
}

/// The value to save for a posted one, or `None` when it is the shown form of the running value (a secret or
/// masked URL sent back unchanged). Masked list items are mapped back to the running items they stand for.
fn unmask(posted: &Value, raw: &Value, shown: &Value) -> Option<Value> {
    if posted.as_object().is_some_and(|o| o.contains_key("set")) && shown.is_object() {
        return None;
    }
    if posted == shown && shown != raw {
        return None;
    }
    if let (Value::Array(p), Value::Array(r), Value::Array(s)) = (posted, raw, shown) {
        return Some(Value::Array(
            p.iter()
                .map(|x| match s.iter().position(|y| y == x) {
                    Some(i) if s[i] != r[i] => r[i].clone(),
                    _ => x.clone(),
                })
                .collect(),
        ));
    }
    if let (Value::Object(p), Value::Object(r), Value::Object(s)) = (posted, raw, shown) {
        // plugins.config: nested tables, masked per value.
        return Some(Value::Object(
            p.iter()
                .map(|(k, x)| {
                    let v = match (r.get(k), s.get(k)) {
                        (Some(rv), Some(sv)) => unmask(x, rv, sv).unwrap_or_else(|| rv.clone()),
                        _ => x.clone(),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ));
    }
    Some(posted.clone())
}

/// A `Secret` field posted with its current value.
fn secret_unchanged(running: &Settings, full: &str, v: &Value) -> bool {
    let cur = match full {
        "global.admin_password" => &running.global.admin_password,
        "global.metrics_token" => &running.global.metrics_token,
        "global.log_webhook_url" => &running.global.log_webhook_url,
        "grok.api_key" => &running.grok.api_key,
        _ => return false,
    };
    v.as_str() == Some(cur.expose())
}

/// The keys (`section.name`; `plugins.config.NAME` per plugin) whose values differ.
pub fn changed_keys(old: &Settings, new: &Settings) -> Vec<String> {
    let a = serde_json::to_value(old).unwrap_or_default();
    let b = serde_json::to_value(new).unwrap_or_default();
    let mut out = Vec::new();
    for (sec, keys) in sections(&b) {
        for (key, v) in keys {
            let full = format!("{sec}.{key}");
            let before = &a[sec.as_str()][key.as_str()];
            if full == "plugins.config" {
                let empty = Map::new();
                let (x, y) = (
                    before.as_object().unwrap_or(&empty),
                    v.as_object().unwrap_or(&empty),
                );
                let mut names: Vec<&String> = x.keys().chain(y.keys()).collect();
                names.sort();
                names.dedup();
                for n in names {
                    if x.get(n) != y.get(n) {
                        out.push(format!("plugins.config.{n}"));
                    }
                }
            } else if before != v {
                out.push(full);
            }
        }
    }
    let secrets = [
        (
            "global.admin_password",
            &old.global.admin_password,
            &new.global.admin_password,
        ),
        (
            "global.metrics_token",
            &old.global.metrics_token,
            &new.global.metrics_token,
        ),
        ("grok.api_key", &old.grok.api_key, &new.grok.api_key),
    ];
    for (key, x, y) in secrets {
        if x != y && !out.iter().any(|k| k == key) {
            out.push(key.to_string());
        }
    }
    out
}

/// Copies the running values of the keys that need a restart into `new`.
fn keep_restart_only(new: &mut Settings, running: &Settings) {
    let (g, r) = (&mut new.global, &running.global);
    g.host.clone_from(&r.host);
    g.port = r.port;
    g.log_format.clone_from(&r.log_format);
    g.log_flush_interval = r.log_flush_interval;
    g.batch_save_interval = r.batch_save_interval;
    g.metrics_per_token = r.metrics_per_token;
    new.grok.connect_timeout = running.grok.connect_timeout;
    new.plugins.dir.clone_from(&running.plugins.dir);
    // The webhook dispatcher (sinks, outbox, destination policy) and the pool-API client's resolver are built
    // once at start.
    g.log_webhook_url = r.log_webhook_url.clone();
    g.webhook_outbox_max = r.webhook_outbox_max;
    g.webhook_timeout = r.webhook_timeout;
    g.webhook_max_attempts = r.webhook_max_attempts;
    g.webhook_max_age = r.webhook_max_age;
    g.webhook_backoff_base = r.webhook_backoff_base;
    g.webhook_backoff_max = r.webhook_backoff_max;
    g.webhook_allow.clone_from(&r.webhook_allow);
    g.webhook_deny.clone_from(&r.webhook_deny);
    // The accept loop and the rate limiter are built once at start.
    g.header_read_timeout = r.header_read_timeout;
    g.max_header_bytes = r.max_header_bytes;
    g.max_connections = r.max_connections;
    g.rate_limit_per_minute = r.rate_limit_per_minute;
    g.rate_limit_burst = r.rate_limit_burst;
    new.grok
        .proxy_pool_allow
        .clone_from(&running.grok.proxy_pool_allow);
    new.grok
        .proxy_pool_deny
        .clone_from(&running.grok.proxy_pool_deny);
    new.plugins.webhooks.clone_from(&running.plugins.webhooks);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn restart_only_keys_are_exactly_the_ones_kept() {
        let old = Settings::default();
        let mut new = Settings::default();
        new.global.host = "127.0.0.1".into();
        new.global.port = 1;
        new.global.log_format = "json".into();
        new.global.log_flush_interval = 9.0;
        new.global.batch_save_interval = 9.0;
        new.global.metrics_per_token = true;
        new.grok.connect_timeout = 1.0;
        new.plugins.dir = "x".into();
        new.global.log_webhook_url = Secret::new("http://127.0.0.1:9/hook");
        new.global.webhook_outbox_max = 1;
        new.global.webhook_timeout = 1.0;
        new.global.webhook_max_attempts = 1;
        new.global.webhook_max_age = 1.0;
        new.global.webhook_backoff_base = 2.0;
        new.global.webhook_backoff_max = 2.0;
        new.global.webhook_allow = vec!["loopback".into()];
        new.global.webhook_deny = vec!["private".into()];
        new.grok.proxy_pool_allow = vec!["loopback".into()];
        new.grok.proxy_pool_deny = vec!["private".into()];
        new.plugins.webhooks = vec!["hook".into()];
        new.global.header_read_timeout = 1.0;
        new.global.max_header_bytes = 2048;
        new.global.max_connections = 1;
        new.global.rate_limit_per_minute = 1;
        new.global.rate_limit_burst = 1;
        let changed = changed_keys(&old, &new);
        assert_eq!(changed.len(), 25, "{changed:?}");
        assert!(changed.iter().all(|k| !is_live(k)), "{changed:?}");
        keep_restart_only(&mut new, &old);
        assert!(changed_keys(&old, &new).is_empty());
        // Every other key is live.
        let json = serde_json::to_value(&old).unwrap();
        for (sec, keys) in sections(&json) {
            for key in keys.keys() {
                let full = format!("{sec}.{key}");
                assert!(
                    is_live(&full) || changed.contains(&full),
                    "{full} neither live nor kept"
                );
            }
        }
    }

    #[test]
    fn secrets_change_detected_and_never_shown() {
        let old = Settings::default();
        let mut new = Settings::default();
        new.grok.api_key = Secret::new("sk-very-secret-value-123");
        new.grok.proxy_url = "http://user:hunter2@10.0.0.1:3128".into();
        new.plugins.config.insert(
            "hook".into(),
            toml::toml! { url = "https://h.example/x?key=abcdef123"
            token = "tok-abc" },
        );
        let changed = changed_keys(&old, &new);
        assert!(changed.contains(&"grok.api_key".to_string()));
        assert!(changed.contains(&"grok.proxy_url".to_string()));
        assert!(changed.contains(&"plugins.config.hook".to_string()));
        let shown = view(&new).to_string();
        for secret in [
            "sk-very-secret-value-123",
            "hunter2",
            "abcdef123",
            "tok-abc",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(view(&new)["grok"]["api_key"]["set"], true);
    }

    #[test]
    fn parse_errors_do_not_quote_the_file() {
        let text = "[global]\nadmin_password = \"hunter2-unterminated\n";
        let e = Settings::from_toml(text, Path::new("setting.toml")).unwrap_err();
        assert!(e.to_string().contains("hunter2"), "the raw error quotes it");
        let msg = SettingsError::from_config(e).to_string();
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn masked_values_sent_back_are_unchanged() {
        let mut s = Settings::default();
        s.grok.proxy_urls = vec!["http://u:pw1@10.0.0.1:1".into(), "http://10.0.0.2:2".into()];
        let raw = serde_json::to_value(&s).unwrap();
        let shown = view(&s);
        let r = &raw["grok"]["proxy_urls"];
        let v = &shown["grok"]["proxy_urls"];
        // The list as shown plus a new item: the masked item maps back to the real one.
        let mut posted = v.as_array().unwrap().clone();
        posted.push(Value::String("http://10.0.0.3:3".into()));
        let got = unmask(&Value::Array(posted), r, v).unwrap();
        assert_eq!(got[0], "http://u:pw1@10.0.0.1:1");
        assert_eq!(got[2], "http://10.0.0.3:3");
        let k = &shown["grok"]["api_key"];
        assert!(unmask(k, &raw["grok"]["api_key"], k).is_none());
    }
}
