//! A `redis://`, `rediss://` or `redis+unix://` URL plus `[backend.<name>]` settings → how to
//! connect, with the password taken from the URL, `password_file` or `LOCKRUN_REDIS_PASSWORD`.

use std::path::PathBuf;
use std::time::Duration;

use ::redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisConnectionInfo};

use crate::backend::{BackendUrl, Error, Settings};

/// The settings keys the Redis backend understands.
pub(super) const KEYS: &[&str] = &[
    "prefix",
    "password_file",
    "username",
    "connect_timeout",
    "command_timeout",
    "ca_file",
];
/// The environment variable that may hold the password.
pub(super) const PASSWORD_ENV: &str = "LOCKRUN_REDIS_PASSWORD";
/// The key prefix when none is configured.
pub(super) const DEFAULT_PREFIX: &str = "lockrun:";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_PORT: u16 = 6379;

/// Everything needed to connect. Holds the password: no `Debug`.
pub(super) struct Options {
    pub info: ConnectionInfo,
    pub prefix: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// The PEM bundle of `ca_file`: the roots a `rediss://` server is checked against instead
    /// of the system's. Holds at least one certificate.
    pub ca: Option<Vec<u8>>,
    /// The URL with secrets redacted, for messages.
    pub display: String,
}

impl Options {
    /// Whether the connection is TLS.
    pub fn tls(&self) -> bool {
        matches!(self.info.addr, ConnectionAddr::TcpTls { .. })
    }
}

/// Builds the connection options. `env` looks up environment variables (a parameter for tests).
pub(super) fn options(
    url: &BackendUrl,
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Options, Error> {
    settings.expect_only(KEYS)?;
    let display = url.redacted();
    let u = url.secret_url();
    let bad = |why: String| Error::Config(format!("bad redis URL '{display}': {why}"));
    let (addr, db) = match u.scheme() {
        "redis" | "rediss" => {
            let host = match u.host() {
                Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
                Some(url::Host::Ipv4(a)) => a.to_string(),
                Some(url::Host::Ipv6(a)) => a.to_string(),
                _ => return Err(bad("no host".into())),
            };
            let port = u.port().unwrap_or(DEFAULT_PORT);
            if let Some(q) = u.query() {
                return Err(bad(format!(
                    "unexpected parameters '?{}' (the database is the path, as in /0)",
                    redact_query(q)
                )));
            }
            let db = parse_db(u.path().trim_start_matches('/')).map_err(bad)?;
            let addr = if u.scheme() == "rediss" {
                let insecure = match u.fragment() {
                    None => false,
                    Some("insecure") => true,
                    Some(f) => {
                        return Err(bad(format!("unknown fragment '#{f}' (only #insecure)")))
                    }
                };
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure,
                    tls_params: None,
                }
            } else {
                if u.fragment().is_some() {
                    return Err(bad("a fragment is only allowed for rediss://".into()));
                }
                ConnectionAddr::Tcp(host, port)
            };
            (addr, db)
        }
        "redis+unix" => {
            if u.host_str().is_some_and(|h| !h.is_empty()) || u.port().is_some() {
                return Err(bad(
                    "a socket URL has no host: redis+unix:///path/to/redis.sock".into(),
                ));
            }
            let path = decode(u.path()).map_err(bad)?;
            if !path.starts_with('/') || path.len() < 2 {
                return Err(bad("no socket path".into()));
            }
            if path.contains('\0') {
                return Err(bad("the socket path contains a NUL byte (%00)".into()));
            }
            let mut db = 0;
            for (k, v) in u.query_pairs() {
                match &*k {
                    "db" => db = parse_db(&v).map_err(bad)?,
                    other => {
                        return Err(bad(format!(
                            "unknown parameter '{other}' (only ?db=N is known)"
                        )))
                    }
                }
            }
            if u.fragment().is_some() {
                return Err(bad("a fragment is only allowed for rediss://".into()));
            }
            (ConnectionAddr::Unix(PathBuf::from(path)), db)
        }
        other => return Err(Error::Config(format!("'{other}' is not a redis URL"))),
    };
    let username = match u.username() {
        "" => settings.string("username")?.filter(|s| !s.is_empty()),
        name => Some(decode(name).map_err(bad)?),
    };
    // The URL's, else the configured file's, else the environment's: the order the etcd and
    // PostgreSQL backends follow too.
    let password = match u.password() {
        Some(pw) => Some(decode(pw).map_err(bad)?),
        None => match settings.password_file()? {
            Some(pw) => Some(pw),
            None => env(PASSWORD_ENV).filter(|p| !p.is_empty()),
        },
    };
    let timeout = |key: &str| -> Result<Duration, Error> {
        Ok(settings.positive_duration(key)?.unwrap_or(DEFAULT_TIMEOUT))
    };
    let ca = ca_file(settings, matches!(addr, ConnectionAddr::TcpTls { .. }))?;
    Ok(Options {
        info: ConnectionInfo {
            addr,
            redis: RedisConnectionInfo {
                db,
                username,
                password,
                protocol: ProtocolVersion::RESP2,
            },
        },
        prefix: settings
            .string("prefix")?
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
        connect_timeout: timeout("connect_timeout")?,
        command_timeout: timeout("command_timeout")?,
        ca,
        display,
    })
}

/// Reads `ca_file` (only meaningful with `rediss://`) and checks that it holds a certificate.
fn ca_file(settings: &Settings, tls: bool) -> Result<Option<Vec<u8>>, Error> {
    let Some(path) = settings.path("ca_file")? else {
        return Ok(None);
    };
    if !tls {
        return Err(Error::Config(format!(
            "{}: ca_file {} is only used with a rediss:// URL",
            settings.origin_of("ca_file"),
            crate::backend::shown(&path)
        )));
    }
    let Some((path, pem)) = settings.file("ca_file")? else {
        return Ok(None);
    };
    if crate::backend::tls::pem_certificates(&pem).is_empty() {
        return Err(Error::Config(format!(
            "{}: ca_file {} holds no PEM certificate",
            settings.origin_of("ca_file"),
            crate::backend::shown(&path)
        )));
    }
    Ok(Some(pem))
}

/// The database index: empty means 0.
fn parse_db(text: &str) -> Result<i64, String> {
    if text.is_empty() {
        return Ok(0);
    }
    text.parse::<u32>()
        .map(i64::from)
        .map_err(|_| format!("the database must be a number such as /0, not '{text}'"))
}

/// Percent-decodes a URL component.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape that is not UTF-8".to_owned())
}

/// A query string for a message: only the parameter names.
fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|p| p.split('=').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> Settings {
        Settings::new("test.toml [backend.r]", toml.parse().unwrap())
    }

    fn opts(url: &str, toml: &str) -> Result<Options, Error> {
        options(&BackendUrl::parse(url).unwrap(), &settings(toml), &|_| None)
    }

    fn config_err(url: &str, toml: &str) -> String {
        match opts(url, toml) {
            Err(Error::Config(m)) => m,
            Err(e) => panic!("{url}: {e:?}"),
            Ok(_) => panic!("{url}: accepted"),
        }
    }

    #[test]
    fn tcp_urls() {
        let o = opts("redis://127.0.0.1:6390/3", "").unwrap();
        assert_eq!(o.info.addr, ConnectionAddr::Tcp("127.0.0.1".into(), 6390));
        assert_eq!(o.info.redis.db, 3);
        assert_eq!(o.info.redis.password, None);
        assert_eq!(o.prefix, "lockrun:");
        assert_eq!(o.connect_timeout, Duration::from_secs(5));
        assert_eq!(o.command_timeout, Duration::from_secs(5));
        let o = opts("redis://redis.internal", "").unwrap();
        assert_eq!(
            o.info.addr,
            ConnectionAddr::Tcp("redis.internal".into(), 6379)
        );
        assert_eq!(o.info.redis.db, 0);
        let o = opts("redis://[::1]:7000/", "").unwrap();
        assert_eq!(o.info.addr, ConnectionAddr::Tcp("::1".into(), 7000));
    }

    #[test]
    fn tls_and_unix_urls() {
        let o = opts("rediss://h:6380/1", "").unwrap();
        assert!(matches!(
            o.info.addr,
            ConnectionAddr::TcpTls { ref host, port: 6380, insecure: false, .. } if host == "h"
        ));
        let o = opts("rediss://h#insecure", "").unwrap();
        assert!(matches!(
            o.info.addr,
            ConnectionAddr::TcpTls { insecure: true, .. }
        ));
        let o = opts("redis+unix:///run/redis/redis.sock?db=2", "").unwrap();
        assert_eq!(
            o.info.addr,
            ConnectionAddr::Unix(PathBuf::from("/run/redis/redis.sock"))
        );
        assert_eq!(o.info.redis.db, 2);
        let o = opts("redis+unix:///tmp/a%20b.sock", "").unwrap();
        assert_eq!(
            o.info.addr,
            ConnectionAddr::Unix(PathBuf::from("/tmp/a b.sock"))
        );
    }

    #[test]
    fn bad_urls() {
        assert!(config_err("redis://h/abc", "").contains("database must be a number"));
        assert!(config_err("redis://h/-1", "").contains("database"));
        assert!(config_err("redis:///0", "").contains("no host"));
        assert!(config_err("redis://h/0?db=1", "").contains("unexpected parameters '?db'"));
        assert!(config_err("rediss://h/0#nope", "").contains("#insecure"));
        assert!(config_err("redis://h/0#insecure", "").contains("fragment"));
        assert!(config_err("redis+unix:///s.sock?timeout=1", "").contains("unknown parameter"));
        assert!(config_err("redis+unix://host/s.sock", "").contains("no host"));
        assert!(config_err("redis+unix:///s.sock?db=x", "").contains("database"));
        assert!(config_err("redis+unix:///tmp/%00x", "").contains("NUL byte"));
    }

    #[test]
    fn credentials_from_url_env_and_file() {
        let o = opts("redis://alice:p%40ss@h/0", "").unwrap();
        assert_eq!(o.info.redis.username.as_deref(), Some("alice"));
        assert_eq!(o.info.redis.password.as_deref(), Some("p@ss"));
        assert!(!o.display.contains("p%40ss") && !o.display.contains("p@ss"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let toml = format!(
            "password_file = {:?}\nusername = \"bob\"",
            file.display().to_string()
        );
        let url = BackendUrl::parse("redis://h/0").unwrap();
        let env_pw = |k: &str| (k == PASSWORD_ENV).then(|| "from-env".to_owned());
        let o = options(&url, &settings(&toml), &|_| None).unwrap();
        assert_eq!(o.info.redis.password.as_deref(), Some("from-file"));
        assert_eq!(o.info.redis.username.as_deref(), Some("bob"));
        // The configured file wins over the environment.
        let o = options(&url, &settings(&toml), &env_pw).unwrap();
        assert_eq!(o.info.redis.password.as_deref(), Some("from-file"));
        let o = options(&url, &settings("username = \"bob\""), &env_pw).unwrap();
        assert_eq!(o.info.redis.password.as_deref(), Some("from-env"));
        // A URL password wins over both.
        let url_pw = BackendUrl::parse("redis://:from-url@h/0").unwrap();
        let o = options(&url_pw, &settings(&toml), &env_pw).unwrap();
        assert_eq!(o.info.redis.password.as_deref(), Some("from-url"));
        assert_eq!(o.info.redis.username.as_deref(), Some("bob"));

        std::fs::write(&file, "crlf\r\n").unwrap();
        let o = options(&url, &settings(&toml), &|_| None).unwrap();
        assert_eq!(o.info.redis.password.as_deref(), Some("crlf"));
        std::fs::write(&file, "\n").unwrap();
        let e = config_err("redis://h/0", &toml);
        assert!(e.contains("is empty"), "{e}");
        let missing = format!(
            "password_file = {:?}",
            dir.path().join("nope").display().to_string()
        );
        let e = config_err("redis://h/0", &missing);
        assert!(e.contains("cannot read password_file"), "{e}");
    }

    #[test]
    fn settings_keys() {
        let o = opts(
            "redis://h/0",
            "prefix = \"app:\"\nconnect_timeout = \"250ms\"\ncommand_timeout = 2",
        )
        .unwrap();
        assert_eq!(o.prefix, "app:");
        assert_eq!(o.connect_timeout, Duration::from_millis(250));
        assert_eq!(o.command_timeout, Duration::from_secs(2));
        assert!(config_err("redis://h/0", "passwd = \"x\"").contains("unknown key 'passwd'"));
        assert!(config_err("redis://h/0", "command_timeout = \"0s\"").contains("longer than zero"));
        assert!(config_err("redis://h/0", "prefix = 3").contains("must be a string"));
    }

    #[test]
    fn ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
        std::fs::write(&ca, pem).unwrap();
        let toml = format!("ca_file = {:?}", ca.display().to_string());
        let o = opts("rediss://h/0", &toml).unwrap();
        assert!(o.tls());
        assert_eq!(o.ca.as_deref(), Some(pem.as_bytes()));
        assert!(opts("rediss://h/0", "").unwrap().ca.is_none());
        assert!(!opts("redis://h/0", "").unwrap().tls());
        let e = config_err("redis://h/0", &toml);
        assert!(e.contains("only used with a rediss:// URL"), "{e}");
        std::fs::write(&ca, "not a certificate").unwrap();
        let e = config_err("rediss://h/0", &toml);
        assert!(e.contains("holds no PEM certificate"), "{e}");
        std::fs::remove_file(&ca).unwrap();
        let e = config_err("rediss://h/0", &toml);
        assert!(e.contains("cannot read ca_file"), "{e}");
    }
}
