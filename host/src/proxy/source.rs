//! The pool API (`grok.proxy_pool_url`): fetched at start-up, every `proxy_pool_interval` in the background,
//! at once when no healthy proxy is left (single-flight: one fetch however many requests wait), and on admin
//! request. After a successful fetch, fetched proxies not returned for `proxy_pool_ttl` and carrying no
//! binding are dropped, and at most `proxy_pool_max` fetched proxies are kept.

use std::sync::atomic::AtomicI64;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use super::parser::{spec_to_url, BuiltinParser, MAX_ANSWER};
use super::pool::ProxyPool;
use super::{mask_proxy_url, mask_url, normalize_proxy_url};
use crate::hooks::{PoolParser, ProxySource};
use crate::netpolicy::{CheckError, NetPolicy};
use crate::util::now_ms;

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects of the pool API followed, each one checked against the destination policy like the first URL.
const MAX_REDIRECTS: usize = 3;
/// On-demand fetches (no healthy proxy) are at least this far apart, so a dead pool API is not hammered at
/// the request rate.
const ON_DEMAND_GAP_MS: i64 = 2_000;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum FetchError {
    #[error("no pool API configured (grok.proxy_pool_url)")]
    NotConfigured,
    #[error("pool API request failed: {0}")]
    Request(String),
    #[error("pool API answer rejected: {0}")]
    Answer(String),
    /// `grok.proxy_pool_allow` / `grok.proxy_pool_deny` refused the URL (or a redirect's target).
    #[error("pool API destination denied: {0}")]
    Denied(String),
}

/// What a fetch changed, credentials masked.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RefreshReport {
    pub added: Vec<String>,
    pub dropped: Vec<String>,
    /// Proxies in the answer (valid ones).
    pub returned: usize,
    /// Entries of the answer that are not valid proxies, with the reason.
    pub invalid: Vec<String>,
    pub total: usize,
}

/// Single-flight state of the pool API fetch.
pub(crate) struct FetchState {
    lock: tokio::sync::Mutex<()>,
    /// Bumped after every fetch attempt; a waiter that sees it move knows someone fetched for it.
    generation: AtomicU64,
    last_attempt_ms: AtomicI64,
    http: reqwest::Client,
    policy: Arc<NetPolicy>,
    pub(crate) denied: AtomicU64,
}

impl FetchState {
    pub(crate) fn new(policy: NetPolicy) -> Self {
        let policy = Arc::new(policy);
        FetchState {
            lock: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            last_attempt_ms: AtomicI64::new(0),
            // The pool API is reached directly, like Grok2API does, with its own short timeout. Redirects are
            // followed by hand (`get_checked`) so each target passes the policy; the resolver hands the client
            // only addresses that passed it (no DNS rebinding between check and connect).
            http: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(policy.resolver())
                .build()
                .unwrap_or_default(),
            policy,
            denied: AtomicU64::new(0),
        }
    }

    /// GET with the destination policy applied to the URL and to each redirect (at most [`MAX_REDIRECTS`]).
    async fn get_checked(&self, url: &str) -> Result<reqwest::Response, FetchError> {
        let mut url = reqwest::Url::parse(url).map_err(|e| FetchError::Request(e.to_string()))?;
        for _ in 0..=MAX_REDIRECTS {
            match self.policy.check_url(&url).await {
                Ok(()) => {}
                Err(CheckError::Denied(d)) => {
                    self.denied.fetch_add(1, Relaxed);
                    metrics::counter!("grok2api_netpolicy_denied_total", "use" => "pool_api")
                        .increment(1);
                    return Err(FetchError::Denied(format!(
                        "{}: {d}",
                        mask_url(url.as_str())
                    )));
                }
                Err(e) => return Err(FetchError::Request(e.to_string())),
            }
            let resp = self
                .http
                .get(url.clone())
                .send()
                .await
                .map_err(|e| FetchError::Request(mask_url(&super::error_chain(&e))))?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let next = resp
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| {
                    FetchError::Answer(format!("HTTP {} without a usable Location", resp.status()))
                })?;
            url = next;
        }
        Err(FetchError::Answer(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

impl ProxyPool {
    /// Fetches the pool API now (waiting for a fetch already running, then fetching again).
    pub async fn refresh(&self) -> Result<RefreshReport, FetchError> {
        if self.opts().pool_url.is_none() {
            return Err(FetchError::NotConfigured);
        }
        let _g = self.fetch.lock.lock().await;
        self.fetch_locked().await
    }

    /// Called by requests that found no healthy proxy: one fetch for all of them, and not more often than
    /// every couple of seconds. The lock is held across the fetch on purpose (that is the single flight); it is
    /// never taken while a healthy proxy exists.
    pub(crate) async fn refresh_on_demand(&self) {
        let seen = self.fetch.generation.load(Acquire);
        let _g = self.fetch.lock.lock().await;
        if self.fetch.generation.load(Acquire) != seen {
            return;
        }
        if now_ms() - self.fetch.last_attempt_ms.load(Relaxed) < ON_DEMAND_GAP_MS {
            return;
        }
        if let Err(e) = self.fetch_locked().await {
            tracing::warn!(error = %e, "on-demand pool API fetch failed");
        }
    }

    async fn fetch_locked(&self) -> Result<RefreshReport, FetchError> {
        let r = self.fetch_and_merge().await;
        self.fetch.last_attempt_ms.store(now_ms(), Relaxed);
        self.fetch.generation.fetch_add(1, AcqRel);
        match &r {
            Ok(rep) => tracing::info!(
                pool_api = %mask_url(self.opts().pool_url.as_deref().unwrap_or("")),
                returned = rep.returned,
                added = rep.added.len(),
                dropped = rep.dropped.len(),
                invalid = rep.invalid.len(),
                total = rep.total,
                "pool API fetched"
            ),
            Err(e) => tracing::warn!(
                pool_api = %mask_url(self.opts().pool_url.as_deref().unwrap_or("")),
                error = %e,
                "pool API fetch failed"
            ),
        }
        r
    }

    async fn fetch_and_merge(&self) -> Result<RefreshReport, FetchError> {
        let url = self
            .opts()
            .pool_url
            .clone()
            .ok_or(FetchError::NotConfigured)?;
        let resp = self.fetch.get_checked(&url).await?;
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| FetchError::Request(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(FetchError::Answer("answer larger than 1 MiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let specs = self
            .parse_answer(&url, status, ctype.as_deref(), &body)
            .map_err(FetchError::Answer)?;

        let now = now_ms();
        let mut report = RefreshReport::default();
        let mut urls = Vec::new();
        for spec in &specs {
            if spec.expires_at_ms.is_some_and(|t| (t as i64) <= now) {
                continue;
            }
            let Some(raw) = spec_to_url(spec) else {
                report.invalid.push("entry without host and port".into());
                continue;
            };
            match normalize_proxy_url(&raw) {
                Ok(u) if !urls.contains(&u) => urls.push(u),
                Ok(_) => {}
                Err(e) => report.invalid.push(e.to_string()),
            }
        }
        if urls.is_empty() {
            let why = report
                .invalid
                .first()
                .cloned()
                .unwrap_or_else(|| "every proxy in it had expired".into());
            return Err(FetchError::Answer(format!("no valid proxy: {why}")));
        }
        report.returned = urls.len();
        let results = self.insert_many(
            urls.iter()
                .map(|u| (u.clone(), ProxySource::Pool))
                .collect(),
            now,
        );
        for r in results {
            match r {
                Ok((e, new)) => {
                    e.last_seen_ms.store(now, Relaxed);
                    if new {
                        report.added.push(e.masked().to_string());
                    }
                }
                Err(e) => report.invalid.push(e.to_string()),
            }
        }
        self.mark_dirty();
        report.dropped = self
            .prune(now)
            .into_iter()
            .map(|u| mask_proxy_url(&u))
            .collect();
        report.total = self.len();
        Ok(report)
    }

    /// The active parser (plugin, falling back to the built-in on error), as a list of proxy specs.
    fn parse_answer(
        &self,
        url: &str,
        status: u16,
        ctype: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<crate::hooks::ProxySpec>, String> {
        if let Some(slot) = self.parser.load().as_ref() {
            match slot.0.parse(url, status, ctype, body) {
                Ok(specs) if !specs.is_empty() => return Ok(specs),
                Ok(_) => tracing::debug!(
                    parser = slot.0.name(),
                    "parser plugin found nothing; using the built-in"
                ),
                Err(e) => {
                    tracing::debug!(parser = slot.0.name(), error = %e, "parser plugin failed; using the built-in")
                }
            }
        }
        BuiltinParser
            .parse(url, status, ctype, body)
            .map_err(|e| e.to_string())
    }

    /// Drops fetched proxies past their TTL that no token is bound to, then the least recently seen unbound
    /// ones (then bound ones) beyond `proxy_pool_max`. Returns the dropped URLs (with credentials).
    pub(crate) fn prune(&self, now: i64) -> Vec<String> {
        let ttl = self.opts().pool_ttl.as_millis() as i64;
        let mut dropped: Vec<String> = self
            .remove_where(|e| {
                e.source() == ProxySource::Pool
                    && e.bound_tokens() == 0
                    && now - e.last_seen_ms.load(Relaxed) > ttl
            })
            .iter()
            .map(|e| e.url().to_string())
            .collect();
        let mut fetched: Vec<_> = self
            .entries()
            .into_iter()
            .filter(|e| e.source() == ProxySource::Pool)
            .collect();
        if fetched.len() > self.opts().pool_max {
            // Unbound first, then oldest seen first.
            fetched.sort_by_key(|e| (e.bound_tokens() > 0, e.last_seen_ms.load(Relaxed)));
            let excess: Vec<Arc<str>> = fetched[..fetched.len() - self.opts().pool_max]
                .iter()
                .map(|e| Arc::from(e.url()))
                .collect();
            dropped.extend(
                self.remove_where(|e| excess.iter().any(|u| **u == *e.url()))
                    .iter()
                    .map(|e| e.url().to_string()),
            );
        }
        dropped
    }

    /// Fetches at start-up and then every `proxy_pool_interval` until stopped; a settings change (new URL or
    /// interval) fetches at once and restarts the wait.
    pub(crate) async fn run_fetcher(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let (configured, interval) = {
                let o = self.opts();
                (o.pool_url.is_some(), o.pool_interval)
            };
            if configured {
                // A slow pool API must not hold up shutdown.
                tokio::select! {
                    _ = self.refresh() => {}
                    _ = stop.changed() => break,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.opts_changed.notified() => {}
                _ = stop.changed() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::pool::tests::{opts, pool_in};

    #[test]
    fn prune_drops_stale_unbound_and_caps_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts();
        o.pool_ttl = Duration::from_secs(10);
        o.pool_max = 3;
        o.list = vec!["http://10.0.0.1:80".into()];
        let pool = pool_in(dir.path(), o);
        let now = now_ms();
        let urls: Vec<(String, ProxySource)> = (1..=5)
            .map(|i| (format!("http://10.1.0.{i}:80"), ProxySource::Pool))
            .collect();
        for r in pool.insert_many(urls, now) {
            r.unwrap();
        }
        // Two were last seen long ago; one of them has a token bound.
        let old = now - 60_000;
        for i in [1, 2] {
            pool.entry(&format!("http://10.1.0.{i}:80"))
                .unwrap()
                .last_seen_ms
                .store(old, Relaxed);
        }
        pool.assign("http://10.1.0.2:80", "tok").unwrap();
        let dropped = pool.prune(now);
        // 1: stale and unbound. Then 4 fetched (2..=5) > max 3: one unbound goes, the bound stale one stays.
        assert_eq!(dropped.len(), 2, "{dropped:?}");
        assert_eq!(dropped[0], "http://10.1.0.1:80");
        assert_ne!(dropped[1], "http://10.1.0.2:80");
        let fetched: Vec<String> = pool
            .entries()
            .iter()
            .filter(|e| e.source() == ProxySource::Pool)
            .map(|e| e.url().to_string())
            .collect();
        assert_eq!(fetched.len(), 3, "{fetched:?}");
        assert!(fetched.contains(&"http://10.1.0.2:80".to_string()));
        // Configured proxies are never pruned.
        assert!(pool.entry("http://10.0.0.1:80").is_some());
    }
}
