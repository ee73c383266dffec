//! Optional per-client request rate on `/v1` (`global.rate_limit_per_minute`): a GCRA token bucket per client
//! IP (`governor`, keyed by a sharded `DashMap`, so requests of different clients take no common lock).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderValue, StatusCode};

use super::error::ApiError;
use super::AppState;
use crate::config::GlobalSettings;

pub struct ClientRateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    per_minute: u32,
}

impl ClientRateLimit {
    /// `None` when the limit is off.
    pub fn from_settings(g: &GlobalSettings) -> Option<Arc<ClientRateLimit>> {
        let per_minute = NonZeroU32::new(g.rate_limit_per_minute)?;
        let burst = NonZeroU32::new(g.rate_limit_burst).unwrap_or(per_minute);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Some(Arc::new(ClientRateLimit {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            per_minute: per_minute.get(),
        }))
    }

    /// `Err(wait)` when `ip` is over its rate.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets clients whose bucket is full again, so the map does not grow with every address ever seen.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Drops idle clients' state every minute while the gateway runs.
    pub fn spawn_cleanup(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(l) => l.forget_idle(),
                    None => return,
                }
            }
        })
    }
}

/// For the `/v1` routes' gate: 429 with `Retry-After` (whole seconds, at least 1) over the rate.
pub fn check(state: &AppState, client: IpAddr) -> Option<Response> {
    let limiter = state.rate_limit.as_ref()?;
    match limiter.check(client) {
        Ok(()) => None,
        Err(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            metrics::counter!("grok2api_rate_limited_total").increment(1);
            Some(
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    format!(
                    "too many requests from this client (limit {} per minute); retry after {} s",
                    limiter.per_minute,
                    secs.max(1)
                ),
                )
                .with_retry_after(HeaderValue::from_str(&secs.max(1).to_string()).ok())
                .into_response(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_per_client() {
        let g = GlobalSettings {
            rate_limit_per_minute: 60,
            rate_limit_burst: 3,
            ..GlobalSettings::default()
        };
        let l = ClientRateLimit::from_settings(&g).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(a).is_ok());
        }
        let wait = l.check(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another client has its own bucket.
        assert!(l.check(b).is_ok());
    }

    #[test]
    fn off_by_default() {
        assert!(ClientRateLimit::from_settings(&GlobalSettings::default()).is_none());
    }
}
