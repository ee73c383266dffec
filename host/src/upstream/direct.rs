//! The connection pool of one egress: direct, or through one forward proxy (the connector, `egress.rs`, says
//! how a connection is made). HTTP/1.1 connections speak our own lean client (`h1.rs`); an https upstream
//! that offers HTTP/2 through ALPN gets hyper's HTTP/2 client connection.
//!
//! hyper-util's general-purpose client cost an eighth more instructions per chat request for the same job
//! (78.0 k against 68.6 k, `bench/profile.sh chat callgrind`): it hashes the (scheme, authority) key byte by
//! byte with SipHash at every checkout and return, wraps each connection in several layers of futures, and
//! spawns a task per request to put the connection back. A gateway talks to one
//! or two upstream origins, so this pool keeps them in a short list compared by string, and the answer's body
//! puts its HTTP/1 connection back itself when it ends.
//!
//! What it keeps from that client: HTTP/1.1 keep-alive; HTTP/2 when an https upstream offers it (one
//! multiplexed connection per origin); `Host` from the URI and the request line in origin form on HTTP/1;
//! idle connections closed after a timeout; a request whose pooled connection turned out closed before an
//! answer came is sent again on a new connection.
//!
//! An HTTP/1 connection has no task of its own: the request that holds it reads and writes it, in the task of
//! the client's connection (see "Sixth pass" and "Seventh pass" in bench/README.md). HTTP/2 multiplexes many
//! requests on one connection, so its connection keeps a task.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use thiserror::Error;
use tower_service::Service;

use super::client::{BoxError, Outgoing};
use super::egress::EgressConnector;
use super::h1;

pub type Connector = hyper_rustls::HttpsConnector<EgressConnector>;

/// Why a direct request got no answer. Causes (the io error, hyper's) are in `source`.
#[derive(Debug, Error)]
pub enum DirectError {
    #[error("the request URI has no scheme or authority")]
    NotAbsolute,
    #[error("connect error")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("handshake error")]
    Handshake(#[source] hyper::Error),
    #[error("request error")]
    Send(#[source] hyper::Error),
    #[error("request error")]
    H1(#[source] h1::Error),
}

/// The pool of one egress (clones share it).
#[derive(Clone)]
pub struct DirectClient {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    /// `Some(credentials)` when the connector leads to an HTTP forward proxy: plain-http requests then go to
    /// it in absolute form (see `egress.rs`).
    forward: Option<Option<HeaderValue>>,
    origins: Mutex<Vec<Origin>>,
    idle_timeout: Duration,
    max_idle_per_origin: usize,
}

/// The connections to one scheme + authority.
struct Origin {
    https: bool,
    authority: Authority,
    /// An HTTP/1 request's `Host` (see `host_header`) and, through a forward proxy, its absolute form.
    target: h1::Target,
    /// Most recently used last: a checkout takes the warmest connection.
    idle: Vec<Idle>,
    h2: Option<http2::SendRequest<Full<Bytes>>>,
}

struct Idle {
    conn: H1,
    /// `util::monotonic_ms_coarse` when pooled: ages are seconds, and the pool is touched twice a request.
    since_ms: u64,
}

impl Idle {
    /// `now_ms`: one `util::monotonic_ms_coarse` read for every connection looked at.
    fn fresh(&self, now_ms: u64, idle_timeout: Duration) -> bool {
        now_ms.saturating_sub(self.since_ms) < idle_timeout.as_millis() as u64
    }
}

enum Conn {
    H1(H1),
    H2(http2::SendRequest<Full<Bytes>>),
}

type H1Io = TokioIo<<Connector as Service<Uri>>::Response>;
/// Boxed: a TLS connection's state is large, and it moves between the pool and the answer's body.
type H1 = Box<h1::Conn<H1Io>>;

impl DirectClient {
    /// `forward`: see [`super::egress::Via::forwards_plain_http`] (`None` for a direct connector).
    pub fn new(
        connector: Connector,
        forward: Option<Option<HeaderValue>>,
        idle_timeout: Duration,
        max_idle_per_origin: usize,
    ) -> Self {
        let inner = Arc::new(Inner {
            connector,
            forward,
            origins: Mutex::new(Vec::new()),
            idle_timeout,
            max_idle_per_origin,
        });
        // A checkout drops the expired connections it meets; this closes those of an origin that gets no
        // more traffic. It holds the pool weakly, so it ends with it.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap(Arc::downgrade(&inner)));
        }
        DirectClient { inner }
    }

    /// Sends `req` (absolute URI) and returns the answer once its headers arrived. On HTTP/2 it becomes an
    /// `http::Request` each time it goes out; on HTTP/1.1, bytes.
    pub async fn send(&self, req: &impl Outgoing) -> Result<Response<PooledBody>, DirectError> {
        let (https, authority) = match (req.uri().scheme(), req.uri().authority()) {
            (Some(s), Some(a)) => (*s == Scheme::HTTPS, a.clone()),
            _ => return Err(DirectError::NotAbsolute),
        };
        // Set once a pooled connection failed as one the upstream had closed: the pool's other idle
        // connections may be as stale (an upstream restart closes them all), so the next try connects anew.
        let mut fresh_only = false;
        loop {
            let (pooled, target) = self.inner.checkout(https, &authority, !fresh_only);
            let reused = pooled.is_some();
            let conn = match pooled {
                Some(c) => c,
                // Boxed: the connect future is kilobytes, and inline it would make every request's future
                // (moved several times on its way) that large.
                None => Box::pin(self.connect(https, &authority)).await?,
            };
            match conn {
                // hyper's HTTP/2 code stays out of the forwarder's, where this function is inlined
                // (`util::cold`); an HTTP/2 request pays far more for TLS and framing than the allocation.
                Conn::H2(c) => {
                    match crate::util::cold(self.send_h2(c, req, https, &authority, reused)).await {
                        Ok(Some(resp)) => return Ok(resp),
                        Ok(None) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Conn::H1(mut c) => {
                    // A close (or stray bytes) that arrived while it sat idle: no request goes onto it.
                    if reused && !c.usable() {
                        continue;
                    }
                    let head_only = *req.method() == Method::HEAD;
                    match c.send(|out| req.encode_h1(&target, out), head_only).await {
                        Ok(resp) => {
                            let back = Back {
                                pool: Arc::downgrade(&self.inner),
                                https,
                                authority,
                            };
                            let mut resp = resp.map(|body| {
                                PooledBody(Kind::H1 {
                                    body: Some(body),
                                    back: Some(back),
                                })
                            });
                            if resp.body().is_end_stream() {
                                resp.body_mut().give_back();
                            }
                            return Ok(resp);
                        }
                        // The upstream closed a pooled connection without a byte of answer: it had closed it
                        // while idle as we took it. The request went nowhere, so it goes out once more on a
                        // new connection (Go's net/http does the same on a reused connection). Any other
                        // failure is the answer.
                        Err(h1::Error::Unanswered(_)) if reused && !fresh_only => fresh_only = true,
                        Err(e) => return Err(DirectError::H1(e)),
                    }
                }
            }
        }
    }

    /// `req` on an HTTP/2 connection; `None` when a pooled connection turned out closed before the request
    /// went out (the caller tries another way).
    async fn send_h2(
        &self,
        mut c: http2::SendRequest<Full<Bytes>>,
        req: &impl Outgoing,
        https: bool,
        authority: &Authority,
        reused: bool,
    ) -> Result<Option<Response<PooledBody>>, DirectError> {
        // Closed since it was pooled: nothing was sent, try another way.
        if let Err(e) = c.ready().await {
            self.inner
                .with_origin(https, authority, Origin::forget_closed_h2);
            if reused {
                return Ok(None);
            }
            return Err(DirectError::Send(e));
        }
        let r = req.to_request().map(Full::new);
        match c.try_send_request(r).await {
            Ok(resp) => Ok(Some(resp.map(|b| PooledBody(Kind::H2(b))))),
            // Not sent: the connection closed as it was taken.
            Err(mut e) => {
                if reused && e.take_message().is_some() {
                    return Ok(None);
                }
                Err(DirectError::Send(e.into_error()))
            }
        }
    }

    async fn connect(&self, https: bool, authority: &Authority) -> Result<Conn, DirectError> {
        let uri = Uri::builder()
            .scheme(if https { Scheme::HTTPS } else { Scheme::HTTP })
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| DirectError::NotAbsolute)?;
        let mut connector = self.inner.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(DirectError::Connect)?;
        let io = connector.call(uri).await.map_err(DirectError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(DirectError::Handshake)?;
            // The connection's end shows in its senders (`is_closed`); nothing else waits for it.
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let pooled = send.clone();
            self.inner
                .with_origin(https, authority, |o| o.h2 = Some(pooled));
            Ok(Conn::H2(send))
        } else {
            Ok(Conn::H1(Box::new(h1::Conn::new(TokioIo::new(io)))))
        }
    }

    /// Idle HTTP/1 connections and open HTTP/2 connections, over all origins (tests, diagnostics).
    pub fn pooled(&self) -> usize {
        self.inner
            .origins()
            .iter()
            .map(|o| o.idle.len() + usize::from(o.h2.is_some()))
            .sum()
    }
}

impl Inner {
    fn origins(&self) -> std::sync::MutexGuard<'_, Vec<Origin>> {
        // Nothing under this lock can panic half-way through a change; a poisoned lock still holds a list.
        self.origins.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pooled connection not yet timed out, if any, and how the origin's HTTP/1 requests are written.
    fn checkout(
        &self,
        https: bool,
        authority: &Authority,
        take: bool,
    ) -> (Option<Conn>, h1::Target) {
        let mut origins = self.origins();
        let o = match find(&mut origins, https, authority) {
            Some(i) => &mut origins[i],
            None => {
                let target = self.target(https, authority);
                origins.push(Origin {
                    https,
                    authority: authority.clone(),
                    target: target.clone(),
                    idle: Vec::new(),
                    h2: None,
                });
                return (None, target);
            }
        };
        if !take {
            return (None, o.target.clone());
        }
        o.forget_closed_h2();
        if let Some(h2) = &o.h2 {
            return (Some(Conn::H2(h2.clone())), o.target.clone());
        }
        // A connection the upstream closed while idle shows at the caller's `usable` (outside this lock).
        let now_ms = crate::util::monotonic_ms_coarse();
        while let Some(idle) = o.idle.pop() {
            if idle.fresh(now_ms, self.idle_timeout) {
                return (Some(Conn::H1(idle.conn)), o.target.clone());
            }
        }
        (None, o.target.clone())
    }

    fn target(&self, https: bool, authority: &Authority) -> h1::Target {
        let host = host_header(https, authority);
        // An https origin is reached through a tunnel, where requests are in origin form as on any connection.
        let forward = match &self.forward {
            Some(auth) if !https => {
                let origin = [b"http://", host.as_bytes()].concat();
                Some((Bytes::from(origin), auth.clone()))
            }
            _ => None,
        };
        h1::Target { host, forward }
    }

    /// Runs `f` on the origin's entry, if it has one (a checkout makes it).
    fn with_origin(&self, https: bool, authority: &Authority, f: impl FnOnce(&mut Origin)) {
        let mut origins = self.origins();
        if let Some(i) = find(&mut origins, https, authority) {
            f(&mut origins[i]);
        }
    }

    fn give_back(&self, https: bool, authority: &Authority, conn: H1) {
        self.with_origin(https, authority, |o| {
            if o.idle.len() < self.max_idle_per_origin {
                o.idle.push(Idle {
                    conn,
                    since_ms: crate::util::monotonic_ms_coarse(),
                });
            }
        });
    }

    fn reap(&self) {
        let now_ms = crate::util::monotonic_ms_coarse();
        for o in self.origins().iter_mut() {
            o.idle
                .retain_mut(|i| i.fresh(now_ms, self.idle_timeout) && i.conn.usable());
            o.forget_closed_h2();
        }
    }
}

impl Origin {
    /// Only a closed one: another request may have connected a new one meanwhile.
    fn forget_closed_h2(&mut self) {
        if self.h2.as_ref().is_some_and(|h| h.is_closed()) {
            self.h2 = None;
        }
    }
}

/// `Host` for an HTTP/1 request: host and port, the port left out when it is the scheme's default, and never
/// the URI's `user:password@` part (as hyper-util's client set it).
fn host_header(https: bool, authority: &Authority) -> HeaderValue {
    let default_port = if https { 443 } else { 80 };
    let host = match authority.port_u16() {
        Some(p) if p != default_port => format!("{}:{p}", authority.host()),
        _ => authority.host().to_string(),
    };
    HeaderValue::from_str(&host).expect("a URI's host and port are a valid header value")
}

fn find(origins: &mut [Origin], https: bool, authority: &Authority) -> Option<usize> {
    origins
        .iter()
        .position(|o| o.https == https && o.authority.as_str() == authority.as_str())
}

async fn reap(pool: Weak<Inner>) {
    let every = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 3).max(Duration::from_secs(1)),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(p) => p.reap(),
            None => return,
        }
    }
}

/// Where an HTTP/1 connection goes back to once its answer is read to the end.
struct Back {
    pool: Weak<Inner>,
    https: bool,
    authority: Authority,
}

/// An answer's body. Read to its end, it puts its HTTP/1 connection back into the pool; dropped before, or
/// failed, the connection closes with it (a connection with half an answer on it cannot take another).
pub struct PooledBody(Kind);

enum Kind {
    /// `body` is `None` once ended and its connection given back.
    H1 {
        body: Option<h1::Body<H1Io>>,
        back: Option<Back>,
    },
    H2(Incoming),
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Kind::H1 { .. } => "PooledBody::H1",
            Kind::H2(_) => "PooledBody::H2",
        })
    }
}

impl PooledBody {
    /// The answer's raw header lines, from an HTTP/1 connection (see [`h1::Body::take_raw`]).
    pub fn take_raw(&mut self) -> Option<crate::upstream::head::RawHeaders> {
        match &mut self.0 {
            Kind::H1 { body: Some(b), .. } => b.take_raw(),
            _ => None,
        }
    }

    /// Whether reading this body reads its connection in the reader's task (HTTP/1): then a chunk already
    /// received is decoded as soon as the body is polled, with no other task to wait for.
    pub fn drives_its_connection(&self) -> bool {
        matches!(self.0, Kind::H1 { .. })
    }

    /// At the body's end: its connection goes back to the pool if it can take another request.
    fn give_back(&mut self) {
        if let Kind::H1 { body, back } = &mut self.0 {
            let conn = body.take().and_then(h1::Body::into_conn);
            if let (Some(conn), Some(back)) = (conn, back.take()) {
                if let Some(pool) = back.pool.upgrade() {
                    pool.give_back(back.https, &back.authority, conn);
                }
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match &mut this.0 {
            Kind::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Kind::H1 { body: None, .. } => Poll::Ready(None),
            Kind::H1 { body: Some(b), .. } => match b.poll_data(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    if b.is_end_stream() {
                        this.give_back();
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Poll::Ready(None) => {
                    this.give_back();
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(e))) => {
                    this.0 = Kind::H1 {
                        body: None,
                        back: None,
                    };
                    Poll::Ready(Some(Err(Box::new(e))))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::H2(b) => b.is_end_stream(),
            Kind::H1 { body: None, .. } => true,
            Kind::H1 { body: Some(b), .. } => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::H2(b) => b.size_hint(),
            Kind::H1 { body: None, .. } => SizeHint::with_exact(0),
            Kind::H1 { body: Some(b), .. } => match b.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::egress::Via;
    use http::Request;
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::connect::HttpConnector;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A bare HTTP/1.1 server that counts its connections. Each answer is `hello` (5 bytes, or `chunks`
    /// chunked pieces with a pause between them); `close_after` closes the connection after every answer
    /// without saying so, as an upstream that drops idle keep-alive connections does.
    async fn server(close_after: bool, chunks: usize) -> (String, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    loop {
                        // One request: headers, then Content-Length bytes of body.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match s.read(&mut tmp).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        assert!(
                            head.starts_with("post /v1/chat ") || head.starts_with("get /v1/chat "),
                            "{head}"
                        );
                        assert!(head.contains(&format!("host: {addr}")), "{head}");
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            match s.read(&mut tmp).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        }
                        buf.drain(..head_end + len);
                        if chunks == 0 {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                                .await;
                        } else {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                                .await;
                            for _ in 0..chunks {
                                if s.write_all(b"1\r\nx\r\n").await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            let _ = s.write_all(b"0\r\n\r\n").await;
                        }
                        if close_after {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/v1/chat"), accepted)
    }

    fn client(idle: Duration) -> DirectClient {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .unwrap()
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(plain_connector());
        DirectClient::new(https, None, idle, 16)
    }

    fn plain_connector() -> EgressConnector {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        EgressConnector::new(http, &Via::Direct, Duration::from_secs(5))
    }

    fn post(url: &str) -> Request<Bytes> {
        Request::post(url)
            .body(Bytes::from_static(b"{\"a\":1}"))
            .unwrap()
    }

    async fn call(c: &DirectClient, url: &str) -> Bytes {
        let resp = c.send(&post(url)).await.expect("answer");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    /// A TLS upstream on loopback offering `alpn`, with a self-signed certificate made by openssl (as
    /// tests/core.rs makes one). It answers each request with the HTTP version it arrived in and counts its
    /// connections. Returns the base URL, the count and a connector that trusts the certificate and offers
    /// h2 and http/1.1, as the gateway's does.
    async fn tls_server(alpn: &[&[u8]]) -> (String, Arc<AtomicUsize>, Connector) {
        let (url, accepted, tls) = tls_upstream(alpn).await;
        (url, accepted, tls_connector(tls, &Via::Direct))
    }

    fn tls_connector(tls: rustls::ClientConfig, via: &Via) -> Connector {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(EgressConnector::new(http, via, Duration::from_secs(5)))
    }

    /// [`tls_server`]'s upstream, with the client TLS configuration that trusts it.
    async fn tls_upstream(alpn: &[&[u8]]) -> (String, Arc<AtomicUsize>, rustls::ClientConfig) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
        let ok = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost"])
            // A leaf, not a CA: webpki refuses a CA certificate as the server's own.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (Debian package openssl)");
        assert!(ok.success());
        let cert = CertificateDer::from_pem_file(&cert).unwrap();
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = l.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let tls = acceptor.accept(tcp).await.unwrap();
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let v = format!("{:?}", req.version());
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(v))))
                    });
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (format!("https://localhost:{port}/v1/chat"), accepted, tls)
    }

    /// A real forward proxy on a free port asking for `user:password`, as tests/support/proxies.rs starts
    /// them: `tinyproxy` (Debian `tinyproxy-bin`) for HTTP, `microsocks` for SOCKS5. `None` (the test skips)
    /// when it is not installed, unless every test must run.
    fn forward_proxy(socks: bool, user: &str, password: &str) -> Option<ForwardProxy> {
        let name = if socks { "microsocks" } else { "tinyproxy" };
        let bin = [format!("/usr/bin/{name}"), format!("/usr/sbin/{name}")]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file());
        let Some(bin) = bin else {
            assert!(
                std::env::var("GROK2API_REQUIRE_ALL").as_deref() != Ok("1"),
                "{name} not installed (apt-get install tinyproxy-bin microsocks)"
            );
            eprintln!("skipping: {name} not installed");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(bin);
        if socks {
            cmd.args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-u",
                user,
                "-P",
                password,
            ]);
        } else {
            let conf = dir.path().join("tinyproxy.conf");
            std::fs::write(
                &conf,
                format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogLevel Error\nBasicAuth {user} {password}\n"
                ),
            )
            .unwrap();
            cmd.arg("-d").arg("-c").arg(&conf);
        }
        let proxy = ForwardProxy {
            _dir: dir,
            port,
            child: cmd
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        };
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(proxy);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{name} did not listen on {port}");
    }

    struct ForwardProxy {
        _dir: tempfile::TempDir,
        child: std::process::Child,
        port: u16,
    }

    impl Drop for ForwardProxy {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Through the proxy at `good`, an https upstream offering h2 speaks TLS and HTTP/2 with us end to end (the
    /// proxy only relays): five requests, one upstream connection. Through `wrong` (bad credentials) the
    /// request fails with `refusal` in its error chain, no password in it, and the upstream sees nothing.
    async fn h2_through_the_proxy_and_refused_without_its_credentials(
        good: &str,
        wrong: &str,
        refusal: &str,
    ) {
        let (url, accepted, tls) = tls_upstream(&[b"h2", b"http/1.1"]).await;
        let client = |proxy_url: &str, tls: rustls::ClientConfig| {
            let via = Via::from_proxy_url(proxy_url).unwrap().unwrap();
            DirectClient::new(
                tls_connector(tls, &via),
                via.forwards_plain_http(),
                Duration::from_secs(90),
                16,
            )
        };
        let c = client(good, tls.clone());
        assert_eq!(call(&c, &url).await, "HTTP/2.0");
        let answers = futures_util::future::join_all((0..4).map(|_| call(&c, &url))).await;
        assert!(answers.iter().all(|a| a == "HTTP/2.0"), "{answers:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        let c = client(wrong, tls);
        let e = c.send(&post(&url)).await.expect_err("refused by the proxy");
        let chain = crate::upstream::error_chain(&e);
        assert!(chain.contains(refusal), "{chain}");
        assert!(!chain.contains("nope"), "{chain}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_https_upstream_through_an_http_proxy_is_reached_through_a_tunnel() {
        let Some(proxy) = forward_proxy(false, "alice", "s3cret") else {
            return;
        };
        // tinyproxy refuses bad credentials with 401 (not 407); the error says so.
        h2_through_the_proxy_and_refused_without_its_credentials(
            &format!("http://alice:s3cret@127.0.0.1:{}", proxy.port),
            &format!("http://alice:nope@127.0.0.1:{}", proxy.port),
            "the proxy refused the tunnel: 401 Unauthorized",
        )
        .await;
    }

    #[tokio::test]
    async fn an_https_upstream_through_socks5_speaks_tls_and_h2_end_to_end() {
        let Some(proxy) = forward_proxy(true, "bob", "pw123") else {
            return;
        };
        // socks5h: the proxy resolves `localhost`.
        h2_through_the_proxy_and_refused_without_its_credentials(
            &format!("socks5h://bob:pw123@127.0.0.1:{}", proxy.port),
            &format!("socks5h://bob:nope@127.0.0.1:{}", proxy.port),
            "SOCKS error",
        )
        .await;
    }

    #[tokio::test]
    async fn an_https_upstream_offering_h2_gets_one_multiplexed_connection() {
        let (url, accepted, connector) = tls_server(&[b"h2", b"http/1.1"]).await;
        let c = DirectClient::new(connector, None, Duration::from_secs(90), 16);
        let first = call(&c, &url).await;
        assert_eq!(first, "HTTP/2.0");
        let answers = futures_util::future::join_all((0..8).map(|_| call(&c, &url))).await;
        assert!(answers.iter().all(|a| a == "HTTP/2.0"), "{answers:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(c.pooled(), 1);
    }

    #[tokio::test]
    async fn an_https_upstream_without_h2_gets_pooled_http1() {
        let (url, accepted, connector) = tls_server(&[b"http/1.1"]).await;
        let c = DirectClient::new(connector, None, Duration::from_secs(90), 16);
        for _ in 0..3 {
            assert_eq!(call(&c, &url).await, "HTTP/1.1");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Two at once need two connections, and both stay pooled.
        let answers = futures_util::future::join_all((0..2).map(|_| call(&c, &url))).await;
        assert!(answers.iter().all(|a| a == "HTTP/1.1"), "{answers:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(c.pooled(), 2);
    }

    #[tokio::test]
    async fn answers_read_to_the_end_reuse_one_connection() {
        let (url, accepted) = server(false, 0).await;
        let c = client(Duration::from_secs(90));
        for _ in 0..5 {
            assert_eq!(call(&c, &url).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(c.pooled(), 1);
        // A chunked answer too.
        let (url, accepted) = server(false, 3).await;
        for _ in 0..3 {
            assert_eq!(call(&c, &url).await, "xxx");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_a_failed_request() {
        let (url, accepted) = server(true, 0).await;
        let c = client(Duration::from_secs(90));
        for _ in 0..5 {
            assert_eq!(call(&c, &url).await, "hello");
            // Give the closed connection's task time to see the end or not: both orders must work.
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    /// The race the retry is for: the upstream closes an idle connection, and the next request takes it from
    /// the pool before its task has seen the close. A blocking server thread closes each connection 20 ms after
    /// its answer; the test blocks the runtime meanwhile, so the connection still looks open at checkout.
    #[tokio::test]
    async fn a_request_on_a_connection_closed_unseen_goes_out_on_a_new_one() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/chat", l.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                // Headers and the 7-byte body of `post`.
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") || !buf.ends_with(b"{\"a\":1}") {
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let c = client(Duration::from_secs(90));
        for _ in 0..3 {
            assert_eq!(call(&c, &url).await, "hello");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// A raw TCP upstream that runs `script` on each connection it accepts, and counts them.
    async fn scripted<F, Fut>(script: F) -> (String, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/chat", l.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(script(s));
            }
        });
        (url, accepted)
    }

    /// An interim `100 Continue` is an answer: a pooled connection closed after it is not "closed while idle",
    /// so the request is not sent again.
    #[tokio::test]
    async fn a_close_after_an_interim_answer_is_not_resent() {
        let (url, accepted) = scripted(|mut s| async move {
            let mut tmp = [0u8; 4096];
            // The first request is answered in full, the second gets only an interim answer.
            if s.read(&mut tmp).await.unwrap_or(0) == 0 {
                return;
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                .await;
            if s.read(&mut tmp).await.unwrap_or(0) == 0 {
                return;
            }
            let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        })
        .await;
        let c = client(Duration::from_secs(90));
        assert_eq!(call(&c, &url).await, "hello");
        let e = c.send(&post(&url)).await.unwrap_err();
        assert!(matches!(&e, DirectError::H1(h1::Error::HeadCut)), "{e:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_upstream_that_hangs_up_unanswered_fails_the_request_once() {
        // Reads the request, then closes without a byte.
        let (url, accepted) = scripted(|mut s| async move {
            let _ = s.read(&mut [0u8; 4096]).await;
        })
        .await;
        let c = client(Duration::from_secs(90));
        let e = c.send(&post(&url)).await.unwrap_err();
        assert!(
            matches!(&e, DirectError::H1(h1::Error::Unanswered(None))),
            "{e:?}"
        );
        // A new connection's failure is not retried: the request may have reached the upstream.
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_dropped_half_way_takes_its_connection_with_it() {
        let (url, accepted) = server(false, 5).await;
        let c = client(Duration::from_secs(90));
        let resp = c.send(&post(&url)).await.unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "x");
        drop(body);
        assert_eq!(c.pooled(), 0);
        assert_eq!(call(&c, &url).await, "xxxxx");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(c.pooled(), 1);
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout() {
        let (url, accepted) = server(false, 0).await;
        let c = client(Duration::from_millis(1000));
        call(&c, &url).await;
        assert_eq!(c.pooled(), 1);
        // The reaper runs every second at the least; two seconds leave it time to run after expiry.
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert_eq!(c.pooled(), 0, "the reaper left an expired connection");
        call(&c, &url).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// An idle HTTP/1 connection has no task reading it: the reaper must read the upstream's close itself,
    /// or a closed connection would sit in the pool (and its socket in CLOSE_WAIT) until the next checkout.
    #[tokio::test]
    async fn the_reaper_drops_connections_the_upstream_closed_while_idle() {
        // Answers one request, then closes the connection 50 ms later: after the answer was read and the
        // connection pooled.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/chat", l.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await; // the small request arrives in one piece
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        let c = client(Duration::from_secs(90));
        call(&c, &url).await;
        assert_eq!(c.pooled(), 1);
        let mut left = 1;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            c.inner.reap();
            left = c.pooled();
            if left == 0 {
                break;
            }
        }
        assert_eq!(left, 0, "a connection the upstream closed stayed pooled");
    }

    #[test]
    fn host_header_has_no_credentials_and_no_default_port() {
        let a = |s: &str| s.parse::<Authority>().unwrap();
        assert_eq!(
            host_header(true, &a("u:secret@api.example:443")),
            "api.example"
        );
        assert_eq!(host_header(false, &a("127.0.0.1:8080")), "127.0.0.1:8080");
        assert_eq!(host_header(false, &a("example:80")), "example");
        assert_eq!(host_header(true, &a("example:80")), "example:80");
        assert_eq!(host_header(true, &a("[::1]:8443")), "[::1]:8443");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error_with_its_cause() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = client(Duration::from_secs(90));
        let e = c
            .send(&post(&format!("http://127.0.0.1:{port}/v1/chat")))
            .await
            .unwrap_err();
        assert!(matches!(e, DirectError::Connect(_)), "{e:?}");
        let chain = crate::upstream::error_chain(&e).to_lowercase();
        assert!(chain.contains("connection refused"), "{chain}");
        assert!(matches!(
            c.send(&Request::new(Bytes::new())).await,
            Err(DirectError::NotAbsolute)
        ));
    }
}
