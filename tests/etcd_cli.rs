//! The real binary against a real etcd server: the verbs, `run`, waiting, and bad input.
#![cfg(feature = "etcd")]

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::etcd::{block_on, client, etcd, lease_count, start_etcd, start_etcd_with_auth, url};
use common::server::{free_port, prefix, Server};
use common::*;

/// A test environment whose backend is an etcd URL.
struct EtcdEnv {
    env: Env,
    url: String,
}

impl EtcdEnv {
    fn new(server: &Server) -> EtcdEnv {
        EtcdEnv::with_url(url(server))
    }

    fn with_url(url: String) -> EtcdEnv {
        EtcdEnv {
            env: Env::new(),
            url,
        }
    }

    fn cmd(&self) -> Command {
        let mut c = self.env.cmd();
        c.env("LOCKRUN_BACKEND", &self.url);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn lockrun")
    }

    fn acquire(&self, args: &[&str]) -> String {
        let o = self.run(&[&["acquire"], args].concat());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o).trim().to_owned()
    }
}

/// The etcd lease of a resource's key (default prefix), and its granted TTL.
fn key_lease(server: &Server, resource: &str) -> (i64, i64) {
    block_on(async {
        let mut c = client(server).await;
        let got = c
            .get(format!("lockrun/{resource}"), None)
            .await
            .expect("get");
        let lease = got.kvs().first().expect("the key exists").lease();
        let ttl = c.lease_time_to_live(lease, None).await.expect("ttl");
        (lease, ttl.granted_ttl())
    })
}

fn leases(server: &Server) -> usize {
    block_on(async { lease_count(&mut client(server).await).await })
}

#[test]
fn round_trip_across_processes() {
    let server = etcd();
    let e = EtcdEnv::new(server);
    let res = format!("{}/db-migration", prefix());
    let id = e.acquire(&["-p", "alice@db1", "--ttl", "30s", &res]);
    assert_eq!(id.len(), 32, "only the id on stdout: {id:?}");
    assert_eq!(key_lease(server, &res).1, 30);

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&e.run(&["current", "-f", "json", &res]))).unwrap();
    assert_eq!(json["lease_id"], id.as_str());
    assert_eq!(json["principal"], "alice@db1");
    assert!(json["fencing_token"].as_u64().unwrap() > 0);
    assert_eq!(json["ttl_seconds"], 30.0);
    assert_eq!(e.run(&["is-held", &res, &id]).status.code(), Some(0));

    // renew --ttl really changes the server-side TTL (stormlock ignored it).
    let o = e.run(&["renew", &res, &id, "--ttl", "2m"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(key_lease(server, &res).1, 120);
    let again: serde_json::Value =
        serde_json::from_str(&stdout(&e.run(&["current", "-f", "json", &res]))).unwrap();
    assert_eq!(again["lease_id"], id.as_str());
    assert_eq!(again["fencing_token"], json["fencing_token"]);
    assert_eq!(e.run(&["is-held", &res, &id]).status.code(), Some(0));

    let o = e.run(&["release", &res, &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_fails(&e.run(&["is-held", &res, &id]), 1, "does not hold");
    assert_fails(&e.run(&["renew", &res, &id]), 1, "");
    assert_fails(&e.run(&["release", &res, &id]), 1, "");
    assert_eq!(e.run(&["current", &res]).status.code(), Some(1));
}

#[test]
fn failed_acquires_leak_no_etcd_leases() {
    let server = start_etcd();
    let e = EtcdEnv::new(&server);
    let id = e.acquire(&["--ttl", "1h", "busy"]);
    let before = leases(&server);
    for _ in 0..5 {
        assert_fails(&e.run(&["acquire", "-n", "busy"]), 75, "busy");
        assert_fails(&e.run(&["-n", "busy", "--", "true"]), 75, "busy");
    }
    // Waiters keep the etcd lease of their first failed attempt for the next ones, and give it
    // back when they stop waiting.
    for wait in ["-w", "--fair -w"] {
        let mut args: Vec<&str> = wait.split(' ').collect();
        args.extend(["700ms", "-q", "busy", "--", "true"]);
        assert_eq!(e.run(&args).status.code(), Some(75));
    }
    assert_eq!(
        leases(&server),
        before,
        "failed acquires leaked etcd leases"
    );
    assert_eq!(e.run(&["release", "busy", &id]).status.code(), Some(0));
    assert_eq!(leases(&server), before - 1);
}

/// A connection that stops answering while the server answers new ones: the renewal that
/// stalled on it is given up at the heartbeat's limit, and the next one connects anew, so the
/// command runs to its end. (Pausing the server cannot show this.)
#[test]
fn a_run_replaces_a_connection_that_stops_answering() {
    let server = etcd();
    let proxy = proxy::Proxy::start(server.port);
    let e = EtcdEnv::with_url(format!("etcd://127.0.0.1:{}", proxy.port));
    let res = format!("{}-half-open", prefix());
    let mut run = e.cmd();
    run.args(["run", "--ttl", "6s", "--heartbeat", "1s", &res]);
    let (o, before) = proxy::run_through_a_freeze(&proxy, run, e.env.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(proxy.connections() > before, "a new connection was opened");
}

/// A waiter whose store stops answering mid-wait ends within its documented bound: `-w`, plus
/// one attempt's `command_timeout` (5 s), plus 1 s to give back and leave the line. A fair
/// waiter used to read the holder for its message and leave the line (and close its watch)
/// with a full `command_timeout` for each step; a waiter's subscription, made after it named
/// the holder, was not bounded by `-w` at all.
#[test]
fn a_fair_wait_cut_off_midway_ends_within_its_bound() {
    use std::io::BufRead;
    let server = start_etcd();
    let proxy = proxy::Proxy::start(server.port);
    let direct = EtcdEnv::new(&server);
    let e = EtcdEnv::with_url(format!("etcd://127.0.0.1:{}", proxy.port));
    for fair in [true, false] {
        let res = format!("{}-cut-{fair}", prefix());
        let id = direct.acquire(&["--ttl", "1h", &res]);
        let mut args = vec!["run", "-w", "3s", &res, "--", "true"];
        if fair {
            args.insert(1, "--fair");
        }
        let started = Instant::now();
        let mut child = e.cmd().args(&args).stderr(Stdio::piped()).spawn().unwrap();
        // Cut off once it waits (it has named the holder): no request of the wait is out then.
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.contains("waiting for"), "fair {fair}: {first}");
        let deadline = started + Duration::from_secs(3);
        proxy.freeze_all();
        let status = child.wait().unwrap();
        let over = Instant::now().saturating_duration_since(deadline);
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
        proxy.thaw();
        assert!(
            matches!(status.code(), Some(69 | 75)),
            "fair {fair}: {status:?} {rest}"
        );
        // The attempt made at the deadline may take its `command_timeout` (5 s), then 1 s to
        // give back and leave the line. (A fair waiter took up to 10 s past `-w`; a racing
        // one whose subscription was unanswered 7 s, that subscription being unbounded.)
        let bound = Duration::from_millis(6700);
        assert!(over < bound, "fair {fair}: ended {over:?} past -w: {rest}");
        assert_eq!(direct.run(&["release", &res, &id]).status.code(), Some(0));
    }
}

/// An acquire whose connection stalls: one stderr line, after `command_timeout` and a bounded
/// give-back, which revokes the attempt's etcd lease on a new connection. The transaction,
/// delivered late, then cannot grant anything, and no etcd lease is left behind.
#[test]
fn an_unanswered_acquire_is_one_line_and_leaves_nothing() {
    let server = start_etcd();
    let proxy = proxy::Proxy::start(server.port);
    let e = EtcdEnv::with_url(format!("etcd://127.0.0.1:{}", proxy.port));
    let res = format!("{}-unanswered", prefix());
    let before = leases(&server);
    proxy.freeze_on(res.as_bytes());
    let o = proxy::acquire_frozen(
        &proxy,
        || e.run(&["acquire", "--ttl", "1h", &res]),
        "no answer within 5s",
    );
    // The give-back was confirmed (the etcd lease is revoked): no lease to name.
    assert!(!stderr(&o).contains("lockrun release"), "{}", stderr(&o));
    proxy.thaw();
    std::thread::sleep(Duration::from_millis(500));
    let direct = EtcdEnv::new(&server);
    assert_fails(&direct.run(&["current", &res]), 1, "is not held");
    assert_eq!(leases(&server), before, "an etcd lease was left behind");
}

/// An acquire that stalls with the whole server (nothing answers, new connections neither):
/// still one stderr line, after `command_timeout` plus the bounded give-back, naming the lease
/// the late transaction may grant. (The etcd lease used to be revoked first with a full
/// `command_timeout` of its own and a warning line: 11 s and two lines.)
#[test]
fn an_acquire_stalled_with_the_whole_server_is_one_line_in_bounded_time() {
    let server = start_etcd();
    let proxy = proxy::Proxy::start(server.port);
    let e = EtcdEnv::with_url(format!("etcd://127.0.0.1:{}", proxy.port));
    let res = format!("{}-stalled", prefix());
    proxy.freeze_all_on(res.as_bytes());
    let o = proxy::acquire_frozen(
        &proxy,
        || e.run(&["acquire", "--ttl", "1h", &res]),
        "no answer within 5s",
    );
    proxy.thaw();
    proxy::lease_named_in(&stderr(&o), &res);
}

/// A server stopped before the acquire: the etcd lease grant, which comes before the
/// transaction that writes the key, gets no answer. Even if etcd applied it late, that etcd
/// lease holds no resource, so the one line names no lockrun lease to release.
#[test]
fn an_acquire_whose_lease_grant_is_unanswered_names_no_lease() {
    let server = start_etcd();
    let e = EtcdEnv::new(&server);
    let res = format!("{}-grant", prefix());
    server.pause();
    let o = e.run(&["acquire", "-n", &res]);
    server.resume();
    assert_fails(&o, 69, "");
    assert!(!stderr(&o).contains("lockrun release"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("may hold"), "{}", stderr(&o));
}

/// A `release` or `renew` whose first read gets no answer (a stopped server) has sent nothing
/// that changes the lease: the one line says it cannot reach the server, not that the lease
/// "may have been released or not", and the lease is as it was.
#[test]
fn a_release_or_renew_whose_read_is_unanswered_changed_nothing() {
    let server = start_etcd();
    let e = EtcdEnv::new(&server);
    let res = format!("{}-unread", prefix());
    let id = e.acquire(&["--ttl", "1h", &res]);
    server.pause();
    let released = e.run(&["release", &res, &id]);
    let renewed = e.run(&["renew", &res, &id]);
    server.resume();
    for (o, done) in [(released, "released"), (renewed, "renewed")] {
        assert_fails(&o, 69, "no answer within");
        assert!(
            !stderr(&o).contains(&format!("may have been {done}")),
            "{}",
            stderr(&o)
        );
    }
    let o = e.run(&["is-held", &res, &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// A waiter keeps the etcd lease of its first failed attempt for the next ones. When the server
/// is paused for longer than that lease's TTL, the lease expires, and the next attempt is
/// refused for it: the waiter takes a new one and gets the resource. It used to end with exit
/// 70, "requested lease not found" (found by review).
#[test]
fn a_waiter_whose_kept_lease_expired_in_a_pause_still_acquires() {
    let server = start_etcd();
    let e = EtcdEnv::new(&server);
    let res = format!("{}-lapsed", prefix());
    let holder = e
        .cmd()
        .args(["-q", "run", "--ttl", "3s", &res, "--", "sleep", "30"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        e.run(&["current", &res]).status.code() == Some(0)
    }));
    // Several waiters, each with a lease of its own granted ahead: whichever gets the
    // resource after the pause, the others must still get it in turn.
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            e.cmd()
                .args(["run", "--ttl", "3s", "-w", "60s", &res, "--", "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    server.pause();
    std::thread::sleep(Duration::from_secs(4));
    server.resume();
    assert_eq!(holder.wait_with_output().unwrap().status.code(), Some(124));
    for waiter in waiters {
        let o = waiter.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
}

#[test]
fn child_gets_the_create_revision_as_fencing_token() {
    let server = etcd();
    let e = EtcdEnv::new(server);
    let res = format!("{}/token", prefix());
    let o = e.run(&[
        &res,
        "--",
        "sh",
        "-c",
        "echo $LOCKRUN_FENCING_TOKEN $LOCKRUN_BACKEND",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let mut parts = out.split_whitespace();
    let first: u64 = parts.next().unwrap().parse().unwrap();
    assert_eq!(parts.next(), Some(e.url.as_str()));
    let o = e.run(&[&res, "--", "sh", "-c", "echo $LOCKRUN_FENCING_TOKEN"]);
    let second: u64 = stdout(&o).trim().parse().unwrap();
    assert!(second > first, "{first} then {second}");
}

/// The test: revoke the etcd lease while `run` holds it -> the command is stopped, 124.
#[test]
fn revoked_etcd_lease_stops_the_command() {
    let server = etcd();
    let e = EtcdEnv::new(server);
    let res = format!("{}/revoked", prefix());
    let pid_file = e.env.file("pid");
    let script = format!(
        "echo $$ > {}; while :; do sleep 0.02; done",
        pid_file.display()
    );
    let child = e
        .cmd()
        .args(["--ttl", "3s", &res, "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || read_pid(&pid_file).is_some()));
    let (lease, _) = key_lease(server, &res);
    block_on(async {
        client(server)
            .await
            .lease_revoke(lease)
            .await
            .expect("revoke")
    });
    let revoked = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 124, "lost the lease");
    assert!(
        revoked.elapsed() < Duration::from_secs(3),
        "{:?}",
        revoked.elapsed()
    );
    assert!(!alive(read_pid(&pid_file).unwrap()));
}

#[test]
fn waiter_is_woken_by_the_release() {
    let server = etcd();
    let e = EtcdEnv::new(server);
    let res = format!("{}/wait", prefix());
    let id = e.acquire(&["--ttl", "1m", &res]);
    let waiter = e
        .cmd()
        .args([&res, "--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(e.run(&["release", &res, &id]).status.code(), Some(0));
    let released = Instant::now();
    let o = waiter.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Woken by the watch, not by a poll (the safety poll is 5 s).
    assert!(
        released.elapsed() < Duration::from_millis(1000),
        "{:?}",
        released.elapsed()
    );
    assert!(stderr(&o).contains("held by"), "{}", stderr(&o));
}

#[test]
fn unreachable_endpoint_exits_69() {
    let e = EtcdEnv::with_url(format!("etcd://127.0.0.1:{}", free_port()));
    let t = Instant::now();
    let o = e.run(&["acquire", "res"]);
    assert_fails(&o, 69, "Connection refused");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Nothing was sent, so no lease can be granted late: no "may hold" hint.
    for args in [&["acquire", "-n", "res"][..], &["-n", "res", "--", "true"]] {
        let o = e.run(args);
        assert_fails(&o, 69, "Connection refused");
        assert!(!stderr(&o).contains("may hold"), "{}", stderr(&o));
    }
    assert_fails(&e.run(&["current", "res"]), 69, "connecting");
    // etcd needs nothing set up, but `init` still says when it cannot be reached.
    assert_fails(&e.run(&["init"]), 69, "connecting");
}

#[test]
fn bad_credentials_exit_78() {
    let server = start_etcd_with_auth(&[]);
    let port = server.port;
    let e = EtcdEnv::with_url(format!("etcd://root:wrong-pw@127.0.0.1:{port}"));
    let o = e.run(&["acquire", "res"]);
    assert_fails(&o, 78, "authentication failed");
    assert!(!stderr(&o).contains("wrong-pw"), "{}", stderr(&o));
    // No credentials at all against a server with auth enabled.
    assert_fails(
        &EtcdEnv::new(&server).run(&["acquire", "res"]),
        78,
        "user name is empty",
    );
    // The right password from the environment works.
    let e = EtcdEnv::with_url(format!("etcd://root@127.0.0.1:{port}"));
    let o = e
        .cmd()
        .env("LOCKRUN_ETCD_PASSWORD", common::etcd::ROOT_PASSWORD)
        .args(["acquire", "res"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// A user whose role may only read lockrun's keys: its acquire is refused (78), and the etcd
/// lease granted for that attempt is revoked, not left for its TTL (review: an hour per refused
/// `acquire`).
#[test]
fn a_refused_acquire_leaves_no_etcd_lease() {
    let server = start_etcd_with_auth(&[]);
    let port = server.port;
    block_on(async {
        let mut c = common::etcd::root_client(&server).await;
        c.user_add("reader", "reader-pw", None).await.unwrap();
        c.role_add("read-only").await.unwrap();
        c.role_grant_permission(
            "read-only",
            etcd_client::Permission::read("lockrun/").with_prefix(),
        )
        .await
        .unwrap();
        c.user_grant_role("reader", "read-only").await.unwrap();
    });
    let e = EtcdEnv::with_url(format!("etcd://reader:reader-pw@127.0.0.1:{port}"));
    for args in [
        &["acquire", "-n", "res"][..],
        &["-t", "5m", "res", "--", "true"],
    ] {
        assert_fails(&e.run(args), 78, "permission denied");
    }
    let leases = block_on(async {
        let mut c = common::etcd::root_client(&server).await;
        c.leases().await.unwrap().leases().len()
    });
    assert_eq!(leases, 0, "etcd leases left by refused acquires");
}

#[test]
fn bad_urls_and_settings_exit_78() {
    let port = etcd().port;
    let cases = [
        ("etcd://127.0.0.1:notaport", "invalid port"),
        ("etcd://127.0.0.1:1,,127.0.0.1:2", "empty host"),
        (
            &format!("etcd://127.0.0.1:{port}/some/path") as &str,
            "takes no path",
        ),
        (
            &format!("etcd://127.0.0.1:{port}?prefix=x"),
            "takes no path or parameters",
        ),
        (&format!("etcd://user@127.0.0.1:{port}"), "has no password"),
    ];
    for (u, needle) in cases {
        assert_fails(
            &EtcdEnv::with_url(u.to_owned()).run(&["acquire", "res"]),
            78,
            needle,
        );
    }
    let e = EtcdEnv::with_url("ci".into());
    let config = e.env.file("config.toml");
    let write = |body: &str| std::fs::write(&config, body).unwrap();
    let run = |args: &[&str]| {
        e.env
            .cmd()
            .arg("-c")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    write(&format!(
        "[backend.ci]\nurl = \"etcd://127.0.0.1:{port}\"\ncolour = \"red\"\n"
    ));
    assert_fails(
        &run(&["-b", "ci", "acquire", "res"]),
        78,
        "unknown key 'colour'",
    );
    write(&format!(
        "[backend.ci]\nurl = \"etcd+https://127.0.0.1:{port}\"\nca_file = \"/nonexistent/ca.pem\"\n"
    ));
    assert_fails(&run(&["-b", "ci", "acquire", "res"]), 78, "ca_file");
    // TLS against a plain-HTTP server is a configuration problem.
    let ca = e.env.file("ca.pem");
    std::fs::write(&ca, "").unwrap();
    write(&format!(
        "[backend.ci]\nurl = \"etcd+https://127.0.0.1:{port}\"\nca_file = \"{}\"\n",
        ca.display()
    ));
    assert_fails(&run(&["-b", "ci", "acquire", "res"]), 78, "TLS");
}

#[test]
fn a_foreign_key_is_corrupt_and_kept() {
    let server = etcd();
    let e = EtcdEnv::new(server);
    let res = format!("{}/foreign", prefix());
    let key = format!("lockrun/{res}");
    block_on(async {
        client(server)
            .await
            .put(key.clone(), "not ours", None)
            .await
            .expect("put")
    });
    assert_fails(
        &e.run(&["acquire", "-n", &res]),
        65,
        "does not hold a lockrun lease",
    );
    assert_fails(&e.run(&["current", &res]), 65, "will not use or overwrite");
    let value = block_on(async {
        client(server)
            .await
            .get(key, None)
            .await
            .expect("get")
            .kvs()[0]
            .value()
            .to_vec()
    });
    assert_eq!(value, b"not ours");
}

#[test]
fn tls_with_a_client_certificate() {
    let (server, certs) = common::etcd::start_etcd_tls();
    let e = EtcdEnv::with_url("tls".into());
    let config = e.env.file("config.toml");
    let run = |body: &str, args: &[&str]| {
        std::fs::write(&config, body).unwrap();
        e.env
            .cmd()
            .arg("-c")
            .arg(&config)
            .args(["-b", "tls"])
            .args(args)
            .output()
            .unwrap()
    };
    let url = format!("etcd+https://127.0.0.1:{}", server.port);
    let full = format!(
        "[backend.tls]\nurl = \"{url}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        certs.ca.display(),
        certs.cert.display(),
        certs.key.display()
    );
    let o = run(&full, &["acquire", "res"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    let o = run(&full, &["release", "res", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // No client certificate.
    let no_cert = format!(
        "[backend.tls]\nurl = \"{url}\"\nca_file = \"{}\"\n",
        certs.ca.display()
    );
    assert_fails(
        &run(&no_cert, &["acquire", "res"]),
        78,
        "client certificate",
    );
    // The system's roots do not trust the test CA.
    let no_ca = format!(
        "[backend.tls]\nurl = \"{url}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        certs.cert.display(),
        certs.key.display()
    );
    assert_fails(&run(&no_ca, &["acquire", "res"]), 78, "UnknownIssuer");
    // Plain HTTP against the TLS port.
    let plain = format!(
        "[backend.tls]\nurl = \"etcd://127.0.0.1:{}\"\n",
        server.port
    );
    assert_fails(&run(&plain, &["acquire", "res"]), 78, "expect TLS");
}

#[test]
fn list_shows_live_leases() {
    let e = EtcdEnv::new(etcd());
    let (a, b) = (format!("{}-a", prefix()), format!("{}-b", prefix()));
    e.acquire(&[&a]);
    let id = e.acquire(&[&b]);
    assert_eq!(e.run(&["release", &b, &id]).status.code(), Some(0));
    let o = e.run(&["list", "-f", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["resource"].as_str().unwrap())
        .collect();
    assert!(names.contains(&a.as_str()), "{names:?}");
    assert!(
        !names.contains(&b.as_str()),
        "released leases are not listed: {names:?}"
    );
}

/// How many waiters are in `resource`'s line (keys under the line's prefix).
fn in_line(server: &Server, resource: &str) -> i64 {
    block_on(async {
        let mut c = client(server).await;
        let line = format!("lockrun/\0queue\0{resource}\0");
        let got = c
            .get(
                line,
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            )
            .await
            .expect("get");
        got.count()
    })
}

/// Starts a `--fair` waiter that appends `tag` to `log` when it gets the lease, and waits until
/// it is in line.
fn fair_waiter(
    e: &EtcdEnv,
    server: &Server,
    res: &str,
    tag: &str,
    log: &std::path::Path,
    extra: &[&str],
) -> std::process::Child {
    let before = in_line(server, res);
    let script = format!("echo {tag} >> {}", log.display());
    let child = e
        .cmd()
        .args([&["run", "--fair"], extra, &[res, "--", "sh", "-c", &script]].concat())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || in_line(server, res) > before),
        "waiter {tag} never joined the line"
    );
    child
}

#[test]
fn fair_waiters_are_served_in_arrival_order() {
    let server = etcd();
    let e = EtcdEnv::new(server);
    let res = format!("{}/fair", prefix());
    let log = e.env.file("order");
    let id = e.acquire(&["--ttl", "1m", &res]);
    let tags = ["w1", "w2", "w3", "w4", "w5", "w6"];
    let waiters: Vec<_> = tags
        .iter()
        .map(|t| fair_waiter(&e, server, &res, t, &log, &[]))
        .collect();
    assert_eq!(e.run(&["release", &res, &id]).status.code(), Some(0));
    for w in waiters {
        let o = w.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let order = std::fs::read_to_string(&log).unwrap();
    assert_eq!(order.split_whitespace().collect::<Vec<_>>(), tags);
    assert_eq!(in_line(server, &res), 0, "every waiter left the line");
}

#[test]
fn a_fair_waiter_that_gives_up_leaves_the_line_at_once() {
    let server = etcd();
    let e = EtcdEnv::new(server);
    let res = format!("{}/fair-give-up", prefix());
    let log = e.env.file("order");
    let id = e.acquire(&["--ttl", "1m", &res]);
    let impatient = fair_waiter(&e, server, &res, "impatient", &log, &["-w", "1s"]);
    let patient = fair_waiter(&e, server, &res, "patient", &log, &[]);
    let o = impatient.wait_with_output().unwrap();
    assert_fails_last(&o, 75, "busy after waiting");
    assert!(
        eventually(Duration::from_secs(2), || in_line(server, &res) == 1),
        "the impatient waiter's place is gone"
    );
    assert_eq!(e.run(&["release", &res, &id]).status.code(), Some(0));
    let released = Instant::now();
    let o = patient.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        released.elapsed() < Duration::from_secs(2),
        "{:?}",
        released.elapsed()
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), "patient");
}

/// A waiter killed with -9 cannot leave the line; its place expires with its queue lease
/// (10 s), and the waiter behind it moves up.
#[test]
fn a_killed_fair_waiter_holds_up_the_line_only_until_its_place_expires() {
    let server = etcd();
    let e = EtcdEnv::new(server);
    let res = format!("{}/fair-killed", prefix());
    let log = e.env.file("order");
    let id = e.acquire(&["--ttl", "1m", &res]);
    let mut doomed = fair_waiter(&e, server, &res, "doomed", &log, &[]);
    let next = fair_waiter(&e, server, &res, "next", &log, &[]);
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let killed = Instant::now();
    assert_eq!(e.run(&["release", &res, &id]).status.code(), Some(0));
    let o = next.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let waited = killed.elapsed();
    assert!(waited < Duration::from_secs(17), "{waited:?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), "next");
    assert_eq!(in_line(server, &res), 0);
}

#[test]
fn fair_acquire_on_a_free_resource_and_no_leaked_places() {
    let server = start_etcd();
    let e = EtcdEnv::new(&server);
    let o = e.run(&["--fair", "free", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = e.acquire(&["--fair", "free"]);
    assert_eq!(in_line(&server, "free"), 0);
    assert_eq!(e.run(&["release", "free", &id]).status.code(), Some(0));
    // The places' own etcd leases are revoked (in the background) or expire within 10 s.
    assert!(
        eventually(Duration::from_secs(15), || leases(&server) == 0),
        "{} etcd leases left",
        leases(&server)
    );
}
