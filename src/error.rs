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
