//! `lockrun run --events FD|-`: one JSON object per line for each state change, to a file
//! descriptor the caller opened (`--events 3 3>>events.log`) or to stderr (`-`).
//!
//! Every object has `event`, `time` (RFC 3339 UTC) and `resource`; the rest depends on the event:
//! `waiting` (holder), `acquired` (waited_ms, fencing_token, lease_id), `renewed`
//! (round_trip_ms), `renewal_failed` (error), `lost` (reason `gone` or `deadline`), `child_exited` (code or signal),
//! `released` (released: whether the lease was still ours), `busy` (holder: not acquired, with
//! `-n` or when `-w` ran out).

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::Failure;
use crate::lease::{rfc3339, Lease, Resource};

/// Where events go. Cheap to clone; writes are whole lines.
///
/// Events to a file descriptor are written by a thread of their own ([`WRITER`]), so that a
/// reader that does not keep up (a pipe that is full) never holds up lockrun: between the grant
/// and the command's start, or between renewals, a blocked write would leave the lease
/// unrenewed. [`finish`] waits for that thread to write what is queued. Events to stderr (`-`)
/// are written in place, in order with lockrun's other lines there.
#[derive(Clone)]
pub struct Events {
    /// stderr, for `-`; `None`: the writer thread.
    out: Option<Arc<Mutex<std::io::Stderr>>>,
    resource: String,
    /// What `--events` named, for the warning below.
    spec: Arc<str>,
    /// Whether a write failed (and was warned about, once).
    failed: Arc<AtomicBool>,
}

/// The writer thread of events to a file descriptor: where to send lines, and the thread.
type Writer = (
    std::sync::mpsc::Sender<Vec<u8>>,
    std::thread::JoinHandle<()>,
);
static WRITER: Mutex<Option<Writer>> = Mutex::new(None);

/// Waits until the events queued for a file descriptor are written (or failed), before lockrun
/// exits. A reader that reads nothing holds lockrun here, as any program writing to it: by now
/// the lease is released.
pub fn finish() {
    let writer = WRITER.lock().ok().and_then(|mut w| w.take());
    if let Some((tx, thread)) = writer {
        drop(tx);
        let _ = thread.join();
    }
}

/// The descriptors named by `--events` that were open when lockrun started, before it opened
/// any of its own (see [`note_inherited`]).
static INHERITED: OnceLock<Vec<RawFd>> = OnceLock::new();

/// Notes which descriptors that `args` name after `--events` are open now. The binary calls it
/// first thing, so that a descriptor the caller did not open is refused even when lockrun has
/// since opened one of its own under that number (the runtime's, the lock directory's, a
/// server connection): events written there would be lost, or corrupt a connection.
pub fn note_inherited(args: &[OsString]) {
    let mut open = Vec::new();
    let mut args = args.iter().map(|a| a.to_string_lossy());
    while let Some(a) = args.next() {
        let value = match a.strip_prefix("--events=") {
            Some(v) => Some(v.to_owned()),
            None if a == "--events" => args.next().map(|v| v.into_owned()),
            None => None,
        };
        if let Some(fd) = value.and_then(|v| v.parse::<RawFd>().ok()) {
            // A closed standard descriptor was reopened on /dev/null before `main`: not the
            // caller's.
            let reopened = super::was_closed(fd);
            // SAFETY: fcntl on an integer descriptor has no memory-safety preconditions.
            if fd >= 0 && !reopened && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
                open.push(fd);
            }
        }
    }
    let _ = INHERITED.set(open);
}

impl Events {
    /// Opens `-` (stderr) or a file descriptor number.
    pub fn open(spec: &str, resource: &Resource) -> Result<Events, Failure> {
        let failed = Arc::new(AtomicBool::new(false));
        let spec: Arc<str> = spec.into();
        let out = if &*spec == "-" {
            Some(Arc::new(Mutex::new(std::io::stderr())))
        } else {
            let fd: RawFd = spec.parse().ok().filter(|fd| *fd >= 0).ok_or_else(|| {
                Failure::usage(format!(
                    "--events takes '-' or a file descriptor number, not '{spec}'"
                ))
            })?;
            // The descriptor must be the caller's and open, and the command must not inherit it.
            // SAFETY: fcntl on an integer descriptor has no memory-safety preconditions.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            let inherited = INHERITED.get().map_or(true, |open| open.contains(&fd));
            if flags < 0 || !inherited {
                return Err(Failure::usage(format!(
                    "--events {fd}: file descriptor {fd} is not open"
                )));
            }
            // SAFETY: as above.
            let mode = unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_ACCMODE;
            if mode == libc::O_RDONLY {
                return Err(Failure::usage(format!(
                    "--events {fd}: file descriptor {fd} is open for reading only (write \
                     {fd}>FILE or {fd}>>FILE)"
                )));
            }
            let fd = if fd <= 2 {
                // A standard descriptor is the command's too: write to a copy, and leave it
                // open for the command.
                // SAFETY: as above.
                let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
                if copy < 0 {
                    return Err(Failure::usage(format!(
                        "--events {fd}: file descriptor {fd} cannot be copied: {}",
                        std::io::Error::last_os_error()
                    )));
                }
                copy
            } else {
                // SAFETY: as above.
                unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
                fd
            };
            // SAFETY: the caller handed this descriptor to lockrun for exactly this use (or it
            // is our own copy).
            let mut file = unsafe { File::from_raw_fd(fd) };
            let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let (flag, named) = (Arc::clone(&failed), Arc::clone(&spec));
            let thread = std::thread::Builder::new()
                .name("lockrun-events".into())
                .spawn(move || {
                    for line in rx {
                        if !flag.load(Ordering::Relaxed) {
                            if let Err(e) = file.write_all(&line) {
                                note_failure(&flag, &named, &e);
                            }
                        }
                    }
                })
                .map_err(|e| {
                    Failure::new(
                        crate::exit::Exit::Internal,
                        format!("cannot start the events writer: {e}"),
                    )
                })?;
            if let Ok(mut w) = WRITER.lock() {
                *w = Some((tx, thread));
            }
            None
        };
        Ok(Events {
            out,
            resource: resource.to_string(),
            spec,
            failed,
        })
    }

    /// Writes one event with extra fields.
    pub fn emit(&self, event: &str, fields: Value) {
        let mut obj = Map::new();
        obj.insert("event".into(), event.into());
        obj.insert("time".into(), rfc3339(SystemTime::now()).into());
        obj.insert("resource".into(), self.resource.clone().into());
        if let Value::Object(extra) = fields {
            obj.extend(extra);
        }
        // One write per line, so lines from several processes appending to one file (`3>>log`)
        // never interleave.
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        match &self.out {
            Some(out) => {
                if let Ok(mut out) = out.lock() {
                    let written = out.write_all(line.as_bytes()).and_then(|()| out.flush());
                    if let Err(e) = written {
                        note_failure(&self.failed, &self.spec, &e);
                    }
                }
            }
            None => {
                if let Ok(writer) = WRITER.lock() {
                    if let Some((tx, _)) = writer.as_ref() {
                        let _ = tx.send(line.into_bytes());
                    }
                }
            }
        }
    }

    pub fn holder(lease: Option<&Lease>) -> Value {
        lease.map_or(Value::Null, |l| {
            json!({
                "principal": l.principal,
                "acquired_at": rfc3339(l.acquired_at),
                "expires_at": rfc3339(l.expires_at),
                "fencing_token": l.fencing_token,
            })
        })
    }
}

/// Events are for watching: losing them does not change the run's outcome, but a failed write
/// (a full disk, a reader that has gone) is said once, and no more are written.
fn note_failure(failed: &AtomicBool, spec: &str, e: &std::io::Error) {
    if !failed.swap(true, Ordering::Relaxed) {
        tracing::warn!("cannot write events to --events {spec}: {e}");
    }
}

/// Checks an `--events` value early, so a bad one is a usage error before anything is acquired.
pub fn open_opt(spec: Option<&str>, resource: &Resource) -> Result<Option<Events>, Failure> {
    spec.map(|s| Events::open(s, resource)).transpose()
}
