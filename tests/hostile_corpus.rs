//! A corpus of bad and hostile input. Every case must end with its documented exit code and
//! exactly one `lockrun: ` line on stderr, never panic, and never release, renew or otherwise
//! change a lease it should not: a sentinel lease is checked, byte for byte, after every case.

mod common;

use common::*;

/// One case: extra environment, the config file text (if any), the arguments, and what must
/// come out.
struct Case {
    env: &'static [(&'static str, &'static str)],
    config: Option<&'static str>,
    args: &'static [&'static str],
    code: i32,
    needle: &'static str,
}

const fn case(args: &'static [&'static str], code: i32, needle: &'static str) -> Case {
    Case {
        env: &[],
        config: None,
        args,
        code,
        needle,
    }
}

const fn with_env(
    env: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
    code: i32,
    needle: &'static str,
) -> Case {
    Case {
        env,
        config: None,
        args,
        code,
        needle,
    }
}

const fn with_config(
    config: &'static str,
    args: &'static [&'static str],
    code: i32,
    needle: &'static str,
) -> Case {
    Case {
        env: &[],
        config: Some(config),
        args,
        code,
        needle,
    }
}

/// Arguments built at run time, kept for the whole test.
fn leak(args: &[&str]) -> &'static [&'static str] {
    let owned: Vec<&'static str> = args
        .iter()
        .map(|a| &*Box::leak(a.to_string().into_boxed_str()))
        .collect();
    Box::leak(owned.into_boxed_slice())
}

const WRONG_ID: &str = "0123456789abcdef0123456789abcdef";

fn corpus() -> Vec<Case> {
    vec![
        // Usage: flags, durations, arguments.
        case(&["acquire", "--ttl", "5x", "r"], 2, "5x"),
        case(&["acquire", "--ttl", "", "r"], 2, ""),
        case(&["acquire", "--ttl", "-1s", "r"], 2, ""),
        case(&["acquire", "--ttl", "1e400", "r"], 2, ""),
        case(&["acquire", "--ttl", "NaN", "r"], 2, ""),
        case(&["acquire", "--ttl", "0", "r"], 2, "TTL"),
        case(&["acquire", "--ttl", "20 years", "r"], 2, "TTL"),
        case(&["acquire", "-w", "soon", "r"], 2, "soon"),
        case(
            &["acquire", "-n", "-w", "1s", "r"],
            2,
            "cannot be used with",
        ),
        case(&["acquire", "-E", "256", "r"], 2, "256"),
        case(&["acquire", "-E", "-1", "r"], 2, ""),
        case(
            &["run", "--heartbeat", "0", "r", "--", "true"],
            2,
            "heartbeat",
        ),
        case(
            &["run", "--ttl", "1s", "--heartbeat", "1s", "r", "--", "true"],
            2,
            "must be less than the TTL",
        ),
        case(
            &[
                "run",
                "--ttl",
                "1s",
                "--kill-after",
                "1s",
                "r",
                "--",
                "true",
            ],
            2,
            "must be less than the TTL",
        ),
        case(&["run", "--ttl", "10ms", "r", "--", "true"], 2, "too short"),
        case(&["run", "--events", "x", "r", "--", "true"], 2, "--events"),
        case(&["run", "--events", "-5", "r", "--", "true"], 2, "-5"),
        case(
            &["run", "--events", "999", "r", "--", "true"],
            2,
            "not open",
        ),
        case(&["r", "--"], 2, "COMMAND"),
        case(&["run", "r"], 2, "COMMAND"),
        case(&["renew", "r"], 2, "LEASE_ID"),
        case(&["release"], 2, "RESOURCE"),
        case(&["current", "-f", "xml", "r"], 2, "xml"),
        case(&["list", "-f", "yaml"], 2, "yaml"),
        case(&["frobnicate", "--now"], 2, "'frobnicate' is not a verb"),
        case(&["--no-such-flag", "r", "--", "true"], 2, "no-such-flag"),
        case(&["-v", "-q", "current", "r"], 2, "cannot be used with"),
        // Resource names.
        case(&["acquire", ""], 2, "resource name is empty"),
        case(&["acquire", "bad\nname"], 2, "control character"),
        case(&["acquire", "bad\u{1b}[31mname"], 2, "control character"),
        case(&["acquire", "tab\there"], 2, "control character"),
        case(&["current", "del\u{7f}"], 2, "control character"),
        case(leak(&["acquire", &"x".repeat(256)]), 2, "256 bytes"),
        // Lease ids: malformed (usage) and well-formed but wrong (not held).
        case(&["release", "sentinel", ""], 2, "lease id is empty"),
        case(&["release", "sentinel", "has space"], 2, "malformed"),
        case(&["release", "sentinel", "$(rm -rf /)"], 2, "malformed"),
        case(&["renew", "sentinel", "../../etc/passwd"], 2, "malformed"),
        case(&["is-held", "sentinel", "id;DROP TABLE x"], 2, "malformed"),
        case(
            leak(&["renew", "sentinel", &"a".repeat(200)]),
            2,
            "malformed",
        ),
        case(&["release", "sentinel", WRONG_ID], 1, "does not hold"),
        case(
            &["renew", "--ttl", "10h", "sentinel", WRONG_ID],
            1,
            "does not hold",
        ),
        case(&["is-held", "sentinel", WRONG_ID], 1, "does not hold"),
        case(&["release", "other", WRONG_ID], 1, "does not hold"),
        // Busy: the sentinel is held.
        case(&["acquire", "-n", "sentinel"], 75, "busy"),
        case(&["acquire", "-n", "-E", "9", "sentinel"], 9, "busy"),
        case(&["-n", "sentinel", "--", "true"], 75, "busy"),
        case(
            &["run", "-w", "200ms", "sentinel", "--", "true"],
            75,
            "busy",
        ),
        // Backends and URLs.
        case(&["-b", "nosuch://x", "acquire", "r"], 78, "unknown backend"),
        case(
            &["-b", "no-such-section", "acquire", "r"],
            78,
            "no-such-section",
        ),
        case(
            &["-b", "redis://[::1", "acquire", "r"],
            78,
            "bad backend URL",
        ),
        case(&["-b", "", "acquire", "r"], 78, ""),
        case(&["-b", "file://relative/dir", "acquire", "r"], 78, ""),
        case(
            &["-b", "file:///tmp/x?y=1", "acquire", "r"],
            78,
            "no parameters",
        ),
        case(
            &["-b", "file:///proc/lockrun-corpus", "acquire", "r"],
            78,
            "",
        ),
        case(
            &["-b", "redis://u:hunter2@127.0.0.1:1/0", "acquire", "r"],
            69,
            "",
        ),
        case(
            &["-b", "postgres://u:hunter2@127.0.0.1:1/db", "acquire", "r"],
            69,
            "",
        ),
        case(&["-b", "etcd://127.0.0.1:1", "acquire", "r"], 69, ""),
        case(&["-b", "memcached://127.0.0.1:1", "acquire", "r"], 69, ""),
        case(&["-b", "etcd://h1:2379,,h2:2379", "acquire", "r"], 78, ""),
        // Environment values.
        with_env(
            &[("LOCKRUN_BACKEND", "nosuch://x")],
            &["acquire", "r"],
            78,
            "nosuch",
        ),
        with_env(
            &[("LOCKRUN_CONFIG", "/nonexistent/lockrun.toml")],
            &["acquire", "r"],
            78,
            "/nonexistent/lockrun.toml",
        ),
        with_env(
            &[("LOCKRUN_PRINCIPAL", "evil\u{1b}]0;title\u{7}")],
            &["acquire", "r"],
            78,
            "",
        ),
        with_env(
            &[("LOCKRUN_LOG", "!!!not a filter[")],
            &["current", "nothing"],
            1,
            "not held",
        ),
        // Config files.
        with_config("[default]\nttl = \"5x\"\n", &["acquire", "r"], 78, ":2"),
        with_config("[default]\nbogus = 1\n", &["acquire", "r"], 78, "bogus"),
        with_config("[default\n", &["acquire", "r"], 78, ":1"),
        with_config("[default]\nttl = [1, 2]\n", &["acquire", "r"], 78, "ttl"),
        with_config(
            "[default]\nbackend = \"missing\"\n",
            &["acquire", "r"],
            78,
            "missing",
        ),
        with_config("[backend.x]\nport = 1\n", &["acquire", "r"], 78, "url"),
        with_config(
            "[default]\nwait = \"sometimes\"\n",
            &["acquire", "r"],
            78,
            "wait",
        ),
        with_config(
            "[default]\nprincipal = \"\"\n",
            &["acquire", "r"],
            78,
            "principal",
        ),
        with_config("[resource.\"\"]\nttl = \"1h\"\n", &["acquire", "r"], 78, ""),
        with_config("[sideways]\nx = 1\n", &["acquire", "r"], 78, "sideways"),
        with_config("\u{0}\u{1}\u{2}binary", &["acquire", "r"], 78, ""),
    ]
}

#[test]
fn every_bad_input_is_refused_without_touching_the_sentinel_lease() {
    let env = Env::new();
    let o = env.run(&[
        "-p",
        "sentinel-holder",
        "acquire",
        "--ttl",
        "1h",
        "sentinel",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let sentinel = || stdout(&env.run(&["current", "-f", "json", "sentinel"]));
    let before = sentinel();
    let cases = corpus();
    assert!(cases.len() >= 60, "the corpus has {} cases", cases.len());
    let cfg = env.file("corpus.toml");
    for (i, c) in cases.iter().enumerate() {
        let mut cmd = env.cmd();
        for (k, v) in c.env {
            cmd.env(k, v);
        }
        if let Some(text) = c.config {
            std::fs::write(&cfg, text).unwrap();
            cmd.arg("-c").arg(&cfg);
        }
        let o = cmd.args(c.args).output().unwrap();
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(c.code),
            "case {i} {:?}: {err}",
            c.args
        );
        // Progress lines ("waiting for ...") may precede it; the outcome is one line.
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.starts_with("lockrun: waiting for "))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "case {i} {:?}: one line, got {err:?}",
            c.args
        );
        assert!(
            lines[0].starts_with("lockrun: ") && err.contains(c.needle),
            "case {i} {:?}: {err:?}",
            c.args
        );
        assert!(
            !err.contains("panicked") && !err.contains("hunter2"),
            "case {i}: {err}"
        );
        assert!(
            !lines[0].chars().any(|ch| ch.is_control() && ch != '\t'),
            "case {i}: unescaped control characters: {err:?}"
        );
        assert_eq!(
            sentinel(),
            before,
            "case {i} {:?} changed the sentinel lease",
            c.args
        );
    }
}

/// Damages a record file (first argument) in a lock directory (second).
type Damage = fn(&std::path::Path, &std::path::Path);

/// Damaged stored records: a truncated record, garbage bytes, another resource's record, and a
/// symlink in place of the record. Each is reported as corrupt (65) and left exactly as it was.
#[test]
fn damaged_records_are_reported_and_left_alone() {
    let env = Env::new();
    let dir = env.path().join("locks");
    let damages: [(&str, Damage); 4] = [
        ("truncated", |rec, _| {
            let b = std::fs::read(rec).unwrap();
            std::fs::write(rec, &b[..b.len() / 2]).unwrap();
        }),
        ("garbage", |rec, _| {
            std::fs::write(rec, [0xffu8, 0, 1, 2, 3]).unwrap()
        }),
        ("another resource's", |rec, dir| {
            std::fs::copy(dir.join("other.lease"), rec).unwrap();
        }),
        ("symlink", |rec, dir| {
            std::fs::remove_file(rec).unwrap();
            std::os::unix::fs::symlink(dir.join("other.lease"), rec).unwrap();
        }),
    ];
    env.run(&["acquire", "other"]);
    for (i, (what, damage)) in damages.iter().enumerate() {
        let res = format!("victim{i}");
        env.run(&["acquire", &res]);
        let rec = dir.join(format!("victim{i}.lease"));
        damage(&rec, &dir);
        let snapshot = std::fs::symlink_metadata(&rec)
            .map(|m| (m.len(), m.file_type().is_symlink()))
            .unwrap();
        let bytes = std::fs::read(&rec).ok();
        for args in [
            &["acquire", "-n", &res][..],
            &["current", &res],
            &["renew", &res, WRONG_ID],
            &["release", &res, WRONG_ID],
            &["-n", &res, "--", "true"],
        ] {
            let o = env.run(args);
            assert_fails(&o, 65, "corrupt");
            let now = std::fs::symlink_metadata(&rec)
                .map(|m| (m.len(), m.file_type().is_symlink()))
                .unwrap();
            assert_eq!(now, snapshot, "{what} record changed by {args:?}");
            assert_eq!(
                std::fs::read(&rec).ok(),
                bytes,
                "{what} record changed by {args:?}"
            );
        }
    }
}
