//! The fault-injection engine shared by `tests/faults_short.rs` (a bounded run in CI) and
//! `tests/faults_long.rs` (the long run behind `scripts/faults-long` and RELIABILITY.md).
//!
//! - [`target`]: the backend under test and its server (pause, resume, crash-restart).
//! - [`proc`]: `/proc`, process groups, death times observed through pidfds, a seeded RNG.
//! - [`history`]: the critical-section history, lockrun's `--events`, the checker.
//! - [`chaos`]: N `lockrun run` workers on one resource while faults are injected.
//! - [`trials`]: single-fault measurements: server paused longer than the TTL, `kill -9` of a
//!   holder, SIGSTOP of a holder.
#![allow(dead_code)]

pub mod chaos;
pub mod history;
pub mod proc;
pub mod target;
pub mod trials;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

/// `--ttl` for a duration, in milliseconds.
pub fn ttl_arg(ttl: Duration) -> String {
    format!("{}ms", ttl.as_millis())
}

/// Spawns `cmd` with `events` as its file descriptor 3 (for `--events 3`).
pub fn spawn_with_fd3(cmd: &mut Command, events: &File) -> Child {
    let fd = events.as_raw_fd();
    // SAFETY: between fork and exec only dup2 and fcntl, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn lockrun")
}

/// Waits for `child` at most `limit`; kills it (and returns `None`) if it is still running then.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return Some(s);
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Minimum, median and maximum of some figures.
pub fn summary(xs: &[f64]) -> (f64, f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2], v[v.len() - 1])
}
