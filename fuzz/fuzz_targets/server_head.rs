//! The server reads plain `/v1` request heads itself: anything a client sends is a head it answers, one it
//! hands to hyper, or a wait for more bytes, never a panic, and a head it answers is consistent with itself
//! (spans inside the head, the same answer with or without what follows, no shorter prefix complete).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let max_head = 64 + usize::from(data.first().copied().unwrap_or(0)) * 32;
    grok2api::server::check_request_head(data, max_head, 4096);
});
