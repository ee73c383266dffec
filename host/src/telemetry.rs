//! Prometheus metrics. Request metrics are recorded once per call, where the call log finishes it; gauges of
//! state (tokens, call-log queue) are read when `/metrics` is scraped, so they cost the request path nothing.
//!
//! Label cardinality is bounded: model labels take the first [`MAX_MODEL_LABELS`] distinct models and fold
//! the rest into `other`; tokens appear (by public id) only with `global.metrics_per_token = true`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::{Mutex, RwLock};

use crate::calllog::CallRecord;

pub const MAX_MODEL_LABELS: usize = 64;

/// Latency buckets in seconds: fine below a millisecond (gateway overhead), coarse up to minutes (streams).
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same handle.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        "grok2api_requests_total",
        "OpenAI-route calls by route, model and final status"
    );
    describe_histogram!(
        "grok2api_request_duration_seconds",
        Unit::Seconds,
        "Whole call time, to the end of the answer"
    );
    describe_histogram!(
        "grok2api_upstream_latency_seconds",
        Unit::Seconds,
        "Time from sending upstream to the answer's headers (successful calls)"
    );
    describe_histogram!(
        "grok2api_gateway_overhead_seconds",
        Unit::Seconds,
        "Call time not spent waiting on the upstream"
    );
    describe_counter!(
        "grok2api_retries_total",
        "Attempts moved to another token or proxy"
    );
    describe_counter!(
        "grok2api_token_requests_total",
        "Calls per token (only with global.metrics_per_token)"
    );
    describe_gauge!("grok2api_tokens", "Tokens by state");
    describe_gauge!(
        "grok2api_calllog_queue_depth",
        "Call-log entries waiting for the writer"
    );
    describe_counter!(
        "grok2api_calllog_recorded_total",
        "Call-log entries accepted"
    );
    describe_counter!(
        "grok2api_calllog_dropped_total",
        "Call-log entries dropped because the queue was full"
    );
    describe_counter!(
        "grok2api_calllog_persist_errors_total",
        "Failed call-log writes (retried)"
    );
    describe_gauge!(
        "grok2api_calllog_pending",
        "Call-log entries recorded but not yet written to storage"
    );
    describe_counter!(
        "grok2api_webhook_queued_total",
        "Webhook requests added to the outbox, per sink"
    );
    describe_counter!(
        "grok2api_webhook_delivered_total",
        "Webhook requests delivered (2xx), per sink"
    );
    describe_counter!(
        "grok2api_webhook_failed_total",
        "Webhook requests given up (4xx, denied, too old, too many attempts, plugin error), per sink"
    );
    describe_counter!(
        "grok2api_webhook_retried_total",
        "Webhook attempts that failed and will be retried, per sink"
    );
    describe_counter!(
        "grok2api_webhook_dropped_total",
        "Webhook requests dropped because the outbox was full, per sink"
    );
    describe_counter!(
        "grok2api_webhook_entries_dropped_total",
        "Call-log entries not handed to the webhooks because their queue was full"
    );
    describe_gauge!(
        "grok2api_webhook_outbox_depth",
        "Webhook requests waiting in the outbox"
    );
    describe_counter!(
        "grok2api_netpolicy_denied_total",
        "Requests to a destination the allow/deny policy refused, by use (webhook, pool_api)"
    );
    describe_counter!(
        "grok2api_rate_limited_total",
        "/v1 requests refused by the per-client rate limit (global.rate_limit_per_minute)"
    );
    describe_gauge!(
        "grok2api_connections_open",
        "Client connections open (capped by global.max_connections)"
    );
}

/// The hasher of the per-request label lookups: foldhash, seeded per process. SipHash over a model name
/// and its (name, status) key twice a request was 1 % of a chat request's instructions; the keys are bounded
/// (`MAX_MODEL_LABELS`), so flooding is not a concern a keyed hash must answer.
type LabelHasher = foldhash::fast::RandomState;

/// Bounded model labels: reads are lock-free; a new model takes a mutex once.
#[derive(Default)]
pub struct ModelLabels {
    known: ArcSwap<HashSet<Arc<str>, LabelHasher>>,
    insert: Mutex<()>,
}

impl ModelLabels {
    pub fn label(&self, model: &str) -> Arc<str> {
        if model.is_empty() {
            return Arc::from("none");
        }
        if let Some(m) = self.known.load().get(model) {
            return m.clone();
        }
        let _g = self.insert.lock();
        let current = self.known.load_full();
        if let Some(m) = current.get(model) {
            return m.clone();
        }
        if current.len() >= MAX_MODEL_LABELS || model.len() > 64 {
            return Arc::from("other");
        }
        let m: Arc<str> = Arc::from(model);
        let mut next = (*current).clone();
        next.insert(m.clone());
        self.known.store(Arc::new(next));
        m
    }
}

/// Request-path recorder settings.
#[derive(Default)]
pub struct RequestMetrics {
    pub models: ModelLabels,
    pub per_token: bool,
    /// Metric handles per route, made on first use: `counter!(name, labels…)` per call built and hashed a
    /// fresh key in the registry each time (about 4 % of a forwarded call's instructions).
    routes: RwLock<Vec<(&'static str, Arc<RouteHandles>)>>,
}

struct RouteHandles {
    duration: Histogram,
    /// Made at its first sample, so a route that never got an answer shows no empty histogram.
    upstream: OnceLock<Histogram>,
    overhead: Histogram,
    /// `grok2api_requests_total` by model label and status; bounded like the labels themselves.
    requests: RwLock<HashMap<(Arc<str>, u16), Counter, LabelHasher>>,
}

impl RouteHandles {
    fn new(route: &'static str) -> RouteHandles {
        RouteHandles {
            duration: histogram!("grok2api_request_duration_seconds", "route" => route),
            upstream: OnceLock::new(),
            overhead: histogram!("grok2api_gateway_overhead_seconds", "route" => route),
            requests: RwLock::default(),
        }
    }

    fn requests(&self, route: &'static str, model: Arc<str>, status: u16) -> Counter {
        let key = (model, status);
        if let Some(c) = self.requests.read().get(&key) {
            return c.clone();
        }
        let (model, status_text) = (key.0.to_string(), status.to_string());
        let c = counter!("grok2api_requests_total",
            "route" => route, "model" => model, "status" => status_text);
        self.requests.write().insert(key, c.clone());
        c
    }
}

impl RequestMetrics {
    pub fn new(per_token: bool) -> RequestMetrics {
        RequestMetrics {
            per_token,
            ..RequestMetrics::default()
        }
    }

    fn route(&self, route: &'static str) -> Arc<RouteHandles> {
        if let Some((_, h)) = self.routes.read().iter().find(|(r, _)| *r == route) {
            return h.clone();
        }
        let mut w = self.routes.write();
        if let Some((_, h)) = w.iter().find(|(r, _)| *r == route) {
            return h.clone();
        }
        let h = Arc::new(RouteHandles::new(route));
        w.push((route, h.clone()));
        h
    }

    pub fn record(&self, r: &CallRecord, total: std::time::Duration) {
        let route = r.route;
        let h = self.route(route);
        h.requests(route, self.models.label(&r.model), r.status_code)
            .increment(1);
        h.duration.record(total.as_secs_f64());
        if let Some(first_byte) = r.upstream_first_byte {
            h.upstream
                .get_or_init(|| histogram!("grok2api_upstream_latency_seconds", "route" => route))
                .record(first_byte.as_secs_f64());
        }
        let overhead = total.saturating_sub(r.upstream_wait);
        h.overhead.record(overhead.as_secs_f64());
        if !r.retries.is_empty() {
            counter!("grok2api_retries_total", "route" => route).increment(r.retries.len() as u64);
        }
        if self.per_token {
            if let Some(id) = &r.token_id {
                let class = if r.success { "success" } else { "failure" };
                counter!("grok2api_token_requests_total", "token_id" => id.to_string(), "outcome" => class).increment(1);
            }
        }
    }
}

/// Sets the state gauges just before a scrape.
pub fn set_state_gauges(tokens: &crate::tokens::TokenPool, queue: &crate::calllog::QueueStats) {
    use crate::tokens::TokenStatus;
    let now = crate::util::now_ms();
    let (mut unused, mut limited, mut expired, mut active) = (0u32, 0u32, 0u32, 0u32);
    for t in tokens.snapshot().iter() {
        match t.status(now) {
            TokenStatus::Unused => unused += 1,
            TokenStatus::Limited => limited += 1,
            TokenStatus::Expired => expired += 1,
            TokenStatus::Active => active += 1,
        }
    }
    for (state, n) in [
        ("unused", unused),
        ("cooling", limited),
        ("expired", expired),
        ("active", active),
    ] {
        gauge!("grok2api_tokens", "state" => state).set(n as f64);
    }
    gauge!("grok2api_calllog_queue_depth").set(queue.queue_depth as f64);
    counter!("grok2api_calllog_recorded_total").absolute(queue.recorded);
    counter!("grok2api_calllog_dropped_total").absolute(queue.dropped);
    counter!("grok2api_calllog_persist_errors_total").absolute(queue.persist_errors);
    gauge!("grok2api_calllog_pending").set(queue.pending as f64);
}

/// Sets the webhook counters and gauges just before a scrape (sink names are bounded by the settings).
pub fn set_webhook_metrics(status: &crate::webhook::Status) {
    gauge!("grok2api_webhook_outbox_depth").set(status.outbox_depth as f64);
    counter!("grok2api_webhook_entries_dropped_total").absolute(status.entries_dropped);
    for s in &status.sinks {
        let sink = s.name.clone();
        counter!("grok2api_webhook_queued_total", "sink" => sink.clone()).absolute(s.queued);
        counter!("grok2api_webhook_delivered_total", "sink" => sink.clone()).absolute(s.delivered);
        counter!("grok2api_webhook_failed_total", "sink" => sink.clone()).absolute(s.failed);
        counter!("grok2api_webhook_retried_total", "sink" => sink.clone()).absolute(s.retried);
        counter!("grok2api_webhook_dropped_total", "sink" => sink).absolute(s.dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_bounded() {
        let m = ModelLabels::default();
        for i in 0..MAX_MODEL_LABELS {
            assert_eq!(&*m.label(&format!("model-{i}")), format!("model-{i}"));
        }
        assert_eq!(&*m.label("one-too-many"), "other");
        assert_eq!(&*m.label("model-3"), "model-3");
        assert_eq!(&*m.label(""), "none");
    }
}
