//! How a pooled connection reaches the upstream: straight, through an HTTP forward proxy, or through a SOCKS5
//! proxy. One connector for the three, so a proxied request takes the same pool and the same HTTP/1.1 (or
//! HTTP/2) connection as a direct one. Until this, proxied traffic went through reqwest, whose per-request URI
//! formatting and parsing, connection task and channels made a proxied chat request cost the gateway 2.7 times
//! the CPU of a direct one (bench/README.md, "Eighth pass").
//!
//! - **HTTP proxy, https upstream:** a CONNECT tunnel, TLS end to end inside it. Our own few lines rather than
//!   hyper-util's `Tunnel`, whose error drops the proxy's answer (tinyproxy refuses bad credentials with 401,
//!   not 407, and `Tunnel` says only "unsuccessful").
//! - **HTTP proxy, plain-http upstream:** a connection to the proxy that carries the requests in absolute form
//!   with `Proxy-Authorization` (RFC 9112 §3.2.2), as curl and reqwest send them; proxies commonly allow
//!   CONNECT only to port 443. The pool (`direct.rs`) writes that form; see [`Via::forwards_plain_http`].
//! - **SOCKS5:** hyper-util's `SocksV5`; `socks5h://` lets the proxy resolve the upstream's name, `socks5://`
//!   resolves it here (reqwest's reading of the two schemes).
//!
//! `https://` proxies (TLS to the proxy itself) are not handled here; their entries keep reqwest.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use hyper_util::client::legacy::connect::proxy::SocksV5;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;
use tower_service::Service;

use super::client::BoxError;

/// The way out, parsed from a proxy URL.
#[derive(Clone)]
pub enum Via {
    Direct,
    Http {
        /// `http://host:port` of the proxy.
        proxy: Uri,
        /// `Basic …` from the URL's `user:password@`, marked sensitive.
        auth: Option<HeaderValue>,
    },
    Socks5 {
        proxy: Uri,
        auth: Option<(String, String)>,
        /// `socks5://`: resolve the upstream's name here.
        local_dns: bool,
    },
}

/// A proxy URL this connector cannot take.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct ViaError(String);

impl ViaError {
    pub(crate) fn new(msg: String) -> ViaError {
        ViaError(msg)
    }
}

impl Via {
    /// `Ok(None)` for an `https://` proxy, which stays with reqwest. Errors never echo the URL (it may hold a
    /// password).
    pub fn from_proxy_url(url: &str) -> Result<Option<Via>, ViaError> {
        let parsed =
            url::Url::parse(url).map_err(|e| ViaError(format!("invalid proxy URL: {e}")))?;
        let scheme = parsed.scheme();
        let default_port = match scheme {
            "http" => 80,
            "socks5" | "socks5h" => 1080,
            "https" => return Ok(None),
            other => return Err(ViaError(format!("unsupported proxy scheme `{other}`"))),
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ViaError("the proxy URL has no host".into()))?;
        let port = parsed.port().unwrap_or(default_port);
        let proxy = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(format!("{host}:{port}"))
            .path_and_query("/")
            .build()
            .map_err(|e| ViaError(format!("invalid proxy address: {e}")))?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let creds = (!parsed.username().is_empty() || parsed.password().is_some()).then(|| {
            (
                decode(parsed.username()),
                decode(parsed.password().unwrap_or("")),
            )
        });
        Ok(Some(match scheme {
            "http" => Via::Http {
                proxy,
                auth: match creds {
                    Some((u, p)) => {
                        let token =
                            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                        let mut v = HeaderValue::from_str(&format!("Basic {token}"))
                            .map_err(|_| ViaError("invalid proxy credentials".into()))?;
                        v.set_sensitive(true);
                        Some(v)
                    }
                    None => None,
                },
            },
            _ => Via::Socks5 {
                proxy,
                auth: creds,
                local_dns: scheme == "socks5",
            },
        }))
    }

    /// `Some(credentials)` when a plain-http upstream's requests go to this proxy in absolute form.
    pub fn forwards_plain_http(&self) -> Option<Option<HeaderValue>> {
        match self {
            Via::Http { auth, .. } => Some(auth.clone()),
            _ => None,
        }
    }
}

/// Connects to the upstream the way [`Via`] says: a TCP stream to the upstream (or, for a plain-http upstream
/// behind an HTTP proxy, to the proxy). TLS, when the upstream is https, is `hyper-rustls`' job on top.
#[derive(Clone)]
pub struct EgressConnector {
    kind: Kind,
    /// Bounds a proxy's handshake (CONNECT answer, SOCKS5 exchange) as the TCP connect is bounded.
    timeout: Duration,
}

#[derive(Clone)]
enum Kind {
    Direct(HttpConnector),
    Http {
        http: HttpConnector,
        proxy: Uri,
        auth: Option<HeaderValue>,
    },
    Socks {
        http: HttpConnector,
        proxy: Uri,
        auth: Option<(String, String)>,
        local_dns: bool,
    },
}

type Stream = TokioIo<TcpStream>;
type Connecting = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

/// Why a proxy did not give a connection. Displays what failed; the cause (an io error) is in `source`.
#[derive(Debug, Error)]
pub enum ProxyConnectError {
    #[error("the proxy's handshake timed out")]
    Timeout(#[source] io::Error),
    /// hyper-util's message (its error type is not public, and has no `source`).
    #[error("{0}")]
    Socks(String),
    #[error("the proxy refused the tunnel: {0}")]
    Refused(String),
    #[error("the proxy's answer to CONNECT is not HTTP")]
    BadAnswer,
    #[error("the proxy closed the connection before answering CONNECT")]
    Closed,
    #[error("the proxy sent more than its answer to CONNECT")]
    Extra,
    #[error("writing or reading the CONNECT")]
    Io(#[source] io::Error),
}

impl EgressConnector {
    /// `http` is the TCP connector every way starts from (its connect timeout, nodelay, keep-alive apply to the
    /// connection to the proxy); `timeout` also bounds the proxy's handshake.
    pub fn new(http: HttpConnector, via: &Via, timeout: Duration) -> EgressConnector {
        let kind = match via {
            Via::Direct => Kind::Direct(http),
            Via::Http { proxy, auth } => Kind::Http {
                http,
                proxy: proxy.clone(),
                auth: auth.clone(),
            },
            Via::Socks5 {
                proxy,
                auth,
                local_dns,
            } => Kind::Socks {
                http,
                proxy: proxy.clone(),
                auth: auth.clone(),
                local_dns: *local_dns,
            },
        };
        EgressConnector { kind, timeout }
    }
}

impl Service<Uri> for EgressConnector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Connecting;

    // Every way starts with an `HttpConnector`, which is always ready.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        let timeout = self.timeout;
        // Hosts and ports only: no credentials (a proxy's, or any in the upstream's URL) reach a log line.
        let (host, port) = (dst.host().unwrap_or(""), dst.port_u16());
        match &self.kind {
            Kind::Direct(_) => tracing::debug!(host, port, "new upstream connection"),
            Kind::Http { proxy, .. } | Kind::Socks { proxy, .. } => tracing::debug!(
                host,
                port,
                proxy = proxy.authority().map_or("", |a| a.as_str()),
                socks = matches!(self.kind, Kind::Socks { .. }),
                "new upstream connection through a proxy"
            ),
        }
        match &mut self.kind {
            Kind::Direct(http) => {
                let f = http.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Kind::Http { http, proxy, auth } => {
                let tcp = http.call(proxy.clone());
                if dst.scheme() != Some(&Scheme::HTTPS) {
                    return Box::pin(async move { tcp.await.map_err(Into::into) });
                }
                let auth = auth.clone();
                Box::pin(async move {
                    let stream = tcp.await?;
                    let dst = with_port(dst);
                    let (Some(host), Some(port)) = (dst.host(), dst.port_u16()) else {
                        return Err("the upstream URI has no host".into());
                    };
                    let open = tunnel(stream.into_inner(), host, port, auth.as_ref());
                    Ok(TokioIo::new(bounded(timeout, open).await??))
                })
            }
            Kind::Socks {
                http,
                proxy,
                auth,
                local_dns,
            } => {
                // The TCP connect is ours, so its error keeps its cause; hyper-util's SOCKS error type is not
                // public and gives only its own message.
                let tcp = http.call(proxy.clone());
                let (proxy, auth, local_dns) = (proxy.clone(), auth.clone(), *local_dns);
                // SOCKS5 needs the port; hyper-util's default for a URI without one is 443 whatever the scheme.
                let dst = with_port(dst);
                Box::pin(async move {
                    let stream = tcp.await?;
                    let mut socks =
                        SocksV5::new(proxy, Connected(Some(stream))).local_dns(local_dns);
                    if let Some((u, p)) = auth {
                        socks = socks.with_auth(u, p);
                    }
                    bounded(timeout, socks.call(dst))
                        .await?
                        .map_err(|e| Box::new(ProxyConnectError::Socks(e.to_string())) as BoxError)
                })
            }
        }
    }
}

/// Asks the HTTP proxy on `tcp` for a tunnel to `host:port` (RFC 9110 §9.3.6); any 2xx opens it.
async fn tunnel(
    mut tcp: TcpStream,
    host: &str,
    port: u16,
    auth: Option<&HeaderValue>,
) -> Result<TcpStream, ProxyConnectError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n").into_bytes();
    if let Some(a) = auth {
        req.extend_from_slice(b"Proxy-Authorization: ");
        req.extend_from_slice(a.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    tcp.write_all(&req).await.map_err(ProxyConnectError::Io)?;
    let mut buf = Vec::with_capacity(512);
    loop {
        if buf.len() >= 8192 {
            return Err(ProxyConnectError::BadAnswer);
        }
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await.map_err(ProxyConnectError::Io)?;
        if n == 0 {
            return Err(ProxyConnectError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut answer = httparse::Response::new(&mut headers);
        match answer.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(len)) => {
                let code = answer.code.unwrap_or(0);
                if !(200..300).contains(&code) {
                    let reason: String = answer.reason.unwrap_or("").chars().take(100).collect();
                    return Err(ProxyConnectError::Refused(
                        format!("{code} {reason}").trim_end().into(),
                    ));
                }
                // The upstream speaks only after our TLS hello: bytes here would be lost or misread.
                if len != buf.len() {
                    return Err(ProxyConnectError::Extra);
                }
                return Ok(tcp);
            }
            Err(_) => return Err(ProxyConnectError::BadAnswer),
        }
    }
}

/// A connection already made, handed to hyper-util's SOCKS5 handshake as its "connector".
struct Connected(Option<Stream>);

impl Service<Uri> for Connected {
    type Response = Stream;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<Stream>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _proxy: Uri) -> Self::Future {
        std::future::ready(
            self.0
                .take()
                .ok_or_else(|| io::Error::other("connection already used")),
        )
    }
}

async fn bounded<T>(limit: Duration, f: impl Future<Output = T>) -> Result<T, BoxError> {
    tokio::time::timeout(limit, f).await.map_err(|_| {
        Box::new(ProxyConnectError::Timeout(io::Error::new(
            io::ErrorKind::TimedOut,
            "proxy handshake timed out",
        ))) as BoxError
    })
}

/// `dst` with its scheme's default port written out.
fn with_port(dst: Uri) -> Uri {
    if dst.port().is_some() {
        return dst;
    }
    let port = if dst.scheme() == Some(&Scheme::HTTPS) {
        443
    } else {
        80
    };
    let Some(host) = dst.host() else { return dst };
    let Ok(authority) = Authority::try_from(format!("{host}:{port}")) else {
        return dst;
    };
    let mut parts = dst.into_parts();
    parts.authority = Some(authority);
    Uri::from_parts(parts).unwrap_or_else(|e| unreachable!("a valid URI with a port added: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_into_ways_without_echoing_secrets() {
        match Via::from_proxy_url("http://al%40ice:p%3Ass@127.0.0.1:3128").unwrap() {
            Some(Via::Http { proxy, auth }) => {
                assert_eq!(proxy, "http://127.0.0.1:3128/");
                let want = base64::engine::general_purpose::STANDARD.encode("al@ice:p:ss");
                let auth = auth.unwrap();
                assert!(auth.is_sensitive());
                assert_eq!(auth, format!("Basic {want}").as_str());
            }
            _ => panic!("an HTTP proxy"),
        }
        match Via::from_proxy_url("http://proxy.example").unwrap() {
            Some(Via::Http { proxy, auth: None }) => assert_eq!(proxy, "http://proxy.example:80/"),
            _ => panic!("an HTTP proxy without credentials"),
        }
        match Via::from_proxy_url("socks5h://bob:pw@127.0.0.1").unwrap() {
            Some(Via::Socks5 {
                proxy,
                auth,
                local_dns,
            }) => {
                assert_eq!(proxy, "http://127.0.0.1:1080/");
                assert_eq!(auth, Some(("bob".into(), "pw".into())));
                assert!(!local_dns);
            }
            _ => panic!("a SOCKS5 proxy"),
        }
        assert!(matches!(
            Via::from_proxy_url("socks5://127.0.0.1:9").unwrap(),
            Some(Via::Socks5 {
                local_dns: true,
                auth: None,
                ..
            })
        ));
        assert!(Via::from_proxy_url("https://u:p@proxy:443")
            .unwrap()
            .is_none());
        let e = Via::from_proxy_url("socks4://u:secretpw@h:1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("socks4") && !e.contains("secretpw"), "{e}");
    }

    /// A one-connection HTTP proxy that answers the CONNECT with `answer` and echoes what it got first.
    async fn scripted_proxy(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = vec![0u8; 1024];
            let n = s.read(&mut got).await.unwrap();
            got.truncate(n);
            s.write_all(answer).await.unwrap();
            got
        });
        (port, task)
    }

    async fn open(answer: &'static [u8]) -> (Result<TcpStream, ProxyConnectError>, String) {
        let (port, proxy) = scripted_proxy(answer).await;
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let auth = HeaderValue::from_static("Basic dTpw");
        let r = tunnel(tcp, "up.example", 443, Some(&auth)).await;
        (r, String::from_utf8(proxy.await.unwrap()).unwrap())
    }

    #[tokio::test]
    async fn connect_answers_open_or_refuse_the_tunnel_and_say_why() {
        let (r, asked) = open(b"HTTP/1.0 200 Connection established\r\n\r\n").await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(
            asked,
            "CONNECT up.example:443 HTTP/1.1\r\nHost: up.example:443\r\n\
             Proxy-Authorization: Basic dTpw\r\n\r\n"
        );
        // Split answers and any 2xx are fine.
        assert!(open(b"HTTP/1.1 204 OK\r\nX: y\r\n\r\n").await.0.is_ok());
        let refused = |b| async move { open(b).await.0.err().map(|e| e.to_string()) };
        assert_eq!(
            refused(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                .await
                .as_deref(),
            Some("the proxy refused the tunnel: 407 Proxy Authentication Required")
        );
        assert_eq!(
            refused(b"HTTP/1.1 403 \r\n\r\n").await.as_deref(),
            Some("the proxy refused the tunnel: 403")
        );
        assert!(matches!(
            open(b"HTTP/1.1 200 OK\r\n\r\nhello").await.0,
            Err(ProxyConnectError::Extra)
        ));
        assert!(matches!(
            open(b"SSH-2.0-OpenSSH\r\n\r\n").await.0,
            Err(ProxyConnectError::BadAnswer)
        ));
        assert!(matches!(
            open(b"HTTP/1.1 200").await.0,
            Err(ProxyConnectError::Closed)
        ));
    }

    #[test]
    fn a_missing_port_is_the_schemes_default() {
        let p = |u: &str| with_port(u.parse().unwrap()).to_string();
        assert_eq!(p("http://up.example/v1/x"), "http://up.example:80/v1/x");
        assert_eq!(p("https://up.example/v1"), "https://up.example:443/v1");
        assert_eq!(p("http://up.example:8080/"), "http://up.example:8080/");
        assert_eq!(p("http://[::1]/"), "http://[::1]:80/");
    }
}
