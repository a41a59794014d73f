//! Config files, TOML and stormlock INI: parsing never panics and errors stay on one line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["/fuzz/config.toml", "/fuzz/stormlock.cfg"] {
        match lockrun::config::Config::parse(text, std::path::Path::new(name)) {
            Ok(cfg) => {
                if let Ok(r) = lockrun::Resource::new("fuzz") {
                    let flags = lockrun::config::Flags::default();
                    let _ = cfg.plan(&r, &flags, &|_| None);
                }
            }
            Err(e) => assert!(!e.to_string().contains('\n'), "multi-line error: {e}"),
        }
    }
});
