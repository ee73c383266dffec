//! A selector that misbehaves on purpose, for the host's sandbox tests. `init` takes `{"mode": M}`:
//! `last` (default: the last candidate), `first`, `direct`, `loop` (never returns), `alloc` (1 GiB),
//! `panic`, `oob` (an out-of-range index). It behaves (answers `last`) when the request's model is `trial`,
//! which is what the host's load-time trial call sends, so bad modes load and misbehave only when serving.

wit_bindgen::generate!({ world: "proxy-selector", path: "../../../wit" });

use exports::grok2api::plugin::{lifecycle, selector};
use grok2api::plugin::types::{Candidate, PluginInfo, RequestInfo, Selection};
use std::cell::RefCell;

thread_local! { static MODE: RefCell<String> = RefCell::new("last".into()); }

struct Sandbox;

impl lifecycle::Guest for Sandbox {
    fn describe() -> PluginInfo {
        PluginInfo { name: "sandbox".into(), version: "0.1.0-test".into(), description: "misbehaves on purpose".into() }
    }
    fn init(config: String) -> Result<(), String> {
        // Tiny hand parser: the test guest stays dependency-free.
        let mode = config
            .split('"')
            .skip_while(|s| *s != "mode")
            .nth(2)
            .unwrap_or("last")
            .to_string();
        if !["last", "first", "direct", "loop", "alloc", "panic", "oob"].contains(&mode.as_str()) {
            return Err(format!("unknown mode {mode}"));
        }
        MODE.with(|m| *m.borrow_mut() = mode);
        Ok(())
    }
}

impl selector::Guest for Sandbox {
    fn select(req: RequestInfo, candidates: Vec<Candidate>) -> Selection {
        let mode = if req.model == "trial" { "last".to_string() } else { MODE.with(|m| m.borrow().clone()) };
        match mode.as_str() {
            "first" => Selection::UseCandidate(0),
            "direct" => Selection::Direct,
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let v = vec![1u8; 1 << 30];
                Selection::UseCandidate(std::hint::black_box(v)[12] as u32)
            }
            "panic" => panic!("sandbox guest panics on purpose"),
            "oob" => Selection::UseCandidate(candidates.len() as u32 + 7),
            _ => candidates.last().map_or(Selection::Default, |c| Selection::UseCandidate(c.id)),
        }
    }
}

export!(Sandbox);
