//! `dynamodb://TABLE?region=..&endpoint=..` plus `[backend.NAME]` settings, and the SDK client
//! built from them.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_smithy_http_client::tls;

use super::super::{BackendUrl, Error, Settings};

/// Keys accepted both as URL query parameters and as settings.
pub(super) const KEYS: &[&str] = &[
    "region",
    "endpoint",
    "profile",
    "skew_allowance",
    "command_timeout",
];

pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the URL and the settings say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Options {
    pub table: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub profile: Option<String>,
    /// Rule (a)'s allowance: `None` (the default) leaves rule (a) off.
    pub skew: Option<Duration>,
    pub timeout: Duration,
}

impl Options {
    pub fn parse(url: &BackendUrl, settings: &Settings) -> Result<Options, Error> {
        settings.expect_only(KEYS)?;
        let u = url.secret_url();
        let bad = |why: &str| {
            Error::Config(format!(
                "bad DynamoDB URL '{url}': {why} (expected dynamodb://TABLE?region=REGION&endpoint=URL)"
            ))
        };
        if !u.username().is_empty() || u.password().is_some() {
            return Err(bad(
                "credentials do not belong in the URL; use the AWS environment or a profile",
            ));
        }
        if u.port().is_some() || !matches!(u.path(), "" | "/") || u.fragment().is_some() {
            return Err(bad("only a table name may follow 'dynamodb://'"));
        }
        let table = u.host_str().unwrap_or_default().to_owned();
        check_table(&table).map_err(|why| bad(&why))?;
        let mut query: Vec<(String, String)> = Vec::new();
        for (k, v) in u.query_pairs() {
            if !KEYS.contains(&k.as_ref()) {
                return Err(bad(&format!(
                    "unknown parameter '{k}' (known: {})",
                    KEYS.join(", ")
                )));
            }
            if query.iter().any(|(q, _)| *q == k) {
                return Err(bad(&format!("parameter '{k}' is given twice")));
            }
            query.push((k.into_owned(), v.into_owned()));
        }
        let from_url = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let conflict = |key: &str, a: &dyn std::fmt::Display, b: &dyn std::fmt::Display| {
            Error::Config(format!(
                "DynamoDB '{key}' is given both in the URL ({a}) and in {} ({b})",
                settings.origin
            ))
        };
        let pick = |key: &str| -> Result<Option<String>, Error> {
            match (from_url(key), settings.string(key)?) {
                (Some(a), Some(b)) if a != b => Err(conflict(
                    key,
                    &crate::backend::redact_text(&a),
                    &crate::backend::redact_text(&b),
                )),
                (a, b) => Ok(a.or(b).filter(|v| !v.is_empty())),
            }
        };
        let duration = |key: &str| -> Result<Option<Duration>, Error> {
            let in_url = match from_url(key) {
                None => None,
                Some(text) => Some(
                    crate::duration::parse(&text)
                        .map_err(|e| bad(&format!("parameter '{key}': {e}")))?,
                ),
            };
            match (in_url, settings.duration(key)?) {
                (Some(a), Some(b)) if a != b => Err(conflict(
                    key,
                    &crate::duration::format(a),
                    &crate::duration::format(b),
                )),
                (a, b) => Ok(a.or(b)),
            }
        };
        let timeout = duration("command_timeout")?.unwrap_or(DEFAULT_TIMEOUT);
        if timeout < Duration::from_millis(100) {
            return Err(bad("command_timeout must be at least 100ms"));
        }
        let endpoint = pick("endpoint")?;
        if let Some(e) = &endpoint {
            let ok = url::Url::parse(e)
                .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some());
            if !ok {
                return Err(bad(&format!(
                    "endpoint '{}' is not an http:// or https:// URL",
                    redact(e)
                )));
            }
        }
        Ok(Options {
            table,
            region: pick("region")?,
            endpoint,
            profile: pick("profile")?,
            skew: duration("skew_allowance")?,
            timeout,
        })
    }

    /// Loads the AWS configuration (the standard chain: environment, profile, instance role,
    /// overridden by what the URL and settings say) and builds a client.
    pub async fn client(&self) -> Result<aws_sdk_dynamodb::Client, Error> {
        let t = self.timeout;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(t)
                    .operation_attempt_timeout(t)
                    .operation_timeout(t)
                    .build(),
            );
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let conf = tokio::time::timeout(t, loader.load()).await.map_err(|_| {
            Error::Unavailable(format!(
                "loading the AWS configuration for DynamoDB took longer than {}",
                crate::duration::format(t)
            ))
        })?;
        if conf.region().is_none() {
            return Err(Error::Config(
                "no AWS region for DynamoDB: add ?region=REGION to the URL, set 'region' in the \
                 backend's config section, or set AWS_REGION"
                    .into(),
            ));
        }
        let conf = aws_sdk_dynamodb::config::Builder::from(&conf)
            .retry_classifier(super::errors::NoRetryAfterTls)
            .build();
        Ok(aws_sdk_dynamodb::Client::from_conf(conf))
    }
}

/// DynamoDB's rule for table names: 3 to 255 of `[A-Za-z0-9_.-]`.
pub(super) fn check_table(table: &str) -> Result<(), String> {
    if table.is_empty() {
        return Err("the table name is missing".into());
    }
    if !(3..=255).contains(&table.len())
        || !table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "'{}' is not a valid table name (3 to 255 letters, digits, '_', '.', '-')",
            crate::lease::escape(table)
        ));
    }
    Ok(())
}

/// An endpoint for messages: scheme, host and port only.
pub(super) fn redact(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => "(endpoint)".into(),
        },
        Err(_) => "(endpoint)".into(),
    }
}

/// The SDK's HTTP(S) client, on rustls with ring (see `Cargo.toml` for why not the SDK's
/// default, aws-lc).
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, settings: &str) -> Result<Options, Error> {
        let table: toml::Table = toml::from_str(settings).unwrap();
        Options::parse(
            &BackendUrl::parse(url).unwrap(),
            &Settings::new("config [backend.d]", table),
        )
    }

    #[test]
    fn url_and_settings() {
        let o = parse(
            "dynamodb://Locks_1.x-y?region=eu-west-1&endpoint=http://127.0.0.1:8000",
            "",
        )
        .unwrap();
        assert_eq!(o.table, "Locks_1.x-y");
        assert_eq!(o.region.as_deref(), Some("eu-west-1"));
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:8000"));
        assert_eq!((o.skew, o.timeout), (None, DEFAULT_TIMEOUT));
        let o = parse(
            "dynamodb://locks?skew_allowance=1000ms",
            "region = \"us-east-2\"\nprofile = \"ci\"\ncommand_timeout = \"2s\"\nskew_allowance = 1",
        )
        .unwrap();
        assert_eq!(o.region.as_deref(), Some("us-east-2"));
        assert_eq!(o.profile.as_deref(), Some("ci"));
        assert_eq!(o.timeout, Duration::from_secs(2));
        assert_eq!(o.skew, Some(Duration::from_secs(1)));
    }

    #[test]
    fn bad_urls_and_settings() {
        for (url, settings, needle) in [
            ("dynamodb://", "", "table name is missing"),
            ("dynamodb://ab", "", "not a valid table name"),
            ("dynamodb://a%20b", "", "not a valid table name"),
            ("dynamodb://locks/x", "", "only a table name"),
            ("dynamodb://locks:99", "", "only a table name"),
            (
                "dynamodb://AKIA:secret@locks",
                "",
                "credentials do not belong",
            ),
            (
                "dynamodb://locks?regoin=x",
                "",
                "unknown parameter 'regoin'",
            ),
            ("dynamodb://locks?region=a&region=b", "", "given twice"),
            (
                "dynamodb://locks?endpoint=localhost:8000",
                "",
                "not an http",
            ),
            (
                "dynamodb://locks?command_timeout=soon",
                "",
                "command_timeout",
            ),
            ("dynamodb://locks?command_timeout=1ms", "", "at least 100ms"),
            (
                "dynamodb://locks?region=a",
                "region = \"b\"",
                "both in the URL",
            ),
            ("dynamodb://locks", "tabel = \"x\"", "unknown key 'tabel'"),
            (
                "dynamodb://locks?command_timeout=2s",
                "command_timeout = 3",
                "both in the URL (2s)",
            ),
            (
                "dynamodb://locks",
                "skew_allowance = true",
                "must be a duration",
            ),
        ] {
            match parse(url, settings) {
                Err(Error::Config(m)) => assert!(m.contains(needle), "{url}: {m}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        let e = parse("dynamodb://AKIA:hunter2@locks", "").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn endpoints_are_shown_without_userinfo() {
        assert_eq!(
            redact("http://u:pw@127.0.0.1:8000/x?y"),
            "http://127.0.0.1:8000"
        );
        assert_eq!(
            redact("https://dynamodb.example"),
            "https://dynamodb.example"
        );
        assert_eq!(redact("::"), "(endpoint)");
    }
}
