//! How a waiter learns, through inotify, that a resource may have become free.
//!
//! Only a release (and a renewal, which may shorten the lease) can free a resource before the
//! expiry the waiter already knows about; a grant never does. So those steps touch the
//! resource's lock file (its change time: `IN_ATTRIB`), and waiters watch that one file rather
//! than every write of the record: a grant wakes nobody, and a release wakes each waiter once.
//! The lock directory is watched as well, for the record's deletion and the directory's removal,
//! events that the lease steps never cause.
//!
//! Expiry needs no event: the waiting policy sleeps until the holder's expiry. A lockrun older
//! than this scheme releases without touching the lock file; its waiters (which watch the record)
//! are woken by ours, and ours notice its releases at their safety poll.
//!
//! Without /proc (the lock file is watched through its descriptor, so the watch is on the very
//! file that is locked) or when that file is replaced, the waiter watches every write of the
//! record instead, as all waiters once did.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask};

use super::closer::Closer;
use super::name;
use super::store::Dir;
use crate::backend::{Change, Error, Watch};
use crate::lease::Resource;

/// Touches of the lock file, and its replacement.
const SIGNAL: WatchMask = WatchMask::ATTRIB.union(WatchMask::DELETE_SELF);
/// The record's deletion and the directory's removal.
const GONE: WatchMask = WatchMask::DELETE
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::ONLYDIR);
/// Every write of the record, when the lock file cannot be watched.
const WRITES: WatchMask = GONE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::CLOSE_WRITE);

type Events = EventStream<[u8; 4096]>;

/// Change events for one resource.
pub(super) struct FileWatch {
    /// Always `Some` until dropped.
    events: Option<Events>,
    /// The inotify instance's descriptor.
    fd: RawFd,
    /// What closes the instance when the wait is over (see `Drop`); always `Some` until dropped.
    closer: Option<Closer<Events>>,
    /// The watch of the lock file, while there is one.
    signal: Option<WatchDescriptor>,
    record: OsString,
    dir: Arc<Dir>,
}

impl FileWatch {
    /// Watches `resource`. `None` when inotify is unavailable (e.g. the per-user watch limit is
    /// reached): the caller then polls.
    pub fn start(dir: &Arc<Dir>, resource: &Resource) -> Option<FileWatch> {
        let setup = || -> std::io::Result<FileWatch> {
            let inotify = Inotify::init()?;
            let signal = match dir.open_lock(resource) {
                Ok((file, _)) => {
                    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
                    inotify
                        .watches()
                        .add(&path, SIGNAL)
                        .map_err(|e| tracing::debug!("cannot watch the lock file: {e}"))
                        .ok()
                }
                Err(e) => {
                    tracing::debug!("cannot open the lock file: {e}");
                    None
                }
            };
            let mask = if signal.is_some() { GONE } else { WRITES };
            inotify.watches().add(&dir.path, mask)?;
            let fd = inotify.as_raw_fd();
            Ok(FileWatch {
                events: Some(inotify.into_event_stream([0u8; 4096])?),
                fd,
                closer: Some(Closer::new()),
                signal,
                record: name::record(resource.as_str()).into(),
                dir: Arc::clone(dir),
            })
        };
        setup()
            .map_err(|e| {
                tracing::debug!(
                    "cannot watch lock directory {}: {e}; polling instead",
                    dir.path.display()
                )
            })
            .ok()
    }

    fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::Other(format!(
            "watching lock directory {}: {what}",
            self.dir.path.display()
        ))
    }
}

#[async_trait]
impl Watch for FileWatch {
    async fn changed(&mut self) -> Result<Change, Error> {
        loop {
            let Some(events) = self.events.as_mut() else {
                return Err(Error::Other("watch already closed".into()));
            };
            let event = match events.next().await {
                Some(Ok(event)) => event,
                Some(Err(e)) => return Err(self.error(e)),
                None => return Err(self.error("inotify closed")),
            };
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                return Ok(Change::MayBeFree); // events were dropped; ours may be among them
            }
            if Some(&event.wd) == self.signal.as_ref() {
                if event.mask.intersects(EventMask::IGNORED) {
                    // The lock file was replaced: its touches are gone, so watch the record.
                    self.signal = None;
                    let mut watches = events.watches();
                    watches
                        .add(&self.dir.path, WRITES)
                        .map_err(|e| self.error(e))?;
                }
                return Ok(Change::MayBeFree);
            }
            if event
                .mask
                .intersects(EventMask::DELETE_SELF | EventMask::IGNORED)
            {
                return Err(Error::Other(format!(
                    "lock directory {} was removed while waiting",
                    self.dir.path.display()
                )));
            }
            if event.name.as_deref() == Some(self.record.as_os_str()) {
                return Ok(Change::MayBeFree);
            }
        }
    }
}

impl Drop for FileWatch {
    /// Closing an inotify instance waits for the kernel's SRCU grace period, and the watch is
    /// dropped right after the lease is granted, just when the command should start: the
    /// instance is handed to a [`Closer`], once the command has started (see [`crate::later`]).
    fn drop(&mut self) {
        if let (Some(events), Some(closer)) = (self.events.take(), self.closer.take()) {
            let fd = self.fd;
            crate::later::defer(move || closer.close(events, fd));
        }
    }
}
