//! Starting the command the way `posix_spawn` does, plus the steps `posix_spawn` cannot take.
//!
//! The child is a vfork-style clone: it shares lockrun's memory, and lockrun is suspended until
//! the child has called `execve` (or failed to). Unlike `fork`, that copies no page tables and
//! leaves no copy-on-write faults behind in lockrun, which is most of the cost of starting a
//! short command. Between the clone and the exec the child:
//!
//! - resets every caught signal to its default action (the handlers are lockrun's, and must
//!   not run in the child), and SIGPIPE too (lockrun ignores it; the command should not); which
//!   signals are caught was read ahead of time ([`caught_signals`]), where the caller could;
//! - leads a new process group, and names it to the guard with the deadline (see `guard`), so
//!   the command never runs before the guard can kill it; the group is made the terminal's
//!   foreground group when lockrun owned it;
//! - asks for SIGKILL when lockrun dies (`PR_SET_PDEATHSIG`), and exits at once if lockrun is
//!   already gone;
//! - does not start the command when its start-by time has passed (lockrun was held up between
//!   the grant and the spawn, by a stop or a stalled write, until the lease can no longer be
//!   trusted): it exits, and `spawn` reports [`SpawnError::Late`];
//! - restores lockrun's signal mask, and `execvpe`s the command (PATH search, and `/bin/sh`
//!   for a script without a `#!` line, as a shell does); `execve`s it directly when it was
//!   found in `$PATH` ahead of time (see [`resolve`]).
//!
//! The child calls only async-signal-safe functions, allocates nothing, writes only to its own
//! stack and to `Shared::errno`, and never returns: everything it needs was prepared before the
//! clone. All signals are blocked in lockrun around the clone, so no handler of lockrun's can run
//! on the child's stack.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use super::{SpawnError, Spec};

/// The child's stack, on top of a script's argv: `execvpe` builds each candidate path, and for
/// a script without `#!` a new argv, on it (like glibc's `posix_spawn`, which sizes it so too).
const STACK: usize = 256 * 1024;

/// Everything the child reads, prepared before the clone; and where it reports a failed exec.
struct Shared {
    program: CString,
    /// Where `program` was found in `$PATH` ahead of time (see [`resolve`]).
    path: Option<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    tty: Option<RawFd>,
    /// The write end of the guard's pipe, and the deadline message the child sends with its
    /// group.
    guard: Option<(RawFd, [u8; 9])>,
    /// The signals to reset to their default action (see [`caught_signals`]); every caught one
    /// when `None`.
    reset: Option<libc::sigset_t>,
    started_with: super::StartedWith,
    parent: libc::pid_t,
    mask: libc::sigset_t,
    /// The mask the command starts with: the one lockrun was started with, which may block
    /// signals that lockrun unblocked for itself.
    exec_mask: libc::sigset_t,
    /// The CLOCK_MONOTONIC time (ns) after which the command must not start; 0: none.
    start_by: u64,
    /// Set when the child did not start the command because `start_by` had passed.
    late: AtomicBool,
    /// The errno of the failed step; 0 when the exec succeeded.
    errno: AtomicI32,
}

/// How to start the command, besides its [`Spec`].
#[derive(Default)]
pub struct Setup {
    /// Make the command's group the foreground group of this terminal.
    pub tty: Option<RawFd>,
    /// The write end of the guard's pipe, and the deadline message (see
    /// [`super::Guard::deadline_message`]) that the child sends it together with its group.
    pub guard: Option<(RawFd, [u8; 9])>,
    /// The signals lockrun catches (see [`caught_signals`]); `None`: the child asks for each.
    pub caught: Option<libc::sigset_t>,
    /// The command must not start after this (the lease's TERM point: no trusted time left).
    pub start_by: Option<tokio::time::Instant>,
}

/// Starts `spec` in a new process group as `setup` says; returns its pid.
pub fn spawn(spec: &Spec, setup: Setup) -> Result<i32, SpawnError> {
    let program_name = shown(&spec.program.to_string_lossy());
    let cannot = |source: io::Error| SpawnError::CannotExecute {
        program: program_name.clone(),
        // `Permission denied`, without ` (os error 13)`.
        why: match source.raw_os_error() {
            Some(errno) => nix::errno::Errno::from_raw(errno).desc().to_owned(),
            None => source.to_string(),
        },
    };
    let nul = || {
        cannot(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument or environment variable contains a NUL byte",
        ))
    };
    let program = cstring(&spec.program).ok_or_else(nul)?;
    let args = std::iter::once(spec.program.as_os_str())
        .chain(spec.args.iter().map(OsString::as_os_str))
        .map(cstring)
        .collect::<Option<Vec<CString>>>()
        .ok_or_else(nul)?;
    let env = environment(spec).ok_or_else(nul)?;
    // The pointers below point into `program`, `args` and `env`, which outlive the child's use
    // of them: lockrun stays suspended until the child has exec'd or exited.
    let mut shared = Shared {
        argv: pointers(&args),
        envp: pointers(&env),
        program,
        path: spec.path.as_deref().and_then(cstring),
        tty: setup.tty,
        guard: setup.guard,
        reset: setup.caught,
        started_with: spec.started_with,
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        // SAFETY: an all-zero sigset_t is a valid value to be overwritten below.
        mask: unsafe { std::mem::zeroed() },
        // SAFETY: as above.
        exec_mask: unsafe { std::mem::zeroed() },
        start_by: setup.start_by.map_or(0, super::guard::monotonic_ns_at),
        late: AtomicBool::new(false),
        errno: AtomicI32::new(0),
    };

    // Whole pages, so that the top of the stack is aligned as the ABI wants.
    let argv_bytes = (args.len() + 2) * std::mem::size_of::<*const libc::c_char>();
    let stack_size = (STACK + argv_bytes).next_multiple_of(4096);
    // Unmapped below, once the child no longer runs on it.
    let stack = super::map_stack(stack_size).map_err(SpawnError::Setup)?;
    // SAFETY: blocking every signal in this thread, saving the old mask into `shared.mask`; the
    // clone runs with this mask, and `child` restores the saved one right before the exec.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut shared.mask);
        shared.exec_mask = super::inherited_mask().unwrap_or(shared.mask);
        // The stack grows down: the child starts at the top of the mapping.
        let top = stack.cast::<u8>().add(stack_size).cast::<libc::c_void>();
        let pid = libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::addr_of_mut!(shared).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &shared.mask, std::ptr::null_mut());
        libc::munmap(stack, stack_size);
        if pid < 0 {
            return Err(SpawnError::Setup(clone_error));
        }
        pid
    };
    if shared.late.load(Ordering::SeqCst) {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`; the child has exited.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(SpawnError::Late);
    }
    match shared.errno.load(Ordering::SeqCst) {
        0 => Ok(pid),
        errno => {
            // The child has exited (status 127) without running anything: reap it here.
            let mut status = 0;
            // SAFETY: waitpid writes only into `status`.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            // What was executed, when it is known: a path, or where `$PATH` led ahead of time.
            let file = spec.path.as_deref().or_else(|| {
                let p = spec.program.as_os_str();
                p.as_bytes().contains(&b'/').then_some(p)
            });
            let meta = file.and_then(|f| std::fs::metadata(f).ok());
            match errno {
                // The file is there: what is missing is the interpreter its `#!` line names (a
                // shell says "bad interpreter" and exits 126 too).
                libc::ENOENT if meta.is_some() => Err(SpawnError::CannotExecute {
                    program: program_name,
                    why: "the interpreter named by its #! line was not found".into(),
                }),
                libc::ENOENT => Err(SpawnError::NotFound {
                    program: program_name,
                }),
                libc::EACCES if meta.is_some_and(|m| m.is_dir()) => {
                    Err(SpawnError::CannotExecute {
                        program: program_name,
                        why: "it is a directory".into(),
                    })
                }
                _ => Err(cannot(io::Error::from_raw_os_error(errno))),
            }
        }
    }
}

/// The child, between clone and exec. See the module documentation for what it may do.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Shared` of `spawn`, alive and not touched by lockrun (suspended
    // until we exec or exit). Only async-signal-safe calls follow, on values prepared before.
    unsafe {
        let shared = &*arg.cast::<Shared>();
        let fail = |errno: i32| -> ! {
            shared.errno.store(errno.max(1), Ordering::SeqCst);
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();
        // Caught signals back to their defaults; SIGPIPE too, unless lockrun was started with it
        // ignored. (32 and 33 are glibc's own.)
        let pipe_default = !shared.started_with.sigpipe_ignored;
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP || sig == 32 || sig == 33 {
                continue;
            }
            let reset = match &shared.reset {
                Some(set) => libc::sigismember(set, sig) == 1,
                None => caught(sig),
            };
            if reset || (sig == libc::SIGPIPE && pipe_default) {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(errno());
        }
        // Tell the guard its deadline and which group to kill, before the command can run. The
        // descriptor is close-on-exec: the command does not keep the guard's pipe open.
        if let Some((fd, deadline)) = &shared.guard {
            let (fd, msg) = (*fd, super::Guard::start_message(deadline, libc::getpid()));
            if libc::write(fd, msg.as_ptr().cast(), msg.len()) != msg.len() as isize {
                fail(errno());
            }
        }
        if let Some(fd) = shared.tty {
            // Every signal is blocked here, SIGTTOU included.
            libc::tcsetpgrp(fd, libc::getpid());
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != shared.parent {
            // lockrun died before the death signal was set: the command must not start.
            libc::_exit(127);
        }
        // Standard descriptors that were closed when lockrun started are closed again.
        for fd in 0..3 {
            if shared.started_with.closed_std & (1 << fd) != 0 {
                libc::close(fd);
            }
        }
        // The last moment before the command runs: had lockrun been held up since the grant
        // (stopped, or blocked on a write) until the lease cannot be trusted, the lease may
        // already be someone else's.
        if shared.start_by != 0 && super::guard::monotonic_ns() >= shared.start_by {
            shared.late.store(true, Ordering::SeqCst);
            libc::_exit(127);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &shared.exec_mask, std::ptr::null_mut());
        if let Some(path) = &shared.path {
            libc::execve(path.as_ptr(), shared.argv.as_ptr(), shared.envp.as_ptr());
            // Gone since it was found, refused, or a script without `#!`: search, as if it had
            // not been found.
        }
        libc::execvpe(
            shared.program.as_ptr(),
            shared.argv.as_ptr(),
            shared.envp.as_ptr(),
        );
        fail(errno())
    }
}

/// The action of `sig`: a handler, `SIG_DFL` or `SIG_IGN`; `None` when it cannot be read.
/// Async-signal-safe.
pub(super) fn action(sig: i32) -> Option<libc::sighandler_t> {
    // SAFETY: sigaction only writes into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(sig, std::ptr::null(), &mut old) == 0).then_some(old.sa_sigaction)
    }
}

/// Whether `sig` has a handler (async-signal-safe).
pub(super) fn caught(sig: i32) -> bool {
    action(sig).is_some_and(|a| a != libc::SIG_IGN && a != libc::SIG_DFL)
}

/// Which of `candidates` have a handler now, for [`Setup::caught`]: read once, ahead of time, the
/// child then resets only those (instead of asking for each of 64 signals between the clone and
/// the exec, while lockrun is suspended). `candidates` must name every signal lockrun's process
/// may have a handler for; handlers installed after this call are not reset.
pub fn caught_signals(candidates: &[i32]) -> libc::sigset_t {
    // SAFETY: an empty set is a valid value; sigaddset writes into it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in candidates {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP && caught(sig) {
                libc::sigaddset(&mut set, sig);
            }
        }
        set
    }
}

/// The file that `execvpe` would run for `program`, looked up ahead of time: the first regular
/// file named `program` in a `$PATH` directory (`/bin:/usr/bin` without `$PATH`, the current
/// directory for an empty entry) that we may execute. `None` for a path (a name with a slash), or
/// when nothing is found; the exec then searches, and reports, itself.
///
/// `lockrun run` looks the command up while it waits for the lease, so that starting the command
/// once the lease is granted costs one `execve`, not one per `$PATH` directory before the one
/// holding it. The child still falls back to the search when the file it was given is gone or
/// refused by then, so the result is the search's, only sooner.
pub fn resolve(program: &OsStr) -> Option<OsString> {
    let name = program.as_bytes();
    if name.is_empty() || name.contains(&b'/') {
        return None;
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    path.as_bytes().split(|&b| b == b':').find_map(|dir| {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let mut candidate = Vec::with_capacity(dir.len() + 1 + name.len());
        candidate.extend_from_slice(dir);
        candidate.push(b'/');
        candidate.extend_from_slice(name);
        let c = CString::new(candidate).ok()?;
        // SAFETY: stat writes only into `st`; faccessat only reads the path.
        let runnable = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::stat(c.as_ptr(), &mut st) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFREG
                && libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) == 0
        };
        runnable.then(|| OsString::from_vec(c.into_bytes()))
    })
}

/// lockrun's environment with the spec's changes, as `KEY=VALUE` strings; `None` on a NUL byte.
fn environment(spec: &Spec) -> Option<Vec<CString>> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !spec.env.iter().any(|(name, _)| OsStr::new(name) == k))
        .collect();
    vars.extend(
        spec.env
            .iter()
            .filter_map(|(k, v)| Some((OsString::from(k), OsString::from(v.as_ref()?)))),
    );
    vars.into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect()
}

fn cstring(s: &OsStr) -> Option<CString> {
    CString::new(s.as_bytes()).ok()
}

/// A NULL-terminated array of pointers to `strings`.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A program's name as an error message shows it: control characters escaped, and quoted when
/// it is empty or holds blanks (`'  ': command not found`, not `  : command not found`).
fn shown(program: &str) -> String {
    let name = crate::lease::escape(program);
    if name.is_empty() || name.contains(char::is_whitespace) {
        format!("'{name}'")
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(spec: &Spec) -> i32 {
        let pid = spawn(spec, Setup::default()).unwrap();
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        libc::WEXITSTATUS(status)
    }

    /// A file found ahead of time that is gone by the exec: the search runs as if it had not
    /// been found.
    #[test]
    fn falls_back_to_the_search() {
        let spec = |program: &str, path: &str| Spec {
            program: program.into(),
            path: Some(path.into()),
            args: vec![],
            env: vec![],
            started_with: Default::default(),
        };
        assert_eq!(run(&spec("true", "/nonexistent/true")), 0);
        assert_eq!(run(&spec("false", "/nonexistent/false")), 1);
    }

    /// A command whose start-by time has passed when its process is about to exec is not
    /// started; one with time left is.
    #[tokio::test]
    async fn a_late_start_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let spec = Spec {
            program: "touch".into(),
            path: None,
            args: vec![marker.clone().into()],
            env: vec![],
            started_with: Default::default(),
        };
        let now = tokio::time::Instant::now();
        let late = Setup {
            start_by: Some(now - std::time::Duration::from_millis(1)),
            ..Setup::default()
        };
        assert!(matches!(spawn(&spec, late), Err(SpawnError::Late)));
        assert!(!marker.exists());
        let in_time = Setup {
            start_by: Some(now + std::time::Duration::from_secs(60)),
            ..Setup::default()
        };
        let pid = spawn(&spec, in_time).unwrap();
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(marker.exists());
    }

    #[test]
    fn paths_are_not_looked_up() {
        assert_eq!(resolve(OsStr::new("/bin/sh")), None);
        assert_eq!(resolve(OsStr::new("./sh")), None);
        assert_eq!(resolve(OsStr::new("")), None);
        assert_eq!(resolve(OsStr::new("no-such-command-lockrun-test")), None);
    }
}
