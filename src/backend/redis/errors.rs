//! Redis client errors → [`Error`]: unreachable (retryable), misconfigured, or other.

use std::time::Duration;

use ::redis::{ErrorKind, RedisError};

use crate::backend::tls_text::{self, handshake_failed};
use crate::backend::Error;

/// What a failed call means for the connection it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Conn {
    /// The connection may still be used.
    Keep,
    /// The connection is broken or suspect: open a new one for the next call.
    Drop,
}

/// Maps a client error on a connection that was working; `url` is the redacted URL for the
/// message.
pub(super) fn map(e: &RedisError, url: &str) -> (Error, Conn) {
    map_as(e, url, false)
}

/// Maps an error in opening a connection, where a server that hangs up may be one that speaks
/// only TLS.
pub(super) fn map_connect(e: &RedisError, url: &str) -> (Error, Conn) {
    map_as(e, url, true)
}

fn map_as(e: &RedisError, url: &str, connecting: bool) -> (Error, Conn) {
    let text = e.to_string();
    let code = e.code().unwrap_or_default();
    if text.starts_with("TLS error") || text.starts_with("TLS Error") || handshake_failed(&text) {
        let why = match e.detail() {
            Some(d) => d,
            None if handshake_failed(&text) => &text,
            None => "handshake failed",
        };
        let hint = tls_text::hint(
            why,
            "set ca_file to the CA that signed it",
            ", or add #insecure to the URL to skip verification",
            "use redis:// for a plain server",
        );
        return (
            Error::Config(format!(
                "TLS handshake with redis at {url} failed: {why} ({hint})"
            )),
            Conn::Drop,
        );
    }
    if e.is_connection_refusal() {
        return (
            Error::Unavailable(format!("cannot connect to redis at {url}: {text}")),
            Conn::Drop,
        );
    }
    if e.is_timeout() {
        return (timeout(url, None), Conn::Drop);
    }
    if e.is_io_error() {
        // A TLS-only server hangs up on a plain client; the client reports either.
        let dropped = e.is_connection_dropped() || text.contains("unexpectedly terminated");
        let hint = if connecting && url.starts_with("redis://") && dropped {
            " (if the server requires TLS, use rediss://)"
        } else {
            ""
        };
        return (
            Error::Unavailable(format!("connection to redis at {url} failed: {text}{hint}")),
            Conn::Drop,
        );
    }
    // A SELECT refused for want of a password says only "Authentication required."
    if code == "NOAUTH" || text.contains("NOAUTH") || text.contains("Authentication required") {
        return (
            Error::Config(format!(
                "redis authentication failed for {url}: the server requires a password \
                 (give it in the URL, LOCKRUN_REDIS_PASSWORD or password_file)"
            )),
            Conn::Drop,
        );
    }
    if e.kind() == ErrorKind::AuthenticationFailed || code == "WRONGPASS" {
        return (
            Error::Config(format!(
                "redis authentication failed for {url}: the server rejected the username or password"
            )),
            Conn::Drop,
        );
    }
    if code == "NOPERM" {
        let why = e.detail().unwrap_or("permission denied");
        return (
            Error::Config(format!(
                "redis user is not allowed to use lockrun's keys or commands on {url}: {why}"
            )),
            Conn::Keep,
        );
    }
    if text.contains("refused to switch database") {
        let why = e.detail().unwrap_or("");
        return (
            Error::Config(format!(
                "redis at {url} has no such database: {why} (see 'databases' in redis.conf)"
            )),
            Conn::Drop,
        );
    }
    match e.kind() {
        ErrorKind::ReadOnly => (
            Error::Config(format!(
                "redis at {url} is a read-only replica; point lockrun at the primary"
            )),
            Conn::Keep,
        ),
        ErrorKind::Moved | ErrorKind::Ask | ErrorKind::CrossSlot => (
            Error::Config(format!(
                "redis at {url} is a cluster; lockrun needs a single Redis node"
            )),
            Conn::Keep,
        ),
        // Refused by the server, which ran nothing: retrying may help, and the call cannot be
        // applied late.
        ErrorKind::BusyLoadingError
        | ErrorKind::TryAgain
        | ErrorKind::ClusterDown
        | ErrorKind::MasterDown => (
            Error::Unreached(format!("redis at {url} cannot serve now: {text}")),
            Conn::Keep,
        ),
        _ if matches!(code, "BUSY" | "OOM") => (
            Error::Unreached(format!("redis at {url} cannot serve now: {text}")),
            Conn::Keep,
        ),
        _ => (Error::Other(format!("redis at {url}: {text}")), Conn::Keep),
    }
}

/// The error for a call that got no answer in time.
pub(super) fn timeout(url: &str, after: Option<Duration>) -> Error {
    match after {
        Some(d) => Error::Unavailable(format!(
            "redis at {url} did not answer within {}",
            crate::duration::format(d)
        )),
        None => Error::Unavailable(format!("redis at {url} did not answer in time")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "redis://127.0.0.1:6379/0";

    /// A server error as the client parses it from the wire.
    fn server(line: &str) -> RedisError {
        let wire = format!("-{line}\r\n");
        match ::redis::parse_redis_value(wire.as_bytes())
            .unwrap()
            .extract_error()
        {
            Err(e) => e,
            Ok(v) => panic!("not an error: {v:?}"),
        }
    }

    fn io(kind: std::io::ErrorKind) -> RedisError {
        std::io::Error::new(kind, "boom").into()
    }

    #[test]
    fn unreachable_is_retryable() {
        for e in [
            io(std::io::ErrorKind::ConnectionRefused),
            io(std::io::ErrorKind::TimedOut),
            io(std::io::ErrorKind::ConnectionReset),
            io(std::io::ErrorKind::UnexpectedEof),
            server("LOADING Redis is loading the dataset in memory"),
            server("BUSY Redis is busy running a script"),
            server("MASTERDOWN Link with MASTER is down"),
        ] {
            let (err, _) = map(&e, URL);
            assert!(err.is_retryable(), "{e}: {err:?}");
        }
        // A refusal ran nothing: it cannot be applied late.
        for e in [
            server("LOADING Redis is loading the dataset in memory"),
            server("BUSY Redis is busy running a script"),
            server("OOM command not allowed when used memory > 'maxmemory'"),
        ] {
            let (err, _) = map(&e, URL);
            assert!(matches!(err, Error::Unreached(_)), "{e}: {err:?}");
        }
        // A new connection reset: perhaps a server that speaks only TLS.
        let (err, conn) = map_connect(&io(std::io::ErrorKind::ConnectionReset), URL);
        assert_eq!(conn, Conn::Drop);
        assert!(err.is_retryable(), "{err:?}");
        assert!(err.to_string().contains("use rediss://"), "{err}");
    }

    #[test]
    fn credentials_and_setup_are_config() {
        let cases = [
            (
                server("NOAUTH Authentication required."),
                "requires a password",
            ),
            (
                server("WRONGPASS invalid username-password pair"),
                "rejected",
            ),
            (
                RedisError::from((
                    ErrorKind::AuthenticationFailed,
                    "Password authentication failed",
                )),
                "rejected",
            ),
            (
                server("NOPERM this user has no permissions to run the 'evalsha' command"),
                "not allowed",
            ),
            (
                RedisError::from((
                    ErrorKind::ResponseError,
                    "Redis server refused to switch database",
                    "ERR DB index is out of range".to_owned(),
                )),
                "no such database",
            ),
            (
                RedisError::from((
                    ErrorKind::ResponseError,
                    "Redis server refused to switch database",
                    "NOAUTH Authentication required.".to_owned(),
                )),
                "requires a password",
            ),
            (
                RedisError::from((
                    ErrorKind::IoError,
                    "TLS error",
                    "wrong version number".to_owned(),
                )),
                "TLS handshake",
            ),
            (
                server("READONLY You can't write against a read only replica."),
                "read-only replica",
            ),
            (server("MOVED 3999 127.0.0.1:6381"), "cluster"),
        ];
        for (e, needle) in cases {
            let (err, _) = map(&e, URL);
            assert!(matches!(err, Error::Config(_)), "{e}: {err:?}");
            assert!(err.to_string().contains(needle), "{err}");
            assert!(err.to_string().contains(URL), "{err}");
        }
    }

    /// What rustls's handshake errors become, as the redis client hands them over.
    #[test]
    fn tls_failures_are_config() {
        use rustls::{AlertDescription, CertificateError, InvalidMessage, PeerIncompatible};
        let rustls_io = |e: rustls::Error| -> RedisError {
            std::io::Error::new(std::io::ErrorKind::InvalidData, e).into()
        };
        let cases = [
            (
                rustls_io(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )),
                "set ca_file",
            ),
            (
                rustls_io(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName,
                )),
                "not for the host in the URL",
            ),
            (
                rustls_io(rustls::Error::InvalidCertificate(CertificateError::Expired)),
                "set ca_file",
            ),
            (
                rustls_io(rustls::Error::AlertReceived(
                    AlertDescription::HandshakeFailure,
                )),
                "use redis://",
            ),
            (
                rustls_io(rustls::Error::InvalidMessage(
                    InvalidMessage::InvalidContentType,
                )),
                "use redis://",
            ),
            (
                rustls_io(rustls::Error::PeerIncompatible(
                    PeerIncompatible::Tls12NotOffered,
                )),
                "use redis://",
            ),
            (
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof").into(),
                "use redis://",
            ),
        ];
        for (e, needle) in cases {
            let (err, conn) = map(&e, URL);
            assert!(matches!(err, Error::Config(_)), "{e}: {err:?}");
            assert_eq!(conn, Conn::Drop);
            assert!(err.to_string().contains("TLS handshake"), "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn script_errors_are_other() {
        let (err, conn) = map(&server("ERR Error running script"), URL);
        assert!(matches!(err, Error::Other(_)), "{err:?}");
        assert_eq!(conn, Conn::Keep);
    }

    #[test]
    fn timeouts_say_how_long() {
        let e = timeout(URL, Some(Duration::from_secs(5)));
        assert!(e.is_retryable());
        assert!(e.to_string().contains("did not answer within 5s"), "{e}");
    }

    /// A connection that worked and then broke (a restarted server) is not a TLS mismatch; a
    /// server that hangs up on a new connection may be one.
    #[test]
    fn the_tls_hint_is_for_new_connections_only() {
        let broken = || {
            RedisError::from(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "broken pipe",
            ))
        };
        let url = "redis://127.0.0.1:6379/0";
        let (e, conn) = map(&broken(), url);
        assert_eq!(conn, Conn::Drop);
        assert!(
            matches!(&e, Error::Unavailable(m) if !m.contains("TLS")),
            "{e}"
        );
        let (e, _) = map_connect(&broken(), url);
        assert!(
            matches!(&e, Error::Unavailable(m) if m.contains("use rediss://")),
            "{e}"
        );
    }
}
