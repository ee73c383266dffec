//! `GET /api/webhooks`: delivery status per webhook (built-in and plugins). Destinations are shown as
//! scheme, host and port only; last errors never carry a URL's path, query or credentials.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{AdminData, ErrorBody};
use super::AppState;
use crate::webhook::{SinkStatus, Status};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/webhooks", get(status))
}

#[derive(Serialize, ToSchema)]
pub(super) struct WebhookStatus {
    /// False when neither `global.log_webhook_url` nor `plugins.webhooks` is set.
    enabled: bool,
    #[serde(flatten)]
    status: Status,
}

/// Delivery status of the call-log webhooks.
#[utoipa::path(get, path = "/api/webhooks", operation_id = "webhook_status", tag = "webhooks", security(("admin_session" = [])), responses(
    (status = 200, description = "Per webhook counters and the outbox", body = AdminData<WebhookStatus>),
    (status = 401, description = "No valid session", body = ErrorBody),
))]
pub(super) async fn status(State(state): State<AppState>) -> Response {
    let data = match &state.webhooks {
        Some(w) => WebhookStatus {
            enabled: true,
            status: w.status(),
        },
        None => WebhookStatus {
            enabled: false,
            status: Status {
                outbox_depth: 0,
                outbox_max: state.settings.load().global.webhook_outbox_max,
                entries_dropped: 0,
                persist_errors: 0,
                sinks: Vec::<SinkStatus>::new(),
            },
        },
    };
    AdminData::ok(data)
}
