//! `/api/settings`: the running settings (secrets never returned) and partial updates that apply without a
//! restart where they can (see `crate::live`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::admin::Body;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::live::{Applied, SettingsError};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/settings", get(read).post(update))
}

/// `{"success": true, "data": {"global": {…}, "grok": {…}, "plugins": {…}}, "keys": {section: {key:
/// {"live", "secret", "env"}}}}`. Secrets are `{"set": bool}`; URL credentials are masked.
#[utoipa::path(get, path = "/api/settings", operation_id = "get_settings", tag = "settings", security(("admin_session" = [])), responses(
    (status = 200, description = "The running settings, secrets never included", body = SettingsAnswer),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn read(State(state): State<AppState>) -> Response {
    let m = &state.settings_manager;
    Json(SettingsAnswer {
        success: true,
        data: m.view(),
        keys: m.key_info(),
        file: m
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().to_string()),
    })
    .into_response()
}

#[derive(Serialize, ToSchema)]
pub(super) struct SettingsAnswer {
    success: bool,
    /// `{"global": {…}, "grok": {…}, "plugins": {…}}`; secrets as `{"set": bool}`, URL credentials masked.
    #[schema(value_type = Object)]
    data: Value,
    /// Per section and key: `{"live", "secret", "env"}`.
    #[schema(value_type = Object)]
    keys: Value,
    /// The settings file's name.
    file: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SettingsUpdated {
    success: bool,
    message: String,
    data: Applied,
}

/// Change some settings: a partial `{"section": {"key": value}}`; validated whole, saved keeping the file's
/// comments, then applied (keys that need a restart are listed in `restart_required`).
#[utoipa::path(post, path = "/api/settings", operation_id = "update_settings", tag = "settings", security(("admin_session" = [])),
    request_body(content = Object, description = "Sections with the keys to change"),
    responses(
    (status = 200, description = "Saved and applied", body = SettingsUpdated),
    (status = 400, description = "A key is unknown or a value invalid (`error.param` names the key); nothing changed", body = ErrorBody),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 415, description = "Body is not `application/json`", body = ErrorBody),
    (status = 422, description = "Body is not a JSON object", body = ErrorBody),
    (status = 500, description = "The settings file could not be saved", body = ErrorBody),
))]
pub(super) async fn update(State(state): State<AppState>, Body(body): Body<Value>) -> Response {
    match state.settings_manager.update(&state.0, &body).await {
        Ok(applied) => {
            let message = if applied.changed.is_empty() {
                "没有修改 (nothing changed)"
            } else if applied.restart_required.is_empty() {
                "配置更新成功"
            } else {
                "配置已保存，部分设置需重启生效 (saved; some settings apply after a restart)"
            };
            Json(SettingsUpdated {
                success: true,
                message: message.to_string(),
                data: applied,
            })
            .into_response()
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
