//! The etcd backend's configuration: endpoints, TLS, credentials, key prefix and timeouts, from
//! the URL and the `[backend.<name>]` settings.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::backend::{BackendUrl, Error, Settings};

/// The settings keys the etcd backend understands.
pub(super) const KEYS: &[&str] = &[
    "prefix",
    "connect_timeout",
    "command_timeout",
    "ca_file",
    "cert_file",
    "key_file",
    "username",
    "password_file",
];

/// The environment variable that may hold the password.
pub(super) const PASSWORD_ENV: &str = "LOCKRUN_ETCD_PASSWORD";

const DEFAULT_PORT: u16 = 2379;
const DEFAULT_PREFIX: &str = "lockrun/";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the system's trusted roots usually are, used when `ca_file` is not set.
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A password: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub(super) struct Options {
    /// `http://host:port` or `https://host:port`, one per host of the URL.
    pub endpoints: Vec<String>,
    /// The URL with any password redacted, for messages.
    pub name: String,
    pub prefix: Vec<u8>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub credentials: Option<(String, Secret)>,
    /// PEM files: CA bundle, and the client certificate and key when given.
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone)]
pub(super) struct Tls {
    pub ca_file: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Options {
    /// Reads the URL and settings; `env` looks up environment variables.
    pub fn new(
        url: &BackendUrl,
        settings: &Settings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Options, Error> {
        settings.expect_only(KEYS)?;
        let u = url.secret_url();
        let name = url.redacted();
        let bad = |why: String| Error::Config(format!("etcd backend URL '{name}': {why}"));
        if !matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some() {
            return Err(bad(format!(
                "takes no path or parameters (use the settings {} in the config file)",
                KEYS.join(", ")
            )));
        }
        let https = url.scheme() == "etcd+https";
        let endpoints: Vec<String> = url
            .hosts()
            .into_iter()
            .map(|(host, port)| {
                let scheme = if https { "https" } else { "http" };
                format!("{scheme}://{host}:{}", port.unwrap_or(DEFAULT_PORT))
            })
            .collect();
        if endpoints.is_empty() || u.host_str().map_or(true, str::is_empty) {
            return Err(bad(
                "names no host (expected etcd://host:2379[,host2:2379...])".into(),
            ));
        }
        let prefix = settings
            .string("prefix")?
            .unwrap_or_else(|| DEFAULT_PREFIX.into());
        let positive = |key: &str| -> Result<Duration, Error> {
            Ok(settings.positive_duration(key)?.unwrap_or(DEFAULT_TIMEOUT))
        };
        Ok(Options {
            endpoints,
            prefix: prefix.into_bytes(),
            connect_timeout: positive("connect_timeout")?,
            command_timeout: positive("command_timeout")?,
            credentials: credentials(url, settings, env)?,
            tls: tls(https, settings)?,
            name,
        })
    }

    /// The etcd-client options: connect timeout, HTTP/2 keep-alive, TLS (credentials are used
    /// separately, so that a lapsed auth token can be renewed).
    pub fn connect_options(&self) -> Result<ConnectOptions, Error> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), self.command_timeout);
        if let Some(tls) = &self.tls {
            // rustls is told which provider to use (see `backend::tls`).
            crate::backend::tls::ensure_provider();
            let mut config = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read(&tls.ca_file, "ca_file")?));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(
                    read(cert, "cert_file")?,
                    read(key, "key_file")?,
                ));
            }
            opts = opts.with_tls(config);
        }
        Ok(opts)
    }
}

/// User and password from the URL, or `username` with `password_file` or the environment.
fn credentials(
    url: &BackendUrl,
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(String, Secret)>, Error> {
    let u = url.secret_url();
    let decode = |s: &str| {
        percent_decode(s).ok_or_else(|| {
            Error::Config(format!(
                "etcd backend URL '{url}': user or password is not valid percent-encoded UTF-8"
            ))
        })
    };
    let user = if u.username().is_empty() {
        settings.string("username")?.filter(|s| !s.is_empty())
    } else {
        Some(decode(u.username())?)
    };
    let password = if let Some(p) = u.password() {
        Some(decode(p)?)
    } else if let Some(pw) = settings.password_file()? {
        Some(pw)
    } else {
        env(PASSWORD_ENV).filter(|s| !s.is_empty())
    };
    match (user, password) {
        (Some(user), Some(password)) => Ok(Some((user, Secret(password)))),
        (None, None) => Ok(None),
        (Some(user), None) => Err(Error::Config(format!(
            "etcd user '{user}' has no password: put it in the URL, in password_file, \
             or in ${PASSWORD_ENV}"
        ))),
        (None, Some(_)) => Err(Error::Config(
            "an etcd password is set but no user: put it in the URL (etcd://user@host) \
             or set username"
                .into(),
        )),
    }
}

/// TLS files: only with `etcd+https`, which without `ca_file` trusts the system's roots.
fn tls(https: bool, settings: &Settings) -> Result<Option<Tls>, Error> {
    let ca = settings.path("ca_file")?;
    let cert = settings.path("cert_file")?;
    let key = settings.path("key_file")?;
    if !https {
        if ca.is_some() || cert.is_some() || key.is_some() {
            return Err(Error::Config(format!(
                "{}: ca_file, cert_file and key_file need an etcd+https:// URL",
                settings.origin
            )));
        }
        return Ok(None);
    }
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(Error::Config(format!(
                "{}: cert_file and key_file go together",
                settings.origin
            )))
        }
    };
    let ca_file = match ca {
        Some(ca) => ca,
        None => SYSTEM_ROOTS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::Config(format!(
                    "{}: etcd+https needs ca_file (no system CA bundle found)",
                    settings.origin
                ))
            })?,
    };
    Ok(Some(Tls { ca_file, identity }))
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, Error> {
    crate::small_file::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read {key} {}: {e}",
            crate::backend::shown(path)
        ))
    })
}

/// Decodes `%XX` escapes; `None` for bad escapes or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(url: &str, toml: &str, env: &[(&str, &str)]) -> Result<Options, Error> {
        let table: toml::Table = toml::from_str(toml).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::new(
            &BackendUrl::parse(url).unwrap(),
            &Settings::new("test.toml [backend.e]", table),
            &move |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
        )
    }

    #[test]
    fn endpoints_and_defaults() {
        let o = opts("etcd://10.0.0.1,10.0.0.2:2380/", "", &[]).unwrap();
        assert_eq!(
            o.endpoints,
            vec!["http://10.0.0.1:2379", "http://10.0.0.2:2380"]
        );
        assert_eq!(o.prefix, b"lockrun/");
        assert_eq!(o.command_timeout, DEFAULT_TIMEOUT);
        assert!(o.credentials.is_none() && o.tls.is_none());
        let o = opts(
            "etcd://h",
            "prefix = \"x/\"\ncommand_timeout = \"250ms\"",
            &[],
        )
        .unwrap();
        assert_eq!(o.prefix, b"x/");
        assert_eq!(o.command_timeout, Duration::from_millis(250));
    }

    #[test]
    fn rejects_bad_configuration() {
        for (url, toml) in [
            ("etcd://h/some/path", ""),
            ("etcd://h?prefix=x", ""),
            ("etcd://h", "colour = \"red\""),
            ("etcd://h", "command_timeout = \"0s\""),
            ("etcd://h", "ca_file = \"/x\""),
            ("etcd+https://h", "cert_file = \"/x\""),
            ("etcd://u@h", ""),
            (
                "etcd://h",
                "password_file = \"/nonexistent/pw\"\nusername = \"u\"",
            ),
        ] {
            assert!(
                matches!(opts(url, toml, &[]), Err(Error::Config(_))),
                "{url} {toml}"
            );
        }
    }

    #[test]
    fn credentials_from_url_file_or_env() {
        let o = opts("etcd://al%40ice:p%3Aw@h", "", &[]).unwrap();
        assert_eq!(o.credentials, Some(("al@ice".into(), Secret("p:w".into()))));
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-file\n").unwrap();
        let toml = format!("username = \"bob\"\npassword_file = \"{}\"", pw.display());
        let o = opts("etcd://h", &toml, &[(PASSWORD_ENV, "from-env")]).unwrap();
        assert_eq!(o.credentials.unwrap().1, Secret("from-file".into()));
        let o = opts("etcd://bob@h", "", &[(PASSWORD_ENV, "from-env")]).unwrap();
        assert_eq!(o.credentials.unwrap().1, Secret("from-env".into()));
        assert!(opts("etcd://h", "", &[(PASSWORD_ENV, "x")]).is_err());
    }

    #[test]
    fn secrets_stay_hidden() {
        let o = opts("etcd://u:hunter2@h", "", &[]).unwrap();
        let shown = format!("{o:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let e = opts("etcd://u:hunter2@h/path", "", &[]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn tls_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not really pem").unwrap();
        let toml = format!("ca_file = \"{}\"", ca.display());
        let o = opts("etcd+https://h", &toml, &[]).unwrap();
        assert_eq!(o.endpoints, vec!["https://h:2379"]);
        assert_eq!(o.tls.as_ref().unwrap().ca_file, ca);
        let toml = "ca_file = \"/nonexistent/ca.pem\"";
        let o = opts("etcd+https://h", toml, &[]).unwrap();
        assert!(matches!(o.connect_options(), Err(Error::Config(_))));
    }
}
