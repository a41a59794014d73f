//! Interactive use through a real pseudo-terminal (util-linux `script` allocates it): the command
//! becomes the terminal's foreground job, reads its answer, and gets Ctrl-C itself.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn in_pty(env: &Env, inner: &str) -> std::process::Child {
    server::require("script", "util-linux");
    let line = format!("{} {inner}", env!("CARGO_BIN_EXE_lockrun"));
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"])
        .env("LOCKRUN_BACKEND", env.backend())
        .env("HOME", env.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().expect("script")
}

#[test]
fn a_prompt_reads_the_terminal() {
    let env = Env::new();
    let mut child = in_pty(
        &env,
        "res -- sh -c 'printf \"Apply? \"; read ans; echo \"answer=$ans\"; ps -o pgid=,tpgid= -p $$'",
    );
    std::thread::sleep(Duration::from_millis(700));
    child.stdin.as_mut().unwrap().write_all(b"yes\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("answer=yes"), "{text}");
    let ids: Vec<&str> = text.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(
        ids[0], ids[1],
        "the command's group is the terminal's foreground group: {text}"
    );
}

/// A command whose standard descriptors are all redirected can still prompt on /dev/tty (sudo,
/// ssh and git do): lockrun hands it the terminal it reached through /dev/tty.
#[test]
fn a_prompt_on_dev_tty_works_with_every_descriptor_redirected() {
    let env = Env::new();
    let log = env.file("log");
    let mut child = in_pty(
        &env,
        &format!(
            "res -- sh -c 'read x </dev/tty; echo \"got=$x\"' >{} 2>&1 </dev/null",
            log.display()
        ),
    );
    std::thread::sleep(Duration::from_millis(700));
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"secret\n")
        .unwrap();
    let pid = child.id() as i32;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(10));
        // SAFETY: kill(2) on a pid; at worst the process is gone already.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{text}");
    assert_eq!(text.trim(), "got=secret");
}

#[test]
fn ctrl_c_reaches_the_command() {
    let env = Env::new();
    let mut child = in_pty(
        &env,
        "res -- sh -c 'trap \"echo got-int; exit 9\" INT; echo ready; while :; do sleep 0.05; done'",
    );
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("ready") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "no output: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    child.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("got-int"), "{seen}{rest}");
    assert_eq!(status.code(), Some(9));
}

/// Ctrl-C at the terminal stops the script that ran lockrun too, as it would around the bare
/// command or flock(1): lockrun dies of the SIGINT its command died of, and passes it to its
/// own process group (the script's), which the terminal left out because the command's group
/// was the foreground one. A command that handles the interrupt and exits leaves the script
/// going, as without lockrun.
#[test]
fn ctrl_c_stops_the_script_around_lockrun() {
    let lockrun = env!("CARGO_BIN_EXE_lockrun");
    for (command, continues) in [
        ("echo ready; exec sleep 10", None),
        (
            "trap 'echo handled; exit 3' INT; echo ready; sleep 10",
            Some("CONTINUED 3"),
        ),
    ] {
        let env = Env::new();
        let mut child = bash_in_pty(
            &env,
            &format!("\"{lockrun}\" res -- sh -c \"{command}\"; echo CONTINUED $?\n"),
        );
        let mut out = child.stdout.take().unwrap();
        let mut seen = String::new();
        read_until(&mut out, &mut seen, "ready");
        child.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
        let _ = child.wait();
        out.read_to_string(&mut seen).unwrap();
        match continues {
            None => assert!(!seen.contains("CONTINUED"), "the script went on: {seen}"),
            Some(line) => assert!(seen.contains(line), "{seen}"),
        }
        assert_fails(&env.run(&["current", "res"]), 1, "not held");
    }
}

/// Ctrl-C while lockrun waits for the lease stops the script around it too.
#[test]
fn ctrl_c_while_waiting_stops_the_script_around_lockrun() {
    let env = Env::new();
    let id = stdout(&env.run(&["acquire", "res"])).trim().to_owned();
    let mut child = bash_in_pty(
        &env,
        &format!(
            "\"{}\" res -- true; echo CONTINUED $?\n",
            env!("CARGO_BIN_EXE_lockrun")
        ),
    );
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    read_until(&mut out, &mut seen, "waiting for res");
    child.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    let _ = child.wait();
    out.read_to_string(&mut seen).unwrap();
    assert!(!seen.contains("CONTINUED"), "the script went on: {seen}");
    assert_eq!(env.run(&["is-held", "res", &id]).status.code(), Some(0));
}

/// Reads the pty's output until `want` appears (or the stream ends).
fn read_until(out: &mut impl Read, seen: &mut String, want: &str) {
    let mut buf = [0u8; 256];
    while !seen.contains(want) {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "no {want:?} in: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Runs `script` (a job-control bash script, `set -m` added) in a pty, in `env`. A job left
/// stopped would hang the test: the pty is ended after 30 s, so that it fails instead.
fn bash_job_in_pty(env: &Env, script: &str) -> std::process::Child {
    bash_in_pty(env, &format!("set -m\n{script}"))
}

/// Runs a bash script in a pty, in `env`, ended after 30 s like [`bash_job_in_pty`]. Without
/// `set -m` the script and what it starts share one process group, the terminal's foreground
/// group, as for `make` or a script run from an interactive shell.
fn bash_in_pty(env: &Env, script: &str) -> std::process::Child {
    server::require("bash", "bash");
    server::require("script", "util-linux");
    let job = env.file("job.sh");
    std::fs::write(&job, script).unwrap();
    let child = Command::new("script")
        .args([
            "-qec",
            &format!("bash --norc --noprofile {}", job.display()),
            "/dev/null",
        ])
        .env("LOCKRUN_BACKEND", env.backend())
        .env("HOME", env.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    let pid = child.id() as i32;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        // SAFETY: kill(2) on a pid; at worst the process is gone already.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    child
}

/// Ctrl-Z stops the command, and lockrun follows it, so the job-control shell gets its prompt
/// back (the job reports stopped); `fg` gives the terminal back to the command, which goes on.
#[test]
fn ctrl_z_suspends_the_job_and_fg_resumes_it() {
    suspend_and_resume(|lockrun| lockrun.to_owned());
}

/// The same with lockrun inside a job it does not lead (as under `make`): the whole job stops.
#[test]
fn ctrl_z_suspends_a_job_lockrun_does_not_lead() {
    suspend_and_resume(|lockrun| format!("sh -c '{lockrun}; echo inner=$?'"));
}

fn suspend_and_resume(job_line: impl Fn(&str) -> String) {
    let env = Env::new();
    let lockrun = format!(
        "{} res -- sh -c \"echo ready; read x; echo got=\\$x\"",
        env!("CARGO_BIN_EXE_lockrun")
    );
    let mut child = bash_job_in_pty(
        &env,
        &format!(
            "{}\necho \"stopped=$?\"\nfg\necho \"rc=$?\"\n",
            job_line(&lockrun)
        ),
    );
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    read_until(&mut out, &mut seen, "ready");
    std::thread::sleep(Duration::from_millis(200));
    child.stdin.as_mut().unwrap().write_all(b"\x1a").unwrap();
    // The shell saw the job stop (128 + SIGTSTP) and went on to `fg`.
    read_until(&mut out, &mut seen, "stopped=148");
    std::thread::sleep(Duration::from_millis(500));
    child.stdin.as_mut().unwrap().write_all(b"yes\n").unwrap();
    read_until(&mut out, &mut seen, "rc=");
    let status = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    seen.push_str(&rest);
    assert!(seen.contains("got=yes"), "{seen}");
    assert!(seen.contains("rc=0"), "{seen}");
    assert_eq!(status.code(), Some(0), "{seen}");
}

/// A job started with `&` and brought to the foreground with `fg` while its command runs: the
/// terminal is lockrun's then, not the command's, so Ctrl-Z reaches lockrun. It passes it on,
/// and the whole job stops (the command stopped ticking, where it ran on before); `fg` resumes
/// it with the terminal the command's.
#[test]
fn ctrl_z_after_fg_of_a_background_job_stops_the_command_too() {
    let env = Env::new();
    let ticks = env.file("ticks");
    let mut child = bash_job_in_pty(
        &env,
        &format!(
            "\"{lockrun}\" res -- sh -c 'i=0; while :; do i=$((i+1)); echo $i > {t}; sleep 0.05; done' &\n\
             sleep 0.5\necho fg-now\nfg\necho \"stopped=$?\"\n\
             a=$(cat {t}); sleep 0.5; b=$(cat {t}); echo \"ticks $a $b\"\n\
             kill %1; kill -CONT %1; wait\necho end\n",
            lockrun = env!("CARGO_BIN_EXE_lockrun"),
            t = ticks.display()
        ),
    );
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    read_until(&mut out, &mut seen, "fg-now");
    // `fg` names the job as it brings it to the foreground.
    let named = seen.find("fg-now").unwrap();
    while !seen[named..].contains("res -- sh -c") {
        let mut buf = [0u8; 256];
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "fg did not name the job: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.stdin.as_mut().unwrap().write_all(b"\x1a").unwrap();
    read_until(&mut out, &mut seen, "stopped=148");
    read_until(&mut out, &mut seen, "end");
    let _ = child.wait();
    let line = seen.lines().find(|l| l.starts_with("ticks ")).unwrap();
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        parts[1], parts[2],
        "the command ran on in the stopped job: {seen}"
    );
    assert_fails(&env.run(&["current", "res"]), 1, "not held");
}

/// Runs `body` (with `LOCKRUN` replaced by the binary) as a job-control bash script in a pty,
/// types Ctrl-Z once `suspend_at` (if any) has appeared, answers `yes` once `after` has appeared
/// and `wait` has passed, and checks that the command read the answer and the job ended with 0.
fn job_reads_the_answer(body: &str, suspend_at: Option<&str>, after: &str, wait: Duration) {
    let env = Env::new();
    let body = body.replace("LOCKRUN", env!("CARGO_BIN_EXE_lockrun"));
    let mut child = bash_job_in_pty(&env, &format!("{body}\necho \"rc=$?\"\n"));
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    if let Some(marker) = suspend_at {
        read_until(&mut out, &mut seen, marker);
        std::thread::sleep(Duration::from_millis(200));
        child.stdin.as_mut().unwrap().write_all(b"\x1a").unwrap();
    }
    read_until(&mut out, &mut seen, after);
    std::thread::sleep(wait);
    child.stdin.as_mut().unwrap().write_all(b"yes\n").unwrap();
    read_until(&mut out, &mut seen, "rc=");
    read_to_end(&mut child, &mut out, &mut seen);
    assert!(seen.contains("got=yes"), "{seen}");
    assert!(seen.contains("rc=0"), "{seen}");
}

/// Waits for the pty's shell to end and adds what it printed last to `seen`.
fn read_to_end(child: &mut std::process::Child, out: &mut impl Read, seen: &mut String) {
    let _ = child.wait();
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    seen.push_str(&rest);
}

/// Ctrl-Z, `bg`, then `fg` while the command still runs in the background: the command gets the
/// terminal back with the job, and reads from it (once was not enough: the first read stopped
/// the job again, and the answer went to the shell).
#[test]
fn bg_then_fg_gives_the_command_the_terminal() {
    // `rea%s` prints "ready", which the job line bash shows does not contain.
    let body = "LOCKRUN res -- sh -c \"echo started; sleep 1; printf 'rea%s\\n' dy; read x; echo got=\\$x\"\n\
                echo \"stopped=$?\"\nbg\nsleep 0.3\nfg";
    job_reads_the_answer(body, Some("started"), "ready", Duration::from_millis(500));
}

/// A job started with `&`, whose command stops on reading the terminal, and then `fg`: the
/// command gets the terminal and goes on.
#[test]
fn a_job_started_in_the_background_reads_after_fg() {
    let body = "LOCKRUN res -- sh -c \"echo started; read x; echo got=\\$x\" &\nsleep 1\nfg";
    job_reads_the_answer(body, None, "started", Duration::from_millis(1500));
}

/// A command that stops to read the terminal in a job nobody can continue (lockrun's process
/// group is orphaned: the subshell that started it is gone) is ended, as its read would have
/// failed without lockrun, instead of staying stopped with its lease renewed for ever (or
/// spinning).
#[test]
fn an_orphaned_job_whose_command_reads_the_terminal_ends() {
    let env = Env::new();
    let pid_file = env.file("lockrun.pid");
    let mut child = bash_job_in_pty(
        &env,
        &format!(
            "(\"{}\" res -- sh -c 'echo $PPID > {}; read x < /dev/tty' &)\nsleep 4\n",
            env!("CARGO_BIN_EXE_lockrun"),
            pid_file.display()
        ),
    );
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    }));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ended = eventually(Duration::from_secs(3), || !alive(pid));
    if !ended {
        // SAFETY: kill(2) on a pid; the guard then ends the command.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = child.wait();
    assert!(
        ended,
        "lockrun still runs, its command stopped on the terminal"
    );
    assert_fails(&env.run(&["current", "res"]), 1, "not held");
}

/// On a terminal 40 columns wide, the live "waiting for" line is cut to fit: a longer line
/// would wrap, and each redraw would leave its first row behind.
#[test]
fn the_live_waiting_line_fits_a_narrow_terminal() {
    let env = Env::new();
    let id = env.run(&[
        "-p",
        "someone-with-a-long-name@a-long-host-name",
        "acquire",
        "res",
    ]);
    assert_eq!(id.status.code(), Some(0), "{}", stderr(&id));
    // `script` runs the line under `sh -c`: set the width first.
    let line = format!(
        "stty cols 40; {} -w 2500ms res -- true; echo exit=$?",
        env!("CARGO_BIN_EXE_lockrun")
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("LOCKRUN_BACKEND", env.backend())
        .env("HOME", env.path())
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("exit=75"), "{text}");
    let draws: Vec<&str> = text
        .split('\r')
        .map(|s| s.trim_start_matches("\x1b[K").trim_end_matches('\n'))
        .filter(|s| s.contains("waiting for"))
        .collect();
    assert!(draws.len() >= 2, "the line was redrawn: {text:?}");
    for d in draws {
        assert!(d.chars().count() <= 39, "{d:?} in {text:?}");
    }
}

/// A job sent to the background (Ctrl-Z, `bg`) leaves the terminal to the job in the
/// foreground when its command ends. lockrun used to take it back from whatever group held it,
/// and the user's next foreground command stopped at its next read.
#[test]
fn a_job_sent_to_the_background_leaves_the_terminal_alone() {
    let body = "LOCKRUN res -- sh -c 'echo started; sleep 1'\necho \"stopped=$?\"\nbg\n\
                sh -c 'sleep 2; echo ready; read x; echo got=$x'";
    job_reads_the_answer(body, Some("started"), "ready", Duration::from_millis(200));
}

/// SIGKILL of lockrun while its command has the terminal: the guard kills the command and gives
/// the terminal back to lockrun's process group, so the script around lockrun reads its next
/// answer (the terminal used to stay with the dead command's group, and the script's read
/// stopped it, or failed). A job-control shell, which takes its terminal back itself, keeps it.
/// The guard acts as the script goes on, so the script reads a moment later (a read at once
/// may still come first).
#[test]
fn a_killed_lockrun_gives_the_terminal_back_to_the_script() {
    killed_lockrun_then_read(bash_in_pty, false);
    killed_lockrun_then_read(bash_job_in_pty, false);
    // The outer of two nested lockruns: the terminal is the inner command's group's then, which
    // dies with the inner lockrun a moment later.
    killed_lockrun_then_read(bash_in_pty, true);
}

/// A command that cannot be started (not found, or found too late to start under a trusted
/// lease) had already been given the terminal by its process: lockrun gives it back to its own
/// group, so that the script around lockrun can read it (it used to stay with the dead group).
#[test]
fn a_command_that_did_not_start_leaves_the_terminal_to_the_script() {
    let env = Env::new();
    let bin = env!("CARGO_BIN_EXE_lockrun");
    let mut child = bash_in_pty(
        &env,
        &format!(
            "\"{bin}\" res -- no-such-command-lockrun-test\necho \"after=$?\"\nread x\necho \"got=$x\"\n"
        ),
    );
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    read_until(&mut out, &mut seen, "after=127");
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.stdin.as_mut().unwrap().write_all(b"yes\n");
    read_until(&mut out, &mut seen, "got=");
    read_to_end(&mut child, &mut out, &mut seen);
    assert!(seen.contains("got=yes"), "{seen}");
}

fn killed_lockrun_then_read(shell: fn(&Env, &str) -> std::process::Child, nested: bool) {
    let env = Env::new();
    let pid_file = env.file("lockrun.pid");
    let bin = env!("CARGO_BIN_EXE_lockrun");
    // The pid of the lockrun to kill: the command's parent, or its grandparent.
    let (inner, pid) = if nested {
        (
            format!("\"{bin}\" inner -- "),
            "read -r a b c pid rest < /proc/$PPID/stat",
        )
    } else {
        (String::new(), "pid=$PPID")
    };
    let mut child = shell(
        &env,
        &format!(
            "\"{bin}\" res -- {inner}sh -c '{pid}; echo $pid > {}; echo ready; sleep 20'\n\
             echo \"after=$?\"\nsleep 1\nread x\necho \"got=$x\"\n",
            pid_file.display()
        ),
    );
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    read_until(&mut out, &mut seen, "ready");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on lockrun's pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    read_until(&mut out, &mut seen, "after=137");
    std::thread::sleep(Duration::from_millis(1500));
    // Without the terminal, the script's read fails at once and the script ends: the write
    // may then find the pty gone.
    let _ = child.stdin.as_mut().unwrap().write_all(b"yes\n");
    read_until(&mut out, &mut seen, "got=");
    read_to_end(&mut child, &mut out, &mut seen);
    assert!(seen.contains("got=yes"), "{seen}");
}

/// A script without job control that starts lockrun with `&` goes on reading the terminal:
/// lockrun, in the script's own (foreground) process group but not its leader, with /dev/null
/// or a file for its input, leaves the terminal alone (it used to give it to its command, and
/// the script's next `read` stopped the script: SIGTTIN). A command that stops to read the
/// terminal gets it then, and the script has it back when lockrun ends.
#[test]
fn a_lockrun_started_with_ampersand_in_a_script_leaves_the_terminal_to_it() {
    let env = Env::new();
    let bin = env!("CARGO_BIN_EXE_lockrun");
    let mut child = bash_in_pty(
        &env,
        &format!(
            "\"{bin}\" a -- sleep 2 </dev/null >/dev/null 2>&1 &\n\
             \"{bin}\" b -- sleep 2 &\n\
             sleep 0.5\nread -p 'continue? ' x\necho \"got=$x\"\nwait\necho \"waited=$?\"\n\
             \"{bin}\" c -- sh -c 'printf \"prompt? \" >/dev/tty; read y </dev/tty; echo y=$y' \
             </dev/null >/dev/null 2>&1 &\n\
             wait $!\necho \"reader=$?\"\nread -p 'again? ' z\necho \"z=$z\"\n"
        ),
    );
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    read_until(&mut out, &mut seen, "continue? ");
    child.stdin.as_mut().unwrap().write_all(b"yes\n").unwrap();
    read_until(&mut out, &mut seen, "prompt? ");
    child.stdin.as_mut().unwrap().write_all(b"later\n").unwrap();
    read_until(&mut out, &mut seen, "again? ");
    child.stdin.as_mut().unwrap().write_all(b"last\n").unwrap();
    read_to_end(&mut child, &mut out, &mut seen);
    assert!(
        seen.contains("got=yes") && seen.contains("waited=0"),
        "{seen}"
    );
    assert!(
        seen.contains("reader=0") && seen.contains("z=last"),
        "{seen}"
    );
}
