//! `GET /api/webhooks`: delivery status per webhook (built-in and plugins). Destinations are shown as
//! scheme, host and port only; last errors never carry a URL's path, query or credentials.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/webhooks", get(status))
}

async fn status(State(state): State<AppState>) -> Response {
    let data = match &state.webhooks {
        Some(w) => {
            let mut v = json!(w.status());
            v["enabled"] = json!(true);
            v
        }
        None => json!({"enabled": false, "sinks": [], "outbox_depth": 0,
            "outbox_max": state.settings.load().global.webhook_outbox_max}),
    };
    Json(json!({"success": true, "data": data})).into_response()
}
