//! A selector importing a function the host does not provide: the host must report it and not load it.

wit_bindgen::generate!({ world: "test:extra/bad-import", path: ["../../../wit", "../wit"], generate_all });

use exports::grok2api::plugin::{lifecycle, selector};
use grok2api::plugin::types::{Candidate, PluginInfo, RequestInfo, Selection};

struct BadImport;

impl lifecycle::Guest for BadImport {
    fn describe() -> PluginInfo {
        PluginInfo { name: "bad-import".into(), version: "0.1.0-test".into(), description: String::new() }
    }
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

impl selector::Guest for BadImport {
    fn select(_req: RequestInfo, _candidates: Vec<Candidate>) -> Selection {
        Selection::UseCandidate(test::extra::missing::ping())
    }
}

export!(BadImport);
