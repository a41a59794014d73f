//! The real binary against the Kubernetes API stand-in (`common/k8s.rs`): the verb cycle, the
//! Lease as `kubectl get lease -o yaml` would show it, a Lease overwritten while `run` runs,
//! resource names that need a hash, and bad input.
#![cfg(feature = "kubernetes")]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::k8s::{StandIn, NAMESPACE, TOKEN};
use common::{assert_fails, eventually, stderr, stdout, token_of, Env};
use serde_json::json;

/// lockrun with `url` as its backend and `kubeconfig` as KUBECONFIG (none: unset), and no
/// in-cluster or proxy environment.
fn lockrun(env: &Env, url: &str, kubeconfig: Option<&Path>) -> Command {
    let mut c = env.cmd();
    c.env("LOCKRUN_BACKEND", url);
    for var in [
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "HTTPS_PROXY",
        "https_proxy",
        "KUBECONFIG",
    ] {
        c.env_remove(var);
    }
    if let Some(path) = kubeconfig {
        c.env("KUBECONFIG", path);
    }
    c
}

/// A stand-in and an environment whose KUBECONFIG points at it.
struct Setup {
    server: StandIn,
    env: Env,
}

impl Setup {
    fn new() -> Setup {
        let setup = Setup {
            server: StandIn::start(),
            env: Env::new(),
        };
        setup.server.write_kubeconfig(setup.env.path(), NAMESPACE);
        setup
    }

    fn cmd(&self, url: &str) -> Command {
        lockrun(&self.env, url, Some(&self.env.file("kubeconfig")))
    }

    fn run(&self, url: &str, args: &[&str]) -> Output {
        self.cmd(url).args(args).output().expect("spawn lockrun")
    }

    fn lease(&self, resource: &str) -> serde_json::Value {
        self.server
            .lease_of(NAMESPACE, resource)
            .unwrap_or_else(|| panic!("no Lease for {resource:?}"))
    }
}

const URL: &str = "kubernetes://locks";

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    stdout(o)
}

#[test]
fn round_trip_with_increasing_tokens() {
    let s = Setup::new();
    let id = ok(&s.run(URL, &["acquire", "--ttl", "30s", "res"]));
    let id = id.trim();
    assert_eq!(id.len(), 32, "{id}");
    let cur = ok(&s.run("k8s://locks", &["current", "res"]));
    assert!(
        cur.contains(id) && cur.contains("fencing_token: 1"),
        "{cur}"
    );
    ok(&s.run(URL, &["is-held", "res", id]));
    let o = s.run(URL, &["-n", "res", "--", "true"]);
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    let renewed = ok(&s.run(URL, &["renew", "--json", "--ttl", "2m", "res", id]));
    assert_eq!(token_of(&renewed), 1);
    ok(&s.run(URL, &["release", "res", id]));
    assert_eq!(s.run(URL, &["release", "res", id]).status.code(), Some(1));
    assert_eq!(s.run(URL, &["is-held", "res", id]).status.code(), Some(1));
    assert_eq!(s.run(URL, &["current", "res"]).status.code(), Some(1));
    // The context's namespace when the URL names none.
    let out = ok(&s.run(
        "kubernetes://",
        &["-n", "res", "--", "sh", "-c", "echo $LOCKRUN_FENCING_TOKEN"],
    ));
    assert_eq!(out.trim(), "2");
    let json = ok(&s.run(URL, &["acquire", "--json", "res"]));
    assert_eq!(token_of(&json), 3);
    let doctor = ok(&s.run(URL, &["doctor"]));
    assert!(
        doctor.contains("fencing tokens strictly increasing, expiry by lockrun's clocks")
            && doctor.contains("ok    round trips"),
        "{doctor}"
    );
    s.server.assert_no_unknown_requests();
}

/// What `kubectl get lease lockrun-deploy-prod -o yaml` shows: the client-go fields, filled in.
#[test]
fn the_lease_reads_like_a_leader_election_record() {
    let s = Setup::new();
    let id = ok(&s.run(
        URL,
        &["acquire", "-p", "ci@build-7", "--ttl", "90s", "deploy-prod"],
    ));
    let id = id.trim();
    let lease = s
        .server
        .lease(NAMESPACE, "lockrun-deploy-prod")
        .expect("named as is");
    let spec = &lease["spec"];
    assert_eq!(spec["holderIdentity"], "ci@build-7");
    assert_eq!(spec["leaseDurationSeconds"], 90);
    assert_eq!(spec["leaseTransitions"], 1);
    let acquired = spec["acquireTime"]
        .as_str()
        .expect("acquireTime")
        .to_owned();
    assert_eq!(spec["renewTime"], acquired.as_str());
    assert!(humantime::parse_rfc3339(&acquired).is_ok(), "{acquired}");
    let notes = &lease["metadata"]["annotations"];
    assert_eq!(notes["lockrun.dev/lease-id"], id);
    assert_eq!(notes["lockrun.dev/resource"], "deploy-prod");
    assert_eq!(
        lease["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "lockrun"
    );
    std::thread::sleep(Duration::from_millis(20));
    ok(&s.run(URL, &["renew", "--ttl", "10m", "deploy-prod", id]));
    let spec = s.lease("deploy-prod")["spec"].clone();
    assert_eq!(spec["leaseDurationSeconds"], 600);
    assert_eq!(spec["acquireTime"], acquired.as_str());
    assert_ne!(spec["renewTime"], acquired.as_str());
    ok(&s.run(URL, &["release", "deploy-prod", id]));
    let lease = s.lease("deploy-prod");
    assert_eq!(lease["spec"]["holderIdentity"], "");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert!(lease["metadata"]["annotations"]["lockrun.dev/lease-id"].is_null());
    ok(&s.run(URL, &["acquire", "deploy-prod"]));
    assert_eq!(s.lease("deploy-prod")["spec"]["leaseTransitions"], 2);
}

/// Another client overwrites the Lease while `run` holds it; the next renewal finds it held by
/// someone else, so lockrun stops the command and exits 124, leaving the Lease alone.
#[test]
fn overwritten_lease_stops_the_command_with_124() {
    let s = Setup::new();
    let child = s
        .cmd(URL)
        .args(["--ttl", "3s", "res", "--", "sleep", "60"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let held = eventually(Duration::from_secs(10), || {
        s.server
            .lease(NAMESPACE, "lockrun-res")
            .is_some_and(|l| l["spec"]["holderIdentity"] != "")
    });
    assert!(held, "the run never acquired");
    let other = s.server.overwrite(NAMESPACE, "lockrun-res", |l| {
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
        l["metadata"]["annotations"] = json!({});
        l["spec"] = json!({"holderIdentity": "intruder-0_9f3e", "leaseDurationSeconds": 3600,
                           "acquireTime": now, "renewTime": now, "leaseTransitions": 2});
    });
    let overwritten = Instant::now();
    let o = child.wait_with_output().expect("wait");
    assert_fails(&o, 124, "lost the lease");
    assert!(
        overwritten.elapsed() < Duration::from_secs(5),
        "{:?}",
        overwritten.elapsed()
    );
    assert_eq!(s.server.lease(NAMESPACE, "lockrun-res"), Some(other));
    let cur = ok(&s.run(URL, &["current", "res"]));
    assert!(cur.contains("intruder-0_9f3e"), "{cur}");
}

/// Names that are not valid object names map to valid, distinct names that keep the resource
/// in an annotation.
#[test]
fn awkward_resource_names_map_to_valid_distinct_names() {
    let s = Setup::new();
    let resources = [
        "Deploy/Prod".to_owned(),
        "deploy/prod".to_owned(),
        "deploy-prod".to_owned(),
        "UPPER".to_owned(),
        "upper".to_owned(),
        "with space".to_owned(),
        "ünï©ødé 锁".to_owned(),
        "x".repeat(255),
        "X".repeat(255),
        format!("{}y", "x".repeat(254)),
    ];
    for r in &resources {
        ok(&s.run(URL, &["acquire", "--ttl", "1m", r]));
    }
    let leases = s.server.leases(NAMESPACE);
    assert_eq!(leases.len(), resources.len());
    let mut names = std::collections::HashSet::new();
    for r in &resources {
        let lease = s.lease(r);
        let name = lease["metadata"]["name"].as_str().expect("name").to_owned();
        assert!(common::k8s::subdomain(&name), "{r:?} -> {name:?}");
        assert!(names.insert(name.clone()), "{name} twice");
        assert!(s.run(URL, &["current", r]).status.success(), "{r:?}");
    }
    assert!(names.contains("lockrun-deploy-prod") && names.contains("lockrun-upper"));
}

#[test]
fn unreachable_or_hung_api_server_is_unavailable() {
    let env = Env::new();
    let port = common::server::free_port();
    let kc = env.file("kubeconfig");
    let server = format!("http://127.0.0.1:{port}");
    std::fs::write(
        &kc,
        common::k8s::kubeconfig(&[("c", &server, TOKEN, "locks")], "c"),
    )
    .unwrap();
    for args in [&["current", "res"][..], &["acquire", "-n", "res"]] {
        let o = lockrun(&env, URL, Some(&kc)).args(args).output().unwrap();
        assert_fails(
            &o,
            69,
            &format!("cannot reach the Kubernetes API at {server}"),
        );
        // Refused: nothing was sent, so no lease can be granted late.
        assert!(!stderr(&o).contains("may hold"), "{}", stderr(&o));
    }
    // Accepts connections but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port());
    std::fs::write(
        &kc,
        common::k8s::kubeconfig(&[("c", &server, TOKEN, "locks")], "c"),
    )
    .unwrap();
    let start = Instant::now();
    let url = format!("{URL}?command_timeout=1s");
    let o = lockrun(&env, &url, Some(&kc))
        .args(["acquire", "-n", "res"])
        .output()
        .unwrap();
    assert_fails(&o, 69, "did not answer in time");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn rejected_credentials_and_missing_namespace_are_config_errors() {
    let s = Setup::new();
    let o = s.run(
        &format!("{URL}?context=wrong-token"),
        &["acquire", "-n", "res"],
    );
    assert_fails(&o, 78, "rejected the credentials (401 Unauthorized)");
    assert!(!stderr(&o).contains("not-the-token"), "{}", stderr(&o));
    // The same through a [backend.NAME] section.
    let config = s.env.file("config.toml");
    std::fs::write(
        &config,
        format!("[backend.k]\nurl = \"{URL}\"\ncontext = \"wrong-token\"\n"),
    )
    .unwrap();
    let o = s
        .cmd("k")
        .env("LOCKRUN_CONFIG", &config)
        .args(["current", "res"])
        .output()
        .unwrap();
    assert_fails(&o, 78, "rejected the credentials");
    let o = s.run("kubernetes://nope", &["acquire", "-n", "res"]);
    assert_fails(&o, 78, "namespace 'nope' does not exist");
    // Reads do not check the namespace, as the API server does not: nothing is held there.
    assert_eq!(
        s.run("kubernetes://nope", &["current", "res"])
            .status
            .code(),
        Some(1)
    );
    let o = s.run(&format!("{URL}?context=elsewhere"), &["current", "res"]);
    assert_fails(&o, 78, "the kubeconfig has no context 'elsewhere'");
}

#[test]
fn missing_configuration_and_bad_urls_are_config_errors() {
    let env = Env::new();
    let o = lockrun(&env, URL, None)
        .args(["current", "res"])
        .output()
        .unwrap();
    assert_fails(&o, 78, "no Kubernetes configuration");
    assert!(stderr(&o).contains("set KUBECONFIG"), "{}", stderr(&o));
    let missing = env.file("no-such-kubeconfig");
    let o = lockrun(&env, URL, Some(&missing))
        .args(["current", "res"])
        .output()
        .unwrap();
    assert_fails(&o, 78, "cannot read the kubeconfig");
    std::fs::write(env.file("garbage"), "clusters: [oops").unwrap();
    let o = lockrun(&env, URL, Some(&env.file("garbage")))
        .args(["current", "res"])
        .output()
        .unwrap();
    assert_fails(&o, 78, "cannot load the kubeconfig");
    for (url, needle) in [
        ("kubernetes://Bad_NS", "not a valid namespace"),
        ("kubernetes://locks/leases", "only a namespace"),
        ("k8s://locks?bogus=1", "unknown parameter 'bogus'"),
        (
            "kubernetes://user:hunter2@locks",
            "credentials do not belong",
        ),
        ("kubernetes://locks?name_prefix=Big-", "name_prefix"),
    ] {
        let o = lockrun(&env, url, None)
            .args(["current", "res"])
            .output()
            .unwrap();
        assert_fails(&o, 78, needle);
        assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
    }
}

#[test]
fn list_shows_live_leases() {
    let s = Setup::new();
    ok(&s.run(URL, &["-p", "alice", "acquire", "Deploy/Prod"]));
    let id = ok(&s.run(URL, &["acquire", "gone"]));
    ok(&s.run(URL, &["release", "gone", id.trim()]));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&s.run(URL, &["list", "-f", "json"]))).unwrap();
    let all = json.as_array().unwrap();
    assert_eq!(all.len(), 1, "{json}");
    assert_eq!(
        all[0]["resource"], "Deploy/Prod",
        "the real name, not the object name"
    );
    assert_eq!(all[0]["principal"], "alice");
}
