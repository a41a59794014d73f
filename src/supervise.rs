//! Spawning the command, forwarding signals to it, stopping it when the lease is in danger, and
//! reaping its whole process tree.
//!
//! - The command is executed directly (no shell), with stdin, stdout and stderr inherited, in its
//!   own process group. When lockrun is the terminal's foreground job, the command's group is made
//!   the foreground group, so it can read the terminal (a `terraform apply` prompt) and receives
//!   Ctrl-C itself.
//! - HUP, INT, QUIT, TERM, USR1, USR2 and WINCH sent to lockrun are forwarded to the group. A
//!   second INT or TERM while the command is stopping escalates to KILL.
//! - No descendant outlives lockrun: lockrun is a child subreaper; the command gets a parent-death
//!   signal; and a tiny guard process kills the whole group if lockrun dies without saying
//!   goodbye (even by SIGKILL).
//! - When the heartbeat reports the lease lost, the group gets TERM at once and KILL after
//!   `kill_after`. When renewals keep failing, TERM goes out at `deadline - kill_after` and KILL
//!   at the deadline, so the command is dead before anyone else can be granted the lease.
//! - The guard knows the KILL deadline too, and kills the group at that deadline itself if
//!   lockrun has not moved it: a lockrun that is stopped (SIGSTOP, a debugger) or starved when
//!   its lease runs out cannot leave its command running into someone else's lease. A command
//!   killed that way counts as stopped at the deadline (exit 124). The guard is started, and
//!   told the deadline, before the command is spawned, and the command's process tells the guard
//!   its process group itself, between fork and exec: so there is no moment at which the
//!   command runs and the guard could not kill it at the deadline, however early lockrun is
//!   stopped.
//! - When the command exits, what is left of its group (and any orphan reparented to lockrun) is
//!   terminated and reaped before `supervise` returns, so the lease is released only after that.

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::heartbeat::State;

/// The command to run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Changes to the inherited environment: set to `Some(value)`, or remove on `None`.
    pub env: Vec<(String, Option<String>)>,
}

/// Why the command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{program}: command not found")]
    NotFound { program: String },
    #[error("{program}: cannot execute: {source}")]
    CannotExecute { program: String, source: io::Error },
    #[error("cannot set up supervision: {0}")]
    Setup(io::Error),
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
}

/// Why lockrun stopped the command, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A renewal found the lease gone or someone else's.
    Lost,
    /// Renewals failed until the local safety deadline.
    Deadline,
    /// lockrun was asked to stop (INT/TERM) and passed it on.
    Signal(i32),
}

/// The end of a supervised run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub stopped: Option<Stop>,
}

/// Signals passed on to the command's process group.
const FORWARDED: [i32; 7] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// The signal handlers, registered before the lease is acquired so that an INT or TERM that
/// arrives while waiting is handled too.
pub struct Signals {
    forwarded: Vec<(i32, Signal)>,
    child: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> io::Result<Signals> {
        let forwarded = FORWARDED
            .iter()
            .map(|&s| Ok((s, signal(SignalKind::from_raw(s))?)))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Signals {
            forwarded,
            child: signal(SignalKind::child())?,
        })
    }

    /// Resolves with the next INT, TERM, HUP or QUIT (the signals that ask lockrun to stop).
    pub async fn next_stop_request(&mut self) -> i32 {
        let fut = self.forwarded.iter_mut().filter(|(s, _)| {
            matches!(
                *s,
                libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGQUIT
            )
        });
        let futs: Vec<_> = fut
            .map(|(s, sig)| Box::pin(async move { sig.recv().await.map(|_| *s) }))
            .collect();
        match futures_util::future::select_all(futs).await.0 {
            Some(s) => s,
            None => std::future::pending().await,
        }
    }
}

/// Resolves with the next forwarded signal.
async fn next_forwarded(forwarded: &mut [(i32, Signal)]) -> i32 {
    {
        let futs: Vec<_> = forwarded
            .iter_mut()
            .map(|(s, sig)| Box::pin(async move { sig.recv().await.map(|_| *s) }))
            .collect();
        match futures_util::future::select_all(futs).await.0 {
            Some(s) => s,
            None => std::future::pending().await,
        }
    }
}

/// Runs the command under supervision until it and its whole group are gone.
pub async fn supervise(
    spec: &Spec,
    signals: &mut Signals,
    mut lease: watch::Receiver<State>,
    kill_after: Duration,
) -> Result<Outcome, SpawnError> {
    // Orphaned descendants are reparented to us, so that we can reap and kill them.
    // SAFETY: prctl with integer arguments has no memory-safety preconditions.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let tty = foreground_tty();
    // The guard first, with the deadline: the command must never run unguarded (a lockrun
    // stopped right after spawning it would otherwise let it run past the lease).
    let mut guard = Guard::arm();
    match &mut guard {
        Ok(g) => g.kill_at(kill_deadline(&lease.borrow(), kill_after, None).1),
        Err(e) => tracing::warn!(
            "cannot start the guard process ({e}); a SIGKILL of lockrun would orphan the command"
        ),
    }
    let child = match spawn(spec, tty, guard.as_ref().ok().map(|g| g.write_fd)) {
        Ok(child) => child,
        Err(e) => {
            if let Ok(g) = guard {
                g.disarm();
            }
            return Err(e);
        }
    };
    let pgid = child; // the child leads its own group
                      // Never be stopped by writing to a terminal we no longer own.
                      // SAFETY: setting a signal disposition to SIG_IGN is always sound.
    unsafe { libc::signal(libc::SIGTTOU, libc::SIG_IGN) };

    let mut stopped: Option<Stop> = None;
    let mut term_sent = false;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        if let Some(st) = reap(child) {
            break st;
        }
        let (deadline_term, kill_when) = kill_deadline(&lease.borrow(), kill_after, kill_at);
        if let Ok(g) = &mut guard {
            g.kill_at(kill_when);
        }
        let now = Instant::now();
        // Checked before waiting, so that a lockrun resumed after SIGSTOP acts at once.
        if kill_when.is_some_and(|k| now >= k) {
            if stopped.is_none() {
                stopped = Some(Stop::Deadline);
            }
            killpg(pgid, libc::SIGKILL);
            kill_at = None;
            // Wait for the child to die; nothing else matters now.
            let _ = signals.child.recv().await;
            continue;
        }
        if !term_sent && deadline_term.is_some_and(|t| now >= t) {
            tracing::warn!(
                "lease renewal keeps failing: stopping the command before the lease can expire"
            );
            stopped.get_or_insert(Stop::Deadline);
            term_sent = true;
            killpg(pgid, libc::SIGTERM);
            continue;
        }
        let next_timer = [kill_when, if term_sent { None } else { deadline_term }]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            _ = signals.child.recv() => {}
            sig = next_forwarded(&mut signals.forwarded) => {
                let is_stop = sig == libc::SIGINT || sig == libc::SIGTERM;
                if is_stop && stopped.is_some() {
                    tracing::info!("second {} while stopping: killing the command", signame(sig));
                    killpg(pgid, libc::SIGKILL);
                } else {
                    if is_stop {
                        stopped = Some(Stop::Signal(sig));
                    }
                    killpg(pgid, sig);
                }
            }
            changed = lease.changed(), if !matches!(*lease.borrow(), State::Lost) => {
                if changed.is_ok() && *lease.borrow() == State::Lost {
                    tracing::info!("the lease was lost: stopping the command");
                    stopped = Some(Stop::Lost);
                    term_sent = true;
                    killpg(pgid, libc::SIGTERM);
                    kill_at = Some(Instant::now() + kill_after);
                }
            }
            _ = sleep_until_opt(next_timer) => {}
        }
    };
    // Killed while lockrun could not act (stopped, starved) after its lease's deadline: the
    // guard did it, at the deadline.
    if stopped.is_none() && status == Status::Signaled(libc::SIGKILL) {
        stopped = match *lease.borrow() {
            State::Held { trusted_until } if Instant::now() >= trusted_until => {
                Some(Stop::Deadline)
            }
            State::Held { .. } => None,
            State::Lost => Some(Stop::Lost),
        };
    }
    restore_foreground(tty);
    clean_up_group(pgid, signals, kill_after).await;
    if let Ok(g) = guard {
        g.disarm();
    }
    Ok(Outcome { status, stopped })
}

/// When to TERM the command (renewals failing) and when to KILL it: the lease's deadline, or
/// `kill_at` (set after a TERM) if earlier.
fn kill_deadline(
    lease: &State,
    kill_after: Duration,
    kill_at: Option<Instant>,
) -> (Option<Instant>, Option<Instant>) {
    let (deadline_term, deadline_kill) = match *lease {
        State::Held { trusted_until } => (
            Some(
                trusted_until
                    .checked_sub(kill_after)
                    .unwrap_or(trusted_until),
            ),
            Some(trusted_until),
        ),
        State::Lost => (None, None),
    };
    let kill_when = match (kill_at, deadline_kill) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (deadline_term, kill_when)
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Spawns the command in its own process group, foreground on `tty` if given. `guard`: the write
/// end of the guard's pipe, on which the command's process announces its group before it execs.
fn spawn(spec: &Spec, tty: Option<RawFd>, guard: Option<RawFd>) -> Result<i32, SpawnError> {
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args);
    for (k, v) in &spec.env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (setpgid, getpid, write, sigprocmask, tcsetpgrp, prctl, getppid, raise) on values it owns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Tell the guard which group to kill, before the command can run. The descriptor is
            // close-on-exec: the command does not keep the guard's pipe open.
            if let Some(fd) = guard {
                let msg = Guard::group_message(libc::getpid());
                if libc::write(fd, msg.as_ptr().cast(), msg.len()) != msg.len() as isize {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(fd) = tty {
                let mut set: libc::sigset_t = std::mem::zeroed();
                let mut old: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTTOU);
                libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
                libc::tcsetpgrp(fd, libc::getpid());
                libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
    let program = spec.program.to_string_lossy().into_owned();
    match cmd.spawn() {
        Ok(child) => Ok(child.id() as i32),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SpawnError::NotFound { program }),
        Err(e) => Err(SpawnError::CannotExecute { program, source: e }),
    }
}

/// The first of stdin, stdout, stderr that is a terminal on which lockrun's process group is
/// the foreground group.
fn foreground_tty() -> Option<RawFd> {
    (0..3).find(|&fd| {
        // SAFETY: isatty/tcgetpgrp/getpgrp only read process state.
        unsafe { libc::isatty(fd) == 1 && libc::tcgetpgrp(fd) == libc::getpgrp() }
    })
}

fn restore_foreground(tty: Option<RawFd>) {
    if let Some(fd) = tty {
        // SIGTTOU is ignored during supervision, so this works from the background.
        // SAFETY: plain syscalls on a descriptor we did not close.
        unsafe { libc::tcsetpgrp(fd, libc::getpgrp()) };
    }
}

/// Reaps every exited child (we are a subreaper, so orphans are ours too) and returns the main
/// child's status once it has exited.
fn reap(main: i32) -> Option<Status> {
    let mut main_status = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        if pid == main {
            if libc::WIFEXITED(status) {
                main_status = Some(Status::Exited(libc::WEXITSTATUS(status)));
            } else if libc::WIFSIGNALED(status) {
                main_status = Some(Status::Signaled(libc::WTERMSIG(status)));
            }
        }
    }
    main_status
}

/// After the main command exited: TERM what is left of its group and of the orphans reparented
/// to us, KILL after `kill_after`, and reap everything.
async fn clean_up_group(pgid: i32, signals: &mut Signals, kill_after: Duration) {
    let alive = |pgid| killpg(pgid, 0) || !orphans().is_empty();
    reap(0);
    if !alive(pgid) {
        return;
    }
    tracing::info!("the command left processes behind: terminating them");
    killpg(pgid, libc::SIGTERM);
    for pid in orphans() {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let kill_at = Instant::now() + kill_after;
    let mut killed = false;
    let give_up = kill_at + Duration::from_secs(10);
    loop {
        reap(0);
        if !alive(pgid) {
            return;
        }
        let now = Instant::now();
        if now >= give_up {
            tracing::warn!("processes of the command's group could not be reaped");
            return;
        }
        if !killed && now >= kill_at {
            killed = true;
            killpg(pgid, libc::SIGKILL);
            for pid in orphans() {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        tokio::select! {
            _ = signals.child.recv() => {}
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// Children of this process other than the guard: orphans reparented to us as subreaper.
fn orphans() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return vec![];
    };
    let guard = GUARD_PID.load(std::sync::atomic::Ordering::Relaxed);
    let mut out = Vec::new();
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out.retain(|&p| p != guard);
    out
}

/// Sends `sig` to process group `pgid`; true if the group exists.
fn killpg(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

fn signame(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

static GUARD_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// A process that kills the command's group if lockrun dies without disarming it, or when the
/// lease's KILL deadline passes without lockrun having moved it.
///
/// It is started before the command and waits on a pipe written by lockrun and, once, by the
/// command's process between fork and exec. A normal end writes `d` (disarm); `k` and a
/// CLOCK_MONOTONIC time in nanoseconds (8 bytes, little-endian; 0: none) sets the deadline; `p`
/// and a process group id (8 bytes, little-endian) names the command's group. End of file
/// without `d` means lockrun died, and the guard sends SIGKILL to the group; so does the
/// deadline passing (at once when the group is named after its deadline has passed).
struct Guard {
    write_fd: RawFd,
    deadline: Option<Instant>,
}

impl Guard {
    fn arm() -> io::Result<Guard> {
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
        // SAFETY: after fork the child calls only async-signal-safe functions (signal, setsid,
        // open, dup2, close_range, prctl, ppoll, clock_gettime, read, kill, _exit), allocates
        // nothing, and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: closing descriptors we own.
            unsafe {
                libc::close(read_fd);
                libc::close(write_fd);
            }
            return Err(e);
        }
        if pid == 0 {
            // SAFETY: see above; this branch ends in _exit.
            unsafe { guard_main(read_fd) }
        }
        GUARD_PID.store(pid, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the read end belongs to the guard now.
        unsafe { libc::close(read_fd) };
        Ok(Guard {
            write_fd,
            deadline: None,
        })
    }

    /// Tells the guard to kill the group at `at` (or never), if that changed.
    fn kill_at(&mut self, at: Option<Instant>) {
        if at == self.deadline {
            return;
        }
        self.deadline = at;
        let ns = at.map_or(0, |at| {
            let now = Instant::now();
            let mono = monotonic_ns();
            if at >= now {
                mono.saturating_add(at.duration_since(now).as_nanos() as u64)
            } else {
                mono.saturating_sub(now.duration_since(at).as_nanos() as u64)
            }
            .max(1)
        });
        let mut msg = [0u8; 9];
        msg[0] = b'k';
        msg[1..].copy_from_slice(&ns.to_le_bytes());
        // SAFETY: writing from a valid buffer to a descriptor we own; 9 bytes are written
        // atomically (below PIPE_BUF) or not at all.
        unsafe { libc::write(self.write_fd, msg.as_ptr().cast(), msg.len()) };
    }

    /// The message that names the command's process group. Async-signal-safe.
    fn group_message(pgid: i32) -> [u8; 9] {
        let mut msg = [0u8; 9];
        msg[0] = b'p';
        msg[1..].copy_from_slice(&(pgid as u64).to_le_bytes());
        msg
    }

    /// lockrun is ending normally: tell the guard to exit without killing anything.
    fn disarm(self) {
        // SAFETY: writing one byte from a valid buffer to a descriptor we own, then closing it.
        unsafe {
            libc::write(self.write_fd, b"d".as_ptr().cast(), 1);
            libc::close(self.write_fd);
        }
    }
}

/// CLOCK_MONOTONIC (the clock of `Instant`) in nanoseconds. Async-signal-safe.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The guard process. Never returns.
unsafe fn guard_main(read_fd: RawFd) -> ! {
    for s in [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGTSTP,
        libc::SIGPIPE,
    ] {
        libc::signal(s, libc::SIG_IGN);
    }
    // Leave lockrun's session, so a hang-up or a kill of lockrun's group does not take us along.
    libc::setsid();
    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
    if null >= 0 {
        libc::dup2(null, 0);
        libc::dup2(null, 1);
        libc::dup2(null, 2);
    }
    libc::dup2(read_fd, 3);
    libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
    libc::prctl(libc::PR_SET_NAME, c"lockrun-guard".as_ptr(), 0, 0, 0);
    let mut deadline: u64 = 0;
    // The command's process group, once its process has named it (0: not yet).
    let mut pgid: i32 = 0;
    let mut msg = [0u8; 9];
    let mut have = 0usize;
    let mut buf = [0u8; 64];
    loop {
        let mut pfd = libc::pollfd {
            fd: 3,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut left = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // Without a group there is nothing to kill yet: wait for a message.
        let timeout = if deadline == 0 || pgid == 0 {
            std::ptr::null()
        } else {
            let ns = deadline.saturating_sub(monotonic_ns());
            left.tv_sec = (ns / 1_000_000_000) as libc::time_t;
            left.tv_nsec = (ns % 1_000_000_000) as libc::c_long;
            &left as *const libc::timespec
        };
        let n = libc::ppoll(&mut pfd, 1, timeout, std::ptr::null());
        if n < 0 {
            if *libc::__errno_location() == libc::EINTR {
                continue;
            }
            break;
        }
        if n > 0 {
            let r = libc::read(3, buf.as_mut_ptr().cast(), buf.len());
            if r < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if r <= 0 {
                break;
            }
            for &b in &buf[..r as usize] {
                if have == 0 {
                    match b {
                        b'd' => libc::_exit(0),
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
                            deadline = value;
                        } else {
                            pgid = value as i32;
                        }
                        have = 0;
                    }
                }
            }
        }
        if pgid > 0 && deadline != 0 && monotonic_ns() >= deadline {
            // lockrun did not act in time (stopped or starved): the lease may be running out,
            // so the command must not outlive it.
            libc::kill(-pgid, libc::SIGKILL);
            deadline = 0;
        }
    }
    if pgid > 0 {
        libc::kill(-pgid, libc::SIGKILL);
    }
    libc::_exit(0)
}
