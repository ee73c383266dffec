//! The record of one OpenAI-route call, written when the call really ends (for a stream: when the stream ends).
//!
//! Every finished call produces one request log line here. Persisting, querying and stats of the call log build
//! on the same record.

use std::time::Instant;

/// How a call ended, filled in by the forwarder as it learns things.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub request_id: String,
    pub route: &'static str,
    pub model: String,
    pub stream: bool,
    pub client_ip: Option<std::net::IpAddr>,
    /// Unix ms when the request started.
    pub timestamp_ms: i64,
    pub started: Instant,
    pub token_id: Option<String>,
    pub token_masked: Option<String>,
    pub proxy: Option<String>,
    /// Earlier attempts, as `token-id@egress: reason`.
    pub retries: Vec<String>,
    pub first_byte_ms: Option<u64>,
    pub status_code: u16,
    pub success: bool,
    pub error_message: String,
}

impl CallRecord {
    pub fn new(request_id: String, route: &'static str, model: String, stream: bool) -> CallRecord {
        CallRecord {
            request_id,
            route,
            model,
            stream,
            client_ip: None,
            timestamp_ms: crate::util::now_ms(),
            started: Instant::now(),
            token_id: None,
            token_masked: None,
            proxy: None,
            retries: Vec::new(),
            first_byte_ms: None,
            status_code: 0,
            success: false,
            error_message: String::new(),
        }
    }
}

/// Where finished records go. Cheap to clone; never blocks the caller.
#[derive(Clone, Default)]
pub struct CallLog {}

impl CallLog {
    pub fn finish(&self, record: CallRecord) {
        let elapsed_ms = record.started.elapsed().as_secs_f64() * 1000.0;
        let retries = record.retries.join(", ");
        if record.success {
            tracing::info!(
                request_id = %record.request_id,
                route = record.route,
                model = %record.model,
                stream = record.stream,
                status = record.status_code,
                token = record.token_id.as_deref().unwrap_or("-"),
                egress = record.proxy.as_deref().unwrap_or("-"),
                retries = %retries,
                first_byte_ms = record.first_byte_ms,
                elapsed_ms = format_args!("{elapsed_ms:.1}"),
                "request done"
            );
        } else {
            tracing::warn!(
                request_id = %record.request_id,
                route = record.route,
                model = %record.model,
                stream = record.stream,
                status = record.status_code,
                token = record.token_id.as_deref().unwrap_or("-"),
                egress = record.proxy.as_deref().unwrap_or("-"),
                retries = %retries,
                first_byte_ms = record.first_byte_ms,
                elapsed_ms = format_args!("{elapsed_ms:.1}"),
                error = %record.error_message,
                "request failed"
            );
        }
    }
}
