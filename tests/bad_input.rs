//! Every bad input gets its documented exit code and exactly one `lockrun: ` line on stderr,
//! and never changes a lease.

mod common;

use common::*;

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    assert_fails(&env.run(&["acquire", "--ttl", "5x", "res"]), 2, "5x");
    assert_fails(&env.run(&["acquire", "--ttl", "5M", "res"]), 2, "ambiguous");
    assert_fails(&env.run(&["res", "--ttl", "soon", "--", "true"]), 2, "soon");
    assert_fails(&env.run(&["run", "-w", "-3", "res", "--", "true"]), 2, "");
    assert_fails(&env.run(&["acquire", "-E", "300", "res"]), 2, "300");
    // acquire -E 0 would make a busy resource look acquired; run -E 0 just skips the command.
    let id = stdout(&env.run(&["acquire", "res"])).trim().to_owned();
    assert_fails(
        &env.run(&["acquire", "-n", "-E", "0", "res"]),
        2,
        "acquire -E 0 would report a busy resource as acquired",
    );
    let o = env.run(&["run", "-n", "-E", "0", "res", "--", "false"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).is_empty(),
        "run -E 0 skips quietly: {}",
        stderr(&o)
    );
    let o = env.run(&["run", "-w", "300ms", "-E", "0", "res", "--", "false"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).is_empty(),
        "no waiting line either: {}",
        stderr(&o)
    );
    // The resource forgotten: clap would take the command for it.
    for args in [
        &["--", "true"][..],
        &["run", "--", "true"],
        &["-b", "file:///nonexistent", "--", "true"],
    ] {
        assert_fails(
            &env.run(args),
            2,
            "no resource before --: name the resource to lock, as in: lockrun RESOURCE -- COMMAND...",
        );
    }
    // ... also when the command has arguments, which clap would run as the command, under a
    // lease on the command's name (`lockrun --ttl 5m -- sh -c '...'` ran `-c`).
    let marker = env.file("ran-without-resource");
    let touch = marker.to_str().unwrap();
    for args in [
        &["--ttl", "5m", "--", "touch", touch][..],
        &["run", "--", "touch", touch],
        &["-q", "run", "-n", "--", "touch", touch],
        &["run", "--", "-x", "touch", touch],
        // An option's value spelled like the command's first word is still a value.
        &["-p", "touch", "--", "touch", touch],
    ] {
        assert_fails(
            &env.run(args),
            2,
            "no resource before --: the command's first word",
        );
    }
    assert!(!marker.exists(), "the command ran without its resource");
    // A mistyped option is named with the one meant; a verb's usage errors point to its help.
    assert_fails(
        &env.run(&["--tll", "5m", "res", "--", "true"]),
        2,
        "unexpected argument '--tll' found (did you mean '--ttl'? see 'lockrun run --help')",
    );
    assert_fails(
        &env.run(&["current", "res", "--json"]),
        2,
        "(see 'lockrun current --help')",
    );
    assert_fails(
        &env.run(&["renew", "res"]),
        2,
        "<LEASE_ID> (see 'lockrun renew --help')",
    );
    // `help` takes a verb; a resource named `help` is reached through `run`.
    for args in [&["help", "--", "true"][..], &["help", "foo"]] {
        assert_fails(&env.run(args), 2, "help takes a verb (");
        assert_fails(&env.run(args), 2, "write: lockrun run help -- COMMAND...");
    }
    assert_fails(
        &env.run(&["help", "relase"]),
        2,
        "help takes a verb ('relase' is none: did you mean 'release'? see 'lockrun --help')",
    );
    let o = env.run(&["run", "help", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A resource that starts with '-' goes between two `--`.
    let o = env.run(&[
        "run",
        "--",
        "-dash",
        "--",
        "sh",
        "-c",
        "echo $LOCKRUN_RESOURCE",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "-dash");
    let o = env.run(&["--", "-dash", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A resource named like a verb, in the implied-run form: never the verb run quietly, and
    // never the command left unrun without a word; the message says how to run it.
    let marker = env.file("ran");
    let touch = marker.to_str().unwrap();
    let job = env.file("job.sh");
    std::fs::write(&job, format!("#!/bin/sh\ntouch {touch}\n")).unwrap();
    std::fs::set_permissions(&job, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let job = job.to_str().unwrap();
    for (verb, args) in [
        ("init", &["init", "--", "touch", touch][..]),
        ("list", &["-q", "list", "--", job]),
        ("doctor", &["doctor", "--", job]),
        ("init", &["-n", "init", "--", job]),
        ("release", &["release", "--", job]),
        ("acquire", &["-n", "acquire", "--", job]),
    ] {
        let o = env.run(args);
        assert_fails(
            &o,
            2,
            &format!("resource named '{verb}', write: lockrun run {verb} -- COMMAND..."),
        );
    }
    assert!(!marker.exists());
    assert_fails(
        &env.run(&["init", "--", job]),
        2,
        &format!("(for the resource '{job}', leave out the --)"),
    );
    // A path that is no executable file is a resource, as lockrun list /srv/data reads it.
    let o = env.run(&["list", "--", "/srv/data"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // `--` before a resource stays usable where one is needed, and before one that starts
    // with `-` everywhere.
    let o = env.run(&["current", "--", "free-res"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = env.run(&["init", "--", "-dash"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A script's precautionary `-- "$RES"` before a resource that is not a path to a program.
    for verb in ["init", "list"] {
        let o = env.run(&[verb, "--", "db"]);
        assert_eq!(o.status.code(), Some(0), "{verb}: {}", stderr(&o));
    }
    // A verb missing an argument after `--`: the verb's help first, then the other reading.
    assert_fails(
        &env.run(&["release", "--", "res"]),
        2,
        "(see 'lockrun release --help'; or, to run a command under a lease on a resource named 'release'",
    );
    // -w takes what `wait` in the config file takes: 0 tries once, and 'forever'.
    let o = env.run(&["acquire", "-w", "0", "res"]);
    assert_fails(&o, 75, "res is busy");
    assert_fails(
        &env.run(&["acquire", "-w", "soon", "res"]),
        2,
        "(a duration, 0 to try once, or 'forever')",
    );
    let o = env.run(&["run", "-w", "forever", "other", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(env.run(&["release", "res", &id]).status.code(), Some(0));
    assert_fails(&env.run(&["frobnicate"]), 2, "");
    assert_fails(&env.run(&["res", "--"]), 2, "COMMAND");
    // flock(1)'s `-c 'command'` habit: -c is the config file here, and the command is missing.
    assert_fails(
        &env.run(&["run", "res", "-c", "echo hi"]),
        2,
        "<COMMAND>... (the command goes after --, as in: lockrun RESOURCE -- sh -c 'a && b')",
    );
    // Without `--`, what follows a word that is not a verb is not run: a mistyped or unknown
    // verb used to take the next word for a command to run under a lease.
    let ran = env.file("ran");
    let ran = ran.to_str().unwrap();
    for args in [
        &["res", "-c", "echo hi"][..],
        &["unlock", "res", "touch", ran],
        &["res", "touch", ran],
        // A `--` after the command's first word is the command's own.
        &["res", "touch", ran, "--"],
    ] {
        assert_fails(
            &env.run(args),
            2,
            "is not a verb; to run a command under a lease on a resource of that name, put -- \
             before the command, as in: lockrun RESOURCE -- sh -c 'a && b'",
        );
    }
    assert!(!env.file("ran").exists());
    assert_fails(&env.run(&["renew", "res"]), 2, "LEASE_ID");
    assert_fails(&env.run(&["current", "-f", "xml", "res"]), 2, "xml");
    assert_fails(
        &env.run(&["acquire", "-n", "-w", "1s", "res"]),
        2,
        "cannot be used with",
    );
    assert_fails(
        &env.run(&[
            "run",
            "--ttl",
            "30s",
            "--heartbeat",
            "25s",
            "res",
            "--",
            "true",
        ]),
        2,
        "must be less than the TTL",
    );
    for ttl in ["100ms", "0"] {
        assert_fails(
            &env.run(&["run", "--ttl", ttl, "res", "--", "true"]),
            2,
            "is too short for a supervised command (at least 500ms)",
        );
    }
    assert_fails(&env.run(&["acquire", "--ttl", "0", "res"]), 2, "TTL");
    assert_fails(
        &env.run(&["run", "--heartbeat", "1ms", "res", "--", "true"]),
        2,
        "heartbeat 1ms is too short (at least 50ms)",
    );
    // A mistyped verb is not taken for a resource with a command to run (`--` says it is one).
    let o = env.run(&["curent", "echo", "hi"]);
    assert_fails(&o, 2, "'curent' is not a verb (did you mean 'current'?)");
    assert_eq!(stdout(&o), "");
    assert_fails(
        &env.run(&["relase", "res", "0123"]),
        2,
        "did you mean 'release'?",
    );
    let o = env.run(&["curent", "--", "echo", "hi"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "hi\n"));
    let long = "p".repeat(300);
    for p in ["a\nb", &long] {
        assert_fails(&env.run(&["-p", p, "acquire", "res"]), 2, "--principal");
    }
    let o = env
        .cmd()
        .args(["acquire", "res"])
        .env("LOCKRUN_PRINCIPAL", "a\x1bb")
        .output()
        .unwrap();
    assert_fails(&o, 78, "LOCKRUN_PRINCIPAL");
    assert_fails(
        &env.run(&["run", "--ttl", "11y", "res", "--", "true"]),
        2,
        "the TTL must be at most 10 years",
    );
}

/// A pipe whose reader has gone: writes to it fail with EPIPE.
fn closed_pipe() -> std::fs::File {
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    std::fs::File::from(w)
}

#[test]
fn a_reader_that_went_away_is_no_crash() {
    let env = Env::new();
    for args in [&["--help"][..], &["--version"], &["run", "--help"]] {
        let o = env.cmd().args(args).stdout(closed_pipe()).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{args:?}");
    }
    env.run(&["acquire", "res"]);
    for args in [&["current", "res"][..], &["list"]] {
        let o = env.cmd().args(args).stdout(closed_pipe()).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{args:?}");
    }
}

/// A stderr nobody reads any more: lockrun's one line is lost, but its status is the documented
/// one, not an abort.
#[test]
fn a_stderr_reader_that_went_away_leaves_the_status_alone() {
    let env = Env::new();
    let id = String::from_utf8(env.run(&["acquire", "res"]).stdout).unwrap();
    let quiet = |args: &[&str]| env.cmd().args(args).stderr(closed_pipe()).status().unwrap();
    assert_eq!(quiet(&["-n", "res", "--", "true"]).code(), Some(75));
    assert_eq!(
        quiet(&["other", "--", "/nonexistent/cmd"]).code(),
        Some(127)
    );
    assert_eq!(quiet(&["frobnicate"]).code(), Some(2));
    assert_eq!(quiet(&["current", "free"]).code(), Some(1));
    assert_eq!(quiet(&["init", "--", "/bin/sh"]).code(), Some(2));
    assert_eq!(quiet(&["release", "res", id.trim()]).code(), Some(0));
}

/// A file every write to fails (ENOSPC).
fn dev_full() -> std::fs::File {
    std::fs::File::options()
        .write(true)
        .open("/dev/full")
        .unwrap()
}

#[test]
fn an_acquired_lease_whose_id_cannot_be_written_is_released() {
    let env = Env::new();
    let o = env
        .cmd()
        .args(["acquire", "res"])
        .stdout(dev_full())
        .output()
        .unwrap();
    assert_fails(&o, 70, "cannot write to stdout");
    assert!(
        stderr(&o).contains("the lease was released"),
        "{}",
        stderr(&o)
    );
    let o = env
        .cmd()
        .args(["acquire", "res"])
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert_fails(&o, 70, "the lease was released");
    assert_fails(&env.run(&["current", "res"]), 1, "not held");
    // Other verbs report a failed write too, instead of a panic.
    env.run(&["acquire", "res"]);
    let o = env
        .cmd()
        .args(["current", "res"])
        .stdout(dev_full())
        .output()
        .unwrap();
    assert_fails(&o, 70, "cannot write to stdout");
}

/// A closed stdout (`>&-`) is a failed write too: Rust's runtime reopens it on /dev/null before
/// `main`, so `acquire` used to print the id nowhere, exit 0, and leave a lease nobody could
/// release.
#[test]
fn a_closed_stdout_is_a_failed_write() {
    let env = Env::new();
    let bin = env!("CARGO_BIN_EXE_lockrun");
    let o = env.cmd_sh(&format!("{bin} acquire res >&-"));
    assert_fails(
        &o,
        70,
        "cannot write to stdout: it was closed when lockrun started",
    );
    assert!(
        stderr(&o).contains("the lease was released"),
        "{}",
        stderr(&o)
    );
    assert_fails(&env.run(&["current", "res"]), 1, "not held");
    assert_fails(
        &env.cmd_sh(&format!("{bin} --help >&-")),
        70,
        "cannot write",
    );
    // A command under `run` is not lockrun's output: it runs, and its status passes through.
    let o = env.cmd_sh(&format!("{bin} res -- sh -c 'exit 3' >&-"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

/// A run option before a mistyped verb, or an unknown option between the resource and the
/// `--`, is refused: nothing runs and no lease is taken. Both used to run something: `lockrun
/// -w 5s aquire touch F` ran `touch F` under a lease on "aquire", and `lockrun res --tll 5m --
/// touch F` ran `--tll`.
/// A verb's option written before the verb (`lockrun -w 1s acquire res`) is a usage error that
/// says where the option goes; clap's own hint sent the user to a help that lists the option.
#[test]
fn a_verb_option_before_its_verb_says_where_it_goes() {
    let env = Env::new();
    for (args, message) in [
        (
            &["-w", "1s", "acquire", "res"][..],
            "lockrun: unexpected argument '-w' found (-w is an option of acquire: put it after \
             the verb, as in: lockrun acquire -w ...)",
        ),
        (
            &["--ttl", "5m", "renew", "res", "abc"],
            "(--ttl is an option of renew: put it after the verb, as in: lockrun renew --ttl ...)",
        ),
        (
            &["acquire", "-x", "res"],
            "lockrun: unexpected argument '-x' found (see 'lockrun acquire --help')",
        ),
    ] {
        assert_fails(&env.run(args), 2, message);
    }
    assert_eq!(env.run(&["current", "res"]).status.code(), Some(1));
}

#[test]
fn options_around_a_mistyped_verb_or_option_run_nothing() {
    let env = Env::new();
    let ran = env.file("ran");
    let ran = ran.to_str().unwrap();
    for (args, message) in [
        (
            &["-w", "5s", "aquire", "touch", ran][..],
            "'aquire' is not a verb (did you mean 'acquire'?); to run a command under a lease",
        ),
        (
            &["-n", "relase", "res", "touch", ran],
            "'relase' is not a verb (did you mean 'release'?)",
        ),
        (
            &["-n", "-q", "res", "touch", ran],
            "'res' is not a verb; to run a command",
        ),
        (&["-qn", "res", "touch", ran, "--"], "'res' is not a verb"),
        (&["res", "-nq", "touch", "--", ran], "'res' is not a verb"),
        (
            &["res", "--tll", "5m", "--", "touch", ran],
            "unexpected argument '--tll' before the command (did you mean '--ttl'? see 'lockrun \
             run --help')",
        ),
        (
            &["run", "res", "--tll", "5m", "--", "touch", ran],
            "'--tll'",
        ),
        (
            &["res", "--dry-run", "--", "touch", ran],
            "unexpected argument '--dry-run'",
        ),
        (
            &["run", "-n", "res", "--wiat=5s", "--", "touch", ran],
            "did you mean '--wait'?",
        ),
    ] {
        assert_fails(&env.run(args), 2, message);
        assert!(!env.file("ran").exists(), "{args:?} ran the command");
        assert_eq!(
            env.run(&["current", "res"]).status.code(),
            Some(1),
            "{args:?}"
        );
        assert_eq!(
            env.run(&["current", "aquire"]).status.code(),
            Some(1),
            "{args:?}"
        );
    }
    // An attached value between the resource and the `--` is the option's, not a command.
    for args in [
        &["res", "-w5s", "--", "touch", ran][..],
        &["run", "res", "-E3", "-n", "--", "touch", ran],
        &["-p", "me", "res", "-w5s", "--", "touch", ran],
    ] {
        let o = env.run(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(env.file("ran").exists(), "{args:?}");
        std::fs::remove_file(ran).unwrap();
    }
    // The same word among the command's own arguments is left alone, and so is a command
    // after `--` whose name starts with '-'.
    let o = env.run(&["run", "res", "echo", "-w5s"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "-w5s\n"));
    assert_fails(
        &env.run(&["run", "res", "--", "-weird"]),
        127,
        "-weird: command not found",
    );
}

#[test]
fn no_arguments_is_one_usage_line_and_exit_2() {
    let env = Env::new();
    let o = env.run(&[]);
    assert_fails(
        &o,
        2,
        "nothing to do: give a resource and a command (lockrun RESOURCE -- COMMAND...) or a verb",
    );
}

#[test]
fn bad_resource_names_exit_2() {
    let env = Env::new();
    assert_fails(&env.run(&["acquire", ""]), 2, "resource name is empty");
    let long = "x".repeat(256);
    assert_fails(&env.run(&["acquire", &long]), 2, "256 bytes");
    assert_fails(
        &env.run(&["acquire", "bad\x1bname"]),
        2,
        "control character",
    );
    assert_fails(
        &env.run(&["bad\nname", "--", "true"]),
        2,
        "control character",
    );
    // 255 bytes is fine.
    let ok = "y".repeat(255);
    assert_eq!(env.run(&["acquire", &ok]).status.code(), Some(0));
}

#[test]
fn garbage_lease_ids_exit_2_and_change_nothing() {
    let env = Env::new();
    let id = stdout(&env.run(&["acquire", "res"])).trim().to_owned();
    for bad in [
        "",
        "not an id",
        "$(rm -rf /)",
        "id\nwith\nnewlines",
        &"a".repeat(200),
    ] {
        for verb in ["release", "renew", "is-held"] {
            let o = env.run(&[verb, "res", bad]);
            assert_fails(&o, 2, "lease id");
        }
    }
    // The id is quoted, so that what is wrong with it shows.
    assert_fails(
        &env.run(&["release", "res", &format!("{id} ")]),
        2,
        &format!("lease id '{id} ' is malformed: only letters, digits and . _ : - can be in one"),
    );
    assert_eq!(env.run(&["is-held", "res", &id]).status.code(), Some(0));
}

#[test]
fn unknown_backend_and_bad_urls_exit_78() {
    let env = Env::new();
    assert_fails(
        &env.run(&["-b", "nosuch://x", "acquire", "res"]),
        78,
        "unknown backend 'nosuch'",
    );
    assert_fails(
        &env.run(&["-b", "no-such-name", "acquire", "res"]),
        78,
        "no-such-name",
    );
    assert_fails(
        &env.run(&["-b", "redis://[::1", "acquire", "res"]),
        78,
        "bad backend URL",
    );
    let mut c = env.cmd();
    c.env("LOCKRUN_BACKEND", "nosuch://x");
    let o = c.args(["acquire", "res"]).output().unwrap();
    assert_fails(&o, 78, "nosuch");
    let o = env.run(&["-b", "redis://user:hunter2@[::1", "acquire", "res"]);
    assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
    // An operating-system error is named without Rust's "(os error N)".
    let o = env.run(&["-c", "/nonexistent/lockrun.toml", "current", "res"]);
    assert_fails(&o, 78, "No such file or directory");
    assert!(!stderr(&o).contains("os error"), "{}", stderr(&o));
}

/// A file URL that names no directory (`file://$UNSET`) or is not `file://` with an absolute
/// path would put the locks somewhere nobody else looks: 78, and nothing is written.
#[test]
fn file_urls_that_name_no_lock_directory_exit_78() {
    let env = Env::new();
    for (url, needle) in [
        ("file://", "names the root directory"),
        ("file:///", "names the root directory"),
        ("/", "names the root directory"),
        ("file:locks", "must name an absolute path"),
    ] {
        assert_fails(&env.run(&["-b", url, "acquire", "-n", "res"]), 78, needle);
    }
    assert!(!std::path::Path::new("/res.lease").exists());
}

/// A variable of lockrun's that is not UTF-8 would read as unset, and lockrun would quietly use
/// the local file backend, another lock directory, the default principal or no password: 78
/// instead, and nothing is acquired.
#[test]
fn variables_that_are_not_utf8_exit_78() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    for key in [
        "LOCKRUN_BACKEND",
        "LOCKRUN_CONFIG",
        "LOCKRUN_PRINCIPAL",
        "LOCKRUN_REDIS_PASSWORD",
        "XDG_STATE_HOME",
    ] {
        let mut c = env.cmd();
        c.env(key, std::ffi::OsStr::from_bytes(b"redis://h/\xff"));
        let o = c.args(["acquire", "-n", "res"]).output().unwrap();
        assert_fails(
            &o,
            78,
            &format!("the environment variable {key} is not valid UTF-8"),
        );
    }
    assert_eq!(env.run(&["current", "res"]).status.code(), Some(1));
}

/// A config path that is a directory, or longer than 1 MiB, is refused: /dev/zero used to grow
/// lockrun's memory without end. /dev/null is no config, a FIFO nobody writes reads as empty
/// (it used to block), and a pipe works.
#[test]
fn a_config_that_is_not_a_regular_file() {
    let env = Env::new();
    let fifo = env.fifo("fifo");
    let big = env.file("big.toml");
    std::fs::write(&big, "#".repeat(2 << 20)).unwrap();
    for (path, needle) in [
        ("/dev/zero".into(), "it is larger than 1 MiB"),
        (env.path().to_owned(), "it is a directory"),
        (big, "it is larger than 1 MiB"),
    ] {
        let o = env.run(&["-c", path.to_str().unwrap(), "current", "res"]);
        assert_fails(&o, 78, needle);
    }
    for path in ["/dev/null", fifo.to_str().unwrap()] {
        assert_fails(&env.run(&["-c", path, "current", "res"]), 1, "not held");
    }
    let bin = env!("CARGO_BIN_EXE_lockrun");
    let o = env.cmd_sh(&format!(
        "printf '[default]\\nprincipal = \"from-a-pipe\"\\n' | {bin} -c /dev/stdin acquire res"
    ));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = env.run(&["current", "-f", "json", "res"]);
    assert!(
        stdout(&o).contains("\"principal\":\"from-a-pipe\""),
        "{}",
        stdout(&o)
    );
}

/// `cmd`'s output, or a panic naming `what` if it has not ended within 20 s (it is killed).
#[cfg(all(
    feature = "redis",
    feature = "etcd",
    feature = "postgres",
    feature = "kubernetes"
))]
fn output_within(mut cmd: std::process::Command, what: &str) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ended = eventually(std::time::Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = child.kill();
        panic!("{what}: lockrun hung");
    }
    child.wait_with_output().unwrap()
}

/// A file that a backend's settings name (a password file, a CA bundle, an `sslrootcert`), or
/// that a library reads for it (`KUBECONFIG`, `SSL_CERT_FILE`), and that is a FIFO nobody writes
/// or an endless device: one line and 78. The FIFO used to hang lockrun, and /dev/zero to grow
/// its memory without end. No server is needed: each is read before connecting.
#[test]
#[cfg(all(
    feature = "redis",
    feature = "etcd",
    feature = "postgres",
    feature = "kubernetes"
))]
fn backend_files_that_are_not_regular_files_exit_78() {
    let env = Env::new();
    let fifo = env.fifo("fifo");
    let fifo = fifo.to_str().unwrap();
    let sections = [
        (
            format!("url = \"redis://127.0.0.1:1/0\"\npassword_file = \"{fifo}\""),
            "is empty",
        ),
        (
            "url = \"redis://127.0.0.1:1/0\"\npassword_file = \"/dev/zero\"".into(),
            "cannot read password_file /dev/zero: it is larger than 1 MiB",
        ),
        (
            "url = \"etcd://127.0.0.1:1\"\nusername = \"u\"\npassword_file = \"/dev/zero\"".into(),
            "larger than 1 MiB",
        ),
        (
            format!("url = \"etcd://127.0.0.1:1\"\nusername = \"u\"\npassword_file = \"{fifo}\""),
            "is empty",
        ),
        (
            format!("url = \"postgres://u@127.0.0.1:1/db\"\npassword_file = \"{fifo}\""),
            "is empty",
        ),
        (
            "url = \"rediss://127.0.0.1:1/0\"\nca_file = \"/dev/zero\"".into(),
            "cannot read ca_file /dev/zero: it is larger than 1 MiB",
        ),
        (
            "url = \"etcd+https://127.0.0.1:1\"\nca_file = \"/dev/zero\"".into(),
            "cannot read ca_file /dev/zero: it is larger than 1 MiB",
        ),
        (
            format!(
                "url = \"postgres://u:pw@127.0.0.1:1/db?sslmode=verify-ca&sslrootcert={fifo}\""
            ),
            "holds no PEM certificate",
        ),
        (
            // Durations that would overflow a clock.
            "url = \"etcd://127.0.0.1:1\"\nconnect_timeout = 9223372036854775807".into(),
            "out of range",
        ),
    ];
    let config = env.file("config.toml");
    for (section, needle) in sections {
        std::fs::write(&config, format!("[backend.r]\n{section}\n")).unwrap();
        let mut cmd = env.cmd();
        cmd.arg("-c")
            .arg(&config)
            .args(["-b", "r", "current", "res"]);
        assert_fails(&output_within(cmd, &section), 78, needle);
    }
    for (var, url, needle) in [
        (
            "KUBECONFIG",
            "kubernetes://default",
            "(from KUBECONFIG): it is a FIFO",
        ),
        (
            "SSL_CERT_FILE",
            "postgres://u:pw@127.0.0.1:1/db?sslmode=verify-full",
            "(from SSL_CERT_FILE): it is a FIFO",
        ),
    ] {
        let mut cmd = env.cmd();
        cmd.env(var, fifo).args(["-b", url, "current", "res"]);
        assert_fails(&output_within(cmd, var), 78, needle);
    }
}

/// The file backend keeps no line of waiters: `--fair` (or `fair = true`) is a configuration
/// error there, whether the resource is free or not, and nothing is acquired.
#[test]
fn fair_waiting_on_a_backend_without_a_line_exits_78() {
    let env = Env::new();
    let o = env.run(&["--fair", "res", "--", "true"]);
    assert_fails(
        &o,
        78,
        "cannot serve them in order (--fair, or fair = true in the config file); etcd can",
    );
    assert_fails(&env.run(&["acquire", "--fair", "res"]), 78, "--fair");
    let cfg = env.file("fair.toml");
    std::fs::write(&cfg, "[resource.\"res\"]\nfair = true\n").unwrap();
    let o = env.run(&["-c", cfg.to_str().unwrap(), "acquire", "res"]);
    assert_fails(&o, 78, "--fair");
    assert_eq!(env.run(&["current", "res"]).status.code(), Some(1));
    // A single attempt has nobody to queue behind.
    assert_eq!(
        env.run(&["-n", "--fair", "res", "--", "true"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn malformed_config_exits_78_naming_file_and_line() {
    let env = Env::new();
    let cfg = env.file("bad.toml");
    for (text, needle) in [
        ("[default]\nttl = \"5x\"\n", ":2"),
        ("[default]\nbogus = 1\n", "bogus"),
        ("[default\n", ":1"),
        ("[default]\nttl = [1, 2]\n", "ttl"),
        ("[default]\nbackend = \"missing\"\n", "missing"),
        ("[backend.x]\nport = 1\n", "url"),
        (
            "[default]\nfair = \"yes\"\n",
            "key 'fair' in [default]: must be true or false",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let o = env.run(&["-c", cfg.to_str().unwrap(), "acquire", "res"]);
        assert_fails(&o, 78, needle);
        assert!(stderr(&o).contains("bad.toml"), "{}", stderr(&o));
    }
    // The keys of a backend's section are checked by the backend, with their lines too.
    let mut sections = vec![(
        "[backend.f]\nurl = \"file:///nonexistent/l\"\nprefx = 1\n",
        "f",
        "bad.toml:3: [backend.f]: unknown key 'prefx'",
    )];
    if cfg!(feature = "redis") {
        sections.push((
            "[backend.r]\nurl = \"redis://127.0.0.1:1/0\"\n\nprefix = 3\n",
            "r",
            "bad.toml:4: [backend.r]: key 'prefix' must be a string",
        ));
    }
    for (text, name, needle) in sections {
        std::fs::write(&cfg, text).unwrap();
        let o = env.run(&["-c", cfg.to_str().unwrap(), "-b", name, "acquire", "res"]);
        assert_fails(&o, 78, needle);
    }
    // Also in a section that no resource uses (yet): found when the file is read.
    let mut unused = vec![(
        "[backend.f]\nurl = \"file:///nonexistent/l\"\nprefx = 1\n",
        "bad.toml:3: [backend.f]: unknown key 'prefx'",
    )];
    if cfg!(feature = "etcd") {
        unused.push((
            "[backend.e]\nurl = \"etcd://127.0.0.1:1\"\nconnect_timeout = \"5 fortnights\"\n",
            "bad.toml:3: [backend.e]: key 'connect_timeout'",
        ));
    }
    for (text, needle) in unused {
        std::fs::write(&cfg, text).unwrap();
        let b = env.backend();
        let o = env.run(&["-c", cfg.to_str().unwrap(), "-b", &b, "acquire", "res"]);
        assert_fails(&o, 78, needle);
    }
    // Set but empty (a missing CI secret): refused, rather than read as unset, unless the flag
    // overrides it.
    for (key, flag) in [("LOCKRUN_BACKEND", "-b URL"), ("LOCKRUN_CONFIG", "-c FILE")] {
        let o = env
            .cmd()
            .env(key, "")
            .args(["-n", "res", "--", "true"])
            .output()
            .unwrap();
        assert_fails(
            &o,
            78,
            &format!("{key} is set but empty; unset it, or give {flag}"),
        );
    }
    let b = env.backend();
    let o = env
        .cmd()
        .env("LOCKRUN_BACKEND", "")
        .args(["-b", &b, "-n", "res", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = env.run(&["-c", "/nonexistent/lockrun.toml", "acquire", "res"]);
    assert_fails(&o, 78, "/nonexistent/lockrun.toml");
    let mut c = env.cmd();
    c.env("LOCKRUN_CONFIG", "/nonexistent/env.toml");
    let o = c.args(["acquire", "res"]).output().unwrap();
    assert_fails(&o, 78, "/nonexistent/env.toml");
    assert!(
        stderr(&o).contains("(named by LOCKRUN_CONFIG)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn unusable_lock_directory_exits_78() {
    let env = Env::new();
    let file = env.file("plain-file");
    std::fs::write(&file, "x").unwrap();
    let url = format!("file://{}/locks", file.display());
    assert_fails(&env.run(&["-b", &url, "acquire", "res"]), 78, "");
    assert_fails(
        &env.run(&["-b", "file:///proc/lockrun-test", "acquire", "res"]),
        78,
        "",
    );
    // A world-writable directory without the sticky bit is refused.
    let open = env.file("open");
    std::fs::create_dir(&open).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&open).unwrap().permissions(),
        0o777,
    );
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let url = format!("file://{}", open.display());
    assert_fails(&env.run(&["-b", &url, "acquire", "res"]), 78, "");
    // A symlinked lock directory is refused.
    let link = env.file("link");
    std::os::unix::fs::symlink(env.path(), &link).unwrap();
    let url = format!("file://{}", link.display());
    assert_fails(&env.run(&["-b", &url, "acquire", "res"]), 78, "");
    // Root (as CI runs) refuses another user's directory: its records would lock that user
    // out, and that user could change them. (As another user, access() already refuses it.)
    if nix::unistd::geteuid().is_root() {
        let theirs = env.file("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let url = format!("file://{}", theirs.display());
        for args in [&["acquire", "res"][..], &["res", "--", "true"]] {
            let o = env.run(&[&["-b", &url][..], args].concat());
            assert_fails(&o, 78, "belongs to uid 65534, not root");
        }
        assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);
    }
}

/// A shared sticky (1777) directory in /tmp, its `file://` URL, and a way to run lockrun there
/// as another user (uid = gid), with that directory as HOME.
fn shared_sticky_dir() -> (
    tempfile::TempDir,
    String,
    impl Fn(u32, &[&str]) -> std::process::Output,
) {
    use std::os::unix::process::CommandExt;
    let shared = tempfile::Builder::new()
        .prefix("lockrun-shared-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let url = format!("file://{}", shared.path().display());
    let (home, u) = (shared.path().to_owned(), url.clone());
    let as_user = move |uid: u32, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lockrun"))
            .uid(uid)
            .gid(uid)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .args(["-b", &u])
            .args(args)
            .output()
            .unwrap()
    };
    (shared, url, as_user)
}

/// In a shared sticky directory (`/run/lock`, `/tmp/locks`) a resource belongs to the user who
/// first locked it. Other users cannot open its files (mode 0600); root can, and its writes
/// used to replace that user's record with a root-owned one, locking that user out of their own
/// lease. Root now refuses it (78) and changes nothing. Needs root, as CI runs.
#[test]
fn root_leaves_another_users_resource_in_a_shared_directory_alone() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let (shared, url, as_user) = shared_sticky_dir();
    let as_nobody = |args: &[&str]| as_user(65534, args);
    let o = as_nobody(&["acquire", "res"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let id = stdout(&o).trim().to_owned();
    let record = shared.path().join("res.lease");
    let before = std::fs::read(&record).unwrap();
    let env = Env::new();
    let root = |args: &[&str]| env.run(&[&["-b", &url][..], args].concat());
    for args in [&["release", "res", &id][..], &["renew", "res", &id]] {
        assert_fails(&root(args), 78, "belongs to uid 65534, not root");
    }
    // Reading is fine: root may look at the leases of a shared directory.
    assert_eq!(root(&["is-held", "res", &id]).status.code(), Some(0));
    assert!(stdout(&root(&["list"])).contains("\nres\t"));
    assert_fails(&root(&["-n", "res", "--", "true"]), 75, "res is busy");
    // Another user's list passes over root's resources quietly: they are not damage.
    assert_eq!(root(&["acquire", "mine"]).status.code(), Some(0));
    let o = as_nobody(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(stdout(&o).contains("\nres\t"), "{o:?}");
    assert_eq!(stderr(&o), "");
    let meta = std::fs::metadata(&record).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
    assert_eq!(std::fs::read(&record).unwrap(), before);
    assert_eq!(as_nobody(&["release", "res", &id]).status.code(), Some(0));
    // Free now, but still that user's: root does not take it.
    let before = std::fs::read(&record).unwrap();
    for args in [&["acquire", "-n", "res"][..], &["-n", "res", "--", "true"]] {
        assert_fails(&root(args), 78, "belongs to uid 65534, not root");
    }
    assert_eq!(std::fs::read(&record).unwrap(), before);
    // Root looking at a name nobody has used yet leaves no file behind that would make it
    // root's (a root-owned lock file used to lock every other user out of that name).
    for args in [
        &["current", "fresh"][..],
        &["is-held", "fresh", &id],
        &["release", "fresh", &id],
        &["renew", "fresh", &id],
    ] {
        assert_eq!(root(args).status.code(), Some(1), "{args:?}");
    }
    let o = as_nobody(&["acquire", "fresh"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    // Each user's doctor has a scratch resource of its own, so neither is in the other's way.
    for o in [
        as_nobody(&["doctor"]),
        root(&["doctor"]),
        as_nobody(&["doctor"]),
    ] {
        assert_eq!(o.status.code(), Some(0), "{o:?}");
    }
}

/// In a shared sticky directory another user can make a resource's lock file before its first
/// use, and then replace it at will: processes that lock the file they opened lock different
/// files, and each ran its step as if alone (review: eight `acquire -n` were granted one
/// resource, with one fencing token), or that user holds its lock for ever. A lock file that is
/// not ours is refused (78). And root, looking at another user's resource whose lock file was
/// deleted, made a root-owned one that locked that user out of their own lease: a look creates
/// no lock file now. Needs root, as CI runs.
#[test]
fn lock_files_of_another_user_are_refused_and_root_makes_none() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let (shared, url, as_user) = shared_sticky_dir();
    let env = Env::new();
    let root = |args: &[&str]| env.run(&[&["-b", &url][..], args].concat());
    // A lock file planted by uid 65533, writable by all.
    let planted = shared.path().join("planted.lock");
    std::fs::write(&planted, "").unwrap();
    std::os::unix::fs::chown(&planted, Some(65533), Some(65533)).unwrap();
    std::fs::set_permissions(
        &planted,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    for args in [
        &["acquire", "-n", "planted"][..],
        &["-n", "planted", "--", "true"],
    ] {
        assert_fails(
            &as_user(65534, args),
            78,
            "belongs to uid 65533, not uid 65534",
        );
        assert_fails(&root(args), 78, "belongs to uid 65533, not root");
    }
    assert!(!shared.path().join("planted.lease").exists());
    // A look needs no lock file: nothing is held there (the lock file of a first acquire, before
    // its record is written, looks the same). A renewal finds nothing to renew.
    for args in [
        &["current", "planted"][..],
        &["renew", "planted", "0123456789abcdef0123456789abcdef"],
    ] {
        assert_fails(&as_user(65534, args), 1, "");
        assert_fails(&root(args), 1, "");
    }
    // Another user's lease whose lock file was deleted (lockrun's own advice for a damaged one).
    let o = as_user(65534, &["acquire", "theirs"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let id = stdout(&o).trim().to_owned();
    let lock = shared.path().join("theirs.lock");
    std::fs::remove_file(&lock).unwrap();
    assert_eq!(root(&["current", "theirs"]).status.code(), Some(0));
    assert_eq!(root(&["is-held", "theirs", &id]).status.code(), Some(0));
    assert!(stdout(&root(&["list"])).contains("\ntheirs\t"));
    assert_fails_last(&root(&["acquire", "-w", "300ms", "theirs"]), 75, "busy");
    assert_fails(
        &root(&["release", "theirs", &id]),
        78,
        "belongs to uid 65534, not root",
    );
    assert!(
        !lock.exists(),
        "root made the lock file of another user's resource"
    );
    // Nor does another user's acquire, refused (78) as the record is not theirs.
    for args in [
        &["acquire", "-n", "theirs"][..],
        &["-n", "theirs", "--", "true"],
    ] {
        let o = as_user(65533, args);
        assert_eq!(o.status.code(), Some(78), "{o:?}");
    }
    assert!(
        !lock.exists(),
        "another user made the lock file of the resource"
    );
    let o = as_user(65534, &["release", "theirs", &id]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
}

/// A lockrun in a time namespace whose CLOCK_BOOTTIME runs an hour ahead (`unshare -T`, a
/// container restored by CRIU; an unprivileged user may make one) shares the boot id with the
/// host: it must still see the host's holder's lease as live, not an hour past its expiry. It
/// used to be granted the resource at once. Needs root (and a kernel with time namespaces).
#[test]
fn a_time_namespace_does_not_move_expiry() {
    if !nix::unistd::geteuid().is_root()
        || !std::path::Path::new("/proc/self/timens_offsets").exists()
    {
        return;
    }
    let env = Env::new();
    let o = env.run(&["acquire", "--ttl", "30s", "res"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for offset in ["3600", "-10"] {
        let o = std::process::Command::new("unshare")
            .args(["-T", "--boottime", offset, env!("CARGO_BIN_EXE_lockrun")])
            .args(["-b", &env.backend(), "-n", "res", "--", "true"])
            .output()
            .unwrap();
        assert_fails(&o, 75, "res is busy");
    }
}

#[test]
fn corrupt_record_exits_65_and_is_left_alone() {
    let env = Env::new();
    env.run(&["acquire", "res"]);
    let dir = env.path().join("locks");
    let record = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "lease"))
        .expect("a .lease record");
    std::fs::write(&record, b"{\"v\":1,\"garbage").unwrap();
    for args in [
        &["acquire", "-n", "res"][..],
        &["current", "res"],
        &["res", "--", "true"],
    ] {
        let o = env.run(args);
        assert_fails(&o, 65, "corrupt");
    }
    // `list` goes on with the others, but says that a record could not be read.
    let o = env.run(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("lockrun: warning: ") && stderr(&o).contains("res.lease"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&record).unwrap(), b"{\"v\":1,\"garbage");
    // An empty record reads as none (a power loss mid-write) only beside its token reservation;
    // without one `current` reports it, and `list` warns about it too (it used to pass over it).
    std::fs::write(&record, b"").unwrap();
    std::fs::remove_file(record.with_extension("token")).unwrap();
    assert_fails(&env.run(&["current", "res"]), 65, "the file is empty");
    let o = env.run(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("res.lease"), "{}", stderr(&o));
}

/// A directory where a resource's lock file belongs is damage, like a bad record (65); a lock
/// directory that cannot hold files is configuration (78). Both were internal errors (70).
#[test]
fn a_lock_file_that_cannot_be_opened_is_corrupt_or_configuration() {
    let env = Env::new();
    assert_eq!(env.run(&["acquire", "other"]).status.code(), Some(0));
    std::fs::create_dir(env.path().join("locks/res.lock")).unwrap();
    for args in [&["acquire", "-n", "res"][..], &["-n", "res", "--", "true"]] {
        assert_fails(&env.run(args), 65, "res.lock is not a regular file");
    }
    assert_fails(
        &env.run(&["current", "res"]),
        65,
        "res.lock is not a regular file",
    );
    assert_fails(
        &env.run(&["-b", "file:///proc/self/fdinfo", "acquire", "-n", "res"]),
        78,
        "cannot be opened",
    );
}

/// Mistakes an operator makes coming from a shell get a hint that says what to write.
#[test]
fn common_mistakes_get_a_hint() {
    let env = Env::new();
    for cmd in [&["cd", "/"][..], &["echo hi"]] {
        let o = env.run(&[&["res", "--"][..], cmd].concat());
        assert_fails(
            &o,
            127,
            "(a shell builtin or a command line: run it with sh -c '...')",
        );
    }
    assert_fails(
        &env.run(&["res", "--", "no-such-cmd"]),
        127,
        "command not found",
    );
    assert!(!stderr(&env.run(&["res", "--", "no-such-cmd"])).contains("builtin"));
    for b in ["./locks", "~/locks", "locks/x"] {
        let o = env.run(&["-b", b, "res", "--", "true"]);
        assert_fails(
            &o,
            78,
            "(a lock directory is given as an absolute path or file:///some/dir, with no ~)",
        );
    }
    let o = env
        .cmd()
        .env("LOCKRUN_CONFIG", "~/x.toml")
        .args(["res", "--", "true"])
        .output()
        .unwrap();
    assert_fails(&o, 78, "(~ is not expanded here: give the full path)");
    // A home without a usable state directory (a system user's home that does not exist).
    let o = env
        .cmd()
        .env("XDG_STATE_HOME", "/proc/no-such-dir")
        .env_remove("LOCKRUN_BACKEND")
        .args(["res", "--", "true"])
        .output()
        .unwrap();
    assert_fails(
        &o,
        78,
        "(give a lock directory with -b file:///some/dir, or set XDG_STATE_HOME)",
    );
}

/// `--events` on a descriptor open for reading only is a usage error before anything is
/// acquired; one whose writes fail (a full disk) gets one warning, and the run goes on (both
/// used to drop every event without a word).
#[test]
fn events_that_cannot_be_written_are_said_so() {
    let env = Env::new();
    let bin = env!("CARGO_BIN_EXE_lockrun");
    let o = env.cmd_sh(&format!("{bin} run --events 3 res -- true 3</dev/null"));
    assert_fails(
        &o,
        2,
        "--events 3: file descriptor 3 is open for reading only",
    );
    assert_fails(&env.run(&["current", "res"]), 1, "not held");
    let o = env.cmd_sh(&format!("{bin} run --events 3 res -- true 3>/dev/full"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "lockrun: warning: cannot write events to --events 3: No space left on device (os error 28)\n"
    );
}

/// `acquire` that cannot hand the lease id over (stdout is full) releases the lease; when the
/// release fails too (the lock directory's file system is full), the one line names the lease,
/// so that it can still be freed. Needs a mount namespace of its own (root, as CI runs).
#[test]
fn an_acquire_that_can_neither_print_nor_release_names_the_lease() {
    let can_mount = std::process::Command::new("unshare")
        .args(["-m", "true"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !can_mount {
        eprintln!("skipped: no mount namespace here (not root?)");
        return;
    }
    let env = Env::new();
    let mnt = env.file("small");
    std::fs::create_dir(&mnt).unwrap();
    let bin = env!("CARGO_BIN_EXE_lockrun");
    let m = mnt.display();
    // Five inodes: the directory, and the record, lock file and reservation of the grant; the
    // release finds none left for its new record.
    let o = env.cmd_sh(&format!(
        "unshare -m sh -c 'mount -t tmpfs -o size=64k,nr_inodes=5 none {m} && \
         {bin} -b file://{m}/l acquire q1 >/dev/full; echo rc=$? >&2; \
         {bin} -b file://{m}/l current --id-only q1'"
    ));
    let err = stderr(&o);
    let id = stdout(&o).trim().to_owned();
    assert!(!id.is_empty(), "{err}");
    assert!(
        err.starts_with(&format!(
            "lockrun: cannot write to stdout: No space left on device; the lease could not be \
             released and runs out at its TTL (to free it, with this command's backend options: \
             lockrun release q1 {id})\nrc=70\n"
        )),
        "{err}"
    );
    // A renewal or release that fails there says that nothing changed.
    let o = env.cmd_sh(&format!(
        "unshare -m sh -c 'mount -t tmpfs -o size=64k,nr_inodes=5 none {m} && \
         id=$({bin} -b file://{m}/l acquire q2) && \
         {bin} -b file://{m}/l renew q2 $id; echo rc=$? >&2; \
         {bin} -b file://{m}/l release q2 $id; echo rc=$? >&2; \
         {bin} -b file://{m}/l is-held q2 $id; echo rc=$? >&2'"
    ));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    assert!(
        lines[0].ends_with("No space left on device; it was not renewed"),
        "{err}"
    );
    assert_eq!(lines[1], "rc=69");
    assert!(
        lines[2].ends_with("No space left on device; it was not released"),
        "{err}"
    );
    assert_eq!(&lines[3..], ["rc=69", "rc=0"], "{err}");
}

/// `renew --json` that cannot print the renewed lease says that the renewal was made.
#[test]
fn a_renewal_that_cannot_be_printed_says_it_was_made() {
    let env = Env::new();
    let id = stdout(&env.run(&["acquire", "res"])).trim().to_owned();
    let bin = env!("CARGO_BIN_EXE_lockrun");
    let o = env.cmd_sh(&format!("{bin} renew --json res {id} >/dev/full"));
    assert_fails(
        &o,
        70,
        "cannot write to stdout: No space left on device; the lease was renewed",
    );
}

/// Too few descriptors to run: one `lockrun:` line and a documented code at every limit, never
/// a panic's dump (tokio's signal driver panicked at 6 and 7 descriptors, and lockrun aborted
/// with a backtrace, exit 134).
#[test]
fn too_few_descriptors_is_one_line_not_a_panic() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    // Below 5 the loader of a dynamically linked build cannot open its libraries.
    for limit in 5..=12u64 {
        let mut cmd = env.cmd();
        cmd.args(["res", "--", "true"]);
        // SAFETY: setrlimit is async-signal-safe and changes only the child.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            });
        }
        let o = cmd.output().unwrap();
        let code = o.status.code();
        if code == Some(0) {
            continue;
        }
        let err = stderr(&o);
        assert!(
            matches!(code, Some(69 | 70 | 78)),
            "limit {limit}: exit {code:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "limit {limit}: {err}");
        assert!(
            err.starts_with("lockrun: ") && !err.contains("panicked"),
            "limit {limit}: {err}"
        );
    }
    assert_eq!(env.run(&["current", "res"]).status.code(), Some(1));
}
