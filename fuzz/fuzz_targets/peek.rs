//! A request body is untrusted: the quick scan of `model` and `stream` must take anything, and where it
//! answers, serde_json must accept the body and read the same two values.
#![no_main]
use grok2api::api::peek::{quick, Peek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(q) = quick(data) {
        let full: Peek = serde_json::from_slice(data)
            .unwrap_or_else(|e| panic!("the scan accepted what serde_json refuses: {e}"));
        assert_eq!(q, full);
    }
});
