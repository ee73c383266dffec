//! The call log: one entry per OpenAI-route call, written when the call really ends (for a stream: when the
//! stream ends), kept in memory for queries and persisted in batches.
//!
//! The request path only converts its record and `try_send`s it into a bounded channel; when the channel is
//! full the entry is counted as dropped, never waited for. One writer task owns the log: it inserts entries,
//! trims to `global.log_max_count`, appends each batch to storage every `global.log_flush_interval`, and
//! compacts (rewrites the whole log) now and then and at shutdown.

pub mod scan;
pub mod store;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use crate::storage::{CallLogEntry, Storage, StorageError};
use crate::tokens::TokenPool;
pub use store::{LogFilter, LogStats, LogStore};

/// Entries waiting for the writer; beyond this they are dropped and counted.
pub const QUEUE_CAPACITY: usize = 16_384;
/// Shared mode: entries waiting for the store while it is away; beyond this the oldest are dropped and counted.
pub const PENDING_MAX: usize = 200_000;
/// Shared mode: how often the shared log is written to and tailed (at most).
const SHARED_TICK: Duration = Duration::from_millis(500);
/// Journal entries after which the writer compacts.
const COMPACT_AFTER: usize = 20_000;
const COMPACT_EVERY: Duration = Duration::from_secs(600);

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
    pub token_id: Option<Arc<str>>,
    pub token_masked: Option<Arc<str>>,
    pub proxy: Option<String>,
    /// Earlier attempts, as `token-id@egress: reason`.
    pub retries: Vec<String>,
    pub first_byte_ms: Option<u64>,
    /// Send to headers of the successful attempt.
    pub upstream_first_byte: Option<Duration>,
    /// Time spent waiting on the upstream over all attempts (headers, bodies, streams).
    pub upstream_wait: Duration,
    pub status_code: u16,
    pub success: bool,
    pub error_message: String,
    pub findings: scan::Findings,
}

impl CallRecord {
    /// Boxed: a record moves by value from the handler through each attempt to the answer's body and the
    /// writer's queue, and at 352 bytes those moves were about 800 instructions of `memcpy` a request.
    pub fn new(
        request_id: String,
        route: &'static str,
        model: String,
        stream: bool,
    ) -> Box<CallRecord> {
        Box::new(CallRecord {
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
            upstream_first_byte: None,
            upstream_wait: Duration::ZERO,
            status_code: 0,
            success: false,
            error_message: String::new(),
            findings: scan::Findings::default(),
        })
    }

    /// Built by the writer task, not on the request path: ids, strings and the IP text cost allocations.
    fn into_entry(self, elapsed: Duration) -> CallLogEntry {
        CallLogEntry {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: self.timestamp_ms,
            sso: self.token_masked.as_deref().unwrap_or_default().to_string(),
            model: self.model,
            success: self.success,
            status_code: self.status_code,
            token_consumed: 1,
            response_time: elapsed.as_secs_f64(),
            error_message: self.error_message,
            proxy_used: self.proxy.unwrap_or_default(),
            media_urls: self.findings.media_urls,
            token_id: self.token_id.as_deref().unwrap_or_default().to_string(),
            stream: self.stream,
            first_byte_ms: self.first_byte_ms,
            retries: self.retries.len() as u32,
            prompt_tokens: self.findings.prompt_tokens,
            completion_tokens: self.findings.completion_tokens,
            client_ip: self.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            request_id: self.request_id,
            route: self.route.to_string(),
            sso_full: None,
        }
    }
}

/// A finished call on its way to the writer.
struct Finished {
    record: Box<CallRecord>,
    elapsed: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    recorded: AtomicU64,
    dropped: AtomicU64,
    persist_errors: AtomicU64,
    /// Entries recorded but not yet written to storage.
    pending: AtomicU64,
}

enum Control {
    /// Keep the newest N; answers how many were deleted.
    KeepNewest(usize, oneshot::Sender<Result<usize, StorageError>>),
    /// Drain the queue, persist everything, stop.
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the call log. Cheap to clone; recording never blocks.
#[derive(Clone)]
pub struct CallLog {
    tx: mpsc::Sender<Finished>,
    control: mpsc::Sender<Control>,
    store: Arc<RwLock<LogStore>>,
    counters: Arc<Counters>,
    log_models_calls: Arc<AtomicBool>,
    /// `global.log_max_count = 0`: the call log is off (only log lines and metrics are written).
    disabled: Arc<AtomicBool>,
    metrics: Arc<crate::telemetry::RequestMetrics>,
}

/// Queue and health figures for the admin API and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueStats {
    pub recorded: u64,
    pub dropped: u64,
    pub queue_depth: usize,
    pub persist_errors: u64,
    /// Entries recorded but not yet written to storage (the next flush is due, or the store is away).
    pub pending: u64,
}

pub struct CallLogOptions {
    pub max_count: usize,
    pub flush_interval: Duration,
    pub log_models_calls: bool,
    pub metrics_per_token: bool,
    /// Where new entries go for the webhooks, when any is configured.
    pub webhooks: Option<crate::webhook::Feed>,
}

impl CallLog {
    /// Loads the stored log (mapping Grok2API's `sso_full` to token ids) and starts the writer task.
    pub async fn start(
        storage: Arc<dyn Storage>,
        tokens: &TokenPool,
        opts: CallLogOptions,
    ) -> Result<CallLog, StorageError> {
        let shared = storage.shared().is_some();
        // Shared mode: the writer tails the shared log into the store, starting from its beginning.
        let loaded = if shared {
            Vec::new()
        } else {
            storage.load_call_logs().await?
        };
        let mut store = LogStore::new(opts.max_count);
        for mut e in loaded {
            if let Some(full) = e.sso_full.take().filter(|s| !s.is_empty()) {
                if let Some(t) = tokens.find(&full) {
                    e.token_id = t.id.clone();
                    e.sso = t.masked();
                } else if e.sso.is_empty() || e.sso == full {
                    e.sso = crate::secret::mask(&full);
                }
            }
            store.insert(Arc::new(e));
        }
        let store = Arc::new(RwLock::new(store));
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (control, control_rx) = mpsc::channel(8);
        let log = CallLog {
            tx,
            control,
            store: store.clone(),
            counters: Arc::default(),
            log_models_calls: Arc::new(AtomicBool::new(opts.log_models_calls)),
            disabled: Arc::new(AtomicBool::new(opts.max_count == 0)),
            metrics: Arc::new(crate::telemetry::RequestMetrics::new(
                opts.metrics_per_token,
            )),
        };
        let writer = Writer {
            rx,
            control: control_rx,
            store,
            storage,
            counters: log.counters.clone(),
            pending: Vec::new(),
            next_seq: 1,
            reloading: false,
            journaled: 0,
            rewrite: false,
            last_compaction: Instant::now(),
            flush_interval: if shared {
                opts.flush_interval.min(SHARED_TICK)
            } else {
                opts.flush_interval
            },
            shared,
            cursor: Default::default(),
            webhooks: opts.webhooks,
        };
        // Fold what was loaded (journal, Grok2API secrets to scrub, entries past retention) into one clean file.
        let initial_compaction = !writer.store.read().is_empty();
        tokio::spawn(writer.run(initial_compaction));
        Ok(log)
    }

    /// Records a finished call: one log line, and one entry unless it is a `/v1/models` call that is not logged.
    pub fn finish(&self, record: Box<CallRecord>) {
        self.finish_at(record, Instant::now());
    }

    /// [`CallLog::finish`] for a call that ended at `end`, a clock read the caller already made.
    pub fn finish_at(&self, record: Box<CallRecord>, end: Instant) {
        let elapsed = end.saturating_duration_since(record.started);
        log_line(&record, elapsed);
        self.metrics.record(&record, elapsed);
        if self.disabled.load(Ordering::Relaxed)
            || (record.route.starts_with("/v1/models")
                && !self.log_models_calls.load(Ordering::Relaxed))
        {
            return;
        }
        match self.tx.try_send(Finished { record, elapsed }) {
            Ok(()) => {
                self.counters.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The request counters and latency histograms, for `/metrics`.
    pub fn request_metrics(&self) -> &crate::telemetry::RequestMetrics {
        &self.metrics
    }

    /// Whether entries are kept: when not, answers need not be scanned for media and usage.
    pub fn enabled(&self) -> bool {
        !self.disabled.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Arc<RwLock<LogStore>> {
        &self.store
    }

    pub fn queue_stats(&self) -> QueueStats {
        QueueStats {
            recorded: self.counters.recorded.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            queue_depth: QUEUE_CAPACITY - self.tx.capacity(),
            persist_errors: self.counters.persist_errors.load(Ordering::Relaxed),
            pending: self.counters.pending.load(Ordering::Relaxed),
        }
    }

    /// Keeps the newest `keep` entries (0 clears the log) and persists the result at once.
    pub async fn keep_newest(&self, keep: usize) -> Result<usize, StorageError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::KeepNewest(keep, tx))
            .await
            .map_err(|_| StorageError::Task("call-log writer stopped".into()))?;
        rx.await
            .map_err(|_| StorageError::Task("call-log writer stopped".into()))?
    }

    /// Applies a changed `global.log_max_count` (0 switches the log off) and `global.log_models_calls`. A lower
    /// limit trims and persists at once.
    pub async fn set_limits(
        &self,
        max_count: usize,
        log_models_calls: bool,
    ) -> Result<(), StorageError> {
        self.log_models_calls
            .store(log_models_calls, Ordering::Relaxed);
        let (old, len) = {
            let mut store = self.store.write();
            let old = store.max();
            let len = store.len();
            store.set_max(max_count);
            (old, len)
        };
        self.disabled.store(max_count == 0, Ordering::Relaxed);
        if max_count < old && len > max_count {
            self.keep_newest(max_count).await?;
        }
        Ok(())
    }

    /// Persists everything recorded so far and stops the writer.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct Writer {
    rx: mpsc::Receiver<Finished>,
    control: mpsc::Receiver<Control>,
    store: Arc<RwLock<LogStore>>,
    storage: Arc<dyn Storage>,
    counters: Arc<Counters>,
    /// Entries not yet persisted, with their number in this process (the shared store's idempotency key).
    pending: Vec<crate::storage::shared::OwnEntry>,
    next_seq: u64,
    /// Shared mode: the local copy was dropped (the log's epoch changed) and is being read again, own
    /// entries included.
    reloading: bool,
    /// Entries in the journal since the last compaction.
    journaled: usize,
    /// File mode: more entries were pending than the log keeps, so the next flush rewrites the file.
    rewrite: bool,
    last_compaction: Instant,
    flush_interval: Duration,
    /// Shared mode: entries go into `store` at once (as in file mode) and to the shared log; tailing it
    /// brings in the other instances' entries (the store leaves out this process's own), so every instance
    /// holds the log of all of them.
    shared: bool,
    cursor: crate::storage::shared::LogCursor,
    /// Receives this instance's new entries (never the ones tailed from other instances).
    webhooks: Option<crate::webhook::Feed>,
}

impl Writer {
    async fn run(mut self, initial_compaction: bool) {
        if initial_compaction {
            let _ = self.compact().await;
        }
        // The first flush is one interval away: there is nothing to persist yet.
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.flush_interval,
            self.flush_interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = Vec::with_capacity(256);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut buf, 1024) => {
                    if n == 0 {
                        break;
                    }
                    self.take(&mut buf);
                }
                _ = tick.tick() => self.flush().await,
                c = self.control.recv() => match c {
                    Some(Control::KeepNewest(keep, reply)) if self.shared => {
                        self.drain_queue(&mut buf);
                        self.flush().await;
                        let r = match self.storage.shared() {
                            Some(s) => s.trim_log(keep).await,
                            None => Ok(0),
                        };
                        self.tail().await;
                        let _ = reply.send(r);
                    }
                    Some(Control::KeepNewest(keep, reply)) => {
                        self.drain_queue(&mut buf);
                        let deleted = self.store.write().keep_newest(keep);
                        let r = self.compact().await.map(|_| deleted);
                        let _ = reply.send(r);
                    }
                    Some(Control::Shutdown(reply)) => {
                        self.drain_queue(&mut buf);
                        let _ = self.compact().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => break,
                },
            }
        }
        self.drain_queue(&mut buf);
        let _ = self.compact().await;
    }

    fn take(&mut self, buf: &mut Vec<Finished>) {
        let entries: Vec<Arc<CallLogEntry>> = buf
            .drain(..)
            .map(|f| Arc::new(f.record.into_entry(f.elapsed)))
            .collect();
        if let Some(feed) = &self.webhooks {
            feed.offer(entries.clone());
        }
        let mut store = self.store.write();
        for e in entries {
            store.insert(e.clone());
            self.pending.push((self.next_seq, e));
            self.next_seq += 1;
        }
        let kept = store.max();
        drop(store);
        if !self.shared {
            // More pending than the log keeps: journaling them would write entries that retention drops
            // anyway. A rewrite of the kept log persists every one still kept, so the pending list only has
            // to stay within retention (at high rates it otherwise held every call since the last flush).
            if self.pending.len() > kept {
                self.pending.drain(..self.pending.len() - kept);
                self.rewrite = true;
            }
        } else if self.pending.len() > PENDING_MAX {
            // A shared log has no rewrite to fall back on: what goes here is lost, and counted.
            let excess = self.pending.len() - PENDING_MAX;
            self.pending.drain(..excess);
            self.counters
                .dropped
                .fetch_add(excess as u64, Ordering::Relaxed);
            tracing::error!(
                dropped = excess,
                "call-log buffer full while the shared store is away; oldest entries dropped"
            );
        }
        self.counters
            .pending
            .store(self.pending.len() as u64, Ordering::Relaxed);
    }

    fn drain_queue(&mut self, buf: &mut Vec<Finished>) {
        while let Ok(e) = self.rx.try_recv() {
            buf.push(e);
        }
        self.take(buf);
    }

    async fn flush(&mut self) {
        if self.shared {
            self.append().await;
            self.tail().await;
            return;
        }
        let due = self.rewrite
            || self.journaled >= COMPACT_AFTER
            || (self.journaled > 0 && self.last_compaction.elapsed() >= COMPACT_EVERY);
        if due {
            let _ = self.compact().await;
            return;
        }
        self.append().await;
    }

    /// Appends the pending entries; on failure they stay pending (bounded) for the next attempt.
    async fn append(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let n = batch.len();
        let result = match self.storage.shared() {
            Some(shared) => match shared.append_own_log(&batch, &self.cursor).await {
                Ok(moved) => {
                    // Nothing else was appended in between: the next tail has nothing to read.
                    if let Some(c) = moved {
                        self.cursor = c;
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
            None => {
                let entries = batch.iter().map(|(_, e)| e.clone()).collect();
                self.storage.append_call_logs(entries).await
            }
        };
        match result {
            Ok(()) => {
                self.journaled += n;
                self.counters
                    .pending
                    .store(self.pending.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                // Keep them for the next attempt: nothing recorded is given up on.
                self.counters.persist_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, entries = n, "persisting call-log entries failed; will retry");
                let mut batch = batch;
                batch.append(&mut self.pending);
                self.pending = batch;
            }
        }
    }

    /// Shared mode: reads what other instances appended since the cursor into the local store.
    async fn tail(&mut self) {
        let Some(shared) = self.storage.shared() else {
            return;
        };
        loop {
            match shared.tail_log(&self.cursor, 5000, self.reloading).await {
                Ok(t) => {
                    let mut store = self.store.write();
                    if t.reset {
                        // Entries were deleted somewhere: start over from the shared log, keeping what has
                        // not reached it yet.
                        store.keep_newest(0);
                        for (_, e) in &self.pending {
                            store.insert(e.clone());
                        }
                        self.reloading = true;
                    }
                    for e in t.entries {
                        store.insert(Arc::new(e));
                    }
                    drop(store);
                    self.cursor = t.cursor;
                    if !t.more {
                        self.reloading = false;
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reading the shared call log failed; will retry");
                    return;
                }
            }
        }
    }

    async fn compact(&mut self) -> Result<(), StorageError> {
        if self.shared {
            // No rewrite of a shared log: it is trimmed by the store. Only what is pending goes out.
            self.append().await;
            return if self.pending.is_empty() {
                Ok(())
            } else {
                Err(StorageError::Backend(
                    "call-log entries still pending".into(),
                ))
            };
        }
        let all = self.store.read().all();
        match self.storage.replace_call_logs(all).await {
            Ok(()) => {
                self.pending.clear();
                self.counters.pending.store(0, Ordering::Relaxed);
                self.rewrite = false;
                self.journaled = 0;
                self.last_compaction = Instant::now();
                Ok(())
            }
            Err(e) => {
                self.counters.persist_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "rewriting the call log failed; will retry");
                Err(e)
            }
        }
    }
}

/// The request's log line, with every retry.
fn log_line(record: &CallRecord, elapsed: Duration) {
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    // Joined only when the line is written (the level may leave it out).
    let retries = Joined(&record.retries);
    let token = record.token_id.as_deref().unwrap_or("-");
    let egress = record.proxy.as_deref().unwrap_or("-");
    if record.success {
        tracing::info!(
            request_id = %record.request_id,
            route = record.route,
            model = %record.model,
            stream = record.stream,
            status = record.status_code,
            token,
            egress,
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
            token,
            egress,
            retries = %retries,
            first_byte_ms = record.first_byte_ms,
            elapsed_ms = format_args!("{elapsed_ms:.1}"),
            error = %record.error_message,
            "request failed"
        );
    }
}

/// Strings shown joined by ", ".
struct Joined<'a>(&'a [String]);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

/// Unix ms of today's midnight in `tz`.
pub fn today_start_ms(tz: chrono_tz::Tz) -> i64 {
    use chrono::TimeZone;
    let now = chrono::Utc::now().with_timezone(&tz);
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&midnight)
        .earliest()
        .map(|d| d.timestamp_millis())
        .unwrap_or_else(|| now.timestamp_millis() - 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FileStorage;

    #[test]
    fn today_in_shanghai() {
        let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
        let start = today_start_ms(tz);
        let now = crate::util::now_ms();
        assert!(start <= now && now - start < 86_400_000);
        // Shanghai midnight is 16:00 UTC.
        assert_eq!(start.rem_euclid(86_400_000), 16 * 3_600_000);
    }

    #[tokio::test]
    async fn records_flush_and_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FileStorage::new(dir.path()).unwrap());
        let tokens = TokenPool::load(storage.clone()).await.unwrap();
        let opts = || CallLogOptions {
            max_count: 3,
            flush_interval: Duration::from_millis(20),
            log_models_calls: false,
            metrics_per_token: false,
            webhooks: None,
        };
        let log = CallLog::start(storage.clone(), &tokens, opts())
            .await
            .unwrap();
        for i in 0..5 {
            let mut r = CallRecord::new(
                format!("r{i}"),
                "/v1/chat/completions",
                "grok-4".into(),
                false,
            );
            r.timestamp_ms = 1000 + i;
            r.success = i % 2 == 0;
            log.finish(r);
        }
        log.finish(CallRecord::new(
            "m".into(),
            "/v1/models",
            String::new(),
            false,
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(log.store().read().len(), 3);
        assert_eq!(log.queue_stats().recorded, 5);
        assert_eq!(log.queue_stats().pending, 0);
        // Persisted before shutdown: what a crash now would leave.
        assert_eq!(persisted(&storage).await, vec![1002, 1003, 1004]);
        log.shutdown().await;

        let again = CallLog::start(storage, &tokens, opts()).await.unwrap();
        let ts: Vec<i64> = again
            .store()
            .read()
            .all()
            .iter()
            .map(|e| e.timestamp)
            .collect();
        assert_eq!(ts, vec![1002, 1003, 1004]);
        assert_eq!(again.keep_newest(1).await.unwrap(), 2);
        assert_eq!(again.store().read().len(), 1);
    }

    async fn persisted(storage: &Arc<dyn Storage>) -> Vec<i64> {
        let mut ts: Vec<i64> = storage
            .load_call_logs()
            .await
            .unwrap()
            .iter()
            .map(|e| e.timestamp)
            .collect();
        ts.sort();
        ts
    }

    fn record(log: &CallLog, ts: i64) {
        let mut r = CallRecord::new(
            format!("r{ts}"),
            "/v1/chat/completions",
            "grok-4".into(),
            false,
        );
        r.timestamp_ms = ts;
        log.finish(r);
    }

    /// Few calls between flushes go to the journal; more than the log keeps rewrite the file instead, and
    /// are never all held in memory until then.
    #[tokio::test]
    async fn pending_entries_stay_within_retention() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FileStorage::new(dir.path()).unwrap());
        let tokens = TokenPool::load(storage.clone()).await.unwrap();
        let journal = dir.path().join("call_logs.journal.ndjson");
        let log = CallLog::start(
            storage.clone(),
            &tokens,
            CallLogOptions {
                max_count: 4,
                flush_interval: Duration::from_millis(300),
                log_models_calls: false,
                metrics_per_token: false,
                webhooks: None,
            },
        )
        .await
        .unwrap();
        // Waits until everything recorded is persisted; answers the most entries seen pending meanwhile.
        let log = &log;
        let settle = |recorded: u64| async move {
            let mut most = 0;
            for _ in 0..5000 {
                let q = log.queue_stats();
                most = most.max(q.pending);
                if q.recorded == recorded && q.pending == 0 && q.queue_depth == 0 {
                    return most;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("pending entries never persisted");
        };

        for ts in 1..=3 {
            record(log, ts);
        }
        settle(3).await;
        let journaled = std::fs::metadata(&journal).unwrap().len();
        assert!(journaled > 0, "a small batch is appended to the journal");
        assert_eq!(persisted(&storage).await, vec![1, 2, 3]);

        for ts in 10..20 {
            record(log, ts);
        }
        // Ten new entries, of which the log keeps four: no more are held for persisting.
        assert!(settle(13).await <= 4);
        assert_eq!(
            std::fs::metadata(&journal).unwrap().len(),
            0,
            "the file was rewritten, so the journal was emptied"
        );
        assert_eq!(persisted(&storage).await, vec![16, 17, 18, 19]);
        assert_eq!(log.queue_stats().dropped, 0);
        log.shutdown().await;
    }
}
