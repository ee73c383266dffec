//! A component with the lifecycle but no hook: the host must report that it matches no world.

wit_bindgen::generate!({ world: "test:extra/lifecycle-only", path: ["../../../wit", "../wit"], generate_all });

use exports::grok2api::plugin::lifecycle;
use grok2api::plugin::types::PluginInfo;

struct NoWorld;

impl lifecycle::Guest for NoWorld {
    fn describe() -> PluginInfo {
        PluginInfo { name: "no-world".into(), version: "0.1.0-test".into(), description: String::new() }
    }
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

export!(NoWorld);
