//! The exit-code contract, in one place.
//!
//! Every way lockrun can end maps to exactly one [`Exit`]; `main` turns it into the process
//! status. The numbers follow flock(1) and sysexits(3) so that shell scripts can tell a busy lock
//! (75, `EX_TEMPFAIL`) from an unreachable backend (69, `EX_UNAVAILABLE`) from bad configuration
//! (78, `EX_CONFIG`).

/// How lockrun ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// The verb succeeded.
    Success,
    /// `run`: the command exited with this status.
    Child(u8),
    /// `run`: the command was killed by this signal number.
    ChildSignal(i32),
    /// `run`: interrupted from the keyboard (INT or QUIT), while waiting or by the command's
    /// death. lockrun then dies of the same signal itself ([`die_of`]), as the cooperative
    /// convention of shells asks, so that a script, loop or `make` around it stops too; a shell
    /// reports 128+S either way. With `group`, the signal also goes to lockrun's own process
    /// group: the terminal sent it to the command's group alone, which lockrun had made the
    /// foreground, and the rest of lockrun's job (the script that started it) missed it.
    Interrupted { signal: i32, group: bool },
    /// `is-held`: not held; `current`: nothing held; `renew`/`release`: this lease id does not
    /// hold the resource.
    NotHeld,
    /// `doctor`: the check passed but found something to warn about.
    Warned,
    /// The command line could not be understood.
    Usage,
    /// The lease was not acquired (`-n`, or `-w` ran out). `-E N` changes the code.
    Busy(u8),
    /// The backend could not be reached or timed out.
    Unavailable,
    /// Bad configuration: config file, unknown backend, bad URL, missing table.
    Config,
    /// A stored lease record could not be understood (`EX_DATAERR`).
    Corrupt,
    /// An internal or operating-system error (`EX_SOFTWARE`/`EX_OSERR`).
    Internal,
    /// `run`: the lease was lost while the command ran, and lockrun stopped the command.
    Lost,
    /// `run`: the command was found but could not be executed.
    CannotExecute,
    /// `run`: the command was not found.
    NotFound,
}

/// The default exit code for a busy lease (`EX_TEMPFAIL`).
pub const BUSY_DEFAULT: u8 = 75;

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Child(n) => n,
            // A shell reports death by signal S as 128+S; clamp so a bogus number cannot wrap.
            Exit::ChildSignal(s) | Exit::Interrupted { signal: s, .. } => {
                (128 + s.clamp(1, 127)) as u8
            }
            Exit::NotHeld | Exit::Warned => 1,
            Exit::Usage => 2,
            Exit::Busy(n) => n,
            Exit::Unavailable => 69,
            Exit::Config => 78,
            Exit::Corrupt => 65,
            Exit::Internal => 70,
            Exit::Lost => 124,
            Exit::CannotExecute => 126,
            Exit::NotFound => 127,
        }
    }
}

/// Ends lockrun by `signal` (see [`Exit::Interrupted`]): its default action restored, sent to
/// lockrun alone or to its whole process group. SIGQUIT leaves no core of lockrun. Returns only
/// if the signal did not end the process.
#[doc(hidden)] // for the binary: it ends this process
pub fn die_of(signal: i32, group: bool) {
    // SAFETY: plain system calls on this process; the disposition is set before the signal is
    // sent, and the signal is unblocked so that it is delivered at once.
    unsafe {
        if signal == libc::SIGQUIT {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
        }
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        if group {
            libc::kill(0, signal);
        } else {
            libc::raise(signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_codes() {
        assert_eq!(Exit::Success.code(), 0);
        assert_eq!(Exit::Child(0).code(), 0);
        assert_eq!(Exit::Child(3).code(), 3);
        assert_eq!(Exit::Child(255).code(), 255);
        assert_eq!(Exit::ChildSignal(15).code(), 143);
        assert_eq!(Exit::ChildSignal(9).code(), 137);
        assert_eq!(Exit::NotHeld.code(), 1);
        assert_eq!(Exit::Warned.code(), 1);
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(Exit::Busy(BUSY_DEFAULT).code(), 75);
        assert_eq!(Exit::Busy(3).code(), 3);
        assert_eq!(Exit::Unavailable.code(), 69);
        assert_eq!(Exit::Config.code(), 78);
        assert_eq!(Exit::Corrupt.code(), 65);
        assert_eq!(Exit::Internal.code(), 70);
        assert_eq!(Exit::Lost.code(), 124);
        assert_eq!(Exit::CannotExecute.code(), 126);
        assert_eq!(Exit::NotFound.code(), 127);
    }

    #[test]
    fn signal_codes_never_wrap() {
        assert_eq!(Exit::ChildSignal(0).code(), 129);
        assert_eq!(Exit::ChildSignal(200).code(), 255);
        let int = Exit::Interrupted {
            signal: libc::SIGINT,
            group: true,
        };
        assert_eq!(int.code(), 130);
    }
}
