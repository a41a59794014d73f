//! The file backend: leases kept in a local lock directory (`file:///var/lib/lockrun`).
//!
//! # Layout
//!
//! One directory, created with mode 0700 by the first acquire when missing (steps that only read
//! or give back find nothing held there and create nothing). Each resource has three files, named by
//! percent-encoding the resource name (long names get a readable prefix and a SHA-256; see the
//! `name` submodule):
//!
//! - `<name>.lease`: the record, one JSON object with the lease id, principal, fencing token,
//!   expiry and a checksum. It is never deleted: release only marks it `released`, so the fencing
//!   token keeps increasing across release, expiry and takeover.
//! - `<name>.token`: the fencing-token reservation, one JSON object with the highest token that
//!   may be issued, the boot that wrote it and a checksum (see Durability). Never delete it: after
//!   a power loss it is what keeps tokens from being handed out twice.
//! - `<name>.lock`: an empty file used for `flock(2)`, and touched (its change time) by every
//!   step that may free the resource sooner than its waiters expect, which they watch (see the
//!   `watch` submodule). It is created once and never replaced.
//!
//! - `.<name>.spare`: the record before last, rewritten and exchanged with the record at the next
//!   write (see Atomicity). It is never read as a record.
//!
//! Temporary files are `.<name>.<random>.tmp`; a crash can leave one behind, which is harmless.
//!
//! # Atomicity
//!
//! Every operation takes the resource's exclusive `flock`, reads the record, decides, and, when
//! something changes, writes the new record into the resource's spare file (the record before
//! last) and exchanges the two (`renameat2(RENAME_EXCHANGE)`), then unlocks. The exchange is
//! atomic, so a reader or a crashed process sees the old record or the new one, never a torn one.
//! Unlike a rename over the record, it does not make ext4 or btrfs write the new record to disk
//! at once, and it creates and deletes no file, so a grant or release does no disk I/O. The first
//! write of a resource goes to a fresh temporary file (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600)
//! instead, and so does every write on a file system without `RENAME_EXCHANGE` (NFS), which then
//! renames it over the record. The kernel drops the
//! `flock` of a process that dies, so a crash never leaves a resource locked: the lease then simply
//! runs out at its expiry.
//!
//! # Waiting
//!
//! A waiter sleeps until the holder's expiry, or until a release or a renewal touches the lock
//! file (inotify); grants wake nobody. A waiter that wakes while the resource is still held sees
//! so in the record without taking the kernel lock (records are replaced by `rename`, so a
//! read without the lock sees one whole version), and when another process holds the kernel lock
//! for a step it yields the CPU and looks again before it waits on a thread for the lock.
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
//!   reservation is used, reserving the next `record::BLOCK` tokens at once. So only about one
//!   grant in `BLOCK` waits for the disk, and every token ever issued is at most `reserved`, even
//!   if the record was rolled back. The first grant of a boot (the record or the reservation was
//!   written by an earlier boot, or the record is gone) counts on from `max(record, reserved)`
//!   instead of from the record. Tokens therefore increase strictly, across releases, expiries,
//!   crashes and power losses, but may skip: after a reboot by up to `BLOCK`. Without a readable
//!   boot id every grant counts on from `reserved` and pays for the fsyncs.
//! - A missing reservation next to an existing record (first use, or a directory from a version
//!   that fsynced every record) is fine: the record is trusted and a reservation is written from
//!   its token. A reservation that is damaged is [`Error::Corrupt`], like a damaged record.
//! - The exchange is not ordered after the new record's data, so a power loss can leave the record
//!   empty, or holding an older version (rolled back, as above), or torn when it is longer than a
//!   disk sector (512 bytes; records are about 300 unless the principal is long). An empty record
//!   next to a reservation reads as no record (the lease is forgotten, as above, and the next
//!   grant counts on from the reservation); without a reservation it is [`Error::Corrupt`]. A torn
//!   record is [`Error::Corrupt`] and can be deleted; the reservation keeps tokens increasing.
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
//! permission error instead. Root, which can open them, reads them but refuses to replace a
//! record or reservation that belongs to another user ([`Error::Config`]): its write would
//! leave that user a record they cannot open.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Acquire, AcquireRequest, Backend, BackendUrl, Capabilities, Error, Fencing, Renewal, Settings,
    Watch,
};
use crate::lease::{Lease, LeaseId, Resource};

mod closer;
mod name;

/// SHA-256, shared with the other backends that hash names.
#[cfg(any(feature = "dynamodb", feature = "kubernetes", feature = "memcached"))]
pub(crate) use name::sha256;
/// This boot's id and clocks, shared with the takeover rule's kept sightings.
#[cfg(any(feature = "dynamodb", feature = "kubernetes", feature = "memcached"))]
pub(crate) use record::Now as BootClock;
mod record;
mod store;
mod watch;

use record::{Now, Step};
use store::{Dir, TryLock};

/// Parses a record file and a reservation file as `resource`'s (for the fuzz targets): never
/// panics, whatever the bytes.
#[doc(hidden)]
pub fn fuzz_decode(bytes: &[u8], resource: &Resource) {
    let _ = record::Record::decode(bytes, resource);
    let _ = record::Reservation::decode(bytes, resource);
    let _ = record::stored_resource(bytes);
}

/// How often a step yields and tries again when another process holds the resource's kernel
/// lock, before it waits for it on a blocking thread.
const LOCK_SPINS: usize = 8;

/// How long a step waits for the resource's kernel lock before it reports the store as
/// unavailable (exit 69). A step holds that lock for microseconds: this
/// long means its holder is stopped (SIGSTOP, a debugger, a frozen cgroup) or hung.
const LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// The longest sleep between two tries for a kernel lock that another process holds.
const LOCK_BACKOFF_MAX: Duration = Duration::from_millis(5);

/// Leases in a local lock directory.
#[derive(Debug, Clone)]
pub struct File {
    place: Arc<Place>,
}

/// The lock directory: its path, and the directory once it exists. A missing one is created by
/// the first step that may grant a lease; until then, steps that only read or give back find
/// nothing held, and create nothing (a mistyped `-b file:///...` given to `current` must not
/// leave a directory tree behind).
#[derive(Debug)]
struct Place {
    path: PathBuf,
    dir: OnceLock<Arc<Dir>>,
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
                "file backend URL '{url}' must name a local absolute path, like file:///var/lib/lockrun"
            ))
        })?;
        // `file://` alone (say `file://$UNSET_VARIABLE`) names the root directory.
        if path.parent().is_none() {
            return Err(Error::Config(format!(
                "file backend URL '{url}' names the root directory, not a lock directory; give one, like file:///var/lib/lockrun"
            )));
        }
        File::at(&path)
    }

    /// Opens the lock directory `dir`, which is created (mode 0700, with missing parents) by the
    /// first acquire when absent.
    pub fn at(dir: &Path) -> Result<File, Error> {
        let place = Place {
            path: dir.to_owned(),
            dir: OnceLock::new(),
        };
        if let Some(found) = Dir::open(dir, false)? {
            let _ = place.dir.set(Arc::new(found));
        }
        Ok(File {
            place: Arc::new(place),
        })
    }

    /// The lock directory; `None` when it does not exist and `create` is false.
    fn dir(&self, create: bool) -> Result<Option<&Arc<Dir>>, Error> {
        if let Some(dir) = self.place.dir.get() {
            return Ok(Some(dir));
        }
        Ok(match Dir::open(&self.place.path, create)? {
            Some(opened) => Some(self.place.dir.get_or_init(|| Arc::new(opened))),
            None => None,
        })
    }

    /// Runs `f` with the resource's kernel lock held. That lock is held for microseconds at a
    /// time, so it is nearly always free: then `f` runs right here, without the cost of handing
    /// the step to another thread (which, on a busy machine, also waits for that thread to be
    /// scheduled). When another process holds it (typically another waiter woken by the same
    /// release), this one yields the CPU and tries again a few times, asking `look` in between
    /// whether the step is still needed (the other may have been granted the lease). Then it
    /// sleeps between tries, longer each time, so that the wait can be cancelled (a signal, a
    /// library caller's timeout) and never blocks the runtime; and a holder stalled in the middle
    /// of a step (SIGSTOP) makes the step unavailable after [`LOCK_PATIENCE`] instead of hanging
    /// it.
    ///
    /// With `create` false, a missing lock file is not created: `f` is handed back unrun
    /// (`Ok(Err(f))`).
    async fn locked<T, F>(
        &self,
        resource: &Resource,
        look: impl Fn() -> Option<T>,
        f: F,
        create: bool,
    ) -> Result<Result<T, F>, Error>
    where
        T: Send + 'static,
        F: FnOnce(store::Locked<'_>, &Resource) -> Result<T, Error> + Send + 'static,
    {
        let Some(dir) = self.dir(create)? else {
            return Ok(Err(f));
        };
        for _ in 0..LOCK_SPINS {
            match dir.try_lock(resource, create)? {
                TryLock::Locked(locked) => return f(locked, resource).map(Ok),
                TryLock::Absent => return Ok(Err(f)),
                TryLock::Busy => {}
            }
            std::thread::yield_now();
            if let Some(out) = look() {
                return Ok(Ok(out));
            }
        }
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            tokio::time::sleep(pause).await;
            match dir.try_lock(resource, create)? {
                TryLock::Locked(locked) => return f(locked, resource).map(Ok),
                TryLock::Absent => return Ok(Err(f)),
                TryLock::Busy => {}
            }
            if let Some(out) = look() {
                return Ok(Ok(out));
            }
            if started.elapsed() >= LOCK_PATIENCE {
                return Err(Error::Unavailable(format!(
                    "the lock file of {} in {} has been locked for {} by a process that does \
                     not finish its step (stopped or hung?)",
                    crate::lease::escape(resource.as_str()),
                    dir.path.display(),
                    crate::duration::format(LOCK_PATIENCE)
                )));
            }
            pause = (pause * 2).min(LOCK_BACKOFF_MAX);
        }
    }

    /// The answer to an attempt on a resource that is busy, read without its kernel lock (see
    /// `store::Files`); `None` when it may be free (or cannot be read), which is then decided
    /// under the lock.
    fn seen_busy(&self, resource: &Resource) -> Option<Acquire> {
        let old = self.dir(false).ok()??.files(resource).read().ok()?;
        record::busy(old.as_ref(), resource, &Now::read())
    }

    /// Runs one locked read-decide-write step that never makes the resource busy (a renewal, a
    /// release, a read): a write signals the waiters (see the `watch` module).
    async fn step<T, F>(&self, resource: &Resource, decide: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Option<&record::Record>, &Now) -> Result<Step<T>, Error> + Clone + Send + 'static,
    {
        let unlocked = decide.clone();
        let step = move |locked: store::Locked<'_>, _: &Resource| {
            let old = locked.read()?;
            match decide(old.as_ref(), &Now::read())? {
                Step::Keep(out) => Ok(out),
                Step::Write(new, out) => {
                    locked.write(&new)?;
                    locked.unlock_and_signal();
                    Ok(out)
                }
            }
        };
        let step = match self.locked(resource, || None, step, false).await {
            Ok(Ok(out)) => return Ok(out),
            Ok(Err(step)) => step,
            // A lock file we may not use (another user's, in a shared directory): a step that
            // changes nothing is answered from the record, as when there is no lock file; only
            // a write is refused. (Root's `current` on a name whose lock file another user made
            // before a record was written said 78, not "not held".)
            Err(e @ Error::Config(_)) => {
                if let Some(Ok(record)) = self.dir(false)?.map(|d| d.files(resource).read()) {
                    if let Step::Keep(out) = unlocked(record.as_ref(), &Now::read())? {
                        return Ok(out);
                    }
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        // No lock file: the resource has never been locked here, or its lock file was deleted.
        // A step that changes nothing is answered from the record read without the lock (it is
        // replaced whole, so it reads as it was before or after any step), so that it creates
        // no lock file: in a shared directory, root's `current` would otherwise leave a
        // root-owned lock file that no other user may open, locking the name's user out of
        // their own lease (review), or the name theirs to use no more. A record created right
        // after this look holds a lease id this step cannot have been given. Nor is a lock file
        // made for a step that would then be refused another user's record.
        if let Some(dir) = self.dir(false)? {
            let files = dir.files(resource);
            let record = files.read()?;
            if let Step::Keep(out) = unlocked(record.as_ref(), &Now::read())? {
                return Ok(out);
            }
            files.refuse_foreign()?;
        } else if let Step::Keep(out) = unlocked(None, &Now::read())? {
            return Ok(out);
        }
        match self.locked(resource, || None, step, true).await? {
            Ok(out) => Ok(out),
            Err(_) => Err(Error::Other("the lock file could not be created".into())),
        }
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
            local: true,
            fair: false,
        }
    }

    async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
        // A waiter that wakes up while another holds the lease neither takes the kernel lock nor
        // waits for it.
        if let Some(busy) = self.seen_busy(req.resource) {
            return Ok(busy);
        }
        let (id, principal, ttl) = (req.id.clone(), req.principal.to_owned(), req.ttl);
        let look = || self.seen_busy(req.resource);
        let granted = self.locked(
            req.resource,
            look,
            move |locked, resource| {
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
            },
            true,
        );
        match granted.await? {
            Ok(out) => Ok(out),
            Err(_) => Err(Error::Other("the lock file could not be created".into())),
        }
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

    /// Creates the lock directory when it is missing (as the first acquire would).
    async fn init(&self) -> Result<Option<String>, Error> {
        if self.dir(false)?.is_some() {
            return Ok(None);
        }
        self.dir(true)?;
        Ok(Some(format!(
            "created the lock directory {}",
            self.place.path.display()
        )))
    }

    /// The resources that have a record in the lock directory (read from the records, whose file
    /// names may be hashed).
    async fn resources(&self) -> Result<Option<Vec<Resource>>, Error> {
        let Some(dir) = self.dir(false)?.cloned() else {
            return Ok(Some(Vec::new()));
        };
        tokio::task::spawn_blocking(move || dir.resources().map(Some))
            .await
            .map_err(|e| Error::Other(format!("lock directory worker failed: {e}")))?
    }

    /// Watches the resource with inotify (see the `watch` module). `None` (poll instead) when
    /// inotify is unavailable, e.g. when the per-user watch limit is reached.
    async fn watch(&self, resource: &Resource) -> Result<Option<Box<dyn Watch>>, Error> {
        let Some(dir) = self.dir(false)? else {
            return Ok(None);
        };
        Ok(watch::FileWatch::start(dir, resource).map(|w| Box::new(w) as Box<dyn Watch>))
    }
}

#[cfg(test)]
mod tests;
