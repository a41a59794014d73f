//! The library's error type.

use crate::backend;
use crate::config;
use crate::exit::{Exit, BUSY_DEFAULT};
use crate::lease::{InvalidInput, Lease};

/// Why a lock operation did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend failed; [`backend::Error::is_retryable`] says whether trying again may help.
    #[error(transparent)]
    Backend(#[from] backend::Error),
    /// A resource name, lease id or setting has the wrong shape.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The lockrun configuration (file or environment) is wrong ([`crate::open_configured`]).
    #[error(transparent)]
    Config(#[from] config::Error),
    /// The resource was still held when the wait ran out.
    #[error("{}", busy_message(.0.as_deref()))]
    Busy(Option<Box<Lease>>),
}

impl Error {
    /// The exit status the CLI ends with on this error, for a program that wants to end the way
    /// `lockrun` does (75 busy, 69 unreachable, 78 configuration, ...; see [`Exit`]).
    pub fn exit(&self) -> Exit {
        match self {
            Error::Backend(e) => e.exit(),
            Error::Invalid(_) => Exit::Usage,
            Error::Config(e) => e.exit(),
            Error::Busy(_) => Exit::Busy(BUSY_DEFAULT),
        }
    }
}

fn busy_message(holder: Option<&Lease>) -> String {
    match holder {
        Some(h) => format!(
            "{} is busy: {}",
            crate::lease::escape(h.resource.as_str()),
            h.holder_summary()
        ),
        None => "the resource is busy".into(),
    }
}

/// Drops the ` (os error N)` that Rust adds to an operating-system error's text: the text
/// before it already says what went wrong (`Connection refused (os error 111)`).
pub(crate) fn without_os_error(s: &str) -> String {
    const MARK: &str = " (os error ";
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(MARK) {
        let after = &rest[at + MARK.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(&rest[..at]);
        if digits > 0 && after[digits..].starts_with(')') {
            rest = &after[digits + 1..];
        } else {
            out.push_str(MARK);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_error_number_is_dropped_from_messages() {
        assert_eq!(
            without_os_error("cannot connect: Connection refused (os error 111)"),
            "cannot connect: Connection refused"
        );
        assert_eq!(
            without_os_error("a: No such file (os error 2); b: Is a directory (os error 21)!"),
            "a: No such file; b: Is a directory!"
        );
        assert_eq!(without_os_error("x (os error )"), "x (os error )");
        assert_eq!(without_os_error("x (os error 12"), "x (os error 12");
        assert_eq!(without_os_error("plain"), "plain");
    }
}
