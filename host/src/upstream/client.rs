//! The HTTP client an upstream call goes out on, behind one `send`: our own pool and HTTP/1.1 connection
//! (`direct.rs`, `h1.rs`; hyper for HTTP/2), straight or through an HTTP or SOCKS5 forward proxy
//! (`egress.rs`); reqwest only through an `https://` proxy (TLS to the proxy itself).
//!
//! reqwest 0.12 formats every request URI and parses it back into a `Url` twice (redirect policy, response
//! URL), about an eighth of the gateway's instructions per request, and runs each connection in a task of its
//! own. The pool takes a prebuilt `http::Uri` as is.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use thiserror::Error;

use super::direct::{Connector, DirectClient, DirectError, PooledBody};
use super::egress::{EgressConnector, Via, ViaError};
use super::h1;

/// Boxed so the two clients' body errors are one type; allocated only when a body fails.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client of one egress. Cloning is cheap (shared pools).
#[derive(Clone)]
pub enum UpstreamClient {
    /// Our pool (HTTP/1.1 keep-alive; HTTP/2 when an https upstream offers it), direct or through a proxy.
    Pool(DirectClient),
    /// Through an `https://` forward proxy.
    Reqwest(reqwest::Client),
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpstreamClient::Pool(_) => "UpstreamClient::Pool",
            UpstreamClient::Reqwest(_) => "UpstreamClient::Reqwest",
        })
    }
}

/// A request could not be sent or got no answer. Displays like the client's own error, causes in `source`.
#[derive(Debug, Error)]
pub enum SendError {
    #[error(transparent)]
    Pool(#[from] DirectError),
    #[error(transparent)]
    Reqwest(#[from] reqwest::Error),
}

impl SendError {
    /// The connect timeout fired.
    pub fn is_timeout(&self) -> bool {
        match self {
            SendError::Reqwest(e) => e.is_timeout(),
            SendError::Pool(e) => {
                let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
                while let Some(c) = cur {
                    if c.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
                    {
                        return true;
                    }
                    cur = c.source();
                }
                false
            }
        }
    }
}

/// A request for the upstream, in the form each connection takes: HTTP/1.1 bytes for our own connections,
/// an `http::Request` for HTTP/2 and reqwest. The forwarder writes its requests' bytes straight from the
/// call and the settings: building a `Request` and its header map first, to encode them at once, was 5 % of a
/// chat request's instructions. Any `Request<Bytes>` is one too.
pub trait Outgoing: Sync {
    /// Absolute (scheme and authority).
    fn uri(&self) -> &http::Uri;
    fn method(&self) -> &http::Method;
    fn to_request(&self) -> http::Request<Bytes>;
    /// The request's bytes on an HTTP/1.1 connection to `target` (see [`h1::Wire`]), into `out`.
    fn encode_h1(&self, target: &h1::Target, out: &mut Vec<u8>);
}

impl Outgoing for http::Request<Bytes> {
    fn uri(&self) -> &http::Uri {
        self.uri()
    }
    fn method(&self) -> &http::Method {
        self.method()
    }
    fn to_request(&self) -> http::Request<Bytes> {
        self.clone()
    }
    fn encode_h1(&self, target: &h1::Target, out: &mut Vec<u8>) {
        h1::encode(self, target, out)
    }
}

/// Settings that shape the direct client (the same as reqwest's defaults where not said otherwise).
#[derive(Debug, Clone, Copy)]
pub struct DirectOptions {
    pub connect_timeout: Duration,
}

impl UpstreamClient {
    /// The direct client: see [`UpstreamClient::via`].
    pub fn direct(opts: DirectOptions) -> Result<UpstreamClient, rustls::Error> {
        Self::via(&Via::Direct, opts)
    }

    /// The client through the proxy at `url` (with any credentials in it); `Ok(None)` for an `https://` proxy,
    /// which needs reqwest.
    pub fn through_proxy(
        url: &str,
        opts: DirectOptions,
    ) -> Result<Option<UpstreamClient>, ViaError> {
        match Via::from_proxy_url(url)? {
            Some(via) => Self::via(&via, opts)
                .map(Some)
                .map_err(|e| ViaError::new(format!("TLS setup: {e}"))),
            None => Ok(None),
        }
    }

    /// Our pool, the way `via` says: TCP_NODELAY, the connect timeout (which also bounds a proxy's handshake),
    /// TCP keep-alive and user timeout as reqwest sets them, idle pooled connections closed after 90 s, https
    /// with the webpki roots (as reqwest's `rustls-tls`) and ALPN h2/http1.1. Redirects are never followed
    /// (this client has no redirect logic at all).
    fn via(via: &Via, opts: DirectOptions) -> Result<UpstreamClient, rustls::Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(opts.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(15)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(3));
        http.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        let https = Connector::from((
            EgressConnector::new(http, via, opts.connect_timeout),
            tls_config()?,
        ));
        Ok(UpstreamClient::Pool(DirectClient::new(
            https,
            via.forwards_plain_http(),
            Duration::from_secs(90),
            1024,
        )))
    }

    /// Sends `req` (absolute URI) and returns the answer once its headers arrived.
    pub async fn send(
        &self,
        req: &impl Outgoing,
    ) -> Result<http::Response<UpstreamBody>, SendError> {
        match self {
            UpstreamClient::Pool(c) => {
                let resp = c.send(req).await?;
                Ok(resp.map(UpstreamBody::Pool))
            }
            // Only an `https://` proxy goes this way: reqwest's code stays out of the forwarder's
            // (`util::cold`).
            UpstreamClient::Reqwest(c) => crate::util::cold(send_reqwest(c, req)).await,
        }
    }
}

async fn send_reqwest(
    c: &reqwest::Client,
    req: &impl Outgoing,
) -> Result<http::Response<UpstreamBody>, SendError> {
    let req = reqwest::Request::try_from(req.to_request())?;
    let resp = c.execute(req).await?;
    Ok(http::Response::from(resp).map(UpstreamBody::Reqwest))
}

/// The TLS client settings every pool shares: the webpki roots (as reqwest's `rustls-tls`), ring, ALPN h2 and
/// http/1.1. Built once: a pool per proxy would otherwise hold a copy each (25 KB a proxy, with its session
/// cache).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c.clone());
    }
    use hyper_rustls::ConfigBuilderExt as _;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_webpki_roots()
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}

/// An answer's body from either client.
pub enum UpstreamBody {
    Pool(PooledBody),
    Reqwest(reqwest::Body),
}

impl UpstreamBody {
    /// The answer's header lines as they came, when our HTTP/1.1 client read it (its `HeaderMap` is then
    /// empty: see `upstream::head`). Once: later calls give `None`.
    pub fn take_raw(&mut self) -> Option<super::head::RawHeaders> {
        match self {
            UpstreamBody::Pool(b) => b.take_raw(),
            UpstreamBody::Reqwest(_) => None,
        }
    }

    /// See [`PooledBody::drives_its_connection`]; reqwest's and HTTP/2 connections have their own tasks.
    pub fn drives_its_connection(&self) -> bool {
        matches!(self, UpstreamBody::Pool(b) if b.drives_its_connection())
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Pool(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Reqwest(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pool(b) => b.is_end_stream(),
            UpstreamBody::Reqwest(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Pool(b) => b.size_hint(),
            UpstreamBody::Reqwest(b) => b.size_hint(),
        }
    }
}
