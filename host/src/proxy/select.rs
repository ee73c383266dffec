//! The built-in selection rule, shared by the pool's fast path (over its entries) and the built-in
//! [`ProxySelector`] (over plugin-style [`Candidate`]s), so both choose exactly alike:
//! keep the bound proxy while it is healthy; otherwise the healthy proxy with the fewest bindings, ties broken
//! round-robin from a rotating start.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::hooks::{Candidate, HookError, ProxySelector, SelectRequest, Selection};

/// What the rule needs to know about the proxies, however they are stored.
pub(crate) trait View {
    fn len(&self) -> usize;
    /// Healthy and not excluded for this request.
    fn usable(&self, i: usize) -> bool;
    fn bindings(&self, i: usize) -> u32;
}

/// The usable proxy with the fewest bindings, scanning from `start` so equal ones take turns.
pub(crate) fn choose(view: &impl View, start: usize) -> Option<usize> {
    let n = view.len();
    if n == 0 {
        return None;
    }
    let mut best: Option<(usize, u32)> = None;
    for k in 0..n {
        let i = (start.wrapping_add(k)) % n;
        if !view.usable(i) {
            continue;
        }
        let load = view.bindings(i);
        if best.is_none_or(|(_, b)| load < b) {
            best = Some((i, load));
            if load == 0 {
                // Nothing beats an unbound proxy.
                break;
            }
        }
    }
    best.map(|(i, _)| i)
}

struct Candidates<'a>(&'a [Candidate<'a>]);

impl View for Candidates<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn usable(&self, i: usize) -> bool {
        self.0[i].healthy
    }
    fn bindings(&self, i: usize) -> u32 {
        self.0[i].bound_tokens
    }
}

/// The built-in [`ProxySelector`]. The pool runs the same rule directly on its entries when no plugin is
/// installed (no candidate list to build); this type is the rule behind the plugin seam.
#[derive(Default)]
pub struct BuiltinSelector {
    next: AtomicUsize,
}

impl ProxySelector for BuiltinSelector {
    fn name(&self) -> &str {
        "builtin"
    }

    fn select(
        &self,
        req: &SelectRequest<'_>,
        candidates: &[Candidate<'_>],
    ) -> Result<Selection, HookError> {
        if let Some(b) = req.bound {
            if candidates.get(b as usize).is_some_and(|c| c.healthy) {
                return Ok(Selection::Use(b));
            }
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(match choose(&Candidates(candidates), start) {
            Some(i) => Selection::Use(i as u32),
            None => Selection::Default,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::ProxySource;

    fn cand(id: u32, healthy: bool, bound: u32) -> Candidate<'static> {
        Candidate {
            id,
            scheme: "http",
            host: "10.0.0.1:8080",
            source: ProxySource::List,
            healthy,
            consecutive_failures: 0,
            requests: 0,
            successes: 0,
            ewma_latency_ms: None,
            bound_tokens: bound,
            idle_ms: 0,
        }
    }

    fn req(bound: Option<u32>) -> SelectRequest<'static> {
        SelectRequest {
            token_id: "t",
            model: "m",
            route: "/v1/chat/completions",
            stream: false,
            bound,
        }
    }

    #[test]
    fn keeps_a_healthy_binding() {
        let s = BuiltinSelector::default();
        let c = vec![cand(0, true, 0), cand(1, true, 9)];
        assert_eq!(s.select(&req(Some(1)), &c).unwrap(), Selection::Use(1));
    }

    #[test]
    fn leaves_an_unhealthy_binding_for_the_least_bound() {
        let s = BuiltinSelector::default();
        let c = vec![cand(0, false, 0), cand(1, true, 3), cand(2, true, 1)];
        assert_eq!(s.select(&req(Some(0)), &c).unwrap(), Selection::Use(2));
    }

    #[test]
    fn equal_proxies_take_turns() {
        let s = BuiltinSelector::default();
        let c = vec![cand(0, true, 0), cand(1, true, 0), cand(2, true, 0)];
        let picks: Vec<_> = (0..6).map(|_| s.select(&req(None), &c).unwrap()).collect();
        for i in 0..3 {
            assert_eq!(picks.iter().filter(|p| **p == Selection::Use(i)).count(), 2);
        }
    }

    #[test]
    fn nothing_healthy_defers_to_the_host() {
        let s = BuiltinSelector::default();
        assert_eq!(
            s.select(&req(None), &[cand(0, false, 0)]).unwrap(),
            Selection::Default
        );
        assert_eq!(s.select(&req(None), &[]).unwrap(), Selection::Default);
    }
}
