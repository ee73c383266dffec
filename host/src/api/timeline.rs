//! `GET /api/logs/timeline?minutes=60&bucket=60`: calls per time bucket (total, success) and the window's
//! latency p50/p95, for the admin console's overview chart. Computed from the in-memory call log.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::error::{AdminData, ApiError, ErrorBody};
use super::AppState;
use crate::calllog::store::Timeline;
use crate::util::now_ms;

/// Longest window (a week) and most buckets one answer carries: bounds the work per request.
const MAX_MINUTES: i64 = 7 * 24 * 60;
const MAX_BUCKETS: i64 = 2000;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/logs/timeline", get(timeline))
}

fn int(q: &HashMap<String, String>, name: &'static str, default: i64) -> Result<i64, ApiError> {
    match q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_param(name, format!("`{name}` must be an integer, got `{v}`"))
        }),
    }
}

/// Described here; the handler reads the raw query to name a bad parameter in its 400.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct TimelineParams {
    /// Window length in minutes, 1 to a week (default 60).
    #[param(minimum = 1, maximum = 10080)]
    minutes: Option<i64>,
    /// Bucket width in seconds, a multiple of 60 (default 60), at most the window and 2000 buckets.
    #[param(minimum = 60, maximum = 604800, multiple_of = 60)]
    bucket: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct TimelineData {
    #[serde(flatten)]
    timeline: Timeline,
    /// Unix ms of the first bucket's start.
    start: i64,
    /// Unix ms of the last bucket's end.
    end: i64,
    bucket_ms: i64,
}

/// Calls per time bucket and the window's latency percentiles.
#[utoipa::path(get, path = "/api/logs/timeline", operation_id = "log_timeline", tag = "logs", params(TimelineParams), security(("admin_session" = [])), responses(
    (status = 200, description = "The timeline", body = AdminData<TimelineData>),
    (status = 400, description = "Invalid parameter", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn timeline(
    State(state): State<AppState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let minutes = int(&q, "minutes", 60)?;
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(ApiError::bad_param(
            "minutes",
            format!("`minutes` must be from 1 to {MAX_MINUTES}"),
        ));
    }
    // Bucket width in seconds; a whole number of minutes keeps buckets aligned to the clock.
    let bucket_s = int(&q, "bucket", 60)?;
    // At most the window: also keeps `bucket_s * 1000` far from overflowing.
    if !(60..=minutes * 60).contains(&bucket_s)
        || bucket_s % 60 != 0
        || minutes * 60 / bucket_s > MAX_BUCKETS
    {
        return Err(ApiError::bad_param(
            "bucket",
            format!(
                "`bucket` must be a multiple of 60 seconds, at most the window, giving at most {MAX_BUCKETS} buckets"
            ),
        ));
    }
    let bucket_ms = bucket_s * 1000;
    // The last bucket is the current, partial one.
    let end = (now_ms() / bucket_ms + 1) * bucket_ms;
    let count = (minutes * 60_000 + bucket_ms - 1) / bucket_ms;
    let start = end - count * bucket_ms;
    let t = state
        .calllog
        .store()
        .read()
        .timeline(start, bucket_ms, count as usize);
    Ok(AdminData::ok(TimelineData {
        timeline: t,
        start,
        end,
        bucket_ms,
    }))
}
