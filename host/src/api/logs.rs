//! Call-log admin routes: `/api/logs`, `/api/logs/stats`, `/api/logs/models`, `DELETE /api/logs`,
//! `/api/logs/export`. Grok2API's parameter names and envelopes; invalid parameters get 400 naming the
//! parameter; no time window is applied unless asked for.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::error::{AdminData, ApiError, ErrorBody};
use super::AppState;
use crate::calllog::{today_start_ms, LogFilter, LogStats};
use crate::storage::CallLogEntry;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/logs", get(list).delete(clear))
        .route("/api/logs/stats", get(stats))
        .route("/api/logs/models", get(models))
        .route("/api/logs/export", get(export))
}

type Params = Query<HashMap<String, String>>;

/// The filter every log route takes. The handlers read the raw query (Grok2API's lenient booleans, a 400
/// naming the parameter); this struct only describes it.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct FilterParams {
    /// Masked token as shown in entries.
    sso: Option<String>,
    token_id: Option<String>,
    /// true/false (also 1/0, yes/no, on/off).
    success: Option<bool>,
    model: Option<String>,
    /// Unix ms, inclusive.
    start_time: Option<i64>,
    /// Unix ms, inclusive; not before `start_time`.
    end_time: Option<i64>,
    status_code: Option<u16>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct PageParams {
    /// 1-based (default 1).
    #[param(minimum = 1)]
    page: Option<i64>,
    /// 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    page_size: Option<i64>,
}

fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn int<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<T>, ApiError> {
    param(q, name)
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                ApiError::bad_param(name, format!("`{name}` must be an integer, got `{v}`"))
            })
        })
        .transpose()
}

/// Grok2API accepted pydantic's booleans: true/false/1/0/yes/no/on/off/t/f/y/n.
fn boolean(q: &HashMap<String, String>, name: &'static str) -> Result<Option<bool>, ApiError> {
    param(q, name)
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
            "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
            _ => Err(ApiError::bad_param(
                name,
                format!("`{name}` must be true or false, got `{v}`"),
            )),
        })
        .transpose()
}

fn filter(q: &HashMap<String, String>) -> Result<LogFilter, ApiError> {
    let f = LogFilter {
        sso: param(q, "sso").map(str::to_string),
        token_id: param(q, "token_id").map(str::to_string),
        success: boolean(q, "success")?,
        model: param(q, "model").map(str::to_string),
        start_time: int(q, "start_time")?,
        end_time: int(q, "end_time")?,
        status_code: int(q, "status_code")?,
    };
    if let (Some(s), Some(e)) = (f.start_time, f.end_time) {
        if s > e {
            return Err(ApiError::bad_param(
                "start_time",
                "`start_time` is after `end_time`",
            ));
        }
    }
    Ok(f)
}

/// An entry as the admin API shows it: `response_time` rounded to milliseconds, as Grok2API did.
fn view(e: &CallLogEntry) -> CallLogEntry {
    let mut v = e.clone();
    v.response_time = (e.response_time * 1000.0).round() / 1000.0;
    v
}

#[derive(Serialize, ToSchema)]
pub(super) struct LogPage {
    success: bool,
    /// Newest first.
    data: Vec<CallLogEntry>,
    total: usize,
    page: i64,
    page_size: i64,
}

/// Call-log entries, newest first, filtered and paged.
#[utoipa::path(get, path = "/api/logs", operation_id = "list_logs", tag = "logs", params(FilterParams, PageParams), security(("admin_session" = [])), responses(
    (status = 200, description = "A page of entries", body = LogPage),
    (status = 400, description = "Invalid parameter", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn list(
    State(state): State<AppState>,
    q: Result<Params, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let f = filter(&q)?;
    let page: i64 = int(&q, "page")?.unwrap_or(1);
    if page < 1 {
        return Err(ApiError::bad_param("page", "`page` must be 1 or more"));
    }
    let page_size: i64 = int(&q, "page_size")?.unwrap_or(50);
    if !(1..=1000).contains(&page_size) {
        return Err(ApiError::bad_param(
            "page_size",
            "`page_size` must be from 1 to 1000",
        ));
    }
    let (total, rows) = state
        .calllog
        .store()
        .read()
        .query(&f, page as usize, page_size as usize);
    let data = rows.iter().map(|e| view(e)).collect();
    Ok(Json(LogPage {
        success: true,
        data,
        total,
        page,
        page_size,
    })
    .into_response())
}

#[derive(Serialize, ToSchema)]
pub(super) struct LogStatsData {
    #[serde(flatten)]
    stats: LogStats,
    /// Entries the recorder dropped because its queue was full.
    dropped: u64,
    queue_depth: usize,
    /// Entries recorded but not yet written to storage (the next flush is due, or the store is away).
    pending: u64,
    /// The zone "today" is counted in.
    timezone: String,
}

/// Call counts, success rate and latency over the matching entries.
#[utoipa::path(get, path = "/api/logs/stats", operation_id = "log_stats", tag = "logs", params(FilterParams), security(("admin_session" = [])), responses(
    (status = 200, description = "Statistics", body = AdminData<LogStatsData>),
    (status = 400, description = "Invalid parameter", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn stats(
    State(state): State<AppState>,
    q: Result<Params, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let f = filter(&q)?;
    let today = today_start_ms(state.settings.load().global.tz());
    let s = state.calllog.store().read().stats(&f, today);
    let queue = state.calllog.queue_stats();
    Ok(AdminData::ok(LogStatsData {
        stats: s,
        dropped: queue.dropped,
        queue_depth: queue.queue_depth,
        pending: queue.pending,
        timezone: state.settings.load().global.timezone.clone(),
    }))
}

/// Models seen in the call log.
#[utoipa::path(get, path = "/api/logs/models", operation_id = "log_models", tag = "logs", security(("admin_session" = [])), responses(
    (status = 200, description = "Model names", body = AdminData<Vec<String>>),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn models(State(state): State<AppState>) -> Response {
    AdminData::ok(state.calllog.store().read().models())
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct ClearParams {
    /// Newest entries to keep (default: `global.log_max_count`).
    #[param(minimum = 0)]
    max_count: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ClearAnswer {
    success: bool,
    message: String,
    deleted_count: usize,
}

/// Delete all but the newest `max_count` entries.
#[utoipa::path(delete, path = "/api/logs", operation_id = "clear_logs", tag = "logs", params(ClearParams), security(("admin_session" = [])), responses(
    (status = 200, description = "Entries deleted", body = ClearAnswer),
    (status = 400, description = "Invalid parameter", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 500, description = "Storage failed", body = ErrorBody),
))]
pub(super) async fn clear(
    State(state): State<AppState>,
    q: Result<Params, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let keep = match param(&q, "max_count") {
        None => state.settings.load().global.log_max_count,
        Some(v) => v.parse::<usize>().map_err(|_| {
            ApiError::bad_param(
                "max_count",
                format!("`max_count` must be a whole number 0 or more, got `{v}`"),
            )
        })?,
    };
    let deleted = state
        .calllog
        .keep_newest(keep)
        .await
        .map_err(|e| ApiError::internal(format!("清理日志失败: {e}")))?;
    Ok(Json(ClearAnswer {
        success: true,
        message: format!("成功清理 {deleted} 条日志"),
        deleted_count: deleted,
    })
    .into_response())
}

const CSV_COLUMNS: &[&str] = &[
    "id",
    "timestamp",
    "token_id",
    "sso",
    "model",
    "route",
    "stream",
    "success",
    "status_code",
    "response_time",
    "first_byte_ms",
    "retries",
    "prompt_tokens",
    "completion_tokens",
    "proxy_used",
    "client_ip",
    "request_id",
    "error_message",
    "media_urls",
];

fn csv_row(e: &CallLogEntry) -> Bytes {
    let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    let mut w = csv::Writer::from_writer(Vec::with_capacity(256));
    let _ = w.write_record([
        e.id.clone(),
        e.timestamp.to_string(),
        e.token_id.clone(),
        e.sso.clone(),
        e.model.clone(),
        e.route.clone(),
        e.stream.to_string(),
        e.success.to_string(),
        e.status_code.to_string(),
        format!("{:.3}", e.response_time),
        opt(e.first_byte_ms),
        e.retries.to_string(),
        opt(e.prompt_tokens),
        opt(e.completion_tokens),
        e.proxy_used.clone(),
        e.client_ip.clone(),
        e.request_id.clone(),
        e.error_message.clone(),
        e.media_urls.join(" "),
    ]);
    Bytes::from(w.into_inner().unwrap_or_default())
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct ExportParams {
    /// `ndjson` (default) or `csv`.
    #[param(inline)]
    format: Option<ExportFormat>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub(super) enum ExportFormat {
    Ndjson,
    Csv,
}

/// Streams the matching entries (newest first) as NDJSON or CSV, a chunk of rows at a time.
#[utoipa::path(get, path = "/api/logs/export", operation_id = "export_logs", tag = "logs", params(FilterParams, ExportParams), security(("admin_session" = [])), responses(
    (status = 200, description = "The entries, one per line", content(
        (String = "application/x-ndjson"),
        (String = "text/csv"),
    )),
    (status = 400, description = "Invalid parameter", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn export(
    State(state): State<AppState>,
    q: Result<Params, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let f = filter(&q)?;
    let csv = match param(&q, "format").unwrap_or("ndjson") {
        "ndjson" => false,
        "csv" => true,
        other => {
            return Err(ApiError::bad_param(
                "format",
                format!("`format` must be ndjson or csv, got `{other}`"),
            ))
        }
    };
    // Snapshot (Arc clones) under the read lock; encode outside it while streaming.
    let rows: Arc<Vec<Arc<CallLogEntry>>> = Arc::new(state.calllog.store().read().matching(&f));
    let header = csv.then(|| {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record(CSV_COLUMNS);
        Bytes::from(w.into_inner().unwrap_or_default())
    });
    let chunks = (0..rows.len()).step_by(500).map(move |start| {
        let mut buf = Vec::new();
        for e in &rows[start..(start + 500).min(rows.len())] {
            if csv {
                buf.extend_from_slice(&csv_row(e));
            } else {
                let _ = serde_json::to_writer(&mut buf, e.as_ref());
                buf.push(b'\n');
            }
        }
        Ok::<Bytes, std::io::Error>(Bytes::from(buf))
    });
    let stream = futures_util::stream::iter(header.into_iter().map(Ok).chain(chunks));
    let (ctype, name) = if csv {
        ("text/csv; charset=utf-8", "call_logs.csv")
    } else {
        ("application/x-ndjson", "call_logs.ndjson")
    };
    Ok(Response::builder()
        .header(http::header::CONTENT_TYPE, ctype)
        .header(
            http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        )
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}
