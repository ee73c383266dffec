//! `GET /api/logs/timeline?minutes=60&bucket=60`: calls per time bucket (total, success) and the window's
//! latency p50/p95, for the admin console's overview chart. Computed from the in-memory call log.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::AppState;
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

async fn timeline(
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
    if bucket_s < 60 || bucket_s % 60 != 0 || minutes * 60 / bucket_s > MAX_BUCKETS {
        return Err(ApiError::bad_param(
            "bucket",
            format!(
                "`bucket` must be a multiple of 60 seconds giving at most {MAX_BUCKETS} buckets"
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
    let mut data = serde_json::to_value(&t).unwrap_or_default();
    data["start"] = json!(start);
    data["end"] = json!(end);
    data["bucket_ms"] = json!(bucket_ms);
    Ok(Json(json!({"success": true, "data": data})).into_response())
}
