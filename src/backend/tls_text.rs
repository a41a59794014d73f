//! Recognizing a failed TLS handshake by its text, for clients that flatten rustls's errors into
//! their own (the redis client; the AWS SDK's HTTP client, whose dispatch failures carry it as
//! the innermost cause).

/// Whether `text` is a failed TLS handshake: rustls reports those as I/O errors carrying a
/// `rustls::Error`; these are the beginnings of the texts of rustls's handshake errors, and of
/// tokio-rustls's early EOF.
pub(crate) fn handshake_failed(text: &str) -> bool {
    const TLS: &[&str] = &[
        "invalid peer certificate",
        "peer sent no certificates",
        "received fatal alert",
        "received corrupt message",
        "received unexpected",
        "peer is incompatible",
        "peer misbehaved",
        "peer sent excess record size",
        "cannot decrypt peer's message",
        "presented server name type",
        "tls handshake eof",
    ];
    TLS.iter().any(|p| text.starts_with(p))
}

/// What to do about a failed handshake whose text is `why`: connect by the name on the
/// certificate, trust the CA that signed it (`trust` says how), or not speak TLS to a plain
/// server (`plain` says how). `skip` follows the first two: how to skip verification, if the
/// backend can.
pub(crate) fn hint(why: &str, trust: &str, skip: &str, plain: &str) -> String {
    let lower = why.to_ascii_lowercase();
    if lower.contains("not valid for name") || lower.contains("notvalidforname") {
        format!(
            "the server's certificate is not for the host in the URL: connect by a name or \
             address it was issued for{skip}"
        )
    } else if lower.contains("certificate") || lower.contains("unknownissuer") {
        format!("the server's certificate is not trusted: {trust}{skip}")
    } else {
        format!("does the server speak TLS on this port? {plain}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_are_told_from_other_errors() {
        assert!(handshake_failed("invalid peer certificate: UnknownIssuer"));
        assert!(handshake_failed("received fatal alert: HandshakeFailure"));
        assert!(!handshake_failed("Connection refused (os error 111)"));
        let hint = |why| hint(why, "T", ", S", "P");
        assert!(hint("invalid peer certificate: UnknownIssuer").ends_with("not trusted: T, S"));
        assert!(hint("invalid peer certificate: NotValidForName").ends_with("issued for, S"));
        assert!(hint("received corrupt message").ends_with("this port? P"));
    }
}
