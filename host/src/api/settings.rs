//! `/api/settings`: the running settings (secrets never returned) and partial updates that apply without a
//! restart where they can (see `crate::live`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::admin::Body;
use super::error::ApiError;
use super::AppState;
use crate::live::SettingsError;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/settings", get(read).post(update))
}

/// `{"success": true, "data": {"global": {…}, "grok": {…}, "plugins": {…}}, "keys": {section: {key:
/// {"live", "secret", "env"}}}}`. Secrets are `{"set": bool}`; URL credentials are masked.
async fn read(State(state): State<AppState>) -> Response {
    let m = &state.settings_manager;
    Json(json!({
        "success": true,
        "data": m.view(),
        "keys": m.key_info(),
        "file": m.path().file_name().map(|n| n.to_string_lossy().to_string()),
    }))
    .into_response()
}

async fn update(State(state): State<AppState>, Body(body): Body<Value>) -> Response {
    match state.settings_manager.update(&state.0, &body).await {
        Ok(applied) => {
            let message = if applied.changed.is_empty() {
                "没有修改 (nothing changed)"
            } else if applied.restart_required.is_empty() {
                "配置更新成功"
            } else {
                "配置已保存，部分设置需重启生效 (saved; some settings apply after a restart)"
            };
            Json(json!({"success": true, "message": message, "data": applied})).into_response()
        }
        // `param` names the key, so a form can point at the field.
        Err(SettingsError::Invalid { key, message }) => (
            http::StatusCode::BAD_REQUEST,
            Json(
                json!({"error": {"message": message, "type": "invalid_request_error",
                "code": "invalid_setting", "param": key}}),
            ),
        )
            .into_response(),
        Err(e @ SettingsError::Save { .. }) => ApiError::internal(e.to_string()).into_response(),
    }
}
