//! `memcached://host[:port][,host[:port]...]` plus `[backend.NAME]` settings.

use std::time::Duration;

use super::keys;
use crate::backend::{BackendUrl, Error, Settings};

/// The settings keys the memcached backend understands.
pub(super) const KEYS: &[&str] = &[
    "prefix",
    "connect_timeout",
    "command_timeout",
    "skew_allowance",
];
pub(super) const DEFAULT_PREFIX: &str = "lockrun:";
pub(super) const DEFAULT_PORT: u16 = 11211;
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the URL and the settings say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Options {
    /// `host:port` of every server, port always given, in the URL's order.
    pub servers: Vec<String>,
    pub prefix: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Rule (a)'s allowance: `None` (the default) leaves rule (a) off.
    pub skew: Option<Duration>,
}

impl Options {
    pub fn parse(url: &BackendUrl, settings: &Settings) -> Result<Options, Error> {
        settings.expect_only(KEYS)?;
        let u = url.secret_url();
        let bad = |why: &str| {
            Error::Config(format!(
                "bad memcached URL '{url}': {why} (expected memcached://HOST[:PORT][,HOST[:PORT]...])"
            ))
        };
        if u.scheme() != "memcached" {
            return Err(bad("not a memcached URL"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(bad("memcached's text protocol has no authentication"));
        }
        if !matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some() {
            return Err(bad(
                "only hosts may follow 'memcached://'; put settings in a [backend.NAME] section",
            ));
        }
        let mut servers: Vec<String> = Vec::new();
        for (host, port) in url.hosts() {
            if host.is_empty() {
                return Err(bad("no host"));
            }
            // Host names are case-insensitive; the server's name must hash the same either way.
            let host = host.to_ascii_lowercase();
            let server = format!("{host}:{}", port.unwrap_or(DEFAULT_PORT));
            if servers.contains(&server) {
                return Err(bad(&format!("server {server} is listed twice")));
            }
            servers.push(server);
        }
        if servers.is_empty() {
            return Err(bad("no host"));
        }
        let prefix = settings
            .string("prefix")?
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        keys::check_prefix(&prefix).map_err(|why| {
            Error::Config(format!(
                "{}: key 'prefix' {why}",
                settings.origin_of("prefix")
            ))
        })?;
        let positive = |key: &str, default: Duration| -> Result<Duration, Error> {
            Ok(settings.positive_duration(key)?.unwrap_or(default))
        };
        Ok(Options {
            servers,
            prefix,
            connect_timeout: positive("connect_timeout", DEFAULT_TIMEOUT)?,
            command_timeout: positive("command_timeout", DEFAULT_TIMEOUT)?,
            skew: settings.duration("skew_allowance")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, toml: &str) -> Result<Options, Error> {
        let settings = Settings::new("test.toml [backend.m]", toml.parse().unwrap());
        Options::parse(&BackendUrl::parse(url)?, &settings)
    }

    fn config_err(url: &str, toml: &str) -> String {
        match parse(url, toml) {
            Err(Error::Config(m)) => m,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn hosts_and_defaults() {
        let o = parse("memcached://127.0.0.1", "").unwrap();
        assert_eq!(o.servers, vec!["127.0.0.1:11211"]);
        assert_eq!(o.prefix, "lockrun:");
        assert_eq!(o.connect_timeout, Duration::from_secs(5));
        assert_eq!(o.command_timeout, Duration::from_secs(5));
        assert_eq!(o.skew, None);
        let o = parse("memcached://Cache-A:11311,cache-b,[::1]:11212/", "").unwrap();
        assert_eq!(
            o.servers,
            vec!["cache-a:11311", "cache-b:11211", "[::1]:11212"]
        );
    }

    #[test]
    fn settings() {
        let o = parse(
            "memcached://h",
            "prefix = \"app:\"\nconnect_timeout = \"250ms\"\ncommand_timeout = 2\nskew_allowance = \"0s\"",
        )
        .unwrap();
        assert_eq!(o.prefix, "app:");
        assert_eq!(o.connect_timeout, Duration::from_millis(250));
        assert_eq!(o.command_timeout, Duration::from_secs(2));
        assert_eq!(o.skew, Some(Duration::ZERO));
        assert!(config_err("memcached://h", "ttl = 3").contains("unknown key 'ttl'"));
        assert!(config_err("memcached://h", "prefix = \"a b\"").contains("key 'prefix'"));
        assert!(config_err("memcached://h", "command_timeout = 0").contains("longer than zero"));
        assert!(config_err("memcached://h", "prefix = 1").contains("must be a string"));
    }

    #[test]
    fn bad_urls() {
        assert!(config_err("memcached://", "").contains("no host"));
        assert!(config_err("memcached:///", "").contains("no host"));
        assert!(config_err("memcached://u:pw@h", "").contains("no authentication"));
        assert!(!config_err("memcached://u:pw@h", "").contains("pw@"));
        assert!(config_err("memcached://h/0", "").contains("only hosts"));
        assert!(config_err("memcached://h?prefix=x", "").contains("[backend.NAME]"));
        assert!(config_err("memcached://h,h:11211", "").contains("listed twice"));
        assert!(config_err("memcached://h:99999", "").contains("memcached://h:99999"));
        assert!(config_err("memcached://a,,b", "").contains("empty host"));
        assert!(config_err("memcached://a,b:x", "").contains("b:x"));
    }
}
