//! Small helpers shared by several modules.

use sha2::{Digest, Sha256};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch from the kernel's coarse clock: the time of the last scheduler tick, at
/// most a tick (1–10 ms) behind [`now_ms`], and read without the TSC. For times where a tick is below notice:
/// a token's cooldown and last use. A precise read cost about 20 ns on the bench machine, and a chat request
/// made fourteen of them.
pub fn now_ms_coarse() -> i64 {
    #[cfg(target_os = "linux")]
    {
        coarse(libc::CLOCK_REALTIME_COARSE).as_millis() as i64
    }
    #[cfg(not(target_os = "linux"))]
    {
        now_ms()
    }
}

/// Milliseconds on the kernel's coarse monotonic clock (see [`now_ms_coarse`]), for ages in seconds: how long
/// a pooled connection has been idle.
pub fn monotonic_ms_coarse() -> u64 {
    #[cfg(target_os = "linux")]
    {
        coarse(libc::CLOCK_MONOTONIC_COARSE).as_millis() as u64
    }
    #[cfg(not(target_os = "linux"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64
    }
}

#[cfg(target_os = "linux")]
fn coarse(clock: libc::clockid_t) -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid `timespec` to write; both coarse clocks exist since Linux 2.6.32, and a failure
    // leaves `ts` at zero.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    std::time::Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// `f` behind a pointer and a vtable, for a path a request rarely takes inside a future every request runs
/// (`Forwarder::forward`, the connection loop). Boxing alone is not enough: a boxed future of a known type
/// is still inlined into its caller's code. Those two had grown to 70 KB and 46 KB of machine code, most of
/// it cold, spread among the hot path's instructions; with five paths behind a vtable they are 44 KB and
/// 22 KB, and a chat request's simulated instruction-cache misses fell from 268–361 to 112–149
/// (`bench/README.md`, fifteenth pass).
pub fn cold<'a, T>(
    f: impl std::future::Future<Output = T> + Send + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>> {
    Box::pin(f)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_clocks_never_lead_and_trail_the_precise_ones_closely() {
        // A tick is at most 10 ms (HZ ≥ 100); the margin is for a preempted test thread.
        for _ in 0..100 {
            let coarse = now_ms_coarse();
            let precise = now_ms();
            assert!(coarse <= precise + 1, "coarse {coarse} ahead of {precise}");
            assert!(
                precise - coarse < 1_000,
                "coarse {coarse} far behind {precise}"
            );
        }
        let a = monotonic_ms_coarse();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let b = monotonic_ms_coarse();
        assert!(
            b >= a + 30,
            "50 ms of sleep moved the coarse clock {} ms",
            b - a
        );
        assert!(b - a < 5_000);
    }
}
