//! Lock-free call statistics: counters and a log-linear latency histogram (8 buckets per power of two, so a
//! quantile is within 12.5 %), cheap enough to update on every call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB: u32 = 8;
const BUCKETS: usize = 64 * SUB as usize;

pub struct Histogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn index(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let e = 63 - ns.leading_zeros(); // >= 3
    let sub = (ns >> (e - 3)) & (SUB as u64 - 1);
    (SUB * (e - 2) + sub as u32) as usize
}

/// The smallest value that falls into bucket `i`.
fn lower(i: usize) -> u64 {
    if i < SUB as usize {
        return i as u64;
    }
    let e = (i as u32 / SUB) + 2;
    let sub = (i as u32 % SUB) as u64;
    (SUB as u64 + sub) << (e - 3)
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[index(ns).min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile (0..=1), or `None` before the first call.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                // Middle of the bucket.
                let lo = lower(i);
                let hi = if i + 1 < BUCKETS { lower(i + 1) } else { lo };
                return Some(Duration::from_nanos(lo + (hi - lo) / 2));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_cover_values() {
        for ns in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            123_456,
            10_000_000_000,
        ] {
            let i = index(ns);
            assert!(lower(i) <= ns, "{ns}: lower {} > value", lower(i));
            assert!(
                lower(i + 1) > ns,
                "{ns}: next lower {} <= value",
                lower(i + 1)
            );
        }
    }

    #[test]
    fn quantiles_are_within_an_eighth() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).unwrap().as_secs_f64() * 1e6;
        let p99 = h.quantile(0.99).unwrap().as_secs_f64() * 1e6;
        assert!((50.0 * 0.87..=50.0 * 1.13).contains(&p50), "{p50}");
        assert!((99.0 * 0.87..=99.0 * 1.13).contains(&p99), "{p99}");
    }
}
