//! Egress: which way a request leaves the gateway (direct or through a forward proxy), and the proxy pool that
//! decides it.
//!
//! - `pool.rs`: the proxies (one pooled `reqwest::Client` each), token bindings, counters, health, persistence;
//! - `select.rs`: the built-in [`ProxySelector`](crate::hooks::ProxySelector) (keep the bound healthy proxy,
//!   else round-robin preferring proxies with fewer bindings);
//! - `parser.rs`: the built-in [`PoolParser`](crate::hooks::PoolParser) for pool-API answers;
//! - `source.rs`: the pool API fetch (start-up, interval, single-flight on demand), TTL and size pruning;
//! - `health.rs`: background re-checks of unhealthy proxies with exponential backoff and jitter.
//!
//! The forwarder asks [`ProxyPool::egress`] for an [`Egress`] and reports how the attempt went.

mod health;
mod parser;
mod pool;
mod select;
mod source;

use std::sync::Arc;
use std::time::Duration;

use crate::upstream::{DirectOptions, UpstreamClient};
use thiserror::Error;

pub use health::{probe, ProbeResult};
pub use parser::{spec_to_url, BuiltinParser};
pub use pool::{
    AssignError, NoEgress, PoolOptions, ProxyEntry, ProxyListing, ProxyPool, ProxyView,
};
pub use select::BuiltinSelector;
pub use source::{FetchError, RefreshReport};

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

/// A way out: a label for logs (credentials masked), the client that goes that way, and the pool entry to
/// report the outcome to (`None` when direct).
#[derive(Clone, Debug)]
pub struct Egress {
    /// Masked proxy URL; `None` means direct.
    pub proxy: Option<Arc<str>>,
    pub client: UpstreamClient,
    pub entry: Option<Arc<ProxyEntry>>,
}

impl Egress {
    pub fn label(&self) -> &str {
        self.proxy.as_deref().unwrap_or("direct")
    }
}

/// Settings that shape every upstream client.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
}

/// The client of the proxy at `url` (already normalised; credentials in it): our pool through it, or reqwest
/// for an `https://` proxy. Never a direct client.
pub fn proxy_client(url: &str, opts: ClientOptions) -> Result<UpstreamClient, ProxyError> {
    let invalid = |reason: String| ProxyError::Invalid {
        masked: mask_proxy_url(url),
        reason,
    };
    let direct_opts = DirectOptions {
        connect_timeout: opts.connect_timeout,
    };
    match UpstreamClient::through_proxy(url, direct_opts).map_err(|e| invalid(e.to_string()))? {
        Some(c) => Ok(c),
        None => build_client(Some(url), opts).map(UpstreamClient::Reqwest),
    }
}

/// Builds a pooled reqwest client, direct or through `proxy_url` (already normalised).
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
    // Control characters and spaces would be dropped or rewritten by the URL parser, making the stored form
    // differ from what was checked (found by fuzzing).
    if rest.is_empty()
        || rest.contains('/')
        || rest.chars().any(|c| c.is_control() || c.is_whitespace())
    {
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

/// An error with its causes (reqwest's top-level message alone says little).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Masks the password of every `scheme://user:password@` in a free text (an error message, say).
pub fn scrub_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // Not `'` or `)`: both are legal in a password (RFC 3986 sub-delims) and URL normalisation leaves them
        // as they are, so stopping there would print the rest of the password (found by a property test). A
        // quote or parenthesis after the host just stays part of the host text.
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '"' | '?' | '#' | '<' | '>'))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rsplit_once('@') {
            Some((creds, host)) => {
                let user = creds.split(':').next().unwrap_or("");
                out.push_str(&format!("{user}:****@{host}"));
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A URL for logs: password and query string (which often carry an API key) masked.
pub fn mask_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("****"));
            }
            if u.query().is_some() {
                u.set_query(Some("****"));
            }
            u.to_string()
        }
        Err(_) => mask_proxy_url(url),
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
        // Found by fuzzing: control characters the URL parser would silently drop.
        assert!(normalize_proxy_url("5:\0\0\0\0\0\0\0\x0b/").is_err());
    }

    #[test]
    fn scrubs_credentials_in_text() {
        assert_eq!(
            scrub_userinfo("error for http://u:pw@h:1/x and socks5h://a:b@c:2"),
            "error for http://u:****@h:1/x and socks5h://a:****@c:2"
        );
        assert_eq!(scrub_userinfo("no url here"), "no url here");
        assert_eq!(
            scrub_userinfo("(via 'http://u:p'w)d@h:1')"),
            "(via 'http://u:****@h:1')"
        );
        assert_eq!(scrub_userinfo("http://h:1/p"), "http://h:1/p");
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

        #[test]
        fn masked_forms_never_show_the_password(host in "[a-z]{1,10}", port in 1u16.., user in "[a-z]{0,6}", pw in "PW[A-Za-z0-9%!$&'()*+,;=._~-]{3,16}", scheme in prop::sample::select(vec!["http://", "https://", "socks5://", ""])) {
            let raw = format!("{scheme}{user}:{pw}@{host}:{port}");
            let masked = mask_proxy_url(&raw);
            prop_assert!(!masked.contains(&pw), "{}", masked);
            if let Ok(n) = normalize_proxy_url(&raw) {
                let m = mask_proxy_url(&n);
                prop_assert!(!m.contains(&pw), "{}", m);
                let scrubbed = scrub_userinfo(&format!("error connecting to {n}: refused"));
                prop_assert!(!scrubbed.contains(&pw), "{}", scrubbed);
            } else if let Err(e) = normalize_proxy_url(&raw) {
                prop_assert!(!e.to_string().contains(&pw), "{}", e);
            }
        }
    }
}
