//! The file backend: leases kept in a local lock directory (`file:///var/lock/lockrun`).
//!
//! # Layout
//!
//! One directory, created with mode 0700 when missing. Each resource has three files, named by
//! percent-encoding the resource name (long names get a readable prefix and a SHA-256; see the
//! `name` submodule):
//!
//! - `<name>.lease`: the record, one JSON object with the lease id, principal, fencing token,
//!   expiry and a checksum. It is never deleted: release only marks it `released`, so the fencing
//!   token keeps increasing across release, expiry and takeover.
//! - `<name>.token`: the fencing-token reservation, one JSON object with the highest token that
//!   may be issued, the boot that wrote it and a checksum (see Durability). Never delete it: after
//!   a power loss it is what keeps tokens from being handed out twice.
//! - `<name>.lock`: an empty file used only for `flock(2)`. It is created once and never replaced.
//!
//! Temporary files are `.<name>.<random>.tmp`; a crash can leave one behind, which is harmless.
//!
//! # Atomicity
//!
//! Every operation takes the resource's exclusive `flock`, reads the record, decides, and, when
//! something changes, writes the new record to a fresh temporary file (`O_CREAT|O_EXCL|O_NOFOLLOW`,
//! mode 0600) and renames it over the record, then unlocks. `rename` is atomic, so a reader or a
//! crashed process sees the old record or the new one, never a torn one. The kernel drops the
//! `flock` of a process that dies, so a crash never leaves a resource locked: the lease then simply
//! runs out at its expiry.
//!
//! # Durability
//!
//! Records are not fsynced: that would cost acquire, renew and release a disk flush each, several
//! times the rest of the work. What a power loss (or an OS crash) does, by operation:
//!
//! - Renew and release are not durable. A power loss may forget a release, and the lease then
//!   looks held until its wall-clock expiry, or a renewal, and the lease then expires at the
//!   earlier expiry. Neither is fsynced.
//! - A grant may be forgotten too (the resource then looks free, or held by the previous lease
//!   until its expiry), but its fencing token never comes back. Tokens are handed out from a
//!   reservation, like sequence caching in databases: `<name>.token` holds `reserved`, the highest
//!   token that may be issued, and is always written durably (temporary file, fsync, rename,
//!   directory fsync) under the resource's `flock`, before the first token above the old
//!   reservation is used, reserving the next [`record::BLOCK`] tokens at once. So only about one
//!   grant in `BLOCK` waits for the disk, and every token ever issued is at most `reserved`, even
//!   if the record was rolled back. The first grant of a boot (the record or the reservation was
//!   written by an earlier boot, or the record is gone) counts on from `max(record, reserved)`
//!   instead of from the record. Tokens therefore increase strictly, across releases, expiries,
//!   crashes and power losses, but may skip: after a reboot by up to `BLOCK`. Without a readable
//!   boot id every grant counts on from `reserved` and pays for the fsyncs.
//! - A missing reservation next to an existing record (first use, or a directory from a version
//!   that fsynced every record) is fine: the record is trusted and a reservation is written from
//!   its token. A reservation that is damaged is [`Error::Corrupt`], like a damaged record.
//! - Rename without fsync is ordered after the file's data on ext4 (`auto_da_alloc`) and btrfs. On
//!   file systems that do not order them, a power loss can leave an empty or torn record; it is
//!   reported as [`Error::Corrupt`] and can be deleted, the reservation keeps tokens increasing.
//!
//! A lock directory on tmpfs (such as `/run/lock` on most distributions) is empty after every boot,
//! so there tokens start again at 1.
//!
//! # Clocks
//!
//! A record stores the expiry twice: as the wall clock (for display, and for other boots or other
//! hosts on a shared file system) and as `CLOCK_BOOTTIME` together with the kernel's boot id. While
//! the boot id is unchanged, expiry is judged on `CLOCK_BOOTTIME`, which wall-clock steps (NTP,
//! manual changes) do not move and which keeps counting through suspend. After a reboot the wall
//! clock is all that is left. There is no server, so [`Capabilities::server_time`] is false; the
//! single host's boot clock plays that role.
//!
//! # Safety in shared directories
//!
//! The directory is refused when it is a symlink, not a directory, not writable by us, writable by
//! group or others without the sticky bit, or shared and owned by someone other than us or root.
//! Files are opened relative to the directory descriptor with `O_NOFOLLOW`; a symlink, a
//! non-regular file or a record that does not parse, fails its checksum or names another resource
//! is reported as [`Error::Corrupt`] and never overwritten; so is a damaged reservation. Records
//! and reservations are mode 0600: the lease id is a bearer token. In a sticky shared directory
//! such as `/run/lock`, users therefore cannot read or take over each other's records; they get a
//! permission error instead.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchMask};

use super::{
    Acquire, AcquireRequest, Backend, BackendUrl, Capabilities, Error, Fencing, Renewal, Settings,
    Watch,
};
use crate::lease::{Lease, LeaseId, Resource};

mod name;

/// SHA-256, shared with the other backends that hash names.
#[cfg(feature = "memcached")]
pub(crate) use name::sha256;
mod record;
mod store;

use record::{Now, Step};
use store::Dir;

/// Parses a record file and a reservation file as `resource`'s (for the fuzz targets): never
/// panics, whatever the bytes.
#[doc(hidden)]
pub fn fuzz_decode(bytes: &[u8], resource: &Resource) {
    let _ = record::Record::decode(bytes, resource);
    let _ = record::Reservation::decode(bytes, resource);
    let _ = record::stored_resource(bytes);
}

/// Leases in a local lock directory.
#[derive(Debug, Clone)]
pub struct File {
    dir: Arc<Dir>,
}

impl File {
    /// Opens the backend for a `file:///some/dir` URL. It takes no settings.
    pub fn open(url: &BackendUrl, settings: &Settings) -> Result<File, Error> {
        settings.expect_only(&[])?;
        let u = url.secret_url();
        if u.query().is_some() || u.fragment().is_some() {
            return Err(Error::Config(format!(
                "file backend URL '{url}' takes no parameters"
            )));
        }
        let path = u.to_file_path().map_err(|()| {
            Error::Config(format!(
                "file backend URL '{url}' must name a local absolute path, like file:///var/lock/lockrun"
            ))
        })?;
        File::at(&path)
    }

    /// Opens (creating if needed) the lock directory `dir`.
    pub fn at(dir: &Path) -> Result<File, Error> {
        Ok(File {
            dir: Arc::new(Dir::open(dir)?),
        })
    }

    /// Runs `f` with the resource's kernel lock held. That lock is held for microseconds at a
    /// time, so it is nearly always free: then `f` runs right here, without the cost of handing
    /// the step to another thread (which, on a busy machine, also waits for that thread to be
    /// scheduled). When another process holds it, the wait happens on a blocking thread, so a
    /// stalled holder (SIGSTOP in the middle of a step) never blocks the runtime.
    async fn locked<T, F>(&self, resource: &Resource, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&store::Locked<'_>, &Resource) -> Result<T, Error> + Send + 'static,
    {
        if let Some(locked) = self.dir.try_lock(resource)? {
            return f(&locked, resource);
        }
        let dir = Arc::clone(&self.dir);
        let resource = resource.clone();
        tokio::task::spawn_blocking(move || {
            let locked = dir.lock(&resource)?;
            f(&locked, &resource)
        })
        .await
        .map_err(|e| Error::Other(format!("lock directory worker failed: {e}")))?
    }

    /// Runs one locked read-decide-write step.
    async fn step<T, F>(&self, resource: &Resource, decide: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Option<&record::Record>, &Now) -> Result<Step<T>, Error> + Send + 'static,
    {
        self.locked(resource, move |locked, _| {
            let old = locked.read()?;
            match decide(old.as_ref(), &Now::read())? {
                Step::Keep(out) => Ok(out),
                Step::Write(new, out) => {
                    locked.write(&new)?;
                    Ok(out)
                }
            }
        })
        .await
    }
}

#[async_trait]
impl Backend for File {
    /// Strict fencing (the record, and its token, is never deleted), change events from inotify,
    /// no eviction. `server_time` is false: expiry is judged on this host's boot clock.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fencing: Fencing::Strict,
            server_time: false,
            watch: true,
            may_evict: false,
        }
    }

    async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
        let (id, principal, ttl) = (req.id.clone(), req.principal.to_owned(), req.ttl);
        self.locked(req.resource, move |locked, resource| {
            let old = locked.read()?;
            let now = Now::read();
            if let Some(busy) = record::busy(old.as_ref(), resource, &now) {
                return Ok(busy);
            }
            let reservation = locked.read_reservation()?;
            let next = record::next_token(old.as_ref(), reservation.as_ref(), &now)
                .map_err(Error::Other)?;
            // The reservation must be on disk before the token it covers is.
            if let Some(reserve) = &next.reserve {
                locked.reserve(reserve)?;
            }
            let req = AcquireRequest {
                resource,
                id: &id,
                principal: &principal,
                ttl,
            };
            let (new, lease) = record::grant(next.token, &req, &now);
            locked.write(&new)?;
            Ok(Acquire::Acquired(lease))
        })
        .await
    }

    async fn renew(
        &self,
        resource: &Resource,
        id: &LeaseId,
        ttl: Duration,
    ) -> Result<Renewal, Error> {
        let (res, id) = (resource.clone(), id.clone());
        self.step(resource, move |old, now| {
            Ok(record::renew(old, &res, &id, ttl, now))
        })
        .await
    }

    async fn release(&self, resource: &Resource, id: &LeaseId) -> Result<bool, Error> {
        let id = id.clone();
        self.step(resource, move |old, now| Ok(record::release(old, &id, now)))
            .await
    }

    async fn current(&self, resource: &Resource) -> Result<Option<Lease>, Error> {
        let res = resource.clone();
        self.step(resource, move |old, now| {
            Ok(Step::Keep(record::current(old, &res, now)))
        })
        .await
    }

    /// The resources that have a record in the lock directory (read from the records, whose file
    /// names may be hashed).
    async fn resources(&self) -> Result<Option<Vec<Resource>>, Error> {
        let dir = Arc::clone(&self.dir);
        tokio::task::spawn_blocking(move || dir.resources().map(Some))
            .await
            .map_err(|e| Error::Other(format!("lock directory worker failed: {e}")))?
    }

    /// Watches the lock directory with inotify. Returns `None` (poll instead) when inotify is
    /// unavailable, e.g. when the per-user watch limit is reached. Only events for the record
    /// file wake the waiter: temporary files and the `.token` reservation have other names.
    async fn watch(&self, resource: &Resource) -> Result<Option<Box<dyn Watch>>, Error> {
        let target = name::record(resource.as_str());
        let setup = || -> std::io::Result<FileWatch> {
            let inotify = Inotify::init()?;
            inotify.watches().add(
                &self.dir.path,
                WatchMask::MOVED_TO
                    | WatchMask::CLOSE_WRITE
                    | WatchMask::DELETE
                    | WatchMask::DELETE_SELF
                    | WatchMask::ONLYDIR,
            )?;
            Ok(FileWatch {
                events: Some(inotify.into_event_stream([0u8; 4096])?),
                target: target.clone().into(),
                dir: self.dir.path.display().to_string(),
            })
        };
        match setup() {
            Ok(w) => Ok(Some(Box::new(w))),
            Err(e) => {
                tracing::debug!(
                    "cannot watch lock directory {}: {e}; polling instead",
                    self.dir.path.display()
                );
                Ok(None)
            }
        }
    }
}

/// Change events for one record file.
struct FileWatch {
    /// Always `Some` until dropped.
    events: Option<EventStream<[u8; 4096]>>,
    target: std::ffi::OsString,
    dir: String,
}

#[async_trait]
impl Watch for FileWatch {
    async fn changed(&mut self) -> Result<(), Error> {
        loop {
            let Some(events) = self.events.as_mut() else {
                return Err(Error::Other("watch already closed".into()));
            };
            let event = match events.next().await {
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    return Err(Error::Other(format!(
                        "watching lock directory {}: {e}",
                        self.dir
                    )))
                }
                None => {
                    return Err(Error::Other(format!(
                        "watching lock directory {}: inotify closed",
                        self.dir
                    )))
                }
            };
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                return Ok(()); // events were dropped; ours may be among them
            }
            if event
                .mask
                .intersects(EventMask::DELETE_SELF | EventMask::IGNORED)
            {
                return Err(Error::Other(format!(
                    "lock directory {} was removed while waiting",
                    self.dir
                )));
            }
            if event.name.as_deref() == Some(self.target.as_os_str()) {
                return Ok(());
            }
        }
    }
}

impl Drop for FileWatch {
    /// Closing an inotify instance waits for the kernel's SRCU grace period (measured 10-20 ms
    /// here), and the watch is dropped right after the lease is granted, just when the command
    /// should start: it is closed on a thread of its own.
    fn drop(&mut self) {
        if let Some(events) = self.events.take() {
            let closer = std::thread::Builder::new()
                .name("lockrun-inotify".into())
                .spawn(move || drop(events));
            // When no thread can be started, the closure (and the instance) is dropped here.
            if let Err(e) = closer {
                tracing::debug!("closing inotify in place: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
