//! The lock directory: opening and checking it, the per-resource kernel lock, and reading and
//! atomically replacing records and token reservations.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{AccessFlags, UnlinkatFlags};

use super::name;
use super::record::{self, Record, Reservation};
use crate::backend::Error;
use crate::lease::Resource;

/// Records and reservations are a few hundred bytes; anything much larger is not ours.
const MAX_RECORD: u64 = 64 * 1024;

/// How often to retry when the lock file is replaced under us.
const LOCK_ATTEMPTS: usize = 8;

/// An open, checked lock directory. Every file is reached relative to the directory descriptor,
/// so swapping the path for a symlink after opening changes nothing.
#[derive(Debug)]
pub(super) struct Dir {
    pub path: PathBuf,
    fd: OwnedFd,
    /// Set once the file system has refused `RENAME_EXCHANGE` (see [`Dir::exchange`]).
    no_exchange: AtomicBool,
    /// Who this directory's files must belong to: us, or the squashed uid of NFS.
    user: u32,
    /// Who owns the files this process creates here, found out the first time a resource's
    /// files belong to someone else (see [`Dir::is_ours`]).
    creates_as: OnceLock<Option<u32>>,
}

fn config(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("lock directory {} {what}: {e}", path.display()))
}

impl Dir {
    /// Opens `path` and refuses a directory that is unsafe to keep leases in. When it is
    /// absent: with `create`, creates it (and missing parents) with mode 0700; without, answers
    /// `None`.
    pub fn open(path: &Path, create: bool) -> Result<Option<Dir>, Error> {
        // Without a trailing slash, which would make the checks below follow a symlink.
        let path = &path.components().collect::<PathBuf>();
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(|e| {
                        let hint = "give a lock directory with -b file:///some/dir, or set \
                                    XDG_STATE_HOME";
                        config(path, "cannot be created", format!("{e} ({hint})"))
                    })?;
                fs::symlink_metadata(path).map_err(|e| config(path, "cannot be read", e))?
            }
            Err(e) => return Err(config(path, "cannot be read", e)),
        };
        if meta.file_type().is_symlink() {
            return Err(Error::Config(format!(
                "lock directory {} is a symbolic link; give the real path",
                path.display()
            )));
        }
        if !meta.is_dir() {
            return Err(Error::Config(format!(
                "lock directory {} is not a directory",
                path.display()
            )));
        }
        nix::unistd::faccessat(
            None,
            path,
            AccessFlags::W_OK | AccessFlags::X_OK,
            nix::fcntl::AtFlags::AT_EACCESS,
        )
        .map_err(|e| config(path, "is not writable", e.desc()))?;
        let raw = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| config(path, "cannot be opened", e.desc()))?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let st = nix::sys::stat::fstat(fd.as_raw_fd())
            .map_err(|e| config(path, "cannot be read", e.desc()))?;
        let euid = nix::unistd::geteuid().as_raw();
        let dir = Dir {
            path: path.to_owned(),
            fd,
            no_exchange: AtomicBool::new(false),
            user: euid,
            creates_as: OnceLock::new(),
        };
        // Root on NFS with root_squash: the directory root made, and every file root makes in
        // it, belong to the squashed uid. Then it is root's own, as far as files go. (A probe
        // left by a SIGKILL at that moment is a hidden `.owner-probe.*.tmp`, read by nothing.)
        let squashed =
            euid == 0 && st.st_uid != 0 && dir.is_nfs() && dir.new_files_owner() == Some(st.st_uid);
        let user = if squashed { st.st_uid } else { euid };
        check_mode(path, st.st_mode, st.st_uid, user)?;
        Ok(Some(Dir { user, ..dir }))
    }

    /// Whether a resource's file owned by `uid` is ours to use. In a shared (sticky) directory
    /// each resource belongs to the user who first locked it: others cannot open its files
    /// (mode 0600), and root must not either, as its writes would replace that user's record
    /// with one that user cannot open. Files made here by an NFS server that maps every user to
    /// one uid (`all_squash`) are ours as well.
    fn is_ours(&self, uid: u32) -> bool {
        uid == self.user || *self.creates_as.get_or_init(|| self.new_files_owner()) == Some(uid)
    }

    /// The error for `what` (a resource's file at `path`) owned by `uid`, not by us.
    fn not_ours(&self, what: &str, path: &Path, uid: u32) -> Error {
        let us = if self.user == 0 {
            "root".to_owned()
        } else {
            format!("uid {}", self.user)
        };
        Error::Config(format!(
            "{what} {} belongs to uid {uid}, not {us}: a resource in a shared lock directory is \
             its first user's; run as that user, or use another resource name",
            path.display()
        ))
    }

    /// Whether the directory is on NFS (where root_squash exists; vfat, CIFS or sshfs mounted
    /// with `uid=N` also show root's files as N's, but there N can change them).
    fn is_nfs(&self) -> bool {
        const NFS_SUPER_MAGIC: i64 = 0x6969;
        // SAFETY: fstatfs writes only into `st`.
        unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            libc::fstatfs(self.fd.as_raw_fd(), &mut st) == 0 && st.f_type as i64 == NFS_SUPER_MAGIC
        }
    }

    /// Who owns a file this process creates here (created and removed at once), if it can.
    pub(super) fn new_files_owner(&self) -> Option<u32> {
        let probe = name::temp("owner-probe");
        let file = self
            .open_at(
                &probe,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                0o600,
            )
            .ok()?;
        let owner = file.metadata().ok().map(|m| m.uid());
        drop(file);
        self.unlink(&probe);
        owner
    }

    /// The resource names stored in the records of this directory. Records that cannot be read
    /// are skipped here; reading them through [`Dir::lock`] reports them.
    pub fn resources(&self) -> Result<Vec<Resource>, Error> {
        let entries = fs::read_dir(&self.path)
            .map_err(|e| io_error("lock directory", &self.path, "cannot be listed", e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || !name.ends_with(name::RECORD_SUFFIX) {
                continue;
            }
            let skip = |why: &dyn std::fmt::Display| {
                tracing::warn!(
                    "lock directory {}: {} {why}; not listed",
                    self.path.display(),
                    crate::lease::escape(name)
                )
            };
            // Non-blocking: opening a FIFO planted under a record's name must not hang `list`.
            let file = match self.open_at(name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0) {
                Ok(file) => file,
                // Gone since the listing: released records stay, so it was deleted; no lease.
                Err(Errno::ENOENT) => continue,
                Err(Errno::ELOOP) => {
                    skip(&"is a symbolic link");
                    continue;
                }
                // Another user's record in a shared directory: theirs, not damage.
                Err(Errno::EACCES)
                    if nix::sys::stat::fstatat(
                        Some(self.fd.as_raw_fd()),
                        name,
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .is_ok_and(|st| st.st_uid != self.user) =>
                {
                    continue
                }
                Err(e) => {
                    skip(&format_args!("cannot be opened: {}", e.desc()));
                    continue;
                }
            };
            if !file.metadata().is_ok_and(|m| m.is_file()) {
                tracing::warn!(
                    "lock directory {}: {} is not a regular file; not listed",
                    self.path.display(),
                    crate::lease::escape(name)
                );
                continue;
            }
            let mut bytes = Vec::new();
            if let Err(e) = file.take(MAX_RECORD).read_to_end(&mut bytes) {
                skip(&format_args!("cannot be read: {e}"));
                continue;
            }
            match record::stored_resource(&bytes).and_then(|r| Resource::new(r).ok()) {
                Some(r) if name::record(r.as_str()) == name => out.push(r),
                // A record copied or moved from another resource's file: not that resource's
                // lease (reading it through its own name reports it).
                Some(r) => tracing::warn!(
                    "lock directory {}: {} holds the record of another resource ({}); not listed",
                    self.path.display(),
                    crate::lease::escape(name),
                    crate::lease::escape(r.as_str())
                ),
                // An empty record reads as none (see Durability in the module docs), as long as
                // its token reservation is there; `current` reports one without as corrupt.
                None if bytes.is_empty() && self.has_reservation(name) => {}
                // Not silently: a damaged record may be a lease someone holds.
                None => tracing::warn!(
                    "lock directory {}: {} is not a readable lease record; not listed \
                     (`lockrun current` on its resource reports it)",
                    self.path.display(),
                    crate::lease::escape(name)
                ),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Whether the record file `record_name` has its token reservation beside it.
    fn has_reservation(&self, record_name: &str) -> bool {
        let stem = record_name
            .strip_suffix(name::RECORD_SUFFIX)
            .unwrap_or(record_name);
        nix::sys::stat::fstatat(
            Some(self.fd.as_raw_fd()),
            format!("{stem}.token").as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    fn open_at(&self, name: &str, flags: OFlag, mode: u32) -> Result<fs::File, Errno> {
        let raw = nix::fcntl::openat(
            Some(self.fd.as_raw_fd()),
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )?;
        // SAFETY: `openat` just returned this descriptor and nothing else owns it.
        Ok(unsafe { fs::File::from_raw_fd(raw) })
    }

    fn file_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Moves `from` over `to`.
    fn rename(&self, from: &str, to: &str) -> Result<(), Errno> {
        let dirfd = Some(self.fd.as_raw_fd());
        nix::fcntl::renameat(dirfd, from, dirfd, to)
    }

    /// Exchanges the names `a` and `b` atomically (`RENAME_EXCHANGE`): how records are replaced
    /// (see [`Locked::write`]). `Ok(false)` when that cannot be done here: `b` does not exist yet,
    /// or the file system has no `RENAME_EXCHANGE` (NFS, some FUSE file systems; remembered).
    fn exchange(&self, a: &str, b: &str) -> Result<bool, Errno> {
        if self.no_exchange.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match renameat2(self.fd.as_raw_fd(), a, b, libc::RENAME_EXCHANGE) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                self.no_exchange.store(true, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Acts as on a file system without `RENAME_EXCHANGE`.
    #[cfg(test)]
    pub fn without_exchange(&self) {
        self.no_exchange.store(true, Ordering::Relaxed);
    }

    /// Moves `from` to `to` unless `to` exists; false when it does, or on any error.
    fn rename_new(&self, from: &str, to: &str) -> bool {
        renameat2(self.fd.as_raw_fd(), from, to, libc::RENAME_NOREPLACE).is_ok()
    }

    fn unlink(&self, name: &str) {
        let dirfd = Some(self.fd.as_raw_fd());
        if let Err(e) = nix::unistd::unlinkat(dirfd, name, UnlinkatFlags::NoRemoveDir) {
            tracing::debug!("cannot remove {name} from the lock directory: {e}");
        }
    }

    /// The files of `resource`, to read without its kernel lock.
    pub fn files<'a>(&'a self, resource: &'a Resource) -> Files<'a> {
        Files {
            dir: self,
            resource,
            foreign: std::cell::Cell::new(None),
        }
    }

    /// Takes the exclusive kernel lock of `resource` (flock on its `.lock` file, which is never
    /// replaced), waiting for it. The lock is released when the guard drops, or by the kernel if
    /// we die.
    #[cfg(test)]
    pub fn lock<'a>(&'a self, resource: &'a Resource) -> Result<Locked<'a>, Error> {
        match self.lock_or(resource, true, true)? {
            TryLock::Locked(locked) => Ok(locked),
            _ => unreachable!("a blocking lock that may create its file is always taken"),
        }
    }

    /// Takes the kernel lock of `resource` if it is free right now. `create`: create its lock
    /// file when missing; otherwise a missing one is [`TryLock::Absent`], and nothing is created.
    pub fn try_lock<'a>(
        &'a self,
        resource: &'a Resource,
        create: bool,
    ) -> Result<TryLock<'a>, Error> {
        self.lock_or(resource, false, create)
    }

    /// Opens the lock file of `resource`, a regular file, creating it when missing, unless the
    /// resource's record is another user's (see [`Dir::open_lock_named`]; a waiter that cannot
    /// open it watches the directory instead).
    pub fn open_lock(&self, resource: &Resource) -> Result<(fs::File, fs::Metadata), Error> {
        self.open_lock_named(resource, &name::lock(resource.as_str()), true)
            .map(|o| o.expect("a lock file that may be created is there"))
    }

    /// Opens the lock file `lock_name` of `resource`; `None` when it is missing and not to be
    /// created. The path is only built for an error message.
    ///
    /// It must be ours (see [`Dir::is_ours`]): in a shared directory another user can make a
    /// lock file for a name before its first use, and replace that file at will, so that
    /// processes locking the file they opened lock different files and run their steps at the
    /// same time (review: eight `acquire -n` were granted one resource at once, with one fencing
    /// token), or hold its lock for ever. Root may also open the lock file of another user's
    /// resource, as it reads that user's record: one whose owner owns the record too.
    fn open_lock_named(
        &self,
        resource: &Resource,
        lock_name: &str,
        create: bool,
    ) -> Result<Option<(fs::File, fs::Metadata)>, Error> {
        let path = || self.file_path(lock_name);
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
        let file = match self.open_at(lock_name, flags, 0o600) {
            Err(Errno::ENOENT) if !create => return Ok(None),
            // None yet (a name never locked here, or its lock file was deleted): made now,
            // unless the resource's record is another user's, whom a lock file of ours would
            // lock out of their own lease.
            Err(Errno::ENOENT) => {
                if let Some(uid) = self.record_owner(resource).filter(|&u| !self.is_ours(u)) {
                    let record = self.file_path(&name::record(resource.as_str()));
                    return Err(self.not_ours("lease record", &record, uid));
                }
                self.open_at(lock_name, flags | OFlag::O_CREAT, 0o600)
            }
            other => other,
        };
        let file = file.map_err(|e| match e {
            Errno::ELOOP => Error::Corrupt(format!(
                "lock file {} is a symbolic link; inspect or delete it",
                path().display()
            )),
            e => io_error("lock file", &path(), "cannot be opened", e.into()),
        })?;
        let meta = file
            .metadata()
            .map_err(|e| io_error("lock file", &path(), "cannot be read", e))?;
        if !meta.is_file() {
            return Err(Error::Corrupt(format!(
                "lock file {} is not a regular file; inspect or delete it",
                path().display()
            )));
        }
        let uid = meta.uid();
        let theirs_to_read = || self.user == 0 && self.record_owner(resource) == Some(uid);
        if !(self.is_ours(uid) || theirs_to_read()) {
            return Err(self.not_ours("lock file", &path(), uid));
        }
        Ok(Some((file, meta)))
    }

    /// Who owns the record of `resource`, if there is one.
    fn record_owner(&self, resource: &Resource) -> Option<u32> {
        nix::sys::stat::fstatat(
            Some(self.fd.as_raw_fd()),
            name::record(resource.as_str()).as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()
        .map(|st| st.st_uid)
    }

    fn lock_or<'a>(
        &'a self,
        resource: &'a Resource,
        wait: bool,
        create: bool,
    ) -> Result<TryLock<'a>, Error> {
        let lock_name = name::lock(resource.as_str());
        let path = || self.file_path(&lock_name);
        for _ in 0..LOCK_ATTEMPTS {
            let Some((file, meta)) = self.open_lock_named(resource, &lock_name, create)? else {
                return Ok(TryLock::Absent);
            };
            let guard = match flock(file, wait) {
                Ok(guard) => guard,
                Err(Errno::EWOULDBLOCK) if !wait => return Ok(TryLock::Busy),
                Err(e) => return Err(io_error("lock file", &path(), "cannot be locked", e.into())),
            };
            // Someone may have deleted or replaced the lock file between our open and our lock;
            // then we hold a lock nobody else will look at. Check and start over.
            match nix::sys::stat::fstatat(
                Some(self.fd.as_raw_fd()),
                lock_name.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) if st.st_dev == meta.dev() && st.st_ino == meta.ino() => {
                    return Ok(TryLock::Locked(Locked {
                        files: self.files(resource),
                        guard,
                    }))
                }
                Ok(_) | Err(Errno::ENOENT) => continue,
                Err(e) => return Err(io_error("lock file", &path(), "cannot be read", e.into())),
            }
        }
        Err(Error::Other(format!(
            "lock file {} keeps being replaced; is something deleting files in the lock directory?",
            path().display()
        )))
    }
}

/// What [`Dir::try_lock`] found.
pub enum TryLock<'a> {
    /// The kernel lock is ours until this drops.
    Locked(Locked<'a>),
    /// Another process holds it.
    Busy,
    /// There is no lock file, and none was to be created.
    Absent,
}

/// `renameat2(2)` within one directory, as a system call: the C libraries do not all wrap it
/// (musl does not), and nix offers it only on glibc.
fn renameat2(dirfd: RawFd, from: &str, to: &str, flags: libc::c_uint) -> Result<(), Errno> {
    let (from, to) = (cstr(from)?, cstr(to)?);
    // SAFETY: both names are NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            dirfd,
            from.as_ptr(),
            dirfd,
            to.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

fn cstr(name: &str) -> Result<std::ffi::CString, Errno> {
    std::ffi::CString::new(name).map_err(|_| Errno::EINVAL)
}

fn flock(file: fs::File, wait: bool) -> Result<Flock<fs::File>, Errno> {
    let mut file = file;
    let how = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    loop {
        match Flock::lock(file, how) {
            Ok(guard) => return Ok(guard),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(e),
        }
    }
}

/// Refuses directories where other users could tamper with records, and those of other users
/// for root.
pub(super) fn check_mode(path: &Path, mode: u32, owner: u32, euid: u32) -> Result<(), Error> {
    let shared = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    if shared && !sticky {
        return Err(Error::Config(format!(
            "lock directory {} is writable by group or others without the sticky bit \
             (mode {:04o}); run chmod go-w or chmod +t on it",
            path.display(),
            mode & 0o7777
        )));
    }
    if euid == 0 && owner != 0 {
        // Root may write anywhere: its records would lock the directory's owner out, and the
        // owner could replace them.
        return Err(Error::Config(format!(
            "lock directory {} belongs to uid {owner}, not root: records root writes there \
             would lock that user out, and that user could change them; run lockrun as that \
             user, or give root a directory of its own (chown root, then only root uses it)",
            path.display()
        )));
    }
    if shared && owner != euid && owner != 0 {
        return Err(Error::Config(format!(
            "lock directory {} is owned by uid {owner} and writable by others; \
             use a directory owned by you or by root",
            path.display()
        )));
    }
    Ok(())
}

/// The files of one resource, for reading. Records and reservations are only ever replaced
/// whole (`rename` or `RENAME_EXCHANGE`), so a read without the kernel lock sees the current
/// version or one that was current a moment ago. One exception, harmless where such reads are
/// used (a waiter's look at a busy resource, which decides nothing): a reader slow enough to
/// still be reading a record two writes later reads the spare it has become, being rewritten,
/// and gets a checksum error or a version not yet in place.
pub(super) struct Files<'a> {
    dir: &'a Dir,
    resource: &'a Resource,
    /// The owner of a file read here that is not ours, if any (see [`Dir::is_ours`]).
    foreign: std::cell::Cell<Option<u32>>,
}

/// A resource whose kernel lock we hold.
pub(super) struct Locked<'a> {
    files: Files<'a>,
    guard: Flock<fs::File>,
}

impl<'a> std::ops::Deref for Locked<'a> {
    type Target = Files<'a>;

    fn deref(&self) -> &Files<'a> {
        &self.files
    }
}

/// One of the two replaceable files of a resource.
#[derive(Clone, Copy)]
enum Kind {
    Record,
    Reservation,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Record => "lease record",
            Kind::Reservation => "fencing token reservation",
        }
    }

    fn advice(self) -> &'static str {
        match self {
            Kind::Record => "inspect or delete it",
            Kind::Reservation => {
                "inspect or delete it (tokens then continue from the lease record)"
            }
        }
    }

    fn file_name(self, resource: &Resource) -> String {
        match self {
            Kind::Record => name::record(resource.as_str()),
            Kind::Reservation => name::reservation(resource.as_str()),
        }
    }
}

impl Files<'_> {
    fn path(&self, kind: Kind) -> PathBuf {
        self.dir.file_path(&kind.file_name(self.resource))
    }

    fn corrupt(&self, kind: Kind, why: impl std::fmt::Display) -> Error {
        let why = why.to_string();
        if why.starts_with(record::OTHER_VERSION) {
            // Not damage: deleting it would free a lease another lockrun may hold.
            return Error::Corrupt(format!(
                "{} {} is unreadable: {why}; use the lockrun that wrote it",
                kind.what(),
                self.path(kind).display(),
            ));
        }
        Error::Corrupt(format!(
            "{} {} is corrupt: {why}; {}",
            kind.what(),
            self.path(kind).display(),
            kind.advice()
        ))
    }

    /// The error of a step that would replace another user's record or reservation, read
    /// since these files were made (see [`Files::read`]).
    pub fn refuse_foreign(&self) -> Result<(), Error> {
        match self.foreign.get().filter(|&uid| !self.dir.is_ours(uid)) {
            Some(uid) => Err(self
                .dir
                .not_ours(Kind::Record.what(), &self.path(Kind::Record), uid)),
            None => Ok(()),
        }
    }

    /// The stored record, `None` if there is none. Anything we cannot trust is `Corrupt`.
    ///
    /// An empty record is what a power loss can leave of one that was being replaced (see
    /// [`Locked::write`]): it reads as none, a lease forgotten in the crash, as long as the token
    /// reservation is there to keep fencing tokens increasing. Without one it is `Corrupt`.
    pub fn read(&self) -> Result<Option<Record>, Error> {
        let Some(bytes) = self.read_bytes(Kind::Record)? else {
            return Ok(None);
        };
        if bytes.is_empty() && self.read_reservation()?.is_some() {
            return Ok(None);
        }
        Record::decode(&bytes, self.resource)
            .map(Some)
            .map_err(|why| self.corrupt(Kind::Record, why))
    }

    /// The stored token reservation, `None` if there is none. Anything we cannot trust is
    /// `Corrupt`.
    pub fn read_reservation(&self) -> Result<Option<Reservation>, Error> {
        let Some(bytes) = self.read_bytes(Kind::Reservation)? else {
            return Ok(None);
        };
        Reservation::decode(&bytes, self.resource)
            .map(Some)
            .map_err(|why| self.corrupt(Kind::Reservation, why))
    }

    fn read_bytes(&self, kind: Kind) -> Result<Option<Vec<u8>>, Error> {
        let path = self.path(kind);
        let file = match self.dir.open_at(
            &kind.file_name(self.resource),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK,
            0,
        ) {
            Ok(f) => f,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(self.corrupt(kind, "it is a symbolic link")),
            Err(e) => return Err(io_error(kind.what(), &path, "cannot be opened", e.into())),
        };
        let meta = file
            .metadata()
            .map_err(|e| io_error(kind.what(), &path, "cannot be read", e))?;
        if !meta.is_file() {
            return Err(self.corrupt(kind, "it is not a regular file"));
        }
        if meta.uid() != self.dir.user {
            // Checked before a write replaces it (see `Locked::replace`); reading is fine.
            self.foreign.set(Some(meta.uid()));
        }
        if meta.len() > MAX_RECORD {
            return Err(self.corrupt(kind, format!("it is {} bytes long", meta.len())));
        }
        // Room for the whole file and a byte more, so that one read returns it and the next
        // one ends it (reading into an empty vector takes six reads for a 300-byte record).
        let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
        file.take(MAX_RECORD + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(kind.what(), &path, "cannot be read", e))?;
        Ok(Some(bytes))
    }
}

impl Locked<'_> {
    /// Tells the resource's waiters that it may be free sooner than they think: touches the lock
    /// file (its change time), which they watch with inotify (see `watch`). Best effort: a waiter
    /// that misses it still wakes at the holder's expiry and at its safety poll.
    ///
    /// The kernel lock is given up first: the touch wakes every waiter (which costs the toucher
    /// tens of µs), and a waiter that found the lock still held would yield its CPU, for as long
    /// as a time slice on a busy machine, before it looked again.
    pub fn unlock_and_signal(self) {
        let resource = self.files.resource;
        let touch = |fd: RawFd| {
            let now = nix::sys::time::TimeSpec::UTIME_NOW;
            if let Err(e) = nix::sys::stat::futimens(fd, &now, &now) {
                tracing::debug!("cannot signal waiters of {resource}: {e}");
            }
        };
        match self.guard.unlock() {
            Ok(file) => touch(file.as_raw_fd()),
            // Still locked (it is unlocked when dropped, after the touch).
            Err((guard, _)) => touch(guard.as_raw_fd()),
        }
    }

    /// Replaces the record atomically, without fsync: a crash of the process leaves the old record
    /// or the new one, and a power loss may roll it back, leave it empty or (when it is longer
    /// than a disk sector) torn, which the token reservation makes safe.
    ///
    /// The new record is written into the resource's spare file, the record before last, which
    /// is then exchanged with the record (`RENAME_EXCHANGE`), so the old record becomes the
    /// spare. Readers see the old record or the new one, as they would with a rename. What
    /// differs is the file system's work: a rename over an existing file makes ext4
    /// (`auto_da_alloc`) and btrfs write the new file to disk at once, and deleting the old one
    /// frees its blocks, which costs a discard where the file system is mounted with `discard`:
    /// disk I/O on every grant and release. With the exchange, no file is created or deleted, so
    /// waiters watching the directory for the record's deletion are not woken either. The first
    /// write, or one without a usable spare, writes a fresh temporary file instead; a file system
    /// without `RENAME_EXCHANGE` (NFS, some FUSE file systems) gets a rename.
    pub fn write(&self, record: &Record) -> Result<(), Error> {
        let bytes = record
            .encode(self.resource)
            .map_err(|e| Error::Other(format!("cannot encode lease record: {e}")))?;
        if bytes.len() as u64 > MAX_RECORD {
            return Err(Error::Config(format!(
                "lease record would be {} bytes; is the principal that long?",
                bytes.len()
            )));
        }
        self.replace(Kind::Record, &bytes, false)
    }

    /// Replaces the token reservation atomically and durably: temporary file, fsync, rename,
    /// directory fsync. It must be on disk before any token it covers is handed out.
    pub fn reserve(&self, reservation: &Reservation) -> Result<(), Error> {
        let bytes = reservation
            .encode(self.resource)
            .map_err(|e| Error::Other(format!("cannot encode fencing token reservation: {e}")))?;
        self.replace(Kind::Reservation, &bytes, true)
    }

    fn replace(&self, kind: Kind, bytes: &[u8], durable: bool) -> Result<(), Error> {
        // Every step reads what it replaces first: a record or reservation of another user is
        // read (root can), but never replaced.
        if let Some(uid) = self.foreign.get().filter(|&uid| !self.dir.is_ours(uid)) {
            return Err(self.dir.not_ours(kind.what(), &self.path(kind), uid));
        }
        if !durable {
            if let Some(done) = self.through_spare(kind, bytes) {
                return done;
            }
        }
        self.through_temp(kind, bytes, durable)
    }

    /// Writes `bytes` into the resource's spare file and exchanges it with the file of `kind`;
    /// `None` when there is no spare we can trust (see [`Locked::write`]).
    fn through_spare(&self, kind: Kind, bytes: &[u8]) -> Option<Result<(), Error>> {
        let spare = name::spare(self.resource.as_str());
        let (file, len) = self.open_spare(&spare)?;
        let longer = len > bytes.len() as u64;
        let written = file
            .write_all_at(bytes, 0)
            .and_then(|()| {
                if longer {
                    file.set_len(bytes.len() as u64)
                } else {
                    Ok(())
                }
            })
            .map_err(|e| {
                io_error(
                    "spare file",
                    &self.dir.file_path(&spare),
                    "cannot be written",
                    e,
                )
            });
        drop(file);
        let target = kind.file_name(self.resource);
        Some(written.and_then(|()| {
            if !self
                .dir
                .exchange(&spare, &target)
                .map_err(|e| self.replaced(kind, e))?
            {
                self.dir
                    .rename(&spare, &target)
                    .map_err(|e| self.replaced(kind, e))?;
            }
            Ok(())
        }))
    }

    /// Writes `bytes` into a fresh temporary file (synced when `durable`) and puts it in place
    /// of the file of `kind`: exchanged, keeping the old one as the spare, unless `durable`
    /// (the reservation, which is renamed over, as a durable replacement must be).
    fn through_temp(&self, kind: Kind, bytes: &[u8], durable: bool) -> Result<(), Error> {
        let target = kind.file_name(self.resource);
        let replaced = |e: Errno| self.replaced(kind, e);
        let tmp = name::temp(self.resource.as_str());
        let tmp_path = self.dir.file_path(&tmp);
        let mut file = self
            .dir
            .open_at(
                &tmp,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                0o600,
            )
            .map_err(|e| io_error("temporary file", &tmp_path, "cannot be created", e.into()))?;
        let written = file
            .write_all(bytes)
            .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
            .map_err(|e| io_error("temporary file", &tmp_path, "cannot be written", e));
        drop(file);
        let exchanged = written.and_then(|()| {
            let exchanged = if durable {
                false
            } else {
                self.dir.exchange(&tmp, &target).map_err(replaced)?
            };
            if !exchanged {
                self.dir.rename(&tmp, &target).map_err(replaced)?;
            }
            Ok(exchanged)
        });
        match exchanged {
            Err(e) => {
                self.dir.unlink(&tmp);
                return Err(e);
            }
            // The old record, now under the temporary name, becomes the spare.
            Ok(true) => {
                if !self
                    .dir
                    .rename_new(&tmp, &name::spare(self.resource.as_str()))
                {
                    self.dir.unlink(&tmp);
                }
            }
            Ok(false) => {}
        }
        if !durable {
            return Ok(());
        }
        nix::unistd::fsync(self.dir.fd.as_raw_fd()).map_err(|e| {
            io_error(
                "lock directory",
                &self.dir.path,
                "cannot be synced",
                e.into(),
            )
        })
    }

    fn replaced(&self, kind: Kind, e: Errno) -> Error {
        io_error(
            kind.what(),
            &self.path(kind),
            "cannot be replaced",
            e.into(),
        )
    }

    /// The resource's spare file, open for writing, when it is one we can trust with a lease id:
    /// a regular file of ours, mode 0600 or stricter, with no other name.
    fn open_spare(&self, spare: &str) -> Option<(fs::File, u64)> {
        let file = self
            .dir
            .open_at(spare, OFlag::O_WRONLY | OFlag::O_NONBLOCK, 0)
            .ok()?;
        let meta = file.metadata().ok()?;
        let ours = meta.is_file()
            && meta.uid() == self.dir.user
            && meta.nlink() == 1
            && meta.mode() & 0o077 == 0;
        ours.then_some((file, meta.len()))
    }
}

/// Permission problems do not go away by retrying; other I/O errors are reported as they are.
fn io_error(kind: &str, path: &Path, what: &str, e: io::Error) -> Error {
    let text = format!(
        "{kind} {} {what}: {}",
        path.display(),
        crate::error::without_os_error(&e.to_string())
    );
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EACCES | Errno::EPERM | Errno::EROFS) => Error::Config(text),
        // A full disk or quota may free up: unavailable for now, as a server that is down.
        Some(Errno::ENOSPC | Errno::EDQUOT) => Error::Unavailable(text),
        // A directory where a lockrun file belongs: the store is damaged, as by a bad record.
        Some(Errno::EISDIR) => Error::Corrupt(text),
        // The lock directory cannot hold files (it went away, or is a /proc directory).
        Some(Errno::ENOENT | Errno::ENOTDIR) => Error::Config(text),
        _ => Error::Other(text),
    }
}

#[cfg(test)]
mod io_error_tests {
    use super::*;

    #[test]
    fn a_full_disk_is_unavailable_and_a_read_only_one_is_configuration() {
        let e = |errno| {
            io_error(
                "record",
                Path::new("/l/r"),
                "cannot be written",
                io::Error::from_raw_os_error(errno),
            )
        };
        assert!(
            matches!(e(libc::ENOSPC), Error::Unavailable(m) if m == "record /l/r cannot be written: No space left on device")
        );
        assert!(matches!(e(libc::EDQUOT), Error::Unavailable(_)));
        assert!(matches!(e(libc::EROFS), Error::Config(_)));
        assert!(matches!(e(libc::EISDIR), Error::Corrupt(_)));
        assert!(matches!(e(libc::ENOENT), Error::Config(_)));
        assert!(matches!(e(libc::EIO), Error::Other(_)));
    }
}
