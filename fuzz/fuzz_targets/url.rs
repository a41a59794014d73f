//! Backend URLs: parsing never panics, and the authority part of Display/Debug (where userinfo
//! lives, for every host of a host list) never carries the password.
#![no_main]
use libfuzzer_sys::fuzz_target;

fn authority(shown: &str) -> &str {
    let start = shown.find("://").map_or(0, |i| i + 3);
    let rest = &shown[start..];
    &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = lockrun::backend::BackendUrl::parse(text) {
        if let Some(pw) = u.secret_url().password() {
            // A short password, or one that also occurs in the user or host name, cannot be told
            // apart from them by a substring check.
            let elsewhere = u.secret_url().username().contains(pw)
                || u.secret_url().host_str().is_some_and(|h| h.contains(pw))
                || u.hosts()
                    .iter()
                    .map(|(h, p)| match p {
                        Some(p) => format!("{h}:{p}"),
                        None => h.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
                    .contains(pw);
            if pw.len() >= 6 && pw != "***" && !elsewhere {
                for shown in [u.to_string(), format!("{u:?}")] {
                    let shown = shown.strip_prefix("BackendUrl(").unwrap_or(&shown);
                    assert!(!authority(shown).contains(pw), "password shown: {shown}");
                }
            }
        }
    }
});
