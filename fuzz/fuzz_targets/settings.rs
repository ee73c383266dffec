//! The settings parser and validator: any text gives settings or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok((settings, _warnings)) = grok2api::config::Settings::from_toml(s, std::path::Path::new("fuzz.toml")) {
        let _ = settings.validate("fuzz");
    }
});
