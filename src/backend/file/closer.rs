//! Closing a waiter's inotify instance without waiting for it.
//!
//! Closing the last descriptor of an inotify instance waits for the kernel's SRCU grace period
//! (`fsnotify_destroy_group`; measured 2-25 ms on a busy 2-core machine), and a waiter is done
//! with its instance right when the lease is granted and the command should start. So the last
//! reference is dropped elsewhere:
//!
//! - Where io_uring is available, the instance is registered as a fixed file of a small ring made
//!   for the purpose, and its descriptor is closed. Our close then drops a reference that is
//!   not the last. The ring's descriptor is closed later: at the next close of an instance, or
//!   when the process exits. Closing it wakes a kernel worker, which tears the ring down and drops
//!   the instance's last reference, so nothing in this process waits; but that worker preempts
//!   the process on its CPU (measured: 20-25 µs right between the grant and the command's start,
//!   on a 2-core machine), so the ring lingers until the command runs.
//!   Tearing the ring down notifies the closing thread with task work, so a blocking system call
//!   with a timeout that this thread makes right after (a socket read with `SO_RCVTIMEO`) may
//!   return `EINTR` once, as it may for any signal; other calls are restarted by the kernel.
//! - Otherwise a thread of its own closes it. That thread is started with the watch, while
//!   waiting, so that the grant costs only a message to it. But a process does not end while one
//!   of its threads is in the kernel, so a `lockrun` whose command took less than the grace
//!   period then ends that much later (measured: 18 of 66 processes by 6-21 ms).
//! - When neither can be had, it is closed in place.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// The ring holding the last instance closed, left to close with the next one or at exit.
static LINGERING: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// `IORING_REGISTER_FILES` (linux/io_uring.h).
const IORING_REGISTER_FILES: libc::c_long = 2;

/// Something that can take an instance off our hands when the wait is over. `T` owns the
/// instance's descriptor, whose number is given with it.
pub(super) enum Closer<T: Send + 'static> {
    Ring(OwnedFd),
    Thread(std::sync::mpsc::Sender<T>),
    InPlace,
}

impl<T: Send + 'static> Closer<T> {
    /// Prepared while the waiter waits.
    pub fn new() -> Closer<T> {
        if let Some(ring) = ring() {
            return Closer::Ring(ring);
        }
        match thread() {
            Some(tx) => Closer::Thread(tx),
            None => Closer::InPlace,
        }
    }

    /// Closes `owner`, whose descriptor is `fd`, without waiting for the last reference to go.
    pub fn close(self, owner: T, fd: RawFd) {
        match self {
            Closer::Ring(ring) if register(&ring, fd) => {
                drop(owner);
                linger(ring, &LINGERING);
            }
            // The ring would not take it: a thread started now still spares the caller.
            Closer::Ring(_) => match thread() {
                Some(tx) => drop(tx.send(owner)),
                None => drop(owner),
            },
            // When the thread is gone, the instance comes back in the error and is closed here.
            Closer::Thread(tx) => drop(tx.send(owner)),
            Closer::InPlace => drop(owner),
        }
    }
}

/// Keeps `ring` open in `slot`, closing the ring that lingered there before.
fn linger(ring: OwnedFd, slot: &Mutex<Option<OwnedFd>>) {
    let earlier = match slot.lock() {
        Ok(mut slot) => slot.replace(ring),
        Err(_) => Some(ring),
    };
    drop(earlier);
}

/// A thread that closes what it is sent.
fn thread<T: Send + 'static>() -> Option<std::sync::mpsc::Sender<T>> {
    let (tx, rx) = std::sync::mpsc::channel::<T>();
    let started = std::thread::Builder::new()
        .name("lockrun-inotify".into())
        .spawn(move || drop(rx.recv()));
    match started {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::debug!("no thread to close inotify on: {e}");
            None
        }
    }
}

/// A ring with one entry, never used for I/O: only its file table is. `None` where io_uring is
/// missing or refused (old kernels, `kernel.io_uring_disabled`, container seccomp profiles).
fn ring() -> Option<OwnedFd> {
    // struct io_uring_params: 120 bytes, zeroed.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup writes at most sizeof(struct io_uring_params) bytes to `params`.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return None;
    }
    // SAFETY: io_uring_setup just returned this descriptor (close-on-exec) and nothing else
    // owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Makes `fd`'s file a fixed file of `ring`, which then holds a reference to it.
fn register(ring: &OwnedFd, fd: RawFd) -> bool {
    let fds = [fd];
    // SAFETY: the kernel reads one descriptor number from `fds`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.as_raw_fd(),
            IORING_REGISTER_FILES,
            fds.as_ptr(),
            1u32,
        )
    };
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    /// Closes one end of a socket pair with `closer` and waits for the other end to see it.
    fn closes(closer: Closer<UnixStream>) {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = a.as_fd().as_raw_fd();
        match closer {
            // The ring lingers until the next instance is closed: in a slot of the test's own.
            Closer::Ring(ring) => {
                assert!(register(&ring, fd));
                drop(a);
                let slot = Mutex::new(None);
                linger(ring, &slot);
                linger(super::ring().unwrap(), &slot);
            }
            closer => closer.close(a, fd),
        }
        sees_the_end(&b);
    }

    /// The other end sees the close once the last reference is dropped (by a kernel worker or
    /// a thread): reading returns end of file.
    fn sees_the_end(b: &UnixStream) {
        b.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 1];
        let n = loop {
            match std::io::Read::read(&mut &*b, &mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.unwrap(),
            }
        };
        assert_eq!(n, 0);
    }

    /// Whichever way the instance is closed, it is closed.
    #[test]
    fn every_closer_closes() {
        closes(Closer::new());
        closes(Closer::Thread(thread().unwrap()));
        closes(Closer::InPlace);
        if let Some(ring) = ring() {
            closes(Closer::Ring(ring));
        }
    }

    /// A ring's instance stays open until the next close (so that the kernel worker that tears
    /// the ring down is not woken when the command should start).
    #[test]
    fn a_ring_lingers_until_the_next_close() {
        let Some(ring) = ring() else { return };
        let (a, b) = UnixStream::pair().unwrap();
        assert!(register(&ring, a.as_fd().as_raw_fd()));
        drop(a);
        let slot = Mutex::new(None);
        linger(ring, &slot);
        b.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        let still_open = std::io::Read::read(&mut &b, &mut buf);
        assert_eq!(
            still_open.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "the instance is still open"
        );
        b.set_nonblocking(false).unwrap();
        linger(super::ring().unwrap(), &slot);
        sees_the_end(&b);
    }
}
