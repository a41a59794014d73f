//! Clean-up that can wait until the command runs.
//!
//! Between a grant and the command's start every microsecond is on the handoff's path: the
//! next holder's command starts that much later. Some clean-up that a granted wait leaves behind
//! costs tens of µs (closing the file backend's inotify instance: handing it to io_uring,
//! taking it out of epoll, closing it), and need not happen before the command starts. Such work
//! is [`defer`]red here and done by [`run`], which `lockrun run` calls right after the command's
//! process has started (and every verb before it exits), and every wait calls before it starts
//! (so a program that only waits keeps at most one wait's clean-up pending).
//!
//! Only the binary defers ([`start_deferring`], before its verb runs). In a program using the
//! library nobody would call [`run`] at the right moments, so there the work is done at once:
//! a long-lived service must not keep a finished wait's descriptors open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

type Work = Box<dyn FnOnce() + Send>;

static PENDING: Mutex<Vec<Work>> = Mutex::new(Vec::new());

static DEFERRING: AtomicBool = AtomicBool::new(false);

/// From now on [`defer`] keeps work for the next [`run`] (the binary calls it once).
pub fn start_deferring() {
    DEFERRING.store(true, Ordering::Relaxed);
}

/// Does `work` at the next [`run`], or now if this process does not defer.
pub fn defer(work: impl FnOnce() + Send + 'static) {
    if !DEFERRING.load(Ordering::Relaxed) {
        return work();
    }
    match PENDING.lock() {
        Ok(mut pending) => pending.push(Box::new(work)),
        Err(_) => work(),
    }
}

/// Does the deferred work now.
pub fn run() {
    let work = match PENDING.lock() {
        Ok(mut pending) => std::mem::take(&mut *pending),
        Err(_) => return,
    };
    for w in work {
        w();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn deferred_work_is_done_once_at_the_next_run() {
        let done = Arc::new(AtomicUsize::new(0));
        let d = Arc::clone(&done);
        super::start_deferring();
        super::defer(move || {
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(done.load(Ordering::SeqCst), 0);
        super::run();
        assert_eq!(done.load(Ordering::SeqCst), 1);
        super::run();
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
