//! kube errors to [`Error`]: whether retrying can help, in one line, with no debug dumps.
//!
//! | what happened | error |
//! |---|---|
//! | connection refused (nothing was sent) | `Unreached` |
//! | DNS failure, timeout, HTTP 429 or 5xx | `Unavailable` |
//! | 401 (credentials rejected), 403 (RBAC forbids it) | `Config` |
//! | 404 on create: the namespace does not exist | `Config` |
//! | 404 otherwise on a write: the Lease API is not served there | `Config` |
//! | 422 Invalid: the server refused the object | `Config` |
//! | TLS or authentication-plugin failures | `Config` |
//! | anything else (an unexpected 409 or 400, a response that cannot be read) | `Other` |
//!
//! A 404 on read is "no Lease", and 409 Conflict or AlreadyExists is handled by the operations
//! (someone else wrote: read again and decide); neither reaches this module.

use kube::error::ErrorResponse;

use super::options::one_line;
use crate::backend::Error;

/// Where requests go, for messages.
#[derive(Debug, Clone)]
pub(super) struct Place {
    /// The API server URL, without any userinfo.
    pub server: String,
    pub namespace: String,
}

/// The API server URL of `config` for messages: scheme, host and port only.
pub(super) fn server(config: &kube::Config) -> String {
    let uri = &config.cluster_url;
    let host = uri.host().unwrap_or("(no host)");
    let scheme = uri.scheme_str().unwrap_or("https");
    match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// Maps a failed `op` (e.g. "acquiring 'x'") to an [`Error`].
pub(super) fn map(place: &Place, op: &str, err: &kube::Error) -> Error {
    let at = &place.server;
    match err {
        kube::Error::Api(resp) => api(place, op, resp),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            let e = Error::Unavailable(format!(
                "{op}: cannot reach the Kubernetes API at {at}: {}",
                innermost(err)
            ));
            // Refused: the connection was never made, so the request was not sent.
            if refused(err) {
                e.unreached()
            } else {
                e
            }
        }
        kube::Error::Auth(_) => Error::Config(format!(
            "{op}: cannot authenticate to the Kubernetes API at {at}: {}",
            one_line(err)
        )),
        kube::Error::RustlsTls(_) | kube::Error::TlsRequired => Error::Config(format!(
            "{op}: TLS setup for the Kubernetes API at {at} failed: {}",
            one_line(err)
        )),
        kube::Error::SerdeError(_) => Error::Other(format!(
            "{op}: the Kubernetes API at {at} sent a response that is not a Lease: {}",
            one_line(err)
        )),
        _ => Error::Other(format!("{op}: {}", one_line(err))),
    }
}

fn api(place: &Place, op: &str, resp: &ErrorResponse) -> Error {
    let (at, ns) = (&place.server, &place.namespace);
    let msg = one_line_text(&resp.message);
    match resp.code {
        401 => Error::Config(format!(
            "{op}: the Kubernetes API at {at} rejected the credentials (401 Unauthorized); check \
             the kubeconfig user or the service account token"
        )),
        403 => Error::Config(format!(
            "{op}: forbidden by the Kubernetes API at {at}: {msg} (lockrun needs get, create and \
             update on leases.coordination.k8s.io in namespace '{ns}')"
        )),
        404 if resp.message.starts_with("namespaces \"") => {
            Error::Config(format!("{op}: namespace '{ns}' does not exist at {at}"))
        }
        404 => Error::Config(format!(
            "{op}: {msg} (does the Kubernetes API at {at} serve coordination.k8s.io/v1 Leases?)"
        )),
        422 => Error::Config(format!(
            "{op}: the Kubernetes API at {at} refused the Lease as invalid: {msg}"
        )),
        429 | 500.. => Error::Unavailable(format!(
            "{op}: the Kubernetes API at {at} is overloaded or failing ({} {}): {msg}",
            resp.code, resp.reason
        )),
        code => Error::Other(format!(
            "{op}: the Kubernetes API at {at} answered {code} {}: {msg}",
            resp.reason
        )),
    }
}

/// The error for a request that did not finish within the command timeout.
pub(super) fn timeout(place: &Place, op: &str) -> Error {
    Error::Unavailable(format!(
        "{op}: the Kubernetes API at {} did not answer in time",
        place.server
    ))
}

/// The deepest source's message: "Connection refused (os error 111)" rather than a chain of
/// "client error (Connect)" wrappers.
/// Whether a connection was refused somewhere in `err`'s chain.
fn refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn innermost(err: &dyn std::error::Error) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    one_line_text(&last.to_string())
}

fn one_line_text(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::lease::escape(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place() -> Place {
        Place {
            server: "https://k8s.example:6443".into(),
            namespace: "team-a".into(),
        }
    }

    fn status(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(ErrorResponse {
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            code,
        })
    }

    #[test]
    fn api_statuses() {
        let cases = [
            (
                401,
                "Unauthorized",
                "Unauthorized",
                "rejected the credentials",
            ),
            (
                403,
                "Forbidden",
                "leases is forbidden",
                "lockrun needs get, create",
            ),
            (
                404,
                "NotFound",
                "namespaces \"team-a\" not found",
                "namespace 'team-a' does not exist",
            ),
            (
                404,
                "NotFound",
                "the server could not find the requested resource",
                "serve",
            ),
            (
                422,
                "Invalid",
                "metadata.name: Invalid value",
                "refused the Lease as invalid",
            ),
        ];
        for (code, reason, message, needle) in cases {
            match map(&place(), "acquiring 'x'", &status(code, reason, message)) {
                Error::Config(m) => {
                    assert!(m.contains(needle), "{code}: {m}");
                    assert!(m.starts_with("acquiring 'x': "), "{m}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        for code in [429, 500, 503] {
            assert!(matches!(
                map(&place(), "op", &status(code, "x", "busy")),
                Error::Unavailable(_)
            ));
        }
        assert!(matches!(
            map(&place(), "op", &status(409, "Conflict", "modified")),
            Error::Other(_)
        ));
    }

    #[test]
    fn messages_are_one_escaped_line() {
        let e = map(&place(), "op", &status(400, "BadRequest", "a\nb\x1b[31m"));
        let text = e.to_string();
        assert!(!text.contains('\n') && !text.contains('\x1b'), "{text}");
    }
}
