//! `/api/plugins`: list plugins, reload the directory, re-enable a disabled plugin. Loading compiles, so it
//! runs on the blocking pool.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/plugins", get(list))
        .route("/api/plugins/reload", post(reload))
        .route("/api/plugins/{name}/enable", post(enable))
}

fn listing(state: &AppState) -> serde_json::Value {
    let settings = state.settings.load();
    let s = &settings.plugins;
    json!({
        "dir": state.plugins.dir().display().to_string(),
        "hooks": {
            "selector": (!s.selector.is_empty()).then_some(&s.selector),
            "pool_parser": (!s.pool_parser.is_empty()).then_some(&s.pool_parser),
            "webhooks": &s.webhooks,
        },
        "limits": {
            "timeout_ms": s.timeout_ms,
            "memory_mb": s.memory_mb,
            "max_consecutive_errors": s.max_consecutive_errors,
        },
        "plugins": state.plugins.list(),
    })
}

async fn list(State(state): State<AppState>) -> Response {
    Json(json!({"success": true, "data": listing(&state)})).into_response()
}

async fn reload(State(state): State<AppState>) -> Response {
    let registry = state.plugins.clone();
    match tokio::task::spawn_blocking(move || registry.load_all()).await {
        Ok(outcomes) => {
            let results: Vec<_> = outcomes
                .into_iter()
                .map(|(name, outcome)| json!({"name": name, "result": outcome}))
                .collect();
            let mut data = listing(&state);
            data["reload"] = json!(results);
            Json(json!({"success": true, "data": data})).into_response()
        }
        Err(e) => ApiError::internal(format!("plugin reload failed: {e}")).into_response(),
    }
}

async fn enable(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let registry = state.plugins.clone();
    let n = name.clone();
    match tokio::task::spawn_blocking(move || registry.enable(&n)).await {
        Ok(Some(status)) => Json(json!({"success": true, "data": status})).into_response(),
        Ok(None) => ApiError::not_found(format!("no plugin named `{name}`")).into_response(),
        Err(e) => ApiError::internal(format!("enabling plugin failed: {e}")).into_response(),
    }
}
