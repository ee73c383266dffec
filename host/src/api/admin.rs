//! The admin API under `/api`, with Grok2API's envelopes: `{"success": true, "data": …}` and
//! `{"success": false, "message": …}`. Every route but `/api/login` needs `Authorization: Bearer <session>`.
//! Token secrets leave only masked; tokens are addressed by their public id (the secret also works).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::error::{admin_failure, AdminData, AdminMessage, ApiError, ErrorBody};
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

#[derive(Deserialize, ToSchema)]
pub(super) struct LoginBody {
    username: String,
    #[schema(format = Password)]
    password: String,
}

/// `success: false` (HTTP 200) with `token: null` for a wrong user name or password.
#[derive(Serialize, ToSchema)]
pub(super) struct LoginAnswer {
    success: bool,
    /// The session token for `Authorization: Bearer …` on the other `/api` routes.
    token: Option<String>,
    message: String,
}

/// Log in as the admin; the answer's token is the session for every other `/api` route.
#[utoipa::path(post, path = "/api/login", tag = "admin", request_body = LoginBody, responses(
    (status = 200, description = "Logged in, or `success: false` for bad credentials", body = LoginAnswer),
    (status = 400, description = "Body is not valid JSON", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body lacks a field or has a wrong type", body = ErrorBody),
    (status = 429, description = "Too many failed attempts from this address", body = ErrorBody),
    (status = 503, description = "Shared storage unavailable", body = ErrorBody),
))]
pub(super) async fn login(
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
        Ok(token) => Json(LoginAnswer {
            success: true,
            token: Some(token),
            message: "登录成功".into(),
        })
        .into_response(),
        Err(LoginError::BadCredentials) => Json(LoginAnswer {
            success: false,
            token: None,
            message: "用户名或密码错误".into(),
        })
        .into_response(),
        Err(LoginError::Unavailable) => ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "STORAGE_UNAVAILABLE",
            "shared storage is unavailable; try again",
        )
        .into_response(),
    }
}

/// End the session named by the `Authorization` header.
#[utoipa::path(post, path = "/api/logout", tag = "admin", security(("admin_session" = [])), responses(
    (status = 200, description = "Logged out", body = AdminMessage),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn logout(State(state): State<AppState>, req: Request) -> Response {
    if let Some(t) = bearer(&req) {
        state.sessions.logout(t).await;
    }
    AdminMessage::ok("登出成功")
}

fn parse_kind(s: Option<&str>) -> Result<Option<TokenKind>, ApiError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => TokenKind::parse(s).map(Some).ok_or_else(|| {
            ApiError::bad_param("token_type", "无效的Token类型 (sso, ssoNormal, ssoSuper)")
        }),
    }
}

/// A token as the admin API shows it: the secret masked, addressed by its public id.
#[derive(Serialize, ToSchema)]
pub(super) struct TokenInfo {
    token: String,
    token_id: String,
    token_type: TokenKind,
    created_time: Option<i64>,
    remaining_queries: i64,
    heavy_remaining_queries: i64,
    /// 未使用 (unused), 限流中 (limited), 失效 (expired) or 正常 (active).
    status: &'static str,
    tags: Vec<String>,
    note: String,
    failed_count: u32,
    last_failure_time: Option<i64>,
    last_failure_reason: Option<String>,
    cooldown_remaining_ms: i64,
    in_flight: u32,
}

fn token_info(t: &Token, now: i64) -> TokenInfo {
    let (last_failure_time, last_failure_reason) = t.last_failure();
    TokenInfo {
        token: t.masked(),
        token_id: t.id.clone(),
        token_type: t.kind,
        created_time: t.created_time,
        remaining_queries: t.remaining_queries(),
        heavy_remaining_queries: t.heavy_remaining_queries(),
        status: t.status(now).label(),
        tags: t.tags(),
        note: t.note(),
        failed_count: t.failed_count(),
        last_failure_time,
        last_failure_reason,
        cooldown_remaining_ms: t.cooldown_remaining_ms(now),
        in_flight: t.in_flight(),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// 1-based page (default 1).
    page: Option<i64>,
    /// Tokens per page, at most 1000 (default 10).
    page_size: Option<i64>,
    /// The first N tokens without paging (when above 0).
    limit: Option<i64>,
    /// `created_desc` or `created_asc`.
    sort: Option<String>,
    /// `sso`, `ssoNormal` or `ssoSuper`.
    token_type: Option<String>,
    /// 未使用, 限流中, 失效, 正常 (or unused, limited, expired, active).
    status: Option<String>,
    tag: Option<String>,
}

/// `page`/`page_size` are null when `limit` was used.
#[derive(Serialize, ToSchema)]
pub(super) struct TokenList {
    success: bool,
    data: Vec<TokenInfo>,
    total: usize,
    page: Option<usize>,
    page_size: Option<usize>,
}

/// List tokens (masked), filtered and paged.
#[utoipa::path(get, path = "/api/tokens", operation_id = "list_tokens", tag = "tokens", params(ListQuery), security(("admin_session" = [])), responses(
    (status = 200, description = "A page of tokens", body = TokenList),
    (status = 400, description = "Invalid parameter", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn list_tokens(
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
        let data = list
            .iter()
            .take(limit as usize)
            .map(|t| token_info(t, now))
            .collect();
        return Ok(Json(TokenList {
            success: true,
            data,
            total,
            page: None,
            page_size: None,
        })
        .into_response());
    }
    let page = q.page.unwrap_or(1).max(1) as usize;
    let page_size = match q.page_size.unwrap_or(10) {
        n if n < 1 => 10,
        n => n.min(1000) as usize,
    };
    let data = list
        .iter()
        .skip((page - 1).saturating_mul(page_size))
        .take(page_size)
        .map(|t| token_info(t, now))
        .collect();
    Ok(Json(TokenList {
        success: true,
        data,
        total,
        page: Some(page),
        page_size: Some(page_size),
    })
    .into_response())
}

#[derive(Deserialize, ToSchema)]
pub(super) struct TokensBody {
    /// Secrets to add; to delete, secrets or token ids. A string may hold several, one per line.
    tokens: Vec<String>,
    /// `sso`, `ssoNormal` or `ssoSuper` (default: normal).
    token_type: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct AddAnswer {
    success: bool,
    message: String,
    /// Tokens added.
    count: usize,
    /// Already present, left unchanged.
    existing: usize,
    skipped_blank: usize,
    /// Rejected: characters an HTTP header cannot carry.
    skipped_invalid: usize,
}

/// Add tokens to the pool.
#[utoipa::path(post, path = "/api/tokens/add", tag = "tokens", request_body = TokensBody, security(("admin_session" = [])), responses(
    (status = 200, description = "Tokens added", body = AddAnswer),
    (status = 400, description = "Invalid body or token type", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body lacks a field or has a wrong type", body = ErrorBody),
))]
pub(super) async fn add_tokens(
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
    Ok(Json(AddAnswer {
        success: true,
        message: format!("成功添加 {} 个Token", r.added),
        count: r.added,
        existing: r.existing,
        skipped_blank: r.skipped_blank,
        skipped_invalid: r.skipped_invalid,
    })
    .into_response())
}

#[derive(Serialize, ToSchema)]
pub(super) struct CountAnswer {
    success: bool,
    message: String,
    count: usize,
}

/// Delete tokens (by secret or id); their proxy bindings go too.
#[utoipa::path(post, path = "/api/tokens/delete", tag = "tokens", request_body = TokensBody, security(("admin_session" = [])), responses(
    (status = 200, description = "Tokens deleted", body = CountAnswer),
    (status = 400, description = "Invalid body or token type", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body lacks a field or has a wrong type", body = ErrorBody),
))]
pub(super) async fn delete_tokens(
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
    Ok(Json(CountAnswer {
        success: true,
        message: format!("成功删除 {n} 个Token"),
        count: n,
    })
    .into_response())
}

/// Admin edits are rare and expected to stick at once; requests leave saving to the batch saver.
async fn save_now(state: &AppState) {
    if let Err(e) = state.tokens.save_if_dirty().await {
        tracing::error!(error = %e, "saving tokens after an admin edit failed; the batch saver will retry");
    }
}

#[derive(Deserialize, ToSchema)]
pub(super) struct TagsBody {
    /// Token id or secret.
    token: String,
    tags: Vec<String>,
}

/// `tags` only on success; `success: false` (HTTP 200) for an unknown token.
#[derive(Serialize, ToSchema)]
pub(super) struct TagsAnswer {
    success: bool,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<String>>,
}

/// Replace a token's tags.
#[utoipa::path(post, path = "/api/tokens/tags", tag = "tokens", request_body = TagsBody, security(("admin_session" = [])), responses(
    (status = 200, description = "Tags set, or `success: false` for an unknown token", body = TagsAnswer),
    (status = 400, description = "Body is not valid JSON", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body lacks a field or has a wrong type", body = ErrorBody),
))]
pub(super) async fn set_tags(
    State(state): State<AppState>,
    Body(body): Body<TagsBody>,
) -> Response {
    let Some(t) = state.tokens.find(&body.token) else {
        return admin_failure("Token不存在");
    };
    let tags = state.tokens.set_tags(&t, &body.tags);
    save_now(&state).await;
    Json(TagsAnswer {
        success: true,
        message: "标签更新成功".into(),
        tags: Some(tags),
    })
    .into_response()
}

#[derive(Deserialize, ToSchema)]
pub(super) struct NoteBody {
    /// Token id or secret.
    token: String,
    note: String,
}

/// `note` only on success; `success: false` (HTTP 200) for an unknown token.
#[derive(Serialize, ToSchema)]
pub(super) struct NoteAnswer {
    success: bool,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// Set a token's note.
#[utoipa::path(post, path = "/api/tokens/note", tag = "tokens", request_body = NoteBody, security(("admin_session" = [])), responses(
    (status = 200, description = "Note set, or `success: false` for an unknown token", body = NoteAnswer),
    (status = 400, description = "Body is not valid JSON", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body lacks a field or has a wrong type", body = ErrorBody),
))]
pub(super) async fn set_note(
    State(state): State<AppState>,
    Body(body): Body<NoteBody>,
) -> Response {
    let Some(t) = state.tokens.find(&body.token) else {
        return admin_failure("Token不存在");
    };
    let note = state.tokens.set_note(&t, &body.note);
    save_now(&state).await;
    Json(NoteAnswer {
        success: true,
        message: "备注更新成功".into(),
        note: Some(note),
    })
    .into_response()
}

#[derive(Deserialize, ToSchema)]
pub(super) struct TestBody {
    /// Token id or secret.
    token: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct TestAnswer {
    success: bool,
    message: String,
    data: TestResult,
}

#[derive(Serialize, ToSchema)]
pub(super) struct TestResult {
    valid: bool,
    /// On success: the upstream's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_queries: Option<i64>,
    /// On failure: `expired`, `limited`, `blocked`, `network` or `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'static str>,
    /// On failure: the upstream's status, `data_error` for an unknown token, null for a network error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    error_code: Option<serde_json::Value>,
}

impl TestResult {
    fn failed(error_type: &'static str, error_code: serde_json::Value) -> TestResult {
        TestResult {
            valid: false,
            status_code: None,
            remaining_queries: None,
            error_type: Some(error_type),
            error_code: Some(error_code),
        }
    }
}

/// Probe a token against the upstream; a working token is revived.
#[utoipa::path(post, path = "/api/tokens/test", tag = "tokens", request_body = TestBody, security(("admin_session" = [])), responses(
    (status = 200, description = "The probe's result (`success: false` when the token does not work)", body = TestAnswer),
    (status = 400, description = "Body is not valid JSON", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body lacks a field or has a wrong type", body = ErrorBody),
))]
pub(super) async fn test_token(
    State(state): State<AppState>,
    Body(body): Body<TestBody>,
) -> Response {
    let answer = |success: bool, message: String, data: TestResult| {
        Json(TestAnswer {
            success,
            message,
            data,
        })
        .into_response()
    };
    let Some(t) = state.tokens.find(&body.token) else {
        return answer(
            false,
            "Token数据异常".into(),
            TestResult::failed("unknown", json!("data_error")),
        );
    };
    let lease = state.tokens.lease(&t);
    let (success, message, data) = match state.forwarder.probe(&lease).await {
        Ok(status) if (200..300).contains(&status) => {
            // A working token is usable again even if it had been marked expired.
            state.tokens.revive(&t);
            let data = TestResult {
                valid: true,
                status_code: Some(status),
                remaining_queries: Some(t.remaining_queries()),
                error_type: None,
                error_code: None,
            };
            (true, "Token有效".to_string(), data)
        }
        Ok(status @ (401 | 403)) => (
            false,
            "Token已失效".into(),
            TestResult::failed("expired", json!(status)),
        ),
        Ok(429) => (
            false,
            "Token已被限流".into(),
            TestResult::failed("limited", json!(429)),
        ),
        Ok(status) => (
            false,
            format!("上游返回异常状态码: {status}"),
            TestResult::failed("blocked", json!(status)),
        ),
        Err(e) => (
            false,
            format!("服务器被block或网络错误: {e}"),
            TestResult::failed("network", serde_json::Value::Null),
        ),
    };
    drop(lease);
    save_now(&state).await;
    answer(success, message, data)
}

/// Every tag in use.
#[utoipa::path(get, path = "/api/tokens/tags/all", tag = "tokens", security(("admin_session" = [])), responses(
    (status = 200, description = "Tags in use", body = AdminData<Vec<String>>),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn all_tags(State(state): State<AppState>) -> Response {
    AdminData::ok(state.tokens.all_tags())
}

#[derive(Serialize, ToSchema, Default)]
pub(super) struct KindCounts {
    total: usize,
    unused: usize,
    limited: usize,
    expired: usize,
    active: usize,
}

#[derive(Serialize, ToSchema)]
pub(super) struct TokenStats {
    normal: KindCounts,
    #[serde(rename = "super")]
    super_: KindCounts,
    total: usize,
}

/// Token counts by pool and status.
#[utoipa::path(get, path = "/api/stats", operation_id = "token_stats", tag = "tokens", security(("admin_session" = [])), responses(
    (status = 200, description = "Token counts", body = AdminData<TokenStats>),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn stats(State(state): State<AppState>) -> Response {
    let now = now_ms();
    let snapshot = state.tokens.snapshot();
    let count = |kind: TokenKind| {
        let mut c = KindCounts::default();
        for t in snapshot.iter().filter(|t| t.kind == kind) {
            c.total += 1;
            match t.status(now) {
                TokenStatus::Unused => c.unused += 1,
                TokenStatus::Limited => c.limited += 1,
                TokenStatus::Expired => c.expired += 1,
                TokenStatus::Active => c.active += 1,
            }
        }
        c
    };
    AdminData::ok(TokenStats {
        normal: count(TokenKind::Normal),
        super_: count(TokenKind::Super),
        total: snapshot.len(),
    })
}

#[derive(Serialize, ToSchema)]
pub(super) struct StorageModeData {
    /// `FILE`, `REDIS` or `MYSQL`.
    mode: String,
}

/// The storage backend in use.
#[utoipa::path(get, path = "/api/storage/mode", tag = "admin", security(("admin_session" = [])), responses(
    (status = 200, description = "The storage mode", body = AdminData<StorageModeData>),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn storage_mode(State(state): State<AppState>) -> Response {
    AdminData::ok(StorageModeData {
        mode: state.storage_mode.as_str().to_uppercase(),
    })
}
