//! Connection options: the URL, the `[backend.<name>]` keys, password sources, TLS and the
//! table name.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;

use crate::backend::{BackendUrl, Error, Settings};

/// The keys a `[backend.<name>]` section may hold for PostgreSQL (besides `url`).
pub const KEYS: &[&str] = &[
    "table",
    "schema",
    "password_file",
    "connect_timeout",
    "statement_timeout",
    "command_timeout",
    "listen",
];

/// The table used when the settings name none.
pub const DEFAULT_TABLE: &str = "lockrun_leases";
/// Connect and statement timeouts when the settings give none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
const MAX_IDENT: usize = 63;

/// `sslmode` as libpq knows it (tokio-postgres itself understands only the first four).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// Like libpq: plaintext first would be `allow`; lockrun treats it as `prefer`.
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode, Error> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                    "bad PostgreSQL URL: sslmode '{other}' is not one of disable, allow, prefer, \
                     require, verify-ca, verify-full"
                )))
            }
        })
    }

    /// What tokio-postgres is told: whether TLS is tried and whether it is mandatory.
    fn wire(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow | SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

/// A validated table, optionally schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub schema: Option<String>,
    pub name: String,
}

impl Table {
    /// The quoted, possibly schema-qualified name for SQL text.
    pub fn sql(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote(s), quote(&self.name)),
            None => quote(&self.name),
        }
    }

    /// The name for messages: `schema.table` or `table`.
    pub fn display(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The quoted name of the expiry index. Unqualified: PostgreSQL always puts an index in
    /// its table's schema.
    pub fn index_sql(&self) -> String {
        let suffix = "_expires_at_idx";
        let base = &self.name[..self.name.len().min(MAX_IDENT - suffix.len())];
        quote(&format!("{base}{suffix}"))
    }

    /// The NOTIFY channel of this table: `lockrun_<schema>_<table>`, cut to 63 bytes; with no
    /// schema, or `public` (where a name without one is found by default), `lockrun_<table>`:
    /// configurations that spell the same table with and without `schema = "public"` wake each
    /// other's waiters and share their line (review: they never woke each other, and waited
    /// for the poll).
    pub fn channel(&self) -> String {
        let mut c = match self.schema.as_deref().filter(|s| *s != "public") {
            Some(s) => format!("lockrun_{s}_{}", self.name),
            None => format!("lockrun_{}", self.name),
        };
        c.truncate(MAX_IDENT); // ASCII only, so any byte is a char boundary
        c
    }
}

/// Checks that `name` is a plain SQL identifier: 1..=63 bytes of ASCII letters, digits and `_`,
/// not starting with a digit. Names are always double-quoted in SQL, so case is kept.
pub fn identifier(key: &str, name: &str) -> Result<String, Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IDENT
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(name.to_owned())
    } else {
        Err(Error::Config(format!(
            "PostgreSQL {key} '{}' is not a plain SQL identifier (1 to 63 ASCII letters, digits \
             or underscores, not starting with a digit)",
            crate::lease::escape(name)
        )))
    }
}

/// Double-quotes an identifier.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Everything needed to connect and to name things. `Debug` never shows the password.
pub struct Options {
    pub pg: tokio_postgres::Config,
    pub tls: super::tls::Connector,
    pub ssl: SslMode,
    pub table: Table,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub listen: bool,
    /// `host:port/db`, for messages.
    pub endpoint: String,
    pub user: String,
    /// Why a password file was not used, added to an authentication error.
    pub password_note: Option<String>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("ssl", &self.ssl)
            .field("table", &self.table.display())
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Reads the URL and the settings; `env` looks up environment variables.
    pub fn new(
        url: &BackendUrl,
        settings: &Settings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Options, Error> {
        settings.expect_only(KEYS)?;
        let (wire_url, ssl, rootcert) = split_url(url.secret_url())?;
        let mut pg = tokio_postgres::Config::from_str(&wire_url).map_err(|e| {
            let why = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            Error::Config(format!("bad PostgreSQL URL '{url}': {e}{why}"))
        })?;

        if pg.get_hosts().is_empty() {
            match env("PGHOST").filter(|h| !h.is_empty()) {
                Some(h) => pg.host(&h),
                None if Path::new("/var/run/postgresql").is_dir() => {
                    pg.host_path("/var/run/postgresql")
                }
                None => pg.host("localhost"),
            };
        }
        // libpq never uses TLS on a Unix socket, whatever `sslmode` says (the server offers none
        // there): a URL that names only sockets connects without it.
        if pg
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)))
        {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        if pg.get_user().is_none() {
            let user = env("PGUSER")
                .or_else(|| env("USER"))
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "PostgreSQL URL '{url}' names no user (and neither PGUSER nor USER is set)"
                    ))
                })?;
            pg.user(&user);
        }
        let user = pg.get_user().unwrap_or_default().to_owned();
        let mut password_note = None;
        if pg.get_password().is_none() {
            let pw = password(settings.password_file()?, env);
            let pw = match pw {
                Some(pw) => Some(pw),
                None => pgpass_password(&pg, &user, env).unwrap_or_else(|note| {
                    password_note = Some(note);
                    None
                }),
            };
            if let Some(pw) = pw {
                pg.password(pw);
            }
        }
        if pg.get_application_name().is_none() {
            pg.application_name("lockrun");
        }

        let connect_timeout = match settings.positive_duration("connect_timeout")? {
            Some(d) => d,
            None => pg.get_connect_timeout().copied().unwrap_or(DEFAULT_TIMEOUT),
        };

        pg.connect_timeout(connect_timeout);
        let statement_timeout = match (
            settings.positive_duration("statement_timeout")?,
            settings.positive_duration("command_timeout")?,
        ) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(format!(
                    "{}: give only one of 'statement_timeout' and 'command_timeout'",
                    settings.origin_of("command_timeout")
                )))
            }
            (Some(d), None) | (None, Some(d)) => d,
            (None, None) => DEFAULT_TIMEOUT,
        };

        // Named by where the setting is, as other settings' errors are.
        let located = |key: &str, e: Error| match e {
            Error::Config(why) => Error::Config(format!("{}: {why}", settings.origin_of(key))),
            e => e,
        };
        let schema = match settings.string("schema")? {
            Some(s) => Some(identifier("schema", &s).map_err(|e| located("schema", e))?),
            None => None,
        };
        let name = identifier(
            "table",
            &settings
                .string("table")?
                .unwrap_or_else(|| DEFAULT_TABLE.into()),
        )
        .map_err(|e| located("table", e))?;
        let tls = super::tls::connector(ssl, rootcert.as_deref(), env)?;
        let endpoint = endpoint(&pg, &user);
        Ok(Options {
            pg,
            tls,
            ssl,
            table: Table { schema, name },
            connect_timeout,
            statement_timeout,
            listen: settings.boolean("listen")?.unwrap_or(true),
            endpoint,
            user,
            password_note,
        })
    }
}

/// Takes out what tokio-postgres does not understand (libpq's `verify-*` modes, `sslrootcert`)
/// and returns the URL it does understand, the TLS mode and the root certificate setting.
fn split_url(url: &url::Url) -> Result<(String, SslMode, Option<String>), Error> {
    let mut ssl = SslMode::Prefer;
    let mut rootcert = None;
    let mut kept: Vec<(String, String)> = Vec::new();
    for (k, v) in url.query_pairs() {
        match &*k {
            "sslmode" => ssl = SslMode::parse(&v)?,
            "sslrootcert" => rootcert = Some(v.into_owned()),
            // An empty host would be looked up in DNS as "".
            "host" | "hostaddr" if v.is_empty() => {
                return Err(Error::Config(format!(
                    "bad PostgreSQL URL '{}': {k}= is empty",
                    crate::backend::redact_text(url.as_str())
                )))
            }
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    kept.push(("sslmode".into(), ssl.wire().into()));
    let mut wire = url.clone();
    // Percent-encode: tokio-postgres decodes %XX but not form encoding's '+' for a space.
    let enc = |t: &str| {
        url::form_urlencoded::byte_serialize(t.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    let query: Vec<String> = kept
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    wire.set_query(Some(&query.join("&")));
    Ok((wire.to_string(), ssl, rootcert))
}

#[cfg(test)]
mod query_tests {
    #[test]
    fn spaces_in_parameters_survive() {
        let u = url::Url::parse("postgres://u@h/db?application_name=my%20app+x&options=-c%20a%3Db")
            .unwrap();
        let (wire, _, _) = super::split_url(&u).unwrap();
        let cfg: tokio_postgres::Config = wire.parse().unwrap();
        assert_eq!(cfg.get_application_name(), Some("my app x"));
        assert_eq!(cfg.get_options(), Some("-c a=b"));
    }
}

/// The password when the URL has none: `password_file`'s, then `LOCKRUN_POSTGRES_PASSWORD`,
/// then `PGPASSWORD` (the more specific source wins); libpq's password file comes after these.
pub fn password(file: Option<String>, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    file.or_else(|| {
        ["LOCKRUN_POSTGRES_PASSWORD", "PGPASSWORD"]
            .iter()
            .find_map(|k| env(k).filter(|v| !v.is_empty()))
    })
}

/// The password for the first host from libpq's password file (`PGPASSFILE`, `~/.pgpass`).
fn pgpass_password(
    pg: &tokio_postgres::Config,
    user: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let target = super::pgpass::Target {
        host: &host,
        port: pg.get_ports().first().copied().unwrap_or(5432),
        database: pg.get_dbname().unwrap_or(user),
        user,
    };
    super::pgpass::lookup(&target, env)
}

/// `host:port/db` of the first host, for messages (never the password).
fn endpoint(pg: &tokio_postgres::Config, user: &str) -> String {
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) if h.contains(':') => format!("[{h}]"),
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let db = pg.get_dbname().unwrap_or(user);
    format!("{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> Settings {
        Settings::new("test [backend.pg]", toml.parse::<toml::Table>().unwrap())
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn opts(url: &str, toml: &str) -> Result<Options, Error> {
        Options::new(&BackendUrl::parse(url).unwrap(), &settings(toml), &no_env)
    }

    #[test]
    fn identifiers() {
        for ok in ["lockrun_leases", "_x", "Leases2", &"a".repeat(63)] {
            assert_eq!(identifier("table", ok).unwrap(), ok);
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a\"b",
            "a;drop table x",
            "ü",
            "a.b",
            &"a".repeat(64),
        ] {
            let e = identifier("table", bad).unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{bad:?}");
        }
        assert_eq!(quote("t"), "\"t\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn table_names() {
        let t = Table {
            schema: None,
            name: "lockrun_leases".into(),
        };
        assert_eq!(t.sql(), "\"lockrun_leases\"");
        assert_eq!(t.index_sql(), "\"lockrun_leases_expires_at_idx\"");
        assert_eq!(t.channel(), "lockrun_lockrun_leases");
        let public = Table {
            schema: Some("public".into()),
            name: "lockrun_leases".into(),
        };
        assert_eq!(
            public.channel(),
            t.channel(),
            "the default schema spelled out"
        );
        let ops = Table {
            schema: Some("ops".into()),
            name: "lockrun_leases".into(),
        };
        assert_eq!(ops.channel(), "lockrun_ops_lockrun_leases");
        let t = Table {
            schema: Some("ops".into()),
            name: "L".repeat(63),
        };
        assert_eq!(t.sql(), format!("\"ops\".\"{}\"", "L".repeat(63)));
        assert_eq!(t.index_sql().len(), 63 + 2);
        assert!(t.index_sql().ends_with("_expires_at_idx\""));
        assert_eq!(t.channel().len(), 63);
        assert_eq!(t.display(), format!("ops.{}", "L".repeat(63)));
    }

    #[test]
    fn defaults() {
        let o = opts("postgres://alice@db.example:6543/locks", "").unwrap();
        assert_eq!(o.table.sql(), "\"lockrun_leases\"");
        assert_eq!(o.endpoint, "db.example:6543/locks");
        assert_eq!(o.user, "alice");
        assert_eq!(o.connect_timeout, DEFAULT_TIMEOUT);
        assert_eq!(o.statement_timeout, DEFAULT_TIMEOUT);
        assert_eq!(o.ssl, SslMode::Prefer);
        assert!(o.listen);
        assert_eq!(o.pg.get_application_name(), Some("lockrun"));
        let o = opts("postgresql://bob@[::1]/x?sslmode=disable", "").unwrap();
        assert_eq!(o.endpoint, "[::1]:5432/x");
        assert_eq!(o.ssl, SslMode::Disable);
    }

    #[test]
    fn settings_keys() {
        let o = opts(
            "postgres://u@h/db?connect_timeout=9",
            "table = \"leases\"\nschema = \"ops\"\nstatement_timeout = \"2s\"\nlisten = false",
        )
        .unwrap();
        assert_eq!(o.table.sql(), "\"ops\".\"leases\"");
        assert_eq!(o.statement_timeout, Duration::from_secs(2));
        assert_eq!(o.connect_timeout, Duration::from_secs(9));
        assert!(!o.listen);
        let o = opts(
            "postgres://u@h/db?connect_timeout=9",
            "connect_timeout = 1\ncommand_timeout = \"1500ms\"",
        )
        .unwrap();
        assert_eq!(o.connect_timeout, Duration::from_secs(1));
        assert_eq!(o.statement_timeout, Duration::from_millis(1500));

        for (toml, needle) in [
            ("tabel = \"x\"", "unknown key 'tabel'"),
            ("table = \"x; drop\"", "not a plain SQL identifier"),
            ("schema = \"\"", "not a plain SQL identifier"),
            ("table = 3", "must be a string"),
            (
                "statement_timeout = \"2s\"\ncommand_timeout = \"2s\"",
                "only one",
            ),
            ("connect_timeout = 0", "longer than zero"),
            ("connect_timeout = [1]", "must be a duration such as"),
            ("connect_timeout = -1", "negative"),
            ("connect_timeout = 9223372036854775807", "out of range"),
            ("connect_timeout = \"500000000000 years\"", "out of range"),
            ("statement_timeout = \"soon\"", "statement_timeout"),
        ] {
            match opts("postgres://u@h/db", toml) {
                Err(Error::Config(m)) => assert!(m.contains(needle), "{toml}: {m}"),
                other => panic!("{toml}: {other:?}"),
            }
        }
        // libpq's connect_timeout=0 (wait forever) leaves lockrun's own timeout in place.
        let o = opts("postgres://u@h/db?connect_timeout=0", "").unwrap();
        assert_eq!(o.connect_timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn url_handling() {
        for mode in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            let o = opts(&format!("postgres://u@h/db?sslmode={mode}"), "").unwrap();
            assert_eq!(o.ssl, SslMode::parse(mode).unwrap());
        }
        match opts("postgres://u@h/db?sslmode=sometimes", "") {
            Err(Error::Config(m)) => assert!(m.contains("sslmode 'sometimes'"), "{m}"),
            other => panic!("{other:?}"),
        }
        match opts("postgres://u:hunter2@h/db?bogus=1", "") {
            Err(Error::Config(m)) => {
                assert!(m.contains("bogus"), "{m}");
                assert!(!m.contains("hunter2"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        match opts(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca",
            "",
        ) {
            Err(Error::Config(m)) => assert!(m.contains("/nonexistent/ca"), "{m}"),
            other => panic!("{other:?}"),
        }
        let (wire, ssl, root) = split_url(
            &url::Url::parse("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/ca&options=x")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(ssl, SslMode::VerifyCa);
        assert_eq!(root.as_deref(), Some("/ca"));
        assert!(
            wire.contains("sslmode=require") && wire.contains("options=x"),
            "{wire}"
        );
        assert!(!wire.contains("sslrootcert"), "{wire}");
    }

    #[test]
    fn user_and_host_defaults() {
        let env = |k: &str| match k {
            "PGUSER" => Some("carol".to_owned()),
            "PGHOST" => Some("pg.internal".to_owned()),
            _ => None,
        };
        let url = BackendUrl::parse("postgres:///db").unwrap();
        let o = Options::new(&url, &settings(""), &env).unwrap();
        assert_eq!(o.user, "carol");
        assert_eq!(o.endpoint, "pg.internal:5432/db");
    }

    #[test]
    fn password_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let env = |k: &str| match k {
            "PGPASSWORD" => Some("from-pg".to_owned()),
            "LOCKRUN_POSTGRES_PASSWORD" => Some("from-lockrun".to_owned()),
            _ => None,
        };
        let pg_only = |k: &str| (k == "PGPASSWORD").then(|| "from-pg".to_owned());
        let from_file = Some("from-file".to_owned());
        assert_eq!(password(from_file, &env).as_deref(), Some("from-file"));
        assert_eq!(password(None, &env).as_deref(), Some("from-lockrun"));
        assert_eq!(password(None, &pg_only).as_deref(), Some("from-pg"));
        assert_eq!(password(None, &no_env), None);
        let with = |text: &str| {
            std::fs::write(&file, text).unwrap();
            let toml = format!("password_file = {:?}", file.display().to_string());
            opts("postgres://u@h/db", &toml)
        };
        assert_eq!(
            with("crlf\r\n").unwrap().pg.get_password(),
            Some(&b"crlf"[..])
        );
        assert!(matches!(with(""), Err(Error::Config(e)) if e.contains("is empty")));
        let missing = dir.path().join("missing");

        // A file that cannot be read is named with the setting's place, as for the other
        // backends.
        let toml = format!("password_file = {:?}", missing.display().to_string());
        match opts("postgres://u@h/db", &toml) {
            Err(Error::Config(e)) => assert!(
                e.starts_with("test [backend.pg]: cannot read password_file"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }

        // The URL's password wins; the file's is used otherwise; Debug shows neither.
        std::fs::write(&file, "s3cret-file").unwrap();
        let toml = format!("password_file = {:?}", file.display().to_string());
        let o = opts("postgres://u@h/db", &toml).unwrap();
        assert_eq!(o.pg.get_password(), Some(&b"s3cret-file"[..]));
        let o = opts("postgres://u:s3cret-url@h/db", &toml).unwrap();
        assert_eq!(o.pg.get_password(), Some(&b"s3cret-url"[..]));
        let dbg = format!("{o:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }
}
