//! Processes seen from outside: `/proc`, process groups, and exact death times through pidfds.
//!
//! A death time is observed, not guessed: before a fault is injected, every live member of the
//! target's process group gets a pidfd (`pidfd_open`, Linux 5.3+); a pidfd becomes readable when
//! its process exits. The death of the group is the wall-clock time read right after the last
//! pidfd became readable, provided a fresh scan of `/proc` then finds no member left. It is an
//! upper bound of the true moment, late by the wake-up latency of one thread (a few µs at the
//! real-time priority the watching thread takes where it may, see [`GroupWatch::spawn`]).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// CLOCK_REALTIME in nanoseconds since the epoch: the clock of the history file and of lockrun's
/// `--events` timestamps.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i64
}

/// Nanoseconds to milliseconds, for reports.
pub fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// The fields of `/proc/PID/stat` the fault tests need.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

pub fn stat(pid: i32) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = s.rsplit_once(')')?.1.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some(Stat { state, ppid, pgrp })
}

/// The process name (`/proc/PID/comm`).
pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Live (non-zombie) members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            stat(pid).is_some_and(|s| s.pgrp == pgid && s.state != 'Z' && s.state != 'X')
        })
        .collect()
}

pub fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) == 0 }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a descriptor we now own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits until `fd` (a pidfd) is readable, i.e. its process exited; false on timeout.
fn wait_readable(fd: &OwnedFd, until: Instant) -> bool {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, 1000) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n > 0 {
            return true;
        }
    }
}

/// The members of a process group, each with a pidfd, taken *before* a fault is injected.
pub struct GroupWatch {
    pub pgid: i32,
    pub pids: Vec<i32>,
    fds: Vec<OwnedFd>,
}

/// How a watched group ended.
#[derive(Debug, Clone)]
pub enum Gone {
    /// Every member exited; the wall-clock time (ns) right after the last one did.
    At(i64),
    /// Members still alive when the limit ran out.
    Survivors(Vec<i32>),
}

impl GroupWatch {
    /// Opens a pidfd on every live member of group `pgid`.
    pub fn new(pgid: i32) -> GroupWatch {
        let pids = group_members(pgid);
        let fds = pids.iter().filter_map(|&p| pidfd_open(p)).collect();
        GroupWatch { pgid, pids, fds }
    }

    /// Blocks until the whole group is gone or `limit` passes.
    pub fn wait(mut self, limit: Duration) -> Gone {
        let until = Instant::now() + limit;
        loop {
            for fd in &self.fds {
                if !wait_readable(fd, until) {
                    return Gone::Survivors(group_members(self.pgid));
                }
            }
            let t = now_ns();
            // A member forked after the scan has no pidfd yet: scan again.
            let left = group_members(self.pgid);
            if left.is_empty() {
                return Gone::At(t);
            }
            if Instant::now() >= until {
                return Gone::Survivors(left);
            }
            self.fds = left.iter().filter_map(|&p| pidfd_open(p)).collect();
            if self.fds.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Waits in a thread of its own, at real-time priority where that is allowed (as root, as
    /// in CI). The death time is read when the thread wakes after the last exit; at normal
    /// priority, on a machine kept busy by the other tests, that wake-up can come later than
    /// lockrun's reap, release and the next holder's start (0.3 ms here), which would show as an
    /// overlap that did not happen.
    pub fn spawn(self, limit: Duration) -> std::thread::JoinHandle<Gone> {
        std::thread::spawn(move || {
            let param = libc::sched_param { sched_priority: 1 };
            // SAFETY: sched_setscheduler on the calling thread (0) with a valid parameter; a
            // refusal (no privilege) leaves the thread as it was.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
            self.wait(limit)
        })
    }
}

/// A small, seedable generator (xorshift64*), so a failing run can be repeated with its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn from_entropy() -> (Rng, u64) {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).expect("random");
        let seed = u64::from_le_bytes(b) | 1;
        (Rng::new(seed), seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform between `lo` and `hi`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi.saturating_sub(lo)).mul_f64(self.unit())
    }
}
