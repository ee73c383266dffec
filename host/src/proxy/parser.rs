//! The built-in pool-API answer parser. Accepts plain text (one proxy per line), a JSON string, a JSON array of
//! strings or objects, objects with `proxy`/`url` or `ip`/`host` + `port` (+ `protocol`/`type`,
//! `username`/`user`, `password`/`pass`), inside the wrappers `data`, `data.proxy_list`, `data.list`,
//! `results`, `proxies`, `list`. A 200 answer that is an error (`{"success": false}`, `{"code": 0, "src":
//! "no proxy"}`, an empty body, a JSON object with no proxy in it) is `Err`, never a proxy.

use serde_json::Value;

use crate::hooks::{HookError, PoolParser, ProxySpec};

/// The largest answer read from a pool API.
pub(crate) const MAX_ANSWER: usize = 1024 * 1024;

const WRAPPERS: &[&str] = &["data", "proxy_list", "list", "results", "proxies"];
const MAX_DEPTH: usize = 4;

#[derive(Default)]
pub struct BuiltinParser;

fn bad(msg: impl Into<String>) -> HookError {
    HookError::BadAnswer(msg.into())
}

impl PoolParser for BuiltinParser {
    fn name(&self) -> &str {
        "builtin"
    }

    fn parse(
        &self,
        _source_url: &str,
        status: u16,
        _content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<ProxySpec>, HookError> {
        if status != 200 {
            return Err(bad(format!("pool API answered HTTP {status}")));
        }
        if body.len() > MAX_ANSWER {
            return Err(bad("answer too large"));
        }
        let text = std::str::from_utf8(body).map_err(|_| bad("answer is not UTF-8 text"))?;
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            return Err(bad("empty answer"));
        }
        // Whatever the content type says: many pool APIs send JSON as text/html and text as JSON.
        let specs = match serde_json::from_str::<Value>(text) {
            Ok(v) => from_json(&v, 0)?,
            Err(_) if text.starts_with(['{', '[']) => return Err(bad("answer is not valid JSON")),
            Err(_) => from_text(text),
        };
        if specs.is_empty() {
            return Err(bad(match serde_json::from_str::<Value>(text) {
                Ok(v) => format!("no proxy in the answer{}", error_hint(&v)),
                Err(_) => "no proxy in the answer".into(),
            }));
        }
        Ok(specs)
    }
}

fn from_text(text: &str) -> Vec<ProxySpec> {
    text.lines()
        .flat_map(|l| l.split([',', ';']))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| ProxySpec {
            url: Some(l.to_string()),
            ..ProxySpec::default()
        })
        .collect()
}

fn from_json(v: &Value, depth: usize) -> Result<Vec<ProxySpec>, HookError> {
    if depth > MAX_DEPTH {
        return Ok(Vec::new());
    }
    match v {
        Value::String(s) => Ok(from_text(s)),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(from_json(item, depth + 1)?);
            }
            Ok(out)
        }
        Value::Object(map) => {
            if map.get("success") == Some(&Value::Bool(false)) {
                return Err(bad(format!("pool API reported failure{}", error_hint(v))));
            }
            if let Some(spec) = object_spec(map) {
                return Ok(vec![spec]);
            }
            for key in WRAPPERS {
                if let Some(inner) = map.get(*key) {
                    let found = from_json(inner, depth + 1)?;
                    if !found.is_empty() {
                        return Ok(found);
                    }
                }
            }
            Ok(Vec::new())
        }
        _ => Ok(Vec::new()),
    }
}

fn str_field<'a>(map: &'a serde_json::Map<String, Value>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .filter_map(|k| map.get(*k)?.as_str())
        .map(str::trim)
        .find(|s| !s.is_empty())
}

fn object_spec(map: &serde_json::Map<String, Value>) -> Option<ProxySpec> {
    let expires_at_ms = ["expire_at_ms", "expires_at_ms"]
        .iter()
        .find_map(|k| map.get(*k)?.as_u64());
    let label = str_field(map, &["label", "name", "city"]).map(str::to_string);
    let scheme = str_field(map, &["protocol", "type", "scheme"]).map(str::to_string);
    if let Some(url) = str_field(map, &["proxy", "url"]) {
        return Some(ProxySpec {
            url: Some(url.to_string()),
            scheme,
            expires_at_ms,
            label,
            ..ProxySpec::default()
        });
    }
    let host = str_field(map, &["ip", "host"])?;
    let port = match map.get("port")? {
        Value::Number(n) => u16::try_from(n.as_u64()?).ok()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(ProxySpec {
        url: None,
        scheme,
        host: Some(host.to_string()),
        port: Some(port),
        username: str_field(map, &["username", "user"]).map(str::to_string),
        password: str_field(map, &["password", "pass"]).map(str::to_string),
        expires_at_ms,
        label,
    })
}

/// ` (msg: …)` from the usual error fields, so an operator sees why the API gave nothing.
fn error_hint(v: &Value) -> String {
    let Some(map) = v.as_object() else {
        return String::new();
    };
    ["msg", "message", "src", "error", "info", "code"]
        .iter()
        .find_map(|k| {
            let f = map.get(*k)?;
            let s = match f {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some(format!(
                " ({k}: {})",
                s.chars().take(120).collect::<String>()
            ))
        })
        .unwrap_or_default()
}

/// The proxy URL a spec stands for (before normalisation).
pub fn spec_to_url(spec: &ProxySpec) -> Option<String> {
    let scheme = spec
        .scheme
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty());
    if let Some(url) = spec.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        return Some(match scheme {
            Some(s) if !url.contains("://") => format!("{s}://{url}"),
            _ => url.to_string(),
        });
    }
    let host = spec.host.as_deref()?.trim();
    let port = spec.port?;
    let creds = match (&spec.username, &spec.password) {
        (Some(u), Some(p)) => format!("{}:{}@", encode(u), encode(p)),
        (Some(u), None) => format!("{}@", encode(u)),
        _ => String::new(),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Some(format!(
        "{}://{creds}{host}:{port}",
        scheme.as_deref().unwrap_or("http")
    ))
}

/// Percent-encodes what may not appear raw in URL userinfo.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::normalize_proxy_url;

    fn urls(body: &str) -> Vec<String> {
        BuiltinParser
            .parse("http://pool", 200, None, body.as_bytes())
            .unwrap_or_else(|e| panic!("{body}: {e}"))
            .iter()
            .map(|s| normalize_proxy_url(&spec_to_url(s).unwrap()).unwrap())
            .collect()
    }

    fn err(body: &str) -> String {
        BuiltinParser
            .parse("http://pool", 200, None, body.as_bytes())
            .map(|v| format!("{v:?}"))
            .expect_err(body)
            .to_string()
    }

    #[test]
    fn text_answers() {
        assert_eq!(urls("1.2.3.4:8080\n"), ["http://1.2.3.4:8080"]);
        assert_eq!(
            urls("socks5://1.1.1.1:1080\r\nu:p@2.2.2.2:3128\n\n"),
            ["socks5h://1.1.1.1:1080", "http://u:p@2.2.2.2:3128"]
        );
        assert_eq!(urls("\"h:1\""), ["http://h:1"]);
    }

    #[test]
    fn json_answers() {
        let want = ["http://1.2.3.4:80", "socks5h://u:p%40ss@5.6.7.8:1080"];
        for body in [
            r#"["1.2.3.4:80", "socks5://u:p%40ss@5.6.7.8:1080"]"#,
            r#"[{"proxy": "1.2.3.4:80"}, {"url": "socks5h://u:p%40ss@5.6.7.8:1080"}]"#,
            r#"[{"ip": "1.2.3.4", "port": 80}, {"host": "5.6.7.8", "port": "1080", "protocol": "socks5", "username": "u", "password": "p@ss"}]"#,
            r#"{"code": 0, "data": [{"ip": "1.2.3.4", "port": "80", "type": "http"}, {"ip": "5.6.7.8", "port": 1080, "type": "sock5", "user": "u", "pass": "p@ss"}]}"#,
            r#"{"data": {"proxy_list": ["1.2.3.4:80", "socks5h://u:p%40ss@5.6.7.8:1080"]}}"#,
            r#"{"data": {"list": [{"proxy": "1.2.3.4:80"}, {"proxy": "5.6.7.8:1080", "protocol": "socks5", "x": 1}]}}"#,
            r#"{"results": ["1.2.3.4:80", "socks5://u:p%40ss@5.6.7.8:1080"]}"#,
            r#"{"proxies": ["1.2.3.4:80", "socks5://u:p%40ss@5.6.7.8:1080"]}"#,
            r#"{"list": "1.2.3.4:80\nsocks5://u:p%40ss@5.6.7.8:1080"}"#,
        ] {
            let got = urls(body);
            let want: Vec<String> = want
                .iter()
                .map(|w| {
                    if body.contains("\"x\": 1") {
                        w.replace("u:p%40ss@", "")
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            assert_eq!(got, want, "{body}");
        }
        assert_eq!(urls(r#"{"proxy": "9.9.9.9:1"}"#), ["http://9.9.9.9:1"]);
        assert_eq!(urls(r#"{"data": "9.9.9.9:1"}"#), ["http://9.9.9.9:1"]);
        assert_eq!(
            urls(r#"{"ip": "::1", "port": 3128}"#),
            ["http://[::1]:3128"]
        );
    }

    #[test]
    fn error_shaped_answers_are_errors() {
        assert!(err(r#"{"code": 0, "src": "no proxy"}"#).contains("no proxy"));
        assert!(err(r#"{"success": false, "msg": "quota used up"}"#).contains("quota used up"));
        assert!(err(r#"{"success": false, "data": ["1.2.3.4:80"]}"#).contains("failure"));
        assert!(err("").contains("empty"));
        assert!(err("   \n").contains("empty"));
        assert!(err("[]").contains("no proxy"));
        assert!(err(r#"{"data": []}"#).contains("no proxy"));
        assert!(err(r#"{"broken": "#).contains("JSON"));
        assert!(err("null").contains("no proxy"));
        let e = BuiltinParser
            .parse("u", 500, None, b"1.2.3.4:80")
            .unwrap_err();
        assert!(e.to_string().contains("500"));
        assert!(BuiltinParser.parse("u", 200, None, &[0xff, 0xfe]).is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn proxy() -> impl Strategy<Value = (String, u16, Option<(String, String)>)> {
            (
                "[a-z]{1,8}(\\.[a-z]{1,4})?",
                1u16..,
                prop::option::of(("[a-z]{1,6}", "PW[A-Za-z0-9]{4,10}")),
            )
        }

        proptest! {
            #[test]
            fn never_panics_and_every_proxy_normalises(body in prop::collection::vec(any::<u8>(), 0..600)) {
                if let Ok(specs) = BuiltinParser.parse("http://pool", 200, None, &body) {
                    prop_assert!(!specs.is_empty());
                    for s in &specs {
                        if let Some(u) = spec_to_url(s) {
                            if let Ok(n) = normalize_proxy_url(&u) {
                                prop_assert_eq!(normalize_proxy_url(&n).unwrap(), n);
                            }
                        }
                    }
                }
            }

            #[test]
            fn text_and_json_lists_keep_every_proxy(list in prop::collection::vec(proxy(), 1..20), json in any::<bool>()) {
                let want: Vec<String> = list
                    .iter()
                    .map(|(h, p, c)| match c {
                        Some((u, pw)) => format!("http://{u}:{pw}@{h}:{p}"),
                        None => format!("http://{h}:{p}"),
                    })
                    .collect();
                let body = if json {
                    let items: Vec<serde_json::Value> = list
                        .iter()
                        .map(|(h, p, c)| match c {
                            Some((u, pw)) => serde_json::json!({"ip": h, "port": p, "username": u, "password": pw}),
                            None => serde_json::json!({"ip": h, "port": p}),
                        })
                        .collect();
                    serde_json::json!({"code": 0, "data": {"list": items}}).to_string()
                } else {
                    want.join("\r\n")
                };
                prop_assert_eq!(urls(&body), want);
            }
        }
    }
}
