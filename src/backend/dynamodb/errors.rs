//! SDK errors to [`Error`]: whether retrying can help, in one line, with no debug dumps.
//!
//! | what happened | error |
//! |---|---|
//! | connection refused, DNS failure (e.g. an unknown region's endpoint), timeout | `Unavailable` |
//! | a failed TLS handshake (an untrusted certificate, a plain server); never retried | `Config` |
//! | throttling, internal server error, HTTP 429 or 5xx (after the SDK's own retries) | `Unavailable` |
//! | `ResourceNotFoundException` (no table, or the table is in another region) | `Config` |
//! | rejected or missing credentials, access denied, HTTP 401 or 403 | `Config` |
//! | `ValidationException` (e.g. a table whose key is not `resource`) | `Config` |
//! | anything else | `Other` |

use std::error::Error as StdError;

use aws_sdk_dynamodb::config::interceptors::InterceptorContext;
use aws_sdk_dynamodb::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use super::super::Error;
use crate::backend::tls_text;

/// Where requests go, for messages.
#[derive(Debug, Clone)]
pub(super) struct Place {
    pub table: String,
    pub region: String,
    pub endpoint: Option<String>,
}

impl Place {
    fn at(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("{e} (region {})", self.region),
            None => format!("region {}", self.region),
        }
    }
}

const THROTTLED: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "LimitExceededException",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionConflictException",
];

const DENIED: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "ExpiredTokenException",
    "AccessDeniedException",
    "AccessDenied",
];

enum Kind {
    Missing,
    Throttled,
    Denied,
    Invalid,
    Other,
}

fn kind(code: Option<&str>, status: u16) -> Kind {
    match (code, status) {
        (Some("ResourceNotFoundException"), _) => Kind::Missing,
        (Some("ValidationException"), _) => Kind::Invalid,
        (Some(c), _) if THROTTLED.contains(&c) => Kind::Throttled,
        (Some(c), _) if DENIED.contains(&c) => Kind::Denied,
        (Some(_), _) => Kind::Other,
        (None, 401 | 403) => Kind::Denied,
        (None, 429 | 500..) => Kind::Throttled,
        (None, _) => Kind::Other,
    }
}

/// Maps a failed `op` (e.g. "acquiring 'x'") to an [`Error`].
pub(super) fn map<E>(place: &Place, op: &str, err: &SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let table = &place.table;
    match err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            // The error code, or the HTTP status when the SDK could not read the error body
            // (e.g. XML from a proxy or an emulator).
            let what = match err.code() {
                Some(code) => code.to_owned(),
                None => format!("HTTP {status}"),
            };
            let msg = err
                .message()
                .map_or_else(String::new, |m| format!(": {}", one_line(m)));
            match kind(err.code(), status) {
                Kind::Missing => Error::Config(format!(
                    "DynamoDB table '{table}' does not exist at {}; run 'lockrun init' to create it \
                     (or check the region and endpoint)",
                    place.at()
                )),
                Kind::Throttled => Error::Unavailable(format!(
                    "{op}: DynamoDB at {} is throttling or failing ({what}){msg}",
                    place.at()
                )),
                Kind::Denied => Error::Config(format!(
                    "{op}: DynamoDB at {} rejected the AWS credentials ({what}){msg}",
                    place.at()
                )),
                Kind::Invalid => Error::Config(format!(
                    "{op}: DynamoDB rejected the request on table '{table}' (is it a lockrun \
                     table, with hash key 'resource'?){msg}"
                )),
                Kind::Other => Error::Other(format!("{op}: DynamoDB error {what}{msg}")),
            }
        }
        SdkError::TimeoutError(_) => timeout(place, op),
        SdkError::DispatchFailure(d) => {
            let why = innermost(err);
            if tls_text::handshake_failed(&why) {
                let hint = tls_text::hint(
                    &why,
                    "add the CA that signed it to the system's trust store, or name a file of \
                     CA certificates in SSL_CERT_FILE",
                    "",
                    "use an http:// endpoint for a plain server",
                );
                Error::Config(format!(
                    "{op}: TLS handshake with DynamoDB at {} failed: {why} ({hint})",
                    place.at()
                ))
            } else if d.is_io() || d.is_timeout() {
                Error::Unavailable(format!(
                    "{op}: cannot reach DynamoDB at {}: {why}",
                    place.at()
                ))
            } else if mentions_credentials(err) {
                no_credentials(op, &why)
            } else if d.is_user() {
                Error::Config(format!("{op}: DynamoDB request failed: {why}"))
            } else {
                Error::Unavailable(format!(
                    "{op}: cannot reach DynamoDB at {}: {why}",
                    place.at()
                ))
            }
        }
        SdkError::ResponseError(_) => Error::Unavailable(format!(
            "{op}: DynamoDB at {} sent a response that could not be read: {}",
            place.at(),
            innermost(err)
        )),
        SdkError::ConstructionFailure(_) if mentions_credentials(err) => {
            no_credentials(op, &innermost(err))
        }
        _ => Error::Config(format!(
            "{op}: cannot build a DynamoDB request: {}",
            innermost(err)
        )),
    }
}

/// Tells the SDK not to retry a request whose TLS handshake failed (it would, as for any
/// connection error): a certificate that is not trusted now will not be on the next attempt.
#[derive(Debug)]
pub(super) struct NoRetryAfterTls;

impl ClassifyRetry for NoRetryAfterTls {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.output_or_error() {
            Some(Err(e))
                if e.as_connector_error()
                    .is_some_and(|c| tls_text::handshake_failed(&innermost(c))) =>
            {
                RetryAction::RetryForbidden
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "no retry after a failed TLS handshake"
    }
}

/// The error for a request that did not finish within the command timeout.
pub(super) fn timeout(place: &Place, op: &str) -> Error {
    Error::Unavailable(format!(
        "{op}: DynamoDB at {} did not answer in time",
        place.at()
    ))
}

fn no_credentials(op: &str, why: &str) -> Error {
    // The chain's own message lists every provider it tried; the first sentence says enough.
    let why = why.split(". ").next().unwrap_or(why).trim_end_matches('.');
    Error::Config(format!(
        "{op}: no usable AWS credentials for DynamoDB ({why}); set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an instance role"
    ))
}

fn chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |e: &&'a (dyn StdError + 'static)| (*e).source())
}

fn mentions_credentials(err: &(dyn StdError + 'static)) -> bool {
    chain(err).any(|e| e.to_string().to_ascii_lowercase().contains("credential"))
}

/// The most specific message in the source chain, on one line.
fn innermost(err: &(dyn StdError + 'static)) -> String {
    chain(err)
        .last()
        .map(|e| one_line(&e.to_string()))
        .unwrap_or_default()
}

fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = line.chars().take(300).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    crate::lease::escape(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::get_item::GetItemError;
    use aws_sdk_dynamodb::types::error::ResourceNotFoundException;

    fn place() -> Place {
        Place {
            table: "locks".into(),
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:1".into()),
        }
    }

    fn service(code: &str) -> SdkError<GetItemError> {
        service_status(Some(code), 400)
    }

    fn service_status(code: Option<&str>, status: u16) -> SdkError<GetItemError> {
        let mut meta = aws_sdk_dynamodb::error::ErrorMetadata::builder();
        if let Some(code) = code {
            meta = meta.code(code).message("line one\nline two");
        }
        let meta = meta.build();
        let code = code.unwrap_or_default();
        let err = match code {
            "ResourceNotFoundException" => GetItemError::ResourceNotFoundException(
                ResourceNotFoundException::builder().meta(meta).build(),
            ),
            _ => GetItemError::generic(meta),
        };
        let raw = aws_sdk_dynamodb::config::http::HttpResponse::new(
            status.try_into().unwrap(),
            "".into(),
        );
        SdkError::service_error(err, raw)
    }

    #[test]
    fn service_errors() {
        let p = place();
        let m = map(&p, "op", &service("ResourceNotFoundException"));
        assert!(
            matches!(&m, Error::Config(s) if s.contains("run 'lockrun init'")),
            "{m:?}"
        );
        for (code, want_config) in [
            ("ProvisionedThroughputExceededException", false),
            ("ThrottlingException", false),
            ("UnrecognizedClientException", true),
            ("InvalidSignatureException", true),
            ("AccessDeniedException", true),
        ] {
            let m = map(&p, "op", &service(code));
            assert_eq!(matches!(m, Error::Config(_)), want_config, "{code}: {m:?}");
            assert_eq!(m.is_retryable(), !want_config, "{code}: {m:?}");
            assert!(m.to_string().contains(code) && !m.to_string().contains('\n'));
        }
        assert!(matches!(map(&p, "op", &service("Weird")), Error::Other(_)));
        // Unreadable error bodies are classified by status.
        let m = map(&p, "op", &service_status(None, 403));
        assert!(
            matches!(&m, Error::Config(s) if s.contains("HTTP 403")),
            "{m:?}"
        );
        assert!(map(&p, "op", &service_status(None, 503)).is_retryable());
        assert!(matches!(
            map(&p, "op", &service_status(None, 418)),
            Error::Other(_)
        ));
    }

    #[test]
    fn transport_errors() {
        let p = place();
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e: SdkError<GetItemError> =
            SdkError::dispatch_failure(aws_sdk_dynamodb::error::ConnectorError::io(io.into()));
        let m = map(&p, "op", &e);
        assert!(
            matches!(&m, Error::Unavailable(s) if s.contains("refused")),
            "{m:?}"
        );
        let e: SdkError<GetItemError> = SdkError::timeout_error("slow");
        assert!(map(&p, "op", &e).is_retryable());
        let e: SdkError<GetItemError> =
            SdkError::dispatch_failure(aws_sdk_dynamodb::error::ConnectorError::other(
                "no providers in chain provided credentials".into(),
                None,
            ));
        let m = map(&p, "op", &e);
        assert!(
            matches!(&m, Error::Config(s) if s.contains("AWS_PROFILE")),
            "{m:?}"
        );
    }
}
