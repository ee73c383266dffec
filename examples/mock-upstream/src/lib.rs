//! A local OpenAI-compatible upstream for end-to-end tests and benchmarks.
//!
//! It serves `/v1/models`, `/v1/chat/completions` (plain and SSE) and
//! `/v1/images/generations`, echoes the caller's credential back in
//! `x-mock-credential`, counts what it saw in [`Stats`], and can be told to
//! misbehave through [`Rule`]s (status codes, hangs, connection resets,
//! delays), either in-process or over `/__mock/*`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::pending;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tower_service::Service;

/// Model ids listed by `GET /v1/models`.
pub const MODELS: &[&str] = &[
    "grok-4-fast",
    "grok-4",
    "grok-4-heavy",
    "grok-3-fast",
    "grok-2-image",
];

/// Header echoing the credential the request carried.
pub const CREDENTIAL_HEADER: &str = "x-mock-credential";

/// Header echoing the IP address the request's TCP connection came from, so a test can tell which egress
/// proxy (each bound to its own loopback address) carried it.
pub const PEER_HEADER: &str = "x-mock-peer";

/// A 1x1 transparent PNG served under `/media/*`.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0b, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x00, 0x02, 0x00,
    0x00, 0x05, 0x00, 0x01, 0x7a, 0x5e, 0xab, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44,
    0xae, 0x42, 0x60, 0x82,
];
const PNG_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVR4nGNgAAIAAAUAAXpeqz8AAAAASUVORK5CYII=";

// Caps keep a stray knob from exhausting memory.
const MAX_CHUNKS: u64 = 100_000;
const MAX_SIZE: u64 = 64 << 20;
const MAX_BODY: usize = 64 << 20;

/// A behaviour override applied to matching `/v1/*` requests before routing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Rule {
    /// Match only requests carrying this credential; `None` matches any.
    pub credential: Option<String>,
    /// Match only this exact path (e.g. `/v1/chat/completions`); `None` matches any.
    pub path: Option<String>,
    pub action: Action,
    /// Apply to the next N matching requests, then expire; `None` means forever.
    pub times: Option<u32>,
}

impl Rule {
    fn matches(&self, credential: &str, path: &str) -> bool {
        self.credential.as_deref().is_none_or(|c| c == credential)
            && self.path.as_deref().is_none_or(|p| p == path)
    }
}

/// What a matching [`Rule`] does to the request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Answer this status. `body` defaults to an OpenAI error JSON;
    /// `retry_after` sets the `Retry-After` header.
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<String>,
        #[serde(default)]
        body: Option<String>,
    },
    /// Never answer; the request stays in flight until the client goes away.
    Hang,
    /// Drop the TCP connection without a response (RST via `SO_LINGER` 0).
    Reset,
    /// Wait this long, then answer normally.
    Delay { ms: u64 },
}

impl Default for Action {
    fn default() -> Self {
        Action::Status {
            status: 500,
            retry_after: None,
            body: None,
        }
    }
}

/// Counters over `/v1/*` traffic.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// All requests to `/v1/*`.
    pub requests: u64,
    /// Requests per non-empty credential.
    pub by_credential: BTreeMap<String, u64>,
    /// Requests per peer IP address of the connection.
    pub by_peer: BTreeMap<String, u64>,
    pub streams_started: u64,
    /// SSE bodies fully sent.
    pub streams_completed: u64,
    /// SSE bodies dropped before completion (client went away, or `fail_after`).
    pub streams_cancelled: u64,
    /// Requests being handled now, including hanging ones and open streams.
    pub in_flight: u64,
}

/// State shared by the server task and its handle.
struct Inner {
    addr: SocketAddr,
    // Fast path: skip the rules lock entirely while no rule is installed.
    has_rules: AtomicBool,
    rules: Mutex<Vec<Rule>>,
    requests: AtomicU64,
    by_credential: Mutex<HashMap<String, u64>>,
    by_peer: Mutex<HashMap<IpAddr, u64>>,
    streams_started: AtomicU64,
    streams_completed: AtomicU64,
    streams_cancelled: AtomicU64,
    in_flight: AtomicU64,
    ids: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn new(addr: SocketAddr) -> Self {
        Inner {
            addr,
            has_rules: AtomicBool::new(false),
            rules: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            by_credential: Mutex::new(HashMap::new()),
            by_peer: Mutex::new(HashMap::new()),
            streams_started: AtomicU64::new(0),
            streams_completed: AtomicU64::new(0),
            streams_cancelled: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            ids: AtomicU64::new(0),
        }
    }

    fn add_rule(&self, rule: Rule) {
        if rule.times == Some(0) {
            return;
        }
        let mut rules = lock(&self.rules);
        rules.push(rule);
        self.has_rules.store(true, Ordering::Release);
    }

    fn clear_rules(&self) {
        let mut rules = lock(&self.rules);
        rules.clear();
        self.has_rules.store(false, Ordering::Release);
    }

    /// First matching rule's action; consumes one use of it under the lock.
    fn take_action(&self, credential: &str, path: &str) -> Option<Action> {
        if !self.has_rules.load(Ordering::Acquire) {
            return None;
        }
        let mut rules = lock(&self.rules);
        let idx = rules.iter().position(|r| r.matches(credential, path))?;
        let action = rules[idx].action.clone();
        if let Some(times) = rules[idx].times.as_mut() {
            *times = times.saturating_sub(1);
            if *times == 0 {
                rules.remove(idx);
                self.has_rules.store(!rules.is_empty(), Ordering::Release);
            }
        }
        Some(action)
    }

    fn stats(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            by_credential: lock(&self.by_credential)
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            by_peer: lock(&self.by_peer)
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            streams_started: self.streams_started.load(Ordering::Relaxed),
            streams_completed: self.streams_completed.load(Ordering::Relaxed),
            streams_cancelled: self.streams_cancelled.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }

    // in_flight is a live gauge, so it is left alone.
    fn reset_stats(&self) {
        self.requests.store(0, Ordering::Relaxed);
        lock(&self.by_credential).clear();
        lock(&self.by_peer).clear();
        self.streams_started.store(0, Ordering::Relaxed);
        self.streams_completed.store(0, Ordering::Relaxed);
        self.streams_cancelled.store(0, Ordering::Relaxed);
    }

    fn count_request(&self, credential: &str, peer: Option<IpAddr>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(ip) = peer {
            *lock(&self.by_peer).entry(ip).or_insert(0) += 1;
        }
        if credential.is_empty() {
            return;
        }
        let mut map = lock(&self.by_credential);
        match map.get_mut(credential) {
            Some(n) => *n += 1,
            None => {
                map.insert(credential.to_owned(), 1);
            }
        }
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Authority for media links: the bound address, or the Host header when
    /// bound to a wildcard address that clients cannot dial.
    fn authority(&self, headers: &HeaderMap) -> String {
        if !self.addr.ip().is_unspecified() {
            return self.addr.to_string();
        }
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.addr.port()).to_string()
            })
    }
}

/// Holds one unit of `in_flight` for as long as it lives.
struct InFlight(Arc<Inner>);

impl InFlight {
    fn enter(inner: &Arc<Inner>) -> Self {
        inner.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Lives inside an SSE body; its drop tells completion from cancellation.
struct StreamGuard {
    _in_flight: InFlight,
    finished: bool,
}

impl StreamGuard {
    fn start(inner: &Arc<Inner>) -> Self {
        inner.streams_started.fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            _in_flight: InFlight::enter(inner),
            finished: false,
        }
    }
}

impl StreamGuard {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let inner = &self._in_flight.0;
        if self.finished {
            inner.streams_completed.fetch_add(1, Ordering::Relaxed);
        } else {
            inner.streams_cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Per-connection control: a handler fires `reset` to have the connection
/// task drop the socket abruptly.
struct ConnCtl {
    reset: Notify,
    peer: Option<IpAddr>,
}

struct App {
    inner: Arc<Inner>,
    router: Router,
}

impl App {
    async fn handle(&self, req: Request<Incoming>, conn: &ConnCtl) -> Response {
        let path = req.uri().path();
        if !(path == "/v1" || path.starts_with("/v1/")) {
            return self.route(req).await;
        }
        let credential = credential(req.headers());
        self.inner.count_request(&credential, conn.peer);
        let _in_flight = InFlight::enter(&self.inner);
        let mut resp = if credential.is_empty() {
            error_response(
                StatusCode::UNAUTHORIZED,
                "No API key provided. Send `Authorization: Bearer <key>` or a Cookie.",
                "invalid_request_error",
                "invalid_api_key",
            )
        } else {
            match self.inner.take_action(&credential, path) {
                None => self.route(req).await,
                Some(Action::Status {
                    status,
                    retry_after,
                    body,
                }) => status_response(status, retry_after.as_deref(), body),
                Some(Action::Hang) => pending().await,
                Some(Action::Reset) => {
                    conn.reset.notify_one();
                    pending().await
                }
                Some(Action::Delay { ms }) => {
                    sleep_ms(ms).await;
                    self.route(req).await
                }
            }
        };
        if let Ok(v) = HeaderValue::from_bytes(credential.as_bytes()) {
            resp.headers_mut().insert(CREDENTIAL_HEADER, v);
        }
        if let Some(v) = conn
            .peer
            .and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok())
        {
            resp.headers_mut().insert(PEER_HEADER, v);
        }
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Response {
        match self.router.clone().call(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// Bearer token, else the raw Cookie header, else empty.
fn credential(headers: &HeaderMap) -> String {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let auth = String::from_utf8_lossy(auth.as_bytes());
        let auth = auth.trim();
        if auth.len() > 7 && auth[..7].eq_ignore_ascii_case("bearer ") {
            let token = auth[7..].trim();
            if !token.is_empty() {
                return token.to_owned();
            }
        }
    }
    headers
        .get(header::COOKIE)
        .map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned())
        .unwrap_or_default()
}

async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn error_response(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": code}});
    (status, Json(body)).into_response()
}

/// The OpenAI-style `type`/`code` pair the real API uses for a status.
fn default_error(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("invalid_request_error", "invalid_request_error"),
        401 => ("invalid_request_error", "invalid_api_key"),
        403 => ("permission_error", "permission_denied"),
        404 => ("invalid_request_error", "not_found"),
        408 => ("server_error", "timeout"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        502 => ("server_error", "bad_gateway"),
        503 => ("server_error", "service_unavailable"),
        504 => ("server_error", "timeout"),
        s if s >= 500 => ("server_error", "internal_error"),
        _ => ("invalid_request_error", "mock_error"),
    }
}

fn status_response(status: u16, retry_after: Option<&str>, body: Option<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match body {
        Some(body) => {
            let ctype = if serde_json::from_str::<Value>(&body).is_ok() {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            (status, [(header::CONTENT_TYPE, ctype)], body).into_response()
        }
        None => {
            let (kind, code) = default_error(status);
            let message = format!("mock upstream answered {status}");
            error_response(status, &message, kind, code)
        }
    };
    if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn build_router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/images/generations", post(image_generations))
        .route("/media/{name}", get(media))
        .route(
            "/__mock/rules",
            post(control_add_rule)
                .delete(control_clear_rules)
                .get(control_list_rules),
        )
        .route("/__mock/stats", get(control_stats))
        .route("/__mock/stats/reset", post(control_reset_stats))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(inner)
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 1_735_689_600u64, "owned_by": "xai"})
}

async fn list_models() -> Response {
    let data: Vec<Value> = MODELS.iter().map(|m| model_object(m)).collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn get_model(Path(id): Path<String>) -> Response {
    if MODELS.contains(&id.as_str()) {
        Json(model_object(&id)).into_response()
    } else {
        error_response(
            StatusCode::NOT_FOUND,
            &format!("The model `{id}` does not exist"),
            "invalid_request_error",
            "model_not_found",
        )
    }
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "Unknown path",
        "invalid_request_error",
        "not_found",
    )
}

async fn method_not_allowed(method: Method) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("Method {method} not allowed"),
        "invalid_request_error",
        "method_not_allowed",
    )
}

fn bad_request(message: &str) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        "invalid_request_error",
    )
}

/// Per-request knobs read from the body's top-level `"mock"` object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Knobs {
    chunks: Option<u64>,
    delay_ms: u64,
    first_delay_ms: u64,
    status: Option<u16>,
    fail_after: Option<u64>,
    content: Option<String>,
    size: Option<u64>,
    /// Streams: each event starts with an SSE comment `: sent_ns=<unix ns>` taken as it is handed to the
    /// server, so a client can tell how long a chunk took to reach it (the chunk-latency benchmark).
    stamp: bool,
}

/// Text of a message: string content, or its text parts concatenated.
fn message_text(msg: &Value) -> String {
    match msg.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                _ => p.get("text").and_then(Value::as_str),
            })
            .collect(),
        _ => String::new(),
    }
}

/// Crude token estimate (~4 bytes a token), good enough for usage fields.
fn tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4).max(1)
}

fn pad_to(content: &mut String, size: u64) {
    const FILLER: &str = " lorem ipsum dolor sit amet";
    let size = size.min(MAX_SIZE) as usize;
    while content.len() < size {
        let need = size - content.len();
        content.push_str(&FILLER[..need.min(FILLER.len())]);
    }
}

async fn chat_completions(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Request body must be valid JSON");
    };
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return bad_request("`model` is required and must be a string");
    };
    let Some(messages) = req
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
    else {
        return bad_request("`messages` is required and must be a non-empty array");
    };
    let knobs: Knobs = match req.get("mock") {
        Some(m) => match serde_json::from_value(m.clone()) {
            Ok(k) => k,
            Err(e) => return bad_request(&format!("invalid `mock` object: {e}")),
        },
        None => Knobs::default(),
    };
    if let Some(status) = knobs.status {
        return status_response(status, None, None);
    }

    let prompt_bytes: usize = messages.iter().map(|m| message_text(m).len()).sum();
    let last_text = messages.last().map(message_text).unwrap_or_default();
    let draws = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| message_text(m).to_lowercase().contains("draw"))
        .unwrap_or(false);
    let id = inner.next_id();
    let image = draws.then(|| {
        format!(
            "![image](http://{}/media/{id}.png)",
            inner.authority(&headers)
        )
    });
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let ctx = ChatCtx {
        id: format!("chatcmpl-mock{id}"),
        created: now(),
        model: model.to_owned(),
        prompt_tokens: tokens(prompt_bytes),
    };

    if stream {
        let include_usage = req
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        return stream_response(&inner, ctx, knobs, image, include_usage);
    }

    sleep_ms(knobs.delay_ms).await;
    let mut content = knobs
        .content
        .unwrap_or_else(|| format!("echo: {last_text}"));
    if let Some(image) = image {
        content.push_str("\n\n");
        content.push_str(&image);
    }
    if let Some(size) = knobs.size {
        pad_to(&mut content, size);
    }
    let completion_tokens = tokens(content.len());
    Json(json!({
        "id": ctx.id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": ctx.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": ctx.prompt_tokens + completion_tokens,
        },
    }))
    .into_response()
}

struct ChatCtx {
    id: String,
    created: u64,
    model: String,
    prompt_tokens: u64,
}

impl ChatCtx {
    fn event(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        sse(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }))
    }
}

fn sse(v: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Serializing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Splits `s` into `n` pieces of roughly equal length on char boundaries.
fn split_even(s: &str, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let chars: Vec<char> = s.chars().collect();
    (0..n)
        .map(|i| {
            let start = chars.len() * i / n;
            let end = chars.len() * (i + 1) / n;
            chars[start..end].iter().collect()
        })
        .collect()
}

/// Events are prepared up front; the body stream only paces and sends them.
struct SseState {
    guard: StreamGuard,
    events: std::vec::IntoIter<(u64, Bytes)>,
    sent: usize,
    fail_at: Option<usize>,
    failed: bool,
}

fn stream_response(
    inner: &Arc<Inner>,
    ctx: ChatCtx,
    knobs: Knobs,
    image: Option<String>,
    include_usage: bool,
) -> Response {
    let chunks = knobs.chunks.unwrap_or(5).min(MAX_CHUNKS) as usize;
    let mut pieces: Vec<String> = match &knobs.content {
        Some(content) => split_even(content, chunks),
        None => (0..chunks).map(|i| format!("tok{i} ")).collect(),
    };
    if let (Some(image), Some(last)) = (image, pieces.last_mut()) {
        last.push_str(&image);
        last.push(' ');
    }
    let completion_bytes: usize = pieces.iter().map(String::len).sum();

    let mut events = Vec::with_capacity(chunks + 4);
    events.push((
        knobs.first_delay_ms,
        ctx.event(json!({"role": "assistant", "content": ""}), None),
    ));
    for piece in pieces {
        events.push((knobs.delay_ms, ctx.event(json!({"content": piece}), None)));
    }
    events.push((0, ctx.event(json!({}), Some("stop"))));
    if include_usage {
        let completion_tokens = tokens(completion_bytes);
        events.push((
            0,
            sse(&json!({
                "id": ctx.id,
                "object": "chat.completion.chunk",
                "created": ctx.created,
                "model": ctx.model,
                "choices": [],
                "usage": {
                    "prompt_tokens": ctx.prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": ctx.prompt_tokens + completion_tokens,
                },
            })),
        ));
    }
    events.push((0, Bytes::from_static(b"data: [DONE]\n\n")));

    let stamp = knobs.stamp;
    let state = SseState {
        guard: StreamGuard::start(inner),
        events: events.into_iter(),
        // The role chunk plus `fail_after` content chunks go out first.
        fail_at: knobs.fail_after.map(|n| (n as usize).saturating_add(1)),
        sent: 0,
        failed: false,
    };
    let body = futures_util::stream::unfold(state, move |mut st| async move {
        if st.failed {
            return None;
        }
        if st.fail_at == Some(st.sent) {
            st.failed = true;
            // Let hyper flush what was sent so far, so the break is mid-body.
            tokio::task::yield_now().await;
            let err = std::io::Error::other("mock fail_after: aborting stream");
            return Some((Err(err), st));
        }
        let Some((delay, event)) = st.events.next() else {
            st.guard.finish();
            return None;
        };
        sleep_ms(delay).await;
        st.sent += 1;
        let event = if stamp {
            let ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let mut b = format!(": sent_ns={ns}\n").into_bytes();
            b.extend_from_slice(&event);
            Bytes::from(b)
        } else {
            event
        };
        Some((Ok::<_, std::io::Error>(event), st))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

async fn image_generations(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Request body must be valid JSON");
    };
    let Some(prompt) = req.get("prompt").and_then(Value::as_str) else {
        return bad_request("`prompt` is required and must be a string");
    };
    let n = req
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 10);
    let b64 = req.get("response_format").and_then(Value::as_str) == Some("b64_json");
    let authority = inner.authority(&headers);
    let data: Vec<Value> = (0..n)
        .map(|_| {
            if b64 {
                json!({"b64_json": PNG_B64, "revised_prompt": prompt})
            } else {
                let i = inner.next_id();
                json!({"url": format!("http://{authority}/media/img-{i}.png"), "revised_prompt": prompt})
            }
        })
        .collect();
    Json(json!({"created": now(), "data": data})).into_response()
}

async fn media(Path(_name): Path<String>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        Bytes::from_static(PNG),
    )
        .into_response()
}

async fn control_add_rule(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Rule>(&body) {
        Ok(rule) => {
            inner.add_rule(rule);
            Json(json!({"ok": true})).into_response()
        }
        Err(e) => bad_request(&format!("invalid rule: {e}")),
    }
}

async fn control_clear_rules(State(inner): State<Arc<Inner>>) -> Response {
    inner.clear_rules();
    Json(json!({"ok": true})).into_response()
}

async fn control_list_rules(State(inner): State<Arc<Inner>>) -> Response {
    let rules = lock(&inner.rules).clone();
    Json(rules).into_response()
}

async fn control_stats(State(inner): State<Arc<Inner>>) -> Json<Stats> {
    Json(inner.stats())
}

async fn control_reset_stats(State(inner): State<Arc<Inner>>) -> Response {
    inner.reset_stats();
    Json(json!({"ok": true})).into_response()
}

/// A running mock upstream. Dropping it (or [`MockServer::shutdown`]) stops
/// the server and every connection it holds.
pub struct MockServer {
    inner: Arc<Inner>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Binds `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<MockServer> {
        Self::start_on(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await
    }

    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let inner = Arc::new(Inner::new(listener.local_addr()?));
        let app = Arc::new(App {
            inner: inner.clone(),
            router: build_router(inner.clone()),
        });
        let task = tokio::spawn(accept_loop(listener, app));
        Ok(MockServer {
            inner,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.inner.addr)
    }

    pub fn add_rule(&self, rule: Rule) {
        self.inner.add_rule(rule);
    }

    pub fn clear_rules(&self) {
        self.inner.clear_rules();
    }

    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Zeroes the counters; `in_flight` is a live gauge and is kept.
    pub fn reset_stats(&self) {
        self.inner.reset_stats();
    }

    /// Stops the server (same as dropping it); teardown finishes on the runtime.
    pub fn shutdown(self) {}

    /// Stops the server and waits until the listener and connections are closed.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, app: Arc<App>) {
    // Owning the connection tasks here means aborting this task ends them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    conns.spawn(serve_connection(app.clone(), stream));
                }
                Err(e) => {
                    // Usually fd exhaustion; back off instead of spinning.
                    tracing::warn!(error = %e, "mock-upstream accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn serve_connection(app: Arc<App>, stream: TcpStream) {
    // SSE chunks are small; Nagle would hold them back.
    let _ = stream.set_nodelay(true);
    let ctl = Arc::new(ConnCtl {
        reset: Notify::new(),
        peer: stream.peer_addr().ok().map(|a| a.ip()),
    });
    let svc = {
        let ctl = ctl.clone();
        service_fn(move |req| {
            let app = app.clone();
            let ctl = ctl.clone();
            async move { Ok::<_, Infallible>(app.handle(req, &ctl).await) }
        })
    };
    let mut conn = http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), svc);
    let reset = tokio::select! {
        _ = &mut conn => false,
        _ = ctl.reset.notified() => true,
    };
    if reset {
        let stream = conn.into_parts().io.into_inner();
        // Linger 0 turns the close into an RST, like a crashed upstream.
        let _ = stream.set_zero_linger();
        drop(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn credential_prefers_bearer_then_cookie() {
        assert_eq!(
            credential(&headers(&[
                ("authorization", "Bearer abc"),
                ("cookie", "c=1")
            ])),
            "abc"
        );
        assert_eq!(
            credential(&headers(&[("authorization", "bearer  x ")])),
            "x"
        );
        assert_eq!(
            credential(&headers(&[
                ("authorization", "Basic zz"),
                ("cookie", "sso=1; a=2")
            ])),
            "sso=1; a=2"
        );
        assert_eq!(credential(&headers(&[])), "");
    }

    #[test]
    fn rules_expire_after_times() {
        let inner = Inner::new("127.0.0.1:1".parse().unwrap());
        inner.add_rule(Rule {
            credential: Some("a".into()),
            path: Some("/v1/models".into()),
            action: Action::Hang,
            times: Some(2),
        });
        assert!(inner.take_action("b", "/v1/models").is_none());
        assert!(inner.take_action("a", "/v1/other").is_none());
        assert!(inner.take_action("a", "/v1/models").is_some());
        assert!(inner.take_action("a", "/v1/models").is_some());
        assert!(inner.take_action("a", "/v1/models").is_none());
        assert!(!inner.has_rules.load(Ordering::Relaxed));
    }

    #[test]
    fn rule_json_round_trip() {
        let r: Rule = serde_json::from_str(
            r#"{"action":{"kind":"status","status":429,"retry_after":"3"},"times":1}"#,
        )
        .unwrap();
        assert!(matches!(r.action, Action::Status { status: 429, .. }));
        let r: Rule = serde_json::from_str(r#"{"action":{"kind":"delay","ms":5}}"#).unwrap();
        assert!(matches!(r.action, Action::Delay { ms: 5 }));
        assert!(r.times.is_none() && r.path.is_none());
    }

    #[test]
    fn png_b64_matches_bytes() {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in PNG.chunks(3) {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |a, (i, b)| a | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        assert_eq!(out, PNG_B64);
    }

    #[test]
    fn split_and_pad() {
        assert_eq!(split_even("abcdef", 3), vec!["ab", "cd", "ef"]);
        assert_eq!(split_even("ab", 0), Vec::<String>::new());
        let mut s = String::from("x");
        pad_to(&mut s, 100);
        assert_eq!(s.len(), 100);
    }
}
