//! The OpenAI-compatible routes under `/v1`.

use std::borrow::Cow;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::{AppState, RequestId};
use crate::calllog::CallRecord;
use crate::secret::constant_time_eq;
use crate::upstream::{ForwardError, UpstreamRequest};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/images/generations", post(images_generations))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route_layer(middleware::from_fn_with_state(state, guard))
}

/// The `/v1` gate: the per-client rate limit, then the API key. One middleware rather than a layer each:
/// every layer boxes the request's future once more.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // First, so failed key guesses count against the client too.
    if let Some(refused) = super::ratelimit::check(&state, &req) {
        return refused;
    }
    if let Some(refused) = client_auth(&state, &req) {
        return refused;
    }
    next.run(req).await
}

/// `Authorization: Bearer <grok.api_key>`; an empty key leaves the routes open (warned about at start-up).
fn client_auth(state: &AppState, req: &Request) -> Option<Response> {
    let settings = state.settings.load();
    let key = settings.grok.api_key.expose();
    if key.is_empty() {
        return None;
    }
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match presented {
        None => Some(
            ApiError::unauthorized(
                "missing_api_key",
                "missing API key: send Authorization: Bearer <key>",
            )
            .into_response(),
        ),
        Some(p) if constant_time_eq(p.trim(), key) => None,
        Some(_) => {
            Some(ApiError::unauthorized("invalid_api_key", "invalid API key").into_response())
        }
    }
}

/// What the gateway reads from a request body; everything else is passed through untouched.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
}

/// What `/v1/chat/completions` reads of OpenAI's request body (the rest goes to the upstream untouched).
/// Describes [`Peek`] for the document; `Peek` stays borrow-only for speed.
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

async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
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

fn peek(body: &[u8]) -> Result<Peek<'_>, ApiError> {
    serde_json::from_slice::<Peek>(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON for this route: {e}"),
        )
    })
}

fn record(
    req_id: &RequestId,
    route: &'static str,
    model: &str,
    stream: bool,
    addr: SocketAddr,
) -> CallRecord {
    let mut r = CallRecord::new(req_id.0.clone(), route, model.to_string(), stream);
    r.client_ip = Some(addr.ip());
    r
}

async fn forward(state: &AppState, req: UpstreamRequest, record: CallRecord) -> Response {
    match state.forwarder.forward(req, record).await {
        Ok(resp) => resp,
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
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(req_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, &headers, body).await?;
    let p = peek(&bytes)?;
    let model = match p.model.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => return Err(ApiError::bad_param("model", "`model` is required")),
    };
    let stream = p.stream.unwrap_or(false);
    let rec = record(&req_id, "/v1/chat/completions", &model, stream, addr);
    let req = UpstreamRequest {
        method: Method::POST,
        path: "/chat/completions".into(),
        body: Some(bytes.clone()),
        model,
        stream,
        accept: Some(http::HeaderValue::from_static(if stream {
            "text/event-stream"
        } else {
            "application/json"
        })),
    };
    Ok(forward(&state, req, rec).await)
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
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(req_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, &headers, body).await?;
    let p = peek(&bytes)?;
    let model = p.model.as_deref().unwrap_or("").trim().to_string();
    let rec = record(&req_id, "/v1/images/generations", &model, false, addr);
    let req = UpstreamRequest {
        method: Method::POST,
        path: "/images/generations".into(),
        body: Some(bytes.clone()),
        model,
        stream: false,
        accept: Some(http::HeaderValue::from_static("application/json")),
    };
    Ok(forward(&state, req, rec).await)
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
pub(super) async fn list_models(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(req_id): Extension<RequestId>,
) -> Response {
    let rec = record(&req_id, "/v1/models", "", false, addr);
    let req = UpstreamRequest {
        method: Method::GET,
        path: "/models".into(),
        body: None,
        model: String::new(),
        stream: false,
        accept: Some(http::HeaderValue::from_static("application/json")),
    };
    forward(&state, req, rec).await
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
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(req_id): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id.is_empty() || id.len() > 200 || id.contains(['/', '?', '#']) {
        return Err(ApiError::bad_param("id", "invalid model id"));
    }
    let rec = record(&req_id, "/v1/models/{id}", &id, false, addr);
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
        path: format!("/models/{encoded}"),
        body: None,
        model: id,
        stream: false,
        accept: Some(http::HeaderValue::from_static("application/json")),
    };
    Ok(forward(&state, req, rec).await)
}
