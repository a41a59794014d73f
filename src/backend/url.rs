//! Backend URLs: parsing, the scheme registry, and a display form with secrets redacted.

use std::fmt;

use super::Error;

/// Every scheme lockrun knows, with the cargo feature that provides it.
const SCHEMES: &[(&str, &str)] = &[
    ("file", "file"),
    ("redis", "redis"),
    ("rediss", "redis"),
    ("redis+unix", "redis"),
    ("postgres", "postgres"),
    ("postgresql", "postgres"),
    ("etcd", "etcd"),
    ("etcd+https", "etcd"),
    ("dynamodb", "dynamodb"),
];

/// A backend URL such as `file:///var/lock/lockrun` or `redis://:pw@127.0.0.1:6379/0`.
///
/// `Display` and `Debug` never show a password.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendUrl {
    url: url::Url,
}

impl BackendUrl {
    /// Parses a backend URL. An absolute path is taken as a `file://` URL.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::Config("backend URL is empty".into()));
        }
        let url = if text.starts_with('/') {
            url::Url::from_directory_path(text)
                .map_err(|()| Error::Config(format!("bad backend path '{text}'")))?
        } else {
            url::Url::parse(text).map_err(|e| {
                Error::Config(format!("bad backend URL '{}': {e}", redact_text(text)))
            })?
        };
        let scheme = url.scheme();
        if !SCHEMES.iter().any(|(s, _)| *s == scheme) {
            return Err(Error::Config(format!(
                "unknown backend '{scheme}' in '{}' (known: {})",
                redact_text(text),
                SCHEMES
                    .iter()
                    .map(|(s, _)| *s)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(BackendUrl { url })
    }

    /// The URL scheme, which selects the backend.
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// The parsed URL, secrets included: for connecting, never for printing.
    pub fn secret_url(&self) -> &url::Url {
        &self.url
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut u = self.url.clone();
        if u.password().is_some() {
            let _ = u.set_password(Some("***"));
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut changed = false;
        for (k, v) in u.query_pairs() {
            if is_secret_key(&k) {
                changed = true;
                pairs.push((k.into_owned(), "***".into()));
            } else {
                pairs.push((k.into_owned(), v.into_owned()));
            }
        }
        if changed {
            u.query_pairs_mut().clear().extend_pairs(pairs);
        }
        u.to_string()
    }
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.contains("token")
}

/// Best-effort redaction of text that did not even parse as a URL: drop `user:pass@`.
fn redact_text(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &text[..s], &text[at + 1..]),
        _ => text.to_owned(),
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackendUrl({})", self.redacted())
    }
}

/// The error for a known scheme whose backend is not compiled in.
pub(super) fn unsupported(scheme: &str) -> Error {
    let feature = SCHEMES
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, f)| *f)
        .unwrap_or(scheme);
    Error::Config(format!(
        "this lockrun was built without the '{feature}' backend (rebuild with --features {feature})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_schemes() {
        assert_eq!(BackendUrl::parse("file:///tmp/x").unwrap().scheme(), "file");
        assert_eq!(BackendUrl::parse("/tmp/x").unwrap().scheme(), "file");
        assert_eq!(
            BackendUrl::parse("redis://127.0.0.1:6379/0")
                .unwrap()
                .scheme(),
            "redis"
        );
        assert_eq!(
            BackendUrl::parse("postgresql://u@h/db").unwrap().scheme(),
            "postgresql"
        );
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(matches!(BackendUrl::parse(""), Err(Error::Config(_))));
        assert!(matches!(
            BackendUrl::parse("nope://x"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            BackendUrl::parse("not a url"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            BackendUrl::parse("redis://[::1"),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn never_shows_passwords() {
        let u = BackendUrl::parse("redis://user:hunter2@127.0.0.1:6379/0").unwrap();
        assert!(!u.to_string().contains("hunter2"));
        assert!(!format!("{u:?}").contains("hunter2"));
        let u = BackendUrl::parse("postgres://h/db?password=hunter2&sslmode=require").unwrap();
        assert!(!u.to_string().contains("hunter2"), "{u}");
        assert!(u.to_string().contains("sslmode=require"));
        let e = BackendUrl::parse("bogus://u:hunter2@h").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
