//! The in-memory call log: entries kept sorted by start time (oldest first), trimmed to the newest N, with
//! the filters, stats and deletions of the admin API.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;

use crate::storage::CallLogEntry;

/// Filters of `GET /api/logs` (and stats/export). All optional; bounds inclusive.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Substring of the token id or of the masked token, case-insensitive.
    pub sso: Option<String>,
    pub token_id: Option<String>,
    pub success: Option<bool>,
    /// Substring of the model, case-insensitive.
    pub model: Option<String>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub status_code: Option<u16>,
}

/// Case-insensitive (ASCII) substring test without allocating: it runs once per entry per query.
fn contains_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

impl LogFilter {
    pub fn matches(&self, e: &CallLogEntry) -> bool {
        if let Some(s) = &self.sso {
            if !contains_ci(&e.token_id, s) && !contains_ci(&e.sso, s) {
                return false;
            }
        }
        if self.token_id.as_ref().is_some_and(|t| *t != e.token_id) {
            return false;
        }
        if self.success.is_some_and(|s| s != e.success) {
            return false;
        }
        if self
            .model
            .as_ref()
            .is_some_and(|m| !contains_ci(&e.model, m))
        {
            return false;
        }
        if self.start_time.is_some_and(|t| e.timestamp < t) {
            return false;
        }
        if self.end_time.is_some_and(|t| e.timestamp > t) {
            return false;
        }
        if self.status_code.is_some_and(|c| c != e.status_code) {
            return false;
        }
        true
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LogStats {
    pub total: u64,
    pub success: u64,
    pub failed: u64,
    /// Percentage 0–100, two decimals.
    pub success_rate: f64,
    pub today_total: u64,
    /// Seconds.
    pub avg_response_time: f64,
    pub p50_response_time: f64,
    pub p95_response_time: f64,
}

#[derive(Debug, Default)]
pub struct LogStore {
    entries: VecDeque<Arc<CallLogEntry>>,
    max: usize,
}

impl LogStore {
    pub fn new(max: usize) -> LogStore {
        LogStore {
            entries: VecDeque::new(),
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn set_max(&mut self, max: usize) -> usize {
        self.max = max;
        self.trim()
    }

    /// Inserts in start-time order (calls end out of order; most land at the back) and trims the oldest.
    /// Returns how many entries the trim dropped.
    pub fn insert(&mut self, e: Arc<CallLogEntry>) -> usize {
        let at = if self
            .entries
            .back()
            .is_none_or(|b| b.timestamp <= e.timestamp)
        {
            self.entries.len()
        } else {
            self.entries.partition_point(|x| x.timestamp <= e.timestamp)
        };
        self.entries.insert(at, e);
        self.trim()
    }

    fn trim(&mut self) -> usize {
        let excess = self.entries.len().saturating_sub(self.max);
        self.entries.drain(..excess);
        excess
    }

    /// Keeps the newest `keep` entries; returns how many were deleted.
    pub fn keep_newest(&mut self, keep: usize) -> usize {
        let excess = self.entries.len().saturating_sub(keep);
        self.entries.drain(..excess);
        excess
    }

    /// All entries, oldest first (for saving).
    pub fn all(&self) -> Vec<Arc<CallLogEntry>> {
        self.entries.iter().cloned().collect()
    }

    /// Matching entries newest first: the total and one page.
    pub fn query(
        &self,
        f: &LogFilter,
        page: usize,
        page_size: usize,
    ) -> (usize, Vec<Arc<CallLogEntry>>) {
        let skip = page.saturating_sub(1).saturating_mul(page_size);
        let mut total = 0;
        let mut out = Vec::with_capacity(page_size.min(1000));
        for e in self.entries.iter().rev() {
            if !f.matches(e) {
                continue;
            }
            if total >= skip && out.len() < page_size {
                out.push(e.clone());
            }
            total += 1;
        }
        (total, out)
    }

    /// Every matching entry newest first (for export).
    pub fn matching(&self, f: &LogFilter) -> Vec<Arc<CallLogEntry>> {
        self.entries
            .iter()
            .rev()
            .filter(|e| f.matches(e))
            .cloned()
            .collect()
    }

    pub fn stats(&self, f: &LogFilter, today_start_ms: i64) -> LogStats {
        let mut times = Vec::new();
        let (mut success, mut today) = (0u64, 0u64);
        for e in self.entries.iter().filter(|e| f.matches(e)) {
            if e.success {
                success += 1;
            }
            if e.timestamp >= today_start_ms {
                today += 1;
            }
            times.push(e.response_time);
        }
        let total = times.len() as u64;
        let avg = if times.is_empty() {
            0.0
        } else {
            times.iter().sum::<f64>() / times.len() as f64
        };
        let p50 = percentile(&mut times, 0.50);
        let p95 = percentile(&mut times, 0.95);
        let rate = if total == 0 {
            0.0
        } else {
            (success as f64 / total as f64 * 10_000.0).round() / 100.0
        };
        LogStats {
            total,
            success,
            failed: total - success,
            success_rate: rate,
            today_total: today,
            avg_response_time: round3(avg),
            p50_response_time: round3(p50),
            p95_response_time: round3(p95),
        }
    }

    pub fn models(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .entries
            .iter()
            .filter(|e| !e.model.is_empty())
            .map(|e| e.model.clone())
            .collect();
        m.sort();
        m.dedup();
        m
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Nearest-rank percentile; reorders `v`.
fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    let (_, x, _) = v.select_nth_unstable_by(rank, |a, b| a.total_cmp(b));
    *x
}

// ---- Timeline for the admin console's overview chart (GET /api/logs/timeline) ----

/// Calls started in one time bucket.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct TimelineBucket {
    /// Unix ms of the bucket's start.
    pub t: i64,
    pub total: u32,
    pub success: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Timeline {
    pub buckets: Vec<TimelineBucket>,
    pub total: u64,
    pub success: u64,
    /// Seconds, over the whole window.
    pub p50_response_time: f64,
    pub p95_response_time: f64,
}

impl LogStore {
    /// `count` buckets of `bucket_ms` from `start_ms`. Entries are sorted by start time, so only the window
    /// is visited.
    pub fn timeline(&self, start_ms: i64, bucket_ms: i64, count: usize) -> Timeline {
        let bucket_ms = bucket_ms.max(1);
        let end_ms = start_ms.saturating_add(bucket_ms.saturating_mul(count as i64));
        let mut buckets: Vec<TimelineBucket> = (0..count)
            .map(|i| TimelineBucket {
                t: start_ms + i as i64 * bucket_ms,
                total: 0,
                success: 0,
            })
            .collect();
        let from = self.entries.partition_point(|e| e.timestamp < start_ms);
        let mut times = Vec::new();
        let mut success = 0u64;
        for e in self.entries.range(from..) {
            if e.timestamp >= end_ms {
                break;
            }
            let b = &mut buckets[((e.timestamp - start_ms) / bucket_ms) as usize];
            b.total += 1;
            if e.success {
                b.success += 1;
                success += 1;
            }
            times.push(e.response_time);
        }
        Timeline {
            buckets,
            total: times.len() as u64,
            success,
            p50_response_time: round3(percentile(&mut times, 0.50)),
            p95_response_time: round3(percentile(&mut times, 0.95)),
        }
    }
}

#[cfg(test)]
mod timeline_tests {
    use super::*;

    #[test]
    fn buckets_count_calls_in_their_window_only() {
        let mut s = LogStore::new(100);
        for (ts, ok) in [
            (5, true),
            (999, true),
            (1000, false),
            (1500, true),
            (2999, true),
            (3000, true),
        ] {
            s.insert(Arc::new(CallLogEntry {
                timestamp: ts,
                success: ok,
                response_time: 1.0,
                ..CallLogEntry::default()
            }));
        }
        let t = s.timeline(1000, 1000, 2);
        assert_eq!(t.buckets.len(), 2);
        assert_eq!(
            (t.buckets[0].t, t.buckets[0].total, t.buckets[0].success),
            (1000, 2, 1)
        );
        assert_eq!(
            (t.buckets[1].t, t.buckets[1].total, t.buckets[1].success),
            (2000, 1, 1)
        );
        assert_eq!((t.total, t.success), (3, 2));
        assert_eq!(t.p95_response_time, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(ts: i64, ok: bool, model: &str) -> Arc<CallLogEntry> {
        Arc::new(CallLogEntry {
            id: format!("id-{ts}"),
            timestamp: ts,
            success: ok,
            model: model.into(),
            response_time: ts as f64 / 1000.0,
            token_id: format!("tok{}", ts % 3),
            ..CallLogEntry::default()
        })
    }

    proptest! {
        #[test]
        fn retention_keeps_exactly_the_newest(ts in prop::collection::vec(0i64..1000, 0..200), max in 0usize..50) {
            let mut s = LogStore::new(max);
            for t in &ts {
                s.insert(entry(*t, true, "m"));
            }
            let mut want = ts.clone();
            want.sort();
            let want: Vec<i64> = want[want.len().saturating_sub(max)..].to_vec();
            let got: Vec<i64> = s.all().iter().map(|e| e.timestamp).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn query_is_sorted_and_total_matches(ts in prop::collection::vec((0i64..1000, any::<bool>()), 0..200), page in 1usize..5, size in 1usize..30, success in prop::option::of(any::<bool>())) {
            let mut s = LogStore::new(1000);
            for (t, ok) in &ts {
                s.insert(entry(*t, *ok, "grok-4"));
            }
            let f = LogFilter { success, ..LogFilter::default() };
            let (total, rows) = s.query(&f, page, size);
            let expect = ts.iter().filter(|(_, ok)| success.is_none_or(|s| s == *ok)).count();
            prop_assert_eq!(total, expect);
            prop_assert!(rows.len() <= size);
            prop_assert_eq!(rows.len(), expect.saturating_sub((page - 1) * size).min(size));
            prop_assert!(rows.windows(2).all(|w| w[0].timestamp >= w[1].timestamp));
            prop_assert!(rows.iter().all(|r| f.matches(r)));
        }

        #[test]
        fn stats_are_bounded(ts in prop::collection::vec((0i64..100_000, any::<bool>()), 0..100)) {
            let mut s = LogStore::new(1000);
            for (t, ok) in &ts {
                s.insert(entry(*t, *ok, "m"));
            }
            let st = s.stats(&LogFilter::default(), 50_000);
            prop_assert!((0.0..=100.0).contains(&st.success_rate));
            prop_assert_eq!(st.success + st.failed, st.total);
            prop_assert!(st.today_total <= st.total);
            prop_assert!(st.p50_response_time <= st.p95_response_time);
        }
    }

    #[test]
    fn filters() {
        let mut s = LogStore::new(100);
        s.insert(entry(1, true, "Grok-3-Fast"));
        s.insert(entry(2, false, "grok-4"));
        s.insert(entry(3, true, "grok-4"));
        let f = |f: LogFilter| s.query(&f, 1, 50).0;
        assert_eq!(
            f(LogFilter {
                model: Some("grok-3".into()),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            f(LogFilter {
                start_time: Some(2),
                end_time: Some(3),
                ..Default::default()
            }),
            2
        );
        assert_eq!(
            f(LogFilter {
                success: Some(false),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            f(LogFilter {
                token_id: Some("tok1".into()),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            f(LogFilter {
                sso: Some("TOK".into()),
                ..Default::default()
            }),
            3
        );
        assert_eq!(
            s.models(),
            vec!["Grok-3-Fast".to_string(), "grok-4".to_string()]
        );
        let st = s.stats(&LogFilter::default(), 2);
        assert_eq!(
            (st.total, st.success, st.failed, st.today_total),
            (3, 2, 1, 2)
        );
        assert_eq!(st.success_rate, 66.67);
        assert_eq!(s.keep_newest(1), 2);
        assert_eq!(s.all()[0].timestamp, 3);
    }
}
