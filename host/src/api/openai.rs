//! The OpenAI-compatible routes under `/v1`.
//!
//! They are served by [`serve`], which the server's connection service calls for every path under `/v1/`,
//! not through axum's router: the router's matching, the gate's `from_fn` layer and the extractors (which clone
//! the header map and box the body) cost about a tenth of a chat request's instructions (see bench/README.md).
//! [`serve`] matches the route first, then runs the gate, then the handler: no `/v1` handler can be reached
//! around the gate.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::{AppState, RequestId};
use crate::calllog::CallRecord;
use crate::secret::constant_time_eq;
use crate::upstream::{ForwardError, Reply, UpstreamRequest};

/// The `/v1` routes as `(path, method)`, for the OpenAPI test: [`Route::of`] serves exactly these (checked by
/// the tests below).
#[cfg(test)]
pub(super) const ROUTES: &[(&str, &str)] = &[
    ("/v1/chat/completions", "post"),
    ("/v1/images/generations", "post"),
    ("/v1/models", "get"),
    ("/v1/models/{id}", "get"),
];

/// The `/v1` routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Chat,
    Images,
    Models,
    /// `/v1/models/{id}`, the id still percent-encoded.
    Model(String),
}

/// Why a request under `/v1/` matches no route.
#[derive(Debug, PartialEq, Eq)]
enum NoRoute {
    /// 404.
    Unknown,
    /// 405: the path exists for these methods (the `Allow` header).
    Method(&'static str),
}

impl Route {
    /// The route of `method path`. Neither kind of miss is gated, as with axum's `route_layer`.
    fn of(method: &Method, path: &str) -> Result<Route, NoRoute> {
        let (route, post) = match path {
            "/v1/chat/completions" => (Route::Chat, true),
            "/v1/images/generations" => (Route::Images, true),
            "/v1/models" => (Route::Models, false),
            _ => match path.strip_prefix("/v1/models/") {
                Some(id) if !id.is_empty() && !id.contains('/') => {
                    (Route::Model(id.to_string()), false)
                }
                _ => return Err(NoRoute::Unknown),
            },
        };
        if post && method == Method::POST {
            Ok(route)
        } else if post {
            Err(NoRoute::Method("POST"))
        } else if method == Method::GET || method == Method::HEAD {
            // As axum's `get`: HEAD is served by the GET handler, hyper drops the body.
            Ok(route)
        } else {
            Err(NoRoute::Method("GET,HEAD"))
        }
    }
}

impl NoRoute {
    fn answer(self, method: &Method, path: &str) -> Response {
        match self {
            NoRoute::Unknown => {
                ApiError::not_found(format!("no route for {method} {path}")).into_response()
            }
            NoRoute::Method(allow) => {
                let mut resp = ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "invalid_request_error",
                    "method_not_allowed",
                    format!("{path} accepts {allow}, not {method}"),
                )
                .into_response();
                resp.headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static(allow));
                resp
            }
        }
    }
}

/// Serves one request under `/v1/` that hyper read: route, gate, body, handler.
pub async fn serve(
    state: &AppState,
    addr: SocketAddr,
    id: RequestId,
    req: http::Request<Incoming>,
) -> Response {
    let auth = req.headers().get(http::header::AUTHORIZATION);
    let route = match admit(
        state,
        req.method(),
        req.uri().path(),
        addr.ip(),
        auth.map(HeaderValue::as_bytes),
    ) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let body = match route {
        Route::Chat | Route::Images => {
            let (parts, body) = req.into_parts();
            match read_body(state, &parts.headers, body).await {
                Ok(b) => b,
                Err(e) => return e.into_response(),
            }
        }
        Route::Models | Route::Model(_) => Bytes::new(),
    };
    // hyper writes only the `HeaderMap`: the upstream's raw header lines go into it first.
    handle(state, Call { addr, id }, route, body)
        .await
        .into_response()
}

/// The route a `/v1` request takes once it passed the gate, or the answer that refuses it (404, 405, 429,
/// 401). The body is not needed for either, so a refused request's body is never read.
pub fn admit(
    state: &AppState,
    method: &Method,
    path: &str,
    ip: IpAddr,
    authorization: Option<&[u8]>,
) -> Result<Route, Box<Response>> {
    // Boxed: refusals are rare, and the `Result` stays small on the path of every request.
    let route = Route::of(method, path).map_err(|miss| Box::new(miss.answer(method, path)))?;
    match gate(state, ip, authorization) {
        Some(refused) => Err(Box::new(refused)),
        None => Ok(route),
    }
}

/// Runs the handler of an admitted request; `body` is the whole request body (empty for the GET routes).
pub async fn handle(state: &AppState, call: Call, route: Route, body: Bytes) -> Reply {
    let answer = match route {
        Route::Chat => chat_completions(state, call, body).await,
        Route::Images => images_generations(state, call, body).await,
        Route::Models => Ok(list_models(state, call).await),
        Route::Model(id) => get_model(state, call, &id).await,
    };
    answer.unwrap_or_else(|e| e.into_response().into())
}

/// Who asked: what every `/v1` handler records.
pub struct Call {
    pub addr: SocketAddr,
    pub id: RequestId,
}

/// The `/v1` gate: the per-client rate limit, then the API key.
fn gate(state: &AppState, ip: IpAddr, authorization: Option<&[u8]>) -> Option<Response> {
    // First, so failed key guesses count against the client too.
    if let Some(refused) = super::ratelimit::check(state, ip) {
        return Some(refused);
    }
    client_auth(state, authorization)
}

/// `Authorization: Bearer <grok.api_key>`; an empty key leaves the routes open (warned about at start-up).
fn client_auth(state: &AppState, authorization: Option<&[u8]>) -> Option<Response> {
    let settings = state.settings.load();
    let key = settings.grok.api_key.expose();
    if key.is_empty() {
        return None;
    }
    // Compared as bytes: a key is text, so bytes that are not UTF-8 simply do not match it.
    let presented = authorization.and_then(|v| {
        v.strip_prefix(b"Bearer ")
            .or_else(|| v.strip_prefix(b"bearer "))
    });
    match presented {
        None => Some(
            ApiError::unauthorized(
                "missing_api_key",
                "missing API key: send Authorization: Bearer <key>",
            )
            .into_response(),
        ),
        Some(p) if constant_time_eq(p.trim_ascii(), key) => None,
        Some(_) => {
            Some(ApiError::unauthorized("invalid_api_key", "invalid API key").into_response())
        }
    }
}

/// What the gateway reads from a request body; everything else is passed through untouched.
#[derive(Deserialize)]
struct Peek {
    /// Owned: serde borrows a `Cow` only as a field of its own, never inside an `Option`. The record keeps
    /// this string.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

/// What `/v1/chat/completions` reads of OpenAI's request body (the rest goes to the upstream untouched).
/// Describes [`Peek`] for the document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ChatCompletionRequest {
    /// The model to call; required, not blank.
    model: String,
    /// Answer as server-sent events.
    stream: Option<bool>,
    /// `messages` and every other OpenAI parameter, passed through.
    #[serde(flatten)]
    rest: std::collections::HashMap<String, serde_json::Value>,
}

/// What `/v1/images/generations` reads of OpenAI's request body (the rest goes to the upstream untouched).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ImageRequest {
    /// For the call log; optional.
    model: Option<String>,
    /// `prompt` and every other OpenAI parameter, passed through.
    #[serde(flatten)]
    rest: std::collections::HashMap<String, serde_json::Value>,
}

async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Bytes, ApiError> {
    let limit = state.settings.load().global.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(
            "invalid_body",
            format!("could not read the request body: {e}"),
        )),
    }
}

fn peek(body: &[u8]) -> Result<Peek, ApiError> {
    let invalid = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON for this route: {e}"),
        )
    };
    // UTF-8 is checked once for the whole body, so `from_str` skips the check of each string it reads
    // (`from_slice` checked every key apart: more instructions for four short strings than for the body).
    let text = std::str::from_utf8(body).map_err(|e| invalid(&e))?;
    serde_json::from_str::<Peek>(text).map_err(|e| invalid(&e))
}

/// `s` without surrounding whitespace, copied only when it had any.
fn trimmed(s: String) -> String {
    if s.trim().len() == s.len() {
        s
    } else {
        s.trim().to_string()
    }
}

fn record(call: Call, route: &'static str, model: String, stream: bool) -> Box<CallRecord> {
    let mut r = CallRecord::new(call.id.into_string(), route, model, stream);
    r.client_ip = Some(call.addr.ip());
    r
}

async fn forward(state: &AppState, req: UpstreamRequest, record: Box<CallRecord>) -> Reply {
    match state.forwarder.forward(req, record).await {
        Ok(reply) => reply,
        Err((err, mut record)) => {
            let (status, kind, code) = err.parts();
            // The log keeps the upstream's real status; without an answer, the status the client got.
            record.status_code = err.upstream_status().unwrap_or(status.as_u16());
            record.error_message = err.to_string();
            let retry_after = err.retry_after();
            let message = match &err {
                ForwardError::NoToken { .. } => {
                    format!("{err}: every token is expired, cooling down or already tried")
                }
                _ => err.to_string(),
            };
            state.forwarder.finish_failed(record);
            ApiError::new(status, kind, code, message)
                .with_retry_after(retry_after)
                .into_response()
                .into()
        }
    }
}

/// OpenAI chat completions, forwarded with a pooled token; `stream: true` answers server-sent events.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", operation_id = "chat_completions",
    request_body = ChatCompletionRequest, security(("api_key" = [])), responses(
    (status = 200, description = "The upstream's completion, passed through", content(
        (serde_json::Value = "application/json"),
        (String = "text/event-stream"),
    )),
    (status = 400, description = "Invalid request (from the gateway or the upstream)", body = ErrorBody),
    (status = 401, description = "Missing or wrong API key", body = ErrorBody),
    (status = 413, description = "Body larger than `global.max_body_bytes`", body = ErrorBody),
    (status = 429, description = "The upstream rate-limited every token tried", body = ErrorBody),
    (status = 502, description = "The upstream failed or is unreachable", body = ErrorBody),
    (status = 503, description = "No usable token or egress proxy", body = ErrorBody),
    (status = 504, description = "The upstream did not answer in time", body = ErrorBody),
))]
pub(super) async fn chat_completions(
    state: &AppState,
    call: Call,
    bytes: Bytes,
) -> Result<Reply, ApiError> {
    let p = peek(&bytes)?;
    let model = trimmed(p.model.unwrap_or_default());
    if model.is_empty() {
        return Err(ApiError::bad_param("model", "`model` is required"));
    }
    let stream = p.stream.unwrap_or(false);
    let rec = record(call, "/v1/chat/completions", model, stream);
    let req = UpstreamRequest {
        method: Method::POST,
        path: Cow::Borrowed("/chat/completions"),
        // Moved, not cloned: a clone of a body copied out of the read buffer allocates.
        body: Some(bytes),
        stream,
        accept: Some(http::HeaderValue::from_static(if stream {
            "text/event-stream"
        } else {
            "application/json"
        })),
    };
    Ok(forward(state, req, rec).await)
}

/// OpenAI image generation, forwarded with a pooled token.
#[utoipa::path(post, path = "/v1/images/generations", tag = "openai", operation_id = "images_generations",
    request_body = ImageRequest, security(("api_key" = [])), responses(
    (status = 200, description = "The upstream's answer, passed through", body = serde_json::Value),
    (status = 400, description = "Invalid request (from the gateway or the upstream)", body = ErrorBody),
    (status = 401, description = "Missing or wrong API key", body = ErrorBody),
    (status = 413, description = "Body larger than `global.max_body_bytes`", body = ErrorBody),
    (status = 429, description = "The upstream rate-limited every token tried", body = ErrorBody),
    (status = 502, description = "The upstream failed or is unreachable", body = ErrorBody),
    (status = 503, description = "No usable token or egress proxy", body = ErrorBody),
    (status = 504, description = "The upstream did not answer in time", body = ErrorBody),
))]
pub(super) async fn images_generations(
    state: &AppState,
    call: Call,
    bytes: Bytes,
) -> Result<Reply, ApiError> {
    let p = peek(&bytes)?;
    let model = trimmed(p.model.unwrap_or_default());
    let rec = record(call, "/v1/images/generations", model, false);
    let req = UpstreamRequest {
        method: Method::POST,
        path: Cow::Borrowed("/images/generations"),
        body: Some(bytes),
        stream: false,
        accept: Some(http::HeaderValue::from_static("application/json")),
    };
    Ok(forward(state, req, rec).await)
}

/// The upstream's model list, passed through.
#[utoipa::path(get, path = "/v1/models", tag = "openai", operation_id = "list_models",
    security(("api_key" = [])), responses(
    (status = 200, description = "OpenAI's model list", body = serde_json::Value),
    (status = 400, description = "Invalid request (from the gateway or the upstream)", body = ErrorBody),
    (status = 401, description = "Missing or wrong API key", body = ErrorBody),
    (status = 429, description = "The upstream rate-limited every token tried", body = ErrorBody),
    (status = 502, description = "The upstream failed or is unreachable", body = ErrorBody),
    (status = 503, description = "No usable token or egress proxy", body = ErrorBody),
    (status = 504, description = "The upstream did not answer in time", body = ErrorBody),
))]
pub(super) async fn list_models(state: &AppState, call: Call) -> Reply {
    let rec = record(call, "/v1/models", String::new(), false);
    let req = UpstreamRequest {
        method: Method::GET,
        path: Cow::Borrowed("/models"),
        body: None,
        stream: false,
        accept: Some(http::HeaderValue::from_static("application/json")),
    };
    forward(state, req, rec).await
}

/// One model from the upstream, passed through.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "openai", operation_id = "get_model",
    params(("id" = String, Path, description = "Model id")),
    security(("api_key" = [])), responses(
    (status = 200, description = "OpenAI's model object", body = serde_json::Value),
    (status = 404, description = "No such model", body = ErrorBody),
    (status = 400, description = "Invalid request (from the gateway or the upstream)", body = ErrorBody),
    (status = 401, description = "Missing or wrong API key", body = ErrorBody),
    (status = 429, description = "The upstream rate-limited every token tried", body = ErrorBody),
    (status = 502, description = "The upstream failed or is unreachable", body = ErrorBody),
    (status = 503, description = "No usable token or egress proxy", body = ErrorBody),
    (status = 504, description = "The upstream did not answer in time", body = ErrorBody),
))]
pub(super) async fn get_model(
    state: &AppState,
    call: Call,
    encoded_id: &str,
) -> Result<Reply, ApiError> {
    // The path's segment, percent-decoded as axum's `Path` did.
    let id = percent_encoding::percent_decode_str(encoded_id)
        .decode_utf8()
        .map_err(|_| ApiError::bad_param("id", "model id is not valid UTF-8"))?;
    if id.is_empty() || id.len() > 200 || id.contains(['/', '?', '#']) {
        return Err(ApiError::bad_param("id", "invalid model id"));
    }
    let rec = record(call, "/v1/models/{id}", id.to_string(), false);
    // The id goes into the upstream path: percent-encode everything but the unreserved characters.
    let encoded: String = id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let req = UpstreamRequest {
        method: Method::GET,
        path: Cow::Owned(format!("/models/{encoded}")),
        body: None,
        stream: false,
        accept: Some(http::HeaderValue::from_static("application/json")),
    };
    Ok(forward(state, req, rec).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_exactly_the_listed_routes() {
        for (path, method) in ROUTES {
            let path = path.replace("{id}", "grok-4");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            assert!(Route::of(&m, &path).is_ok(), "{method} {path}");
            let other = if m == Method::POST {
                Method::GET
            } else {
                Method::POST
            };
            let refused = Route::of(&other, &path).unwrap_err();
            assert!(matches!(refused, NoRoute::Method(_)), "{path}");
            let answer = refused.answer(&other, &path);
            assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert!(answer.headers().contains_key(http::header::ALLOW));
        }
        assert_eq!(
            Route::of(&Method::HEAD, "/v1/models").unwrap(),
            Route::Models
        );
        assert_eq!(
            Route::of(&Method::GET, "/v1/models/a%2Fb").unwrap(),
            Route::Model("a%2Fb".into())
        );
        for path in [
            "/v1/",
            "/v1/chat",
            "/v1/chat/completions/",
            "/v1/models/",
            "/v1/models/a/b",
            "/v1/embeddings",
        ] {
            assert_eq!(
                Route::of(&Method::POST, path),
                Err(NoRoute::Unknown),
                "{path}"
            );
        }
    }
}
