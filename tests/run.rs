//! `lockrun run` end to end: real processes, real signals.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn passes_exit_codes_through() {
    let env = Env::new();
    let o = env.run(&["res", "--", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    let o = env.run(&["res", "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    let o = env.run(&["run", "res", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(143));
    let o = env.run(&["res", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(o.status.code(), Some(137));
    // Released after each run: the next one gets it without waiting.
    let o = env.run(&["-n", "res", "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn not_found_and_not_executable() {
    let env = Env::new();
    let o = env.run(&["res", "--", "/nonexistent/cmd"]);
    assert_fails(&o, 127, "command not found");
    let o = env.run(&["res", "--", "no-such-command-lockrun-test"]);
    assert_fails(&o, 127, "no-such-command-lockrun-test");
    // A name of blanks is quoted, and control characters are escaped, so the line shows it.
    let o = env.run(&["res", "--", "   "]);
    assert_fails(&o, 127, "lockrun: '   ': command not found");
    let o = env.run(&["res", "--", "a\u{1b}[31mb"]);
    assert_fails(&o, 127, "lockrun: a\\u{1b}[31mb: command not found");
    let script = env.file("noexec.sh");
    std::fs::write(&script, "#!/bin/sh\ntrue\n").unwrap();
    let o = env.run(&["res", "--", script.to_str().unwrap()]);
    assert_fails(&o, 126, "cannot execute: Permission denied");
    assert!(!stderr(&o).contains("os error"), "{}", stderr(&o));
    // A script whose interpreter is missing is there, but cannot be executed (126, as a shell).
    let bad = env.file("badinterp");
    std::fs::write(
        &bad,
        "#!/nonexistent/interpreter
true
",
    )
    .unwrap();
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = env.run(&["res", "--", bad.to_str().unwrap()]);
    assert_fails(
        &o,
        126,
        "the interpreter named by its #! line was not found",
    );
    let o = env.run(&["res", "--", env.path().to_str().unwrap()]);
    assert_fails(&o, 126, "cannot execute: it is a directory");
    // The lease was released despite the failure.
    let o = env.run(&["current", "res"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

/// A bare command name is looked up in `$PATH` as a shell does: the first regular file we may
/// execute, skipping directories and files without the execute bit; an empty entry is the
/// current directory; a script without `#!` found there runs through `/bin/sh`.
#[test]
fn finds_the_command_in_path_as_a_shell_would() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let dir = |name: &str| {
        let d = env.file(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (a, b, c, d, cwd) = (dir("a"), dir("b"), dir("c"), dir("d"), dir("cwd"));
    std::fs::create_dir(a.join("tool")).unwrap();
    let write = |path: std::path::PathBuf, text: &str, mode: u32| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write(b.join("tool"), "#!/bin/sh\necho b\n", 0o644);
    write(c.join("tool"), "#!/bin/sh\necho c \"$@\"\n", 0o755);
    write(d.join("tool"), "#!/bin/sh\necho d\n", 0o755);
    write(c.join("plain"), "echo plain script\n", 0o755);
    write(cwd.join("here"), "#!/bin/sh\necho here\n", 0o755);
    let path = format!(
        "{}:{}:{}:{}:/usr/bin:/bin",
        a.display(),
        b.display(),
        c.display(),
        d.display()
    );
    let run = |args: &[&str], path: &str| {
        let o = env
            .cmd()
            .args(args)
            .env("PATH", path)
            .current_dir(&cwd)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        stdout(&o).trim().to_owned()
    };
    assert_eq!(run(&["res", "--", "tool", "x"], &path), "c x");
    assert_eq!(run(&["res", "--", "plain"], &path), "plain script");
    assert_eq!(run(&["res", "--", "here"], ":/usr/bin:/bin"), "here");
    let o = env
        .cmd()
        .args(["res", "--", "here"])
        .env("PATH", "/usr/bin:/bin")
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert_fails(&o, 127, "here: command not found");
}

/// The command is started as a shell would: a script without `#!` runs through `/bin/sh`, even
/// with an argv far larger than the spawning stack; caught and ignored signals are as expected
/// (lockrun ignores SIGPIPE, the command must not); and the environment is passed intact.
#[test]
fn starts_the_command_as_a_shell_would() {
    let env = Env::new();
    let script = env.file("noshebang");
    std::fs::write(
        &script,
        "echo \"args=$# first=$1 last=$(eval echo \\${$#})\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut args: Vec<String> = vec!["res".into(), "--".into(), script.to_str().unwrap().into()];
    args.extend((1..=60_000).map(|i| i.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = env.run(&argv);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "args=60000 first=1 last=60000");
    // SIGPIPE is back to its default in the command: writing to a closed pipe kills it.
    let o = env.run(&["res", "--", "sh", "-c", "kill -PIPE $$; echo survived"]);
    assert_eq!(o.status.code(), Some(128 + 13), "{}", stdout(&o));
    // Caught signals are back to their defaults too (lockrun forwards HUP; the command dies of it).
    let o = env.run(&["res", "--", "sh", "-c", "kill -HUP $$; echo survived"]);
    assert_eq!(o.status.code(), Some(128 + 1), "{}", stdout(&o));
    // A signal ignored when lockrun started (and not one lockrun forwards) stays ignored.
    let mut cmd = env.cmd();
    cmd.args(["res", "--", "sh", "-c", "kill -ALRM $$; echo survived"]);
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::signal(libc::SIGALRM, libc::SIG_IGN);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert_eq!(stdout(&o).trim(), "survived", "{}", stderr(&o));
}

#[test]
fn child_gets_its_lease_in_the_environment() {
    let env = Env::new();
    let o = env.run(&[
        "-p",
        "tester@here",
        "res x",
        "--",
        "sh",
        "-c",
        "echo \"$LOCKRUN_RESOURCE|$LOCKRUN_PRINCIPAL|$LOCKRUN_FENCING_TOKEN|${#LOCKRUN_LEASE_ID}|$LOCKRUN_BACKEND\"",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let parts: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(parts[0], "res x");
    assert_eq!(parts[1], "tester@here");
    assert_eq!(parts[2], "1");
    assert_eq!(parts[3], "32");
    assert!(parts[4].starts_with("file://"), "{out}");
    let o = env.run(&["res x", "--", "sh", "-c", "echo $LOCKRUN_FENCING_TOKEN"]);
    assert_eq!(stdout(&o).trim(), "2", "tokens increase across runs");
}

/// A lockrun inside the command reaches the same store the same way, though the backend is a
/// `[backend.NAME]` section of a config file named with `-c`: it sees the outer lease as its own
/// resource's holder, and cannot take it.
#[test]
fn a_nested_lockrun_uses_the_same_named_backend_and_config() {
    let env = Env::new();
    let config = env.file("elsewhere.toml");
    std::fs::write(
        &config,
        format!(
            "[default]\nbackend = \"shared\"\n[backend.shared]\nurl = \"file://{}/shared-locks\"\n",
            env.path().display()
        ),
    )
    .unwrap();
    let lockrun = env!("CARGO_BIN_EXE_lockrun");
    let inner = format!(
        "echo \"$LOCKRUN_BACKEND|$LOCKRUN_CONFIG\"; cd /; \
         {lockrun} is-held \"$LOCKRUN_RESOURCE\" \"$LOCKRUN_LEASE_ID\"; echo held=$?; \
         {lockrun} -q -n \"$LOCKRUN_RESOURCE\" -- true; echo nested=$?"
    );
    let o = env
        .cmd()
        .current_dir(env.path())
        .args(["-c", "elsewhere.toml", "job", "--", "sh", "-c", &inner])
        .env_remove("LOCKRUN_BACKEND")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let first = out.lines().next().unwrap();
    assert_eq!(first, format!("shared|{}", config.display()), "{out}");
    assert!(out.contains("held=0"), "{out}");
    assert!(
        out.contains("nested=75"),
        "the nested lockrun took a held resource: {out}"
    );
}

/// A config that puts one resource on another store than the default: a lockrun inside the
/// command of `lockrun outer` on another resource uses that resource's store from the config,
/// as it would outside, not the outer resource's (two jobs on `inner`, one nested and one not,
/// used to lock two different stores and run together).
#[test]
fn a_nested_lockrun_on_another_resource_uses_that_resources_store() {
    let env = Env::new();
    let config = env.file("per-resource.toml");
    let (a, b) = (env.path().join("locks-a"), env.path().join("locks-b"));
    std::fs::write(
        &config,
        format!(
            "[default]\nbackend = \"file://{}\"\n[resource.\"outer\"]\nbackend = \"file://{}\"\nprincipal = \"outer-job\"\n",
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    let lockrun = env!("CARGO_BIN_EXE_lockrun");
    let inner = format!(
        "{lockrun} inner -- sh -c 'echo \"$LOCKRUN_BACKEND|$LOCKRUN_PRINCIPAL\"'; \
         {lockrun} is-held outer \"$LOCKRUN_LEASE_ID\"; echo outer-held=$?"
    );
    let o = env
        .cmd()
        .args([
            "-c",
            config.to_str().unwrap(),
            "outer",
            "--",
            "sh",
            "-c",
            &inner,
        ])
        .env_remove("LOCKRUN_BACKEND")
        .env_remove("LOCKRUN_PRINCIPAL")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let first = out.lines().next().unwrap();
    let (backend, principal) = first.split_once('|').unwrap();
    assert!(backend.contains("locks-a"), "inner ran on {backend}: {out}");
    assert_ne!(principal, "outer-job", "{out}");
    assert!(
        out.contains("outer-held=0"),
        "the outer lease's store: {out}"
    );
    assert!(a.join("inner.lease").exists() && !b.join("inner.lease").exists());
}

#[test]
fn eight_workers_never_overlap_and_tokens_increase() {
    let env = Env::new();
    let log = env.file("log");
    let script = format!(
        "echo \"start $LOCKRUN_FENCING_TOKEN\" >> {log}; echo \"end $LOCKRUN_FENCING_TOKEN\" >> {log}",
        log = log.display()
    );
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let dir = env.path().to_path_buf();
            let script = script.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let o = cmd_in(&dir)
                        .args(["contended", "--", "sh", "-c", &script])
                        .output()
                        .unwrap();
                    assert_eq!(
                        o.status.code(),
                        Some(0),
                        "{}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 400);
    let mut last = 0u64;
    for pair in lines.chunks(2) {
        let (s, e) = (pair[0], pair[1]);
        let ts: u64 = s.strip_prefix("start ").expect(s).parse().unwrap();
        let te: u64 = e.strip_prefix("end ").expect(e).parse().unwrap();
        assert_eq!(ts, te, "critical sections overlap: {s} / {e}");
        assert!(ts > last, "token {ts} after {last}");
        last = ts;
    }
}

/// Starts `lockrun res -- sh -c SCRIPT` and waits until the script has created `file`.
fn run_sh_until(env: &Env, script: &str, file: &std::path::Path) -> std::process::Child {
    let child = env
        .cmd()
        .args(["res", "--", "sh", "-c", script])
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || file.exists()));
    child
}

#[test]
fn term_and_int_are_forwarded() {
    for (sig, name) in [(libc::SIGTERM, "TERM"), (libc::SIGINT, "INT")] {
        let env = Env::new();
        let marker = env.file("got");
        let ready = env.file("ready");
        let script = format!(
            "trap 'echo {name} > {m}; exit 7' {name}; touch {r}; while :; do sleep 0.02; done",
            m = marker.display(),
            r = ready.display()
        );
        let mut child = run_sh_until(&env, &script, &ready);
        kill(child.id() as i32, sig);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(7), "{name}: the child's own exit code");
        assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), name);
    }
}

/// A command that dies of the INT (or QUIT) lockrun passed on makes lockrun die of it too, after
/// the release, so that the script that sent it stops as around the bare command; one killed by
/// TERM gives 143.
#[test]
fn an_interrupted_command_makes_lockrun_die_of_the_interrupt() {
    use std::os::unix::process::ExitStatusExt;
    for (sig, code, signal) in [
        (libc::SIGINT, None, Some(libc::SIGINT)),
        (libc::SIGQUIT, None, Some(libc::SIGQUIT)),
        (libc::SIGTERM, Some(143), None),
    ] {
        let env = Env::new();
        let ready = env.file("ready");
        let script = format!("touch {}; exec sleep 10", ready.display());
        let mut child = run_sh_until(&env, &script, &ready);
        kill(child.id() as i32, sig);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), code, "{sig}: {status:?}");
        assert_eq!(status.signal(), signal, "{sig}: {status:?}");
        assert!(!status.core_dumped(), "lockrun dumped core");
        assert_fails(&env.run(&["current", "res"]), 1, "not held");
    }
}

/// Under `nohup` (HUP ignored when lockrun starts) a hang-up is not forwarded: the command keeps
/// running, with HUP ignored as it would be without lockrun.
#[test]
fn a_signal_ignored_at_start_stays_ignored() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let (ready, done, status) = (env.file("ready"), env.file("done"), env.file("status"));
    let script = format!(
        "grep SigIgn /proc/self/status > {s}; touch {r}; while [ ! -e {d} ]; do sleep 0.02; done",
        s = status.display(),
        r = ready.display(),
        d = done.display()
    );
    let mut cmd = env.cmd();
    cmd.args(["res", "--", "sh", "-c", &script]);
    // SAFETY: signal() is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    assert!(eventually(Duration::from_secs(10), || ready.exists()));
    kill(child.id() as i32, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "HUP ended lockrun");
    let mask = std::fs::read_to_string(&status).unwrap();
    let bits = u64::from_str_radix(mask.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_ne!(
        bits & (1 << (libc::SIGHUP - 1)),
        0,
        "the command ignores HUP: {mask}"
    );
    assert_eq!(bits & (1 << (libc::SIGPIPE - 1)), 0, "but not PIPE: {mask}");
    std::fs::write(&done, "").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// What Rust's runtime changes in lockrun before `main` reaches the command as the caller had
/// it: SIGPIPE ignored stays ignored, and a closed standard descriptor is closed, not /dev/null
/// (`lockrun res -- echo hi >&-` fails as `echo hi >&-` does).
#[test]
fn the_command_gets_sigpipe_and_closed_descriptors_as_lockrun_did() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let probe = "grep SigIgn /proc/self/status; \
                 for fd in 0 1 2; do [ -e /proc/$$/fd/$fd ] || echo closed $fd; done";
    let sig_ign = |out: &str| {
        let line = out.lines().find(|l| l.starts_with("SigIgn")).unwrap();
        let bits = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
        bits & (1 << (libc::SIGPIPE - 1)) != 0
    };
    let run = |ignore_pipe: bool, close_stdin: bool| {
        let mut cmd = env.cmd();
        cmd.args(["res", "--", "sh", "-c", probe]);
        // SAFETY: signal() and close() are async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(move || {
                if ignore_pipe {
                    libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                }
                if close_stdin {
                    libc::close(0);
                }
                Ok(())
            });
        }
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o)
    };
    let out = run(false, false);
    assert!(!sig_ign(&out), "{out}");
    assert!(!out.contains("closed"), "{out}");
    let out = run(true, true);
    assert!(sig_ign(&out), "SIGPIPE ignored by the caller: {out}");
    assert!(
        out.contains("closed 0"),
        "stdin closed by the caller: {out}"
    );
    // A closed stdout: the command's write fails, as it would without lockrun.
    let bin = env!("CARGO_BIN_EXE_lockrun");
    let o = env.cmd_sh(&format!("{bin} res -- sh -c 'echo hi' >&-"));
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// lockrun reaps its guard process before it exits: under a subreaper that reaps only its own
/// children (a container's first process), each run left a zombie behind.
#[test]
fn no_process_of_lockrun_is_left_to_a_subreaper() {
    let env = Env::new();
    let reaper = r#"
import ctypes, os, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
for _ in range(3):
    subprocess.run([sys.argv[1], "res", "--", "true"], check=True)
time.sleep(0.3)
print(open(f"/proc/self/task/{os.getpid()}/children").read().strip() or "none")
"#;
    let o = env.cmd_sh(&format!(
        "python3 -c '{reaper}' {}",
        env!("CARGO_BIN_EXE_lockrun")
    ));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "none", "processes left to the subreaper");
}

/// `timeout(1)` sends its TERM to lockrun and then to lockrun's process group, lockrun included:
/// two TERMs a moment apart are one request, and the command gets its time to clean up. (The
/// second used to escalate to KILL whenever lockrun had acted on the first before it came.)
#[test]
fn a_term_sent_twice_at_once_is_one_request() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let env = Env::new();
        let ready = env.file("ready");
        let done = env.file("cleaned-up");
        let script = format!(
            "trap 'sleep 0.3; touch {d}; exit 0' TERM INT; touch {r}; while :; do sleep 0.02; done",
            d = done.display(),
            r = ready.display()
        );
        let mut child = run_sh_until(&env, &script, &ready);
        kill(child.id() as i32, sig);
        std::thread::sleep(Duration::from_millis(20));
        kill(child.id() as i32, sig);
        let status = child.wait().unwrap();
        assert!(
            done.exists(),
            "signal {sig}: the command was killed before its clean-up"
        );
        assert_eq!(
            status.code(),
            Some(0),
            "signal {sig}: the command's own exit code"
        );
    }
}

/// A command that stopped itself acts on a forwarded TERM: CONT follows it, as `kill` and
/// `timeout(1)` send CONT after TERM (to lockrun, whose command is in a group of its own).
/// Under `timeout 3 lockrun ...` such a command used to hang for good.
#[test]
fn a_forwarded_term_reaches_a_stopped_command() {
    let env = Env::new();
    let ready = env.file("ready");
    let script = format!("touch {}; kill -STOP $$; echo resumed", ready.display());
    let mut child = run_sh_until(&env, &script, &ready);
    std::thread::sleep(Duration::from_millis(100));
    kill(child.id() as i32, libc::SIGTERM);
    assert!(
        eventually(Duration::from_secs(5), || child
            .try_wait()
            .unwrap()
            .is_some()),
        "the stopped command never got its TERM"
    );
    assert_eq!(child.wait().unwrap().code(), Some(128 + libc::SIGTERM));
}

#[test]
fn second_term_escalates_to_kill() {
    let env = Env::new();
    let ready = env.file("ready");
    let script = format!(
        "trap '' TERM; touch {}; while :; do sleep 0.02; done",
        ready.display()
    );
    let mut child = run_sh_until(&env, &script, &ready);
    kill(child.id() as i32, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the child ignores TERM"
    );
    kill(child.id() as i32, libc::SIGTERM);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137));
}

/// Run options under which a lost lease is noticed within 200 ms and its command KILLed 1 s
/// after its TERM.
const QUICK_LOSS: &[&str] = &["--ttl", "3s", "--heartbeat", "200ms", "--kill-after", "1s"];

/// Starts lockrun with `args`, its stderr captured.
fn start(env: &Env, args: &[&str]) -> std::process::Child {
    env.cmd()
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lockrun")
}

/// Waits for the command to write its lease id to `id_file`, then releases that lease from
/// another process, as an operator breaking the lock does.
fn release_from_outside(env: &Env, id_file: &std::path::Path) {
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(id_file).is_ok_and(|s| s.len() > 1)
    }));
    let id = std::fs::read_to_string(id_file).unwrap();
    let o = env.run(&["release", "res", id.trim()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Another process releases the lease while the command runs: lockrun stops it and exits 124.
#[test]
fn lost_lease_stops_the_command() {
    let env = Env::new();
    let id_file = env.file("id");
    let pid_file = env.file("pid");
    let script = format!(
        "echo $LOCKRUN_LEASE_ID > {i}; echo $$ > {p}; while :; do sleep 0.02; done",
        i = id_file.display(),
        p = pid_file.display()
    );
    let child = env
        .cmd()
        .args(["--ttl", "3s", "res", "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || read_pid(&pid_file).is_some()));
    release_from_outside(&env, &id_file);
    let released = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 124, "lost the lease");
    // Heartbeat every 1s, so loss is noticed within about a second.
    assert!(
        released.elapsed() < Duration::from_secs(3),
        "{:?}",
        released.elapsed()
    );
    assert!(!alive(read_pid(&pid_file).unwrap()));
}

/// A child that ignores TERM is killed after --kill-after when the lease is lost.
#[test]
fn kill_after_when_the_child_ignores_term() {
    let env = Env::new();
    let id_file = env.file("id");
    let script = format!(
        "trap '' TERM; echo $LOCKRUN_LEASE_ID > {}; while :; do sleep 0.02; done",
        id_file.display()
    );
    let child = env
        .cmd()
        .args([
            "--ttl",
            "6s",
            "--kill-after",
            "1s",
            "res",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    release_from_outside(&env, &id_file);
    let t = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 124, "lost the lease");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "KILL only after the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// kill -9 of a lockrun that is still waiting: its guard (started while it waits) goes away
/// without killing anything, and the holder's command runs on.
#[test]
fn sigkill_of_a_waiting_lockrun_kills_nothing() {
    let env = Env::new();
    let pid_file = env.file("holder.pid");
    let script = format!(
        "echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 30",
        p = pid_file.display()
    );
    let mut holder = run_sh_until(&env, &script, &pid_file);
    let holder_cmd = read_pid(&pid_file).unwrap();
    let mut waiter = env.cmd().args(["-q", "res", "--", "true"]).spawn().unwrap();
    let children = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default()
    };
    assert!(eventually(Duration::from_secs(10), || !children(
        waiter.id()
    )
    .trim()
    .is_empty()));
    let guard: i32 = children(waiter.id())
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    kill(waiter.id() as i32, libc::SIGKILL);
    let status = waiter.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(
        eventually(Duration::from_secs(5), || !alive(guard)),
        "the guard stayed"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(holder_cmd), "the holder's command was killed");
    assert_eq!(holder.try_wait().unwrap(), None);
    kill(holder.id() as i32, libc::SIGTERM);
    holder.wait().unwrap();
}

/// kill -9 of lockrun: the command and its children (through sh -c) are gone shortly after.
#[test]
fn sigkill_of_lockrun_leaves_no_descendants() {
    sigkill_leaves_no_descendants(Kill::Lockrun);
}

/// A kill of lockrun's whole process group (a shell's `kill -9 %1`): the guard is in a group of
/// its own, so it survives and kills the command's group.
#[test]
fn sigkill_of_lockruns_group_leaves_no_descendants() {
    sigkill_leaves_no_descendants(Kill::Group);
}

/// `pkill -9 lockrun` (every process whose name has "lockrun" in it) kills lockrun but not its
/// guard, whose name has not: it kills the command's group. The guard used to be called
/// `lockrun-guard`, and died with lockrun, leaving the command's children running.
#[test]
fn sigkill_of_everything_named_lockrun_leaves_no_descendants() {
    sigkill_leaves_no_descendants(Kill::Named);
}

/// While lockrun waits for a descendant outside the command's group (here one that ignores
/// TERM, for `--kill-after`), the group itself may be empty and its leader reaped, and its
/// number given to another process's group. A kill -9 of lockrun then must not make the guard
/// kill that group: the guard forgets the group once it is empty. Reproduced in a PID namespace
/// of its own, where the number is handed out again on purpose (`ns_last_pid`); needs root, as
/// CI runs.
#[test]
fn the_guard_never_kills_a_group_that_reused_the_commands_number() {
    a_reused_group_number_is_left_alone("10s", true);
}

/// The same, without the kill -9: lockrun's own KILL for the leftovers, at `--kill-after`, must
/// not reach the group that reused the number either.
#[test]
fn lockrun_never_kills_a_group_that_reused_the_commands_number() {
    a_reused_group_number_is_left_alone("2s", false);
}

/// A descendant that reuses the number of the command's empty group for a group of its own (a
/// leftover's child made while lockrun waits for the leftover) is a descendant all the same:
/// lockrun's KILL for the leftovers reaches it, and lockrun ends at `--kill-after`, not 10 s
/// later with it still running. Root only, in a PID namespace (see above).
#[test]
fn a_descendant_in_a_group_that_reused_the_number_is_killed() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let env = Env::new();
    let bin = env!("CARGO_BIN_EXE_lockrun");
    let dir = env.path().display().to_string();
    let leftover = format!(
        "trap \\\"\\\" TERM; sleep 1; echo $(($(cat {dir}/leader) - 1)) > /proc/sys/kernel/ns_last_pid; setsid sleep 30 & echo \\$! > {dir}/other; wait"
    );
    let inner = format!(
        r#"{bin} -b file://{dir}/locks --kill-after 2s res -- sh -c 'echo $$ > {dir}/leader; setsid sh -c "{leftover}" & sleep 0.3; exit 0'
echo "lockrun=$?"
other=$(cat {dir}/other)
[ "$other" = "$(cat {dir}/leader)" ] || echo "pid $other, not the leader's"
sleep 0.2
kill -0 $other 2>/dev/null && echo other-alive
exit 0"#
    );
    let started = Instant::now();
    let o = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &inner])
        .output()
        .unwrap();
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("lockrun=0"), "{out}{err}");
    assert!(!out.contains("not the leader's"), "{out}{err}");
    assert!(!out.contains("other-alive"), "{out}{err}");
    assert!(started.elapsed() < Duration::from_secs(8), "{out}{err}");
}

fn a_reused_group_number_is_left_alone(kill_after: &str, kill_lockrun: bool) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let env = Env::new();
    let bin = env!("CARGO_BIN_EXE_lockrun");
    let dir = env.path().display().to_string();
    let end = if kill_lockrun {
        "kill -9 $lr; sleep 0.5"
    } else {
        "wait $lr"
    };
    let inner = format!(
        r#"{bin} -b file://{dir}/locks --kill-after {kill_after} res -- sh -c 'echo $$ > {dir}/leader; setsid sh -c "trap \"\" TERM; exec sleep 30" & sleep 0.3; exit 0' &
lr=$!
sleep 1.2
leader=$(cat {dir}/leader)
echo $((leader - 1)) > /proc/sys/kernel/ns_last_pid
setsid sleep 30 &
other=$!
[ "$other" = "$leader" ] || {{ echo "pid $other, not $leader"; exit 3; }}
i=0
while [ $i -lt 250 ]; do
  set -- $(cat /proc/$other/stat)
  [ "$5" = "$other" ] && break
  sleep 0.02; i=$((i + 1))
done
[ "$5" = "$other" ] || {{ echo "$other leads no group"; exit 3; }}
{end}
kill -0 $other && echo other-alive"#
    );
    let o = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &inner])
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("other-alive"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

enum Kill {
    Lockrun,
    Group,
    Named,
}

/// Starts `lockrun res -- sh -c 'sleep 300 & ...; wait'` (in a process group of its own for
/// `Kill::Group`), sends SIGKILL to lockrun (to its whole group, or to it and its children whose
/// name has "lockrun" in it), and checks that the command's `sh` and its `sleep` are gone
/// shortly after.
fn sigkill_leaves_no_descendants(how: Kill) {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let pids = env.file("pids");
    let script = format!("sleep 300 & echo \"$$ $!\" > {}; wait", pids.display());
    let mut cmd = env.cmd();
    cmd.args(["res", "--", "sh", "-c", &script]);
    if matches!(how, Kill::Group) {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&pids).is_ok_and(|s| s.ends_with('\n'))
    }));
    let text = std::fs::read_to_string(&pids).unwrap();
    let procs: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(procs.iter().all(|&p| alive(p)));
    let target = child.id() as i32;
    match how {
        Kill::Lockrun => kill(target, libc::SIGKILL),
        Kill::Group => kill(-target, libc::SIGKILL),
        Kill::Named => {
            let children =
                std::fs::read_to_string(format!("/proc/{target}/task/{target}/children")).unwrap();
            let named: Vec<i32> = children
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .filter(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.contains("lockrun"))
                })
                .collect();
            for pid in named.into_iter().chain([target]) {
                kill(pid, libc::SIGKILL);
            }
        }
    }
    child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(3), || procs.iter().all(|&p| !alive(p))),
        "descendants survived: {procs:?}"
    );
}

/// A lockrun stopped at the very moment its command starts (the command's first act is to
/// SIGSTOP it) cannot let the command run past the lease: the guard knows the deadline and the
/// command's process group before the command runs, and kills the group at the deadline. When
/// lockrun is continued it reports the stop at the deadline (124). Before the guard was started
/// ahead of the command, about a third of such commands outlived their lease (the long fault run
/// found one on DynamoDB, stopped 6 ms after its section started: 1 s into the next holder's).
/// Eight at once, so that a regression shows with high probability.
#[test]
fn lockrun_stopped_as_its_command_starts_still_stops_it_at_the_deadline() {
    let env = Env::new();
    let runs: Vec<_> = (0..8)
        .map(|i| {
            let pid = env.file(&format!("pid{i}"));
            let script = format!(
                "kill -STOP $PPID; echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 30",
                p = pid.display()
            );
            let child = env
                .cmd()
                .args(["-q", "run", "--ttl", "1s", &format!("res{i}"), "--"])
                .args(["sh", "-c", &script])
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (child, pid, Instant::now())
        })
        .collect();
    let mut outlived = Vec::new();
    for (_, pid, started) in &runs {
        assert!(eventually(Duration::from_secs(10), || pid.exists()));
        let cmd = read_pid(pid).unwrap();
        // The deadline is 1 s after the grant, which came before the start: 2 s after the
        // spawn the command must be gone, though its lockrun is still stopped.
        std::thread::sleep(Duration::from_secs(2).saturating_sub(started.elapsed()));
        if alive(cmd) {
            outlived.push(cmd);
        }
    }
    for (mut child, ..) in runs {
        kill(child.id() as i32, libc::SIGCONT);
        assert_eq!(child.wait().unwrap().code(), Some(124));
    }
    assert!(
        outlived.is_empty(),
        "commands alive past their lease's deadline: {outlived:?}"
    );
}

/// A stopped lockrun's guard KILLs at the deadline not only the command's group but every
/// descendant outside it too: `timeout` inside `sh -c` (which puts itself in a group of its
/// own, as `setsid` does) used to run on into the next holder's lease (found by review: 19 to
/// 70 lines written by the old holder's `timeout` loop during the next holder's section).
#[test]
fn a_stopped_lockrun_leaves_no_descendant_outside_the_group_past_the_deadline() {
    let env = Env::new();
    let dir = env.path().display().to_string();
    // Two workers outside the command's group, each writing its own pid: the child of a
    // `timeout` (which makes a group of its own) and a `setsid` one. Once both have, the shell
    // writes its own pid (the command's group), stops lockrun, and waits.
    let script = format!(
        "timeout 60 sh -c 'echo $$ > {dir}/t.tmp; mv {dir}/t.tmp {dir}/t; exec sleep 60' & \
         setsid sh -c 'echo $$ > {dir}/s.tmp; mv {dir}/s.tmp {dir}/s; exec sleep 60' & \
         while [ ! -e {dir}/t ] || [ ! -e {dir}/s ]; do sleep 0.01; done; \
         echo $$ > {dir}/g.tmp; mv {dir}/g.tmp {dir}/g; kill -STOP $PPID; wait"
    );
    let mut child = env
        .cmd()
        .args(["-q", "run", "--ttl", "1s", "res", "--", "sh", "-c", &script])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let group = env.file("g");
    assert!(eventually(Duration::from_secs(10), || group.exists()));
    let started = Instant::now();
    let group = read_pid(&group).unwrap();
    let workers = [
        read_pid(&env.file("t")).unwrap(),
        read_pid(&env.file("s")).unwrap(),
    ];
    // SAFETY: getpgid has no memory-safety preconditions.
    let outside = |p: i32| unsafe { libc::getpgid(p) != libc::getpgid(group) };
    assert!(
        workers.iter().all(|&p| outside(p)),
        "{workers:?} are outside the command's group {group}"
    );
    // The deadline is under 1 s after the grant: within 3 s both must be gone, though their
    // lockrun is still stopped (and the guard cannot reach them through the group).
    let gone = eventually(Duration::from_secs(3), || {
        workers.iter().all(|&p| !alive(p))
    });
    let waited = started.elapsed();
    kill(child.id() as i32, libc::SIGCONT);
    assert_eq!(child.wait().unwrap().code(), Some(124));
    assert!(gone, "alive {waited:?} after the start: {workers:?}");
}

/// A lockrun that could not renew in time says so in one line (124), without a warning that the
/// lease it then releases had run out.
#[test]
fn a_deadline_stop_is_one_line() {
    let env = Env::new();
    let child = env
        .cmd()
        .args([
            "run",
            "--ttl",
            "1s",
            "res",
            "--",
            "sh",
            "-c",
            "kill -STOP $PPID; exec sleep 30",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    kill(child.id() as i32, libc::SIGCONT);
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 124, "in time");
}

/// A run stopped because renewals failed until the deadline reports `lost` (reason `deadline`)
/// among its events, as one whose lease was taken does (reason `gone`): alerting keyed on `lost`
/// sees both.
#[test]
fn a_deadline_stop_is_a_lost_event() {
    let env = Env::new();
    let log = env.file("events.log");
    let bin = env!("CARGO_BIN_EXE_lockrun");
    // `exec`, so that the shell's pid is lockrun's.
    let mut sh = std::process::Command::new("sh");
    sh.env("LOCKRUN_BACKEND", env.backend())
        .env("HOME", env.path())
        .arg("-c")
        .arg(format!(
            "exec {bin} run --events 3 --ttl 1s res -- sh -c 'kill -STOP $PPID; exec sleep 30' \
             3>{}",
            log.display()
        ))
        .stderr(Stdio::piped());
    let child = sh.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    kill(child.id() as i32, libc::SIGCONT);
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 124, "in time");
    let events = events_of(&std::fs::read_to_string(&log).unwrap());
    let lost = events.iter().find(|e| e["event"] == "lost").expect("lost");
    assert_eq!(lost["reason"], "deadline");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let n = kinds.len();
    assert_eq!(
        &kinds[n - 3..],
        ["lost", "child_exited", "released"],
        "{kinds:?}"
    );
}

/// When the command exits but leaves a background process in its group, lockrun terminates it
/// before releasing.
#[test]
fn leftover_processes_are_reaped_before_release() {
    let env = Env::new();
    let pid_file = env.file("pid");
    let script = format!("sleep 300 & echo $! > {}", pid_file.display());
    let o = env.run(&["--kill-after", "1s", "res", "--", "sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let pid = read_pid(&pid_file).unwrap();
    assert!(!alive(pid), "background process survived");
}

/// A leftover that is stopped gets CONT after its TERM: it ends at once instead of at the KILL
/// `--kill-after` later, which held up the release.
#[test]
fn a_stopped_leftover_is_continued_to_take_its_term() {
    let env = Env::new();
    let pid_file = env.file("pid");
    let script = format!(
        "sleep 300 & echo $! > {}; kill -STOP $!; exit 0",
        pid_file.display()
    );
    let t = Instant::now();
    let o = env.run(&["--kill-after", "5s", "res", "--", "sh", "-c", &script]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(took < Duration::from_secs(3), "{took:?}");
    let pid = read_pid(&pid_file).unwrap();
    assert!(!alive(pid), "the stopped leftover survived");
}

/// A leftover that made a process group of its own (as `timeout(1)` does) and ignores TERM is
/// reached once it is reparented to lockrun, and killed with what it started, however late it
/// got there: nothing of the command outlives the release.
#[test]
fn leftovers_outside_the_group_are_killed_too() {
    let env = Env::new();
    let pid_file = env.file("pid");
    let inner = format!(
        "trap '' TERM; sleep 3013 & echo \\$! > {}; wait",
        pid_file.display()
    );
    let script =
        format!("trap '' TERM; timeout 300 sh -c \"{inner}\" >/dev/null 2>&1 & sleep 0.3; exit 0");
    let t = std::time::Instant::now();
    let o = env.run(&["--kill-after", "1s", "res", "--", "sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "no warning");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let pid = read_pid(&pid_file).unwrap();
    assert!(!alive(pid), "a descendant outside the group survived");
}

#[test]
fn waits_for_the_holder_then_runs() {
    let env = Env::new();
    let id = stdout(&env.run(&["acquire", "--ttl", "1m", "res"]));
    let start = Instant::now();
    let waiter = env
        .cmd()
        .args(["res", "--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        env.run(&["release", "res", id.trim()]).status.code(),
        Some(0)
    );
    let released = Instant::now();
    let o = waiter.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(start.elapsed() >= Duration::from_millis(300));
    // Woken by the release (inotify), not by a slow poll.
    assert!(
        released.elapsed() < Duration::from_millis(500),
        "{:?}",
        released.elapsed()
    );
    let err = stderr(&o);
    assert!(
        err.contains("waiting for res") && err.contains("held by"),
        "{err}"
    );
    // Once per holder, however often the wait found it busy (the time left differs each time).
    assert_eq!(err.matches("waiting for res").count(), 1, "{err}");
}

#[test]
fn no_wait_and_wait_limit_give_the_busy_code() {
    let env = Env::new();
    let _id = stdout(&env.run(&["acquire", "res"]));
    let o = env.run(&["-n", "res", "--", "true"]);
    assert_fails(&o, 75, "busy");
    let o = env.run(&["run", "-n", "-E", "3", "res", "--", "true"]);
    assert_fails(&o, 3, "busy");
    let t = Instant::now();
    let o = env.run(&["run", "-w", "500ms", "res", "--", "true"]);
    assert_fails_last(&o, 75, "res is busy after waiting 500ms:");
    assert!(t.elapsed() >= Duration::from_millis(500));
    let o = env.run(&["-q", "-n", "res", "--", "true"]);
    assert_eq!(o.status.code(), Some(75));
    assert!(stderr(&o).is_empty(), "-q silences the busy line");
}

#[test]
fn expired_holder_is_replaced_at_its_expiry() {
    let env = Env::new();
    env.run(&["acquire", "--ttl", "1s", "res"]);
    let t = Instant::now();
    let o = env.run(&["res", "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn interrupted_while_waiting() {
    let env = Env::new();
    env.run(&["acquire", "res"]);
    let mut waiter = env.cmd().args(["-q", "res", "--", "true"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    kill(waiter.id() as i32, libc::SIGTERM);
    assert_eq!(waiter.wait().unwrap().code(), Some(143));
    // USR1 and USR2 end the wait too, as they would end flock(1)'s: they used to be kept and
    // passed on to the command as it started, which they killed once the holder let go.
    let holder = stdout(&env.run(&["current", "--id-only", "res"]));
    let ran = env.file("ran");
    for (sig, code) in [(libc::SIGUSR1, 138), (libc::SIGUSR2, 140)] {
        let mut waiter = env
            .cmd()
            .args(["-q", "res", "--", "touch"])
            .arg(&ran)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        kill(waiter.id() as i32, sig);
        let mut status = None;
        let ended = eventually(Duration::from_secs(5), || {
            status = waiter.try_wait().unwrap();
            status.is_some()
        });
        if !ended {
            let _ = waiter.kill();
        }
        assert_eq!(status.and_then(|s| s.code()), Some(code), "signal {sig}");
    }
    assert_eq!(
        env.run(&["release", "res", holder.trim()]).status.code(),
        Some(0)
    );
    assert!(!ran.exists());
    assert_eq!(env.run(&["current", "res"]).status.code(), Some(1));
}

fn events_of(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect(l))
        .collect()
}

#[test]
fn events_stream_every_state_change() {
    let env = Env::new();
    let holder = stdout(&env.run(&["acquire", "--ttl", "1s", "res"]));
    assert!(!holder.is_empty());
    let o = env.run(&[
        "run", "--events", "-", "--ttl", "1500ms", "res", "--", "sleep", "1.2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let events = events_of(&stderr(&o));
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"waiting"), "{kinds:?}");
    // One per holder: the first attempt and the one after subscribing both find it busy.
    assert_eq!(
        kinds.iter().filter(|k| **k == "waiting").count(),
        1,
        "{kinds:?}"
    );
    assert!(events[0]["holder"]["principal"].is_string());
    let acquired = events
        .iter()
        .find(|e| e["event"] == "acquired")
        .expect("acquired");
    assert_eq!(acquired["fencing_token"], 2);
    assert!(acquired["waited_ms"].as_f64().unwrap() > 0.0);
    let renewed = events
        .iter()
        .find(|e| e["event"] == "renewed")
        .expect("renewed");
    assert!(renewed["round_trip_ms"].as_f64().unwrap() >= 0.0);
    let n = kinds.len();
    assert_eq!(&kinds[n - 2..], ["child_exited", "released"]);
    assert_eq!(events[n - 2]["code"], 0);
    assert_eq!(events[n - 1]["released"], true);
    for e in &events {
        assert_eq!(e["resource"], "res");
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
    }
}

/// A run that does not get the lease (`-n`, or `-w` running out) says so in the events too: a
/// consumer can tell a skipped job from one that never started.
#[test]
fn events_say_when_the_lease_was_not_acquired() {
    let env = Env::new();
    let holder = stdout(&env.run(&["-p", "the-holder", "acquire", "res"]));
    assert!(!holder.is_empty());
    for wait in [&["-n"][..], &["-w", "300ms"][..]] {
        let mut args = vec!["-q", "run", "--events", "-"];
        args.extend_from_slice(wait);
        args.extend_from_slice(&["res", "--", "true"]);
        let o = env.run(&args);
        assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
        let events = events_of(&stderr(&o));
        let last = events.last().expect("events");
        assert_eq!(last["event"], "busy", "{events:?}");
        assert_eq!(last["holder"]["principal"], "the-holder", "{events:?}");
        assert_eq!(last["resource"], "res");
    }
}

/// A warning that cannot be written is dropped, and the run goes on: stderr on a full disk
/// (`/dev/full`) or a pipe whose reader is gone (`lockrun ... 2>&1 | head -1`). Here the events go
/// to that stderr, so writing them fails and lockrun warns that it drops them; the warning's own
/// write failing used to panic (exit 70), before the command started, leaving the lease held.
#[test]
fn a_warning_that_cannot_be_written_does_not_end_the_run() {
    let env = Env::new();
    let ran = env.file("ran");
    for closed_pipe in [false, true] {
        let _ = std::fs::remove_file(&ran);
        let mut cmd = env.cmd();
        cmd.args(["run", "--events", "-", "res", "--", "sh", "-c"])
            .arg(format!("echo ran > {}", ran.display()));
        let status = if closed_pipe {
            let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
            drop(child.stderr.take());
            child.wait().unwrap()
        } else {
            let full = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap();
            cmd.stderr(full).status().unwrap()
        };
        assert_eq!(status.code(), Some(0), "closed pipe: {closed_pipe}");
        assert!(
            ran.exists(),
            "the command did not run (closed pipe: {closed_pipe})"
        );
        let o = env.run(&["current", "res"]);
        assert_eq!(o.status.code(), Some(1), "still held: {}", stdout(&o));
    }
}

/// Several lockruns appending to one events file: every line is whole (one write per line).
#[test]
fn events_of_concurrent_runs_appending_to_one_file_never_interleave() {
    let env = Env::new();
    let log = env.file("events.log");
    let line = format!(
        "for w in 1 2 3 4 5 6; do (for i in 1 2 3 4 5 6 7 8; do \
         {} --events 3 res-$w -- true 3>>{}; done) & done; wait",
        env!("CARGO_BIN_EXE_lockrun"),
        log.display()
    );
    let o = env.cmd_sh(&line);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&log).unwrap();
    for l in text.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "torn line: {l}"
        );
    }
    assert_eq!(text.lines().count(), 6 * 8 * 3);
}

#[test]
fn events_to_a_file_descriptor() {
    let env = Env::new();
    let log = env.file("events.log");
    let line = format!(
        "{} --events 3 res -- true 3>{}",
        env!("CARGO_BIN_EXE_lockrun"),
        log.display()
    );
    let o = env.cmd_sh(&line);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let events = events_of(&std::fs::read_to_string(&log).unwrap());
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["acquired", "child_exited", "released"]);
    let o = env.run(&["--events", "987", "res", "--", "true"]);
    assert_fails(&o, 2, "not open");
    // Descriptors lockrun opens for itself (the runtime's, the lock directory's) take the
    // lowest free numbers; one of those is not the caller's to name.
    for fd in ["3", "5", "9"] {
        let o = env.run(&["--events", fd, "res", "--", "true"]);
        assert_fails(&o, 2, "not open");
        let o = env.run(&["run", &format!("--events={fd}"), "res", "--", "true"]);
        assert_fails(&o, 2, "not open");
    }
    let o = env.run(&["--events", "x", "res", "--", "true"]);
    assert_fails(&o, 2, "--events");
    // A standard descriptor the caller closed is not open either, although Rust's runtime put
    // /dev/null there before `main` (the line goes to that /dev/null: only the status shows).
    let bin = env!("CARGO_BIN_EXE_lockrun");
    let marker = env.file("ran");
    for (fd, redirect) in [("1", ">&-"), ("2", "2>&-")] {
        let o = env.cmd_sh(&format!(
            "exec {bin} --events {fd} res -- touch {} {redirect}",
            marker.display()
        ));
        assert_eq!(o.status.code(), Some(2), "--events {fd} {redirect}");
        assert!(!marker.exists());
    }
}

/// A reader of `--events` that does not keep up (its pipe full) does not hold up the run: the
/// command starts, and is renewed, while the events wait. (A blocked write between the grant and
/// the start used to start the command only once the pipe was drained, however late, even after
/// the lease could have gone to another.) lockrun still writes every event before it exits.
#[test]
fn a_full_events_pipe_holds_up_nothing_but_the_exit() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let (r, w) = nix::unistd::pipe().unwrap();
    let (r, w) = (std::fs::File::from(r), std::fs::File::from(w));
    // Fill the pipe.
    nix::fcntl::fcntl(
        w.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut filled = 0;
    while let Ok(n) = nix::unistd::write(&w, &[b'#'; 4096]) {
        filled += n;
    }
    nix::fcntl::fcntl(
        w.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    let marker = env.file("started");
    let mut cmd = env.cmd();
    let wfd = w.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let child = cmd
        .args([
            "run", "--events", "3", "--ttl", "1s", "res", "--", "sh", "-c",
        ])
        .arg(format!("touch {}; sleep 1.5", marker.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(w);
    assert!(
        eventually(Duration::from_secs(5), || marker.exists()),
        "the command did not start while the events pipe was full"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Past the TTL with nothing read: renewals went on, so the command runs to its end.
    std::thread::sleep(Duration::from_millis(1200));
    let mut all = Vec::new();
    let mut r = r;
    r.read_to_end(&mut all).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let events = events_of(&String::from_utf8_lossy(&all[filled..]));
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"acquired"), "{kinds:?}");
    assert!(kinds.contains(&"renewed"), "{kinds:?}");
    assert_eq!(&kinds[kinds.len() - 2..], ["child_exited", "released"]);
}

/// `--events 1` and `--events 2` share the descriptor with the command, which keeps it.
#[test]
fn events_to_a_standard_descriptor_leave_it_to_the_command() {
    let env = Env::new();
    let script = "echo out; echo err >&2; ls /proc/self/fd >/dev/null";
    for fd in ["1", "2"] {
        let o = env.run(&["--events", fd, "res", "--", "sh", "-c", script]);
        assert_eq!(o.status.code(), Some(0), "--events {fd}: {}", stderr(&o));
        let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
        assert!(out.lines().any(|l| l == "out"), "--events {fd}: {out:?}");
        assert!(err.lines().any(|l| l == "err"), "--events {fd}: {err:?}");
        let events = if fd == "1" { &*out } else { &*err };
        let kinds: Vec<String> = events
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
            .collect();
        assert_eq!(
            kinds,
            ["\"acquired\"", "\"child_exited\"", "\"released\""],
            "--events {fd}"
        );
    }
}

/// A command that ignores TERM and started a process in a session of its own (`setsid`, as an
/// interactive shell's jobs are in groups of their own), the latter writing a stamp (ns since
/// the epoch) every 50 ms to `stamps`.
fn escaping_script(stamps: &std::path::Path) -> String {
    format!(
        "trap '' TERM; setsid sh -c \"trap '' TERM; while :; do date +%s%N >> {s}; sleep 0.05; \
         done\" & while :; do sleep 0.05; done",
        s = stamps.display()
    )
}

/// The last stamp of [`escaping_script`]'s escaped process, once it has stopped writing.
fn last_stamp(stamps: &std::path::Path) -> u128 {
    let read = || std::fs::read_to_string(stamps).unwrap_or_default();
    let mut before = read();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = read();
        if now == before {
            break;
        }
        before = now;
    }
    before
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .expect("a stamp")
}

fn epoch_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Renewals that keep failing: a descendant that left the command's group is stopped with the
/// group, dead before the lease's deadline, not given a grace of its own after the command died.
#[test]
fn a_deadline_stop_reaches_descendants_outside_the_group() {
    let env = Env::new();
    let stamps = env.file("stamps");
    let started = epoch_ns();
    let child = env
        .cmd()
        .args(["--ttl", "3s", "--kill-after", "1s", "res", "--", "sh", "-c"])
        .arg(escaping_script(&stamps))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || stamps.exists()));
    // The resource's kernel lock held elsewhere: every renewal times out.
    let lock = env.path().join("locks/res.lock");
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sleep", "8"])
        .spawn()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_fails_last(&o, 124, "in time");
    let last = last_stamp(&stamps);
    let expiry = started + 3_000_000_000;
    assert!(
        last < expiry,
        "the escaped process wrote {} ms after the lease's expiry",
        (last - expiry) / 1_000_000
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

/// The lease found lost: a descendant that left the command's group gets the group's KILL,
/// `--kill-after` after the loss, not a second grace after the command died.
#[test]
fn a_lost_lease_stop_reaches_descendants_outside_the_group() {
    let env = Env::new();
    let stamps = env.file("stamps");
    let id_file = env.file("id");
    let script = format!(
        "echo $LOCKRUN_LEASE_ID > {}; {}",
        id_file.display(),
        escaping_script(&stamps)
    );
    let child = start(
        &env,
        &[QUICK_LOSS, &["res", "--", "sh", "-c", &script]].concat(),
    );
    assert!(eventually(Duration::from_secs(10), || stamps.exists()));
    release_from_outside(&env, &id_file);
    let released = epoch_ns();
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 124, "lost the lease");
    let last = last_stamp(&stamps);
    // Found lost within the 200 ms heartbeat, KILL 1 s later; 600 ms for the last stamp's
    // `date` and scheduling on a loaded machine. (A second grace would put it past 2 s.)
    let bound = released + 1_800_000_000;
    assert!(
        last < bound,
        "the escaped process wrote {} ms after the release",
        (last - released) / 1_000_000
    );
}

/// While lockrun waits for the command's leftovers to end, a first INT or TERM to it (systemd
/// sends one to lockrun and the command at once, and the command may end first) leaves them
/// their grace; a second one KILLs them at once, rather than waiting out `--kill-after`.
#[test]
fn a_second_signal_while_ending_leftovers_kills_them_at_once() {
    let env = Env::new();
    let pid_file = env.file("pid");
    let script = format!(
        "setsid sh -c \"trap '' TERM INT; echo \\$\\$ > {}; exec sleep 100\" & sleep 0.3; exit 0",
        pid_file.display()
    );
    for (sigs, fast) in [
        (&[libc::SIGTERM][..], false),
        (&[libc::SIGTERM, libc::SIGTERM], true),
        (&[libc::SIGINT, libc::SIGINT], true),
    ] {
        let _ = std::fs::remove_file(&pid_file);
        let child = start(
            &env,
            &["--kill-after", "2s", "res", "--", "sh", "-c", &script],
        );
        assert!(eventually(Duration::from_secs(10), || read_pid(&pid_file).is_some()));
        // The command has exited; lockrun is ending what it left (TERM and INT ignored).
        std::thread::sleep(Duration::from_millis(800));
        let t = Instant::now();
        for &sig in sigs {
            kill(child.id() as i32, sig);
            // Signals within 100 ms of the first are one request (`timeout(1)` sends two).
            std::thread::sleep(Duration::from_millis(150));
        }
        let o = child.wait_with_output().unwrap();
        let took = t.elapsed();
        if fast {
            assert!(took < Duration::from_millis(900), "{sigs:?}: {took:?}");
        } else {
            assert!(took >= Duration::from_millis(900), "{sigs:?}: {took:?}");
        }
        assert_eq!(o.status.code(), Some(0), "{sigs:?}: {}", stderr(&o));
        assert!(!alive(read_pid(&pid_file).unwrap()));
    }
}

/// A lockrun inside the command of another on the same resource would wait for its own parent
/// forever: it says so at once (busy, 75), and one on another resource runs.
#[test]
fn a_nested_lockrun_on_the_same_resource_says_it_would_wait_for_itself() {
    let env = Env::new();
    let bin = env!("CARGO_BIN_EXE_lockrun");
    let script = format!(
        "{bin} nest -- true; echo run $?; {bin} acquire -w 1h nest; echo acquire $?; \
         {bin} other -- true; echo other $?"
    );
    let t = Instant::now();
    let o = env.run(&["nest", "--", "sh", "-c", &script]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "run 75\nacquire 75\nother 0\n");
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 2, "{err}");
    for line in err.lines() {
        assert!(
            line.starts_with(
                "lockrun: nest is held by the lockrun this command runs under (lease "
            ),
            "{err}"
        );
    }
}

/// A stop's TERM reaches each process of the command's group once: a leftover of the group
/// is not sent a second one while lockrun ends it (some programs take a second TERM as "abort
/// now", as terraform does).
#[test]
fn a_stop_terms_each_process_once() {
    let env = Env::new();
    let (log, id_file) = (env.file("terms"), env.file("id"));
    let script = format!(
        "(trap 'echo TERM >> {log}' TERM; while :; do sleep 0.05; done) & \
         echo $LOCKRUN_LEASE_ID > {id}; trap 'exit 0' TERM; while :; do sleep 0.05; done",
        log = log.display(),
        id = id_file.display()
    );
    let child = start(
        &env,
        &[QUICK_LOSS, &["res", "--", "sh", "-c", &script]].concat(),
    );
    release_from_outside(&env, &id_file);
    let o = child.wait_with_output().unwrap();
    assert_fails_last(&o, 124, "lost the lease");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "TERM\n");
}

/// A stopped process of the command's group still gets to act on the TERM of a stop: it is
/// continued, so it ends gracefully rather than at the KILL.
#[test]
fn a_stopped_process_of_the_group_is_continued_to_act_on_its_term() {
    let env = Env::new();
    let (log, ready) = (env.file("got"), env.file("ready"));
    let script = format!(
        "sh -c 'trap \"echo TERM >> {log}; exit 0\" TERM; touch {ready}; kill -STOP $$; sleep 100' & \
         trap 'exit 0' TERM; while :; do sleep 0.05; done",
        log = log.display(),
        ready = ready.display()
    );
    let child = start(
        &env,
        &["--kill-after", "3s", "res", "--", "sh", "-c", &script],
    );
    assert!(eventually(Duration::from_secs(10), || ready.exists()));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    kill(child.id() as i32, libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "TERM\n",
        "{}",
        stderr(&o)
    );
}

/// A setuid-root copy of setpriv(1), which an unprivileged lockrun's command runs as a `sudo`
/// would run its command: as root, out of that user's reach (no signal of lockrun's reaches
/// it). Also the directory for the lock directory, open to every user. `None` unless the
/// tests run as root (as CI runs them).
fn as_another_user() -> Option<(tempfile::TempDir, String, String)> {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("lockrun-suid-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let setpriv = dir.path().join("setpriv");
    std::fs::copy("/usr/bin/setpriv", &setpriv).expect("setpriv(1), package util-linux");
    std::fs::set_permissions(&setpriv, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let root = format!("{} --reuid=0 --regid=0 --clear-groups", setpriv.display());
    let url = format!("file://{}/locks", dir.path().display());
    Some((dir, root, url))
}

/// `lockrun ARGS` as the user nobody.
fn nobody(url: &str, args: &[&str]) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lockrun"));
    cmd.uid(65534)
        .gid(65534)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .args(["-b", url])
        .args(args);
    cmd
}

/// Processes the command left that lockrun may not kill (root's, started through a setuid
/// program as `sudo` does) keep the lease while they run: lockrun used to give up on them 10 s
/// after their KILL, release, and let the next holder start alongside them.
#[test]
fn the_lease_stays_while_processes_lockrun_may_not_kill_run() {
    let Some((dir, root, url)) = as_another_user() else {
        return;
    };
    let marker = dir.path().join("ended");
    let script = format!(
        "{root} sh -c 'sleep 13; touch {}' >/dev/null 2>&1 & sleep 0.3; exit 0",
        marker.display()
    );
    let started = Instant::now();
    let first = nobody(&url, &["--ttl", "2s", "res", "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(11_500));
    let o = nobody(&url, &["-n", "res", "--", "true"]).output().unwrap();
    assert_fails(&o, 75, "res is busy");
    let o = first.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(marker.exists() && started.elapsed() >= Duration::from_secs(13));
    assert!(
        stderr(&o).contains("outlived their KILL")
            && stderr(&o).contains("keeping the lease until they exit (pids "),
        "{}",
        stderr(&o)
    );
    let o = nobody(&url, &["-n", "res", "--", "true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// When the lease is lost while such processes run, lockrun does not claim it stopped the
/// command: it names what is left (exit 124).
#[test]
fn a_lost_lease_names_the_processes_lockrun_may_not_kill() {
    let Some((dir, root, url)) = as_another_user() else {
        return;
    };
    let pid_file = dir.path().join("pid");
    // Its output elsewhere: the test's pipe from lockrun would otherwise stay open.
    let script = format!(
        "{root} sh -c 'echo $$ > {}; exec sleep 60' >/dev/null 2>&1 & wait",
        pid_file.display()
    );
    let first = nobody(&url, &["--ttl", "3s", "res", "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || read_pid(&pid_file).is_some()));
    let pid = read_pid(&pid_file).unwrap();
    let id = stdout(
        &nobody(&url, &["current", "--id-only", "res"])
            .output()
            .unwrap(),
    );
    let o = nobody(&url, &["release", "res", id.trim()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = first.wait_with_output().unwrap();
    kill(pid, libc::SIGKILL);
    assert_fails(
        &o,
        124,
        &format!(
            "lost the lease on res while processes of the command that lockrun may not kill \
             (another user's, as a sudo in the command starts) still run: pids {pid}"
        ),
    );
}

/// A lockrun started with SIGCHLD blocked (its parent blocked it and did not unblock it before
/// the exec) used to learn of the command's end only at its next renewal, a third of the TTL
/// later, holding the lease meanwhile. It unblocks it for itself; the command still starts with
/// the mask lockrun was started with.
#[test]
fn a_blocked_sigchld_does_not_delay_the_end() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let mut cmd = env.cmd();
    cmd.args([
        "--ttl",
        "30s",
        "res",
        "--",
        "grep",
        "SigBlk",
        "/proc/self/status",
    ]);
    // SAFETY: pthread_sigmask is async-signal-safe, and touches only the child's mask.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let started = Instant::now();
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let mask = u64::from_str_radix(stdout(&o).split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(mask, 1 << (libc::SIGCHLD - 1), "{}", stdout(&o));
}
