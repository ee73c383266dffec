//! Error answers. OpenAI routes answer `{"error": {"message", "type", "code"}}`; admin routes use the same
//! shape for HTTP errors (Grok2API's page reads `error.message`) and `{"success": false, "message"}` for
//! business failures, which stay HTTP 200 as in Grok2API.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: &'static str,
    pub param: Option<&'static str>,
    pub retry_after: Option<Box<HeaderValue>>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            code,
            param: None,
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    pub fn bad_param(param: &'static str, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::bad_request("invalid_parameter", message);
        e.param = Some(param);
        e
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            code,
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal_error",
            message,
        )
    }

    pub fn with_retry_after(mut self, v: Option<HeaderValue>) -> ApiError {
        self.retry_after = v.map(Box::new);
        self
    }
}

/// The error answer's body, OpenAI's shape: `{"error": {"message", "type", "code", "param"?}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: &'static str,
    /// The request parameter at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.message,
                kind: self.kind,
                code: self.code,
                param: self.param,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(v) = self.retry_after {
            resp.headers_mut().insert(http::header::RETRY_AFTER, *v);
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is never read, so the connection cannot be reused: say so, or a client
            // sends its next request into a socket that is about to close.
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        ApiError::new(
            r.status(),
            "invalid_request_error",
            "invalid_body",
            r.body_text(),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request("invalid_query", r.body_text())
    }
}

/// Grok2API's admin envelope without data: `{"success", "message"}`. `success: false` with HTTP 200 is a
/// business failure (unknown token, bad proxy URL, ...).
#[derive(Serialize, ToSchema)]
pub struct AdminMessage {
    pub success: bool,
    pub message: String,
}

impl AdminMessage {
    pub fn ok(message: impl Into<String>) -> Response {
        Json(AdminMessage {
            success: true,
            message: message.into(),
        })
        .into_response()
    }
}

/// `{"success": false, "message": …}` with HTTP 200: a business failure in Grok2API's admin envelope.
pub fn admin_failure(message: impl Into<String>) -> Response {
    Json(AdminMessage {
        success: false,
        message: message.into(),
    })
    .into_response()
}

/// Grok2API's admin envelope with data: `{"success": true, "data": …}`.
#[derive(Serialize, ToSchema)]
pub struct AdminData<T> {
    pub success: bool,
    pub data: T,
}

impl<T: Serialize> AdminData<T> {
    pub fn ok(data: T) -> Response {
        Json(AdminData {
            success: true,
            data,
        })
        .into_response()
    }
}
