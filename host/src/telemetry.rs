//! Prometheus metrics. Request metrics are recorded once per call, where the call log finishes it; gauges of
//! state (tokens, call-log queue) are read when `/metrics` is scraped, so they cost the request path nothing.
//!
//! Label cardinality is bounded: model labels take the first [`MAX_MODEL_LABELS`] distinct models and fold
//! the rest into `other`; tokens appear (by public id) only with `global.metrics_per_token = true`.
//!
//! Latency histograms are ours ([`LatencyHistogram`]), appended to the exporter's text at a scrape. The
//! exporter's `histogram!` keeps raw samples until an upkeep drains them, so it is not used here.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{counter, describe_counter, describe_gauge, gauge, Counter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;

use crate::calllog::CallRecord;

pub const MAX_MODEL_LABELS: usize = 64;

/// Latency bucket bounds in nanoseconds: fine below a millisecond (gateway overhead), coarse up to minutes
/// (streams).
const BUCKETS_NS: [u64; 21] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    120_000_000_000,
    300_000_000_000,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (counters and gauges) once; later calls return the same handle.
/// The latency histograms are not in it: see [`LatencyHistogram`].
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok()?;
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

/// A Prometheus histogram with fixed buckets, one atomic counter each.
///
/// The exporter's own histograms keep every sample (with a clock read) in a lock-free list until a periodic
/// drain folds it into buckets: with three per call that was about 3 % of a chat request's CPU time in `perf`.
/// Here a sample is a bucket search and two atomic adds, and a scrape only reads.
pub struct LatencyHistogram {
    /// `counts[i]` holds samples in `(BUCKETS_NS[i-1], BUCKETS_NS[i]]`; the last one those above every bound.
    counts: [AtomicU64; BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus buckets are "less than or equal": the first bound not below the sample.
        let i = BUCKETS_NS.partition_point(|&b| b < ns);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines of one series. Bucket lines are cumulative and `_count`
    /// is their total, so a scrape during a record stays consistent; `_sum` may be one sample apart.
    fn render(&self, out: &mut String, name: &str, label: &str, value: &str) {
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            match BUCKETS_NS.get(i) {
                Some(&b) => {
                    let le = b as f64 / 1e9;
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{label}=\"{value}\",le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {cumulative}");
    }
}

/// Request-path recorder settings.
#[derive(Default)]
pub struct RequestMetrics {
    pub models: ModelLabels,
    pub per_token: bool,
    /// Metric handles per route, made on first use: `counter!(name, labels…)` per call built and hashed a
    /// fresh key in the registry each time (about 4 % of a forwarded call's instructions). Read without a
    /// lock; a new route takes the mutex once.
    routes: ArcSwap<Vec<(&'static str, Arc<RouteHandles>)>>,
    insert: Mutex<()>,
}

/// The histograms' names and help, in the order they are rendered.
const HISTOGRAMS: [(&str, &str); 3] = [
    (
        "grok2api_request_duration_seconds",
        "Whole call time, to the end of the answer",
    ),
    (
        "grok2api_upstream_latency_seconds",
        "Time from sending upstream to the answer's headers (successful calls)",
    ),
    (
        "grok2api_gateway_overhead_seconds",
        "Call time not spent waiting on the upstream",
    ),
];

#[derive(Default)]
struct RouteHandles {
    /// In the order of [`HISTOGRAMS`]. A series with no sample is not rendered, so a route that never got an
    /// answer shows no empty upstream histogram.
    histograms: [LatencyHistogram; 3],
    /// `grok2api_requests_total` by model label, then status; bounded like the labels themselves. Keyed by
    /// the label so a known model's counter is found from the request's own string: one snapshot read, no
    /// reference count touched.
    requests: ArcSwap<RequestCounters>,
    insert: Mutex<()>,
}

/// `grok2api_requests_total`'s handles of one route: by model label, then by status (a handful each).
type RequestCounters = HashMap<Arc<str>, Vec<(u16, Counter)>, LabelHasher>;

fn counter<'a>(counters: &'a RequestCounters, label: &str, status: u16) -> Option<&'a Counter> {
    let by_status = counters.get(label)?;
    by_status.iter().find(|(s, _)| *s == status).map(|(_, c)| c)
}

impl RouteHandles {
    fn count(&self, route: &'static str, labels: &ModelLabels, model: &str, status: u16) {
        // A call without a model (`/v1/models`) is counted as `none`, a label of its own: found here too.
        let key = if model.is_empty() { "none" } else { model };
        let known = self.requests.load();
        if let Some(c) = counter(&known, key, status) {
            c.increment(1);
            return;
        }
        drop(known);
        // A new (model, status) pair, or a model folded into `other`: by its label, under the mutex.
        let label = labels.label(model);
        let _g = self.insert.lock();
        let current = self.requests.load_full();
        if let Some(c) = counter(&current, &label, status) {
            c.increment(1);
            return;
        }
        let c = counter!("grok2api_requests_total",
            "route" => route, "model" => label.to_string(), "status" => status.to_string());
        c.increment(1);
        let mut next = (*current).clone();
        next.entry(label).or_default().push((status, c));
        self.requests.store(Arc::new(next));
    }
}

impl RequestMetrics {
    pub fn new(per_token: bool) -> RequestMetrics {
        RequestMetrics {
            per_token,
            ..RequestMetrics::default()
        }
    }

    /// The route's handles, borrowed from the snapshot for `f`: no reference count touched on the request path.
    fn with_route<R>(&self, route: &'static str, f: impl FnOnce(&RouteHandles) -> R) -> R {
        if let Some((_, h)) = self.routes.load().iter().find(|(r, _)| *r == route) {
            return f(h);
        }
        f(&self.route(route))
    }

    fn route(&self, route: &'static str) -> Arc<RouteHandles> {
        if let Some((_, h)) = self.routes.load().iter().find(|(r, _)| *r == route) {
            return h.clone();
        }
        let _g = self.insert.lock();
        let current = self.routes.load_full();
        if let Some((_, h)) = current.iter().find(|(r, _)| *r == route) {
            return h.clone();
        }
        let h = Arc::new(RouteHandles::default());
        let mut next = (*current).clone();
        next.push((route, h.clone()));
        self.routes.store(Arc::new(next));
        h
    }

    pub fn record(&self, r: &CallRecord, total: Duration) {
        let route = r.route;
        self.with_route(route, |h| {
            h.count(route, &self.models, &r.model, r.status_code);
            let [duration, upstream, overhead] = &h.histograms;
            duration.record(total);
            if let Some(first_byte) = r.upstream_first_byte {
                upstream.record(first_byte);
            }
            overhead.record(total.saturating_sub(r.upstream_wait));
        });
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

    /// Appends the latency histograms in Prometheus text format (after the exporter's counters and gauges).
    pub fn render_histograms(&self, out: &mut String) {
        let routes = self.routes.load();
        for (k, (name, help)) in HISTOGRAMS.iter().enumerate() {
            let series: Vec<_> = routes
                .iter()
                .filter(|(_, h)| h.histograms[k].count() > 0)
                .collect();
            if series.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (route, h) in series {
                h.histograms[k].render(out, name, "route", route);
            }
            out.push('\n');
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

    #[test]
    fn request_counters_count_by_model_label_and_status() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let m = RequestMetrics::new(false);
        metrics::with_local_recorder(&recorder, || {
            for i in 1..MAX_MODEL_LABELS {
                m.models.label(&format!("model-{i}"));
            }
            let call = |model: &str, status: u16| {
                let mut r =
                    CallRecord::new("id".into(), "/v1/chat/completions", model.into(), false);
                r.status_code = status;
                m.record(&r, Duration::from_millis(1));
            };
            for (model, status) in [
                ("model-1", 200),
                ("model-1", 200),
                ("model-1", 502),
                ("model-0", 200),
                ("model-0", 200),
                // Past the bound: both fold into `other`, counted together.
                ("past-the-bound", 200),
                ("another", 200),
                ("another", 429),
                ("", 200),
            ] {
                call(model, status);
            }
        });
        let text = handle.render();
        let count = |model: &str, status: &str| {
            let prefix = format!(
                "grok2api_requests_total{{route=\"/v1/chat/completions\",model=\"{model}\",status=\"{status}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map(|n| n.parse::<u64>().unwrap())
        };
        assert_eq!(count("model-1", "200"), Some(2), "{text}");
        assert_eq!(count("model-1", "502"), Some(1), "{text}");
        // The bound's last label, taken by a request.
        assert_eq!(count("model-0", "200"), Some(2), "{text}");
        assert_eq!(count("other", "200"), Some(2), "{text}");
        assert_eq!(count("other", "429"), Some(1), "{text}");
        assert_eq!(count("none", "200"), Some(1), "{text}");
        assert_eq!(count("past-the-bound", "200"), None, "{text}");
    }

    #[test]
    fn histogram_buckets_are_less_or_equal_and_cumulative() {
        let h = LatencyHistogram::default();
        for ns in [1, 50_000, 50_001, 1_000_000, 400_000_000_000] {
            h.record(Duration::from_nanos(ns));
        }
        let mut out = String::new();
        h.render(&mut out, "t_seconds", "route", "/r");
        let line = |le: &str| {
            let prefix = format!("t_seconds_bucket{{route=\"/r\",le=\"{le}\"}} ");
            let l = out.lines().find(|l| l.starts_with(&prefix)).unwrap();
            l[prefix.len()..].parse::<u64>().unwrap()
        };
        // 1 ns and exactly 50 µs fall in the first bucket; 50.001 µs in the next.
        assert_eq!(line("0.00005"), 2);
        assert_eq!(line("0.0001"), 3);
        assert_eq!(line("0.001"), 4);
        assert_eq!(line("300"), 4);
        assert_eq!(line("+Inf"), 5);
        assert_eq!(out.lines().filter(|l| l.contains("_bucket")).count(), 22);
        assert!(out.contains("t_seconds_count{route=\"/r\"} 5\n"), "{out}");
        let sum: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("t_seconds_sum{route=\"/r\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 400.001_100_002).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn histograms_render_only_series_with_samples() {
        let m = RequestMetrics::new(false);
        let mut text = String::new();
        m.render_histograms(&mut text);
        assert!(text.is_empty(), "{text}");
        m.route("/v1/models").histograms[0].record(Duration::from_millis(3));
        m.render_histograms(&mut text);
        assert!(text.contains("# TYPE grok2api_request_duration_seconds histogram\n"));
        assert!(text.contains("grok2api_request_duration_seconds_count{route=\"/v1/models\"} 1\n"));
        assert!(
            !text.contains("grok2api_upstream_latency_seconds"),
            "{text}"
        );
    }
}
