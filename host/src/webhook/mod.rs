//! Call-log webhooks: the built-in JSON webhook (`global.log_webhook_url`) and WASM plugins
//! (`plugins.webhooks`), both behind [`LogWebhook`](crate::hooks::LogWebhook), handled identically.
//!
//! Path of an entry: the call-log writer hands each batch of new entries to a [`Feed`] (bounded channel,
//! `try_send`: a full channel drops and counts, the writer never waits) → the collector task gathers them for
//! up to [`BATCH_WINDOW`] and calls every sink's `deliver` on the blocking pool (a plugin call is CPU work) →
//! the requests are written to the [`outbox`] (one file each) and queued → one sender task per sink sends them
//! ([`sender`]: destination policy, no redirects, timeout) and retries with exponential backoff and jitter
//! (per sink: while a destination fails, only a few requests probe it) until delivered, given up (4xx, denied,
//! `webhook_max_attempts`, `webhook_max_age`) or dropped (outbox full). Delivery is at least once: a request
//! whose answer was lost, or delivered just before a crash, is sent again.

pub mod builtin;
pub mod outbox;
pub mod sender;

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{mpsc, watch, Notify};

use crate::config::GlobalSettings;
use crate::hooks::LogWebhook;
use crate::netpolicy::{mask_destination, NetPolicy};
use crate::storage::{CallLogEntry, StorageError};
use crate::util::now_ms;
use outbox::Outbox;
use sender::Outcome;

/// The built-in JSON webhook's sink name (a plugin may not take it).
pub const BUILTIN_SINK: &str = "builtin";
/// Batches of entries waiting for the collector.
pub const FEED_CAPACITY: usize = 1024;
/// How long the collector gathers entries before calling the sinks.
pub const BATCH_WINDOW: Duration = Duration::from_millis(500);
/// Entries after which the collector calls the sinks at once.
const MAX_BATCH: usize = 1000;
/// Requests of one sink in flight at once.
const CONCURRENCY: usize = 4;

/// The call log's end of the channel. Cheap to clone; offering never blocks.
#[derive(Clone)]
pub struct Feed {
    tx: mpsc::Sender<Vec<Arc<CallLogEntry>>>,
    dropped: Arc<AtomicU64>,
}

impl Feed {
    /// Hands new entries to the webhooks; when the channel is full they are dropped and counted.
    pub fn offer(&self, entries: Vec<Arc<CallLogEntry>>) {
        if entries.is_empty() {
            return;
        }
        let n = entries.len() as u64;
        if self.tx.try_send(entries).is_err() {
            self.dropped.fetch_add(n, Relaxed);
        }
    }
}

/// The receiving end, until the dispatcher starts.
pub struct FeedReceiver {
    rx: mpsc::Receiver<Vec<Arc<CallLogEntry>>>,
    dropped: Arc<AtomicU64>,
}

/// A feed for the call log and its receiver for [`Dispatcher::start`].
pub fn feed() -> (Feed, FeedReceiver) {
    let (tx, rx) = mpsc::channel(FEED_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Feed {
            tx,
            dropped: dropped.clone(),
        },
        FeedReceiver { rx, dropped },
    )
}

/// Delivery settings (from `[global]`).
#[derive(Debug, Clone)]
pub struct Options {
    pub outbox_max: usize,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Options {
    pub fn from_settings(g: &GlobalSettings) -> Options {
        let secs = |v: f64| Duration::from_secs_f64(v.max(0.001));
        Options {
            outbox_max: g.webhook_outbox_max.max(1),
            timeout: secs(g.webhook_timeout),
            max_attempts: g.webhook_max_attempts,
            max_age: secs(g.webhook_max_age),
            backoff_base: secs(g.webhook_backoff_base),
            backoff_max: secs(g.webhook_backoff_max.max(g.webhook_backoff_base)),
        }
    }
}

/// The sinks configured: the built-in (when `log_webhook_url` is set) first, then the plugins in order.
pub fn sinks(g: &GlobalSettings, plugins: Vec<Arc<dyn LogWebhook>>) -> Vec<Arc<dyn LogWebhook>> {
    let mut v: Vec<Arc<dyn LogWebhook>> = Vec::new();
    if !g.log_webhook_url.expose().trim().is_empty() {
        v.push(Arc::new(builtin::JsonWebhook::new(
            crate::secret::Secret::new(g.log_webhook_url.expose().trim()),
        )));
    }
    v.extend(plugins);
    v
}

#[derive(Default)]
struct Stats {
    queued: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    denied: AtomicU64,
    last_delivered_ms: AtomicI64,
}

struct Sink {
    name: Arc<str>,
    hook: Arc<dyn LogWebhook>,
    /// The built-in's destination, masked; plugins choose theirs per request.
    destination: Option<String>,
    stats: Stats,
    /// Consecutive retryable failures and when the next attempt may start (unix ms).
    failures: AtomicU32,
    backoff_until_ms: AtomicI64,
    last_error: Mutex<Option<(i64, String)>>,
    wake: Notify,
}

impl Sink {
    fn error(&self, e: String) {
        *self.last_error.lock() = Some((now_ms(), e));
    }
}

struct Inner {
    sinks: Vec<Arc<Sink>>,
    outbox: Mutex<Outbox>,
    dir: std::path::PathBuf,
    opts: Options,
    policy: Arc<NetPolicy>,
    client: reqwest::Client,
    entries_dropped: Arc<AtomicU64>,
    persist_errors: AtomicU64,
    max: usize,
}

/// Per-sink figures for the admin API and metrics.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SinkStatus {
    pub name: String,
    /// `builtin` or `plugin`.
    pub kind: &'static str,
    /// Scheme, host and port only (paths and queries of webhook URLs are often the secret).
    pub destination: Option<String>,
    pub queued: u64,
    pub delivered: u64,
    pub failed: u64,
    pub retried: u64,
    pub dropped: u64,
    pub denied: u64,
    pub pending: usize,
    pub consecutive_failures: u32,
    /// Unix ms before which no request of this sink is sent (backoff), 0 when none.
    pub backoff_until_ms: i64,
    pub last_delivered_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub outbox_depth: usize,
    pub outbox_max: usize,
    /// Entries the call log could not hand over (channel full).
    pub entries_dropped: u64,
    pub persist_errors: u64,
    pub sinks: Vec<SinkStatus>,
}

/// Handle to the running webhook delivery. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    collector: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Dispatcher {
    /// Loads the outbox and starts the collector and one sender per sink.
    pub fn start(
        data_dir: &Path,
        feed: FeedReceiver,
        hooks: Vec<Arc<dyn LogWebhook>>,
        policy: NetPolicy,
        opts: Options,
        builtin_url: &str,
    ) -> Result<Dispatcher, StorageError> {
        let sinks: Vec<Arc<Sink>> = hooks
            .into_iter()
            .map(|hook| {
                let name: Arc<str> = Arc::from(hook.name());
                Arc::new(Sink {
                    destination: (&*name == BUILTIN_SINK).then(|| mask_destination(builtin_url)),
                    name,
                    hook,
                    stats: Stats::default(),
                    failures: AtomicU32::new(0),
                    backoff_until_ms: AtomicI64::new(0),
                    last_error: Mutex::new(None),
                    wake: Notify::new(),
                })
            })
            .collect();
        let names: Vec<Arc<str>> = sinks.iter().map(|s| s.name.clone()).collect();
        let (outbox, notes) = Outbox::open(data_dir, opts.outbox_max, &names)?;
        for n in notes {
            tracing::warn!("webhook outbox: {n}");
        }
        if !outbox.is_empty() {
            tracing::info!(
                pending = outbox.len(),
                "webhook outbox: undelivered requests from the last run"
            );
        }
        let policy = Arc::new(policy);
        let inner = Arc::new(Inner {
            client: sender::client(&policy, opts.timeout),
            dir: outbox.dir().to_path_buf(),
            max: opts.outbox_max,
            outbox: Mutex::new(outbox),
            sinks,
            opts,
            policy,
            entries_dropped: feed.dropped.clone(),
            persist_errors: AtomicU64::new(0),
        });
        let (stop, stop_rx) = watch::channel(false);
        for sink in &inner.sinks {
            tokio::spawn(run_sender(inner.clone(), sink.clone(), stop_rx.clone()));
        }
        let collector = tokio::spawn(run_collector(inner.clone(), feed.rx, stop_rx));
        Ok(Dispatcher {
            inner,
            stop,
            collector: Arc::new(Mutex::new(Some(collector))),
        })
    }

    /// Stops sending; entries already handed over are turned into requests and written to the outbox, so the
    /// next start sends them. Call after the call log has drained into the feed.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.collector.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    pub fn status(&self) -> Status {
        let ob = self.inner.outbox.lock();
        let sinks = self
            .inner
            .sinks
            .iter()
            .map(|s| {
                let err = s.last_error.lock().clone();
                let last = s.stats.last_delivered_ms.load(Relaxed);
                SinkStatus {
                    name: s.name.to_string(),
                    kind: if &*s.name == BUILTIN_SINK {
                        "builtin"
                    } else {
                        "plugin"
                    },
                    destination: s.destination.clone(),
                    queued: s.stats.queued.load(Relaxed),
                    delivered: s.stats.delivered.load(Relaxed),
                    failed: s.stats.failed.load(Relaxed),
                    retried: s.stats.retried.load(Relaxed),
                    dropped: s.stats.dropped.load(Relaxed),
                    denied: s.stats.denied.load(Relaxed),
                    pending: ob.pending(&s.name),
                    consecutive_failures: s.failures.load(Relaxed),
                    backoff_until_ms: s.backoff_until_ms.load(Relaxed),
                    last_delivered_ms: (last > 0).then_some(last),
                    last_error_ms: err.as_ref().map(|e| e.0),
                    last_error: err.map(|e| e.1),
                }
            })
            .collect();
        Status {
            outbox_depth: ob.len(),
            outbox_max: self.inner.max,
            entries_dropped: self.inner.entries_dropped.load(Relaxed),
            persist_errors: self.inner.persist_errors.load(Relaxed),
            sinks,
        }
    }
}

/// Gathers entries for up to [`BATCH_WINDOW`], then turns them into requests. At stop: drains the channel,
/// converts and persists what is left, and returns.
async fn run_collector(
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<Vec<Arc<CallLogEntry>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending: Vec<Arc<CallLogEntry>> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let window = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            b = rx.recv() => match b {
                Some(entries) => {
                    pending.extend(entries);
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + BATCH_WINDOW);
                    if pending.len() >= MAX_BATCH {
                        convert(&inner, std::mem::take(&mut pending)).await;
                        deadline = None;
                    }
                }
                None => break,
            },
            _ = window => {
                convert(&inner, std::mem::take(&mut pending)).await;
                deadline = None;
            }
            _ = stop.changed() => break,
        }
    }
    while let Ok(entries) = rx.try_recv() {
        pending.extend(entries);
    }
    convert(&inner, pending).await;
    let left = inner.outbox.lock().len();
    if left > 0 {
        tracing::info!(
            pending = left,
            "webhook outbox saved; undelivered requests are sent after the restart"
        );
    }
}

/// Calls every sink's `deliver` for the batch (on the blocking pool), persists the requests, queues them.
async fn convert(inner: &Arc<Inner>, batch: Vec<Arc<CallLogEntry>>) {
    if batch.is_empty() {
        return;
    }
    let entries: Arc<Vec<CallLogEntry>> = Arc::new(batch.iter().map(|e| (**e).clone()).collect());
    for sink in &inner.sinks {
        let hook = sink.hook.clone();
        let entries = entries.clone();
        let reqs = match tokio::task::spawn_blocking(move || hook.deliver(&entries)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                sink.stats.failed.fetch_add(1, Relaxed);
                tracing::warn!(webhook = %sink.name, error = %e, "webhook plugin failed; this batch is not sent to it");
                sink.error(format!("deliver: {e}"));
                continue;
            }
            Err(e) => {
                sink.stats.failed.fetch_add(1, Relaxed);
                sink.error(format!("deliver: {e}"));
                continue;
            }
        };
        if reqs.is_empty() {
            continue;
        }
        let items = inner.outbox.lock().prepare(&sink.name, reqs, now_ms());
        let n = items.len() as u64;
        let dir = inner.dir.clone();
        let written = {
            let items = items.clone();
            tokio::task::spawn_blocking(move || Outbox::write_files(&dir, &items)).await
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Still sent from memory; only a restart before delivery would lose them.
                inner.persist_errors.fetch_add(1, Relaxed);
                tracing::error!(webhook = %sink.name, error = %e, "writing the webhook outbox failed");
            }
            Err(e) => {
                inner.persist_errors.fetch_add(1, Relaxed);
                tracing::error!(webhook = %sink.name, error = %e, "writing the webhook outbox failed");
            }
        }
        sink.stats.queued.fetch_add(n, Relaxed);
        let evicted = inner.outbox.lock().add(items);
        if !evicted.full.is_empty() {
            for (name, _) in &evicted.full {
                if let Some(s) = inner.sinks.iter().find(|s| s.name == *name) {
                    s.stats.dropped.fetch_add(1, Relaxed);
                }
            }
            tracing::warn!(
                dropped = evicted.full.len(),
                max = inner.max,
                "webhook outbox full (global.webhook_outbox_max): oldest requests dropped"
            );
            let dir = inner.dir.clone();
            let ids: Vec<u64> = evicted.full.iter().map(|(_, id)| *id).collect();
            let _ = tokio::task::spawn_blocking(move || Outbox::remove_files_in(&dir, ids)).await;
        }
        sink.wake.notify_one();
    }
}

async fn remove_files(inner: &Inner, ids: Vec<u64>) {
    if ids.is_empty() {
        return;
    }
    let dir = inner.dir.clone();
    let _ = tokio::task::spawn_blocking(move || Outbox::remove_files_in(&dir, ids)).await;
}

/// Sends one sink's requests, oldest first, a few at a time, honouring the sink's backoff.
async fn run_sender(inner: Arc<Inner>, sink: Arc<Sink>, mut stop: watch::Receiver<bool>) {
    let max_age = inner.opts.max_age.as_millis() as i64;
    loop {
        if *stop.borrow() {
            return;
        }
        let now = now_ms();
        let until = sink.backoff_until_ms.load(Relaxed);
        if until > now {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis((until - now) as u64)) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let (due, expired) = inner
            .outbox
            .lock()
            .take_due(&sink.name, CONCURRENCY, now, max_age);
        if !expired.is_empty() {
            sink.stats.failed.fetch_add(expired.len() as u64, Relaxed);
            tracing::warn!(webhook = %sink.name, requests = expired.len(), "webhook requests older than global.webhook_max_age given up");
            sink.error(format!(
                "{} requests older than webhook_max_age given up",
                expired.len()
            ));
            remove_files(&inner, expired.iter().map(|i| i.id).collect()).await;
        }
        if due.is_empty() {
            tokio::select! {
                _ = sink.wake.notified() => {}
                // Age limits apply even while nothing new arrives.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let sends = futures_util::future::join_all(
            due.iter()
                .map(|i| sender::send(&inner.client, &inner.policy, &i.req)),
        );
        let outcomes = tokio::select! {
            o = sends => o,
            // Stopping: in-flight requests stay in the outbox (on disk) and go again after the restart.
            _ = stop.changed() => return,
        };
        let mut done = Vec::new();
        let mut retry_after: Option<Duration> = None;
        let mut any_retry = false;
        for (item, outcome) in due.iter().zip(outcomes) {
            let dest = mask_destination(&item.req.url);
            match outcome {
                Outcome::Delivered => {
                    sink.stats.delivered.fetch_add(1, Relaxed);
                    sink.stats.last_delivered_ms.store(now_ms(), Relaxed);
                    inner.outbox.lock().remove(&sink.name, item.id);
                    done.push(item.id);
                }
                Outcome::GiveUp { error, reason } => {
                    sink.stats.failed.fetch_add(1, Relaxed);
                    if reason == "denied" {
                        sink.stats.denied.fetch_add(1, Relaxed);
                        metrics::counter!("grok2api_netpolicy_denied_total", "use" => "webhook")
                            .increment(1);
                    }
                    tracing::warn!(webhook = %sink.name, destination = %dest, %reason, %error, "webhook request given up");
                    sink.error(format!("{dest}: {error}"));
                    inner.outbox.lock().remove(&sink.name, item.id);
                    done.push(item.id);
                }
                Outcome::Retry {
                    error,
                    retry_after: ra,
                } => {
                    any_retry = true;
                    retry_after = retry_after.max(ra);
                    sink.error(format!("{dest}: {error}"));
                    let max = inner.opts.max_attempts;
                    if max > 0 && item.attempts >= max {
                        sink.stats.failed.fetch_add(1, Relaxed);
                        tracing::warn!(webhook = %sink.name, destination = %dest, attempts = item.attempts, %error, "webhook request given up after global.webhook_max_attempts");
                        inner.outbox.lock().remove(&sink.name, item.id);
                        done.push(item.id);
                    } else {
                        sink.stats.retried.fetch_add(1, Relaxed);
                        tracing::debug!(webhook = %sink.name, destination = %dest, attempt = item.attempts, %error, "webhook request failed; will retry");
                        inner.outbox.lock().release(&sink.name, item.id);
                    }
                }
            }
        }
        if any_retry {
            let n = sink.failures.fetch_add(1, Relaxed) + 1;
            let mut wait = sender::backoff(n, inner.opts.backoff_base, inner.opts.backoff_max);
            if let Some(ra) = retry_after {
                wait = wait.max(ra.min(inner.opts.backoff_max));
            }
            sink.backoff_until_ms
                .store(now_ms() + wait.as_millis() as i64, Relaxed);
        } else {
            sink.failures.store(0, Relaxed);
            sink.backoff_until_ms.store(0, Relaxed);
        }
        remove_files(&inner, done).await;
    }
}
