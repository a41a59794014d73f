//! lockrun's process tree: the command's group, the orphans lockrun inherits as subreaper, and
//! every descendant, found through /proc's lists of children.
//!
//! A descendant is signalled through a pidfd opened on it and then checked to be the child of
//! the process it was listed under: a process that exited and was reaped by its parent since
//! the listing can have its number given to an unrelated process, which the pidfd cannot reach.
//! Where pidfds are unavailable (Linux before 5.3, or a seccomp filter that refuses them) the
//! number is signalled as listed, which leaves that window (microseconds) open.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::guard;

/// Sends `sig` to process group `pgid`; true if the group exists.
pub(super) fn killpg(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// Whether process group `pgid` has members: also when lockrun may signal none of them (EPERM:
/// a `sudo` in the command started them as another user), which is not an empty group.
pub(super) fn group_exists(pgid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks; it has no memory-safety preconditions.
    unsafe { libc::kill(-pgid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// The descendants of lockrun still there, as process ids (for a message).
pub(super) fn descendant_pids() -> Vec<i32> {
    descendants().into_iter().map(|(pid, _)| pid).collect()
}

/// KILLs the command's group `pgid` and every descendant of lockrun that left it (`setsid`, an
/// interactive shell's jobs, a nested lockrun's command): a KILL for the lease reaches them
/// while their parents live, not only once they are orphans. (TERM goes to the group alone: a
/// nested lockrun passes it on to its own command, which must not get it twice.) `group`: the
/// group still has members; once it has none, its number may belong to another process's group,
/// and only the descendants are KILLed.
pub(super) fn kill_all(pgid: i32, group: bool) {
    if group {
        killpg(pgid, libc::SIGKILL);
    }
    for (pid, parent) in descendants() {
        signal_child(
            pid,
            parent,
            |pid| {
                // SAFETY: getpgid has no memory-safety preconditions. The group's members had the
                // group's KILL; with no group KILL sent, a descendant in a group of that number
                // (one that reused it) is KILLed as any other.
                !group || (unsafe { libc::getpgid(pid) }) != pgid
            },
            libc::SIGKILL,
        );
    }
}

/// Every descendant of this process but the guards, each with the process it was listed as a
/// child of. As subreaper, lockrun inherits every orphan, so none escapes the walk.
fn descendants() -> Vec<(i32, i32)> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut out: Vec<(i32, i32)> = orphans().into_iter().map(|p| (p, me)).collect();
    let mut i = 0;
    while i < out.len() {
        let pid = out[i].0;
        out.extend(children_of(&pid.to_string()).into_iter().map(|c| (c, pid)));
        i += 1;
    }
    out
}

/// Sends `sig` to `pid` if it is still the child of `parent` and `wanted` says so. Through a
/// pidfd where the kernel has them: the process checked is then the one signalled.
fn signal_child(pid: i32, parent: i32, wanted: impl Fn(i32) -> bool, sig: i32) {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error().raw_os_error();
        if e != Some(libc::ESRCH) && wanted(pid) {
            // No pidfds here: signal the number as listed.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, sig) };
        }
        return;
    }
    // SAFETY: a successful pidfd_open returns a descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // The pidfd holds the process that had the number when it was opened; if that process is
    // the listed parent's child now, it is the one listed (or a newer child of that parent,
    // a descendant as well). Its parent may have died since the listing (the group's KILL
    // just went out): then it is lockrun's, the subreaper's, and a descendant still.
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    if !parent_of(pid).is_some_and(|p| p == parent || p == me) || !wanted(pid) {
        return;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open; no siginfo is passed.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// The parent process of `pid`, from `/proc/PID/stat`.
fn parent_of(pid: i32) -> Option<i32> {
    parse_ppid(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The parent of a `/proc/PID/stat` line (its fourth field; see [`guard::parse_stat`], which
/// the guard reads it with too).
fn parse_ppid(stat: &str) -> Option<i32> {
    guard::parse_stat(stat.as_bytes()).map(|(ppid, _)| ppid)
}

/// The children of process `pid` (or `self`), from each of its threads' lists.
fn children_of(pid: &str) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// Children of this process other than the guards: orphans reparented to us as subreaper.
pub(super) fn orphans() -> Vec<i32> {
    if !any_child() {
        return vec![];
    }
    let mut out = children_of("self");
    out.retain(|&p| !guard::is_guard(p));
    out
}

/// Whether this process has a child other than a guard (a clone without an exit signal, which
/// a plain `waitid` does not count): one system call, where listing the children takes ten.
fn any_child() -> bool {
    // SAFETY: waitid writes only into `info`; WNOWAIT leaves any exited child to be reaped.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        !(r == -1 && *libc::__errno_location() == libc::ECHILD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_command_name_with_parentheses_and_spaces() {
        assert_eq!(parse_ppid("1234 (sh) S 77 1234 1234 0 -1"), Some(77));
        assert_eq!(parse_ppid("1234 (a) b (c)) R 9 1 1 0"), Some(9));
        assert_eq!(parse_ppid("1234 (x"), None);
        assert_eq!(parse_ppid(""), None);
    }

    /// Whether this kernel lets us open pidfds (not before Linux 5.3, nor under some seccomp
    /// filters); without them the number is signalled as listed.
    fn pidfds() -> bool {
        // SAFETY: pidfd_open of our own pid; the descriptor is closed at once.
        unsafe {
            let fd = libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0);
            if fd >= 0 {
                libc::close(fd as i32);
            }
            fd >= 0
        }
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[test]
    fn a_descendant_is_signalled_only_under_the_parent_it_was_listed_with() {
        // A shell (our child) with a `sleep` of its own (our grandchild).
        let (mut sh, sh_pid, sleep) = super::super::shell_with_child("sleep 30 & echo $!; wait");
        assert_eq!(parent_of(sleep), Some(sh_pid));
        if pidfds() {
            // Listed under a parent it does not have (as a reused number would be): left alone.
            signal_child(sleep, sh_pid + 100_000, |_| true, libc::SIGKILL);
            std::thread::sleep(std::time::Duration::from_millis(50));
            // (`sh` waits for the sleep: it ends only once the sleep has died.)
            assert!(alive(sleep), "killed under the wrong parent");
            assert!(
                sh.try_wait().unwrap().is_none(),
                "killed under the wrong parent"
            );
        }
        // Not wanted: left alone.
        signal_child(sleep, sh_pid, |_| false, libc::SIGKILL);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(alive(sleep), "killed though not wanted");
        assert!(sh.try_wait().unwrap().is_none(), "killed though not wanted");
        // Under its parent: killed, and `sh`'s wait returns.
        signal_child(sleep, sh_pid, |_| true, libc::SIGKILL);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while sh.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < end, "the sleep was not killed");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // A child of ours listed under a parent that died meanwhile (reparented to us): killed.
        let mut orphan = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        signal_child(orphan.id() as i32, sh_pid, |_| true, libc::SIGKILL);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(orphan.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}
