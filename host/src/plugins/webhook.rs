//! The WASM log webhook: converts call-log entries into WIT records and checks the requests the plugin wants
//! sent (method, URL, headers). Sending them (allow-list, retries, outbox) is the call log's job.

use std::sync::Arc;
use std::time::Duration;

use super::engine::bindings::webhook::grok2api::plugin::types as wit;
use super::engine::{Instance, World};
use super::registry::Slot;
use crate::hooks::{HookError, LogWebhook, OutboundRequest};
use crate::storage::CallLogEntry;

/// Requests per batch and body size a plugin may ask for.
const MAX_REQUESTS: usize = 1000;
const MAX_BODY: usize = 4 << 20;

pub struct WasmWebhook {
    slot: Arc<Slot>,
}

impl WasmWebhook {
    pub(crate) fn new(slot: Arc<Slot>) -> WasmWebhook {
        WasmWebhook { slot }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn record(e: &CallLogEntry) -> wit::CallLog {
    wit::CallLog {
        id: e.id.clone(),
        request_id: e.request_id.clone(),
        timestamp_ms: e.timestamp,
        token_id: e.token_id.clone(),
        model: e.model.clone(),
        route: e.route.clone(),
        success: e.success,
        status_code: e.status_code,
        response_ms: (e.response_time * 1000.0).clamp(0.0, u32::MAX as f64) as u32,
        first_byte_ms: e.first_byte_ms,
        proxy: non_empty(&e.proxy_used),
        stream: e.stream,
        retries: e.retries,
        error: non_empty(&e.error_message),
        prompt_tokens: e.prompt_tokens,
        completion_tokens: e.completion_tokens,
        media_urls: e.media_urls.clone(),
    }
}

fn check(r: wit::OutboundRequest) -> Result<OutboundRequest, HookError> {
    let bad = |m: String| Err(HookError::BadAnswer(m));
    let method = r.method.to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
        return bad(format!("method `{}` is not allowed", r.method));
    }
    match reqwest::Url::parse(&r.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => return bad("the URL is not an http(s) URL".into()),
    }
    for (k, v) in &r.headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(v).is_err()
        {
            // Never echo the value: it may be a secret.
            return bad(format!("header `{}` is not valid", k.escape_debug()));
        }
    }
    if r.body.len() > MAX_BODY {
        return bad(format!(
            "a body of {} bytes (at most {MAX_BODY})",
            r.body.len()
        ));
    }
    Ok(OutboundRequest {
        method,
        url: r.url,
        headers: r.headers,
        body: r.body,
    })
}

fn call(inst: &mut Instance, batch: &[wit::CallLog]) -> Result<Vec<OutboundRequest>, HookError> {
    let World::LogWebhook(b) = &inst.world else {
        return Err(HookError::Unavailable("not a log-webhook plugin".into()));
    };
    let out = b
        .grok2api_plugin_webhook()
        .call_deliver(&mut inst.store, batch)
        .map_err(|e| inst.classify(e))?;
    if out.len() > MAX_REQUESTS {
        return Err(HookError::BadAnswer(format!(
            "{} requests for one batch (at most {MAX_REQUESTS})",
            out.len()
        )));
    }
    out.into_iter().map(check).collect()
}

impl LogWebhook for WasmWebhook {
    fn name(&self) -> &str {
        &self.slot.name
    }

    fn deliver(&self, batch: &[CallLogEntry]) -> Result<Vec<OutboundRequest>, HookError> {
        let records: Vec<wit::CallLog> = batch.iter().map(record).collect();
        self.slot.call(|inst| call(inst, &records))
    }
}

pub(crate) fn trial(inst: &mut Instance, deadline: Duration) -> Result<(), HookError> {
    let sample = CallLogEntry {
        id: "trial".into(),
        timestamp: 0,
        model: "trial".into(),
        status_code: 200,
        token_id: "trial".into(),
        route: "/v1/chat/completions".into(),
        ..CallLogEntry::default()
    };
    inst.run(deadline, |inst| call(inst, &[record(&sample)]))
        .map(|_| ())
}
