//! `kubernetes://NAMESPACE?context=..` plus `[backend.NAME]` settings, and the kube client
//! configuration they select.

use std::time::Duration;

use kube::config::{KubeConfigOptions, KubeconfigError};

use super::name;
use crate::backend::{BackendUrl, Error, Settings};

/// Keys accepted both as URL query parameters and as settings.
pub(super) const KEYS: &[&str] = &[
    "context",
    "skew_allowance",
    "command_timeout",
    "name_prefix",
];

pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the URL and the settings say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Options {
    /// `None`: the namespace of the kubeconfig context, or the pod's.
    pub namespace: Option<String>,
    pub context: Option<String>,
    pub prefix: String,
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
                "bad Kubernetes URL '{url}': {why} (expected kubernetes://NAMESPACE)"
            ))
        };
        if !u.username().is_empty() || u.password().is_some() {
            return Err(bad(
                "credentials do not belong in the URL; they come from the kubeconfig",
            ));
        }
        if u.port().is_some() || !matches!(u.path(), "" | "/") || u.fragment().is_some() {
            return Err(bad(&format!(
                "only a namespace may follow '{}://'",
                url.scheme()
            )));
        }
        let namespace = u.host_str().unwrap_or_default().to_owned();
        if !namespace.is_empty() {
            check_namespace(&namespace).map_err(|why| bad(&why))?;
        }
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
                "Kubernetes '{key}' is given both in the URL ({a}) and in {} ({b})",
                settings.origin
            ))
        };
        let pick = |key: &str| -> Result<Option<String>, Error> {
            match (from_url(key), settings.string(key)?) {
                (Some(a), Some(b)) if a != b => Err(conflict(key, &a, &b)),
                (a, b) => Ok(a.or(b)),
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
        let prefix = pick("name_prefix")?.unwrap_or_else(|| name::DEFAULT_PREFIX.to_owned());
        name::check_prefix(&prefix).map_err(|why| bad(&why))?;
        Ok(Options {
            namespace: (!namespace.is_empty()).then_some(namespace),
            context: pick("context")?.filter(|c| !c.is_empty()),
            prefix,
            skew: duration("skew_allowance")?,
            timeout,
        })
    }

    /// Loads the client configuration: the kubeconfig (`KUBECONFIG`, else `~/.kube/config`) with
    /// its current context or the one named, else the in-cluster service account.
    pub async fn config(&self) -> Result<kube::Config, Error> {
        let mut config = match &self.context {
            Some(context) => {
                let opts = KubeConfigOptions {
                    context: Some(context.clone()),
                    ..KubeConfigOptions::default()
                };
                let mut c = kube::Config::from_kubeconfig(&opts)
                    .await
                    .map_err(|e| kubeconfig_error(&e))?;
                c.apply_debug_overrides();
                c
            }
            None => kube::Config::infer().await.map_err(|e| infer_error(&e))?,
        };
        config.connect_timeout = Some(self.timeout);
        config.read_timeout = Some(self.timeout);
        config.write_timeout = Some(self.timeout);
        Ok(config)
    }
}

/// A namespace is an RFC 1123 label: at most 63 of `a-z`, `0-9` and `-`, starting and ending
/// with a letter or digit.
pub(super) fn check_namespace(ns: &str) -> Result<(), String> {
    if ns.len() <= 63 && !ns.contains('.') && name::is_dns_subdomain(ns) {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a valid namespace (at most 63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit)",
            crate::lease::escape(ns)
        ))
    }
}

fn kubeconfig_error(e: &KubeconfigError) -> Error {
    match e {
        KubeconfigError::LoadContext(name) => Error::Config(format!(
            "the kubeconfig has no context '{}'",
            crate::lease::escape(name)
        )),
        KubeconfigError::FindPath => no_config(),
        KubeconfigError::ReadConfig(io, path) => Error::Config(format!(
            "cannot read the kubeconfig {}: {io}",
            path.display()
        )),
        _ => Error::Config(format!("cannot load the kubeconfig: {}", one_line(e))),
    }
}

/// `Config::infer` failed both ways; its source is the kubeconfig error.
fn infer_error(e: &kube::config::InferConfigError) -> Error {
    let source = std::error::Error::source(e).and_then(|s| s.downcast_ref::<KubeconfigError>());
    match source {
        Some(KubeconfigError::FindPath) => no_config(),
        Some(KubeconfigError::ReadConfig(io, _))
            if io.kind() == std::io::ErrorKind::NotFound
                && std::env::var_os("KUBECONFIG").is_none() =>
        {
            no_config()
        }
        Some(k) => kubeconfig_error(k),
        None => Error::Config(format!("no Kubernetes configuration: {}", one_line(e))),
    }
}

fn no_config() -> Error {
    Error::Config(
        "no Kubernetes configuration: no kubeconfig (set KUBECONFIG or create ~/.kube/config) \
         and not running in a pod (KUBERNETES_SERVICE_HOST is not set)"
            .into(),
    )
}

/// An error and its sources on one line.
pub(super) fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, settings: &str) -> Result<Options, Error> {
        let table: toml::Table = toml::from_str(settings).unwrap();
        Options::parse(
            &BackendUrl::parse(url).unwrap(),
            &Settings::new("config.toml [backend.k]", table),
        )
    }

    #[test]
    fn url_and_settings() {
        let o = parse("kubernetes://team-a", "").unwrap();
        assert_eq!(o.namespace.as_deref(), Some("team-a"));
        assert_eq!(o.prefix, "lockrun-");
        assert_eq!((o.skew, o.timeout), (None, DEFAULT_TIMEOUT));
        assert_eq!(o.context, None);
        let o = parse(
            "k8s://ns?context=prod&name_prefix=ci.",
            "skew_allowance = \"1s\"\ncommand_timeout = 2",
        )
        .unwrap();
        assert_eq!(o.context.as_deref(), Some("prod"));
        assert_eq!(o.prefix, "ci.");
        assert_eq!(o.skew, Some(Duration::from_secs(1)));
        assert_eq!(o.timeout, Duration::from_secs(2));
        assert_eq!(parse("kubernetes://", "").unwrap().namespace, None);
        assert_eq!(parse("k8s:///", "").unwrap().namespace, None);
        assert_eq!(parse("k8s://ns", "name_prefix = \"\"").unwrap().prefix, "");
    }

    #[test]
    fn bad_urls_and_settings() {
        for (url, settings, needle) in [
            ("kubernetes://Team", "", "not a valid namespace"),
            ("kubernetes://a.b", "", "not a valid namespace"),
            ("kubernetes://ns/leases", "", "only a namespace"),
            ("kubernetes://ns:6443", "", "only a namespace"),
            ("kubernetes://u:pw@ns", "", "credentials do not belong"),
            ("kubernetes://ns?contxt=a", "", "unknown parameter 'contxt'"),
            ("kubernetes://ns?context=a&context=b", "", "given twice"),
            ("kubernetes://ns?command_timeout=1ms", "", "at least 100ms"),
            ("kubernetes://ns?skew_allowance=soon", "", "skew_allowance"),
            ("kubernetes://ns?name_prefix=Locks-", "", "name_prefix"),
            (
                "kubernetes://ns",
                "namespace = \"x\"",
                "unknown key 'namespace'",
            ),
            (
                "kubernetes://ns?context=a",
                "context = \"b\"",
                "both in the URL",
            ),
        ] {
            match parse(url, settings) {
                Err(Error::Config(m)) => assert!(m.contains(needle), "{url}: {m}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        let e = parse("kubernetes://u:hunter2@ns", "").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
