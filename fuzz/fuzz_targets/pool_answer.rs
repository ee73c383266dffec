//! The built-in pool-answer parser: any bytes give proxies or an error, never a panic; an `Ok` is never empty,
//! and every proxy it yields either normalises (idempotently) or is rejected with an error.
#![no_main]
use grok2api::hooks::PoolParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(specs) = grok2api::proxy::BuiltinParser.parse("http://pool.invalid/", 200, None, data) {
        assert!(!specs.is_empty(), "Ok without a proxy");
        for spec in &specs {
            if let Some(raw) = grok2api::proxy::spec_to_url(spec) {
                if let Ok(url) = grok2api::proxy::normalize_proxy_url(&raw) {
                    assert_eq!(grok2api::proxy::normalize_proxy_url(&url).unwrap(), url);
                }
            }
        }
    }
});
