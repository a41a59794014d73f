//! The guard's KILL of lockrun's descendants at the deadline: every process below lockrun but
//! the guard, found through /proc's lists of children, as `tree::kill_all` finds them for
//! lockrun. The command's group alone is not enough when lockrun is stopped: a descendant in a
//! group of its own (`timeout` inside `sh -c`, `setsid`) would run on into the next holder's
//! lease. While lockrun is stopped it reaps nobody, so its children, and the orphans it
//! inherits as subreaper, stay listed under it.
//!
//! It runs in the guard (see the module documentation of `guard`): raw system calls only, and
//! fixed buffers on the guard's own stack, never the heap.

use super::sys;

/// At most this many processes are found in one walk; a later walk finds the rest.
const MOST: usize = 1024;

/// Walks are repeated until two in a row find nobody alive to kill, at most this many times. A
/// process whose parent the group's KILL ended is listed under lockrun (the subreaper) only once
/// that parent has exited, which can happen between the walk's read of lockrun's list and its
/// read of the parent's: the walk after that one finds it under lockrun, where it stays while
/// lockrun is stopped.
const ROUNDS: usize = 20;

/// KILLs every live descendant of `root` (lockrun) but `me` (this guard). A process is
/// signalled through a pidfd opened on it and then checked to be a child of the process it was
/// listed under (or of `root`, which inherits orphans), so a number reused since the listing
/// is never signalled where the kernel has pidfds.
///
/// # Safety
///
/// Called in the guard only: it touches nothing but its own stack.
pub(super) unsafe fn kill_all(root: i32, me: i32) {
    if !same_pid_namespace(root) {
        // /proc is another namespace's: its numbers are not our processes.
        return;
    }
    let mut quiet = 0;
    for _ in 0..ROUNDS {
        let (alive, complete) = kill_once(root, me);
        if alive == 0 && complete {
            quiet += 1;
            if quiet == 2 {
                return;
            }
        } else {
            quiet = 0;
        }
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000,
        };
        sys::call(
            libc::SYS_nanosleep,
            [std::ptr::addr_of!(pause) as usize, 0, 0, 0, 0, 0],
        );
    }
}

/// One walk: KILLs every descendant it finds; how many of them were alive (not zombies), and
/// whether it found them all (not cut off at [`MOST`]).
unsafe fn kill_once(root: i32, me: i32) -> (usize, bool) {
    // (pid, the process it was listed under)
    let mut found = [(0i32, 0i32); MOST];
    let mut n = children(root, me, &mut found, 0);
    let mut i = 0;
    while i < n {
        n = children(found[i].0, me, &mut found, n);
        i += 1;
    }
    let mut alive = 0;
    for &(pid, parent) in &found[..n] {
        if kill_child(pid, parent, root) == Some(true) {
            alive += 1;
        }
    }
    (alive, n < MOST)
}

/// Whether `/proc` shows the pid namespace `root` (our parent) lives in: its `self` names us.
unsafe fn same_pid_namespace(root: i32) -> bool {
    let mut link = [0u8; 16];
    let got = sys::call(
        libc::SYS_readlinkat,
        [
            libc::AT_FDCWD as usize,
            c"/proc/self".as_ptr() as usize,
            link.as_mut_ptr() as usize,
            link.len(),
            0,
            0,
        ],
    );
    if got <= 0 {
        return false;
    }
    let me = sys::call(libc::SYS_getpid, [0; 6]) as i32;
    root > 0 && parse_number(&link[..got as usize]) == Some(me)
}

/// Appends the children of `pid` (but `me`) to `found[n..]`, each listed under `pid`, from
/// each of its threads' lists; the new length.
unsafe fn children(pid: i32, me: i32, found: &mut [(i32, i32); MOST], mut n: usize) -> usize {
    let mut path = Path::new();
    path.push(b"/proc/");
    path.number(pid);
    path.push(b"/task");
    let dir = open(&path, libc::O_RDONLY | libc::O_DIRECTORY);
    if dir < 0 {
        return n;
    }
    let mut entries = [0u8; 2048];
    loop {
        let got = sys::call(
            libc::SYS_getdents64,
            [
                dir as usize,
                entries.as_mut_ptr() as usize,
                entries.len(),
                0,
                0,
                0,
            ],
        );
        if got <= 0 {
            break;
        }
        let (mut at, got) = (0usize, got as usize);
        while at + 19 < got {
            // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name (NUL-ended)
            let reclen = u16::from_ne_bytes([entries[at + 16], entries[at + 17]]) as usize;
            if reclen < 20 || at + reclen > got {
                break;
            }
            let name = &entries[at + 19..at + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if let Some(tid) = parse_number(name) {
                let mut list = Path::new();
                list.push(b"/proc/");
                list.number(pid);
                list.push(b"/task/");
                list.number(tid);
                list.push(b"/children");
                n = read_children(&list, pid, me, found, n);
            }
            at += reclen;
        }
    }
    close(dir);
    n
}

/// Appends the pids in the children file `list` (but `me`), listed under `parent`.
unsafe fn read_children(
    list: &Path,
    parent: i32,
    me: i32,
    found: &mut [(i32, i32); MOST],
    mut n: usize,
) -> usize {
    let fd = open(list, libc::O_RDONLY);
    if fd < 0 {
        return n;
    }
    let mut buf = [0u8; 1024];
    // A number may be split across two reads. -1: none yet; -2: too long, until the next
    // separator.
    let mut number: i64 = -1;
    loop {
        let got = sys::call(
            libc::SYS_read,
            [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
        );
        if got <= 0 {
            break;
        }
        for &b in &buf[..got as usize] {
            if !b.is_ascii_digit() {
                n = add(number, parent, me, found, n);
                number = -1;
            } else if number != -2 {
                number = number.max(0) * 10 + i64::from(b - b'0');
                if number > i64::from(i32::MAX) {
                    number = -2;
                }
            }
        }
    }
    n = add(number, parent, me, found, n);
    close(fd);
    n
}

fn add(number: i64, parent: i32, me: i32, found: &mut [(i32, i32); MOST], n: usize) -> usize {
    if number > 0 && number != i64::from(me) && n < MOST {
        found[n] = (number as i32, parent);
        return n + 1;
    }
    n
}

/// KILLs `pid` if it is a child of `parent` or `root`: `Some(true)` when it was alive, and
/// `Some(false)` when it is a zombie (signalled too: a leader whose thread has exited shows as
/// one while its other threads run); `None` when it was not ours to signal.
unsafe fn kill_child(pid: i32, parent: i32, root: i32) -> Option<bool> {
    let fd = sys::call(libc::SYS_pidfd_open, [pid as usize, 0, 0, 0, 0, 0]);
    if fd == -(libc::ESRCH as isize) {
        return None;
    }
    let ours = match stat(pid) {
        Some((ppid, state)) if ppid == parent || ppid == root => {
            Some(!matches!(state, b'Z' | b'X'))
        }
        _ => None,
    };
    if ours.is_some() {
        if fd >= 0 {
            sys::call(
                libc::SYS_pidfd_send_signal,
                [fd as usize, libc::SIGKILL as usize, 0, 0, 0, 0],
            );
        } else {
            // No pidfds here: signal the number as listed.
            sys::call(
                libc::SYS_kill,
                [pid as usize, libc::SIGKILL as usize, 0, 0, 0, 0],
            );
        }
    }
    if fd >= 0 {
        close(fd as i32);
    }
    ours
}

/// The parent and the state letter of `pid`, from `/proc/PID/stat`.
unsafe fn stat(pid: i32) -> Option<(i32, u8)> {
    let mut path = Path::new();
    path.push(b"/proc/");
    path.number(pid);
    path.push(b"/stat");
    let fd = open(&path, libc::O_RDONLY);
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 512];
    let got = sys::call(
        libc::SYS_read,
        [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
    );
    close(fd);
    if got <= 0 {
        return None;
    }
    parse_stat(&buf[..got as usize])
}

/// The state letter and the parent of a `/proc/PID/stat` line: the third and fourth fields,
/// counted from the last `)` (the command name before it may hold spaces and parentheses).
pub(in crate::supervise) fn parse_stat(line: &[u8]) -> Option<(i32, u8)> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let mut fields = line[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let ppid = parse_number(fields.next()?)?;
    Some((ppid, state))
}

fn parse_number(digits: &[u8]) -> Option<i32> {
    if digits.is_empty() || digits.len() > 10 {
        return None;
    }
    let mut v: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(b - b'0');
    }
    i32::try_from(v).ok()
}

unsafe fn open(path: &Path, flags: libc::c_int) -> i32 {
    sys::call(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as usize,
            path.bytes.as_ptr() as usize,
            (flags | libc::O_CLOEXEC) as usize,
            0,
            0,
            0,
        ],
    ) as i32
}

unsafe fn close(fd: i32) {
    sys::call(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]);
}

/// A NUL-terminated path built on the stack.
struct Path {
    bytes: [u8; 64],
    len: usize,
}

impl Path {
    fn new() -> Path {
        Path {
            bytes: [0; 64],
            len: 0,
        }
    }

    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.len + 1 < self.bytes.len() {
                self.bytes[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn number(&mut self, v: i32) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut v = v.max(0) as u32;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_and_paths_are_read_without_the_heap() {
        assert_eq!(
            parse_stat(b"1234 (sh) S 77 1234 1234 0 -1"),
            Some((77, b'S'))
        );
        assert_eq!(parse_stat(b"1234 (a) b (c)) Z 9 1 1 0"), Some((9, b'Z')));
        assert_eq!(parse_stat(b"1234 (x"), None);
        assert_eq!(parse_stat(b""), None);
        assert_eq!(parse_number(b"2147483647"), Some(i32::MAX));
        assert_eq!(parse_number(b"2147483648"), None);
        assert_eq!(parse_number(b"12a"), None);
        let mut p = Path::new();
        p.push(b"/proc/");
        p.number(0);
        p.push(b"/task/");
        p.number(4_194_304);
        assert_eq!(&p.bytes[..p.len + 1], b"/proc/0/task/4194304\0");
    }

    /// The walk finds a grandchild that left our group, under the child it was listed with.
    #[test]
    fn every_descendant_is_found() {
        let (mut sh, sh_pid, sleep) =
            crate::supervise::shell_with_child("setsid sleep 30 & echo $!; wait");
        // SAFETY: getpid has no preconditions; the walk reads /proc into stack buffers.
        let (me, found, n) = unsafe {
            let me = libc::getpid();
            let mut found = [(0i32, 0i32); MOST];
            let n = children(me, 0, &mut found, 0);
            let mut i = 0;
            let mut n = n;
            while i < n {
                n = children(found[i].0, 0, &mut found, n);
                i += 1;
            }
            (me, found, n)
        };
        assert!(found[..n].contains(&(sh_pid, me)), "{:?}", &found[..n]);
        assert!(found[..n].contains(&(sleep, sh_pid)), "{:?}", &found[..n]);
        // Listed under a process that is not its parent: left alone.
        // SAFETY: as above; the children are ours to kill.
        assert_eq!(unsafe { kill_child(sleep, sleep, me) }, None);
        // SAFETY: as above.
        assert_eq!(unsafe { kill_child(sleep, sh_pid, me) }, Some(true));
        // SAFETY: as above.
        assert!(unsafe { same_pid_namespace(me) });
        // (`sh` waits for the sleep: it ends only once the sleep has died.)
        sh.wait().unwrap();
    }
}
