//! HTTP in, HTTP out: the routers. No business rules here; handlers call the services.

mod admin;
pub mod error;
mod logs;
mod openai;
pub mod openapi;
mod plugins;
mod proxies;
pub mod ratelimit;
mod settings;
mod timeline;
mod ui;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Sessions;
use crate::calllog::CallLog;
use crate::config::{Live, StorageMode};
use crate::tokens::TokenPool;
use crate::upstream::Forwarder;
use error::{ApiError, ErrorBody};
pub use openai::Route as V1Route;

pub struct AppInner {
    /// The running settings; read with one `load()` per use.
    pub settings: Arc<Live>,
    /// Applies setting changes (admin API and file watcher).
    pub settings_manager: crate::live::Manager,
    pub forwarder: Forwarder,
    pub tokens: Arc<TokenPool>,
    pub sessions: Sessions,
    pub calllog: CallLog,
    /// `None` when another recorder was installed first (only in embedding tests).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub plugins: crate::plugins::Registry,
    /// `None` when no webhook is configured.
    pub webhooks: Option<crate::webhook::Dispatcher>,
    pub storage_mode: StorageMode,
    pub started: Instant,
    /// Per-client request rate on `/v1`; `None` when `global.rate_limit_per_minute` is 0.
    pub rate_limit: Option<Arc<ratelimit::ClientRateLimit>>,
}

/// Shared by every handler; cloning is one `Arc` bump.
#[derive(Clone)]
pub struct AppState(pub Arc<AppInner>);

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// The request id: the client's `X-Request-Id` when it sent a sane one, else a new UUID. Only
/// [`request_id_from`] makes one, so it is always 1 to [`RequestId::MAX_LEN`] visible ASCII bytes: a valid
/// header value, and short enough to copy onto the stack.
#[derive(Clone, Debug)]
pub struct RequestId(String);

impl RequestId {
    pub const MAX_LEN: usize = 128;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The request's id: the client's `x-request-id` when it is sane, else a new UUID. The server makes it (the
/// connection loop for the `/v1` requests it reads, hyper's service for the others), hands it to the handler
/// and puts it into the answer's headers for every route: there rather than in an axum `from_fn` layer, which
/// boxes the inner service and the future per request (measured: 68.6 k → 67.4 k instructions per chat request
/// without it).
pub fn request_id(headers: &HeaderMap) -> RequestId {
    request_id_from(headers.get("x-request-id").map(http::HeaderValue::as_bytes))
}

/// [`request_id`] from the raw value of the client's `x-request-id` header, if it sent one.
pub fn request_id_from(sent: Option<&[u8]>) -> RequestId {
    let id = sent
        .filter(|v| {
            !v.is_empty() && v.len() <= RequestId::MAX_LEN && v.iter().all(u8::is_ascii_graphic)
        })
        // Checked just above: visible ASCII is UTF-8.
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
        // Encoded straight into a buffer, then copied as is: `to_string` on a `&mut str` (or on the `Uuid`)
        // goes through the formatting machinery per request.
        .unwrap_or_else(|| {
            let mut buf = uuid::Uuid::encode_buffer();
            String::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf))
        });
    RequestId(id)
}

/// Everything the gateway serves over HTTP: `/v1/...` straight to [`openai::serve`], every other path through
/// axum's router. Cloning is two `Arc` bumps (done per request).
#[derive(Clone)]
pub struct App {
    state: AppState,
    router: Router,
}

impl App {
    pub fn new(state: AppState) -> App {
        App {
            router: router(state.clone()),
            state,
        }
    }

    /// Answers one request from the client at `addr`; `id` is its request id (see [`request_id`]).
    pub async fn serve(
        self,
        addr: SocketAddr,
        id: RequestId,
        mut req: http::Request<hyper::body::Incoming>,
    ) -> Response {
        if req.uri().path().starts_with("/v1/") {
            return openai::serve(&self.state, addr, id, req).await;
        }
        req.extensions_mut().insert(ConnectInfo(addr));
        // Boxed: the admin API and the page are rare next to `/v1`, and their future is large.
        let mut router = self.router;
        let answer = Box::pin(tower_service::Service::call(&mut router, req)).await;
        match answer {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// The `/v1` requests the server reads itself (`server::conn`): the same route, gate and handlers as
/// [`App::serve`], with the body already read.
impl App {
    /// `global.max_body_bytes`: a larger declared body is left to [`App::serve`], which answers 413.
    pub fn max_body_bytes(&self) -> usize {
        self.state.settings.load().global.max_body_bytes
    }

    /// Route and gate of a `/v1` request, before its body is read (`openai::admit`).
    pub fn admit_v1(
        &self,
        method: &http::Method,
        path: &str,
        ip: std::net::IpAddr,
        authorization: Option<&[u8]>,
    ) -> Result<V1Route, Box<Response>> {
        openai::admit(&self.state, method, path, ip, authorization)
    }

    /// Answers an admitted `/v1` request whose whole body is `body`.
    pub async fn serve_v1(
        self,
        addr: SocketAddr,
        id: RequestId,
        route: V1Route,
        body: bytes::Bytes,
    ) -> crate::upstream::Reply {
        openai::handle(&self.state, openai::Call { addr, id }, route, body).await
    }
}

/// The routes other than `/v1`: the admin API, the page, health, metrics and the OpenAPI document.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(admin::router(state.clone()))
        .merge(proxies::router(state.clone()))
        .merge(ui::router(state.clone()))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .with_state(state)
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `healthy` when the gateway answers.
    status: &'static str,
    service: &'static str,
    version: &'static str,
    /// `file`, `redis` or `mysql`.
    storage_mode: &'static str,
    uptime_s: u64,
    /// Tokens in the pool.
    tokens: usize,
}

/// Liveness and a few facts; no auth.
#[utoipa::path(get, path = "/health", tag = "service", operation_id = "health", responses(
    (status = 200, description = "The gateway is up", body = Health),
))]
pub(crate) async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "healthy",
        service: "grok2api",
        version: env!("CARGO_PKG_VERSION"),
        storage_mode: state.storage_mode.as_str(),
        uptime_s: state.started.elapsed().as_secs(),
        tokens: state.tokens.len(),
    })
}

/// Prometheus text format; bearer-protected when `global.metrics_token` is set.
#[utoipa::path(get, path = "/metrics", tag = "service", operation_id = "metrics",
    security((), ("metrics_token" = [])), responses(
    (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
    (status = 401, description = "`global.metrics_token` is set and the bearer token does not match it", body = ErrorBody),
    (status = 503, description = "No metrics recorder installed", body = ErrorBody),
))]
pub(crate) async fn metrics(State(state): State<AppState>, headers: http::HeaderMap) -> Response {
    let settings = state.settings.get();
    let want = settings.global.metrics_token.expose();
    if !want.is_empty() {
        let got = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !crate::secret::constant_time_eq(got.trim(), want) {
            return ApiError::unauthorized(
                "invalid_metrics_token",
                "metrics need a valid bearer token",
            )
            .into_response();
        }
    }
    let Some(handle) = &state.metrics else {
        return ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "metrics_unavailable",
            "metrics recorder not installed",
        )
        .into_response();
    };
    crate::telemetry::set_state_gauges(&state.tokens, &state.calllog.queue_stats());
    if let Some(w) = &state.webhooks {
        crate::telemetry::set_webhook_metrics(&w.status());
    }
    let mut text = handle.render();
    state.calllog.request_metrics().render_histograms(&mut text);
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}
