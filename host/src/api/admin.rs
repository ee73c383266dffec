//! The admin API under `/api`, with Grok2API's envelopes: `{"success": true, "data": …}` and
//! `{"success": false, "message": …}`. Every route but `/api/login` needs `Authorization: Bearer <session>`.
//! Token secrets leave only masked; tokens are addressed by their public id (the secret also works).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{admin_failure, ApiError};
use super::AppState;
use crate::auth::{LoginError, SessionCheck};
use crate::tokens::{Token, TokenKind, TokenStatus};
use crate::util::now_ms;

/// JSON body whose rejection is a JSON error naming the problem.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(super) struct Body<T>(pub(super) T);

pub fn router(state: AppState) -> Router<AppState> {
    let protected = Router::new()
        .route("/api/logout", post(logout))
        .route("/api/tokens", get(list_tokens))
        .route("/api/tokens/add", post(add_tokens))
        .route("/api/tokens/delete", post(delete_tokens))
        .route("/api/tokens/tags", post(set_tags))
        .route("/api/tokens/note", post(set_note))
        .route("/api/tokens/test", post(test_token))
        .route("/api/tokens/tags/all", get(all_tags))
        .route("/api/stats", get(stats))
        .route("/api/storage/mode", get(storage_mode))
        .merge(super::logs::router())
        .merge(super::plugins::router())
        .merge(super::settings::router())
        .merge(super::webhooks::router())
        .route_layer(middleware::from_fn_with_state(state, require_session));
    Router::new()
        .route("/api/login", post(login))
        .merge(protected)
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub(super) async fn require_session(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer(&req) else {
        return ApiError::unauthorized("UNAUTHORIZED", "未授权访问").into_response();
    };
    match state.sessions.check(token).await {
        SessionCheck::Valid => next.run(req).await,
        SessionCheck::Unavailable => ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "STORAGE_UNAVAILABLE",
            "shared storage is unavailable; try again",
        )
        .into_response(),
        SessionCheck::Unknown => {
            ApiError::unauthorized("SESSION_INVALID", "会话无效").into_response()
        }
        SessionCheck::Expired => {
            ApiError::unauthorized("SESSION_EXPIRED", "会话已过期").into_response()
        }
    }
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Body(body): Body<LoginBody>,
) -> Response {
    let ip = addr.ip();
    if let Some(wait) = state.sessions.locked_out(ip).await {
        return ApiError::new(
            http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "TOO_MANY_ATTEMPTS",
            format!("登录失败次数过多，请 {wait} 秒后再试"),
        )
        .with_retry_after(http::HeaderValue::from_str(&wait.to_string()).ok())
        .into_response();
    }
    let settings = state.settings.get();
    let g = &settings.global;
    match state
        .sessions
        .login(
            ip,
            &body.username,
            &body.password,
            &g.admin_username,
            g.admin_password.expose(),
        )
        .await
    {
        Ok(token) => {
            Json(json!({"success": true, "token": token, "message": "登录成功"})).into_response()
        }
        Err(LoginError::BadCredentials) => {
            Json(json!({"success": false, "token": null, "message": "用户名或密码错误"}))
                .into_response()
        }
        Err(LoginError::Unavailable) => ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "STORAGE_UNAVAILABLE",
            "shared storage is unavailable; try again",
        )
        .into_response(),
    }
}

async fn logout(State(state): State<AppState>, req: Request) -> Response {
    if let Some(t) = bearer(&req) {
        state.sessions.logout(t).await;
    }
    Json(json!({"success": true, "message": "登出成功"})).into_response()
}

fn parse_kind(s: Option<&str>) -> Result<Option<TokenKind>, ApiError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => TokenKind::parse(s).map(Some).ok_or_else(|| {
            ApiError::bad_param("token_type", "无效的Token类型 (sso, ssoNormal, ssoSuper)")
        }),
    }
}

fn token_info(t: &Token, now: i64) -> Value {
    let (last_failure_time, last_failure_reason) = t.last_failure();
    json!({
        "token": t.masked(),
        "token_id": t.id,
        "token_type": t.kind,
        "created_time": t.created_time,
        "remaining_queries": t.remaining_queries(),
        "heavy_remaining_queries": t.heavy_remaining_queries(),
        "status": t.status(now).label(),
        "tags": t.tags(),
        "note": t.note(),
        "failed_count": t.failed_count(),
        "last_failure_time": last_failure_time,
        "last_failure_reason": last_failure_reason,
        "cooldown_remaining_ms": t.cooldown_remaining_ms(now),
        "in_flight": t.in_flight(),
    })
}

#[derive(Deserialize)]
struct ListQuery {
    page: Option<i64>,
    page_size: Option<i64>,
    limit: Option<i64>,
    sort: Option<String>,
    token_type: Option<String>,
    status: Option<String>,
    tag: Option<String>,
}

async fn list_tokens(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let kind = parse_kind(q.token_type.as_deref())?;
    let status = match q.status.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(TokenStatus::parse(s).ok_or_else(|| {
            ApiError::bad_param("status", "status must be 未使用, 限流中, 失效 or 正常")
        })?),
    };
    let tag = q.tag.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let now = now_ms();
    let snapshot = state.tokens.snapshot();
    let mut list: Vec<&std::sync::Arc<Token>> = snapshot
        .iter()
        .filter(|t| kind.is_none_or(|k| t.kind == k))
        .filter(|t| status.is_none_or(|s| t.status(now) == s))
        .filter(|t| tag.is_none_or(|tag| t.tags().iter().any(|x| x == tag)))
        .collect();
    // Grok2API lists normal tokens, then super ones, unless a sort is asked for.
    list.sort_by_key(|t| t.kind == TokenKind::Super);
    match q.sort.as_deref() {
        Some("created_desc") => {
            list.sort_by_key(|t| std::cmp::Reverse(t.created_time.unwrap_or(0)))
        }
        Some("created_asc") => list.sort_by_key(|t| t.created_time.unwrap_or(0)),
        None | Some("") => {}
        Some(_) => {
            return Err(ApiError::bad_param(
                "sort",
                "sort must be created_desc or created_asc",
            ))
        }
    }
    let total = list.len();
    if let Some(limit) = q.limit.filter(|l| *l > 0) {
        let data: Vec<Value> = list
            .iter()
            .take(limit as usize)
            .map(|t| token_info(t, now))
            .collect();
        return Ok(Json(
            json!({"success": true, "data": data, "total": total, "page": null, "page_size": null}),
        )
        .into_response());
    }
    let page = q.page.unwrap_or(1).max(1) as usize;
    let page_size = match q.page_size.unwrap_or(10) {
        n if n < 1 => 10,
        n => n.min(1000) as usize,
    };
    let data: Vec<Value> = list
        .iter()
        .skip((page - 1).saturating_mul(page_size))
        .take(page_size)
        .map(|t| token_info(t, now))
        .collect();
    Ok(Json(json!({"success": true, "data": data, "total": total, "page": page, "page_size": page_size})).into_response())
}

#[derive(Deserialize)]
struct TokensBody {
    tokens: Vec<String>,
    token_type: Option<String>,
}

async fn add_tokens(
    State(state): State<AppState>,
    Body(body): Body<TokensBody>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(body.token_type.as_deref())?.unwrap_or(TokenKind::Normal);
    // One per line is also accepted inside a single string, as pasted into the page.
    let secrets: Vec<String> = body
        .tokens
        .iter()
        .flat_map(|s| s.lines())
        .map(str::to_string)
        .collect();
    let r = state.tokens.add(&secrets, kind).await;
    save_now(&state).await;
    Ok(Json(json!({
        "success": true,
        "message": format!("成功添加 {} 个Token", r.added),
        "count": r.added,
        "existing": r.existing,
        "skipped_blank": r.skipped_blank,
    }))
    .into_response())
}

async fn delete_tokens(
    State(state): State<AppState>,
    Body(body): Body<TokensBody>,
) -> Result<Response, ApiError> {
    parse_kind(body.token_type.as_deref())?;
    // Resolved before the delete, while secrets still map to ids: their proxy bindings go too.
    let ids: Vec<String> = body
        .tokens
        .iter()
        .filter_map(|k| state.tokens.find(k).map(|t| t.id.clone()))
        .collect();
    let n = state.tokens.delete(&body.tokens).await;
    save_now(&state).await;
    if state.forwarder.proxies().unbind_tokens(&ids) > 0 {
        if let Err(e) = state.forwarder.proxies().save_if_dirty().await {
            tracing::error!(error = %e, "saving proxy state after a token delete failed; will retry");
        }
    }
    Ok(
        Json(json!({"success": true, "message": format!("成功删除 {n} 个Token"), "count": n}))
            .into_response(),
    )
}

/// Admin edits are rare and expected to stick at once; requests leave saving to the batch saver.
async fn save_now(state: &AppState) {
    if let Err(e) = state.tokens.save_if_dirty().await {
        tracing::error!(error = %e, "saving tokens after an admin edit failed; the batch saver will retry");
    }
}

#[derive(Deserialize)]
struct TagsBody {
    token: String,
    tags: Vec<String>,
}

async fn set_tags(State(state): State<AppState>, Body(body): Body<TagsBody>) -> Response {
    let Some(t) = state.tokens.find(&body.token) else {
        return admin_failure("Token不存在");
    };
    let tags = state.tokens.set_tags(&t, &body.tags);
    save_now(&state).await;
    Json(json!({"success": true, "message": "标签更新成功", "tags": tags})).into_response()
}

#[derive(Deserialize)]
struct NoteBody {
    token: String,
    note: String,
}

async fn set_note(State(state): State<AppState>, Body(body): Body<NoteBody>) -> Response {
    let Some(t) = state.tokens.find(&body.token) else {
        return admin_failure("Token不存在");
    };
    let note = state.tokens.set_note(&t, &body.note);
    save_now(&state).await;
    Json(json!({"success": true, "message": "备注更新成功", "note": note})).into_response()
}

#[derive(Deserialize)]
struct TestBody {
    token: String,
}

async fn test_token(State(state): State<AppState>, Body(body): Body<TestBody>) -> Response {
    let Some(t) = state.tokens.find(&body.token) else {
        return Json(json!({"success": false, "message": "Token数据异常",
            "data": {"valid": false, "error_type": "unknown", "error_code": "data_error"}}))
        .into_response();
    };
    let lease = state.tokens.lease(&t);
    let answer = match state.forwarder.probe(&lease).await {
        Ok(status) if (200..300).contains(&status) => {
            // A working token is usable again even if it had been marked expired.
            state.tokens.revive(&t);
            json!({"success": true, "message": "Token有效",
                "data": {"valid": true, "status_code": status, "remaining_queries": t.remaining_queries()}})
        }
        Ok(status @ (401 | 403)) => json!({"success": false, "message": "Token已失效",
            "data": {"valid": false, "error_type": "expired", "error_code": status}}),
        Ok(429) => json!({"success": false, "message": "Token已被限流",
            "data": {"valid": false, "error_type": "limited", "error_code": 429}}),
        Ok(status) => json!({"success": false, "message": format!("上游返回异常状态码: {status}"),
            "data": {"valid": false, "error_type": "blocked", "error_code": status}}),
        Err(e) => json!({"success": false, "message": format!("服务器被block或网络错误: {e}"),
            "data": {"valid": false, "error_type": "network", "error_code": null}}),
    };
    drop(lease);
    save_now(&state).await;
    Json(answer).into_response()
}

async fn all_tags(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"success": true, "data": state.tokens.all_tags()}))
}

async fn stats(State(state): State<AppState>) -> Json<Value> {
    let now = now_ms();
    let snapshot = state.tokens.snapshot();
    let count = |kind: TokenKind| {
        let (mut total, mut unused, mut limited, mut expired, mut active) = (0, 0, 0, 0, 0);
        for t in snapshot.iter().filter(|t| t.kind == kind) {
            total += 1;
            match t.status(now) {
                TokenStatus::Unused => unused += 1,
                TokenStatus::Limited => limited += 1,
                TokenStatus::Expired => expired += 1,
                TokenStatus::Active => active += 1,
            }
        }
        json!({"total": total, "unused": unused, "limited": limited, "expired": expired, "active": active})
    };
    Json(json!({"success": true, "data": {
        "normal": count(TokenKind::Normal),
        "super": count(TokenKind::Super),
        "total": snapshot.len(),
    }}))
}

async fn storage_mode(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"success": true, "data": {"mode": state.storage_mode.as_str().to_uppercase()}}))
}
