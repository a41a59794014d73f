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
    ("memcached", "memcached"),
    ("kubernetes", "kubernetes"),
    ("k8s", "kubernetes"),
];

/// Schemes whose URLs may name several hosts: `etcd://h1:2379,h2:2379`.
const MULTI_HOST: &[&str] = &["etcd", "etcd+https", "memcached"];

/// Schemes whose stores cannot enumerate their leases (memcached has no key listing).
const UNLISTABLE: &[&str] = &["memcached"];

/// A host and its port, if the URL gives one.
type Host = (String, Option<u16>);

/// A backend URL such as `file:///var/lib/lockrun` or `redis://:pw@127.0.0.1:6379/0`.
///
/// `Display` and `Debug` never show a password.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendUrl {
    url: url::Url,
    /// The hosts after the first of a comma-separated host list (multi-host schemes only).
    more_hosts: Vec<Host>,
}

impl BackendUrl {
    /// Parses a backend URL. An absolute path is taken as a `file://` URL.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::Config("backend URL is empty".into()));
        }
        // URL parsing drops tabs and line breaks inside a URL: `file:///a\tb` would name
        // `/ab`, and `redis://h/\n1` database 1.
        if text.chars().any(char::is_control) {
            return Err(Error::Config(format!(
                "bad backend URL '{}': it contains a control character",
                redact_text(text)
            )));
        }
        let (single, more_hosts) = split_hosts(text)?;
        let text = single.as_str();
        let url = if text.starts_with('/') {
            url::Url::from_directory_path(text)
                .map_err(|()| Error::Config(format!("bad backend path '{text}'")))?
        } else {
            url::Url::parse(text).map_err(|e| {
                // libpq takes `postgres://user@/db?host=/socket/dir`; URL parsing does not.
                let socket = if e == url::ParseError::EmptyHost
                    && ["postgres:", "postgresql:"].iter().any(|s| {
                        text.get(..s.len())
                            .is_some_and(|t| t.eq_ignore_ascii_case(s))
                    }) {
                    " (for a Unix socket, name it in the query, with the user: \
                     postgres:///DB?host=/run/postgresql&user=USER, or as the host, escaped: \
                     postgres://USER@%2Frun%2Fpostgresql/DB)"
                } else {
                    ""
                };
                Error::Config(format!(
                    "bad backend URL '{}': {e}{socket}",
                    redact_text(text)
                ))
            })?
        };
        let scheme = url.scheme();
        // `file:relative` parses as the absolute `file:///relative`: a typo would quietly move
        // the locks. (`file:/x`, RFC 8089's short form, is absolute as written.)
        if scheme == "file"
            && !text.starts_with('/')
            && !text
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case("file:/"))
        {
            return Err(Error::Config(format!(
                "file backend URL '{}' must name an absolute path, like file:///var/lib/lockrun",
                redact_text(text)
            )));
        }
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
        let url = BackendUrl { url, more_hosts };
        if url.hosts().iter().any(|(_, port)| *port == Some(0)) {
            return Err(Error::Config(format!(
                "bad backend URL '{url}': port 0 is not a port a server listens on"
            )));
        }
        Ok(url)
    }

    /// The URL scheme, which selects the backend.
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// Whether the backend can list its leases ([`super::Backend::resources`]): known from the
    /// scheme, so that `lockrun list` says so without reaching the server.
    pub fn can_list(&self) -> bool {
        !UNLISTABLE.contains(&self.scheme())
    }

    /// The parsed URL, secrets included: for connecting, never for printing. Of a host list,
    /// it names the first host; see [`BackendUrl::hosts`].
    pub fn secret_url(&self) -> &url::Url {
        &self.url
    }

    /// Every host of the URL with its port, in order: more than one only for schemes that take a
    /// host list (`etcd://h1:2379,h2:2379`, `memcached://h1,h2`).
    pub fn hosts(&self) -> Vec<Host> {
        let first = self.url.host_str().map(|h| (h.to_owned(), self.url.port()));
        first.into_iter().chain(self.more_hosts.clone()).collect()
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
            } else if let Some(inner) = nested_redacted(&v) {
                // A URL in a parameter (DynamoDB's `endpoint=`) may carry secrets too.
                changed = true;
                pairs.push((k.into_owned(), inner));
            } else if looks_like_credentials(&v) && !plain_url(&v) {
                // One that does not parse: hide all of it.
                changed = true;
                pairs.push((k.into_owned(), "***".into()));
            } else {
                pairs.push((k.into_owned(), v.into_owned()));
            }
        }
        if changed {
            u.query_pairs_mut().clear().extend_pairs(pairs);
        }
        let mut text = u.to_string();
        // A URL with no authority (`redis:/:pw@h`, `redis:u:pw@h` parse so) keeps any
        // `user:pw@` in its path; so does one whose unescaped password began with `/` or `#`
        // (`redis://u:/pw@h` parses as host `u`, path `/pw@h`).
        let odd_path = u.host_str().is_some_and(|h| !h.is_empty())
            && (u.path().contains('@') || u.fragment().is_some_and(|f| f.contains('@')));
        if self.scheme() != "file" && (!text.contains("://") || odd_path) {
            text = redact_text(&text);
        }
        if !self.more_hosts.is_empty() {
            let start = text.find("://").map_or(0, |i| i + 3);
            let end = text[start..]
                .find(['/', '?', '#'])
                .map_or(text.len(), |i| start + i);
            let more: String = self
                .more_hosts
                .iter()
                .map(|(h, p)| p.map_or_else(|| format!(",{h}"), |p| format!(",{h}:{p}")))
                .collect();
            text.insert_str(end, &more);
        }
        text
    }
}

impl BackendUrl {
    /// The URL without the secrets that [`BackendUrl::redacted`] hid as `***`, and whether there
    /// were any: for a URL read back from `LOCKRUN_BACKEND`, as `lockrun run` gives it to its
    /// command, so that the backend's other password sources (environment, password file)
    /// apply instead of the literal `***`.
    pub fn without_hidden_secrets(&self) -> (BackendUrl, bool) {
        let mut u = self.url.clone();
        let mut hidden = false;
        if u.password() == Some("***") {
            hidden = true;
            let _ = u.set_password(None);
        }
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut kept: Vec<(String, String)> = Vec::new();
        let mut dropped = false;
        for (k, v) in &pairs {
            if is_secret_key(k) && v == "***" {
                dropped = true;
            } else if let Some(mut inner) =
                nested_with_password(v).filter(|i| i.password() == Some("***"))
            {
                dropped = true;
                let _ = inner.set_password(None);
                kept.push((k.clone(), inner.to_string()));
            } else {
                kept.push((k.clone(), v.clone()));
            }
        }
        if dropped {
            hidden = true;
            if kept.is_empty() {
                u.set_query(None);
            } else {
                u.query_pairs_mut().clear().extend_pairs(kept);
            }
        }
        let url = BackendUrl {
            url: u,
            more_hosts: self.more_hosts.clone(),
        };
        (url, hidden)
    }
}

/// A query parameter's value that is itself a URL with a password.
fn nested_with_password(value: &str) -> Option<url::Url> {
    url::Url::parse(value)
        .ok()
        .filter(|u| u.password().is_some())
}

/// A query parameter's value that is itself a URL with secrets (a password, a secret
/// parameter, a URL with secrets in a parameter), with them replaced by `***`; `None` when it has
/// none.
fn nested_redacted(value: &str) -> Option<String> {
    let mut u = url::Url::parse(value).ok()?;
    let mut changed = false;
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
        changed = true;
    }
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            if is_secret_key(&k) {
                changed = true;
                (k.into_owned(), "***".to_owned())
            } else if let Some(inner) = nested_redacted(&v) {
                changed = true;
                (k.into_owned(), inner)
            } else {
                (k.into_owned(), v.into_owned())
            }
        })
        .collect();
    if changed && !pairs.is_empty() {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    changed.then(|| u.to_string())
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.contains("token")
}

/// Splits a comma-separated host list (`scheme://[userinfo@]h1[:p1],h2[:p2]/...`) of a
/// multi-host scheme into the URL with only the first host, and the other hosts.
fn split_hosts(text: &str) -> Result<(String, Vec<Host>), Error> {
    let unchanged = || Ok((text.to_owned(), Vec::new()));
    let Some(i) = text.find("://") else {
        return unchanged();
    };
    let scheme = &text[..i];
    if !MULTI_HOST.contains(&scheme.to_ascii_lowercase().as_str()) {
        return unchanged();
    }
    let rest = &text[i + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let start = authority.rfind('@').map_or(0, |at| at + 1);
    let list = &authority[start..];
    // `h1,user@h2` would take `h1,user` for the user name and quietly drop h1.
    if authority[..start].contains(',') {
        return Err(Error::Config(format!(
            "bad backend URL '{}': a user name or password goes before the first host, and a \
             comma in one is written %2C",
            redact_text(text)
        )));
    }
    if !list.contains(',') {
        return unchanged();
    }
    let mut hosts = list.split(',');
    let first = hosts.next().unwrap_or_default();
    let mut more = Vec::new();
    for host in hosts {
        let bad = |why: &str| {
            Error::Config(format!(
                "bad backend URL '{}': {why} in the host list",
                redact_text(text)
            ))
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let u = url::Url::parse(&format!("{scheme}://{host}"))
            .map_err(|e| bad(&format!("host '{host}': {e}")))?;
        match u.host_str() {
            Some(h) if !h.is_empty() && u.path().is_empty() => more.push((h.to_owned(), u.port())),
            _ => return Err(bad(&format!("bad host '{host}'"))),
        }
    }
    let single = format!("{scheme}://{}{first}{}", &authority[..start], &rest[end..]);
    Ok((single, more))
}

/// Best-effort redaction of text that did not even parse as a URL: everything from `://` up to
/// the last `@` (a password may hold any character), then the values of secret query parameters
/// and of parameters that are URLs with a user or password.
pub(crate) fn redact_text(text: &str) -> String {
    let scheme_end = text.find("://");
    let text = match (scheme_end, text.find('@')) {
        // `user:pw@host...` with no `://` before the `@` (none at all, or one later, in a
        // parameter): all of it up to the last `@` before that `://` may be secret.
        (s, Some(first)) if s.map_or(true, |s| first < s) => {
            let before = s.map_or(text, |s| &text[..s]);
            let at = before.rfind('@').unwrap_or(first);
            format!("***@{}", &text[at + 1..])
        }
        (Some(s), Some(_)) => match text.rfind('@') {
            Some(at) if at > s => format!("{}://***@{}", &text[..s], &text[at + 1..]),
            _ => text.to_owned(),
        },
        _ => text.to_owned(),
    };
    let Some((base, query)) = text.split_once('?') else {
        return text;
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => {
                let (key, value) = (decoded(k), decoded(v));
                if is_secret_key(&key) || looks_like_credentials(&value) {
                    format!("{k}=***")
                } else {
                    pair.to_owned()
                }
            }
            None => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// Whether `value` parses as a URL whose `@`, if any, ends its user information: it has a host,
/// and no `@` in its path or fragment.
fn plain_url(value: &str) -> bool {
    url::Url::parse(value).is_ok_and(|u| {
        u.host_str().is_some_and(|h| !h.is_empty())
            && !u.path().contains('@')
            && !u.fragment().is_some_and(|f| f.contains('@'))
    })
}

/// Whether a parameter's value may hold a `user:password@` (a URL in it, perhaps mistyped:
/// `https//u:pw@h`, `redis:/:pw@h`): a `:` before its last `@`. An e-mail address has none.
fn looks_like_credentials(value: &str) -> bool {
    value.rfind('@').is_some_and(|at| value[..at].contains(':'))
}

/// `text` with its `%XX` escapes (and `+`) decoded, as a query string's parts are.
fn decoded(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
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
        // libpq's user@ with an empty host (the socket in the query): the forms that work.
        let e = BackendUrl::parse("postgres://me@/db?host=/run/postgresql").unwrap_err();
        assert!(
            e.to_string()
                .contains("postgres:///DB?host=/run/postgresql&user=USER"),
            "{e}"
        );
        for form in [
            "postgres:///db?host=/run/postgresql&user=me",
            "postgres://me@%2Frun%2Fpostgresql/db",
        ] {
            assert!(BackendUrl::parse(form).is_ok(), "{form}");
        }
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
        // In a URL that does not parse, in a query parameter, and inside a URL in a parameter,
        // plain or percent-encoded.
        for bad in [
            "postgres://127.0.0.1:99999/db?password=hunter2",
            "postgres://127.0.0.1:99999/db?Pass%77ord=hunter2&sslmode=x",
            "etcd://127.0.0.1:1,127.0.0.1:x?password=hunter2",
            "dynamodb://t?endpoint=http%3A%2F%2Fu%3Ahunter2%40h%3A99999&bogus=1:x",
            "redis://u:hun@ter2@h:99999",
            "user:hunter2@redis.example:6379",
            ":hunter2@h:6379",
            "redis:/:hunter2@h",
            "redis:u:hunter2@h",
            "u:hunter2@h?e=http://x",
            "redis://u:/hunter2@h",
            "redis://u:#hunter2@h",
            "dynamodb://t?endpoint=https//u:hunter2@h&region=x",
            "dynamodb://t?endpoint=redis:/:hunter2@h&bogus=1",
        ] {
            let shown = match BackendUrl::parse(bad) {
                Ok(u) => u.to_string(),
                Err(e) => e.to_string(),
            };
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        for url in [
            "dynamodb://t?endpoint=http://u:hunter2@127.0.0.1:1&region=x",
            "dynamodb://t?endpoint=http%3A%2F%2Fh%2F%3Ftoken%3Dhunter2&region=x",
            "dynamodb://t?endpoint=http%3A%2F%2Fh%2F%3Fx%3Dhttp%253A%252F%252Fu%253Ahunter2%2540h2&region=x",
        ] {
            let u = BackendUrl::parse(url).unwrap();
            assert!(!u.to_string().contains("hunter2"), "{u}");
            assert!(u.to_string().contains("region=x"), "{u}");
        }
    }

    /// Host-less URLs with an `@` in their path, and parameters that hold an e-mail address,
    /// are shown as they are: nothing in them is a password.
    #[test]
    fn no_password_no_stars() {
        for url in [
            "redis+unix:///run/redis@a/redis.sock",
            "postgresql:///db?host=%2Frun%2Fpostgresql&user=admin%40srv",
            "postgres://h/db?application_name=me%40host",
            "file:///home/me@x/locks",
        ] {
            let u = BackendUrl::parse(url).unwrap();
            assert!(!u.to_string().contains("***"), "{u}");
            assert_eq!(u.without_hidden_secrets().0.to_string(), u.to_string());
        }
    }

    #[test]
    fn control_characters_multi_host_users_and_port_0_are_refused() {
        for bad in [
            "file:///tmp/a\tb",
            "redis://h/\n1",
            "etcd://127.0.0.1:1,u@127.0.0.1:2",
            "redis://127.0.0.1:0/0",
            "etcd://h:1,h:0",
        ] {
            assert!(
                matches!(BackendUrl::parse(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
        let u = BackendUrl::parse("ETCD://127.0.0.1:1,127.0.0.1:2").unwrap();
        assert_eq!(u.hosts().len(), 2);
        let u = BackendUrl::parse("etcd://u:a%2Cb@h1:1,h2:2").unwrap();
        assert_eq!(u.hosts().len(), 2);
    }

    #[test]
    fn hidden_secrets_are_dropped_when_read_back() {
        for (url, want) in [
            (
                "redis://user:hunter2@127.0.0.1:6379/0",
                "redis://user@127.0.0.1:6379/0",
            ),
            (
                "postgres://h/db?password=pw&sslmode=require",
                "postgres://h/db?sslmode=require",
            ),
            ("postgres://h/db?password=pw", "postgres://h/db"),
            (
                "etcd://u:pw@10.0.0.1:2379,h3/",
                "etcd://u@10.0.0.1:2379,h3/",
            ),
            (
                "dynamodb://t?endpoint=http://u:pw@127.0.0.1:1&region=x",
                "dynamodb://t?endpoint=http%3A%2F%2Fu%40127.0.0.1%3A1%2F&region=x",
            ),
        ] {
            let shown = BackendUrl::parse(url).unwrap().redacted();
            let (back, hidden) = BackendUrl::parse(&shown).unwrap().without_hidden_secrets();
            assert!(hidden, "{url}");
            assert_eq!(back.redacted(), want);
            assert!(back.secret_url().password().is_none(), "{url}");
        }
        // A real secret, even one that merely contains stars, is kept.
        let u = BackendUrl::parse("redis://:a***b@h/0").unwrap();
        let (back, hidden) = u.without_hidden_secrets();
        assert!(!hidden);
        assert_eq!(back.secret_url().password(), Some("a***b"));
    }

    #[test]
    fn host_lists() {
        let u = BackendUrl::parse("etcd://u:hunter2@10.0.0.1:2379,[::1]:2380,h3/").unwrap();
        assert_eq!(
            u.hosts(),
            vec![
                ("10.0.0.1".to_owned(), Some(2379)),
                ("[::1]".to_owned(), Some(2380)),
                ("h3".to_owned(), None)
            ]
        );
        assert_eq!(u.to_string(), "etcd://u:***@10.0.0.1:2379,[::1]:2380,h3/");
        assert_eq!(u.secret_url().password(), Some("hunter2"));
        let one = BackendUrl::parse("etcd+https://h:1").unwrap();
        assert_eq!(one.hosts(), vec![("h".to_owned(), Some(1))]);
        assert_eq!(one.to_string(), "etcd+https://h:1");
        for bad in [
            "etcd://h1:1,,h2",
            "etcd://h1:1,h2:x",
            "etcd://h1,",
            "redis://h1:1,h2:2",
        ] {
            assert!(
                matches!(BackendUrl::parse(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }
}
