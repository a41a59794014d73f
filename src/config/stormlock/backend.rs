//! stormlock's `[backend.TYPE]` sections as lockrun backend URLs and settings (the mapping is
//! listed in the parent module's docs).

use std::collections::HashSet;

use super::{fail, Fail, Out, Section};
use crate::backend::BackendUrl;

/// The keys of one `[backend.TYPE]` section (or none, when it is absent).
pub(super) struct Keys<'a> {
    pub kind: &'a str,
    pub section: Option<&'a Section>,
    /// Where to point when a key is missing: the section header or the `backend =` line.
    pub at: usize,
    /// Keys that `%(key)s` refers to, which need not be stormlock's.
    pub helpers: &'a HashSet<String>,
}

impl Keys<'_> {
    fn header(&self) -> String {
        format!("[backend.{}]", self.kind)
    }

    fn fail<T>(&self, at: usize, key: &str, why: impl AsRef<str>) -> Result<T, Fail> {
        fail(
            at,
            format!("key '{key}' in {}: {}", self.header(), why.as_ref()),
        )
    }

    /// Fails on a key of the section itself (not inherited) that stormlock does not know.
    fn expect_only(&self, known: &[&str]) -> Result<(), Fail> {
        let Some(s) = self.section else {
            return Ok(());
        };
        match s.entries.iter().find(|e| {
            !e.inherited && !known.contains(&e.key.as_str()) && !self.helpers.contains(&e.key)
        }) {
            Some(e) => fail(
                e.at,
                format!(
                    "unknown key '{}' in {} (stormlock's keys: {})",
                    e.key,
                    self.header(),
                    known.join(", ")
                ),
            ),
            None => Ok(()),
        }
    }

    /// The interpolated value of `key` and where it is; an empty value is an error.
    fn get(&self, key: &str) -> Result<Option<(String, usize)>, Fail> {
        match self.get_empty(key)? {
            Some((v, at)) if v.is_empty() => self.fail(at, key, "is empty"),
            other => Ok(other),
        }
    }

    /// Like [`Keys::get`], but an empty value is a value.
    fn get_empty(&self, key: &str) -> Result<Option<(String, usize)>, Fail> {
        let Some((s, e)) = self.section.and_then(|s| s.get(key).map(|e| (s, e))) else {
            return Ok(None);
        };
        Ok(Some((s.value(e)?, e.at)))
    }

    fn or(&self, key: &str, default: &str) -> Result<(String, usize), Fail> {
        Ok(self
            .get(key)?
            .unwrap_or_else(|| (default.to_owned(), self.at)))
    }
}

/// A `[backend.TYPE]` section as a lockrun `[backend.TYPE]` table: `url` plus settings.
pub(super) fn convert(keys: &Keys) -> Result<Out, Fail> {
    let mut out = Out::default();
    let (url, url_key, url_at) = match keys.kind {
        "redis" => redis(keys)?,
        "etcd" => etcd(keys, &mut out)?,
        "dynamodb" => dynamodb(keys, &mut out)?,
        _ => postgresql(keys, &mut out)?,
    };
    if let Err(e) = BackendUrl::parse(&url) {
        return keys.fail(url_at, url_key, e.to_string());
    }
    out.set("url", url_at, url);
    Ok(out)
}

/// The URL, the INI key it came from, and where.
type Url = (String, &'static str, usize);

fn redis(keys: &Keys) -> Result<Url, Fail> {
    keys.expect_only(&["url"])?;
    let (url, at) = keys.or("url", "redis://localhost:6379")?;
    // redis-py's unix:///path?db=N is lockrun's redis+unix:///path?db=N.
    let url = match url.strip_prefix("unix://") {
        Some(rest) => format!("redis+unix://{rest}"),
        None => url,
    };
    if !["redis://", "rediss://", "redis+unix://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        return keys.fail(at, "url", "must start with redis://, rediss:// or unix://");
    }
    Ok((url, "url", at))
}

fn etcd(keys: &Keys, out: &mut Out) -> Result<Url, Fail> {
    keys.expect_only(&[
        "prefix",
        "host",
        "port",
        "ca_cert",
        "cert_key",
        "cert_cert",
        "timeout",
        "user",
        "password",
    ])?;
    let (host, host_at) = keys.or("host", "localhost")?;
    let (port, port_at) = keys.or("port", "2379")?;
    let Ok(port) = port.trim().parse::<u16>() else {
        return keys.fail(port_at, "port", format!("'{port}' is not a port number"));
    };
    let ca = keys.get("ca_cert")?;
    if ca.is_none() {
        for key in ["cert_cert", "cert_key", "user", "password"] {
            if let Some((_, at)) = keys.get(key)? {
                return keys.fail(
                    at,
                    key,
                    "needs TLS, which stormlock and lockrun use only when ca_cert is set",
                );
            }
        }
    }
    let mut url = if ca.is_some() {
        "etcd+https://"
    } else {
        "etcd://"
    }
    .to_owned();
    if let Some((pw, _)) = keys.get("password")? {
        url.push_str(&format!(":{}@", encode(&pw)));
    }
    url.push_str(&authority_host(&host).ok_or_else(|| Fail {
        at: host_at,
        message: format!(
            "key 'host' in {}: '{host}' is not a host name or address",
            keys.header()
        ),
    })?);
    url.push_str(&format!(":{port}"));

    // An empty prefix is stormlock's way to say none.
    let (prefix, at) = keys.get_empty("prefix")?.unwrap_or(("/".into(), keys.at));
    out.set("prefix", at, prefix);
    for (from, to) in [
        ("ca_cert", "ca_file"),
        ("cert_cert", "cert_file"),
        ("cert_key", "key_file"),
        ("user", "username"),
    ] {
        if let Some((v, at)) = keys.get(from)? {
            out.set(to, at, v);
        }
    }
    if let Some((t, at)) = keys.get("timeout")? {
        match t.trim().parse::<i64>() {
            Ok(secs) if secs > 0 => out.set("command_timeout", at, secs),
            _ => return keys.fail(at, "timeout", format!("'{t}' is not a number of seconds")),
        }
    }
    Ok((url, "host", host_at))
}

fn dynamodb(keys: &Keys, out: &mut Out) -> Result<Url, Fail> {
    keys.expect_only(&[
        "table",
        "endpoint",
        "region",
        "profile",
        "access_key_id",
        "secret_access_key",
    ])?;
    for key in ["access_key_id", "secret_access_key"] {
        if let Some((_, at)) = keys.get(key)? {
            return keys.fail(
                at,
                key,
                "lockrun takes AWS credentials only from the standard places: put the keys in \
                 ~/.aws/credentials under a profile and set 'profile', or use \
                 AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an instance role",
            );
        }
    }
    // stormlock's own table has another item layout (lockrun would report its items as
    // corrupt), so lockrun keeps its own table; `lockrun init` creates it. The key is accepted
    // so that a stormlock file reads unchanged.
    let _ = keys.get("table")?;
    let (table, at) = ("lockrun".to_owned(), keys.at);
    let mut query = Vec::new();
    if let Some((region, _)) = keys.get("region")? {
        query.push(format!("region={}", encode(&region)));
    }
    if let Some((endpoint, at)) = keys.get("endpoint")? {
        if url::Url::parse(&endpoint).is_err() {
            let shown = crate::backend::redact_text(&endpoint);
            return keys.fail(at, "endpoint", format!("'{shown}' is not a URL"));
        }
        query.push(format!("endpoint={}", encode(&endpoint)));
    }
    if let Some((profile, at)) = keys.get("profile")? {
        out.set("profile", at, profile);
    }
    let mut url = format!("dynamodb://{table}");
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    Ok((url, "table", at))
}

fn postgresql(keys: &Keys, out: &mut Out) -> Result<Url, Fail> {
    keys.expect_only(&["connection", "table"])?;
    let Some((conn, at)) = keys.get("connection")? else {
        return fail(
            keys.at,
            format!(
                "{} has no 'connection' key (stormlock requires one: a postgresql:// URL or a \
                 libpq string such as 'host=db dbname=locks user=me')",
                keys.header()
            ),
        );
    };
    let url = if conn.starts_with("postgresql://") || conn.starts_with("postgres://") {
        conn
    } else {
        conninfo_url(&conn).or_else(|why| keys.fail(at, "connection", why))?
    };
    // As for DynamoDB: lockrun keeps its own table (lockrun_leases), not stormlock's.
    let _ = keys.get("table")?;
    let _ = out;
    Ok((url, "connection", at))
}

/// A libpq `key=value ...` string as a `postgres://` URL, every part percent-encoded.
pub(super) fn conninfo_url(text: &str) -> Result<String, String> {
    let mut pairs = conninfo(text)?;
    if pairs.is_empty() {
        return Err("the connection string is empty".into());
    }
    let mut take = |key: &str| {
        let i = pairs.iter().rposition(|(k, _)| k == key)?;
        let (_, v) = pairs.remove(i);
        pairs.retain(|(k, _)| k != key); // libpq: the last one wins
        Some(v)
    };
    let (host, port) = (take("host"), take("port"));
    if host.iter().chain(&port).any(|v| v.contains(',')) {
        return Err(
            "lists of hosts or ports are not supported: lockrun's PostgreSQL URL names \
                    one server"
                .into(),
        );
    }
    let (user, password, dbname) = (take("user"), take("password"), take("dbname"));
    let mut url = String::from("postgres://");
    let mut query: Vec<(String, String)> = Vec::new();
    let authority = host.as_deref().and_then(authority_host);
    match authority {
        Some(h) => {
            if let Some(u) = &user {
                url.push_str(&encode(u));
            }
            if let Some(p) = &password {
                url.push(':');
                url.push_str(&encode(p));
            }
            if user.is_some() || password.is_some() {
                url.push('@');
            }
            url.push_str(&h);
            match port {
                Some(p) if p.parse::<u16>().is_ok() => url.push_str(&format!(":{p}")),
                Some(p) => query.push(("port".into(), p)),
                None => {}
            }
        }
        None => {
            // No host, or a socket directory: both go in as parameters, as libpq allows.
            for (k, v) in [("host", host), ("port", port), ("user", user)] {
                if let Some(v) = v {
                    query.push((k.into(), v));
                }
            }
            if let Some(p) = password {
                query.push(("password".into(), p));
            }
        }
    }
    if let Some(db) = dbname {
        url.push('/');
        url.push_str(&encode(&db));
    }
    query.extend(pairs);
    if !query.is_empty() {
        url.push('?');
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        url.push_str(&q.join("&"));
    }
    Ok(url)
}

/// libpq's conninfo grammar: `key = value` pairs separated by whitespace; a value is
/// single-quoted or runs to the next whitespace, and `\` escapes the next character.
fn conninfo(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    let skip = |chars: &mut std::iter::Peekable<std::str::Chars>| {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
    };
    loop {
        skip(&mut chars);
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        skip(&mut chars);
        if chars.next() != Some('=') {
            // Not echoed: after a stray space, the word may be part of a password.
            return Err(
                "a word without '=' in the libpq connection string (quote values that \
                        hold spaces: password='a b')"
                    .into(),
            );
        }
        skip(&mut chars);
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(format!(
                            "unterminated quoted value of '{key}' in the libpq connection string"
                        ))
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// A host for a URL authority: a plain name or IPv4 address, or an IPv6 address in brackets.
/// `None` for anything else (a socket directory).
fn authority_host(host: &str) -> Option<String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some(format!("[{bare}]"));
    }
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    plain.then(|| host.to_owned())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
