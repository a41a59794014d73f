//! acquire / renew / current / is-held / release across separate processes.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn round_trip_across_processes() {
    let env = Env::new();
    let o = env.run(&["-p", "alice@db1", "acquire", "--ttl", "2h", "db-migration"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o);
    assert!(id.ends_with('\n'));
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 32, "only the id on stdout: {id:?}");
    assert!(stderr(&o).is_empty());

    let o = env.run(&["current", "db-migration"]);
    assert_eq!(o.status.code(), Some(0));
    let rows = stdout(&o);
    for needle in [
        "resource:      db-migration",
        "principal:     alice@db1",
        &format!("lease_id:      {id}"),
        "fencing_token: 1",
        "acquired_at:",
        "expires_at:",
    ] {
        assert!(rows.contains(needle), "{needle:?} in {rows}");
    }
    assert_eq!(
        stdout(&env.run(&["current", "--id-only", "db-migration"])).trim(),
        id
    );
    assert_eq!(
        stdout(&env.run(&["current", "-f", "id", "db-migration"])).trim(),
        id
    );
    // --id-only and -f: the last one given counts (as in stormlock).
    let o = env.run(&["current", "-f", "json", "--id-only", "db-migration"]);
    assert_eq!(stdout(&o).trim(), id);
    let o = env.run(&["current", "--id-only", "-f", "json", "db-migration"]);
    assert!(stdout(&o).starts_with('{'), "{}", stdout(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&env.run(&[
        "current",
        "-f",
        "json",
        "db-migration",
    ])))
    .unwrap();
    assert_eq!(json["lease_id"], id.as_str());
    assert_eq!(json["principal"], "alice@db1");
    assert_eq!(json["fencing_token"], 1);
    assert!(json["expires_at"].as_str().unwrap().ends_with('Z'));
    let line = stdout(&env.run(&["current", "-f", "oneline", "db-migration"]));
    assert_eq!(line.trim_end().split('\t').count(), 6);

    assert_eq!(
        env.run(&["is-held", "db-migration", &id]).status.code(),
        Some(0)
    );
    let before = json["expires_at"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(20));
    let o = env.run(&["renew", "db-migration", &id, "--ttl", "3h"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    let json: serde_json::Value = serde_json::from_str(&stdout(&env.run(&[
        "current",
        "-f",
        "json",
        "db-migration",
    ])))
    .unwrap();
    assert_eq!(json["lease_id"], id.as_str(), "renew keeps the id");
    assert!(json["expires_at"].as_str().unwrap() > before.as_str());
    assert_eq!(json["ttl_seconds"], 3.0 * 3600.0);
    // Without --ttl the lease keeps its own TTL, not the configured 1h.
    let o = env.run(&["renew", "--json", "db-migration", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json["ttl_seconds"], 3.0 * 3600.0, "{json}");

    assert_eq!(
        env.run(&["release", "db-migration", &id]).status.code(),
        Some(0)
    );
    let o = env.run(&["is-held", "db-migration", &id]);
    assert_fails(&o, 1, "does not hold");
    let o = env.run(&["current", "db-migration"]);
    assert_fails(&o, 1, "not held");
    let o = env.run(&["release", "db-migration", &id]);
    assert_fails(&o, 1, "does not hold");
    let o = env.run(&["renew", "db-migration", &id]);
    assert_fails(&o, 1, "does not hold");
}

#[test]
fn acquire_json() {
    let env = Env::new();
    let o = env.run(&["acquire", "--json", "res"]);
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["resource"], "res");
    assert_eq!(json["fencing_token"], 1);
    assert_eq!(json["lease_id"].as_str().unwrap().len(), 32);
}

#[test]
fn wrong_id_changes_nothing() {
    let env = Env::new();
    let id = stdout(&env.run(&["acquire", "res"])).trim().to_owned();
    let wrong = "0123456789abcdef0123456789abcdef";
    assert_fails(&env.run(&["release", "res", wrong]), 1, "does not hold");
    assert_fails(&env.run(&["renew", "res", wrong]), 1, "does not hold");
    assert_fails(&env.run(&["is-held", "res", wrong]), 1, "does not hold");
    assert_eq!(env.run(&["is-held", "res", &id]).status.code(), Some(0));
    assert_eq!(
        stdout(&env.run(&["current", "--id-only", "res"])).trim(),
        id
    );
    // A lease id for another resource releases nothing.
    env.run(&["acquire", "other"]);
    assert_fails(&env.run(&["release", "other", &id]), 1, "does not hold");
    assert_eq!(env.run(&["is-held", "res", &id]).status.code(), Some(0));
}

#[test]
fn expiry_lets_a_new_holder_in() {
    let env = Env::new();
    let first = stdout(&env.run(&["acquire", "--ttl", "1s", "res"]))
        .trim()
        .to_owned();
    assert_fails(&env.run(&["acquire", "-n", "res"]), 75, "busy");
    std::thread::sleep(Duration::from_millis(1100));
    let o = env.run(&["acquire", "-n", "--json", "res"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["fencing_token"], 2, "token increases across expiry");
    // The expired lease can no longer be renewed or released.
    assert_fails(&env.run(&["renew", "res", &first]), 1, "does not hold");
    assert_fails(&env.run(&["release", "res", &first]), 1, "does not hold");
    // A long id is shortened with an ellipsis; a short one is shown whole, without one.
    assert_fails(&env.run(&["release", "res", &first]), 1, "…");
    let o = env.run(&["release", "res", "g"]);
    assert_fails(&o, 1, "lease g does not hold res");
}

#[test]
fn acquire_waits_by_default() {
    let env = Env::new();
    env.run(&["acquire", "--ttl", "1s", "res"]);
    let t = std::time::Instant::now();
    let o = env.run(&["acquire", "res"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(t.elapsed() >= Duration::from_millis(500));
    assert_eq!(
        stderr(&o).matches("waiting for res").count(),
        1,
        "{}",
        stderr(&o)
    );
}

/// A renewal wakes the waiters and shows them the same holder with a new expiry: the "waiting
/// for" line and the `waiting` event still name each holder once.
#[test]
fn a_waiter_reports_each_holder_once() {
    let env = Env::new();
    let id = stdout(&env.run(&["acquire", "res"]));
    let waiter = env
        .cmd()
        .args(["run", "-w", "1500ms", "--events", "-", "res", "--", "true"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let o = env.run(&["renew", "--ttl", "2h", "res", id.trim()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = waiter.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(75), "{err}");
    assert_eq!(err.matches("waiting for res").count(), 1, "{err}");
    assert_eq!(err.matches("\"event\":\"waiting\"").count(), 1, "{err}");
}

#[test]
fn resource_named_like_a_verb() {
    let env = Env::new();
    let o = env.run(&["run", "acquire", "--", "sh", "-c", "echo $LOCKRUN_RESOURCE"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "acquire");
    // A run option before a verb is a usage error, not a run on a resource named like the verb
    // with the verb's arguments for a command.
    let id = stdout(&env.run(&["acquire", "res"]));
    let o = env.run(&["--ttl", "5m", "release", "res", id.trim()]);
    assert_fails(&o, 2, "--ttl");
    let o = env.run(&["-n", "current", "res"]);
    assert_fails(&o, 2, "-n");
    assert_eq!(
        env.run(&["is-held", "res", id.trim()]).status.code(),
        Some(0)
    );
    assert_eq!(env.run(&["current", "release"]).status.code(), Some(1));
}

#[test]
fn help_and_version() {
    let env = Env::new();
    let o = env.run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("Exit codes"));
    let o = env.run(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("lockrun "));
    let version = stdout(&o);
    for verb in ["run", "acquire", "renew", "release", "current", "is-held"] {
        let o = env.run(&[verb, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{verb}");
        // A global option, after the verb too.
        for v in ["--version", "-V"] {
            let o = env.run(&[verb, v]);
            assert_eq!(
                (o.status.code(), stdout(&o)),
                (Some(0), version.clone()),
                "{verb} {v}"
            );
        }
    }
}

#[test]
fn config_file_supplies_defaults() {
    let env = Env::new();
    let cfg = env.file("lockrun.toml");
    std::fs::write(
        &cfg,
        format!(
            "[default]\nprincipal = \"from-config\"\nttl = \"2m\"\nbackend = \"local\"\n\n[resource.\"special\"]\nprincipal = \"special-config\"\n\n[backend.local]\nurl = \"file://{}/other\"\n",
            env.path().display()
        ),
    )
    .unwrap();
    let mut c = env.cmd();
    c.env_remove("LOCKRUN_BACKEND");
    let o = c
        .args(["-c", cfg.to_str().unwrap(), "acquire", "--json", "res"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["principal"], "from-config");
    assert_eq!(json["ttl_seconds"], 120.0);
    assert!(
        env.path().join("other").is_dir(),
        "the named backend was used"
    );
    let mut c = env.cmd();
    c.env_remove("LOCKRUN_BACKEND").env("LOCKRUN_CONFIG", &cfg);
    let o = c.args(["acquire", "--json", "special"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["principal"], "special-config");
    // Flag beats environment beats config.
    let mut c = env.cmd();
    c.env_remove("LOCKRUN_BACKEND")
        .env("LOCKRUN_PRINCIPAL", "from-env");
    let o = c
        .args(["-c", cfg.to_str().unwrap(), "acquire", "--json", "r2"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["principal"], "from-env");
    let mut c = env.cmd();
    c.env_remove("LOCKRUN_BACKEND")
        .env("LOCKRUN_PRINCIPAL", "from-env");
    let o = c
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "-p",
            "from-flag",
            "acquire",
            "--json",
            "r3",
        ])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["principal"], "from-flag");
}

#[test]
fn doctor_checks_the_backend_end_to_end() {
    let env = Env::new();
    let o = env.run(&["doctor"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "ok    connect",
        "ok    round trips",
        "acquire",
        "release",
        "ok    run timing: TTL 30s",
        "no problems found",
    ] {
        assert!(out.contains(needle), "{needle:?} in {out}");
    }
    // The scratch resource is the principal's own, and its lease was released.
    let o = env.run(&["-p", "alice", "doctor"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(env
        .path()
        .join("locks/lockrun%2Edoctor%2Ealice.lease")
        .exists());
    assert_eq!(
        env.run(&["current", "lockrun.doctor.alice"]).status.code(),
        Some(1)
    );
    // A failed check ends the report on stdout too, so a captured report does not read as
    // healthy: a lock directory that is a file (78), an unreachable server (69).
    let file = env.file("plain");
    std::fs::write(&file, "").unwrap();
    let url = format!("file://{}", file.display());
    let o = env.run(&["-b", &url, "doctor"]);
    assert_fails(&o, 78, "is not a directory");
    let out = stdout(&o);
    assert!(
        out.ends_with(&format!(
            "fail  lock directory {} is not a directory\n",
            file.display()
        )),
        "{out}"
    );
    #[cfg(feature = "redis")]
    {
        let o = env.run(&["-b", "redis://127.0.0.1:1/0", "doctor"]);
        assert_fails(&o, 69, "cannot connect");
        assert!(
            stdout(&o).contains("\nfail  cannot connect to redis"),
            "{}",
            stdout(&o)
        );
    }
    let o = env.run(&["doctor", "--ttl", "3s", "--heartbeat", "2900ms"]);
    assert_fails(&o, 1, "doctor found 1 thing(s) to fix");
    assert!(!stdout(&o).contains("fail"), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("warn  run settings are rejected"), "{out}");
    let o = env.run(&[
        "doctor",
        "--ttl",
        "10s",
        "--heartbeat",
        "6s",
        "--kill-after",
        "1s",
    ]);
    assert!(
        stdout(&o).contains("more than half the TTL"),
        "{}",
        stdout(&o)
    );
    let o = env.run(&["-b", "nosuch://x", "doctor"]);
    assert_fails(&o, 78, "unknown backend");
    // `fair = true` on a backend with no line of waiters: every run would exit 78.
    let cfg = env.path().join("fair.toml");
    std::fs::write(&cfg, "[default]\nfair = true\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    assert_fails(
        &env.run(&["-c", cfg, "res", "--", "true"]),
        78,
        "no line of waiters",
    );
    let o = env.run(&["-c", cfg, "doctor"]);
    assert_fails(&o, 1, "doctor found 1 thing(s) to fix");
    assert!(
        stdout(&o).contains("warn  fair = true, but this backend cannot serve waiters in order"),
        "{}",
        stdout(&o)
    );
}

/// A FIFO planted under a record's name is skipped with a warning; opening it used to hang
/// `list` for good.
#[test]
fn list_skips_a_record_that_is_not_a_regular_file() {
    let env = Env::new();
    assert_eq!(env.run(&["acquire", "a"]).status.code(), Some(0));
    env.fifo("locks/b.lease");
    let mut child = env
        .cmd()
        .arg("list")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || child
            .try_wait()
            .unwrap()
            .is_some()),
        "list hung on a FIFO"
    );
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("\na\t"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("b.lease is not a regular file"),
        "{}",
        stderr(&o)
    );
    // A record copied under another resource's name is that other lease, listed once.
    std::fs::copy(
        env.path().join("locks/a.lease"),
        env.path().join("locks/c.lease"),
    )
    .unwrap();
    let o = env.run(&["list"]);
    assert_eq!(stdout(&o).matches("\na\t").count(), 1, "{}", stdout(&o));
    assert!(
        stderr(&o).contains("c.lease holds the record of another resource (a)"),
        "{}",
        stderr(&o)
    );
    // A record that is a symlink, or that cannot be opened, is named too (it used to be left
    // out without a word, where `current` reports it).
    std::fs::remove_file(env.path().join("locks/c.lease")).unwrap();
    std::os::unix::fs::symlink(
        env.path().join("locks/a.lease"),
        env.path().join("locks/d.lease"),
    )
    .unwrap();
    let o = env.run(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("d.lease is a symbolic link; not listed"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(env.path().join("locks/d.lease")).unwrap();
    std::fs::create_dir(env.path().join("locks/e.lease")).unwrap();
    let o = env.run(&["list"]);
    assert!(stderr(&o).contains("e.lease"), "{}", stderr(&o));
}

#[test]
fn list_shows_every_live_lease() {
    let env = Env::new();
    let o = env.run(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "nothing held: no output");
    env.run(&["-p", "alice", "acquire", "b/one"]);
    env.run(&["-p", "bob", "acquire", "a two"]);
    let released = stdout(&env.run(&["acquire", "gone"])).trim().to_owned();
    env.run(&["release", "gone", &released]);
    let o = env.run(&["list"]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("RESOURCE\tPRINCIPAL\tTOKEN\tEXPIRES"));
    assert!(lines[1].starts_with("a two\tbob\t1\t"), "{out}");
    assert!(lines[2].starts_with("b/one\talice\t1\t"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(&["list", "-f", "json"]))).unwrap();
    let all = json.as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["resource"], "a two");
    assert_eq!(all[1]["principal"], "alice");
}

/// A lock directory that does not exist yet holds nothing: the verbs that only read or give
/// back say so and create nothing (a mistyped `-b file:///...` leaves no directory tree
/// behind); the first acquire creates it.
#[test]
fn a_missing_lock_directory_is_created_by_the_first_acquire_only() {
    let env = Env::new();
    let url = format!("file://{}/typo/locks", env.path().display());
    let id = "0123456789abcdef0123456789abcdef";
    let cases: [(&[&str], i32, &str); 5] = [
        (&["current", "r"], 1, "lockrun: r is not held\n"),
        (
            &["is-held", "r", id],
            1,
            "lockrun: lease 01234567… does not hold r (expired, released, or never granted)\n",
        ),
        (
            &["release", "r", id],
            1,
            "lockrun: lease 01234567… does not hold r (expired, released, or never granted)\n",
        ),
        (
            &["renew", "r", id],
            1,
            "lockrun: lease 01234567… does not hold r (expired, released, or never granted)\n",
        ),
        (&["list"], 0, ""),
    ];
    for (args, code, err) in cases {
        let o = env.cmd().arg("-b").arg(&url).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), err, "{args:?}");
        assert!(!env.path().join("typo").exists(), "{args:?} created it");
    }
    let o = env
        .cmd()
        .arg("-b")
        .arg(&url)
        .args(["r", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mode = std::fs::metadata(env.path().join("typo/locks")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o700
    );
    // `init` creates it too (a deploy script's provisioning step), and says so once.
    let url = format!("file://{}/made/by/init", env.path().display());
    let o = env.cmd().arg("-b").arg(&url).arg("init").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("created the lock directory"),
        "{}",
        stderr(&o)
    );
    assert!(env.path().join("made/by/init").is_dir());
    let o = env.cmd().arg("-b").arg(&url).arg("init").output().unwrap();
    assert!(stderr(&o).contains("nothing to set up"), "{}", stderr(&o));
    // -q: no progress lines, created or not.
    let quiet = format!("file://{}/made/quietly", env.path().display());
    for _ in 0..2 {
        let o = env
            .cmd()
            .args(["-q", "-b", &quiet, "init"])
            .output()
            .unwrap();
        assert_eq!((o.status.code(), stderr(&o).as_str()), (Some(0), ""));
    }
    assert!(env.path().join("made/quietly").is_dir());
}

/// What stormlock users type: `-t` for `--ttl` on `acquire` and `renew`, with stormlock's
/// duration forms, and `current -f lines` / `-f cols`.
#[test]
fn stormlock_spellings_work() {
    let env = Env::new();
    // `-t` on `run` too, before or after the resource.
    for args in [&["-t", "3s", "rt", "--"][..], &["rt", "-t", "3s", "--"]] {
        let o = env.run(&[args, &["sh", "-c", "echo ok"]].concat());
        assert_eq!(
            (o.status.code(), stdout(&o).as_str()),
            (Some(0), "ok\n"),
            "{}",
            stderr(&o)
        );
    }
    assert_fails(
        &env.run(&["run", "-t", "100ms", "rt", "--", "true"]),
        2,
        "TTL 100ms is too short",
    );
    let o = env.run(&["acquire", "-t", "4 seconds", "-p", "me@here", "st"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    let json = stdout(&env.run(&["current", "-f", "json", "st"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let left = |v: &serde_json::Value| {
        let at = |k: &str| humantime::parse_rfc3339(v[k].as_str().unwrap()).unwrap();
        at("expires_at").duration_since(at("acquired_at")).unwrap()
    };
    assert_eq!(left(&v), Duration::from_secs(4), "{json}");
    let o = env.run(&["renew", "-t", "2 min", "st", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(&["current", "-f", "json", "st"]))).unwrap();
    assert!(left(&v) >= Duration::from_secs(119), "{v}");
    let lines = stdout(&env.run(&["current", "-f", "lines", "st"]));
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert_eq!(&lines[..3], ["st", "me@here", id.as_str()]);
    let cols = stdout(&env.run(&["current", "-f", "cols", "st"]));
    let (head, row) = cols.trim_end().split_once('\n').unwrap();
    assert_eq!(
        head.split_whitespace().collect::<Vec<_>>(),
        [
            "RESOURCE",
            "PRINCIPAL",
            "LEASE_ID",
            "FENCING_TOKEN",
            "ACQUIRED_AT",
            "EXPIRES_AT"
        ]
    );
    assert_eq!(row.split_whitespace().nth(2), Some(id.as_str()));
}

/// Each stderr line is one write(2): lockruns that share a log file (`2>>log` in cron) do not
/// mix pieces of their lines. `writeln!` on unbuffered stderr wrote each piece of a line on its
/// own (review: `lockrun: waiting for h: lockrun: waiting for h` in one line of such a log).
#[test]
fn stderr_lines_of_concurrent_lockruns_stay_whole() {
    let env = Env::new();
    let o = env.run(&["acquire", "shared-log"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let log = env.file("log");
    for _ in 0..3 {
        let _ = std::fs::remove_file(&log);
        let line = format!(
            "for i in $(seq 40); do {} acquire -w 200ms shared-log 2>>{} & done; wait",
            env!("CARGO_BIN_EXE_lockrun"),
            log.display()
        );
        let o = env.cmd_sh(&line);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 80, "{text}");
        for l in lines {
            let whole = (l.starts_with("lockrun: waiting for shared-log: held by ")
                || l.starts_with("lockrun: shared-log is busy after waiting 200ms: held by "))
                && l.matches("lockrun").count() == 1
                && l.ends_with("s)");
            assert!(whole, "a mixed line: {l:?}");
        }
    }
}
