//! The file backend: leases kept in a local lock directory (`file:///var/lock/lockrun`).
//!
//! # Layout
//!
//! One directory, created with mode 0700 when missing. Each resource has two files, named by
//! percent-encoding the resource name (long names get a readable prefix and a SHA-256; see the
//! `name` submodule):
//!
//! - `<name>.lease`: the record, one JSON object with the lease id, principal, fencing token,
//!   expiry and a checksum. It is never deleted: release only marks it `released`, so the fencing
//!   token keeps increasing across release, expiry and takeover.
//! - `<name>.lock`: an empty file used only for `flock(2)`. It is created once and never replaced.
//!
//! Temporary files are `.<name>.<random>.tmp`; a crash can leave one behind, which is harmless.
//!
//! # Atomicity
//!
//! Every operation takes the resource's exclusive `flock`, reads the record, decides, and, when
//! something changes, writes the new record to a fresh temporary file (`O_CREAT|O_EXCL|O_NOFOLLOW`,
//! mode 0600), fsyncs it, renames it over the record and fsyncs the directory, then unlocks.
//! `rename` is atomic, so a reader or a crash sees the old record or the new one, never a torn
//! one. The directory fsync makes a grant durable before it is reported, so a power cut cannot
//! make the backend forget a grant and hand out its fencing token again. The kernel drops the
//! `flock` of a process that dies, so a crash never leaves a resource locked: the lease then simply
//! runs out at its expiry.
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
//! is reported as [`Error::Corrupt`] and never overwritten. Records are mode 0600: the lease id is
//! a bearer token. In a sticky shared directory such as `/run/lock`, users therefore cannot read or
//! take over each other's records; they get a permission error instead.

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
mod record;
mod store;

use record::{Now, Step};
use store::Dir;

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

    /// Runs one locked read-decide-write step on a blocking thread.
    async fn step<T, F>(&self, resource: &Resource, decide: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Option<&record::Record>, &Now) -> Result<Step<T>, Error> + Send + 'static,
    {
        let dir = Arc::clone(&self.dir);
        let resource = resource.clone();
        tokio::task::spawn_blocking(move || {
            let locked = dir.lock(&resource)?;
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
        .map_err(|e| Error::Other(format!("lock directory worker failed: {e}")))?
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
        let (resource, id, principal, ttl) = (
            req.resource.clone(),
            req.id.clone(),
            req.principal.to_owned(),
            req.ttl,
        );
        self.step(req.resource, move |old, now| {
            let req = AcquireRequest {
                resource: &resource,
                id: &id,
                principal: &principal,
                ttl,
            };
            record::acquire(old, &req, now).map_err(Error::Other)
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

    /// Watches the lock directory with inotify. Returns `None` (poll instead) when inotify is
    /// unavailable, e.g. when the per-user watch limit is reached.
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
                events: inotify.into_event_stream([0u8; 4096])?,
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
    events: EventStream<[u8; 4096]>,
    target: std::ffi::OsString,
    dir: String,
}

#[async_trait]
impl Watch for FileWatch {
    async fn changed(&mut self) -> Result<(), Error> {
        loop {
            let event = match self.events.next().await {
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

#[cfg(test)]
mod tests;
