//! Mapping etcd client errors to backend errors that say whether retrying can help.
//!
//! - cannot connect: [`Error::Unreached`] (retryable; nothing was sent);
//! - a request naming an etcd lease that expired or was revoked: [`Error::Unreached`]
//!   (retryable with a new lease; etcd refused it unapplied);
//! - timed out, no leader, overloaded: [`Error::Unavailable`] (retryable);
//! - authentication failed, permission denied, auth not enabled, TLS failures, bad endpoint
//!   URLs, a TTL etcd refuses: [`Error::Config`];
//! - anything else: [`Error::Other`].

use std::error::Error as _;

use tonic::{Code, Status};

use crate::backend::Error;

/// Maps `e`, from the operation `what` against the cluster `name`.
pub(super) fn map(name: &str, what: &str, e: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    let prefix = format!("{name}: {what}");
    match e {
        // A connection that was refused or could not be made sent nothing.
        E::GRpcStatus(status) if connect_failed(&status) => {
            from_status(&prefix, &status).unreached()
        }
        E::GRpcStatus(status) => from_status(&prefix, &status),
        // Raised while building endpoints (e.g. unusable TLS files), before any connection.
        E::TransportError(t) => {
            Error::Config(format!("{prefix}: {}", chain(t.to_string(), t.source())))
        }
        E::InvalidArgs(m) => Error::Config(format!("{prefix}: {m}")),
        E::InvalidUri(u) => Error::Config(format!("{prefix}: bad endpoint: {u}")),
        E::InvalidHeaderValue(_) => {
            Error::Config(format!("{prefix}: etcd returned an unusable auth token"))
        }
        E::IoError(io) => Error::Unavailable(format!("{prefix}: {io}")),
        E::LeaseKeepAliveError(m) | E::WatchError(m) => {
            Error::Unavailable(format!("{prefix}: {m}"))
        }
        other => Error::Other(format!("{prefix}: {other}")),
    }
}

/// Maps an error of the first call to the cluster. A server that accepts the connection and
/// closes it at once does not speak the protocol we chose: a TLS mismatch, or a client
/// certificate it requires or refuses. That is a configuration problem, not an outage.
pub(super) fn map_connect(name: &str, tls: Option<bool>, e: etcd_client::Error) -> Error {
    let hint = match tls {
        None => "does the server expect TLS (an etcd+https:// URL)?",
        Some(false) => "does the server require a TLS client certificate (cert_file, key_file)?",
        Some(true) => "did the server refuse the TLS client certificate?",
    };
    match map(name, "connecting", e) {
        Error::Unavailable(m) | Error::Unreached(m) if closed_at_once(&m) => {
            Error::Config(format!("{m} ({hint})"))
        }
        // The server's TLS alert, when it arrives before the connection closes.
        Error::Config(m) if tls.is_some() && m.to_ascii_lowercase().contains("alert") => {
            Error::Config(format!("{m} ({hint})"))
        }
        other => other,
    }
}

fn closed_at_once(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["connection closed", "broken pipe", "connection reset"]
        .iter()
        .any(|s| m.contains(s))
}

fn from_status(prefix: &str, status: &Status) -> Error {
    let detail = status_chain(status);
    let lower = detail.to_ascii_lowercase();
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => Error::Config(format!(
            "{prefix}: {detail} (check the etcd user and its roles)"
        )),
        Code::InvalidArgument
            if lower.contains("authentication failed") || lower.contains("user name is empty") =>
        {
            Error::Config(format!("{prefix}: {detail}"))
        }
        Code::FailedPrecondition if lower.contains("auth") => {
            Error::Config(format!("{prefix}: {detail}"))
        }
        Code::OutOfRange => Error::Config(format!("{prefix}: {detail}")),
        // A request naming an etcd lease that has expired (a waiter's lease granted ahead,
        // when the server or this process was paused for longer than its TTL) is refused
        // whole, unapplied: retrying with a new lease can succeed.
        Code::NotFound if lower.contains("lease not found") => Error::Unreached(format!(
            "{prefix}: {detail} (the etcd lease had expired or been revoked; the request was \
             refused unapplied)"
        )),
        // Something that speaks HTTP but not etcd's gRPC API answered.
        Code::Unimplemented => {
            Error::Config(format!("{prefix}: {detail} (is this an etcd v3 endpoint?)"))
        }
        Code::Unavailable | Code::Unknown if is_tls(&lower) => {
            Error::Config(format!("{prefix}: TLS: {detail}"))
        }
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled
        | Code::Unknown => Error::Unavailable(format!("{prefix}: {detail}")),
        _ => Error::Other(format!("{prefix}: {detail}")),
    }
}

/// Whether `e` says the auth token lapsed (etcd's simple tokens expire when idle); logging in
/// again and retrying is then safe, since etcd rejected the request before applying it.
pub(super) fn is_invalid_token(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == Code::Unauthenticated && s.message().contains("invalid auth token"))
}

/// Whether `e` says the connection could not even be made, so the request was never sent.
pub(super) fn is_connect_error(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if connect_failed(s))
}

/// Whether `s` says the connection could not even be made.
fn connect_failed(s: &Status) -> bool {
    let detail = status_chain(s).to_ascii_lowercase();
    s.code() == Code::Unavailable
        && !is_tls(&detail)
        && [
            "connect error",
            "error trying to connect",
            "connection refused",
        ]
        .iter()
        .any(|m| detail.contains(m))
}

/// Whether `e` says the etcd lease does not exist (expired or revoked).
pub(super) fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("lease not found"),
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == Code::NotFound && s.message().contains("lease not found")
        }
        _ => false,
    }
}

fn is_tls(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("tls") || t.contains("certificate") || t.contains("handshake")
}

/// A status's message, followed by its sources'.
fn status_chain(status: &Status) -> String {
    chain(status.message().to_owned(), status.source())
}

/// `text` followed by the messages of `source` and its sources, without repeats.
fn chain(mut text: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(s) = source {
        let part = s.to_string();
        // "transport error" is the kind of the next error, not news.
        if !part.is_empty() && part != "transport error" && !text.contains(&part) {
            if text.is_empty() {
                text = part;
            } else {
                text = format!("{text}: {part}");
            }
        }
        source = s.source();
    }
    if text.is_empty() {
        "no details".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, msg: &str) -> Error {
        map(
            "etcd://127.0.0.1:2379",
            "acquire",
            etcd_client::Error::GRpcStatus(Status::new(code, msg)),
        )
    }

    #[test]
    fn classification() {
        // Nothing was sent.
        assert!(matches!(
            status(Code::Unavailable, "tcp connect error"),
            Error::Unreached(_)
        ));
        assert!(matches!(
            status(Code::Unavailable, "etcdserver: request timed out"),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            status(Code::DeadlineExceeded, "context deadline exceeded"),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            status(
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password"
            ),
            Error::Config(_)
        ));
        assert!(matches!(
            status(Code::InvalidArgument, "etcdserver: user name is empty"),
            Error::Config(_)
        ));
        assert!(matches!(
            status(Code::PermissionDenied, "etcdserver: permission denied"),
            Error::Config(_)
        ));
        assert!(matches!(
            status(Code::Unavailable, "tls handshake eof"),
            Error::Config(_)
        ));
        assert!(matches!(
            status(Code::OutOfRange, "etcdserver: too large lease TTL"),
            Error::Config(_)
        ));
        assert!(matches!(
            status(Code::InvalidArgument, "etcdserver: request is too large"),
            Error::Other(_)
        ));
        assert!(matches!(
            status(Code::Unimplemented, "grpc-status header missing"),
            Error::Config(_)
        ));
        let e = status(Code::Unavailable, "tcp connect error");
        assert_eq!(
            e.to_string(),
            "etcd://127.0.0.1:2379: acquire: tcp connect error"
        );
    }

    #[test]
    fn closed_connections_at_connect_are_configuration() {
        let closed = || {
            etcd_client::Error::GRpcStatus(Status::new(
                Code::Unavailable,
                "operation was canceled: connection closed",
            ))
        };
        for tls in [None, Some(false), Some(true)] {
            assert!(matches!(
                map_connect("etcd://h", tls, closed()),
                Error::Config(_)
            ));
        }
        let refused = etcd_client::Error::GRpcStatus(Status::new(Code::Unavailable, "refused"));
        assert!(matches!(
            map_connect("etcd://h", None, refused),
            Error::Unavailable(_)
        ));
    }

    #[test]
    fn recognizes_lapsed_tokens_and_missing_leases() {
        let token = etcd_client::Error::GRpcStatus(Status::new(
            Code::Unauthenticated,
            "etcdserver: invalid auth token",
        ));
        assert!(is_invalid_token(&token));
        assert!(!is_invalid_token(&etcd_client::Error::GRpcStatus(
            Status::new(Code::PermissionDenied, "etcdserver: permission denied")
        )));
        assert!(is_lease_not_found(
            &etcd_client::Error::LeaseKeepAliveError("lease not found".into())
        ));
        let refused = Status::new(Code::Unavailable, "tcp connect error");
        assert!(is_connect_error(&etcd_client::Error::GRpcStatus(refused)));
        let timeout = Status::new(Code::Unavailable, "etcdserver: request timed out");
        assert!(!is_connect_error(&etcd_client::Error::GRpcStatus(timeout)));
        assert!(is_lease_not_found(&etcd_client::Error::GRpcStatus(
            Status::new(Code::NotFound, "etcdserver: requested lease not found")
        )));
        // A request refused for its expired lease was not applied: retryable, nothing sent.
        let expired = etcd_client::Error::GRpcStatus(Status::new(
            Code::NotFound,
            "etcdserver: requested lease not found",
        ));
        assert!(matches!(
            map("etcd://h", "acquiring", expired),
            Error::Unreached(m) if m.contains("refused unapplied")
        ));
    }
}
