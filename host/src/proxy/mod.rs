//! Egress: which way a request leaves the gateway (direct or through a forward proxy), and the pooled HTTP
//! client for that way.
//!
//! This is the seam the proxy pool and the selection hook fill: the forwarder only asks an [`EgressSelector`]
//! for an [`Egress`] and reports how it went. The built-in [`StaticEgress`] sends everything through
//! `grok.proxy_url`, or direct when it is empty.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::tokens::Token;

#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("proxy URL `{masked}` is not valid: {reason}")]
    Invalid { masked: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// What the selector knows about a request. Never carries the token secret.
#[derive(Debug, Clone)]
pub struct RequestInfo<'a> {
    pub token_id: &'a str,
    pub model: &'a str,
    pub route: &'a str,
    pub stream: bool,
}

/// A way out: a label for logs (credentials masked) and the client that goes that way.
#[derive(Clone, Debug)]
pub struct Egress {
    /// `None` means direct.
    pub proxy: Option<Arc<str>>,
    pub client: reqwest::Client,
}

impl Egress {
    pub fn label(&self) -> &str {
        self.proxy.as_deref().unwrap_or("direct")
    }
}

pub trait EgressSelector: Send + Sync + 'static {
    fn select(&self, token: &Token, info: &RequestInfo<'_>) -> Egress;
    /// How the attempt through `egress` went, so health can be tracked. `ok == false` means the egress itself
    /// failed (connect error, timeout), not that the upstream answered an error.
    fn report(&self, _egress: &Egress, _ok: bool, _latency: Duration) {}
}

/// Settings that shape every upstream client.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
}

/// Builds a pooled client, direct or through `proxy_url` (already normalised).
pub fn build_client(
    proxy_url: Option<&str>,
    opts: ClientOptions,
) -> Result<reqwest::Client, ProxyError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        // Never follow redirects: an upstream redirect is passed to the client as is.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(url) = proxy_url {
        let proxy = reqwest::Proxy::all(url).map_err(|e| ProxyError::Invalid {
            masked: mask_proxy_url(url),
            reason: e.to_string(),
        })?;
        b = b.proxy(proxy);
    }
    b.build().map_err(|e| ProxyError::Client(e.to_string()))
}

/// Normalises a proxy URL as Grok2API does, and more: trims; `sock5://`, `sock5h://`, `socks5://` become
/// `socks5h://` (DNS at the proxy); a bare `host:port` or `user:pass@host:port` becomes `http://…`.
/// Schemes other than http, https and socks5h are rejected. Idempotent.
pub fn normalize_proxy_url(raw: &str) -> Result<String, ProxyError> {
    let s = raw.trim();
    let invalid = |reason: &str| ProxyError::Invalid {
        masked: mask_proxy_url(s),
        reason: reason.into(),
    };
    if s.is_empty() {
        return Err(invalid("empty"));
    }
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("http".to_string(), s),
    };
    let scheme = match scheme.as_str() {
        "sock5" | "sock5h" | "socks5" | "socks5h" => "socks5h",
        "http" => "http",
        "https" => "https",
        other => {
            return Err(invalid(&format!(
                "scheme `{other}` is not supported (http, https, socks5h)"
            )))
        }
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', ' ', '\n', '\t']) {
        return Err(invalid("expected host:port after the scheme"));
    }
    let url = format!("{scheme}://{rest}");
    let parsed = reqwest::Url::parse(&url).map_err(|e| invalid(&e.to_string()))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("missing host"));
    }
    if parsed.port_or_known_default().is_none() {
        return Err(invalid("missing port"));
    }
    Ok(url)
}

/// `scheme://user:****@host:port`: the password never leaves the process in a log line or an answer.
pub fn mask_proxy_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return match url.rsplit_once('@') {
            Some((_, host)) => format!("****@{host}"),
            None => url.to_string(),
        };
    };
    match rest.rsplit_once('@') {
        Some((creds, host)) => {
            let user = creds.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:****@{host}")
        }
        None => url.to_string(),
    }
}

/// The built-in egress: one static proxy (`grok.proxy_url`) or direct.
pub struct StaticEgress {
    egress: Egress,
}

impl StaticEgress {
    pub fn new(proxy_url: &str, opts: ClientOptions) -> Result<StaticEgress, ProxyError> {
        let proxy = if proxy_url.trim().is_empty() {
            None
        } else {
            Some(normalize_proxy_url(proxy_url)?)
        };
        let client = build_client(proxy.as_deref(), opts)?;
        Ok(StaticEgress {
            egress: Egress {
                proxy: proxy.map(|p| Arc::from(mask_proxy_url(&p))),
                client,
            },
        })
    }
}

impl EgressSelector for StaticEgress {
    fn select(&self, _token: &Token, _info: &RequestInfo<'_>) -> Egress {
        self.egress.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalise_examples() {
        let ok = |s: &str| normalize_proxy_url(s).unwrap();
        assert_eq!(ok(" sock5://1.2.3.4:1080 "), "socks5h://1.2.3.4:1080");
        assert_eq!(ok("sock5h://h:1"), "socks5h://h:1");
        assert_eq!(ok("socks5://u:p@h:1"), "socks5h://u:p@h:1");
        assert_eq!(ok("1.2.3.4:8080"), "http://1.2.3.4:8080");
        assert_eq!(
            ok("user:pw@proxy.example:3128"),
            "http://user:pw@proxy.example:3128"
        );
        assert_eq!(ok("https://h:443/"), "https://h:443");
        assert!(normalize_proxy_url("socks4://h:1").is_err());
        assert!(normalize_proxy_url("").is_err());
        assert!(normalize_proxy_url("socks5h://h").is_err());
        assert!(normalize_proxy_url("http://a:1\nhttp://b:2").is_err());
    }

    #[test]
    fn masks_credentials() {
        assert_eq!(mask_proxy_url("http://u:secret@h:1"), "http://u:****@h:1");
        assert_eq!(mask_proxy_url("socks5h://h:1"), "socks5h://h:1");
        let err = normalize_proxy_url("socks4://u:secret@h:1")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    proptest! {
        #[test]
        fn normalise_is_idempotent(host in "[a-z]{1,10}(\\.[a-z]{1,5})?", port in 1u16.., scheme in prop::sample::select(vec!["", "http://", "https://", "socks5://", "sock5://", "socks5h://", "sock5h://"]), creds in prop::option::of("[a-z]{1,5}:[a-z0-9]{1,8}@")) {
            let raw = format!("{scheme}{}{host}:{port}", creds.unwrap_or_default());
            let once = normalize_proxy_url(&raw).unwrap();
            prop_assert_eq!(normalize_proxy_url(&once).unwrap(), once.clone());
            prop_assert!(once.starts_with("http://") || once.starts_with("https://") || once.starts_with("socks5h://"));
        }
    }
}
