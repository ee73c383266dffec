//! The direct egress parses the upstream's HTTP/1.1 answers itself (head, length, chunked body): anything an
//! upstream sends, split anywhere, is an answer or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let step = data.first().copied().unwrap_or(1).max(1) as usize;
    let whole = grok2api::upstream::read_answer_in_steps(data, data.len().max(1));
    let pieces = grok2api::upstream::read_answer_in_steps(data, step);
    // How the bytes arrive never changes what they say.
    if let (Ok(Some(a)), Ok(Some(b))) = (&whole, &pieces) {
        assert_eq!(a, b);
    }
});
