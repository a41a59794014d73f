//! Resource names and lease ids: validation never panics, and accepted values keep the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = lockrun::Resource::new(text) {
        assert!(!r.as_str().is_empty() && r.as_str().len() <= 255);
        assert!(!r.as_str().chars().any(char::is_control));
    }
    if let Ok(id) = lockrun::LeaseId::parse(text) {
        assert!(id.as_str().len() <= 128);
        // Lease ids are bearer tokens: Debug shows a 6-character prefix at most.
        if id.as_str().len() > 6 {
            let shown = format!("{id:?}");
            let inner = shown.strip_prefix("LeaseId(").unwrap_or(&shown);
            assert!(!inner.contains(id.as_str()), "{shown}");
        }
    }
    let escaped = lockrun::lease::escape(text);
    assert!(!escaped.chars().any(char::is_control));
});
