//! The real binary against real memcached servers: verbs, the eviction warning, a lost lease,
//! two servers, and every bad input with its exit code and one-line message.
#![cfg(feature = "memcached")]

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::memcached::{self as mc, Raw};
use common::server;
use common::*;

/// `lockrun -b URL args...` in `env`.
fn lockrun(env: &Env, url: &str, args: &[&str]) -> Output {
    env.cmd()
        .args(["-b", url])
        .args(args)
        .output()
        .expect("spawn lockrun")
}

/// A resource name unique to this test (plain characters: its key is readable).
fn resource(what: &str) -> String {
    format!("{}/{what}", server::prefix())
}

fn lease_key(res: &str) -> String {
    format!("lockrun:lease:{res}")
}

const WARNING: &str = "memcached may evict a lock under memory pressure";

#[test]
fn verbs_round_trip() {
    let s = mc::memcached();
    let (env, u, res) = (Env::new(), mc::url(s), resource("verbs"));
    let o = lockrun(
        &env,
        &u,
        &["-p", "tester@here", "acquire", "--ttl", "1h", &res],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    assert_eq!(id.len(), 32);
    assert!(
        !stderr(&o).contains(WARNING),
        "only run warns: {}",
        stderr(&o)
    );

    let o = lockrun(&env, &u, &["current", "-f", "json", &res]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["lease_id"], id.as_str());
    assert_eq!(json["principal"], "tester@here");
    assert!(json["fencing_token"].as_u64().unwrap() >= 1);
    assert_eq!(json["ttl_seconds"], 3600.0);
    let record = Raw::connect(s.port).get_text(&lease_key(&res)).unwrap();
    assert!(record.contains(&format!("\"id\":\"{id}\"")), "{record}");

    assert_fails(
        &lockrun(&env, &u, &["acquire", "-n", &res]),
        75,
        "held by tester@here",
    );
    let o = lockrun(&env, &u, &["is-held", &res, &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = lockrun(&env, &u, &["renew", "--ttl", "2h", "--json", &res, &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["ttl_seconds"], 7200.0);

    let wrong = "0123456789abcdef0123456789abcdef";
    assert_fails(
        &lockrun(&env, &u, &["release", &res, wrong]),
        1,
        "does not hold",
    );
    assert_fails(
        &lockrun(&env, &u, &["renew", &res, wrong]),
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
    // The tombstone does not block the next holder.
    let o = lockrun(&env, &u, &["acquire", "-n", &res]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn run_warns_once_about_eviction() {
    let s = mc::memcached();
    let (env, u, res) = (Env::new(), mc::url(s), resource("warn"));
    let echo = ["--", "sh", "-c", "echo $LOCKRUN_FENCING_TOKEN"];
    let o = lockrun(&env, &u, &[&["run", &res][..], &echo[..]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches(WARNING).count(), 1, "{err}");
    assert!(err.starts_with("lockrun: warning: "), "{err}");
    let first: u64 = stdout(&o).trim().parse().unwrap();
    // -q silences it; tokens go on increasing.
    let o = lockrun(&env, &u, &[&["-q", "run", &res][..], &echo[..]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    let second: u64 = stdout(&o).trim().parse().unwrap();
    assert!(second > first, "{first} then {second}");
    // A run that does not get the lease keeps to its one line (the warning comes with a grant).
    let id = stdout(&lockrun(&env, &u, &["acquire", &res]))
        .trim()
        .to_owned();
    assert_fails(
        &lockrun(&env, &u, &[&["run", "-n", &res][..], &echo[..]].concat()),
        75,
        "is busy",
    );
    lockrun(&env, &u, &["release", &res, &id]);
    // --help says it too.
    let o = env.run(&["--help"]);
    assert!(stdout(&o).contains(WARNING), "{}", stdout(&o));
}

/// memcached keeps a key up to a second past the lease's expiry (whole seconds, plus one): in
/// that second the lease is over all the same, and a renewal does not bring it back.
#[test]
fn a_lease_past_its_expiry_is_not_held_nor_renewed() {
    let s = mc::memcached();
    let (env, u, res) = (Env::new(), mc::url(s), resource("expired"));
    let o = lockrun(&env, &u, &["acquire", "--ttl", "1500ms", &res]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    std::thread::sleep(Duration::from_millis(1600));
    assert_fails(&lockrun(&env, &u, &["current", &res]), 1, "is not held");
    assert_eq!(
        lockrun(&env, &u, &["is-held", &res, &id]).status.code(),
        Some(1)
    );
    assert_fails(
        &lockrun(&env, &u, &["renew", &res, &id]),
        1,
        "does not hold",
    );
}

#[test]
fn a_run_whose_lease_is_deleted_stops_with_124() {
    let s = mc::memcached();
    let (env, u, res) = (Env::new(), mc::url(s), resource("deleted"));
    let info = env.file("holder");
    let script = format!(
        "echo $$ > {0}.tmp; mv {0}.tmp {0}; exec sleep 60",
        info.display()
    );
    let child = env
        .cmd()
        .args([
            "-q", "-b", &u, "run", "--ttl", "3s", &res, "--", "sh", "-c", &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(eventually(Duration::from_secs(10), || info.exists()));
    let pid = read_pid(&info).unwrap();
    let mut raw = Raw::connect(s.port);
    assert_eq!(
        raw.command(&format!("delete {}", lease_key(&res)), None),
        "DELETED"
    );
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 124, "lost the lease");
    assert!(!alive(pid), "the command was stopped");
}

#[test]
fn two_servers_spread_resources_and_still_exclude() {
    let (a, b) = (mc::memcached(), mc::start_memcached(&[]));
    let env = Env::new();
    let ab = format!("memcached://127.0.0.1:{},127.0.0.1:{}", a.port, b.port);
    let ba = format!("memcached://127.0.0.1:{},127.0.0.1:{}", b.port, a.port);
    let (mut raw_a, mut raw_b) = (Raw::connect(a.port), Raw::connect(b.port));
    let mut on = [0, 0];
    for i in 0..12 {
        let res = resource(&format!("spread-{i}"));
        let o = lockrun(&env, &ab, &["acquire", "--ttl", "1m", &res]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let id = stdout(&o).trim().to_owned();
        let (in_a, in_b) = (
            raw_a.get(&lease_key(&res)).is_some(),
            raw_b.get(&lease_key(&res)).is_some(),
        );
        assert!(in_a != in_b, "{res}: on exactly one server");
        on[usize::from(in_b)] += 1;
        // The order of the list does not matter.
        assert_fails(&lockrun(&env, &ba, &["acquire", "-n", &res]), 75, "held by");
        let o = lockrun(&env, &ba, &["release", &res, &id]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    assert!(on[0] > 0 && on[1] > 0, "spread: {on:?}");
}

#[test]
fn bad_input() {
    let s = mc::memcached();
    let env = Env::new();
    let port = server::free_port();
    for args in [
        &["acquire", "res"][..],
        &["current", "res"],
        &["res", "--", "true"],
    ] {
        let down = format!("memcached://127.0.0.1:{port}");
        assert_fails(
            &lockrun(&env, &down, args),
            69,
            &format!("cannot connect to memcached at 127.0.0.1:{port}"),
        );
    }
    // Another kind of server on the port: unavailable (as Redis and etcd say), not internal.
    let redis = server::redis();
    assert_fails(
        &lockrun(
            &env,
            &format!("memcached://127.0.0.1:{}", redis.port),
            &["current", "res"],
        ),
        69,
        "does not answer like memcached",
    );
    let up = mc::url(s);
    let one_down = format!("{up},127.0.0.1:{port}");
    assert_fails(
        &lockrun(&env, &one_down, &["current", "res"]),
        69,
        "cannot connect",
    );

    for (url, needle) in [
        ("memcached://h/0", "only hosts may follow"),
        ("memcached://h?prefix=x", "[backend.NAME]"),
        ("memcached://u:hunter2@h", "no authentication"),
        ("memcached://h:1,h:1", "listed twice"),
        ("memcached://h,,i", "empty host"),
    ] {
        let o = lockrun(&env, url, &["current", "res"]);
        assert_fails(&o, 78, needle);
        assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
    }

    // A foreign value under the lease key: reported, never overwritten.
    let res = resource("foreign");
    let mut raw = Raw::connect(s.port);
    raw.set(&lease_key(&res), 0, 0, b"someone else's data");
    for args in [
        &["acquire", "-n", &res][..],
        &["current", &res],
        &["run", &res, "--", "true"],
    ] {
        let o = lockrun(&env, &up, args);
        assert_fails_last(&o, 65, "is not a lockrun lease");
        assert!(stderr(&o).contains(&lease_key(&res)), "{}", stderr(&o));
    }
    assert_eq!(
        raw.get_text(&lease_key(&res)).as_deref(),
        Some("someone else's data")
    );
    // A fencing counter that is not a number: damage (65), and the record the acquire added
    // before drawing its token is given back, not left holding the resource for its TTL under
    // an id nobody was given (review).
    let res = resource("bad-counter");
    let counter = lease_key(&res).replacen("lease:", "token:", 1);
    raw.set(&counter, 0, 0, b"hello");
    assert_fails(
        &lockrun(&env, &up, &["acquire", &res]),
        65,
        "the fencing counter is not a number",
    );
    assert_fails(&lockrun(&env, &up, &["current", &res]), 1, "is not held");

    // memcached cannot express a TTL of 30 days or more.
    let res = resource("month");
    let o = lockrun(&env, &up, &["acquire", "--ttl", "30d", &res]);
    assert_fails(&o, 78, "must be less than 30 days");
    assert!(raw.get(&lease_key(&res)).is_none());
    let o = lockrun(&env, &up, &["acquire", "--ttl", "29d", &res]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    assert_fails(
        &lockrun(&env, &up, &["renew", "--ttl", "31d", &res, &id]),
        78,
        "too long for memcached",
    );
    let o = lockrun(&env, &up, &["release", &res, &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn doctor_warns_about_eviction_and_list_says_it_cannot() {
    let s = mc::memcached();
    let (env, u) = (Env::new(), mc::url(s));
    let o = lockrun(&env, &u, &["doctor"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("ok    round trips"), "{out}");
    assert!(out.contains("warn  this backend may evict a lock"), "{out}");
    let o = lockrun(&env, &u, &["list"]);
    assert_fails(&o, 78, "cannot list");
    // The same answer with no server there: it is known from the URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = lockrun(&env, &format!("memcached://127.0.0.1:{port}"), &["list"]);
    assert_fails(&o, 78, "cannot list");
}

/// An acquire whose connection stalls: lockrun gives up after `command_timeout`, its give-back
/// on a new connection finds nothing to free, and the `add` still reaches the server afterwards.
/// The one-line message names that very lease and the command that frees it.
#[test]
fn an_unanswered_acquire_names_the_lease_it_may_leave() {
    let s = mc::memcached();
    let proxy = proxy::Proxy::start(s.port);
    let (env, res) = (Env::new(), resource("unanswered"));
    let u = format!("memcached://127.0.0.1:{}", proxy.port);
    proxy.freeze_on(format!("add {}", lease_key(&res)).as_bytes());
    let o = proxy::acquire_frozen(
        &proxy,
        || lockrun(&env, &u, &["acquire", "--ttl", "1h", &res]),
        "did not answer acquire within 5s",
    );
    let id = proxy::lease_named_in(&stderr(&o), &res);
    let id = id.as_str();
    proxy.thaw();
    let key = lease_key(&res);
    assert!(
        eventually(Duration::from_secs(5), || Raw::connect(s.port)
            .get_text(&key)
            .is_some_and(|r| r.contains(&format!("\"id\":\"{id}\"")))),
        "the late acquire did not leave lease {id}"
    );
    // The command in the message frees it.
    let direct = mc::url(s);
    let o = lockrun(&env, &direct, &["release", &res, id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_fails(
        &lockrun(&env, &direct, &["current", &res]),
        1,
        "is not held",
    );
}

/// A record taken over (seen unchanged for its TTL) whose fencing counter memcached evicted:
/// the counter starts again above the record's token, not at 0.
#[test]
fn an_evicted_counter_starts_again_above_the_record_taken_over() {
    let s = mc::memcached();
    let (env, u, res) = (Env::new(), mc::url(s), resource("floor"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // A holder that stopped renewing (its stored expiry an hour ahead, a 1 s TTL): memcached
    // keeps the key (no exptime), and only the clock-free rule takes it over.
    let record = serde_json::json!({
        "lockrun": 1, "resource": res, "id": "0000000000000000000000000000dead",
        "principal": "gone@elsewhere", "token": 41, "acquired_ms": now,
        "expires_ms": now + 3_600_000, "ttl_ms": 1000,
    });
    let mut raw = Raw::connect(s.port);
    raw.set(&lease_key(&res), 19538, 0, record.to_string().as_bytes());
    raw.delete(&format!("lockrun:token:{res}"));
    let o = lockrun(&env, &u, &["-q", "acquire", "-w", "10s", "--json", &res]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["fencing_token"].as_u64(), Some(42), "{json}");
}
