//! The proxy admin API, in Grok2API Pro's shapes: `GET/POST/DELETE /api/proxies`, `/api/proxies/assign`,
//! `/unassign`, `/test`, `/health/reset`, `/refresh`. Proxy credentials leave only masked (`user:****@host`);
//! tokens are named by id (the secret is also accepted as input).

use axum::extract::{Query, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::admin::{require_session, Body};
use super::error::admin_failure;
use super::AppState;
use crate::proxy::{mask_proxy_url, normalize_proxy_url, AssignError, ClientOptions, FetchError};

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

async fn list(State(state): State<AppState>) -> Response {
    let l = state.forwarder.proxies().listing();
    Json(json!({"success": true, "data": {
        "proxies": l.proxies,
        "assignments": l.assignments,
        "total": l.total,
        "healthy": l.proxies.iter().filter(|p| p.healthy).count(),
        "direct_allowed": state.forwarder.proxies().direct_allowed(),
        "selector": state.forwarder.proxies().selector_name(),
    }}))
    .into_response()
}

#[derive(Deserialize)]
struct UrlBody {
    url: String,
}

async fn add(State(state): State<AppState>, Body(body): Body<UrlBody>) -> Response {
    let pool = state.forwarder.proxies();
    match pool.add_admin(&body.url) {
        Ok((e, new)) => {
            if new {
                tracing::info!(proxy = %e.masked(), "proxy added by admin");
            }
            save_now(&state).await;
            Json(json!({"success": true, "message": "代理添加成功", "data": {"url": e.masked().as_ref(), "added": new}}))
                .into_response()
        }
        Err(e) => admin_failure(format!("代理格式无效: {e}")),
    }
}

async fn remove(State(state): State<AppState>, Body(body): Body<UrlBody>) -> Response {
    match state.forwarder.proxies().remove(&body.url) {
        Ok(true) => {
            tracing::info!(proxy = %mask_proxy_url(body.url.trim()), "proxy removed by admin");
            save_now(&state).await;
            Json(json!({"success": true, "message": "代理删除成功"})).into_response()
        }
        Ok(false) => admin_failure("代理不存在"),
        Err(e) => admin_failure(format!("代理格式无效: {e}")),
    }
}

#[derive(Deserialize)]
struct AssignBody {
    proxy_url: String,
    sso: String,
}

async fn assign(State(state): State<AppState>, Body(body): Body<AssignBody>) -> Response {
    let Some(id) = token_id(&state, &body.sso) else {
        return admin_failure("Token不存在");
    };
    match state.forwarder.proxies().assign(&body.proxy_url, &id) {
        Ok(e) => {
            save_now(&state).await;
            Json(json!({"success": true, "message": "绑定成功", "data": {"sso": id, "proxy_url": e.masked().as_ref()}}))
                .into_response()
        }
        Err(AssignError::UnknownProxy) => admin_failure("代理不存在"),
        Err(AssignError::Unhealthy) => admin_failure("代理不健康，请先重置健康状态"),
    }
}

#[derive(Deserialize)]
struct UnassignBody {
    sso: String,
}

async fn unassign(State(state): State<AppState>, Body(body): Body<UnassignBody>) -> Response {
    let id = token_id(&state, &body.sso).unwrap_or_else(|| body.sso.trim().to_string());
    match state.forwarder.proxies().unassign(&id) {
        Some(_) => {
            save_now(&state).await;
            Json(json!({"success": true, "message": "解绑成功"})).into_response()
        }
        None => admin_failure("SSO未绑定代理"),
    }
}

#[derive(Deserialize, Default)]
struct ApplyQuery {
    #[serde(default)]
    apply: bool,
}

/// Tests a proxy against `grok.proxy_test_url`. Changes its health only with `?apply=true` (and only when it is
/// in the pool).
async fn test(
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
            let client = match crate::proxy::build_client(
                Some(&url),
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
    let data = json!({
        "status_code": result.status_code,
        "response_time": result.response_time,
        "note": result.note,
        "error": result.error,
        "applied": q.apply && entry.is_some(),
        "healthy": entry.as_ref().map(|e| e.healthy()),
    });
    Ok(Json(if result.reachable {
        json!({"success": true, "message": "代理连通正常", "data": data})
    } else if let Some(code) = result.status_code {
        json!({"success": false, "message": format!("代理返回异常状态码: {code}"), "data": data})
    } else {
        json!({"success": false, "message": format!("代理连接失败: {}", result.error.as_deref().unwrap_or("")), "data": data})
    })
    .into_response())
}

async fn health_reset(State(state): State<AppState>, Body(body): Body<UrlBody>) -> Response {
    match state.forwarder.proxies().reset_health(&body.url) {
        Ok(true) => {
            save_now(&state).await;
            Json(json!({"success": true, "message": "健康状态已重置"})).into_response()
        }
        Ok(false) => admin_failure("代理不存在"),
        Err(e) => admin_failure(format!("代理格式无效: {e}")),
    }
}

async fn refresh(State(state): State<AppState>) -> Response {
    match state.forwarder.proxies().refresh().await {
        Ok(report) => {
            save_now(&state).await;
            Json(json!({"success": true, "message": format!("代理池已刷新: 新增 {} 个, 移除 {} 个", report.added.len(), report.dropped.len()), "data": report}))
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
