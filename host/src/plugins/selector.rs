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

/// Writes `c` into `w`, reusing the host string's buffer. Field by field: building a whole record and
/// assigning it cost 700 more instructions per call with 20 candidates (callgrind).
fn candidate_into(c: &Candidate<'_>, w: &mut wit::Candidate) {
    w.id = c.id;
    w.scheme = scheme(c.scheme);
    set(&mut w.host, c.host);
    w.source = source(c.source);
    w.healthy = c.healthy;
    w.consecutive_failures = c.consecutive_failures;
    w.requests = c.requests;
    w.successes = c.successes;
    w.ewma_latency_ms = c.ewma_latency_ms;
    w.bound_tokens = c.bound_tokens;
    w.idle_ms = c.idle_ms;
}

fn candidate(c: &Candidate<'_>) -> wit::Candidate {
    let mut w = blank();
    candidate_into(c, &mut w);
    w
}

fn blank() -> wit::Candidate {
    wit::Candidate {
        id: 0,
        scheme: wit::Scheme::Http,
        host: String::new(),
        source: wit::ProxySource::List,
        healthy: false,
        consecutive_failures: 0,
        requests: 0,
        successes: 0,
        ewma_latency_ms: None,
        bound_tokens: 0,
        idle_ms: 0,
    }
}

fn set(dst: &mut String, src: &str) {
    dst.clear();
    dst.push_str(src);
}

/// The WIT records of the last call on this thread, refilled in place: the bindings take owned strings, and
/// allocating 20-odd of them per request was a third of what the selector cost the host (callgrind).
struct Scratch {
    req: wit::RequestInfo,
    cands: Vec<wit::Candidate>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            req: wit::RequestInfo {
                token_id: String::new(),
                model: String::new(),
                route: String::new(),
                stream: false,
                bound: None,
                direct_allowed: false,
            },
            cands: Vec::new(),
        }
    }
}

impl Scratch {
    fn fill(
        &mut self,
        req: &SelectRequest<'_>,
        direct_allowed: bool,
        candidates: &[Candidate<'_>],
    ) {
        set(&mut self.req.token_id, req.token_id);
        set(&mut self.req.model, req.model);
        set(&mut self.req.route, req.route);
        self.req.stream = req.stream;
        self.req.bound = req.bound;
        self.req.direct_allowed = direct_allowed;
        self.cands.truncate(candidates.len());
        for (i, c) in candidates.iter().enumerate() {
            match self.cands.get_mut(i) {
                Some(w) => candidate_into(c, w),
                None => self.cands.push(candidate(c)),
            }
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::new());
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
        candidates: &[Candidate<'_>],
    ) -> Result<Selection, HookError> {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => self.select_with(req, candidates, &mut s),
            // Not reached (the guest's imports never select), but a nested call gets records of its own.
            Err(_) => self.select_with(req, candidates, &mut Scratch::new()),
        })
    }
}

impl WasmSelector {
    fn select_with(
        &self,
        req: &SelectRequest<'_>,
        candidates: &[Candidate<'_>],
        s: &mut Scratch,
    ) -> Result<Selection, HookError> {
        s.fill(req, self.direct_allowed.load(Ordering::Relaxed), candidates);
        let Scratch { req, cands } = &*s;
        self.slot.call(|inst| call(inst, req, cands))
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
                host: &format!("192.0.2.{}:8080", i + 1),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: u32, host: &str, healthy: bool) -> Candidate<'_> {
        Candidate {
            id,
            scheme: if id.is_multiple_of(2) {
                "http"
            } else {
                "socks5h"
            },
            host,
            source: ProxySource::List,
            healthy,
            consecutive_failures: id,
            requests: 10 * id as u64,
            successes: id as u64,
            ewma_latency_ms: (!id.is_multiple_of(3)).then_some(id * 5),
            bound_tokens: id,
            idle_ms: 100 + id as u64,
        }
    }

    #[test]
    fn reused_records_hold_exactly_the_last_call() {
        let hosts: Vec<String> = (0..6)
            .map(|i| format!("10.0.{i}.{i}:{}", 8000 + i))
            .collect();
        let mut s = Scratch::new();
        // Longer, shorter, then longer again than the records left by the call before.
        for (n, token, model, bound) in [
            (4, "token-number-one", "grok-4", Some(2)),
            (2, "t2", "m", None),
            (6, "t3", "grok-4-fast-reasoning", Some(5)),
        ] {
            let cands: Vec<Candidate> = (0..n)
                .map(|i| cand(i, &hosts[(i as usize + n as usize) % 6], i % 2 == 0))
                .collect();
            let req = SelectRequest {
                token_id: token,
                model,
                route: "/v1/chat/completions",
                stream: n == 2,
                bound,
            };
            s.fill(&req, n == 6, &cands);
            let fresh: Vec<wit::Candidate> = cands.iter().map(candidate).collect();
            assert_eq!(format!("{:?}", s.cands), format!("{fresh:?}"), "{n}");
            assert_eq!(
                (
                    s.req.token_id.as_str(),
                    s.req.model.as_str(),
                    s.req.route.as_str()
                ),
                (token, model, "/v1/chat/completions")
            );
            assert_eq!(
                (s.req.stream, s.req.bound, s.req.direct_allowed),
                (n == 2, bound, n == 6)
            );
        }
    }
}
