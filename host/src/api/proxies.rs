//! The proxy admin API, in Grok2API Pro's shapes: `GET/POST/DELETE /api/proxies`, `/api/proxies/assign`,
//! `/unassign`, `/test`, `/health/reset`, `/refresh`. Proxy credentials leave only masked (`user:****@host`);
//! tokens are named by id (the secret is also accepted as input).

use axum::extract::{Query, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::admin::{require_session, Body};
use super::error::{admin_failure, AdminData, AdminMessage, ErrorBody};
use super::AppState;
use crate::proxy::{
    mask_proxy_url, normalize_proxy_url, AssignError, ClientOptions, FetchError, ProxyView,
    RefreshReport,
};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/proxies", get(list).post(add).delete(remove))
        .route("/api/proxies/assign", post(assign))
        .route("/api/proxies/unassign", post(unassign))
        .route("/api/proxies/test", post(test))
        .route("/api/proxies/health/reset", post(health_reset))
        .route("/api/proxies/refresh", post(refresh))
        .route_layer(middleware::from_fn_with_state(state, require_session))
}

/// Token id for a token id or secret; an unknown key is taken as an id (bindings of deleted tokens).
fn token_id(state: &AppState, key: &str) -> Option<String> {
    state.tokens.find(key).map(|t| t.id.clone())
}

#[derive(Serialize, ToSchema)]
pub(super) struct ProxiesData {
    proxies: Vec<ProxyView>,
    /// Token id → masked proxy URL.
    assignments: indexmap::IndexMap<String, String>,
    total: usize,
    healthy: usize,
    /// Whether requests may go out directly when no proxy is usable.
    direct_allowed: bool,
    /// The proxy selector in use (built-in or a plugin).
    selector: String,
}

/// The proxy pool (credentials masked) and token bindings.
#[utoipa::path(get, path = "/api/proxies", tag = "proxies", operation_id = "list_proxies", security(("admin_session" = [])), responses(
    (status = 200, description = "The pool", body = AdminData<ProxiesData>),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn list(State(state): State<AppState>) -> Response {
    let pool = state.forwarder.proxies();
    let l = pool.listing();
    AdminData::ok(ProxiesData {
        healthy: l.proxies.iter().filter(|p| p.healthy).count(),
        proxies: l.proxies,
        assignments: l.assignments,
        total: l.total,
        direct_allowed: pool.direct_allowed(),
        selector: pool.selector_name(),
    })
}

#[derive(Deserialize, ToSchema)]
pub(super) struct UrlBody {
    /// `scheme://[user:pass@]host:port` (http, https, socks5, socks5h) or `host:port`.
    url: String,
}

/// `data` only on success; `success: false` (HTTP 200) for an invalid URL.
#[derive(Serialize, ToSchema)]
pub(super) struct AddProxyAnswer {
    success: bool,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<AddedProxy>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct AddedProxy {
    /// Masked.
    url: String,
    /// False when it was already in the pool.
    added: bool,
}

/// Add a proxy to the pool.
#[utoipa::path(post, path = "/api/proxies", tag = "proxies", operation_id = "add_proxy", request_body = UrlBody, security(("admin_session" = [])), responses(
    (status = 200, description = "Added, or `success: false` for an invalid URL", body = AddProxyAnswer),
    (status = 400, description = "Body is not valid JSON", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body lacks a field or has a wrong type", body = ErrorBody),
))]
pub(super) async fn add(State(state): State<AppState>, Body(body): Body<UrlBody>) -> Response {
    let pool = state.forwarder.proxies();
    match pool.add_admin(&body.url) {
        Ok((e, new)) => {
            if new {
                tracing::info!(proxy = %e.masked(), "proxy added by admin");
            }
            save_now(&state).await;
            Json(AddProxyAnswer {
                success: true,
                message: "代理添加成功".into(),
                data: Some(AddedProxy {
                    url: e.masked().to_string(),
                    added: new,
                }),
            })
            .into_response()
        }
        Err(e) => admin_failure(format!("代理格式无效: {e}")),
    }
}

/// Remove a proxy from the pool.
#[utoipa::path(delete, path = "/api/proxies", tag = "proxies", operation_id = "remove_proxy", request_body = UrlBody, security(("admin_session" = [])), responses(
    (status = 200, description = "Removed, or `success: false` for an unknown or invalid URL", body = AdminMessage),
    (status = 400, description = "Body is not valid JSON", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body lacks a field or has a wrong type", body = ErrorBody),
))]
pub(super) async fn remove(State(state): State<AppState>, Body(body): Body<UrlBody>) -> Response {
    match state.forwarder.proxies().remove(&body.url) {
        Ok(true) => {
            tracing::info!(proxy = %mask_proxy_url(body.url.trim()), "proxy removed by admin");
            save_now(&state).await;
            AdminMessage::ok("代理删除成功")
        }
        Ok(false) => admin_failure("代理不存在"),
        Err(e) => admin_failure(format!("代理格式无效: {e}")),
    }
}

#[derive(Deserialize, ToSchema)]
pub(super) struct AssignBody {
    proxy_url: String,
    /// Token id or secret.
    sso: String,
}

/// `data` only on success; `success: false` (HTTP 200) for an unknown token or proxy.
#[derive(Serialize, ToSchema)]
pub(super) struct AssignAnswer {
    success: bool,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Assignment>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct Assignment {
    /// Token id.
    sso: String,
    /// Masked.
    proxy_url: String,
}

/// Bind a token to a proxy: its requests always leave through it.
#[utoipa::path(post, path = "/api/proxies/assign", tag = "proxies", operation_id = "assign_proxy", request_body = AssignBody, security(("admin_session" = [])), responses(
    (status = 200, description = "Bound, or `success: false`", body = AssignAnswer),
    (status = 400, description = "Body is not valid JSON", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body lacks a field or has a wrong type", body = ErrorBody),
))]
pub(super) async fn assign(
    State(state): State<AppState>,
    Body(body): Body<AssignBody>,
) -> Response {
    let Some(id) = token_id(&state, &body.sso) else {
        return admin_failure("Token不存在");
    };
    match state.forwarder.proxies().assign(&body.proxy_url, &id) {
        Ok(e) => {
            save_now(&state).await;
            Json(AssignAnswer {
                success: true,
                message: "绑定成功".into(),
                data: Some(Assignment {
                    sso: id,
                    proxy_url: e.masked().to_string(),
                }),
            })
            .into_response()
        }
        Err(AssignError::UnknownProxy) => admin_failure("代理不存在"),
        Err(AssignError::Unhealthy) => admin_failure("代理不健康，请先重置健康状态"),
    }
}

#[derive(Deserialize, ToSchema)]
pub(super) struct UnassignBody {
    /// Token id or secret.
    sso: String,
}

/// Remove a token's proxy binding.
#[utoipa::path(post, path = "/api/proxies/unassign", tag = "proxies", operation_id = "unassign_proxy", request_body = UnassignBody, security(("admin_session" = [])), responses(
    (status = 200, description = "Unbound, or `success: false` when it was not bound", body = AdminMessage),
    (status = 400, description = "Body is not valid JSON", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body lacks a field or has a wrong type", body = ErrorBody),
))]
pub(super) async fn unassign(
    State(state): State<AppState>,
    Body(body): Body<UnassignBody>,
) -> Response {
    let id = token_id(&state, &body.sso).unwrap_or_else(|| body.sso.trim().to_string());
    match state.forwarder.proxies().unassign(&id) {
        Some(_) => {
            save_now(&state).await;
            AdminMessage::ok("解绑成功")
        }
        None => admin_failure("SSO未绑定代理"),
    }
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ApplyQuery {
    /// Record the result in the pool's health state (only for a proxy in the pool).
    #[serde(default)]
    apply: bool,
}

/// `data` only when the URL was valid; `success: false` (HTTP 200) when the proxy does not work.
#[derive(Serialize, ToSchema)]
pub(super) struct ProxyTestAnswer {
    success: bool,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<ProxyTestData>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ProxyTestData {
    status_code: Option<u16>,
    /// Seconds.
    response_time: f64,
    note: String,
    /// Credentials masked.
    error: Option<String>,
    applied: bool,
    /// The pool's health of the proxy; null when it is not in the pool.
    healthy: Option<bool>,
}

/// Tests a proxy against `grok.proxy_test_url`. Changes its health only with `?apply=true` (and only when it is
/// in the pool).
#[utoipa::path(post, path = "/api/proxies/test", tag = "proxies", operation_id = "test_proxy", params(ApplyQuery), request_body = UrlBody, security(("admin_session" = [])), responses(
    (status = 200, description = "The probe's result", body = ProxyTestAnswer),
    (status = 400, description = "Body is not valid JSON", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body lacks a field or has a wrong type", body = ErrorBody),
))]
pub(super) async fn test(
    State(state): State<AppState>,
    q: Result<Query<ApplyQuery>, axum::extract::rejection::QueryRejection>,
    Body(body): Body<UrlBody>,
) -> Result<Response, super::error::ApiError> {
    let Query(q) = q?;
    let pool = state.forwarder.proxies();
    let url = match normalize_proxy_url(&body.url) {
        Ok(u) => u,
        Err(e) => return Ok(admin_failure(format!("代理格式无效: {e}"))),
    };
    let entry = pool.entry(&url);
    let result = match &entry {
        Some(e) if q.apply => pool.check(e).await,
        Some(e) => {
            let mut r = crate::proxy::probe(e.client(), &pool.options().test_url).await;
            r.error = r.error.map(|err| e.scrub(&err));
            r
        }
        None => {
            let client = match crate::proxy::proxy_client(
                &url,
                ClientOptions {
                    connect_timeout: state.settings.load().grok.connect_timeout(),
                },
            ) {
                Ok(c) => c,
                Err(e) => return Ok(admin_failure(format!("代理格式无效: {e}"))),
            };
            let mut r = crate::proxy::probe(&client, &pool.options().test_url).await;
            // The error text may quote the URL: scrub the password.
            if let (Some(err), Ok(parsed)) = (&r.error, reqwest::Url::parse(&url)) {
                if let Some(p) = parsed.password().filter(|p| !p.is_empty()) {
                    r.error = Some(err.replace(&url, &mask_proxy_url(&url)).replace(p, "****"));
                }
            }
            r
        }
    };
    if q.apply {
        save_now(&state).await;
    }
    let message = if result.reachable {
        "代理连通正常".to_string()
    } else if let Some(code) = result.status_code {
        format!("代理返回异常状态码: {code}")
    } else {
        format!("代理连接失败: {}", result.error.as_deref().unwrap_or(""))
    };
    Ok(Json(ProxyTestAnswer {
        success: result.reachable,
        message,
        data: Some(ProxyTestData {
            status_code: result.status_code,
            response_time: result.response_time,
            note: result.note,
            error: result.error,
            applied: q.apply && entry.is_some(),
            healthy: entry.as_ref().map(|e| e.healthy()),
        }),
    })
    .into_response())
}

/// Mark a proxy healthy again.
#[utoipa::path(post, path = "/api/proxies/health/reset", tag = "proxies", operation_id = "reset_proxy_health", request_body = UrlBody, security(("admin_session" = [])), responses(
    (status = 200, description = "Reset, or `success: false` for an unknown or invalid URL", body = AdminMessage),
    (status = 400, description = "Body is not valid JSON", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body lacks a field or has a wrong type", body = ErrorBody),
))]
pub(super) async fn health_reset(
    State(state): State<AppState>,
    Body(body): Body<UrlBody>,
) -> Response {
    match state.forwarder.proxies().reset_health(&body.url) {
        Ok(true) => {
            save_now(&state).await;
            AdminMessage::ok("健康状态已重置")
        }
        Ok(false) => admin_failure("代理不存在"),
        Err(e) => admin_failure(format!("代理格式无效: {e}")),
    }
}

/// `data` only on success; `success: false` (HTTP 200) when no pool API is configured or it failed.
#[derive(Serialize, ToSchema)]
pub(super) struct RefreshAnswer {
    success: bool,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<RefreshReport>,
}

/// Fetch the proxy pool API (`grok.proxy_pool_url`) now.
#[utoipa::path(post, path = "/api/proxies/refresh", tag = "proxies", operation_id = "refresh_proxies", security(("admin_session" = [])), responses(
    (status = 200, description = "What the fetch changed, or `success: false`", body = RefreshAnswer),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn refresh(State(state): State<AppState>) -> Response {
    match state.forwarder.proxies().refresh().await {
        Ok(report) => {
            save_now(&state).await;
            Json(RefreshAnswer {
                success: true,
                message: format!(
                    "代理池已刷新: 新增 {} 个, 移除 {} 个",
                    report.added.len(),
                    report.dropped.len()
                ),
                data: Some(report),
            })
            .into_response()
        }
        Err(FetchError::NotConfigured) => admin_failure("未配置代理池 API (grok.proxy_pool_url)"),
        Err(e) => admin_failure(format!("代理池刷新失败: {e}")),
    }
}

/// Admin edits should stick at once; requests leave saving to the batch saver.
async fn save_now(state: &AppState) {
    if let Err(e) = state.forwarder.proxies().save_if_dirty().await {
        tracing::error!(error = %e, "saving proxy state after an admin edit failed; the batch saver will retry");
    }
}
