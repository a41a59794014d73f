//! The guard: a tiny process that kills the command's group if lockrun dies without disarming
//! it (even by SIGKILL), or when the lease's KILL deadline passes without lockrun having moved it
//! (lockrun stopped or starved).
//!
//! It is started before the command and waits on a pipe written by lockrun and, once, by the
//! command's process between clone and exec. A normal end writes `d` (disarm); `k` and a
//! CLOCK_MONOTONIC time in nanoseconds (8 bytes, little-endian; 0: none) sets the deadline; `p`
//! and a process group id (8 bytes, little-endian) names the command's group. The command's
//! process sends its first deadline and its group together, so that starting the command wakes
//! the guard once. Each write is of whole messages and at most 18 bytes (below `PIPE_BUF`), so
//! writes from the two never interleave. End of file without `d` means lockrun died, and the
//! guard sends SIGKILL to the group, and gives the terminal back to lockrun's process group if
//! the command's group had it (see `give_back_terminal`); the deadline passing sends SIGKILL
//! too (at once when the group is named after its deadline has passed), to the group and to
//! every other descendant of lockrun (see `descendants`). The guard keeps that deadline on CLOCK_BOOTTIME, with a
//! timer on that clock: the monotonic clock stands still while the machine is suspended, and a
//! resume past the deadline kills the group at once rather than a suspension's length later.
//!
//! On x86_64 and aarch64 the guard is started as a clone that shares lockrun's memory
//! (`CLONE_VM`, like a thread) but is a process of its own: starting it copies no page tables and
//! leaves no copy-on-write faults behind, and it outlives lockrun (a SIGKILL ends lockrun's
//! thread group, not the guard; the shared memory lives on while the guard uses it). As lockrun
//! keeps running in the same memory, the guard touches nothing but its own stack: its arguments
//! travel in the clone's argument word, it starts with every signal blocked (no handler of
//! lockrun's ever runs in it; SIGKILL still ends it), and it makes raw system calls only, never a
//! libc function that could write `errno` (which lives in lockrun's thread-local storage) or take
//! a lock. Elsewhere it is forked, and runs the same code.
//!
//! The clone sends no signal when it exits (its exit signal is 0): its end does not interrupt
//! lockrun's release with a SIGCHLD, and a `wait` that is not asked for such children
//! (`__WCLONE`) does not see it, so lockrun learns that the command left no other child behind
//! with one `waitid` (see `supervise::orphans`). A disarmed guard is reaped once lockrun has
//! released the lease, before it exits (see `later`), and any left over at the next
//! [`Guard::arm`].

use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;

mod descendants;

pub(super) use descendants::parse_stat;

use tokio::time::Instant;

/// The guards started and not reaped yet, so that none is mistaken for an orphan of a command.
static GUARDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Whether `pid` is one of our guards.
pub fn is_guard(pid: i32) -> bool {
    GUARDS.lock().is_ok_and(|g| g.contains(&pid))
}

/// Reaps the guards that have exited.
fn reap_exited() {
    let Ok(mut guards) = GUARDS.lock() else {
        return;
    };
    guards.retain(|&pid| {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`. __WALL: the guard is a clone child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        r == 0 // still running; otherwise reaped now, or already (ECHILD)
    });
}

/// The guard's process name. Without "lockrun" in it: `pkill -9 lockrun` (or `pkill -STOP`),
/// meant for lockrun, must not take down the guard too, which is what stops the command's group
/// when lockrun is killed.
pub const GUARD_NAME: &std::ffi::CStr = c"lr-guard";

/// The guard's stack: it needs a few hundred bytes, and about 12 KiB for the walk of lockrun's
/// descendants at the deadline (`descendants`); its lowest page is a guard page.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const STACK: usize = 64 * 1024;

pub struct Guard {
    write_fd: RawFd,
    deadline: Option<Instant>,
    pid: i32,
}

impl Guard {
    /// Starts the guard; the command's process names its group with [`Guard::start_message`].
    pub fn arm() -> io::Result<Guard> {
        reap_exited();
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let (read_fd, write_fd) = (fds[0], fds[1]);
        // Never block lockrun on a guard that does not read (a lost update only leaves the
        // guard an earlier deadline).
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(write_fd, libc::F_SETFL, libc::O_NONBLOCK) };
        let started = start(read_fd);
        // SAFETY: the guard has its own copy of the read end (or failed to start); ours goes.
        unsafe { libc::close(read_fd) };
        match started {
            Ok(pid) => {
                if let Ok(mut guards) = GUARDS.lock() {
                    guards.push(pid);
                }
                Ok(Guard {
                    write_fd,
                    deadline: None,
                    pid,
                })
            }
            Err(e) => {
                // SAFETY: closing a descriptor we own.
                unsafe { libc::close(write_fd) };
                Err(e)
            }
        }
    }

    /// Tells the guard to kill the group at `at` (or never), if that changed.
    pub fn kill_at(&mut self, at: Option<Instant>) {
        if at == self.deadline {
            return;
        }
        let msg = self.deadline_message(at);
        // SAFETY: writing from a valid buffer to a descriptor we own; 9 bytes are written
        // atomically (below PIPE_BUF) or not at all.
        unsafe { libc::write(self.write_fd, msg.as_ptr().cast(), msg.len()) };
    }

    /// The message that sets the deadline to `at` (or none), for the caller to send (the
    /// command's process sends it together with its group, in one write: one wake-up of the
    /// guard); from now on the guard is taken to know it.
    pub fn deadline_message(&mut self, at: Option<Instant>) -> [u8; 9] {
        self.deadline = at;
        let ns = at.map_or(0, monotonic_ns_at);
        let mut msg = [0u8; 9];
        msg[0] = b'k';
        msg[1..].copy_from_slice(&ns.to_le_bytes());
        msg
    }

    /// The write end of the guard's pipe (close-on-exec), for the command's process.
    pub fn fd(&self) -> RawFd {
        self.write_fd
    }

    /// The first write of the command's process: `first` (a [`Guard::deadline_message`]) and
    /// the message that names its process group `pgid`. Async-signal-safe.
    pub fn start_message(first: &[u8; 9], pgid: i32) -> [u8; 18] {
        let mut msg = [0u8; 18];
        msg[..9].copy_from_slice(first);
        msg[9] = b'p';
        msg[10..].copy_from_slice(&(pgid as u64).to_le_bytes());
        msg
    }

    /// lockrun is ending normally: tell the guard to exit without killing anything. Dropping
    /// the guard does the same.
    /// Tells the guard that the command's group is empty: from now on it kills nothing, since
    /// the group's number (the leader's pid, reaped) may be given to another process's group.
    /// lockrun may still be waiting for descendants outside the group, for up to `--kill-after`
    /// and more; a SIGKILL of lockrun meanwhile must not reach a group that reused the number.
    pub fn forget_group(&self) {
        let mut msg = [0u8; 9];
        msg[0] = b'p';
        // SAFETY: writing from a valid buffer to a descriptor we own; 9 bytes are written
        // atomically (below PIPE_BUF) or not at all.
        unsafe { libc::write(self.write_fd, msg.as_ptr().cast(), msg.len()) };
    }

    pub fn disarm(self) {
        drop(self);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: writing one byte from a valid buffer to a descriptor we own, then closing it.
        unsafe {
            libc::write(self.write_fd, b"d".as_ptr().cast(), 1);
            libc::close(self.write_fd);
        }
        // Not waited for here: the guard's wake-up and exit would then come before the release
        // that follows, on the handoff's path (on a busy machine the guard may not run for a
        // while, and this waited for it in 200 µs sleeps). It is reaped when lockrun has
        // released, before it exits (see `later`).
        let pid = self.pid;
        crate::later::defer(move || reap_ending(pid));
    }
}

/// Reaps a guard told to exit, waiting for it briefly (it exits as soon as it reads that): a
/// guard that outlived lockrun would be left to whoever inherits it, and a parent or
/// subreaper that reaps only its own children (a container's first process) would keep it as
/// a zombie.
fn reap_ending(pid: i32) {
    let give_up = std::time::Instant::now() + std::time::Duration::from_millis(100);
    let gone = loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`. __WALL: the guard is a clone child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        if r != 0 {
            break true; // reaped now, or not ours any more (ECHILD)
        }
        if std::time::Instant::now() >= give_up {
            break false; // left to `reap_exited`
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    };
    if gone {
        if let Ok(mut guards) = GUARDS.lock() {
            guards.retain(|&g| g != pid);
        }
    }
}

/// Starts the guard process; returns its pid.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn start(read_fd: RawFd) -> io::Result<i32> {
    // Never unmapped: the guard may run on it after lockrun is gone, and it is mapped once per
    // `lockrun run`.
    let stack = super::map_stack(STACK)?;
    // The argument travels in the argument word itself: the guard reads no shared memory.
    let arg = read_fd as u32 as usize;
    // SAFETY: every signal is blocked across the clone, so the guard starts with all of them
    // blocked and never unblocks one; `entry` touches only its own stack (see the module
    // documentation). lockrun's mask is restored right after.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let top = stack.cast::<u8>().add(STACK).cast::<libc::c_void>();
        // No exit signal: see the module documentation.
        let pid = libc::clone(entry, top, libc::CLONE_VM, arg as *mut _);
        let error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            libc::munmap(stack, STACK);
            return Err(error);
        }
        Ok(pid)
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: runs in the guard only; see `guard_main`.
    unsafe { guard_main(arg as usize as u32 as RawFd) }
}

/// Starts the guard process; returns its pid.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn start(read_fd: RawFd) -> io::Result<i32> {
    // SAFETY: as for the clone: every signal blocked in the child, which makes only system
    // calls and never returns.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::fork();
        if pid == 0 {
            guard_main(read_fd)
        }
        let error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(error);
        }
        Ok(pid)
    }
}

/// CLOCK_MONOTONIC (the clock of `Instant`) in nanoseconds.
/// `at` as a CLOCK_MONOTONIC reading in nanoseconds (at least 1), as the guard and the
/// command's process read that clock.
pub(super) fn monotonic_ns_at(at: Instant) -> u64 {
    let now = Instant::now();
    let mono = monotonic_ns();
    if at >= now {
        mono.saturating_add(at.duration_since(now).as_nanos() as u64)
    } else {
        mono.saturating_sub(now.duration_since(at).as_nanos() as u64)
    }
    .max(1)
}

pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    timespec_ns(&ts)
}

fn timespec_ns(ts: &libc::timespec) -> u64 {
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The guard. Never returns; makes raw system calls only.
unsafe fn guard_main(read_fd: RawFd) -> ! {
    // Leave lockrun's process group, so a kill of that group (a shell's `kill %1`, a
    // supervisor's kill of the job's group) does not reach us; a hang-up does not either, as it
    // goes to the foreground group and every signal but SIGKILL and SIGSTOP is blocked here.
    // Not `setsid`: with the scheduler's autogroups on (the default on most distributions), a
    // new session also makes a new scheduling group, created here and torn down when the guard
    // exits, at every run; that cost lockrun 2.5-5% of its contended throughput (BENCHMARKS.md,
    // "Session 12").
    let ours = sys::call(libc::SYS_getpgid, [0; 6]) as i32;
    // lockrun, whose descendants the KILL at the deadline reaches, and this guard, not one.
    let lockrun = sys::call(libc::SYS_getppid, [0; 6]) as i32;
    let me = sys::call(libc::SYS_getpid, [0; 6]) as i32;
    sys::call(libc::SYS_setpgid, [0; 6]);
    let null = sys::call(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as usize,
            c"/dev/null".as_ptr() as usize,
            libc::O_RDWR as usize,
            0,
            0,
            0,
        ],
    );
    if null >= 0 {
        for fd in 0..3 {
            if null as usize != fd {
                sys::call(libc::SYS_dup3, [null as usize, fd, 0, 0, 0, 0]);
            }
        }
    }
    if read_fd != 3 {
        sys::call(libc::SYS_dup3, [read_fd as usize, 3, 0, 0, 0, 0]);
    }
    sys::call(libc::SYS_close_range, [4, u32::MAX as usize, 0, 0, 0, 0]);
    sys::call(
        libc::SYS_prctl,
        [
            libc::PR_SET_NAME as usize,
            GUARD_NAME.as_ptr() as usize,
            0,
            0,
            0,
            0,
        ],
    );
    let clock = |id: libc::clockid_t| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        sys::call(
            libc::SYS_clock_gettime,
            [id as usize, std::ptr::addr_of_mut!(ts) as usize, 0, 0, 0, 0],
        );
        timespec_ns(&ts)
    };
    // lockrun sends deadlines on CLOCK_MONOTONIC, which stands still while the machine is
    // suspended; the stores keep counting. The guard keeps its deadline on CLOCK_BOOTTIME,
    // which counts the suspension too, with a timer on that clock: after a resume past the
    // deadline it fires at once, and the command does not run on while its lease may have been
    // granted elsewhere. Without the timer (a kernel or sandbox that refuses it), a monotonic
    // timeout, as before.
    // Sets `fd`'s timer to fire at `at` on its clock (0: disarmed); the call's result.
    let settime = |fd: isize, at: u64| {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as _,
                tv_nsec: (at % 1_000_000_000) as libc::c_long,
            },
        };
        sys::call(
            libc::SYS_timerfd_settime,
            [
                fd as usize,
                libc::TFD_TIMER_ABSTIME as usize,
                std::ptr::addr_of!(spec) as usize,
                0,
                0,
                0,
            ],
        )
    };
    let mut timer = sys::call(
        libc::SYS_timerfd_create,
        [
            libc::CLOCK_BOOTTIME as usize,
            (libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) as usize,
            0,
            0,
            0,
            0,
        ],
    );
    // A timer that cannot be set (a sandbox that allows one call but not the other) is no timer.
    if timer >= 0 && settime(timer, 0) < 0 {
        sys::call(libc::SYS_close, [timer as usize, 0, 0, 0, 0, 0]);
        timer = -1;
    }
    let timer = timer;
    let clock_id = if timer >= 0 {
        libc::CLOCK_BOOTTIME
    } else {
        libc::CLOCK_MONOTONIC
    };
    let now = || clock(clock_id);
    let arm = |at: u64| {
        settime(timer, at);
    };
    let kill_group = |pgid: i32| {
        sys::call(
            libc::SYS_kill,
            [
                (-pgid) as isize as usize,
                libc::SIGKILL as usize,
                0,
                0,
                0,
                0,
            ],
        )
    };
    let mut deadline: u64 = 0;
    // The command's process group, once its process has named it (0: not yet, or forgotten).
    let mut pgid: i32 = 0;
    // Whether the command has started (its process named its group).
    let mut started = false;
    let mut msg = [0u8; 9];
    let mut have = 0usize;
    let mut buf = [0u8; 64];
    loop {
        let mut pfds = [
            libc::pollfd {
                fd: 3,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: timer as i32,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let mut left = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // Without a group there is nothing to kill yet: wait for a message. With the timer, it
        // wakes the poll at the deadline.
        let timeout = if deadline == 0 || !started || timer >= 0 {
            0 // NULL: no timeout
        } else {
            let ns = deadline.saturating_sub(now());
            left.tv_sec = (ns / 1_000_000_000) as _;
            left.tv_nsec = (ns % 1_000_000_000) as libc::c_long;
            std::ptr::addr_of!(left) as usize
        };
        let watched = if timer >= 0 { 2 } else { 1 };
        let n = sys::call(
            libc::SYS_ppoll,
            [
                std::ptr::addr_of_mut!(pfds) as usize,
                watched,
                timeout,
                0,
                8,
                0,
            ],
        );
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n < 0 {
            break;
        }
        if n > 0 && pfds[1].revents != 0 {
            // Expired: take the count, so the timer stops being readable.
            let mut count = [0u8; 8];
            sys::call(
                libc::SYS_read,
                [timer as usize, count.as_mut_ptr() as usize, 8, 0, 0, 0],
            );
        }
        if n > 0 && pfds[0].revents != 0 {
            let r = sys::call(
                libc::SYS_read,
                [3, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
            );
            if r == -(libc::EINTR as isize) {
                continue;
            }
            if r <= 0 {
                break;
            }
            for &b in &buf[..r as usize] {
                if have == 0 {
                    match b {
                        b'd' => sys::exit(),
                        b'k' | b'p' => {
                            msg[0] = b;
                            have = 1;
                        }
                        _ => {}
                    }
                } else {
                    msg[have] = b;
                    have += 1;
                    if have == msg.len() {
                        let mut value: u64 = 0;
                        for &x in msg[1..].iter().rev() {
                            value = (value << 8) | u64::from(x);
                        }
                        if msg[0] == b'k' {
                            deadline = if timer >= 0 {
                                let at = on_boot_clock(
                                    value,
                                    clock(libc::CLOCK_MONOTONIC),
                                    clock(libc::CLOCK_BOOTTIME),
                                );
                                arm(at);
                                at
                            } else {
                                value
                            };
                        } else {
                            pgid = value as i32;
                            started |= pgid > 0;
                        }
                        have = 0;
                    }
                }
            }
        }
        if started && deadline != 0 && now() >= deadline {
            // lockrun did not act in time (stopped or starved): the lease may be running out,
            // so neither the command nor anything it started may outlive it: its group (unless
            // forgotten, when empty), and every descendant of lockrun outside it.
            if pgid > 0 {
                kill_group(pgid);
            }
            descendants::kill_all(lockrun, me);
            deadline = 0;
        }
    }
    // End of file without `d`: lockrun is gone.
    if pgid > 0 {
        kill_group(pgid);
        give_back_terminal(pgid, ours);
    }
    sys::exit()
}

/// lockrun died while the command's group `pgid` (just killed) may hold the terminal: gives the
/// terminal back to lockrun's process group `ours`, as lockrun would have, so that a script
/// around lockrun can read it again (otherwise its next read stops it, or fails). It is taken
/// from the command's group, or from a group that no longer exists (one the command made: a
/// nested lockrun's command, an interactive shell's job), waiting up to [`GIVE_BACK_FOR_NS`]
/// for such a group to die with the command; never from a live group of anyone else, such as
/// a job-control shell that has taken its terminal back. Raw system calls only (see
/// `guard_main`); SIGTTOU is blocked here, so the guard may set the foreground group from the
/// background.
unsafe fn give_back_terminal(pgid: i32, ours: i32) {
    if ours <= 0 {
        return;
    }
    let tty = sys::call(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as usize,
            c"/dev/tty".as_ptr() as usize,
            (libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC) as usize,
            0,
            0,
            0,
        ],
    );
    if tty < 0 {
        return; // no controlling terminal
    }
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: GIVE_BACK_PAUSE_NS as _,
    };
    for _ in 0..GIVE_BACK_FOR_NS / GIVE_BACK_PAUSE_NS {
        let mut foreground: libc::pid_t = 0;
        let got = sys::call(
            libc::SYS_ioctl,
            [
                tty as usize,
                libc::TIOCGPGRP as usize,
                std::ptr::addr_of_mut!(foreground) as usize,
                0,
                0,
                0,
            ],
        );
        if got != 0 || foreground <= 0 || foreground == ours {
            break;
        }
        let gone = || {
            sys::call(
                libc::SYS_kill,
                [(-foreground) as isize as usize, 0, 0, 0, 0, 0],
            ) == -(libc::ESRCH as isize)
        };
        if foreground == pgid || gone() {
            sys::call(
                libc::SYS_ioctl,
                [
                    tty as usize,
                    libc::TIOCSPGRP as usize,
                    std::ptr::addr_of!(ours) as usize,
                    0,
                    0,
                    0,
                ],
            );
            break;
        }
        sys::call(
            libc::SYS_clock_nanosleep,
            [
                libc::CLOCK_MONOTONIC as usize,
                0,
                std::ptr::addr_of!(pause) as usize,
                0,
                0,
                0,
            ],
        );
    }
    sys::call(libc::SYS_close, [tty as usize, 0, 0, 0, 0, 0]);
}

/// How long the guard waits for the terminal's foreground group to be the command's or gone,
/// and how often it looks, in nanoseconds.
const GIVE_BACK_FOR_NS: i64 = 300_000_000;
const GIVE_BACK_PAUSE_NS: i64 = 10_000_000;

/// A CLOCK_MONOTONIC deadline (0: none) as the same moment on CLOCK_BOOTTIME, given both
/// clocks read now; 0 stays 0, and a deadline already past maps to one already past.
fn on_boot_clock(monotonic_deadline: u64, monotonic_now: u64, boot_now: u64) -> u64 {
    if monotonic_deadline == 0 {
        return 0;
    }
    if monotonic_deadline >= monotonic_now {
        boot_now.saturating_add(monotonic_deadline - monotonic_now)
    } else {
        boot_now
            .saturating_sub(monotonic_now - monotonic_deadline)
            .max(1)
    }
}

/// Raw system calls: the result, or minus the error number; `errno` is never touched.
mod sys {
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn call(n: libc::c_long, a: [usize; 6]) -> isize {
        let ret: isize;
        std::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
        ret
    }

    #[cfg(target_arch = "aarch64")]
    pub unsafe fn call(n: libc::c_long, a: [usize; 6]) -> isize {
        let ret: isize;
        std::arch::asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            in("x4") a[4],
            in("x5") a[5],
            options(nostack),
        );
        ret
    }

    /// In a forked guard `errno` is the guard's own, so libc's wrapper will do.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub unsafe fn call(n: libc::c_long, a: [usize; 6]) -> isize {
        let r = libc::syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
        if r < 0 {
            -(*libc::__errno_location() as isize)
        } else {
            r as isize
        }
    }

    /// Ends the guard (its thread group: the guard alone).
    pub unsafe fn exit() -> ! {
        loop {
            call(libc::SYS_exit_group, [0; 6]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::on_boot_clock;

    #[test]
    fn a_monotonic_deadline_becomes_the_same_moment_on_the_boot_clock() {
        // The boot clock is ahead by the time the machine has been suspended (here 500).
        assert_eq!(on_boot_clock(0, 1_000, 1_500), 0);
        assert_eq!(on_boot_clock(1_200, 1_000, 1_500), 1_700);
        assert_eq!(on_boot_clock(1_000, 1_000, 1_500), 1_500);
        assert_eq!(on_boot_clock(900, 1_000, 1_500), 1_400);
        // Long past: still a deadline (never 0, which means none), and already due.
        assert_eq!(on_boot_clock(1, 1_000, 500), 1);
        assert_eq!(on_boot_clock(u64::MAX, 1, 2), u64::MAX);
    }
}
