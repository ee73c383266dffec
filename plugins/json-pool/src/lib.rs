//! Pool parser for JSON proxy-pool APIs, driven by config: where the list is, and which field holds what.

use std::sync::OnceLock;

use grok2api_plugin_sdk::prelude::*;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Dotted path to the list of proxies (`data.list`); empty: the answer itself is the list.
    list: String,
    /// Field holding a whole proxy URL; when set, host/port fields are not used.
    url_field: Option<String>,
    host_field: String,
    port_field: String,
    scheme_field: Option<String>,
    username_field: Option<String>,
    password_field: Option<String>,
    /// Field with the expiry time, and its unit: `s`, `ms` (Unix time) or `rfc3339`-less plain numbers only.
    expires_field: Option<String>,
    expires_unit: String,
    label_field: Option<String>,
    /// Scheme for entries without one.
    default_scheme: String,
    /// An answer is an error when this field (dotted path) exists and is not one of `ok_values`.
    code_field: Option<String>,
    ok_values: Vec<Value>,
    /// Where the API puts its error message.
    message_field: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            list: String::new(),
            url_field: None,
            host_field: "ip".into(),
            port_field: "port".into(),
            scheme_field: None,
            username_field: None,
            password_field: None,
            expires_field: None,
            expires_unit: "s".into(),
            label_field: None,
            default_scheme: "http".into(),
            code_field: None,
            ok_values: vec![Value::from(0), Value::from(200), Value::from("0"), Value::from("200")],
            message_field: None,
        }
    }
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct JsonPool;

impl Plugin for JsonPool {
    fn info() -> PluginInfo {
        PluginInfo::new("json-pool", env!("CARGO_PKG_VERSION"), "proxy-pool API answers in JSON, fields set by config")
    }

    fn init(config: String) -> Result<(), String> {
        let c: Config = parse_config(&config)?;
        if !matches!(c.expires_unit.as_str(), "s" | "ms") {
            return Err(format!("expires_unit must be `s` or `ms`, not `{}`", c.expires_unit));
        }
        let _ = CONFIG.set(c);
        Ok(())
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn field<'a>(item: &'a Value, name: &Option<String>) -> Option<&'a Value> {
    json_path(item, name.as_deref()?)
}

fn entry(cfg: &Config, item: &Value, n: usize) -> Result<ProxySpec, String> {
    let mut spec = match item {
        // A plain "host:port" or URL string.
        Value::String(s) if s.contains("://") => ProxySpec::from_url(s.trim()),
        Value::String(s) => ProxySpec::from_url(&format!("{}://{}", cfg.default_scheme, s.trim())),
        Value::Object(_) => {
            if let Some(url) = text(field(item, &cfg.url_field)) {
                ProxySpec::from_url(&url)
            } else {
                let host = text(json_path(item, &cfg.host_field))
                    .ok_or_else(|| format!("entry {n}: no `{}`", cfg.host_field))?;
                let port = text(json_path(item, &cfg.port_field))
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(|| format!("entry {n}: `{}` is not a port", cfg.port_field))?;
                let mut spec = ProxySpec::from_parts(&host, port);
                spec.scheme = Some(text(field(item, &cfg.scheme_field)).unwrap_or_else(|| cfg.default_scheme.clone()));
                spec.username = text(field(item, &cfg.username_field));
                spec.password = text(field(item, &cfg.password_field));
                spec
            }
        }
        other => return Err(format!("entry {n}: expected an object or a string, got {other}")),
    };
    if let Some(v) = field(item, &cfg.expires_field) {
        let t = v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
        spec.expires_at_ms = t.map(|t| if cfg.expires_unit == "s" { t.saturating_mul(1000) } else { t });
    }
    spec.label = text(field(item, &cfg.label_field));
    Ok(spec)
}

impl PoolParserPlugin for JsonPool {
    fn parse(_source: String, status: u16, _ct: Option<String>, body: Vec<u8>) -> Result<Vec<ProxySpec>, String> {
        let cfg = CONFIG.get_or_init(Config::default);
        if !(200..300).contains(&status) {
            return Err(format!("pool API answered HTTP {status}"));
        }
        let doc: Value = serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON: {e}"))?;
        if let Some(code) = field(&doc, &cfg.code_field) {
            if !cfg.ok_values.contains(code) {
                let msg = text(field(&doc, &cfg.message_field)).unwrap_or_default();
                return Err(format!("pool API error {code}: {msg}"));
            }
        }
        let list = json_path(&doc, &cfg.list).ok_or_else(|| format!("no `{}` in the answer", cfg.list))?;
        let items = list.as_array().ok_or_else(|| format!("`{}` is not a list", cfg.list))?;
        items.iter().enumerate().map(|(n, item)| entry(cfg, item, n)).collect()
    }
}

export_pool_parser!(JsonPool);
