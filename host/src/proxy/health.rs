//! Background re-checks of unhealthy proxies: `GET grok.proxy_test_url` through the proxy, first after
//! `proxy_check_base_secs`, then doubling (±20 % jitter) up to `proxy_check_max_secs`. 200, 401, 403 and 404
//! mean the proxy reaches the upstream (403 noted as a likely Cloudflare block) and bring it back.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::pool::{ProxyEntry, ProxyPool};
use crate::upstream::UpstreamClient;
use crate::util::now_ms;

const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many checks run at once.
const MAX_CONCURRENT_CHECKS: usize = 16;

/// The answer of one connectivity test through a proxy.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeResult {
    /// The proxy reached the upstream.
    pub reachable: bool,
    pub status_code: Option<u16>,
    /// Seconds, two decimals, as Grok2API reports it.
    pub response_time: f64,
    pub note: String,
    pub error: Option<String>,
}

/// Fetches `test_url` with `client` (which goes through the proxy under test): the same client, pool and
/// connections as the proxy's requests.
pub async fn probe(client: &UpstreamClient, test_url: &str) -> ProbeResult {
    let start = Instant::now();
    let uri: http::Uri = match test_url.parse() {
        Ok(u) => u,
        Err(e) => {
            return ProbeResult {
                reachable: false,
                status_code: None,
                response_time: 0.0,
                note: String::new(),
                error: Some(format!("invalid test URL: {e}")),
            }
        }
    };
    let mut get = http::Request::new(Bytes::new());
    *get.uri_mut() = uri;
    get.headers_mut()
        .insert(http::header::ACCEPT, http::HeaderValue::from_static("*/*"));
    let r = tokio::time::timeout(CHECK_TIMEOUT, client.send(&get)).await;
    let response_time = (start.elapsed().as_secs_f64() * 100.0).round() / 100.0;
    match r {
        Err(_) => ProbeResult {
            reachable: false,
            status_code: None,
            response_time,
            note: String::new(),
            error: Some("timed out".into()),
        },
        Ok(Err(e)) => ProbeResult {
            reachable: false,
            status_code: None,
            response_time,
            note: String::new(),
            error: Some(super::error_chain(&e)),
        },
        Ok(Ok(resp)) => {
            let code = resp.status().as_u16();
            let reachable = matches!(code, 200 | 401 | 403 | 404);
            let note = match code {
                403 => "403: likely blocked by Cloudflare, but the proxy itself works".into(),
                401 | 404 => format!("{code}: the upstream answered, so the proxy works"),
                _ => String::new(),
            };
            ProbeResult {
                reachable,
                status_code: Some(code),
                response_time,
                note,
                error: (!reachable).then(|| format!("unexpected status {code}")),
            }
        }
    }
}

impl ProxyPool {
    /// Tests a proxy of the pool and applies the result to its health.
    pub async fn check(&self, e: &Arc<ProxyEntry>) -> ProbeResult {
        let mut r = probe(e.client(), &self.opts().test_url).await;
        r.error = r.error.map(|err| e.scrub(&err));
        self.apply_probe(e, &r);
        r
    }

    pub(crate) fn apply_probe(&self, e: &Arc<ProxyEntry>, r: &ProbeResult) {
        if r.reachable {
            self.mark_recovered(e);
        } else if e.healthy() {
            // An admin test with `apply` counts like a failed request.
            self.report_failure(e, r.error.as_deref().unwrap_or("test failed"));
        } else {
            let n = e.check_failures.fetch_add(1, Relaxed) + 1;
            self.schedule_check(e, n);
            tracing::debug!(proxy = %e.masked(), failed_checks = n, error = ?r.error, "proxy still unhealthy");
            self.mark_dirty();
        }
    }

    /// Re-checks due unhealthy proxies until stopped.
    pub(crate) async fn run_health(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let every = self
            .opts()
            .check_base
            .clamp(Duration::from_millis(200), Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CHECKS));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let now = now_ms();
            for e in self.entries() {
                if e.healthy()
                    || e.next_check_ms.load(Relaxed) > now
                    || e.checking.swap(true, Relaxed)
                {
                    continue;
                }
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    e.checking.store(false, Relaxed);
                    break;
                };
                let pool = self.clone();
                tokio::spawn(async move {
                    let r = pool.check(&e).await;
                    if r.reachable {
                        tracing::info!(proxy = %e.masked(), status = ?r.status_code, note = %r.note, "background check: proxy reachable again");
                    }
                    e.checking.store(false, Relaxed);
                    drop(permit);
                });
            }
        }
    }
}
