//! The library's error type.

use crate::backend;
use crate::lease::{InvalidInput, Lease};

/// Why a lock operation did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The backend failed; [`backend::Error::is_retryable`] says whether trying again may help.
    #[error(transparent)]
    Backend(#[from] backend::Error),
    /// A resource name, lease id or setting has the wrong shape.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The resource was still held when the wait ran out.
    #[error("{}", busy_message(.0.as_deref()))]
    Busy(Option<Box<Lease>>),
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
