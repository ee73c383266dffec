//! The WASM proxy selector: converts the hook's records into the WIT ones, calls the plugin, checks the answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::engine::bindings::selector::grok2api::plugin::types as wit;
use super::engine::{Instance, World};
use super::registry::Slot;
use crate::hooks::{Candidate, HookError, ProxySelector, ProxySource, SelectRequest, Selection};

pub struct WasmSelector {
    slot: Arc<Slot>,
    direct_allowed: Arc<AtomicBool>,
}

impl WasmSelector {
    pub(crate) fn new(slot: Arc<Slot>, direct_allowed: Arc<AtomicBool>) -> WasmSelector {
        WasmSelector {
            slot,
            direct_allowed,
        }
    }
}

fn scheme(s: &str) -> wit::Scheme {
    match s {
        "https" => wit::Scheme::Https,
        s if s.starts_with("socks") => wit::Scheme::Socks5h,
        _ => wit::Scheme::Http,
    }
}

fn source(s: ProxySource) -> wit::ProxySource {
    match s {
        ProxySource::Static => wit::ProxySource::Static,
        ProxySource::List => wit::ProxySource::List,
        ProxySource::Pool => wit::ProxySource::Pool,
        ProxySource::Admin => wit::ProxySource::Admin,
    }
}

fn candidate(c: &Candidate) -> wit::Candidate {
    wit::Candidate {
        id: c.id,
        scheme: scheme(c.scheme),
        host: c.host.clone(),
        source: source(c.source),
        healthy: c.healthy,
        consecutive_failures: c.consecutive_failures,
        requests: c.requests,
        successes: c.successes,
        ewma_latency_ms: c.ewma_latency_ms,
        bound_tokens: c.bound_tokens,
        idle_ms: c.idle_ms,
    }
}

/// Calls `select` and checks the answer against the candidates.
fn call(
    inst: &mut Instance,
    req: &wit::RequestInfo,
    cands: &[wit::Candidate],
) -> Result<Selection, HookError> {
    let World::Selector(b) = &inst.world else {
        return Err(HookError::Unavailable("not a selector plugin".into()));
    };
    let answer = b
        .grok2api_plugin_selector()
        .call_select(&mut inst.store, req, cands)
        .map_err(|e| inst.classify(e))?;
    match answer {
        wit::Selection::UseCandidate(id) => {
            let known = cands.get(id as usize).is_some_and(|c| c.id == id)
                || cands.iter().any(|c| c.id == id);
            if known {
                Ok(Selection::Use(id))
            } else {
                Err(HookError::BadAnswer(format!(
                    "candidate {id} does not exist ({} candidates)",
                    cands.len()
                )))
            }
        }
        wit::Selection::Direct if req.direct_allowed => Ok(Selection::Direct),
        wit::Selection::Direct => Err(HookError::BadAnswer(
            "answered `direct`, but direct egress is not allowed".into(),
        )),
        wit::Selection::Default => Ok(Selection::Default),
    }
}

impl ProxySelector for WasmSelector {
    fn name(&self) -> &str {
        &self.slot.name
    }

    fn select(
        &self,
        req: &SelectRequest<'_>,
        candidates: &[Candidate],
    ) -> Result<Selection, HookError> {
        let wreq = wit::RequestInfo {
            token_id: req.token_id.to_string(),
            model: req.model.to_string(),
            route: req.route.to_string(),
            stream: req.stream,
            bound: req.bound,
            direct_allowed: self.direct_allowed.load(Ordering::Relaxed),
        };
        let cands: Vec<wit::Candidate> = candidates.iter().map(candidate).collect();
        self.slot.call(|inst| call(inst, &wreq, &cands))
    }
}

/// The load-time trial: three sample proxies, a request no real token makes.
pub(crate) fn trial(inst: &mut Instance, deadline: Duration) -> Result<(), HookError> {
    let req = wit::RequestInfo {
        token_id: "trial".into(),
        model: "trial".into(),
        route: "trial".into(),
        stream: false,
        bound: None,
        direct_allowed: false,
    };
    let cands: Vec<wit::Candidate> = (0..3u32)
        .map(|i| {
            candidate(&Candidate {
                id: i,
                scheme: "http",
                host: format!("192.0.2.{}:8080", i + 1),
                source: ProxySource::List,
                healthy: true,
                consecutive_failures: 0,
                requests: 10,
                successes: 9,
                ewma_latency_ms: Some(100 + 10 * i),
                bound_tokens: 0,
                idle_ms: 1000,
            })
        })
        .collect();
    inst.run(deadline, |inst| call(inst, &req, &cands))
        .map(|_| ())
}
