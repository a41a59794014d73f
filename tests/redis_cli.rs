//! The real binary against a real redis-server: verbs, lost leases, waking waiters, a stalled
//! server, and every bad input with its exit code and one-line message.
#![cfg(feature = "redis")]

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::server::{self, Server};
use common::*;

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/0")
}

/// `lockrun -b URL args...` in `env`.
fn lockrun(env: &Env, url: &str, args: &[&str]) -> Output {
    env.cmd()
        .args(["-b", url])
        .args(args)
        .output()
        .expect("spawn lockrun")
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A resource name unique to this test.
fn resource(what: &str) -> String {
    format!("{}/{what}", server::prefix())
}

#[test]
fn verbs_round_trip() {
    let s = server::redis();
    let (env, u, res) = (Env::new(), url(s.port), resource("verbs"));
    let o = lockrun(
        &env,
        &u,
        &["-p", "tester@here", "acquire", "--ttl", "1h", &res],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    assert_eq!(id.len(), 32);

    let o = lockrun(&env, &u, &["current", "-f", "json", &res]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["lease_id"], id.as_str());
    assert_eq!(json["principal"], "tester@here");
    assert!(json["fencing_token"].as_u64().unwrap() >= 1);
    assert_eq!(json["ttl_seconds"], 3600.0);

    // Someone else is refused, with the holder named.
    let o = lockrun(&env, &u, &["acquire", "-n", &res]);
    assert_fails(&o, 75, "held by tester@here");

    let o = lockrun(&env, &u, &["is-held", &res, &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let pttl: i64 = redis_cli(s.port, &["PTTL", &format!("lockrun:lease:{res}")])
        .parse()
        .unwrap();
    assert!(pttl > 3_500_000, "server-side expiry in ms: {pttl}");

    let o = lockrun(&env, &u, &["renew", "--ttl", "2h", "--json", &res, &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["lease_id"], id.as_str());
    assert_eq!(json["ttl_seconds"], 7200.0);
    let pttl: i64 = redis_cli(s.port, &["PTTL", &format!("lockrun:lease:{res}")])
        .parse()
        .unwrap();
    assert!(pttl > 7_100_000, "renewed on the server: {pttl}");

    let wrong = "0123456789abcdef0123456789abcdef";
    assert_fails(
        &lockrun(&env, &u, &["release", &res, wrong]),
        1,
        "does not hold",
    );
    let o = lockrun(&env, &u, &["release", &res, &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_fails(&lockrun(&env, &u, &["current", &res]), 1, "is not held");
    assert_fails(
        &lockrun(&env, &u, &["is-held", &res, &id]),
        1,
        "does not hold",
    );
    assert_fails(
        &lockrun(&env, &u, &["renew", &res, &id]),
        1,
        "does not hold",
    );
    assert_eq!(
        redis_cli(s.port, &["EXISTS", &format!("lockrun:lease:{res}")]),
        "0"
    );
}

#[test]
fn run_gets_increasing_fencing_tokens() {
    let s = server::redis();
    let (env, u, res) = (Env::new(), url(s.port), resource("tokens"));
    let echo = [
        "--",
        "sh",
        "-c",
        "echo $LOCKRUN_FENCING_TOKEN $LOCKRUN_BACKEND",
    ];
    let run = |env: &Env| {
        let o = lockrun(env, &u, &[&["run", &res][..], &echo[..]].concat());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let out = stdout(&o);
        let mut parts = out.split_whitespace();
        let token: u64 = parts.next().unwrap().parse().unwrap();
        assert_eq!(parts.next(), Some(u.as_str()));
        token
    };
    let (a, b) = (run(&env), run(&env));
    assert!(b > a, "{a} then {b}");
    // Released after each run.
    assert_eq!(
        redis_cli(s.port, &["EXISTS", &format!("lockrun:lease:{res}")]),
        "0"
    );
}

/// `lockrun run --ttl 3s RES -- sleep SECS` in the background, its stderr piped (no `-q`: the
/// warnings are what these tests look at).
fn run_in_background(env: &Env, url: &str, res: &str, secs: &str) -> std::process::Child {
    env.cmd()
        .args(["-b", url, "run", "--ttl", "3s", res, "--", "sleep", secs])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// Starts `lockrun run` whose command writes its pid and lease id, then sleeps.
fn start_holder(env: &Env, url: &str, res: &str, ttl: &str) -> (std::process::Child, i32, String) {
    let info = env.file("holder");
    let script = format!(
        "echo \"$$ $LOCKRUN_LEASE_ID\" > {}.tmp; mv {0}.tmp {0}; exec sleep 60",
        info.display()
    );
    let child = env
        .cmd()
        .args([
            "-q", "-b", url, "run", "--ttl", ttl, res, "--", "sh", "-c", &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(
        eventually(Duration::from_secs(10), || info.exists()),
        "the command did not start"
    );
    let text = std::fs::read_to_string(&info).unwrap();
    let mut parts = text.split_whitespace();
    let pid = parts.next().unwrap().parse().unwrap();
    let id = parts.next().unwrap().to_owned();
    (child, pid, id)
}

/// A server restarted without its keys while a command runs: the next renewal finds its
/// connection dropped, sends again at once on a new one, and finds the lease gone. The stop
/// comes at that renewal, with no failed renewal and retry before it.
#[test]
fn a_restarted_server_is_noticed_at_the_next_renewal() {
    let s: Server = server::start_redis(&[]);
    let (env, u, res) = (Env::new(), url(s.port), resource("restarted"));
    let child = run_in_background(&env, &u, &res, "30");
    // One renewal (every second) on the shared connection, then the restart.
    std::thread::sleep(Duration::from_millis(1500));
    let _new = server::restart_redis(&s);
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 124, "lost the lease");
}

#[test]
fn a_run_whose_lease_is_deleted_stops_with_124() {
    let s = server::redis();
    let (env, u, res) = (Env::new(), url(s.port), resource("deleted"));
    let (child, pid, _) = start_holder(&env, &u, &res, "3s");
    assert_eq!(
        redis_cli(s.port, &["DEL", &format!("lockrun:lease:{res}")]),
        "1"
    );
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 124, "lost the lease");
    assert!(!alive(pid), "the command was stopped");
}

#[test]
fn a_run_whose_lease_is_released_by_another_process_stops_with_124() {
    let s = server::redis();
    let (env, u, res) = (Env::new(), url(s.port), resource("released"));
    let (child, pid, id) = start_holder(&env, &u, &res, "3s");
    let o = lockrun(&env, &u, &["release", &res, &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 124, "lost the lease");
    assert!(!alive(pid));
}

#[test]
fn a_waiter_is_woken_by_the_release() {
    let s = server::redis();
    let (env, u, res) = (Env::new(), url(s.port), resource("wake"));
    let o = lockrun(&env, &u, &["acquire", "--ttl", "1h", &res]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    let mut waiter = env
        .cmd()
        .args(["-q", "-b", &u, "run", &res, "--", "true"])
        .spawn()
        .expect("spawn");
    // Let it find the resource busy and subscribe.
    std::thread::sleep(Duration::from_millis(700));
    assert!(waiter.try_wait().unwrap().is_none(), "the waiter waits");
    let released = Instant::now();
    let o = lockrun(&env, &u, &["release", &res, &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(eventually(Duration::from_secs(10), || waiter
        .try_wait()
        .unwrap()
        .is_some()));
    let took = released.elapsed();
    assert_eq!(waiter.wait().unwrap().code(), Some(0));
    eprintln!("waiter finished {took:?} after the release (includes its run of `true`)");
    // The fallback poll with a watch is 5 s (jittered down to 3.75 s) and the holder's lease
    // had an hour left: only the release message can explain a wake-up this soon.
    assert!(took < Duration::from_millis(2500), "woken after {took:?}");
}

#[test]
fn a_stalled_server_stops_the_command_before_the_lease_could_expire() {
    let s: Server = server::start_redis(&[]);
    let (env, u, res) = (Env::new(), url(s.port), resource("paused"));
    let (child, pid, _) = start_holder(&env, &u, &res, "3s");
    // Let one renewal succeed, then stop the server.
    std::thread::sleep(Duration::from_millis(1200));
    s.pause();
    let paused = Instant::now();
    let stopped = eventually(Duration::from_secs(10), || !alive(pid));
    let took = paused.elapsed();
    assert!(stopped, "the command still runs");
    eprintln!("command stopped {took:?} after the server was paused (TTL 3s)");
    // The last renewal was sent before the pause, so the key lives at least 3 s after it.
    assert!(
        took < Duration::from_secs(3),
        "stopped {took:?} after the pause"
    );
    let o = child.wait_with_output().unwrap();
    let total = paused.elapsed();
    s.resume();
    eprintln!("lockrun exited {total:?} after the pause");
    assert_fails(&o, 124, "could not renew the lease");
    // After a deadline stop the final release is bounded (1 s): lockrun exits soon after the
    // command is dead instead of waiting out the 5 s command timeout.
    assert!(
        total < Duration::from_secs(5),
        "lockrun exited {total:?} after the pause"
    );
}

/// A server that answers again after lockrun sent the command TERM for the deadline: the stop is
/// seen through (KILL at that deadline), so a command that ignores TERM does not run on while
/// lockrun reports that it stopped it.
#[test]
fn a_stop_for_the_deadline_is_seen_through_when_the_server_comes_back() {
    let s: Server = server::start_redis(&[]);
    let (env, u, res) = (Env::new(), url(s.port), resource("comeback"));
    let (term, done) = (env.file("term"), env.file("done"));
    // A command that notes the TERM and sleeps on (a sleep resumes after the handler).
    let script = format!(
        "import pathlib, signal, time\n\
         signal.signal(signal.SIGTERM, lambda *_: pathlib.Path({:?}).touch())\n\
         time.sleep(12)\n\
         pathlib.Path({:?}).touch()\n",
        term.display().to_string(),
        done.display().to_string()
    );
    let child = env
        .cmd()
        .args([
            "-q",
            "-b",
            &u,
            "run",
            "--ttl",
            "9s",
            "--kill-after",
            "4s",
            &res,
            "--",
            "python3",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(500));
    s.pause();
    // TERM comes 4 s before the deadline; the server answers again at once after it, so a
    // renewal succeeds well before the KILL would be due.
    assert!(
        eventually(Duration::from_secs(15), || term.exists()),
        "no TERM for the deadline"
    );
    s.resume();
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 124, "could not renew the lease");
    assert!(
        !done.exists(),
        "the command ran on after lockrun reported stopping it"
    );
}

/// A server that goes away for good: the renewals fail every fraction of a heartbeat until the
/// deadline, but stderr gets one warning for them and the line lockrun ends with, not a line per
/// retry, nor one for the release that fails too.
#[test]
fn a_server_gone_for_good_makes_two_lines_not_one_per_retry() {
    let s: Server = server::start_redis(&[]);
    let (env, u, res) = (Env::new(), url(s.port), resource("gone"));
    let child = run_in_background(&env, &u, &res, "60");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on the server's pid (the harness cleans up its directory at exit).
    unsafe { libc::kill(s.pid as i32, libc::SIGKILL) };
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(124), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("lockrun: warning: renewing the lease")
            && lines[0].ends_with("(retrying)"),
        "{err}"
    );
    assert!(lines[1].contains("could not renew the lease"), "{err}");
}

/// A connection that stops answering while the server answers new ones (a half-open TCP
/// connection, a NAT that forgot it): the renewal that stalled on it is given up at the
/// heartbeat's limit, and the next one goes out on a new connection, so the command runs to
/// its end. (Pausing the whole server cannot show this: no connection would answer.)
#[test]
fn a_run_replaces_a_connection_that_stops_answering() {
    let s = server::redis();
    let proxy = proxy::Proxy::start(s.port);
    let (env, u, res) = (Env::new(), url(proxy.port), resource("half-open"));
    let mut run = env.cmd();
    run.args(["-b", &u, "run", "--ttl", "6s", "--heartbeat", "1s", &res]);
    let (o, _) = proxy::run_through_a_freeze(&proxy, run, env.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(proxy.connections() >= 2, "a new connection was opened");
}

/// An acquire whose connection stalls: lockrun gives up after `command_timeout` and gives the
/// lease back, on the stalled connection too, behind the acquire. When that connection delivers
/// the acquire late, the release follows it, so no lease nobody knows the id of is left for its
/// whole TTL. The one-line message names the lease all the same.
#[test]
fn an_unanswered_acquire_is_given_back_behind_it() {
    let s = server::redis();
    let proxy = proxy::Proxy::start(s.port);
    let (env, u, res) = (Env::new(), url(proxy.port), resource("unanswered"));
    // The server knows lockrun's scripts first: a frozen EVALSHA of a script it has not seen
    // would be answered NOSCRIPT after the thaw, to nobody, and never run.
    let warm = resource("warm");
    let id = stdout(&lockrun(&env, &u, &["acquire", &warm]));
    assert_eq!(
        lockrun(&env, &u, &["release", &warm, id.trim()])
            .status
            .code(),
        Some(0)
    );
    proxy.freeze_on(format!("lockrun:token:{res}").as_bytes());
    let o = proxy::acquire_frozen(
        &proxy,
        || lockrun(&env, &u, &["acquire", "--ttl", "1h", &res]),
        "did not answer within 5s",
    );
    proxy::lease_named_in(&stderr(&o), &res);
    proxy.thaw();
    // The acquire arrives now (it draws a fencing token), and the release right after it.
    let token = format!("lockrun:token:{res}");
    assert!(
        eventually(Duration::from_secs(5), || redis_cli(
            s.port,
            &["GET", &token]
        ) == "1"),
        "the held acquire never reached the server"
    );
    let lease = format!("lockrun:lease:{res}");
    assert!(
        eventually(Duration::from_secs(2), || redis_cli(
            s.port,
            &["EXISTS", &lease]
        ) == "0"),
        "lease {} left held by the late acquire",
        redis_cli(s.port, &["HGET", &lease, "id"])
    );
}

#[track_caller]
fn exits(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "stderr: {}", stderr(o));
}

/// A wait whose first attempt stalls gets the lease on a new connection, under the same lease
/// id. The stalled attempt may reach the server later: after the lease was released it would
/// grant that id again, to nobody, for its whole TTL (review: the resource stayed held for the
/// acquire's hour). A release that keeps the genuine grant (its fencing token) goes behind it
/// on its connection: it undoes the late grant, and leaves the lease alone while it is held.
#[test]
fn a_late_acquire_after_the_wait_got_the_lease_grants_nothing() {
    let s = server::redis();
    let proxy = proxy::Proxy::start(s.port);
    let (env, direct, u) = (Env::new(), url(s.port), url(proxy.port));
    let warm = resource("warm-late");
    let id = stdout(&lockrun(&env, &u, &["acquire", &warm]));
    exits(&lockrun(&env, &u, &["release", &warm, id.trim()]), 0);
    for released_first in [true, false] {
        let res = resource(&format!("late-after-grant-{released_first}"));
        let holder = stdout(&lockrun(&env, &direct, &["acquire", "--ttl", "2s", &res]));
        assert!(!holder.trim().is_empty());
        // The waiter's first attempt finds the resource busy; the one at the holder's expiry
        // goes out on the connection frozen meanwhile, and the next on a new one.
        let waiter = env
            .cmd()
            .args(["-b", &u, "acquire", "-w", "30s", &res])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        proxy.freeze_existing();
        let o = waiter.wait_with_output().unwrap();
        exits(&o, 0);
        assert!(
            stderr(&o).contains("still waiting"),
            "no attempt stalled: {}",
            stderr(&o)
        );
        let id = stdout(&o).trim().to_owned();
        if released_first {
            exits(&lockrun(&env, &direct, &["release", &res, &id]), 0);
        }
        proxy.thaw();
        // The late attempt draws a token of its own only when the resource was free.
        let token = format!("lockrun:token:{res}");
        let drawn = if released_first { "3" } else { "2" };
        assert!(
            eventually(Duration::from_secs(5), || redis_cli(
                s.port,
                &["GET", &token]
            ) == drawn),
            "the late attempt never reached the server"
        );
        std::thread::sleep(Duration::from_millis(300));
        let lease = format!("lockrun:lease:{res}");
        if released_first {
            assert_eq!(
                redis_cli(s.port, &["EXISTS", &lease]),
                "0",
                "lease {id} granted again by the late attempt"
            );
        } else {
            exits(&lockrun(&env, &direct, &["is-held", &res, &id]), 0);
            assert_eq!(redis_cli(s.port, &["HGET", &lease, "token"]), "2");
            exits(&lockrun(&env, &direct, &["release", &res, &id]), 0);
        }
    }
}

/// A user the server does not let publish on the release channels (Redis 7 gives new ACL users
/// none): a release is still a release (its script used to fail after deleting the lease: exit
/// 70, and `run` warned that the lease was not released), and `doctor` says that waiters are
/// not woken, and how to grant the channels.
#[test]
fn a_user_without_channel_rights_releases_and_doctor_says_so() {
    let s = server::redis();
    let user = format!("nochan{}", std::process::id());
    redis_cli(
        s.port,
        &[
            "ACL",
            "SETUSER",
            &user,
            "on",
            ">pw",
            "~*",
            "+@all",
            "resetchannels",
        ],
    );
    let (env, u) = (
        Env::new(),
        format!("redis://{user}:pw@127.0.0.1:{}/0", s.port),
    );
    let res = resource("no-channels");
    let id = stdout(&lockrun(&env, &u, &["acquire", &res]));
    exits(&lockrun(&env, &u, &["release", &res, id.trim()]), 0);
    exits(&lockrun(&env, &u, &["current", &res]), 1);
    let o = lockrun(&env, &u, &[&res, "--", "true"]);
    exits(&o, 0);
    assert_eq!(stderr(&o), "");
    let o = lockrun(&env, &u, &["doctor"]);
    assert!(
        stdout(&o).contains("does not let this user publish on the release channels"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("&lockrun:released:*"), "{}", stdout(&o));
}

#[test]
fn server_down_is_unavailable() {
    let (env, port) = (Env::new(), server::free_port());
    let u = format!("redis://:hunter2@127.0.0.1:{port}/0");
    for args in [
        &["acquire", "res"][..],
        &["current", "res"],
        &["res", "--", "true"],
    ] {
        let o = lockrun(&env, &u, args);
        assert_fails(
            &o,
            69,
            &format!("cannot connect to redis at redis://:***@127.0.0.1:{port}/0"),
        );
        assert!(!stderr(&o).contains("hunter2"));
        assert!(!stderr(&o).contains("os error"), "{}", stderr(&o));
    }
}

#[test]
fn passwords() {
    let s = server::start_redis(&["requirepass s3cret-pw"]);
    let env = Env::new();
    let wrong = format!("redis://:hunter2-wrong@127.0.0.1:{}/0", s.port);
    let o = lockrun(&env, &wrong, &["current", "res"]);
    assert_fails(
        &o,
        78,
        "redis authentication failed for redis://:***@127.0.0.1",
    );
    assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
    let o = lockrun(&env, &url(s.port), &["current", "res"]);
    assert_fails(&o, 78, "the server requires a password");
    // Also when the URL names another database, whose SELECT is what the server refuses.
    let db1 = format!("redis://127.0.0.1:{}/1", s.port);
    assert_fails(
        &lockrun(&env, &db1, &["current", "res"]),
        78,
        "the server requires a password",
    );

    // The right password in the URL, in the environment, in a password file.
    let right = format!("redis://:s3cret-pw@127.0.0.1:{}/0", s.port);
    assert_fails(
        &lockrun(&env, &right, &["current", "res"]),
        1,
        "is not held",
    );
    let o = env
        .cmd()
        .args(["-b", &url(s.port), "current", "res"])
        .env("LOCKRUN_REDIS_PASSWORD", "s3cret-pw")
        .output()
        .unwrap();
    assert_fails(&o, 1, "is not held");
    let pw = env.file("redis.pw");
    std::fs::write(&pw, "s3cret-pw\n").unwrap();
    let config = env.file("config.toml");
    std::fs::write(
        &config,
        format!(
            "[backend.shared]\nurl = \"{}\"\npassword_file = \"{}\"\n",
            url(s.port),
            pw.display()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let o = env
        .cmd()
        .args(["-c", c, "-b", "shared", "acquire", "res"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A wrong password in the environment is still wrong, and never shown.
    let o = env
        .cmd()
        .args(["-b", &url(s.port), "current", "res"])
        .env("LOCKRUN_REDIS_PASSWORD", "hunter2-env")
        .output()
        .unwrap();
    assert_fails(&o, 78, "authentication failed");
    assert!(!stderr(&o).contains("hunter2"));

    // A lockrun inside `lockrun run` sees the URL with its password hidden (`***`). It then
    // takes the password from the environment, or says that the server needs one.
    let nested =
        r#"echo "$LOCKRUN_BACKEND"; exec "$0" is-held "$LOCKRUN_RESOURCE" "$LOCKRUN_LEASE_ID""#;
    let run_nested = |password: Option<&str>| {
        let mut c = env.cmd();
        c.args(["-b", &right, "run", "nested", "--", "sh", "-c", nested])
            .arg(env!("CARGO_BIN_EXE_lockrun"));
        match password {
            Some(pw) => c.env("LOCKRUN_REDIS_PASSWORD", pw),
            None => c.env_remove("LOCKRUN_REDIS_PASSWORD"),
        };
        c.output().unwrap()
    };
    let o = run_nested(Some("s3cret-pw"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown = stdout(&o);
    assert!(shown.contains(":***@127.0.0.1"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let o = run_nested(None);
    assert_fails(&o, 78, "the server requires a password");
}

#[test]
fn bad_urls_and_settings_are_config_errors() {
    let s = server::redis();
    let env = Env::new();
    let p = s.port;
    let cases: Vec<(String, &str)> = vec![
        (format!("redis://127.0.0.1:{p}/99"), "has no such database"),
        (
            format!("redis://127.0.0.1:{p}/zero"),
            "database must be a number",
        ),
        (
            format!("redis://127.0.0.1:{p}/0?timeout=1"),
            "unexpected parameters",
        ),
        ("redis:///0".to_owned(), "no host"),
        (
            "redis+unix:///nonexistent/redis.sock?tls=1".to_owned(),
            "unknown parameter",
        ),
    ];
    for (u, needle) in cases {
        assert_fails(&lockrun(&env, &u, &["current", "res"]), 78, needle);
    }
    let config = env.file("config.toml");
    std::fs::write(
        &config,
        format!("[backend.r]\nurl = \"{}\"\npasword_file = \"/x\"\n", url(p)),
    )
    .unwrap();
    let o = env
        .cmd()
        .args(["-c", config.to_str().unwrap(), "-b", "r", "current", "res"])
        .output()
        .unwrap();
    assert_fails(&o, 78, "unknown key 'pasword_file'");
    // A bad setting names its file and line, with the right article.
    let file = config.to_str().unwrap();
    for (setting, want) in [
        (
            "\ncommand_timeout = \"0\"",
            ":4: [backend.r]: key 'command_timeout' must be longer than zero",
        ),
        (
            "prefix = 5",
            ":3: [backend.r]: key 'prefix' must be a string, not an integer",
        ),
        (
            "password_file = \"/nonexistent/pw\"",
            ":3: [backend.r]: cannot read password_file /nonexistent/pw",
        ),
    ] {
        std::fs::write(
            &config,
            format!("[backend.r]\nurl = \"{}\"\n{setting}\n", url(p)),
        )
        .unwrap();
        let o = env
            .cmd()
            .args(["-c", file, "-b", "r", "current", "res"])
            .output()
            .unwrap();
        assert_fails(&o, 78, &format!("{file}{want}"));
    }
    // A socket that does not exist is a server that is not there.
    let o = lockrun(
        &env,
        "redis+unix:///nonexistent/redis.sock",
        &["current", "res"],
    );
    assert_fails(
        &o,
        69,
        "cannot connect to redis at redis+unix:///nonexistent/redis.sock",
    );
}

/// `rediss://` against a plain server: the server never answers the TLS handshake, so this is
/// reported as unavailable (69) after the connect timeout, with a hint to use redis://.
#[test]
fn tls_against_a_plain_server() {
    let s = server::redis();
    let env = Env::new();
    let config = env.file("config.toml");
    std::fs::write(
        &config,
        format!(
            "[backend.tls]\nurl = \"rediss://127.0.0.1:{}/0\"\nconnect_timeout = \"500ms\"\n",
            s.port
        ),
    )
    .unwrap();
    let o = env
        .cmd()
        .args([
            "-c",
            config.to_str().unwrap(),
            "-b",
            "tls",
            "current",
            "res",
        ])
        .output()
        .unwrap();
    assert_fails(
        &o,
        69,
        "if the server does not speak TLS on this port, use redis://",
    );
}

#[test]
fn a_foreign_value_under_the_key_is_corrupt_and_left_alone() {
    let s = server::redis();
    let (env, u, res) = (Env::new(), url(s.port), resource("foreign"));
    let key = format!("lockrun:lease:{res}");
    assert_eq!(redis_cli(s.port, &["SET", &key, "hello"]), "OK");
    let needle = format!("redis key '{key}' holds a value that is not a lockrun lease");
    for args in [
        &["acquire", "-n", &res][..],
        &["current", &res],
        &["renew", &res, "0123456789abcdef0123456789abcdef"],
        &["run", &res, "--", "true"],
    ] {
        assert_fails(&lockrun(&env, &u, args), 65, &needle);
    }
    assert_eq!(redis_cli(s.port, &["GET", &key]), "hello");
    assert_eq!(redis_cli(s.port, &["TTL", &key]), "-1");
    // Numbers beyond what lockrun writes, in a lease or in the token counter: damage (65), not
    // an internal error (70) with a dump of the reply.
    let res = resource("foreign-numbers");
    let id = stdout(&lockrun(&env, &u, &["acquire", &res]));
    let key = format!("lockrun:lease:{res}");
    redis_cli(s.port, &["HSET", &key, "token", "99999999999999999999"]);
    assert_fails(
        &lockrun(&env, &u, &["current", &res]),
        65,
        "field token is too large",
    );
    redis_cli(s.port, &["DEL", &key]);
    let counter = format!("lockrun:token:{res}");
    redis_cli(s.port, &["SET", &counter, "9223372036854775807"]);
    assert_fails(
        &lockrun(&env, &u, &["acquire", "-n", &res]),
        65,
        "not a lockrun fencing counter (too large)",
    );
    assert!(!id.trim().is_empty());
}

#[test]
fn list_shows_live_leases() {
    // A private server, so other tests' leases do not show up.
    let s = server::start_redis(&[]);
    let (env, u) = (Env::new(), url(s.port));
    let o = lockrun(&env, &u, &["-p", "alice", "acquire", "a*b [x]"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&lockrun(&env, &u, &["acquire", "gone"]));
    assert_eq!(
        lockrun(&env, &u, &["release", "gone", id.trim()])
            .status
            .code(),
        Some(0)
    );
    let o = lockrun(&env, &u, &["list", "-f", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let all = json.as_array().unwrap();
    assert_eq!(all.len(), 1, "{json}");
    assert_eq!(all[0]["resource"], "a*b [x]");
    assert_eq!(all[0]["principal"], "alice");

    // A principal written into the store by someone else, with a newline and an escape
    // sequence: the rows (to a pipe, not a terminal) show it escaped, on one line; JSON exactly.
    let keys = redis_cli(s.port, &["--scan"]);
    let key = keys
        .lines()
        .find(|k| k.contains("lease") && k.contains("a*b"))
        .unwrap_or_else(|| panic!("the lease's key in {keys:?}"));
    let forged = "mallory
fencing_token: 999[31m";
    redis_cli(s.port, &["hset", key, "principal", forged]);
    let o = lockrun(&env, &u, &["current", "a*b [x]"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = stdout(&o);
    assert!(
        rows.contains("principal:     mallory\\nfencing_token: 999\\u{1b}[31m\n"),
        "{rows}"
    );
    assert_eq!(rows.lines().count(), 6, "{rows}");
    let o = lockrun(&env, &u, &["list"]);
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
    assert!(!stdout(&o).contains('\x1b'));
    let o = lockrun(&env, &u, &["current", "-f", "json", "a*b [x]"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json["principal"], forged);
}

/// A server that may evict keys: every verb warns once with the setting to change, `run` adds
/// no second warning, and `doctor` counts it as a problem (exit 1). Under `allkeys-*` the token
/// counter may go too, and the fencing tokens are only best effort.
#[test]
fn an_evicting_server_is_a_warning_and_doctor_says_so() {
    let s = server::start_redis(&["maxmemory 100mb", "maxmemory-policy allkeys-lru"]);
    let (env, u, res) = (Env::new(), url(s.port), resource("evict"));
    let warning = "may evict keys (maxmemory 104857600, maxmemory-policy allkeys-lru)";
    let o = lockrun(&env, &u, &["run", &res, "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains(warning), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    let o = lockrun(&env, &u, &["doctor"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("warn  this backend may evict a lock"), "{out}");
    assert!(
        out.contains("(Redis: maxmemory-policy noeviction;"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("and with it the fencing-token counter"),
        "{}",
        stderr(&o)
    );
    assert!(
        out.contains("fencing tokens increasing while the store keeps its counter"),
        "{out}"
    );
    assert!(!out.contains("no problems found"), "{out}");
    assert!(stderr(&o).contains(warning), "{}", stderr(&o));

    // volatile-*: leases may go, the counter (no expiry) stays.
    redis_cli(
        s.port,
        &["CONFIG", "SET", "maxmemory-policy", "volatile-lru"],
    );
    let o = lockrun(&env, &u, &["doctor"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!stderr(&o).contains("counter"), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("fencing tokens strictly increasing"),
        "{}",
        stdout(&o)
    );
    // noeviction: nothing to warn about but the test server's lack of persistence (found by
    // review: doctor called a server that forgets its counters at a restart strict).
    redis_cli(s.port, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let o = lockrun(&env, &u, &["doctor"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains("does not log writes to an append-only file (appendonly no)")
            && out.contains("starts fencing tokens again at 1"),
        "{out}"
    );
    assert!(out.contains("1 warning(s)"), "{out}");
    // RDB snapshots alone restore an old state: still a warning. With the AOF: none.
    redis_cli(s.port, &["CONFIG", "SET", "save", "3600 1"]);
    let out = stdout(&lockrun(&env, &u, &["doctor"]));
    assert!(out.contains("since its last snapshot"), "{out}");
    redis_cli(s.port, &["CONFIG", "SET", "appendonly", "yes"]);
    let o = lockrun(&env, &u, &["doctor"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("no problems found"), "{}", stdout(&o));
    assert_eq!(stderr(&o), "");
}

/// A `release` or `renew` whose answer does not come may still have been applied: the one line
/// says so, and names the command that shows the holder.
#[test]
fn an_unanswered_release_or_renew_says_it_may_have_been_applied() {
    let s = server::redis();
    let proxy = proxy::Proxy::start(s.port);
    let (env, res) = (Env::new(), resource("unanswered-release"));
    let section = format!("url = \"{}\"\ncommand_timeout = \"1s\"", url(proxy.port));
    let run = |args: &[&str]| env.run_section(&section, args);
    let o = run(&["acquire", &res]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    // Requests that name the lease reach the server only after the thaw, unanswered.
    proxy.freeze_all_on(id.as_bytes());
    let renewed = run(&["renew", &res, &id, "--ttl", "1h"]);
    proxy.thaw();
    proxy.freeze_all_on(id.as_bytes());
    let released = run(&["release", &res, &id]);
    proxy.thaw();
    let shows =
        format!("lockrun current {res} (with this command's backend options) shows the holder");
    assert_fails(&renewed, 69, "it may have been renewed or not");
    assert_fails(&released, 69, "it may have been released or not");
    assert!(stderr(&released).contains(&shows), "{}", stderr(&released));
    // Refused at once (nothing sent): no such doubt.
    let nobody = url(server::free_port());
    let o = lockrun(&env, &nobody, &["release", &res, &id]);
    assert_fails(&o, 69, "");
    assert!(!stderr(&o).contains("may have been"), "{}", stderr(&o));
}

/// A connection cut right after a request was sent: a renewal is sent again on a new
/// connection (the same when repeated); so is a release, but its "not held" then means that the
/// first one may have released it, and the line says so.
#[test]
fn a_cut_connection_repeats_a_renewal_and_a_release() {
    let s = server::redis();
    let proxy = proxy::Proxy::start(s.port);
    let (env, u, res) = (Env::new(), url(proxy.port), resource("cut"));
    // The server knows lockrun's scripts first: an EVALSHA of a script it has not seen is
    // answered NOSCRIPT, and that answer would be the one cut.
    let warm = resource("cut-warm");
    let id = stdout(&lockrun(&env, &u, &["acquire", &warm]));
    let o = lockrun(&env, &u, &["renew", "--ttl", "1h", &warm, id.trim()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = lockrun(&env, &u, &["release", &warm, id.trim()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = lockrun(&env, &u, &["acquire", &res]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    proxy.cut_answer_on(id.as_bytes());
    let o = lockrun(&env, &u, &["renew", "--ttl", "2h", &res, &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(proxy.cuts(), 1);
    proxy.cut_answer_on(id.as_bytes());
    let o = lockrun(&env, &u, &["release", &res, &id]);
    assert_eq!(proxy.cuts(), 2);
    assert_fails(&o, 69, "it may have been released or not");
    // It was: the resource is free.
    let o = lockrun(&env, &url(s.port), &["current", &res]);
    assert_fails(&o, 1, "is not held");
}

/// A server that closes idle connections (`timeout`): the run's shared connection is gone when
/// its command ends, and the release, sent again on a new connection, frees the lease at once.
#[test]
fn a_release_after_the_server_closed_the_idle_connection_frees_the_lease() {
    let s: Server = server::start_redis(&["timeout 1"]);
    let (env, u, res) = (Env::new(), url(s.port), resource("idle"));
    let o = lockrun(&env, &u, &["run", "--ttl", "1m", &res, "--", "sleep", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "a warning at release");
    let o = lockrun(&env, &u, &["current", &res]);
    assert_fails(&o, 1, "is not held");
}
