//! The call-log loaders: `call_logs.json` and the NDJSON journal, whatever their bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (entries, skipped) = grok2api::storage::decode_journal(data);
    assert!(entries.iter().all(|e| !e.id.is_empty()));
    let lines = data.split(|b| *b == b'\n').filter(|l| !l.trim_ascii().is_empty()).count();
    assert_eq!(entries.len() + skipped, lines);
    let _ = serde_json::from_slice::<grok2api::storage::TokenFile>(data);
    let _ = serde_json::from_slice::<Vec<grok2api::storage::CallLogEntry>>(data);
});
