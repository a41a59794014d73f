//! Duration strings: parse never panics, and what it accepts formats and re-parses to itself
//! within a millisecond.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = lockrun::duration::parse(text) {
        if d < std::time::Duration::from_secs(60) {
            let shown = lockrun::duration::format(d);
            let again = lockrun::duration::parse(&shown).expect("formatted durations parse");
            assert!(
                again.abs_diff(d) <= std::time::Duration::from_millis(1),
                "{text:?} -> {shown:?}"
            );
        }
    }
});
