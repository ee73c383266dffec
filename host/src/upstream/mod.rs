//! Forwarding to the upstream: pick a token, pick an egress, send, retry on another token before anything was
//! sent to the client, and pass the answer back (streams chunk by chunk, under three timeouts).

mod body;
mod client;
mod direct;
mod egress;
mod h1;
pub mod head;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{HeaderValue, Method, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use thiserror::Error;

use crate::calllog::{CallLog, CallRecord};
use crate::config::{AuthHeader, Settings};
use crate::proxy::{ProxyEntry, ProxyPool, RequestInfo};
use crate::tokens::{Outcome, TokenPool};

pub use body::TimedBody;
pub use client::{DirectOptions, Outgoing, SendError, UpstreamBody, UpstreamClient};
#[doc(hidden)]
pub use h1::read_answer_in_steps;
pub use head::Reply;

#[derive(Debug, Error)]
pub enum ForwardError {
    #[error("no usable token for model `{model}`")]
    NoToken {
        model: String,
        retry_after_ms: Option<i64>,
    },
    #[error("upstream rate limited every token tried")]
    RateLimited { retry_after: Option<HeaderValue> },
    #[error("upstream answered {status}: {message}")]
    Upstream { status: u16, message: String },
    #[error("upstream unreachable: {0}")]
    Connect(String),
    #[error("upstream did not answer in time ({0})")]
    Timeout(&'static str),
    #[error("invalid credential for the upstream header")]
    BadCredential,
    #[error("the upstream answer is larger than {limit} bytes (global.max_upstream_body_bytes)")]
    AnswerTooLarge { limit: usize },
    #[error("{0}")]
    NoEgress(#[from] crate::proxy::NoEgress),
}

impl ForwardError {
    /// HTTP status, OpenAI error type and code for the client.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ForwardError::NoToken { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "no_available_token",
            ),
            ForwardError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "upstream_rate_limited",
            ),
            ForwardError::Upstream { .. } => {
                (StatusCode::BAD_GATEWAY, "api_error", "upstream_error")
            }
            ForwardError::Connect(_) => {
                (StatusCode::BAD_GATEWAY, "api_error", "upstream_unreachable")
            }
            ForwardError::Timeout(_) => {
                (StatusCode::GATEWAY_TIMEOUT, "api_error", "upstream_timeout")
            }
            ForwardError::AnswerTooLarge { .. } => (
                StatusCode::BAD_GATEWAY,
                "api_error",
                "upstream_answer_too_large",
            ),
            ForwardError::BadCredential => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "bad_credential",
            ),
            ForwardError::NoEgress(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "no_available_proxy",
            ),
        }
    }

    /// The status the upstream last answered, when the failure came from an answer.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            ForwardError::Upstream { status, .. } => Some(*status),
            ForwardError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// A `Retry-After` value for the client, when there is one to give.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        match self {
            ForwardError::NoToken {
                retry_after_ms: Some(ms),
                ..
            } => HeaderValue::from_str(&((ms + 999) / 1000).max(1).to_string()).ok(),
            ForwardError::RateLimited { retry_after } => retry_after.clone(),
            _ => None,
        }
    }
}

/// One call to forward. Its model is the record's (`CallRecord::model`).
pub struct UpstreamRequest {
    pub method: Method,
    /// Path under the base URL, e.g. `/chat/completions`.
    pub path: Cow<'static, str>,
    pub body: Option<Bytes>,
    pub stream: bool,
    pub accept: Option<HeaderValue>,
}

/// What the forwarder reads from the settings, rebuilt when they change.
pub struct UpstreamConfig {
    pub settings: Arc<Settings>,
    pub auth: AuthHeader,
    pub base_url: String,
    /// URIs of the routes every request uses, parsed once (parsing per request shows in profiles).
    common: Vec<(&'static str, http::Uri)>,
    /// `grok`'s timeouts as durations, converted once: from seconds as `f64` it was about 100 instructions a
    /// request.
    timeouts: Timeouts,
}

struct Timeouts {
    first_response: Duration,
    chunk: Duration,
    total: Option<Duration>,
}

const COMMON_PATHS: &[&str] = &["/chat/completions", "/images/generations", "/models"];

impl UpstreamConfig {
    pub fn new(settings: Arc<Settings>) -> Result<UpstreamConfig, String> {
        let auth = AuthHeader::parse(&settings.grok.auth_header)?;
        let base_url = settings.grok.base_url_trimmed().to_string();
        let common = COMMON_PATHS
            .iter()
            .map(|p| {
                parse_uri(&format!("{base_url}{p}"))
                    .map(|u| (*p, u))
                    .map_err(|e| format!("grok.base_url: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let grok = &settings.grok;
        let timeouts = Timeouts {
            first_response: grok.first_response_timeout(),
            chunk: grok.chunk_timeout(),
            total: grok.total_timeout(),
        };
        Ok(UpstreamConfig {
            settings,
            auth,
            base_url,
            common,
            timeouts,
        })
    }

    pub fn uri(&self, path: &str) -> Result<Cow<'_, http::Uri>, String> {
        match self.common.iter().find(|(p, _)| *p == path) {
            Some((_, u)) => Ok(Cow::Borrowed(u)),
            None => parse_uri(&format!("{}{path}", self.base_url)).map(Cow::Owned),
        }
    }

    /// An upstream request with the credential and our fixed headers; `accept` defaults to `*/*` (what reqwest
    /// sent).
    fn request(
        &self,
        method: Method,
        uri: http::Uri,
        auth: HeaderValue,
        accept: Option<&HeaderValue>,
        body: Option<&Bytes>,
    ) -> http::Request<Bytes> {
        let mut r = http::Request::new(body.cloned().unwrap_or_default());
        *r.method_mut() = method;
        *r.uri_mut() = uri;
        let h = r.headers_mut();
        h.append(self.auth.name.clone(), auth);
        h.append(
            http::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        h.append(
            http::header::ACCEPT,
            accept
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("*/*")),
        );
        if body.is_some() {
            h.append(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        r
    }
}

/// One attempt's request: what [`UpstreamConfig::request`] builds, which HTTP/1.1 connections get written
/// straight from these parts.
struct Outbound<'a> {
    cfg: &'a UpstreamConfig,
    method: &'a Method,
    uri: &'a http::Uri,
    /// The token's secret, which fits the credential header ([`Token::header_safe`](crate::tokens::Token::header_safe)).
    secret: &'a str,
    accept: Option<&'a HeaderValue>,
    body: Option<&'a Bytes>,
}

const USER_AGENT: &str = concat!("grok2api/", env!("CARGO_PKG_VERSION"));

impl Outgoing for Outbound<'_> {
    fn uri(&self) -> &http::Uri {
        self.uri
    }
    fn method(&self) -> &Method {
        self.method
    }
    fn to_request(&self) -> http::Request<Bytes> {
        // `fits` was checked before the request was made, so the value builds.
        let auth = self
            .cfg
            .auth
            .value(self.secret)
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        self.cfg.request(
            self.method.clone(),
            self.uri.clone(),
            auth,
            self.accept,
            self.body,
        )
    }
    /// The same bytes as `to_request`'s, headers in the same order.
    fn encode_h1(&self, target: &h1::Target, out: &mut Vec<u8>) {
        let body = self.body.map_or(&[][..], |b| &b[..]);
        let pq = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut w = h1::Wire::start(out, self.method, pq, target, true, body.len());
        w.header_with(self.cfg.auth.name.as_str().as_bytes(), |out| {
            self.cfg.auth.write_value(self.secret, out)
        });
        w.header(b"user-agent", USER_AGENT.as_bytes());
        w.header(b"accept", self.accept.map_or(&b"*/*"[..], |a| a.as_bytes()));
        if self.body.is_some() {
            w.header(b"content-type", b"application/json");
        }
        w.finish(self.method, body)
    }
}

/// An absolute http(s) URI, as the direct client needs it.
fn parse_uri(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("grok.base_url: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(format!(
            "grok.base_url: `{s}` is not an absolute http(s) URL"
        )),
    }
}

pub struct Forwarder {
    config: ArcSwap<UpstreamConfig>,
    tokens: Arc<TokenPool>,
    proxies: Arc<ProxyPool>,
    calllog: CallLog,
}

/// An upstream answer taken apart: its head, its raw header lines (our HTTP/1.1 client's answers; see
/// `head`), its body.
struct Upstream {
    parts: http::response::Parts,
    raw: Option<head::RawHeaders>,
    body: UpstreamBody,
}

/// Why an attempt failed, and whether another token may do better.
enum AttemptError {
    Retryable { reason: String, last: ForwardError },
    Final(ForwardError),
}

/// Upstream statuses that blame the egress: 403 (a Cloudflare block marks the exit IP) and 407 (the proxy
/// refused our credentials).
fn blames_proxy(status: u16) -> bool {
    matches!(status, 403 | 407)
}

impl Forwarder {
    pub fn new(
        config: UpstreamConfig,
        tokens: Arc<TokenPool>,
        proxies: Arc<ProxyPool>,
        calllog: CallLog,
    ) -> Forwarder {
        Forwarder {
            config: ArcSwap::from_pointee(config),
            tokens,
            proxies,
            calllog,
        }
    }

    /// Finishes the record of a call that failed before any answer reached the client.
    pub fn finish_failed(&self, record: Box<CallRecord>) {
        self.calllog.finish(record);
    }

    pub fn tokens(&self) -> &Arc<TokenPool> {
        &self.tokens
    }

    pub fn proxies(&self) -> &Arc<ProxyPool> {
        &self.proxies
    }

    pub fn config(&self) -> arc_swap::Guard<Arc<UpstreamConfig>> {
        self.config.load()
    }

    /// Swaps in settings that changed at run time; requests already forwarding finish on the old ones.
    pub fn set_config(&self, config: UpstreamConfig) {
        self.config.store(Arc::new(config));
    }

    /// Forwards `req`, retrying on another token for retryable failures until `max_retries` is spent.
    /// The record is finished here for failures and buffered answers, or by the body when streaming.
    pub async fn forward(
        &self,
        req: UpstreamRequest,
        mut record: Box<CallRecord>,
    ) -> Result<Reply, (ForwardError, Box<CallRecord>)> {
        let cfg = self.config.load_full();
        let grok = &cfg.settings.grok;
        let is_super = grok.is_super_model(&record.model);
        let uri = match cfg.uri(&req.path) {
            Ok(u) => u,
            Err(e) => {
                let err = ForwardError::Connect(format!("cannot build the upstream URL: {e}"));
                return Err((err, record));
            }
        };
        let mut tried: Vec<String> = Vec::new();
        // Proxies that failed this request: later attempts go another way.
        let mut failed_proxies: Vec<Arc<ProxyEntry>> = Vec::new();
        let mut last_error: Option<ForwardError> = None;

        for _attempt in 0..=grok.max_retries {
            let Some(lease) = self.tokens.pick(is_super, &tried) else {
                break;
            };
            let token = lease.token().clone();
            let info = RequestInfo {
                token_id: &token.id,
                model: &record.model,
                route: record.route,
                stream: req.stream,
            };
            let (id, masked) = token.record_labels();
            record.token_id = Some(id);
            record.token_masked = Some(masked);
            let egress = match self.proxies.egress(&info, &failed_proxies).await {
                Ok(e) => e,
                Err(e) => {
                    // Never fall back to a direct connection the operator did not allow.
                    record.proxy = None;
                    last_error = Some(e.into());
                    break;
                }
            };
            record.proxy = egress.proxy.as_deref().map(str::to_string);

            let secret = token.secret().expose();
            if !token.header_safe() {
                // A secret with bytes a header cannot carry: this token can never work.
                lease.report(Outcome::AuthFailed {
                    status: 0,
                    message: "credential has characters invalid in a header".into(),
                });
                tried.push(token.id.clone());
                record
                    .retries
                    .push(format!("{}: invalid credential", token.id));
                last_error = Some(ForwardError::BadCredential);
                continue;
            }
            let upstream_req = Outbound {
                cfg: &cfg,
                method: &req.method,
                uri: &uri,
                secret,
                accept: req.accept.as_ref(),
                body: req.body.as_ref(),
            };

            // Headers must arrive within the first-response timeout for streams; a non-streamed answer only
            // comes when it is complete, so it gets the total timeout.
            let header_wait = if req.stream {
                cfg.timeouts.first_response
            } else {
                cfg.timeouts.total.unwrap_or(Duration::from_secs(24 * 3600))
            };
            let sent_at = Instant::now();
            let result = tokio::time::timeout_at(
                tokio::time::Instant::from_std(sent_at) + header_wait,
                egress.client.send(&upstream_req),
            )
            .await;
            // One clock read for every use below: reads showed as 3 % of a chat request's CPU time.
            let answered_at = Instant::now();
            let waited = answered_at - sent_at;
            record.upstream_wait += waited;
            // Set when the attempt failed because of its proxy: retry another way, keep the token.
            let mut proxy_failed = false;
            let attempt = match result {
                Err(_) => {
                    lease.report(Outcome::Transient);
                    if let Some(p) = &egress.entry {
                        self.proxies
                            .report_failure(p, "timeout before the first byte");
                        proxy_failed = true;
                    }
                    Err(AttemptError::Retryable {
                        reason: "timeout".into(),
                        last: ForwardError::Timeout("waiting for the answer's headers"),
                    })
                }
                Ok(Err(e)) => {
                    lease.report(Outcome::Transient);
                    let mut chain = error_chain(&e);
                    if let Some(p) = &egress.entry {
                        chain = p.scrub(&chain);
                        self.proxies.report_failure(p, &chain);
                        proxy_failed = true;
                    }
                    let last = if e.is_timeout() {
                        ForwardError::Timeout("connecting")
                    } else {
                        ForwardError::Connect(chain)
                    };
                    Err(AttemptError::Retryable {
                        reason: "connect error".into(),
                        last,
                    })
                }
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    let (parts, mut body) = resp.into_parts();
                    // Our HTTP/1.1 client's answers keep their header lines apart (see `head`).
                    let raw = body.take_raw();
                    if let Some(p) = &egress.entry {
                        if blames_proxy(status.as_u16()) {
                            self.proxies
                                .report_failure(p, &format!("upstream answered {status}"));
                            proxy_failed = true;
                        } else {
                            self.proxies.report_ok(p, waited);
                        }
                    }
                    if status.is_success() {
                        lease.report(Outcome::Success {
                            remaining: header_i64(
                                &parts.headers,
                                raw.as_ref(),
                                &RATELIMIT_REMAINING,
                            ),
                        });
                        let since_start = answered_at - record.started;
                        record.first_byte_ms = Some(since_start.as_millis() as u64);
                        record.upstream_first_byte = Some(waited);
                        record.status_code = status.as_u16();
                        // The lease goes with the answer: a token stays "in flight" until its stream ends.
                        let answer = Upstream { parts, raw, body };
                        return self
                            .answer(answer, req.stream, record, lease, &cfg, answered_at)
                            .await;
                    }
                    let answer = Upstream { parts, raw, body };
                    // An answer that is not a success is rare: its code stays out of this function's
                    // (`util::cold`).
                    crate::util::cold(self.classify_failure(
                        answer,
                        &lease,
                        grok.retry_status_codes.as_slice(),
                    ))
                    .await
                }
            };
            match attempt {
                Ok(reply) => {
                    // A client error (bad request, unknown model): passed back as the upstream said it.
                    let status = reply.response.status().as_u16();
                    record.status_code = status;
                    record.error_message = format!("upstream answered {status}");
                    self.calllog.finish(record);
                    return Ok(reply);
                }
                Err(AttemptError::Final(e)) => return Err((e, record)),
                Err(AttemptError::Retryable { reason, last }) => {
                    if proxy_failed {
                        if let Some(p) = egress.entry.clone() {
                            failed_proxies.push(p);
                        }
                    }
                    // A token whose attempt failed only at its proxy may go again through another one; a 403
                    // also counts against the token (its health was updated above), so it is not retried.
                    if !proxy_failed || status_of(&last) == Some(403) {
                        tried.push(token.id.clone());
                    }
                    record
                        .retries
                        .push(format!("{}@{}: {reason}", token.id, egress.label()));
                    last_error = Some(last);
                }
            }
        }
        // The last attempt is in `record.token_id`; only the ones before it count as retries. (An attempt that
        // found no egress never went out, so the last retry entry is a real earlier attempt.)
        if !matches!(last_error, Some(ForwardError::NoEgress(_))) {
            record.retries.pop();
        }
        let err = last_error.unwrap_or_else(|| ForwardError::NoToken {
            model: record.model.clone(),
            retry_after_ms: self.tokens.soonest_cooldown_ms(is_super),
        });
        Err((err, record))
    }

    /// Turns a non-2xx upstream answer into token health and a decision.
    async fn classify_failure(
        &self,
        answer: Upstream,
        lease: &crate::tokens::TokenLease,
        retry_codes: &[u16],
    ) -> Result<Reply, AttemptError> {
        let Upstream { parts, raw, body } = answer;
        let (status, mut headers, extensions) = (parts.status, parts.headers, parts.extensions);
        let code = status.as_u16();
        let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = upstream_message(&body);
        match code {
            429 => {
                let retry_after = head::get(&headers, raw.as_ref(), &http::header::RETRY_AFTER)
                    .and_then(|v| HeaderValue::from_bytes(v).ok());
                lease.report(Outcome::RateLimited {
                    retry_after: retry_after.as_ref().and_then(parse_retry_after),
                });
                Err(AttemptError::Retryable {
                    reason: "429".into(),
                    last: ForwardError::RateLimited { retry_after },
                })
            }
            407 => {
                // The proxy refused us; the token is not at fault.
                lease.report(Outcome::Transient);
                Err(AttemptError::Retryable {
                    reason: "proxy 407".into(),
                    last: ForwardError::Connect(format!(
                        "egress proxy refused the request: {message}"
                    )),
                })
            }
            401 | 403 => {
                lease.report(Outcome::AuthFailed {
                    status: code,
                    message: message.clone(),
                });
                let last = ForwardError::Upstream {
                    status: code,
                    message,
                };
                if retry_codes.contains(&code) {
                    Err(AttemptError::Retryable {
                        reason: code.to_string(),
                        last,
                    })
                } else {
                    Err(AttemptError::Final(last))
                }
            }
            _ if status.is_server_error() || retry_codes.contains(&code) => {
                lease.report(Outcome::Transient);
                Err(AttemptError::Retryable {
                    reason: code.to_string(),
                    last: ForwardError::Upstream {
                        status: code,
                        message,
                    },
                })
            }
            _ => {
                lease.report(Outcome::Transient);
                head::strip(&mut headers);
                let mut out = Response::new(Body::from(body));
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                *out.extensions_mut() = extensions;
                Ok(Reply { response: out, raw })
            }
        }
    }

    /// Builds the client's answer from a 2xx upstream response.
    async fn answer(
        &self,
        answer: Upstream,
        stream: bool,
        mut record: Box<CallRecord>,
        lease: crate::tokens::TokenLease,
        cfg: &UpstreamConfig,
        answered_at: Instant,
    ) -> Result<Reply, (ForwardError, Box<CallRecord>)> {
        let Upstream { parts, raw, body } = answer;
        let (status, mut headers, extensions) = (parts.status, parts.headers, parts.extensions);
        // Kept and trimmed rather than copied: a copy was 2 % of a chat request's instructions. Raw headers
        // (`head::RawHeaders`) are filtered as they are written.
        head::strip(&mut headers);
        let is_sse = head::get(&headers, raw.as_ref(), &http::header::CONTENT_TYPE)
            .is_some_and(|v| v.starts_with(b"text/event-stream"));

        if stream || is_sse {
            headers.remove(http::header::CONTENT_LENGTH);
            // Tell buffering reverse proxies in front of us to pass chunks through.
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            let first_deadline = record.started + cfg.timeouts.first_response;
            let total_deadline = cfg.timeouts.total.map(|t| record.started + t);
            let body = TimedBody::new(
                body,
                body::Timeouts {
                    answered_at,
                    first_chunk_deadline: first_deadline,
                    chunk: cfg.timeouts.chunk,
                    total_deadline,
                },
                is_sse,
                record,
                self.calllog.clone(),
                lease,
            );
            let mut out = Response::new(Body::new(body));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            *out.extensions_mut() = extensions;
            return Ok(Reply { response: out, raw });
        }

        let limit = cfg.settings.global.max_upstream_body_bytes;
        // A declared length over the cap fails before anything is read.
        if body.size_hint().exact().is_some_and(|n| n > limit as u64) {
            drop(lease);
            return Err((ForwardError::AnswerTooLarge { limit }, record));
        }
        let read = async {
            let mut body = body;
            let mut buf = bytes::BytesMut::new();
            loop {
                // A frame already read (the usual case: the body came with the head) needs no timer.
                let next = match body.frame().now_or_never() {
                    Some(frame) => Ok(frame),
                    None => tokio::time::timeout(cfg.timeouts.chunk, body.frame()).await,
                };
                match next {
                    Err(_) => return Err(ForwardError::Timeout("between chunks of the answer")),
                    Ok(Some(Err(e))) => return Err(ForwardError::Connect(error_chain(&*e))),
                    Ok(None) => return Ok(buf.freeze()),
                    Ok(Some(Ok(frame))) => {
                        // Trailers carry nothing for the client.
                        let Ok(chunk) = frame.into_data() else {
                            continue;
                        };
                        if buf.len() + chunk.len() > limit {
                            return Err(ForwardError::AnswerTooLarge { limit });
                        }
                        // The whole body in one piece (the usual case with a length): no copy.
                        if buf.is_empty() && body.is_end_stream() {
                            return Ok(chunk);
                        }
                        buf.extend_from_slice(&chunk);
                    }
                }
            }
        };
        let read_started = answered_at;
        let body = match cfg.timeouts.total {
            Some(total) => {
                let deadline = tokio::time::Instant::from_std(record.started) + total;
                match tokio::time::timeout_at(deadline, read).await {
                    Ok(r) => r,
                    Err(_) => Err(ForwardError::Timeout("reading the answer")),
                }
            }
            None => read.await,
        };
        // One clock read ends both the upstream's time and the call's.
        let read_done = Instant::now();
        record.upstream_wait += read_done - read_started;
        drop(lease);
        match body {
            Ok(bytes) => {
                record.success = true;
                if self.calllog.enabled() {
                    record.findings = crate::calllog::scan::scan_json(&bytes);
                }
                self.calllog.finish_at(record, read_done);
                let mut out = Response::new(Body::from(bytes));
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                *out.extensions_mut() = extensions;
                Ok(Reply { response: out, raw })
            }
            Err(e) => Err((e, record)),
        }
    }

    /// One cheap authenticated call (`GET {base_url}/models`) with a given token, for the admin "test" button.
    pub async fn probe(&self, lease: &crate::tokens::TokenLease) -> Result<u16, String> {
        let cfg = self.config.load_full();
        let token = lease.token();
        let info = RequestInfo {
            token_id: &token.id,
            model: "",
            route: "/api/tokens/test",
            stream: false,
        };
        let egress = self
            .proxies
            .egress(&info, &[])
            .await
            .map_err(|e| e.to_string())?;
        let secret = token.secret().expose();
        if !token.header_safe() {
            return Err("credential has characters invalid in a header".to_string());
        }
        let uri = cfg.uri("/models")?;
        let req = Outbound {
            cfg: &cfg,
            method: &Method::GET,
            uri: &uri,
            secret,
            accept: None,
            body: None,
        };
        let send = egress.client.send(&req);
        let resp = tokio::time::timeout(Duration::from_secs(15), send)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| match &egress.entry {
                Some(p) => p.scrub(&error_chain(&e)),
                None => error_chain(&e),
            })?;
        let status = resp.status().as_u16();
        let (parts, mut body) = resp.into_parts();
        let raw = body.take_raw();
        match status {
            200..=299 => lease.report(Outcome::Success {
                remaining: header_i64(&parts.headers, raw.as_ref(), &RATELIMIT_REMAINING),
            }),
            401 | 403 => lease.report(Outcome::AuthFailed {
                status,
                message: "token test".into(),
            }),
            429 => lease.report(Outcome::RateLimited {
                retry_after: head::get(&parts.headers, raw.as_ref(), &http::header::RETRY_AFTER)
                    .and_then(|v| HeaderValue::from_bytes(v).ok())
                    .as_ref()
                    .and_then(parse_retry_after),
            }),
            _ => {}
        }
        Ok(status)
    }
}

fn status_of(e: &ForwardError) -> Option<u16> {
    match e {
        ForwardError::Upstream { status, .. } => Some(*status),
        _ => None,
    }
}

/// The upstream's count of requests left, read from every answer. A `HeaderName` constant: looking it up by
/// `&str` parsed and hashed the name each time (1 % of a chat request).
const RATELIMIT_REMAINING: http::HeaderName =
    http::HeaderName::from_static("x-ratelimit-remaining-requests");

fn header_i64(
    headers: &http::HeaderMap,
    raw: Option<&head::RawHeaders>,
    name: &http::HeaderName,
) -> Option<i64> {
    let v = head::get(headers, raw, name)?;
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let when = httpdate::parse_http_date(s).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The `error.message` of an OpenAI-shaped error body, else a short prefix of the body.
fn upstream_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Inner {
        message: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Outer {
        error: Option<Inner>,
    }
    if let Ok(Outer {
        error: Some(Inner { message: Some(m) }),
    }) = serde_json::from_slice::<Outer>(body)
    {
        return m.chars().take(300).collect();
    }
    String::from_utf8_lossy(&body[..body.len().min(200)])
        .trim()
        .to_string()
}

/// An error with its causes, since reqwest's top-level message alone ("error sending request") says little.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("2")),
            Some(Duration::from_secs(2))
        );
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let v = HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap();
        let d = parse_retry_after(&v).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }

    /// The forwarder's own HTTP/1.1 bytes are the ones its `Request` would encode to, directly and through a
    /// forward proxy, with and without a body, for the default credential header and another one.
    #[test]
    fn outbound_bytes_match_its_request() {
        for template in ["Authorization: Bearer {token}", "X-Api-Key: k-{token}-k"] {
            let mut settings = Settings::default();
            settings.grok.base_url = "http://up.example:8080/v1".into();
            settings.grok.auth_header = template.into();
            let cfg = UpstreamConfig::new(Arc::new(settings)).unwrap();
            let accept = HeaderValue::from_static("text/event-stream");
            let body = Bytes::from_static(br#"{"model":"m"}"#);
            let chat = cfg.uri("/chat/completions").unwrap();
            let models = cfg.uri("/models").unwrap();
            let proxied = h1::Target {
                host: HeaderValue::from_static("up.example:8080"),
                forward: Some((
                    Bytes::from_static(b"http://up.example:8080"),
                    Some(HeaderValue::from_static("Basic dTpw")),
                )),
            };
            let direct = h1::Target {
                host: HeaderValue::from_static("up.example:8080"),
                forward: None,
            };
            let cases = [
                (Method::POST, &chat, Some(&accept), Some(&body)),
                (Method::POST, &chat, None, Some(&body)),
                (Method::GET, &models, None, None),
            ];
            for (method, uri, accept, body) in cases {
                let out = Outbound {
                    cfg: &cfg,
                    method: &method,
                    uri,
                    secret: "sk-1",
                    accept,
                    body,
                };
                for target in [&direct, &proxied] {
                    // A reused buffer starts with the last request's bytes.
                    let (mut ours, mut theirs) = (b"stale".to_vec(), Vec::new());
                    out.encode_h1(target, &mut ours);
                    h1::encode(&out.to_request(), target, &mut theirs);
                    let ours = String::from_utf8(ours).unwrap();
                    let theirs = String::from_utf8(theirs).unwrap();
                    assert_eq!(ours, theirs);
                    assert!(ours.contains("sk-1"), "{ours}");
                }
            }
        }
    }

    #[test]
    fn upstream_message_reads_openai_errors() {
        assert_eq!(
            upstream_message(br#"{"error":{"message":"bad key","type":"x"}}"#),
            "bad key"
        );
        assert_eq!(upstream_message(b"plain failure"), "plain failure");
    }
}
