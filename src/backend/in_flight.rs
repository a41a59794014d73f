//! A call in flight to a server, written once for the backends that keep a connection: dropped
//! before [`InFlight::answered`] (its time ran out, or its caller stopped waiting: the
//! heartbeat gives a renewal at most a heartbeat, less than `command_timeout`), it runs what
//! the backend does about an unanswered call, such as taking the connection out of use, since
//! a connection that stopped answering must not be handed to the next call.

/// Runs `if_unanswered` when dropped, unless [`InFlight::answered`] was called first.
pub(crate) struct InFlight<F: FnOnce()> {
    if_unanswered: Option<F>,
}

impl<F: FnOnce()> InFlight<F> {
    pub fn new(if_unanswered: F) -> Self {
        InFlight {
            if_unanswered: Some(if_unanswered),
        }
    }

    /// The answer came: nothing to do on drop.
    pub fn answered(mut self) {
        self.if_unanswered = None;
    }
}

impl<F: FnOnce()> Drop for InFlight<F> {
    fn drop(&mut self) {
        if let Some(f) = self.if_unanswered.take() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InFlight;
    use std::cell::Cell;

    #[test]
    fn runs_only_when_dropped_unanswered() {
        let ran = Cell::new(0);
        InFlight::new(|| ran.set(ran.get() + 1)).answered();
        assert_eq!(ran.get(), 0);
        drop(InFlight::new(|| ran.set(ran.get() + 1)));
        assert_eq!(ran.get(), 1);
    }
}
