//! Spawning the command, forwarding signals to it, stopping it when the lease is in danger, and
//! reaping its whole process tree.
//!
//! - The command is executed directly (no shell), with stdin, stdout and stderr inherited, in its
//!   own process group. When lockrun is the terminal's foreground job, the command's group is made
//!   the foreground group, so it can read the terminal (a `terraform apply` prompt) and receives
//!   Ctrl-C itself. When Ctrl-Z stops it, lockrun takes the terminal back and stops itself, so
//!   the shell sees the job stopped; continued, it hands the terminal back and continues the
//!   command (see `follow_stop`). A job started in the background, or moved there, is followed
//!   the same way when its command stops on reading the terminal; and a command that stops so
//!   after a running job was brought to the foreground gets the terminal then.
//! - HUP, INT, QUIT, TERM, USR1, USR2 and WINCH sent to lockrun are forwarded to the group. A
//!   second INT or TERM while the command is stopping escalates to KILL.
//! - No descendant outlives lockrun: lockrun is a child subreaper; the command gets a parent-death
//!   signal; and a tiny guard process kills the whole group if lockrun dies without saying
//!   goodbye (even by SIGKILL).
//! - When the heartbeat reports the lease lost, the group gets TERM at once and KILL after
//!   `kill_after`. When renewals keep failing, TERM goes out at `deadline - kill_after` and KILL
//!   at the deadline, so the command is dead before anyone else can be granted the lease.
//!   The KILLs also go to every descendant outside the group (`setsid`), found through /proc's
//!   lists of children, which hold them all since lockrun is their subreaper.
//! - The guard knows the KILL deadline too, and kills the group (and every other descendant of
//!   lockrun, see `guard::descendants`) at that deadline itself if lockrun has not moved it: a lockrun that is stopped (SIGSTOP, a debugger) or starved when
//!   its lease runs out cannot leave its command running into someone else's lease. A command
//!   killed that way counts as stopped at the deadline (exit 124). The guard is started before
//!   the command is spawned, and the command's process tells the guard the deadline and its
//!   process group itself (in one write), between fork and exec: so there is no moment at which
//!   the command runs and the guard could not kill it at the deadline, however early lockrun is
//!   stopped.
//! - When the command exits, what is left of its group (and any descendant outside it) is
//!   terminated and reaped before `supervise` returns, so the lease is released only after that;
//!   its KILL comes no later than the lease's deadline or a stop's KILL already due.

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::heartbeat::State;
pub use guard::Guard;
pub use spawn::resolve;
use spawn::{spawn, Setup};
use tree::{descendant_pids, group_exists, kill_all, killpg, orphans};

mod guard;
mod spawn;
mod tree;

/// The command to run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: OsString,
    /// Where `program` was found in `$PATH` ahead of time ([`resolve`]); `None` to search at
    /// exec time.
    pub path: Option<OsString>,
    pub args: Vec<OsString>,
    /// Changes to the inherited environment: set to `Some(value)`, or remove on `None`.
    pub env: Vec<(String, Option<String>)>,
    /// What lockrun was started with that Rust's runtime changed before `main`, to be handed to
    /// the command as lockrun got it.
    pub started_with: StartedWith,
}

/// What the caller handed lockrun that Rust's runtime changes before `main` (it reopens closed
/// standard descriptors on /dev/null and ignores SIGPIPE), noted by the binary before that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartedWith {
    /// Bits 0, 1, 2: descriptor 0, 1, 2 was closed. The command gets it closed too (as under
    /// flock(1): `echo hi >&-` fails), not a /dev/null that swallows its output.
    pub closed_std: u8,
    /// SIGPIPE was ignored: the command inherits that (as under flock(1)); else its default.
    pub sigpipe_ignored: bool,
}

/// Why the command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{program}: command not found{}", builtin_hint(program))]
    NotFound { program: String },
    #[error("{program}: cannot execute: {why}")]
    CannotExecute { program: String, why: String },
    #[error("cannot set up supervision: {0}")]
    Setup(io::Error),
    /// The lease could no longer be trusted when the command was to start (see `spawn`); it
    /// was not started.
    #[error("the lease could no longer be trusted when the command was to start (lockrun was held up since the grant); the command was not started")]
    Late,
    /// A renewal found the lease gone or someone else's before the command started; it was not
    /// started.
    #[error("the lease was lost before the command started; the command was not started")]
    Lost,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub stopped: Option<Stop>,
    /// The command died of INT or QUIT, a keyboard interrupt: lockrun should die of it too
    /// ([`crate::exit::Exit::Interrupted`]), also sending it to its own group (`true`) when the
    /// terminal sent it to the command's group alone.
    pub interrupt: Option<(i32, bool)>,
    /// Processes of the command that outlived their KILL (another user's) and were still there
    /// when the lease was lost or ran out: they may run alongside the next holder.
    pub survivors: Vec<i32>,
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

/// Every signal lockrun's process may have a handler for: the forwarded ones and SIGCHLD (ours),
/// SIGSEGV and SIGBUS (the Rust runtime's stack overflow report). The command's process resets
/// those of them that are caught; test `may_catch_names_every_caught_signal` checks the list.
const MAY_CATCH: [i32; FORWARDED.len() + 4] = {
    let mut all = [0; FORWARDED.len() + 4];
    let mut i = 0;
    while i < FORWARDED.len() {
        all[i] = FORWARDED[i];
        i += 1;
    }
    all[i] = libc::SIGCHLD;
    all[i + 1] = libc::SIGSEGV;
    all[i + 2] = libc::SIGBUS;
    all[i + 3] = libc::SIGTSTP;
    all
};

/// The signal mask lockrun was started with, which the command gets (see [`Signals::install`]).
static INHERITED_MASK: std::sync::OnceLock<libc::sigset_t> = std::sync::OnceLock::new();

/// The signal mask the command is to start with, if lockrun recorded the one it started with.
fn inherited_mask() -> Option<libc::sigset_t> {
    INHERITED_MASK.get().copied()
}

/// The signal handlers, registered before the lease is acquired so that an INT or TERM that
/// arrives while waiting is handled too.
pub struct Signals {
    forwarded: Vec<(i32, Signal)>,
    child: Signal,
    /// The signals with a handler once ours are installed: those the command's process resets.
    caught: libc::sigset_t,
}

impl Signals {
    /// Installs the handlers. A signal that lockrun was started with ignored (`nohup` ignores
    /// HUP, a shell ignores INT and QUIT for a background job) stays ignored, for lockrun and for
    /// the command, which inherits that, as it would without lockrun: it is neither caught nor
    /// forwarded.
    ///
    /// The signals lockrun waits for are unblocked, should it have been started with them
    /// blocked (a parent that blocked SIGCHLD and did not unblock it before the exec): lockrun
    /// would otherwise learn of the command's end only at its next renewal, a third of the TTL
    /// later, holding the lease meanwhile. The command gets the mask lockrun was started with.
    pub fn install() -> io::Result<Signals> {
        let forwarded = FORWARDED
            .iter()
            .filter(|&&s| spawn::action(s) != Some(libc::SIG_IGN))
            .map(|&s| Ok((s, signal(SignalKind::from_raw(s))?)))
            .collect::<io::Result<Vec<_>>>()?;
        // SAFETY: sigset_t manipulation on local values, and a mask change of this thread.
        unsafe {
            let mut wanted: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut wanted);
            libc::sigaddset(&mut wanted, libc::SIGCHLD);
            for (s, _) in &forwarded {
                libc::sigaddset(&mut wanted, *s);
            }
            if libc::pthread_sigmask(libc::SIG_UNBLOCK, &wanted, &mut old) == 0 {
                let _ = INHERITED_MASK.set(old);
            }
        }
        let child = signal(SignalKind::child())?;
        Ok(Signals {
            forwarded,
            child,
            caught: spawn::caught_signals(&MAY_CATCH),
        })
    }

    /// Resolves with the next INT, TERM, HUP, QUIT, USR1 or USR2: the signals whose default
    /// action ends a process, which end lockrun's wait for the lease as they would end
    /// flock(1)'s (USR1 and USR2 used to be kept, and passed on to the command as it started,
    /// which they killed at once).
    pub async fn next_stop_request(&mut self) -> i32 {
        let fut = self.forwarded.iter_mut().filter(|(s, _)| {
            matches!(
                *s,
                libc::SIGINT
                    | libc::SIGTERM
                    | libc::SIGHUP
                    | libc::SIGQUIT
                    | libc::SIGUSR1
                    | libc::SIGUSR2
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

/// How long the machine has been suspended since it booted: CLOCK_BOOTTIME counts it,
/// CLOCK_MONOTONIC (the clock of `Instant`) does not.
fn suspended() -> Duration {
    let read = |id| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into `ts`.
        unsafe { libc::clock_gettime(id, &mut ts) };
        Duration::new(
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.clamp(0, 999_999_999) as u32,
        )
    };
    read(libc::CLOCK_BOOTTIME).saturating_sub(read(libc::CLOCK_MONOTONIC))
}

/// Runs the command under supervision until it and its whole group are gone. `guard` is
/// [`Guard::arm`]'s result, which the caller may get early (while it waits for the lease), so
/// that starting the guard is not between the grant and the command's start.
pub async fn supervise(
    spec: &Spec,
    signals: &mut Signals,
    mut lease: watch::Receiver<State>,
    kill_after: Duration,
    mut guard: io::Result<Guard>,
) -> Result<Outcome, SpawnError> {
    // Orphaned descendants are reparented to us, so that we can reap and kill them.
    // SAFETY: prctl with integer arguments has no memory-safety preconditions.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // A command whose standard descriptors are all redirected may still open /dev/tty (a
    // password prompt): the terminal is then reached through a descriptor of our own.
    let opened = (controlling_tty().is_none())
        .then(open_controlling_tty)
        .flatten();
    // The command is given the terminal at once only when lockrun is a job of its own, or
    // reads the terminal: a script without job control that starts lockrun with `&` keeps
    // lockrun in its own process group, the foreground one, and its next `read` would stop it
    // (SIGTTIN) if lockrun gave the command the terminal (`make`, which lockrun does not lead
    // either, leaves lockrun the terminal as its standard input). Otherwise the command gets it
    // when it stops to use it (a password prompt on /dev/tty; see `follow_stop`).
    let tty = may_take_terminal()
        .then(|| foreground_tty().or(opened.filter(|&fd| is_foreground(fd))))
        .flatten();
    // The terminal lockrun is attached to, foreground or not: a job started with `&`, or put in
    // the background with `bg`, may be brought to the foreground later (`fg`).
    let terminal = tty.or_else(controlling_tty).or(opened);
    // The guard learns the deadline before the command can run, from the command's process
    // (in the same write as its group): the command must never run unguarded (a lockrun
    // stopped right after spawning it would otherwise let it run past the lease).
    let (start_by, first) = kill_deadline(&lease.borrow(), kill_after, None);
    // A lease already lost leaves no time at all: the child then does not start the command.
    let start_by = match *lease.borrow() {
        State::Lost => Some(Instant::now()),
        State::Held { .. } => start_by,
    };
    let setup = Setup {
        tty,
        guard: match &mut guard {
            Ok(g) => Some((g.fd(), g.deadline_message(first))),
            Err(e) => {
                tracing::warn!(
                    "cannot start the guard process ({e}); a SIGKILL of lockrun would orphan the command"
                );
                None
            }
        },
        caught: Some(signals.caught),
        start_by,
    };
    let spawned = spawn(spec, setup);
    crate::later::run();
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            if let Ok(g) = guard {
                g.disarm();
            }
            // The child may have made its group the terminal's foreground before it failed (or
            // found it too late to start): the terminal comes back to lockrun's group, as after
            // a command that ran.
            // SAFETY: setting a signal disposition to SIG_IGN is always sound.
            unsafe { libc::signal(libc::SIGTTOU, libc::SIG_IGN) };
            restore_foreground(terminal, -1, tty.is_some());
            if let Some(fd) = opened {
                // SAFETY: closing the descriptor opened above, used by nothing else.
                unsafe { libc::close(fd) };
            }
            return Err(match e {
                SpawnError::Late if *lease.borrow() == State::Lost => SpawnError::Lost,
                e => e,
            });
        }
    };
    let pgid = child; // the child leads its own group
                      // Never be stopped by writing to a terminal we no longer own.
                      // SAFETY: setting a signal disposition to SIG_IGN is always sound.
    unsafe { libc::signal(libc::SIGTTOU, libc::SIG_IGN) };
    // Ctrl-Z that reaches lockrun rather than the command (lockrun's job was brought to the
    // foreground with `fg` while the command ran in the background, so the terminal is not the
    // command's) is passed on to the command; `follow_stop` then stops lockrun's job. Caught
    // from here on only: while lockrun waits for the lease, Ctrl-Z stops it as usual.
    // Without a terminal there is no job to stop: a TSTP stops lockrun alone, as before.
    let mut tstp = (terminal.is_some() && spawn::action(libc::SIGTSTP) != Some(libc::SIG_IGN))
        .then(|| signal(SignalKind::from_raw(libc::SIGTSTP)).ok())
        .flatten();

    let mut stopped: Option<Stop> = None;
    // When lockrun got the INT or TERM that began the stop, if one did.
    let mut stop_asked_at: Option<Instant> = None;
    // INT and QUIT that lockrun itself received (and passed on).
    let mut received_interrupt = false;
    let suspended_before = suspended();
    let mut term_sent = false;
    let mut kill_at: Option<Instant> = None;
    // Whether the stop under way has come to its KILL.
    let mut kill_sent = false;
    let status = loop {
        let reaped = reap(child);
        if let Some(st) = reaped.exited {
            break st;
        }
        if let (Some(sig), Some(fd)) = (reaped.stopped, terminal) {
            if !follow_stop(fd, pgid, sig) && stopped.is_none() {
                // Nobody can continue the job, nor answer the command: end it, as the read
                // it stopped on would have failed without lockrun.
                tracing::warn!(
                    "the command stopped to read the terminal, but no shell can bring \
                     lockrun's job to the foreground (its process group is orphaned): \
                     stopping the command"
                );
                stopped = Some(Stop::Signal(libc::SIGTERM));
                term_sent = true;
                killpg(pgid, libc::SIGTERM);
                killpg(pgid, libc::SIGCONT);
                kill_at = Some(Instant::now() + kill_after);
            }
            continue;
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
            kill_all(pgid, true);
            kill_at = None;
            kill_sent = true;
            // Wait for the child to die; nothing else matters now.
            let _ = signals.child.recv().await;
            continue;
        }
        if !term_sent && deadline_term.is_some_and(|t| now >= t) {
            // The line lockrun ends with says so; here only with -v.
            tracing::info!(
                "lease renewal keeps failing: stopping the command before the lease can expire"
            );
            stopped.get_or_insert(Stop::Deadline);
            term_sent = true;
            // A stopped process acts on TERM only once continued.
            killpg(pgid, libc::SIGTERM);
            killpg(pgid, libc::SIGCONT);
            // Once stopping, see it through: a renewal that succeeds after the TERM does not
            // call off the KILL at this deadline (a command that ignores TERM would otherwise
            // run on, and lockrun would report a stop that did not happen).
            kill_at = kill_when;
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
                received_interrupt |= sig == libc::SIGINT || sig == libc::SIGQUIT;
                if is_stop && stopped.is_some() {
                    if asked_again(stop_asked_at) {
                        tracing::info!("second {} while stopping: killing the command", signame(sig));
                        kill_all(pgid, true);
                        kill_sent = true;
                    }
                } else {
                    if is_stop {
                        stopped = Some(Stop::Signal(sig));
                        stop_asked_at = Some(Instant::now());
                    }
                    term_sent |= sig == libc::SIGTERM;
                    killpg(pgid, sig);
                    if ENDS.contains(&sig) {
                        // A stopped command (`kill -STOP $$`) acts on it only once continued;
                        // `kill` and `timeout(1)` send CONT after it, to lockrun, whose command
                        // is in a group of its own.
                        killpg(pgid, libc::SIGCONT);
                    }
                }
            }
            changed = lease.changed(), if !matches!(*lease.borrow(), State::Lost) => {
                if changed.is_ok() && *lease.borrow() == State::Lost {
                    tracing::info!("the lease was lost: stopping the command");
                    stopped = Some(Stop::Lost);
                    term_sent = true;
                    killpg(pgid, libc::SIGTERM);
                    killpg(pgid, libc::SIGCONT);
                    kill_at = Some(kill_when_lost(kill_at, Instant::now(), kill_after));
                }
            }
            _ = recv_opt(&mut tstp) => {
                killpg(pgid, libc::SIGTSTP);
            }
            _ = sleep_until_opt(next_timer) => {}
        }
    };
    // Killed while lockrun could not act (stopped, starved) after its lease's deadline: the
    // guard did it, at the deadline. The guard counts time the machine spent suspended (see
    // `supervise::guard`), which `Instant` does not.
    if stopped.is_none() && status == Status::Signaled(libc::SIGKILL) {
        let asleep = suspended().saturating_sub(suspended_before);
        stopped = match *lease.borrow() {
            State::Held { trusted_until } if Instant::now() + asleep >= trusted_until => {
                Some(Stop::Deadline)
            }
            State::Held { .. } => None,
            State::Lost => Some(Stop::Lost),
        };
    }
    if tstp.is_some() {
        // Ctrl-Z during the release and after stops lockrun again.
        // SAFETY: setting a signal disposition to its default is always sound.
        unsafe { libc::signal(libc::SIGTSTP, libc::SIG_DFL) };
    }
    restore_foreground(terminal, pgid, tty.is_some());
    if let Some(fd) = opened {
        // SAFETY: closing the descriptor opened above, used by nothing else.
        unsafe { libc::close(fd) };
    }
    // What is left gets no new grace: the KILL of a stop under way stays due when it was, and
    // comes at once if the stop has come to it.
    let due = if kill_sent {
        Some(Instant::now())
    } else {
        kill_at
    };
    let asked = Asked {
        group_termed: term_sent,
        signalled: stop_asked_at.filter(|_| matches!(stopped, Some(Stop::Signal(_)))),
    };
    let forget = || {
        if let Ok(g) = &guard {
            g.forget_group();
        }
    };
    let survivors = clean_up_group(pgid, signals, &lease, kill_after, due, asked, forget).await;
    if !survivors.is_empty() && !matches!(stopped, Some(Stop::Lost | Stop::Deadline)) {
        // The command ended, or was stopped, but what it left could not be killed, and the
        // lease ran out while lockrun waited for it.
        stopped = Some(match *lease.borrow() {
            State::Lost => Stop::Lost,
            State::Held { .. } => Stop::Deadline,
        });
    }
    if let Ok(g) = guard {
        g.disarm();
    }
    let interrupt = match status {
        // Sent to lockrun's group when the command held the terminal and lockrun got no such
        // signal itself: taken for the terminal's (lockrun cannot see who sent it; a `kill
        // -INT` aimed at the command alone is taken so too). Not when lockrun was started with
        // it ignored: then the keyboard's would not have reached lockrun's job either.
        Status::Signaled(s @ (libc::SIGINT | libc::SIGQUIT)) => Some((
            s,
            tty.is_some() && !received_interrupt && spawn::action(s) != Some(libc::SIG_IGN),
        )),
        _ => None,
    };
    Ok(Outcome {
        status,
        stopped,
        interrupt,
        survivors,
    })
}

/// A hint for a command that is not a program: a shell builtin, or a whole command line in one
/// word.
fn builtin_hint(program: &str) -> &'static str {
    const BUILTINS: &[&str] = &[
        "cd", "export", "source", ".", "alias", "set", "unset", "exit", "eval", "exec", "ulimit",
        "umask", "wait", "trap", "shopt", "declare", "local", "read", "if", "for", "while",
    ];
    if BUILTINS.contains(&program) || program.contains(char::is_whitespace) {
        " (a shell builtin or a command line: run it with sh -c '...')"
    } else {
        ""
    }
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

/// When to KILL the group after the lease was found lost at `now`: `kill_after` later, but never
/// later than a KILL already due (a stop for the deadline under way, whose deadline the lost
/// lease no longer tells).
fn kill_when_lost(kill_at: Option<Instant>, now: Instant, kill_after: Duration) -> Instant {
    let t = now + kill_after;
    kill_at.map_or(t, |k| k.min(t))
}

/// A shell (a child of this process) running `script`, whose first line of output is a pid:
/// the shell, its pid, and that pid. For the tests of the walks of the process tree.
#[cfg(test)]
fn shell_with_child(script: &str) -> (std::process::Child, i32, i32) {
    use std::io::BufRead;
    let mut sh = std::process::Command::new("sh")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(sh.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = sh.id() as i32;
    (sh, pid, line.trim().parse::<i32>().unwrap())
}

/// A private anonymous mapping of `size` bytes for the stack of a clone (the command's, the
/// guard's).
fn map_stack(size: usize) -> io::Result<*mut libc::c_void> {
    // SAFETY: a fresh anonymous mapping aliases nothing; the caller owns it.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // A guard page at the bottom: a stack that overflows faults instead of writing into
    // whatever lockrun has mapped below it. (Best effort: the stack works without it.)
    // SAFETY: sysconf has no preconditions; mprotect of the first page of the mapping just made.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE);
        if page > 0 && (page as usize) * 4 <= size {
            libc::mprotect(stack, page as usize, libc::PROT_NONE);
        }
    }
    Ok(stack)
}

async fn recv_opt(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Whether lockrun gives the terminal to the command as it starts it: lockrun leads its process
/// group (a job-control shell's job), or its standard input is a terminal (a foreground
/// command of a script or of `make`). Not when a script without job control started it with
/// `&`, which gives it /dev/null for its input.
fn may_take_terminal() -> bool {
    // SAFETY: getpgrp, getpid and isatty only read process state.
    unsafe { libc::getpgrp() == libc::getpid() || libc::isatty(0) == 1 }
}

/// The first of stdin, stdout, stderr that is a terminal on which lockrun's process group is
/// the foreground group.
fn foreground_tty() -> Option<RawFd> {
    (0..3).find(|&fd| is_foreground(fd))
}

/// Whether `fd` is a terminal on which lockrun's process group is the foreground group.
fn is_foreground(fd: RawFd) -> bool {
    // SAFETY: isatty/tcgetpgrp/getpgrp only read process state.
    unsafe { libc::isatty(fd) == 1 && libc::tcgetpgrp(fd) == libc::getpgrp() }
}

/// lockrun's controlling terminal opened as `/dev/tty`, when it has one (close-on-exec: the
/// command opens its own).
fn open_controlling_tty() -> Option<RawFd> {
    // SAFETY: open with a constant path; the descriptor is ours to close.
    let fd = unsafe {
        libc::open(
            c"/dev/tty".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    (fd >= 0).then_some(fd)
}

/// The descriptor (0, 1 or 2) of lockrun's controlling terminal, in the foreground or not.
fn controlling_tty() -> Option<RawFd> {
    (0..3).find(|&fd| {
        // SAFETY: isatty/tcgetpgrp only read process state; tcgetpgrp fails on a terminal that
        // is not the controlling one.
        unsafe { libc::isatty(fd) == 1 && libc::tcgetpgrp(fd) > 0 }
    })
}

/// Takes the terminal back from what is left of the command, so that lockrun's job ends in the
/// foreground it had: when the command's group holds it, or, if lockrun started in the
/// foreground, a group the command made (gone by now, as the command's whole tree is); never
/// from the shell (the session's leader), which holds it while the job is in the background,
/// nor from a live group of another job (the user's next command, after `bg`).
fn restore_foreground(terminal: Option<RawFd>, pgid: i32, was_foreground: bool) {
    if let Some(fd) = terminal {
        // SIGTTOU is ignored during supervision, so this works from the background.
        // SAFETY: plain syscalls on a descriptor we did not close.
        unsafe {
            let fg = libc::tcgetpgrp(fd);
            let ours = libc::getpgrp();
            let gone = |g: i32| {
                libc::kill(-g, 0) == -1
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
            };
            if fg > 0
                && fg != ours
                && fg != libc::getsid(0)
                && (fg == pgid || (was_foreground && gone(fg)))
            {
                libc::tcsetpgrp(fd, ours);
            }
        }
    }
}

/// What [`reap`] saw of the main child.
struct Reaped {
    /// It exited (or was killed).
    exited: Option<Status>,
    /// It was stopped from the terminal (TSTP, TTIN, TTOU): by the signal.
    stopped: Option<i32>,
}

/// Reaps every exited child (we are a subreaper, so orphans are ours too) and says whether the
/// main child has exited, or has been stopped from the terminal.
fn reap(main: i32) -> Reaped {
    let mut reaped = Reaped {
        exited: None,
        stopped: None,
    };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::WUNTRACED) };
        if pid <= 0 {
            break;
        }
        if pid == main {
            if libc::WIFEXITED(status) {
                reaped.exited = Some(Status::Exited(libc::WEXITSTATUS(status)));
            } else if libc::WIFSIGNALED(status) {
                reaped.exited = Some(Status::Signaled(libc::WTERMSIG(status)));
            } else if libc::WIFSTOPPED(status)
                && matches!(
                    libc::WSTOPSIG(status),
                    libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                )
            {
                reaped.stopped = Some(libc::WSTOPSIG(status));
            }
        }
    }
    reaped
}

/// Job control: the command, the terminal's foreground job, was stopped from the terminal
/// (Ctrl-Z). The shell waits for lockrun's job, not for the command, so lockrun takes the
/// terminal back and stops its own process group the same way: the shell then sees the job
/// stopped and gets its prompt back. When the job is continued, lockrun hands the terminal back to the command if it is in
/// the foreground again (`fg`), and continues the command (`fg` or `bg`). While lockrun is
/// stopped it cannot renew the lease; the guard kills the command at the lease's deadline, as it
/// does for any stopped lockrun.
///
/// Returns false when lockrun could not stop: its process group is orphaned (no shell can
/// continue it), and the command, stopped on the terminal, is left stopped for the caller to
/// end.
fn follow_stop(fd: RawFd, pgid: i32, sig: i32) -> bool {
    // SAFETY: plain syscalls on a descriptor we did not close; SIGTTOU is ignored during
    // supervision, so tcsetpgrp works from the background.
    unsafe {
        // The command stopped for the terminal while lockrun's job has it: the job was brought
        // to the foreground while it ran in the background (`bg`, then `fg`: a running job gets
        // no SIGCONT, so this is when lockrun learns of it). The terminal is the command's.
        if sig != libc::SIGTSTP && libc::tcgetpgrp(fd) == libc::getpgrp() {
            libc::tcsetpgrp(fd, pgid);
            killpg(pgid, libc::SIGCONT);
            return true;
        }
        if libc::tcgetpgrp(fd) == pgid {
            libc::tcsetpgrp(fd, libc::getpgrp());
        }
        // SIGTTOU is ignored here (see above), so a TTOU stop is followed with TSTP. The
        // signal goes to lockrun's whole process group, as Ctrl-Z would have, had the command
        // been in it: under `make`, make stops too, and the shell sees its job stopped.
        let own = if sig == libc::SIGTTOU {
            libc::SIGTSTP
        } else {
            sig
        };
        let sent = std::time::Instant::now();
        // lockrun catches TSTP while it supervises (see `supervise`): its default action, to
        // stop, for the moment of this signal.
        let mut caught: libc::sigaction = std::mem::zeroed();
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(own, &dfl, &mut caught);
        // Unblocked too, should lockrun have been started with it blocked: else lockrun would
        // not stop, and its job would look orphaned below.
        let mut only: libc::sigset_t = std::mem::zeroed();
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, own);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &only, &mut mask);
        libc::kill(0, own);
        libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
        libc::sigaction(own, &caught, std::ptr::null_mut());
        // Continued: in the foreground (`fg`), the terminal goes back to the command.
        if libc::tcgetpgrp(fd) == libc::getpgrp() {
            libc::tcsetpgrp(fd, pgid);
        } else if sig != libc::SIGTSTP && sent.elapsed() < Duration::from_millis(5) {
            // Not stopped at all: the kernel drops stop signals to an orphaned process group.
            // Continued in the background, the command would only stop on the terminal again,
            // at once, and again.
            return false;
        }
    }
    killpg(pgid, libc::SIGCONT);
    true
}

/// After the main command exited: TERM what is left of its group and of the orphans reparented
/// to us, KILL after `kill_after` (or at `due`, the KILL of a stop under way, or at the lease's
/// deadline, if earlier), and reap everything. A second INT or TERM to lockrun KILLs at once.
///
/// Each gets one TERM: the group (unless a stop or lockrun's own TERM already sent it one; it
/// is continued then, for a stopped process to act on it), and each orphan outside the group
/// (`timeout(1)` makes a group of its own, `setsid` a session) as it appears. From the KILL on,
/// every round KILLs every descendant, until none is left.
///
/// Processes that outlive their KILL (lockrun may not signal them: a `sudo` in the command
/// started them as another user) keep the lease: while it is still trusted (renewals go on),
/// lockrun waits for them, however long, as flock(1)'s lock stays with the processes that
/// inherited it. Returns the process ids of those left when the lease is lost or has run out
/// meanwhile (empty: nothing is left), which may then run alongside the next holder.
async fn clean_up_group(
    pgid: i32,
    signals: &mut Signals,
    lease: &watch::Receiver<State>,
    kill_after: Duration,
    due: Option<Instant>,
    asked: Asked,
    forget_group: impl Fn(),
) -> Vec<i32> {
    // Once the group is empty (its leader reaped) while orphans outside it keep lockrun here,
    // its number is free for another process's group: neither lockrun nor the guard (told to
    // forget it) signals the group from then on. (When nothing is left at all, the disarm that
    // follows at once says as much to the guard.)
    let mut group_gone = false;
    let alive = |group_gone: &mut bool| {
        let group = !*group_gone && group_exists(pgid);
        let orphaned = !orphans().is_empty();
        if !group && orphaned && !*group_gone {
            forget_group();
            *group_gone = true;
        }
        group || orphaned
    };
    // Signals the group while it has members.
    let signal_group = |group_gone: bool, sig: i32| !group_gone && killpg(pgid, sig);
    reap(0);
    if !alive(&mut group_gone) {
        return Vec::new();
    }
    tracing::info!("the command left processes behind: terminating them");
    let mut kill_at = Instant::now() + kill_after;
    kill_at = due.map_or(kill_at, |d| d.min(kill_at));
    // Past this, what is left would not die of a KILL: lockrun says so, and waits on.
    let unkillable_after = kill_at + Duration::from_secs(10);
    let mut unkillable = false;
    // The group, then each orphan, that has had its TERM (the group's may have come already:
    // a second TERM is "abort now" to some programs).
    let mut group_termed = asked.group_termed;
    let mut signalled = asked.signalled;
    if group_termed {
        // Its TERM stays pending in a stopped process until it is continued.
        signal_group(group_gone, libc::SIGCONT);
    }
    let mut termed: Vec<i32> = Vec::new();
    loop {
        let now = Instant::now();
        // Never past the lease's deadline (renewals may fail meanwhile).
        let deadline = kill_deadline(&lease.borrow(), kill_after, None).1;
        if let Some(deadline) = deadline {
            kill_at = kill_at.min(deadline);
        }
        if now >= unkillable_after {
            let left = descendant_pids();
            let trusted = *lease.borrow() != State::Lost && deadline.map_or(true, |d| now < d);
            if !trusted {
                return left;
            }
            if !unkillable {
                unkillable = true;
                tracing::warn!(
                    "processes of the command outlived their KILL (lockrun may not signal \
                     processes of another user, as a sudo in the command starts): keeping \
                     the lease until they exit (pids {})",
                    pids(&left)
                );
            }
        }
        let (kill, sig) = if now >= kill_at {
            (true, libc::SIGKILL)
        } else {
            (false, libc::SIGTERM)
        };
        // A stopped process acts on TERM only once continued: CONT follows each TERM.
        if kill {
            kill_all(pgid, !group_gone);
        } else if !group_termed {
            signal_group(group_gone, sig);
            signal_group(group_gone, libc::SIGCONT);
            group_termed = true;
        }
        // TERM for the orphans outside the group (the group's members have had the group's; a
        // descendant outside the group whose parent lives, such as a nested lockrun's command,
        // is left to that parent, which passes its group's TERM on); from the KILL on,
        // `kill_all` reaches every descendant.
        for pid in orphans() {
            // SAFETY: getpgid has no memory-safety preconditions.
            let outside = group_gone || unsafe { libc::getpgid(pid) } != pgid;
            if !kill && outside && !termed.contains(&pid) {
                // SAFETY: kill has no memory-safety preconditions; an orphan is our child, so
                // its number is not reused before we reap it.
                unsafe {
                    libc::kill(pid, sig);
                    libc::kill(pid, libc::SIGCONT);
                }
                termed.push(pid);
            }
        }
        tokio::select! {
            _ = signals.child.recv() => {}
            sig = next_forwarded(&mut signals.forwarded) => {
                // The first INT or TERM (systemd sends one to lockrun as to the command, which may
                // have ended first) asks for what is under way; a second one, to kill.
                if sig == libc::SIGINT || sig == libc::SIGTERM {
                    if signalled.is_some() {
                        if asked_again(signalled) {
                            tracing::info!("second {} while ending leftover processes: killing them", signame(sig));
                            kill_at = Instant::now();
                        }
                    } else {
                        signalled = Some(Instant::now());
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(if unkillable { 500 } else { 10 })) => {}
            _ = lease_lost(lease), if unkillable => {}
        }
        reap(0);
        if !alive(&mut group_gone) {
            return Vec::new();
        }
    }
}

/// Resolves once the lease is lost (never, if the watch ends).
async fn lease_lost(lease: &watch::Receiver<State>) {
    let mut lease = lease.clone();
    if lease.wait_for(|s| *s == State::Lost).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Process ids for a message: `12 34 56`.
pub fn pids(pids: &[i32]) -> String {
    pids.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the command's group was asked before it came to cleaning up.
struct Asked {
    /// It has had a TERM (a stop for the lease, or one forwarded).
    group_termed: bool,
    /// When lockrun got INT or TERM itself: one more, later, KILLs the leftovers at once.
    signalled: Option<Instant>,
}

/// Signals that end a command: forwarded, each is followed by CONT.
const ENDS: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP];

/// INT and TERM that reach lockrun within this of the one that began a stop are the same
/// request: `timeout(1)` signals lockrun and then lockrun's process group, which holds lockrun
/// too, and a CI runner may do the same. Only a later one (a second Ctrl-C, a second `kill`)
/// asks for KILL.
const SAME_REQUEST: Duration = Duration::from_millis(100);

/// Whether an INT or TERM now asks again, for KILL, after the one that came at `first` (none:
/// the stop was lockrun's own, for the lease, and the first signal asks for KILL).
fn asked_again(first: Option<Instant>) -> bool {
    match first {
        Some(t) => t.elapsed() >= SAME_REQUEST,
        None => true,
    }
}

fn signame(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_lease_never_puts_off_a_kill_already_due() {
        let now = Instant::now();
        let grace = Duration::from_secs(4);
        assert_eq!(kill_when_lost(None, now, grace), now + grace);
        // TERM went out for the deadline, due in 1 s: the loss keeps that KILL.
        let due = now + Duration::from_secs(1);
        assert_eq!(kill_when_lost(Some(due), now, grace), due);
        // A later one is brought forward.
        let late = now + Duration::from_secs(9);
        assert_eq!(kill_when_lost(Some(late), now, grace), now + grace);
    }

    #[test]
    fn may_catch_names_every_caught_signal() {
        assert!(FORWARDED.iter().all(|s| MAY_CATCH.contains(s)));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _signals = rt.block_on(async { Signals::install().unwrap() });
        for sig in (1..=64).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP) {
            assert!(
                !spawn::caught(sig) || MAY_CATCH.contains(&sig),
                "signal {sig} has a handler but is not in MAY_CATCH"
            );
        }
    }
}
