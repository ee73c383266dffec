//! The proxy URL normaliser: never panics; what it accepts parses as a URL, keeps an allowed scheme, and
//! normalises to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(url) = grok2api::proxy::normalize_proxy_url(s) {
        assert!(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("socks5h://"));
        assert_eq!(grok2api::proxy::normalize_proxy_url(&url).unwrap(), url, "not idempotent");
        let masked = grok2api::proxy::mask_proxy_url(&url);
        assert!(!masked.is_empty());
    }
});
