//! `/api/plugins`: list plugins, reload the directory, re-enable a disabled plugin. Loading compiles, so it
//! runs on the blocking pool.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{AdminData, ApiError, ErrorBody};
use super::AppState;
use crate::plugins::{LoadOutcome, PluginStatus};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/plugins", get(list))
        .route("/api/plugins/reload", post(reload))
        .route("/api/plugins/{name}/enable", post(enable))
}

#[derive(Serialize, ToSchema)]
pub(super) struct PluginListing {
    dir: String,
    hooks: HookChoices,
    limits: PluginLimits,
    plugins: Vec<PluginStatus>,
    /// Only in a reload's answer: what loading each file did.
    #[serde(skip_serializing_if = "Option::is_none")]
    reload: Option<Vec<ReloadResult>>,
}

/// The plugin configured for each hook (`plugins.*` settings); null for the built-in.
#[derive(Serialize, ToSchema)]
pub(super) struct HookChoices {
    selector: Option<String>,
    pool_parser: Option<String>,
    webhooks: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct PluginLimits {
    timeout_ms: u64,
    memory_mb: u64,
    max_consecutive_errors: u32,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ReloadResult {
    name: String,
    result: LoadOutcome,
}

fn listing(state: &AppState) -> PluginListing {
    let settings = state.settings.load();
    let s = &settings.plugins;
    let chosen = |name: &String| (!name.is_empty()).then(|| name.clone());
    PluginListing {
        dir: state.plugins.dir().display().to_string(),
        hooks: HookChoices {
            selector: chosen(&s.selector),
            pool_parser: chosen(&s.pool_parser),
            webhooks: s.webhooks.clone(),
        },
        limits: PluginLimits {
            timeout_ms: s.timeout_ms,
            memory_mb: s.memory_mb,
            max_consecutive_errors: s.max_consecutive_errors,
        },
        plugins: state.plugins.list(),
        reload: None,
    }
}

/// Plugins in the plugin directory and the hooks they fill.
#[utoipa::path(get, path = "/api/plugins", operation_id = "list_plugins", tag = "plugins", security(("admin_session" = [])), responses(
    (status = 200, description = "The plugins", body = AdminData<PluginListing>),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn list(State(state): State<AppState>) -> Response {
    AdminData::ok(listing(&state))
}

/// Load new and changed plugin files, unload removed ones.
#[utoipa::path(post, path = "/api/plugins/reload", operation_id = "reload_plugins", tag = "plugins", security(("admin_session" = [])), responses(
    (status = 200, description = "The plugins after the reload, with each file's result", body = AdminData<PluginListing>),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 500, description = "The reload task failed", body = ErrorBody),
))]
pub(super) async fn reload(State(state): State<AppState>) -> Response {
    let registry = state.plugins.clone();
    match tokio::task::spawn_blocking(move || registry.load_all()).await {
        Ok(outcomes) => {
            let results = outcomes
                .into_iter()
                .map(|(name, result)| ReloadResult { name, result })
                .collect();
            let mut data = listing(&state);
            data.reload = Some(results);
            AdminData::ok(data)
        }
        Err(e) => ApiError::internal(format!("plugin reload failed: {e}")).into_response(),
    }
}

/// Re-enable a plugin that was disabled after too many errors in a row.
#[utoipa::path(post, path = "/api/plugins/{name}/enable", operation_id = "enable_plugin", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name (file name without `.wasm`)")),
    security(("admin_session" = [])), responses(
    (status = 200, description = "The plugin's status", body = AdminData<PluginStatus>),
    (status = 401, description = "No valid session", body = ErrorBody),
    (status = 404, description = "No such plugin", body = ErrorBody),
    (status = 500, description = "The enable task failed", body = ErrorBody),
))]
pub(super) async fn enable(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let registry = state.plugins.clone();
    let n = name.clone();
    match tokio::task::spawn_blocking(move || registry.enable(&n)).await {
        Ok(Some(status)) => AdminData::ok(status),
        Ok(None) => ApiError::not_found(format!("no plugin named `{name}`")).into_response(),
        Err(e) => ApiError::internal(format!("enabling plugin failed: {e}")).into_response(),
    }
}
