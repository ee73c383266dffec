//! The proxy pool: its proxies (each with its own pooled HTTP client, counters and health), the token → proxy
//! bindings, selection, failure accounting and persistence.
//!
//! Request path cost: one `ArcSwap` load of the membership snapshot, one short lock of one of 16 binding
//! shards, a few atomics. Membership edits (admin, pool fetches, pruning) copy the snapshot under a mutex the
//! request path never takes. Counters are atomics; state is saved in batches by a version counter.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;
use serde::Serialize;
use thiserror::Error;

use super::select::{choose, View};
use super::{
    mask_proxy_url, normalize_proxy_url, proxy_client, scrub_userinfo, ClientOptions, Egress,
    ProxyError, RequestInfo,
};
use crate::config::{DirectPolicy, GrokSettings};
use crate::hooks::{Candidate, PoolParser, ProxySelector, ProxySource, SelectRequest, Selection};
use crate::storage::{ProxyRecord, ProxyStateFile, Storage, StorageError};
use crate::upstream::{DirectOptions, UpstreamClient};
use crate::util::now_ms;

mod shared;

const SHARDS: usize = 16;
/// Weight of a new latency sample in the moving average.
const EWMA_NEW: u64 = 1;
const EWMA_OLD: u64 = 4;

/// What the pool reads from the settings.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// `grok.proxy_url`, normalised: the fallback when nothing else is healthy.
    pub static_url: Option<String>,
    /// `grok.proxy_urls`, normalised.
    pub list: Vec<String>,
    pub pool_url: Option<String>,
    pub pool_interval: Duration,
    pub pool_ttl: Duration,
    pub pool_max: usize,
    pub direct: DirectPolicy,
    pub max_fails: u32,
    pub test_url: String,
    pub check_base: Duration,
    pub check_max: Duration,
    pub client: ClientOptions,
    /// `grok.proxy_pool_allow` / `grok.proxy_pool_deny` (loopback allowed by default).
    pub pool_policy: crate::netpolicy::NetPolicy,
}

impl PoolOptions {
    pub fn from_settings(g: &GrokSettings) -> Result<PoolOptions, ProxyError> {
        let static_url = match g.proxy_url.trim() {
            "" => None,
            u => Some(normalize_proxy_url(u)?),
        };
        let mut list = Vec::new();
        for u in g.proxy_urls.iter().filter(|u| !u.trim().is_empty()) {
            let u = normalize_proxy_url(u)?;
            if !list.contains(&u) {
                list.push(u);
            }
        }
        Ok(PoolOptions {
            static_url,
            list,
            pool_url: Some(g.proxy_pool_url.trim().to_string()).filter(|u| !u.is_empty()),
            pool_interval: Duration::from_secs(g.proxy_pool_interval.max(1)),
            pool_ttl: g.proxy_pool_ttl(),
            pool_max: g.proxy_pool_max,
            direct: g.allow_direct,
            max_fails: g.proxy_max_fails.max(1),
            test_url: g.proxy_test_url(),
            check_base: Duration::from_secs(g.proxy_check_base_secs.max(1)),
            check_max: Duration::from_secs(g.proxy_check_max_secs.max(g.proxy_check_base_secs)),
            client: ClientOptions {
                connect_timeout: g.connect_timeout(),
            },
            pool_policy: g.pool_policy().map_err(|e| ProxyError::Invalid {
                masked: "grok.proxy_pool_allow/deny".into(),
                reason: e.0,
            })?,
        })
    }

    fn configured_source(&self, url: &str) -> Option<ProxySource> {
        if self.static_url.as_deref() == Some(url) {
            Some(ProxySource::Static)
        } else if self.list.iter().any(|u| u == url) {
            Some(ProxySource::List)
        } else {
            None
        }
    }
}

fn source_code(s: ProxySource) -> u8 {
    match s {
        ProxySource::Static => 0,
        ProxySource::List => 1,
        ProxySource::Pool => 2,
        ProxySource::Admin => 3,
    }
}

fn source_from_code(c: u8) -> ProxySource {
    match c {
        0 => ProxySource::Static,
        1 => ProxySource::List,
        2 => ProxySource::Pool,
        _ => ProxySource::Admin,
    }
}

pub(crate) fn parse_source(s: &str) -> Option<ProxySource> {
    match s {
        "static" => Some(ProxySource::Static),
        "list" => Some(ProxySource::List),
        "pool" => Some(ProxySource::Pool),
        "admin" => Some(ProxySource::Admin),
        _ => None,
    }
}

/// What the selection scan reads, together in one cache line at the start of the entry.
#[repr(C, align(64))]
struct Hot {
    healthy: AtomicBool,
    /// How many tokens are bound to it; changed only together with the binding, under its shard lock.
    bound: AtomicU32,
}

/// One proxy of the pool.
#[repr(C)]
pub struct ProxyEntry {
    hot: Hot,
    /// Normalised, with credentials: only for connecting and the state file.
    url: Arc<str>,
    masked: Arc<str>,
    /// The password as written in the URL, to scrub from error texts.
    password: Option<String>,
    scheme: &'static str,
    host: String,
    source: AtomicU8,
    fail_count: AtomicU32,
    total: AtomicU64,
    success: AtomicU64,
    last_used_ms: AtomicI64,
    /// When the pool API last returned it (0: never).
    pub(crate) last_seen_ms: AtomicI64,
    /// Microseconds; 0 = no sample yet.
    ewma_us: AtomicU64,
    removed: AtomicBool,
    pub(crate) check_failures: AtomicU32,
    pub(crate) next_check_ms: AtomicI64,
    pub(crate) checking: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Requests and health probes: our pool through this proxy (reqwest for an `https://` proxy).
    client: UpstreamClient,
}

impl std::fmt::Debug for ProxyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyEntry")
            .field("url", &self.masked)
            .finish()
    }
}

impl ProxyEntry {
    fn new(
        url: String,
        source: ProxySource,
        opts: ClientOptions,
    ) -> Result<ProxyEntry, ProxyError> {
        let parsed = reqwest::Url::parse(&url).map_err(|e| ProxyError::Invalid {
            masked: mask_proxy_url(&url),
            reason: e.to_string(),
        })?;
        let scheme = match parsed.scheme() {
            "https" => "https",
            "socks5h" => "socks5h",
            _ => "http",
        };
        let host = format!(
            "{}:{}",
            parsed.host_str().unwrap_or_default(),
            parsed.port_or_known_default().unwrap_or(0)
        );
        let password = parsed
            .password()
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        let client = proxy_client(&url, opts)?;
        Ok(ProxyEntry {
            masked: Arc::from(mask_proxy_url(&url)),
            url: Arc::from(url),
            password,
            scheme,
            host,
            source: AtomicU8::new(source_code(source)),
            hot: Hot {
                healthy: AtomicBool::new(true),
                bound: AtomicU32::new(0),
            },
            fail_count: AtomicU32::new(0),
            total: AtomicU64::new(0),
            success: AtomicU64::new(0),
            last_used_ms: AtomicI64::new(0),
            last_seen_ms: AtomicI64::new(0),
            ewma_us: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            check_failures: AtomicU32::new(0),
            next_check_ms: AtomicI64::new(0),
            checking: AtomicBool::new(false),
            last_error: Mutex::new(None),
            client,
        })
    }

    /// With credentials. Never log this; use [`ProxyEntry::masked`].
    pub fn url(&self) -> &str {
        &self.url
    }
    pub fn masked(&self) -> &Arc<str> {
        &self.masked
    }
    pub fn source(&self) -> ProxySource {
        source_from_code(self.source.load(Relaxed))
    }
    pub fn healthy(&self) -> bool {
        self.hot.healthy.load(Relaxed)
    }
    pub fn fail_count(&self) -> u32 {
        self.fail_count.load(Relaxed)
    }
    pub fn bound_tokens(&self) -> u32 {
        self.hot.bound.load(Relaxed)
    }
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }
    pub fn ewma_latency_ms(&self) -> Option<f64> {
        match self.ewma_us.load(Relaxed) {
            0 => None,
            us => Some(us as f64 / 1000.0),
        }
    }
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
    fn is_removed(&self) -> bool {
        self.removed.load(Acquire)
    }
    fn set_error(&self, reason: &str) {
        let text: String = self.scrub(reason).chars().take(300).collect();
        *self.last_error.lock() = Some(text);
    }

    /// `text` with this proxy's URL and password masked, for anything that may reach a log or an answer.
    pub fn scrub(&self, text: &str) -> String {
        let mut s = text.replace(&*self.url, &self.masked);
        if let Some(p) = &self.password {
            s = s.replace(p.as_str(), "****");
        }
        scrub_userinfo(&s)
    }

    fn candidate(&self, id: u32, now: i64) -> Candidate<'_> {
        let last_used = self.last_used_ms.load(Relaxed);
        Candidate {
            id,
            scheme: self.scheme,
            host: &self.host,
            source: self.source(),
            healthy: self.healthy(),
            consecutive_failures: self.fail_count(),
            requests: self.total.load(Relaxed),
            successes: self.success.load(Relaxed),
            ewma_latency_ms: self.ewma_latency_ms().map(|v| v.round() as u32),
            bound_tokens: self.bound_tokens(),
            idle_ms: if last_used > 0 {
                (now - last_used).max(0) as u64
            } else {
                u64::MAX
            },
        }
    }
}

/// The pool's members, replaced whole on every membership change.
pub(crate) struct Snapshot {
    pub(crate) entries: Vec<Arc<ProxyEntry>>,
    index: HashMap<Arc<str>, usize>,
}

impl Snapshot {
    fn new(entries: Vec<Arc<ProxyEntry>>) -> Snapshot {
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.url.clone(), i))
            .collect();
        Snapshot { entries, index }
    }
    pub(crate) fn get(&self, url: &str) -> Option<&Arc<ProxyEntry>> {
        self.index.get(url).map(|&i| &self.entries[i])
    }
}

fn excluded(e: &Arc<ProxyEntry>, exclude: &[Arc<ProxyEntry>]) -> bool {
    exclude.iter().any(|x| Arc::ptr_eq(x, e))
}

struct Entries<'a> {
    entries: &'a [Arc<ProxyEntry>],
    exclude: &'a [Arc<ProxyEntry>],
}

impl View for Entries<'_> {
    fn len(&self) -> usize {
        self.entries.len()
    }
    fn usable(&self, i: usize) -> bool {
        let e = &self.entries[i];
        e.healthy() && !excluded(e, self.exclude)
    }
    fn bindings(&self, i: usize) -> u32 {
        self.entries[i].bound_tokens()
    }
}

/// foldhash, seeded per process: the keys are token ids the operator chose, and SipHash over them (up to
/// four times per proxied request: shard and map, on lookup and bind) was 2 % of the request's instructions.
type TokenHasher = foldhash::fast::RandomState;
type Shard = Mutex<HashMap<Box<str>, Arc<ProxyEntry>, TokenHasher>>;

/// Token id → proxy, sharded so concurrent requests rarely meet on a lock. Each entry's `bound` counter is
/// changed only under the lock of the shard holding the binding, so counters and bindings always agree.
pub(crate) struct Bindings {
    hasher: TokenHasher,
    shards: Box<[Shard]>,
}

impl Bindings {
    fn new() -> Bindings {
        Bindings {
            hasher: TokenHasher::default(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }
    fn shard(&self, token: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(token) as usize) % SHARDS]
    }
    pub(crate) fn get(&self, token: &str) -> Option<Arc<ProxyEntry>> {
        self.shard(token).lock().get(token).cloned()
    }
    /// Binds `token` to `e` (moving it off any other proxy). True when something changed.
    pub(crate) fn bind(&self, token: &str, e: &Arc<ProxyEntry>) -> bool {
        let mut shard = self.shard(token).lock();
        match shard.get(token) {
            Some(old) if Arc::ptr_eq(old, e) => false,
            _ => {
                e.hot.bound.fetch_add(1, Relaxed);
                if let Some(old) = shard.insert(token.into(), e.clone()) {
                    old.hot.bound.fetch_sub(1, Relaxed);
                }
                true
            }
        }
    }
    pub(crate) fn unbind(&self, token: &str) -> Option<Arc<ProxyEntry>> {
        let old = self.shard(token).lock().remove(token)?;
        old.hot.bound.fetch_sub(1, Relaxed);
        Some(old)
    }
    /// Unbinds `token` only if it is still bound to `e`.
    fn unbind_if(&self, token: &str, e: &Arc<ProxyEntry>) -> bool {
        let mut shard = self.shard(token).lock();
        if shard.get(token).is_some_and(|b| Arc::ptr_eq(b, e)) {
            shard.remove(token);
            e.hot.bound.fetch_sub(1, Relaxed);
            true
        } else {
            false
        }
    }
    /// Unbinds every token of `e`; returns how many.
    fn unbind_all(&self, e: &Arc<ProxyEntry>) -> usize {
        let mut n = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.retain(|_, b| {
                let keep = !Arc::ptr_eq(b, e);
                if !keep {
                    e.hot.bound.fetch_sub(1, Relaxed);
                    n += 1;
                }
                keep
            });
        }
        n
    }
    pub(crate) fn all(&self) -> Vec<(String, Arc<ProxyEntry>)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.lock().iter().map(|(k, v)| (k.to_string(), v.clone())));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Where a request goes.
enum Pick {
    Proxy(Arc<ProxyEntry>),
    Direct,
}

/// No way out: every proxy is unhealthy (or already failed this request) and direct egress is not allowed.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("no healthy egress proxy, and direct connections to the upstream are not allowed (grok.allow_direct)")]
pub struct NoEgress;

#[derive(Debug, Error, PartialEq)]
pub enum AssignError {
    #[error("proxy not in the pool")]
    UnknownProxy,
    #[error("proxy is unhealthy")]
    Unhealthy,
}

/// A proxy as the admin API shows it: Grok2API's fields plus ours, credentials masked.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProxyView {
    pub url: String,
    pub healthy: bool,
    pub fail_count: u32,
    pub last_used: i64,
    pub assigned_sso: Vec<String>,
    pub total_requests: u64,
    pub success_requests: u64,
    pub source: &'static str,
    pub last_seen: Option<i64>,
    pub last_error: Option<String>,
    pub ewma_latency_ms: Option<f64>,
    pub next_check: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProxyListing {
    pub proxies: Vec<ProxyView>,
    /// Token id → masked proxy URL.
    pub assignments: indexmap::IndexMap<String, String>,
    pub total: usize,
}

pub(crate) struct SelectorSlot(pub(crate) Arc<dyn ProxySelector>);
pub(crate) struct ParserSlot(pub(crate) Arc<dyn PoolParser>);

pub struct ProxyPool {
    /// Swapped whole by [`ProxyPool::apply_options`] when the settings change.
    opts: ArcSwap<PoolOptions>,
    /// Wakes the pool-API fetcher after a settings change (new URL or interval).
    pub(crate) opts_changed: tokio::sync::Notify,
    pub(crate) snap: ArcSwap<Snapshot>,
    /// Serialises membership edits (copy-on-write of `snap`); never taken by requests.
    edit: Mutex<()>,
    pub(crate) bindings: Bindings,
    rr: AtomicUsize,
    /// The direct egress: our pool (see `upstream/client.rs`).
    direct: UpstreamClient,
    /// A plugin selector; `None` = the built-in rule, run directly on the entries.
    selector: ArcSwapOption<SelectorSlot>,
    pub(crate) parser: ArcSwapOption<ParserSlot>,
    version: AtomicU64,
    saved_version: AtomicU64,
    /// Serialises saves; holds the shared-mode merge base (empty in file mode).
    save_lock: tokio::sync::Mutex<shared::Base>,
    /// Woken on a new binding so shared mode claims it at once rather than at the next tick.
    pub(crate) sync_wake: tokio::sync::Notify,
    storage: Arc<dyn Storage>,
    pub(crate) fetch: source::FetchState,
}

use super::source;

impl ProxyPool {
    /// A pool with the configured static and list proxies. Call [`ProxyPool::load_state`] next.
    pub fn new(opts: PoolOptions, storage: Arc<dyn Storage>) -> Result<ProxyPool, ProxyError> {
        let direct = UpstreamClient::direct(DirectOptions {
            connect_timeout: opts.client.connect_timeout,
        })
        .map_err(|e| ProxyError::Client(e.to_string()))?;
        let pool = ProxyPool {
            snap: ArcSwap::from_pointee(Snapshot::new(Vec::new())),
            edit: Mutex::new(()),
            bindings: Bindings::new(),
            rr: AtomicUsize::new(0),
            direct,
            selector: ArcSwapOption::empty(),
            parser: ArcSwapOption::empty(),
            version: AtomicU64::new(0),
            saved_version: AtomicU64::new(0),
            save_lock: tokio::sync::Mutex::new(shared::Base::default()),
            sync_wake: tokio::sync::Notify::new(),
            storage,
            fetch: source::FetchState::new(opts.pool_policy.clone()),
            opts: ArcSwap::from_pointee(opts),
            opts_changed: tokio::sync::Notify::new(),
        };
        let mut configured = Vec::new();
        if let Some(u) = &pool.opts().static_url {
            configured.push((u.clone(), ProxySource::Static));
        }
        for u in &pool.opts().list {
            configured.push((u.clone(), ProxySource::List));
        }
        for r in pool.insert_many(configured, now_ms()) {
            r?;
        }
        Ok(pool)
    }

    pub fn options(&self) -> Arc<PoolOptions> {
        self.opts.load_full()
    }

    pub(crate) fn opts(&self) -> arc_swap::Guard<Arc<PoolOptions>> {
        self.opts.load()
    }

    /// Applies changed settings without a restart: adds newly configured static/list proxies, drops the ones no
    /// longer configured (unbinding their tokens), re-labels kept ones, and wakes the pool-API fetcher. The
    /// connect timeout is not applied here: clients are built once per proxy (it needs a restart).
    pub fn apply_options(&self, new: PoolOptions) -> Result<(), ProxyError> {
        let mut configured = Vec::new();
        if let Some(u) = &new.static_url {
            configured.push((u.clone(), ProxySource::Static));
        }
        for u in &new.list {
            if new.static_url.as_deref() != Some(u.as_str()) {
                configured.push((u.clone(), ProxySource::List));
            }
        }
        self.opts.store(Arc::new(new));
        let added = self.insert_many(configured.clone(), now_ms());
        for r in added {
            r?;
        }
        for (url, source) in &configured {
            if let Some(e) = self.entry(url) {
                if e.source() != *source {
                    e.source.store(source_code(*source), Relaxed);
                    self.mark_dirty();
                }
            }
        }
        let dropped = self.remove_where(|e| {
            matches!(e.source(), ProxySource::Static | ProxySource::List)
                && !configured.iter().any(|(u, _)| **u == *e.url)
        });
        if !dropped.is_empty() {
            tracing::info!(
                dropped = dropped.len(),
                "proxies no longer in the settings removed"
            );
        }
        self.opts_changed.notify_one();
        Ok(())
    }

    /// Installs a plugin selector (`None` restores the built-in). A plugin's `Err`, `Default` or invalid answer
    /// falls back to the built-in for that call.
    pub fn set_selector(&self, selector: Option<Arc<dyn ProxySelector>>) {
        self.selector
            .store(selector.map(|s| Arc::new(SelectorSlot(s))));
    }

    /// Installs a plugin parser for pool-API answers (`None` restores the built-in).
    pub fn set_parser(&self, parser: Option<Arc<dyn PoolParser>>) {
        self.parser.store(parser.map(|p| Arc::new(ParserSlot(p))));
    }

    pub fn selector_name(&self) -> String {
        match self.selector.load().as_ref() {
            Some(s) => s.0.name().to_string(),
            None => "builtin".into(),
        }
    }

    pub fn len(&self) -> usize {
        self.snap.load().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn healthy_count(&self) -> usize {
        self.snap
            .load()
            .entries
            .iter()
            .filter(|e| e.healthy())
            .count()
    }

    pub fn entry(&self, url: &str) -> Option<Arc<ProxyEntry>> {
        self.snap.load().get(url).cloned()
    }

    pub fn entries(&self) -> Vec<Arc<ProxyEntry>> {
        self.snap.load().entries.clone()
    }

    /// Direct egress: `allow_direct = true`, or `auto` while no proxy is configured at all.
    pub fn direct_allowed(&self) -> bool {
        self.direct_allowed_by(&self.opts())
    }

    fn direct_allowed_by(&self, opts: &PoolOptions) -> bool {
        match opts.direct {
            DirectPolicy::Allow => true,
            DirectPolicy::Deny => false,
            DirectPolicy::Auto => opts.pool_url.is_none() && self.is_empty(),
        }
    }

    pub(crate) fn mark_dirty(&self) {
        self.version.fetch_add(1, Release);
    }

    pub fn is_dirty(&self) -> bool {
        self.version.load(Acquire) != self.saved_version.load(Acquire)
    }

    // ----- selection ---------------------------------------------------------------------------------------

    /// The egress for one attempt, avoiding proxies that already failed this request (`exclude`) while another
    /// healthy one exists.
    /// With no healthy proxy: fetch the pool API (single-flight), then `grok.proxy_url`, then direct when
    /// allowed; else [`NoEgress`].
    pub async fn egress(
        &self,
        info: &RequestInfo<'_>,
        exclude: &[Arc<ProxyEntry>],
    ) -> Result<Egress, NoEgress> {
        if let Some(p) = self.select_now(info, exclude) {
            return Ok(self.to_egress(p));
        }
        if !exclude.is_empty() {
            // Every other way is down too: a proxy that failed this request but is still healthy (one stale
            // pooled connection, say) is better than none.
            if let Some(p) = self.select_now(info, &[]) {
                return Ok(self.to_egress(p));
            }
        }
        // One load of the options (an `ArcSwap` read) for the rest, made again only after a fetch: a snapshot
        // is not held across it.
        let mut opts = self.opts();
        if opts.pool_url.is_some() {
            drop(opts);
            // A path a request rarely takes: its code stays out of the forwarder's (`util::cold`).
            crate::util::cold(self.refresh_on_demand()).await;
            if let Some(p) = self.select_now(info, exclude) {
                return Ok(self.to_egress(p));
            }
            opts = self.opts();
        }
        if let Some(url) = &opts.static_url {
            if let Some(e) = self.entry(url).filter(|e| !excluded(e, exclude)) {
                return Ok(self.to_egress(Pick::Proxy(e)));
            }
        }
        if self.direct_allowed_by(&opts) {
            return Ok(self.to_egress(Pick::Direct));
        }
        Err(NoEgress)
    }

    /// Selection without waiting (no pool-API fetch, no fallbacks): the built-in rule or the plugin. What
    /// [`ProxyPool::egress`] tries first; `None` when no healthy proxy is usable.
    pub fn select_ready(
        &self,
        info: &RequestInfo<'_>,
        exclude: &[Arc<ProxyEntry>],
    ) -> Option<Egress> {
        self.select_now(info, exclude).map(|p| self.to_egress(p))
    }

    fn to_egress(&self, p: Pick) -> Egress {
        match p {
            Pick::Proxy(e) => Egress {
                proxy: Some(e.masked.clone()),
                client: e.client.clone(),
                entry: Some(e),
            },
            Pick::Direct => Egress {
                proxy: None,
                client: self.direct.clone(),
                entry: None,
            },
        }
    }

    /// Selection without waiting: the plugin selector if one is installed, else (or when it declines) the
    /// built-in rule. `None` when no healthy proxy is usable.
    fn select_now(&self, info: &RequestInfo<'_>, exclude: &[Arc<ProxyEntry>]) -> Option<Pick> {
        let snap = self.snap.load();
        if let Some(slot) = self.selector.load().as_ref() {
            if let Some(p) = self.select_plugin(&*slot.0, &snap, info, exclude) {
                return Some(p);
            }
        }
        self.select_builtin(&snap, info.token_id, exclude)
            .map(Pick::Proxy)
    }

    /// The built-in rule on the entries (see `select.rs`), binding the token on first use.
    pub(crate) fn select_builtin(
        &self,
        snap: &Snapshot,
        token: &str,
        exclude: &[Arc<ProxyEntry>],
    ) -> Option<Arc<ProxyEntry>> {
        // No proxy at all (direct egress): nothing to look up. Removing a proxy unbinds its tokens, so no
        // binding is left to clean up either.
        if snap.entries.is_empty() {
            return None;
        }
        let mut keep_binding = false;
        if let Some(b) = self.bindings.get(token) {
            if b.is_removed() || !b.healthy() {
                if self.bindings.unbind_if(token, &b) {
                    self.mark_dirty();
                }
            } else if !excluded(&b, exclude) {
                return Some(b);
            } else {
                // Failed this request but still healthy: use another proxy for this attempt only.
                keep_binding = true;
            }
        }
        let start = self.rr.fetch_add(1, Relaxed);
        let i = choose(
            &Entries {
                entries: &snap.entries,
                exclude,
            },
            start,
        )?;
        let e = snap.entries[i].clone();
        if !keep_binding && self.bindings.bind(token, &e) {
            // A concurrent removal may have missed this binding: undo it.
            if e.is_removed() {
                self.bindings.unbind_if(token, &e);
            }
            self.mark_dirty();
            self.sync_wake.notify_one();
        }
        Some(e)
    }

    fn select_plugin(
        &self,
        selector: &dyn ProxySelector,
        snap: &Snapshot,
        info: &RequestInfo<'_>,
        exclude: &[Arc<ProxyEntry>],
    ) -> Option<Pick> {
        let now = now_ms();
        let usable: Vec<&Arc<ProxyEntry>> = snap
            .entries
            .iter()
            .filter(|e| !excluded(e, exclude))
            .collect();
        let candidates: Vec<Candidate> = usable
            .iter()
            .enumerate()
            .map(|(i, e)| e.candidate(i as u32, now))
            .collect();
        let bound = self.bindings.get(info.token_id);
        let req = SelectRequest {
            token_id: info.token_id,
            model: info.model,
            route: info.route,
            stream: info.stream,
            bound: bound
                .as_ref()
                .and_then(|b| usable.iter().position(|e| Arc::ptr_eq(e, b)))
                .map(|i| i as u32),
        };
        let fallback = |why: String| {
            tracing::debug!(selector = selector.name(), reason = %why, "selector plugin declined; using the built-in");
            None
        };
        match selector.select(&req, &candidates) {
            Ok(Selection::Use(i)) => match usable.get(i as usize) {
                Some(e) => {
                    let e = (*e).clone();
                    if e.healthy() && self.bindings.bind(info.token_id, &e) {
                        self.mark_dirty();
                    }
                    Some(Pick::Proxy(e))
                }
                None => fallback(format!("candidate {i} out of range")),
            },
            Ok(Selection::Direct) if self.direct_allowed() => Some(Pick::Direct),
            Ok(Selection::Direct) => fallback("direct egress is not allowed".into()),
            Ok(Selection::Default) => None,
            Err(e) => fallback(e.to_string()),
        }
    }

    // ----- outcomes ----------------------------------------------------------------------------------------

    /// The proxy carried the attempt (any upstream answer but 403/407): resets its failures.
    pub fn report_ok(&self, e: &ProxyEntry, latency: Duration) {
        e.total.fetch_add(1, Relaxed);
        e.success.fetch_add(1, Relaxed);
        e.last_used_ms.store(now_ms(), Relaxed);
        let x = (latency.as_micros() as u64).max(1);
        let old = e.ewma_us.load(Relaxed);
        let new = if old == 0 {
            x
        } else {
            (old * EWMA_OLD + x * EWMA_NEW) / (EWMA_OLD + EWMA_NEW)
        };
        e.ewma_us.store(new.max(1), Relaxed);
        e.fail_count.store(0, Relaxed);
        if !e.hot.healthy.swap(true, Relaxed) {
            e.check_failures.store(0, Relaxed);
            tracing::info!(proxy = %e.masked, "proxy healthy again");
        }
        self.mark_dirty();
    }

    /// The attempt failed because of the proxy (connect/TLS/handshake error, timeout before the first byte,
    /// upstream 403). At `proxy_max_fails` in a row the proxy turns unhealthy and its tokens are unbound.
    pub fn report_failure(&self, e: &Arc<ProxyEntry>, reason: &str) {
        e.total.fetch_add(1, Relaxed);
        e.last_used_ms.store(now_ms(), Relaxed);
        e.set_error(reason);
        let n = e.fail_count.fetch_add(1, Relaxed) + 1;
        if n >= self.opts().max_fails && e.hot.healthy.swap(false, Relaxed) {
            let unbound = self.bindings.unbind_all(e);
            self.schedule_check(e, 0);
            tracing::warn!(
                proxy = %e.masked,
                failures = n,
                unbound_tokens = unbound,
                reason = %e.scrub(reason),
                "proxy unhealthy; its tokens move to other proxies"
            );
        }
        self.mark_dirty();
    }

    /// Next background check of an unhealthy proxy: base × 2^failures, at most max, ±20 % jitter.
    pub(crate) fn schedule_check(&self, e: &ProxyEntry, failures: u32) {
        let base = self.opts().check_base.as_millis() as f64;
        let max = self.opts().check_max.as_millis() as f64;
        let delay = (base * 2f64.powi(failures.min(30) as i32)).min(max);
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        e.next_check_ms
            .store(now_ms() + (delay * jitter) as i64, Relaxed);
    }

    // ----- membership --------------------------------------------------------------------------------------

    /// Adds the URLs not yet in the pool (already normalised). Clients are built outside the edit lock.
    /// Returns, per URL, the entry and whether it is new.
    pub(crate) fn insert_many(
        &self,
        urls: Vec<(String, ProxySource)>,
        now: i64,
    ) -> Vec<Result<(Arc<ProxyEntry>, bool), ProxyError>> {
        let current = self.snap.load_full();
        let built: Vec<Result<Arc<ProxyEntry>, ProxyError>> = urls
            .into_iter()
            .map(|(url, source)| match current.get(&url) {
                Some(e) => Ok(e.clone()),
                None => {
                    let e = ProxyEntry::new(url, source, self.opts().client)?;
                    if source == ProxySource::Pool {
                        e.last_seen_ms.store(now, Relaxed);
                    }
                    Ok(Arc::new(e))
                }
            })
            .collect();
        let _g = self.edit.lock();
        let snap = self.snap.load_full();
        let mut entries = snap.entries.clone();
        let mut index: HashMap<Arc<str>, usize> = snap.index.clone();
        let mut out = Vec::with_capacity(built.len());
        for b in built {
            out.push(b.map(|e| match index.get(&e.url) {
                Some(&i) => (entries[i].clone(), false),
                None => {
                    index.insert(e.url.clone(), entries.len());
                    entries.push(e.clone());
                    (e, true)
                }
            }));
        }
        if entries.len() != snap.entries.len() {
            self.snap.store(Arc::new(Snapshot::new(entries)));
            self.mark_dirty();
        }
        out
    }

    /// Removes the entries `drop` selects; unbinds their tokens. Returns the removed entries.
    pub(crate) fn remove_where(
        &self,
        drop: impl Fn(&Arc<ProxyEntry>) -> bool,
    ) -> Vec<Arc<ProxyEntry>> {
        let removed: Vec<Arc<ProxyEntry>> = {
            let _g = self.edit.lock();
            let snap = self.snap.load_full();
            let (gone, keep): (Vec<_>, Vec<_>) =
                snap.entries.iter().cloned().partition(|e| drop(e));
            if gone.is_empty() {
                return gone;
            }
            for e in &gone {
                e.removed.store(true, Release);
            }
            self.snap.store(Arc::new(Snapshot::new(keep)));
            gone
        };
        for e in &removed {
            self.bindings.unbind_all(e);
        }
        self.mark_dirty();
        removed
    }

    /// Admin add. An existing proxy is kept (a fetched one becomes an admin one, so pruning leaves it).
    pub fn add_admin(&self, raw: &str) -> Result<(Arc<ProxyEntry>, bool), ProxyError> {
        let url = normalize_proxy_url(raw)?;
        let r = self
            .insert_many(vec![(url, ProxySource::Admin)], now_ms())
            .pop()
            .unwrap_or(Err(ProxyError::Client("nothing inserted".into())))?;
        if !r.1 && r.0.source() == ProxySource::Pool {
            r.0.source.store(source_code(ProxySource::Admin), Relaxed);
            self.mark_dirty();
        }
        Ok(r)
    }

    /// Admin delete: `Ok(false)` when the URL is not in the pool.
    pub fn remove(&self, raw: &str) -> Result<bool, ProxyError> {
        let url = normalize_proxy_url(raw)?;
        Ok(!self.remove_where(|e| *e.url == *url).is_empty())
    }

    /// Binds a token (by id) to a proxy, moving it off its previous one.
    pub fn assign(&self, raw: &str, token_id: &str) -> Result<Arc<ProxyEntry>, AssignError> {
        let url = normalize_proxy_url(raw).map_err(|_| AssignError::UnknownProxy)?;
        let e = self.entry(&url).ok_or(AssignError::UnknownProxy)?;
        if !e.healthy() {
            return Err(AssignError::Unhealthy);
        }
        if self.bindings.bind(token_id, &e) {
            self.mark_dirty();
        }
        Ok(e)
    }

    /// Returns the proxy the token was bound to.
    pub fn unassign(&self, token_id: &str) -> Option<Arc<ProxyEntry>> {
        let old = self.bindings.unbind(token_id)?;
        self.mark_dirty();
        Some(old)
    }

    pub fn binding(&self, token_id: &str) -> Option<Arc<ProxyEntry>> {
        self.bindings.get(token_id)
    }

    /// Drops the bindings of deleted tokens.
    pub fn unbind_tokens(&self, token_ids: &[String]) -> usize {
        let n = token_ids
            .iter()
            .filter(|t| self.bindings.unbind(t).is_some())
            .count();
        if n > 0 {
            self.mark_dirty();
        }
        n
    }

    /// Admin health reset: healthy, no failures. `Ok(false)` for a URL not in the pool.
    pub fn reset_health(&self, raw: &str) -> Result<bool, ProxyError> {
        let url = normalize_proxy_url(raw)?;
        let Some(e) = self.entry(&url) else {
            return Ok(false);
        };
        self.mark_recovered(&e);
        *e.last_error.lock() = None;
        Ok(true)
    }

    pub(crate) fn mark_recovered(&self, e: &ProxyEntry) {
        e.fail_count.store(0, Relaxed);
        e.check_failures.store(0, Relaxed);
        e.next_check_ms.store(0, Relaxed);
        if !e.hot.healthy.swap(true, Relaxed) {
            tracing::info!(proxy = %e.masked, "proxy healthy again");
        }
        self.mark_dirty();
    }

    pub fn listing(&self) -> ProxyListing {
        let snap = self.snap.load();
        let binds = self.bindings.all();
        let proxies: Vec<ProxyView> = snap
            .entries
            .iter()
            .map(|e| {
                let healthy = e.healthy();
                let last_seen = e.last_seen_ms.load(Relaxed);
                ProxyView {
                    url: e.masked.to_string(),
                    healthy,
                    fail_count: e.fail_count(),
                    last_used: e.last_used_ms.load(Relaxed),
                    assigned_sso: binds
                        .iter()
                        .filter(|(_, b)| Arc::ptr_eq(b, e))
                        .map(|(t, _)| t.clone())
                        .collect(),
                    total_requests: e.total.load(Relaxed),
                    success_requests: e.success.load(Relaxed),
                    source: e.source().as_str(),
                    last_seen: (last_seen > 0).then_some(last_seen),
                    last_error: e.last_error(),
                    ewma_latency_ms: e.ewma_latency_ms(),
                    next_check: (!healthy).then(|| e.next_check_ms.load(Relaxed)),
                }
            })
            .collect();
        let assignments = binds
            .into_iter()
            .filter(|(_, e)| !e.is_removed())
            .map(|(t, e)| (t, e.masked.to_string()))
            .collect();
        ProxyListing {
            total: proxies.len(),
            proxies,
            assignments,
        }
    }

    // ----- persistence -------------------------------------------------------------------------------------

    pub(crate) fn state_file(&self) -> ProxyStateFile {
        let snap = self.snap.load();
        let binds = self.bindings.all();
        let mut file = ProxyStateFile::default();
        for e in &snap.entries {
            let last_seen = e.last_seen_ms.load(Relaxed);
            file.proxies.insert(
                e.url.to_string(),
                ProxyRecord {
                    url: e.url.to_string(),
                    healthy: e.healthy(),
                    fail_count: e.fail_count(),
                    last_used: e.last_used_ms.load(Relaxed),
                    assigned_sso: binds
                        .iter()
                        .filter(|(_, b)| Arc::ptr_eq(b, e))
                        .map(|(t, _)| t.clone())
                        .collect(),
                    total_requests: e.total.load(Relaxed),
                    success_requests: e.success.load(Relaxed),
                    source: Some(e.source().as_str().to_string()),
                    last_seen: (last_seen > 0).then_some(last_seen),
                    last_error: e.last_error(),
                    ewma_latency_ms: e.ewma_latency_ms(),
                    extra: serde_json::Map::new(),
                },
            );
        }
        for (t, e) in binds {
            if !e.is_removed() {
                file.assignments.insert(t, e.url.to_string());
            }
        }
        file
    }

    /// Merges `proxy_state.json` into the pool. Bindings keyed by a full token secret (Grok2API) are
    /// converted to token ids through `resolve`; bindings of unknown tokens are dropped. Static and list
    /// proxies no longer in the settings are dropped: the settings are their source of truth.
    pub async fn load_state(
        &self,
        resolve: &(dyn Fn(&str) -> Option<String> + Send + Sync),
    ) -> Result<(), StorageError> {
        let file = self.storage.load_proxy_state().await?;
        let now = now_ms();
        let mut pairs: Vec<(String, String)> = file.assignments.into_iter().collect();
        if pairs.is_empty() {
            // Grok2API rebuilds the bindings from the proxies' lists when `assignments` is empty.
            for (key, rec) in &file.proxies {
                let url = if rec.url.is_empty() { key } else { &rec.url };
                pairs.extend(rec.assigned_sso.iter().map(|t| (t.clone(), url.clone())));
            }
        }
        let mut invalid = 0usize;
        let mut wanted = Vec::new();
        let mut records = Vec::new();
        for (key, rec) in file.proxies {
            let raw = if rec.url.is_empty() { &key } else { &rec.url };
            let Ok(url) = normalize_proxy_url(raw) else {
                invalid += 1;
                continue;
            };
            let stored = rec.source.as_deref().and_then(parse_source);
            let source = match (self.opts().configured_source(&url), stored) {
                (Some(s), _) => s,
                (None, Some(ProxySource::Static | ProxySource::List)) => continue,
                (None, Some(s)) => s,
                (None, None) => ProxySource::Admin,
            };
            wanted.push((url.clone(), source));
            records.push((url, rec));
        }
        let entries = self.insert_many(wanted, now);
        for (r, (_, rec)) in entries.into_iter().zip(records) {
            let Ok((e, _)) = r else {
                invalid += 1;
                continue;
            };
            e.hot.healthy.store(rec.healthy, Relaxed);
            e.fail_count.store(rec.fail_count, Relaxed);
            e.last_used_ms.store(rec.last_used, Relaxed);
            e.total.store(rec.total_requests, Relaxed);
            e.success.store(rec.success_requests, Relaxed);
            if let Some(seen) = rec.last_seen {
                e.last_seen_ms.store(seen, Relaxed);
            } else if e.source() == ProxySource::Pool {
                e.last_seen_ms.store(now, Relaxed);
            }
            *e.last_error.lock() = rec.last_error;
            if let Some(ms) = rec.ewma_latency_ms.filter(|v| v.is_finite() && *v > 0.0) {
                e.ewma_us.store((ms * 1000.0) as u64, Relaxed);
            }
            if !rec.healthy {
                self.schedule_check(&e, 0);
            }
        }
        let (mut converted, mut dropped) = (0usize, 0usize);
        for (key, url) in pairs {
            let Some(id) = resolve(&key) else {
                dropped += 1;
                continue;
            };
            let e = normalize_proxy_url(&url)
                .ok()
                .and_then(|u| self.entry(&u))
                .filter(|e| e.healthy());
            match e {
                Some(e) => {
                    self.bindings.bind(&id, &e);
                    if id != key {
                        converted += 1;
                    }
                }
                None => dropped += 1,
            }
        }
        if invalid + converted + dropped > 0 {
            tracing::info!(
                invalid_proxies = invalid,
                bindings_converted_to_token_ids = converted,
                bindings_dropped = dropped,
                "proxy state loaded with changes"
            );
            self.mark_dirty();
        }
        Ok(())
    }

    /// Saves when something changed since the last save. The version is read before the snapshot, so a change
    /// made during the save is saved next time.
    pub async fn save_if_dirty(&self) -> Result<bool, StorageError> {
        if self.storage.shared().is_some() {
            return self.push_shared().await;
        }
        let _g = self.save_lock.lock().await;
        let version = self.version.load(Acquire);
        if version == self.saved_version.load(Acquire) {
            return Ok(false);
        }
        let state = self.state_file();
        self.storage.save_proxy_state(&state).await?;
        self.saved_version.store(version, Release);
        Ok(true)
    }

    pub async fn run_saver(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if let Err(e) = self.save_if_dirty().await {
                tracing::error!(error = %e, "saving proxy state failed; will retry");
            }
        }
    }

    /// Starts the background tasks: state saver, pool-API fetcher (when configured), health checker.
    pub fn spawn_background(
        self: &Arc<Self>,
        save_every: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(
            self.clone().run_saver(save_every, stop.clone()),
        )];
        // Always running: a pool URL set later through the settings starts fetching without a restart.
        tasks.push(tokio::spawn(self.clone().run_fetcher(stop.clone())));
        tasks.push(tokio::spawn(self.clone().run_health(stop)));
        tasks
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::FileStorage;
    use proptest::prelude::*;

    pub(crate) fn opts() -> PoolOptions {
        PoolOptions::from_settings(&GrokSettings::default()).unwrap()
    }

    pub(crate) fn pool_in(dir: &std::path::Path, opts: PoolOptions) -> ProxyPool {
        ProxyPool::new(opts, Arc::new(FileStorage::new(dir).unwrap())).unwrap()
    }

    fn info(token: &str) -> RequestInfo<'_> {
        RequestInfo {
            token_id: token,
            model: "m",
            route: "/v1/chat/completions",
            stream: false,
        }
    }

    fn pick(pool: &ProxyPool, token: &str, exclude: &[Arc<ProxyEntry>]) -> Option<String> {
        match pool.select_now(&info(token), exclude)? {
            Pick::Proxy(e) => Some(e.url().to_string()),
            Pick::Direct => Some("direct".into()),
        }
    }

    /// Every binding points at a live member, and every member's counter equals its bindings.
    pub(crate) fn assert_consistent(pool: &ProxyPool) {
        let snap = pool.snap.load();
        let binds = pool.bindings.all();
        for (t, e) in &binds {
            assert!(
                snap.entries.iter().any(|x| Arc::ptr_eq(x, e)),
                "{t} bound to a removed proxy"
            );
        }
        for e in &snap.entries {
            let n = binds.iter().filter(|(_, b)| Arc::ptr_eq(b, e)).count();
            assert_eq!(e.bound_tokens() as usize, n, "{}", e.masked());
        }
        let file = pool.state_file();
        for (t, url) in &file.assignments {
            assert!(file.proxies[url].assigned_sso.contains(t));
        }
        let listed: usize = file.proxies.values().map(|r| r.assigned_sso.len()).sum();
        assert_eq!(listed, file.assignments.len());
    }

    #[test]
    fn tokens_stick_and_spread() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts();
        o.list = (1..=3).map(|i| format!("http://10.0.0.{i}:80")).collect();
        let pool = pool_in(dir.path(), o);
        let first: Vec<String> = (0..6)
            .map(|i| pick(&pool, &format!("t{i}"), &[]).unwrap())
            .collect();
        // Six tokens over three proxies: two each.
        for e in pool.entries() {
            assert_eq!(e.bound_tokens(), 2);
        }
        for _ in 0..3 {
            for (i, p) in first.iter().enumerate() {
                assert_eq!(&pick(&pool, &format!("t{i}"), &[]).unwrap(), p);
            }
        }
        assert_consistent(&pool);
    }

    #[test]
    fn failures_unbind_and_success_resets() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts();
        o.list = vec!["http://10.0.0.1:80".into(), "http://10.0.0.2:80".into()];
        let pool = pool_in(dir.path(), o);
        let p = pick(&pool, "t", &[]).unwrap();
        let e = pool.entry(&p).unwrap();
        pool.report_failure(&e, "connect error");
        pool.report_failure(&e, "connect error");
        pool.report_ok(&e, Duration::from_millis(20));
        assert_eq!(e.fail_count(), 0);
        assert_eq!(e.ewma_latency_ms(), Some(20.0));
        for _ in 0..3 {
            pool.report_failure(&e, "connect error: http://u:pw@h:1 pw");
        }
        assert!(!e.healthy());
        assert_eq!(e.bound_tokens(), 0);
        assert!(!e.last_error().unwrap().contains("pw@"));
        let q = pick(&pool, "t", &[]).unwrap();
        assert_ne!(p, q);
        // With the other one excluded too, nothing is healthy and direct is not allowed (proxies configured).
        let other = pool.entry(&q).unwrap();
        assert_eq!(pick(&pool, "t", std::slice::from_ref(&other)), None);
        assert!(!pool.direct_allowed());
        // The binding survives an exclusion for one request.
        assert_eq!(pool.binding("t").unwrap().url(), q);
        assert_consistent(&pool);
    }

    #[test]
    fn secrets_never_in_masks_or_listing() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool_in(dir.path(), opts());
        pool.add_admin("user:hunter2@10.1.1.1:3128").unwrap();
        pool.assign("http://user:hunter2@10.1.1.1:3128", "tok1")
            .unwrap();
        let listing = serde_json::to_string(&pool.listing()).unwrap();
        assert!(!listing.contains("hunter2"), "{listing}");
        assert!(listing.contains("user:****@10.1.1.1:3128"));
        // The state file keeps the credentials: it must, to use the proxy after a restart.
        assert!(pool
            .state_file()
            .assignments
            .values()
            .any(|u| u.contains("hunter2")));
    }

    #[test]
    fn direct_policy() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool_in(dir.path(), opts());
        assert!(pool.direct_allowed(), "auto with no proxy configured");
        assert_eq!(pick(&pool, "t", &[]), None);
        pool.add_admin("10.0.0.9:1").unwrap();
        assert!(!pool.direct_allowed(), "auto with a proxy");
        let mut o = opts();
        o.direct = DirectPolicy::Allow;
        o.list = vec!["http://10.0.0.1:80".into()];
        assert!(pool_in(dir.path(), o).direct_allowed());
    }

    struct Fixed(Result<Selection, crate::hooks::HookError>);
    impl ProxySelector for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn select(
            &self,
            _: &SelectRequest<'_>,
            _: &[Candidate<'_>],
        ) -> Result<Selection, crate::hooks::HookError> {
            self.0.clone()
        }
    }

    #[test]
    fn plugin_selector_is_used_and_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts();
        o.list = vec!["http://10.0.0.1:80".into(), "http://10.0.0.2:80".into()];
        let pool = pool_in(dir.path(), o);
        pool.set_selector(Some(Arc::new(Fixed(Ok(Selection::Use(1))))));
        assert_eq!(pool.selector_name(), "fixed");
        assert_eq!(pick(&pool, "a", &[]).unwrap(), "http://10.0.0.2:80");
        for bad in [
            Ok(Selection::Use(7)),
            Ok(Selection::Direct),
            Ok(Selection::Default),
            Err(crate::hooks::HookError::Timeout),
        ] {
            pool.set_selector(Some(Arc::new(Fixed(bad))));
            // Falls back to the built-in: a healthy proxy, never direct.
            assert!(pick(&pool, "b", &[]).unwrap().starts_with("http://10.0.0."));
        }
        pool.set_selector(None);
        assert_eq!(pool.selector_name(), "builtin");
        assert_consistent(&pool);
    }

    #[tokio::test]
    async fn grok2api_state_converts_secret_keys_to_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("proxy_state.json"),
            r#"{"proxies": {"socks5://1.2.3.4:1080": {"url": "socks5://1.2.3.4:1080", "healthy": true,
                "fail_count": 0, "last_used": 0, "assigned_sso": ["secret-A"], "total_requests": 3,
                "success_requests": 10}, "http://5.6.7.8:1": {"healthy": false, "fail_count": 4}},
                "assignments": {"secret-A": "socks5h://1.2.3.4:1080", "gone": "socks5h://1.2.3.4:1080"}}"#,
        )
        .unwrap();
        let pool = pool_in(dir.path(), opts());
        let resolve = |k: &str| (k == "secret-A").then(|| "id-A".to_string());
        pool.load_state(&resolve).await.unwrap();
        assert_eq!(pool.len(), 2);
        let e = pool.binding("id-A").unwrap();
        assert_eq!(e.url(), "socks5h://1.2.3.4:1080");
        assert_eq!(e.source(), ProxySource::Admin);
        assert!(!pool.entry("http://5.6.7.8:1").unwrap().healthy());
        assert!(pool.is_dirty());
        assert!(pool.save_if_dirty().await.unwrap());
        let text = std::fs::read_to_string(dir.path().join("proxy_state.json")).unwrap();
        assert!(!text.contains("secret-A"), "{text}");
        assert!(text.contains("id-A"));
        assert_consistent(&pool);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Select(u8),
        SelectExcluding(u8, u8),
        Fail(u8),
        Ok(u8),
        Add(u8),
        Remove(u8),
        Assign(u8, u8),
        Unassign(u8),
        Reset(u8),
        UnbindTokens(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let t = 0u8..12;
        let p = 0u8..6;
        prop_oneof![
            4 => t.clone().prop_map(Op::Select),
            1 => (t.clone(), p.clone()).prop_map(|(a, b)| Op::SelectExcluding(a, b)),
            3 => p.clone().prop_map(Op::Fail),
            1 => p.clone().prop_map(Op::Ok),
            1 => p.clone().prop_map(Op::Add),
            1 => p.clone().prop_map(Op::Remove),
            1 => (p.clone(), t.clone()).prop_map(|(a, b)| Op::Assign(a, b)),
            1 => t.clone().prop_map(Op::Unassign),
            1 => p.prop_map(Op::Reset),
            1 => t.prop_map(Op::UnbindTokens),
        ]
    }

    fn purl(i: u8) -> String {
        format!("http://u{i}:pw{i}@10.9.0.{i}:8080")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn bindings_stay_consistent(ops in prop::collection::vec(op(), 1..80)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let mut o = opts();
            o.list = (0..3).map(purl).collect();
            let pool = pool_in(dir.path(), o.clone());
            for op in ops {
                match op {
                    Op::Select(t) => { pick(&pool, &format!("t{t}"), &[]); }
                    Op::SelectExcluding(t, p) => {
                        let ex: Vec<_> = pool.entry(&purl(p)).into_iter().collect();
                        pick(&pool, &format!("t{t}"), &ex);
                    }
                    Op::Fail(p) => if let Some(e) = pool.entry(&purl(p)) { pool.report_failure(&e, "x") },
                    Op::Ok(p) => if let Some(e) = pool.entry(&purl(p)) { pool.report_ok(&e, Duration::from_millis(3)) },
                    Op::Add(p) => { pool.add_admin(&purl(p)).unwrap(); }
                    Op::Remove(p) => { pool.remove(&purl(p)).unwrap(); }
                    Op::Assign(p, t) => { let _ = pool.assign(&purl(p), &format!("t{t}")); }
                    Op::Unassign(t) => { pool.unassign(&format!("t{t}")); }
                    Op::Reset(p) => { pool.reset_health(&purl(p)).unwrap(); }
                    Op::UnbindTokens(t) => { pool.unbind_tokens(&[format!("t{t}")]); }
                }
                assert_consistent(&pool);
            }
            // Save, load into a fresh pool: same bindings, still consistent.
            rt.block_on(pool.save_if_dirty()).unwrap();
            let before = pool.state_file();
            let again = pool_in(dir.path(), o);
            rt.block_on(again.load_state(&|k: &str| Some(k.to_string()))).unwrap();
            assert_consistent(&again);
            let after = again.state_file();
            prop_assert_eq!(
                before.assignments.iter().filter(|(_, u)| before.proxies[*u].healthy).collect::<Vec<_>>(),
                after.assignments.iter().collect::<Vec<_>>()
            );
            // Removed configured proxies come back from the settings; nothing else appears or vanishes.
            for k in before.proxies.keys() {
                prop_assert!(after.proxies.contains_key(k));
            }
            for k in after.proxies.keys() {
                prop_assert!(before.proxies.contains_key(k) || (0..3).map(purl).any(|u| &u == k));
            }
        }
    }
}
