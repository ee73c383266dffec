//! The WASM pool parser. The plugin's own `Err` (the pool API answered an error) is passed on as
//! `BadAnswer` but is not the plugin's fault: it does not count towards disabling it.

use std::sync::Arc;
use std::time::Duration;

use super::engine::bindings::parser::grok2api::plugin::types as wit;
use super::engine::{Instance, World};
use super::registry::Slot;
use crate::hooks::{HookError, PoolParser, ProxySpec};

/// Beyond this many proxies in one answer the plugin's answer is rejected.
const MAX_SPECS: usize = 100_000;

pub struct WasmPoolParser {
    slot: Arc<Slot>,
}

impl WasmPoolParser {
    pub(crate) fn new(slot: Arc<Slot>) -> WasmPoolParser {
        WasmPoolParser { slot }
    }
}

fn spec(s: wit::ProxySpec) -> ProxySpec {
    ProxySpec {
        url: s.url,
        scheme: s.scheme,
        host: s.host,
        port: s.port,
        username: s.username,
        password: s.password,
        expires_at_ms: s.expires_at_ms,
        label: s.label,
    }
}

/// `Ok(Err(msg))`: the plugin says the pool's answer is an error.
fn call(
    inst: &mut Instance,
    source_url: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Result<Vec<ProxySpec>, String>, HookError> {
    let World::PoolParser(b) = &inst.world else {
        return Err(HookError::Unavailable("not a pool-parser plugin".into()));
    };
    let r = b
        .grok2api_plugin_parser()
        .call_parse(&mut inst.store, source_url, status, content_type, body)
        .map_err(|e| inst.classify(e))?;
    match r {
        Ok(specs) if specs.len() > MAX_SPECS => Err(HookError::BadAnswer(format!(
            "{} proxies in one answer (at most {MAX_SPECS})",
            specs.len()
        ))),
        Ok(specs) => Ok(Ok(specs.into_iter().map(spec).collect())),
        Err(msg) => Ok(Err(msg)),
    }
}

impl PoolParser for WasmPoolParser {
    fn name(&self) -> &str {
        &self.slot.name
    }

    fn parse(
        &self,
        source_url: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<ProxySpec>, HookError> {
        self.slot
            .call(|inst| call(inst, source_url, status, content_type, body))?
            .map_err(|msg| HookError::BadAnswer(format!("the pool answer is an error: {msg}")))
    }
}

pub(crate) fn trial(inst: &mut Instance, deadline: Duration) -> Result<(), HookError> {
    // Any answer will do, an error included: the trial checks the plugin runs, not what a sample means.
    inst.run(deadline, |inst| {
        call(
            inst,
            "http://pool.invalid/trial",
            200,
            Some("application/json"),
            b"[]",
        )
    })
    .map(|_| ())
}
