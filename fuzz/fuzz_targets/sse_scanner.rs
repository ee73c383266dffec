//! The stream scanner sees every upstream byte of a stream: it must take anything, split anywhere.
#![no_main]
use grok2api::calllog::scan::SseScanner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    let mut s = SseScanner::default();
    for chunk in data.chunks(split) {
        s.feed(chunk);
    }
    let f = s.finish();
    assert!(f.media_urls.iter().all(|u| !u.is_empty()));
    // A whole answer: on a well-formed one, the shortcut for answers without media finds what the full parse
    // finds (on anything else the full parse gives up, and the shortcut may still read a usage).
    let quick = grok2api::calllog::scan::scan_json(data);
    if grok2api::calllog::scan::is_answer(data) {
        assert_eq!(quick, grok2api::calllog::scan::scan_json_parsed(data));
    }

    // Outcome-only mode skips whole lines per read; where the reads split must not change the outcome.
    let outcome = |step: usize| {
        let mut s = SseScanner::outcome_only();
        for chunk in data.chunks(step) {
            s.feed(chunk);
        }
        let f = s.finish();
        (f.stream_complete, f.stream_error)
    };
    assert_eq!(outcome(split), outcome(data.len().max(1)));
});
