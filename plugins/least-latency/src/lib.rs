//! Proxy selector: the healthy candidate with the lowest EWMA latency, sticky to the token's bound proxy
//! unless that one is failing or much slower than the best.

use std::sync::OnceLock;

use grok2api_plugin_sdk::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Leave the bound proxy when it is this many times slower than the best one.
    slower_factor: f64,
    /// A candidate with this many consecutive failures counts as failing.
    max_failures: u32,
    /// Latency assumed for a proxy not measured yet (ms).
    unknown_latency_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { slower_factor: 2.0, max_failures: 3, unknown_latency_ms: 1000 }
    }
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct LeastLatency;

impl Plugin for LeastLatency {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "least-latency",
            env!("CARGO_PKG_VERSION"),
            "healthy proxy with the lowest EWMA latency; sticky unless the bound proxy is much slower or failing",
        )
    }

    fn init(config: String) -> Result<(), String> {
        let c: Config = parse_config(&config)?;
        if !(c.slower_factor >= 1.0) {
            return Err("slower_factor must be at least 1".into());
        }
        let _ = CONFIG.set(c);
        Ok(())
    }
}

impl SelectorPlugin for LeastLatency {
    fn select(req: RequestInfo, candidates: Vec<Candidate>) -> Selection {
        let cfg = CONFIG.get_or_init(Config::default);
        let usable = |c: &&Candidate| c.healthy && c.consecutive_failures < cfg.max_failures;
        let latency = |c: &Candidate| c.ewma_latency_ms.unwrap_or(cfg.unknown_latency_ms);
        // Ties go to the proxy with fewer bound tokens, then the one idle longest.
        let Some(best) = candidates
            .iter()
            .filter(usable)
            .min_by_key(|c| (latency(c), c.bound_tokens, u64::MAX - c.idle_ms))
        else {
            return Selection::Default;
        };
        if let Some(bound) = req.bound.and_then(|b| candidates.iter().find(|c| c.id == b)) {
            if usable(&bound) && f64::from(latency(bound)) <= f64::from(latency(best).max(1)) * cfg.slower_factor {
                return Selection::UseCandidate(bound.id);
            }
        }
        Selection::UseCandidate(best.id)
    }
}

export_selector!(LeastLatency);
