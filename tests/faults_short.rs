//! The fault-injection safety suite, short version (runs in CI through `./scripts/test`; the long
//! version is `scripts/faults-long`, see RELIABILITY.md). Every test runs the real binary against
//! a real backend server started for it, and injects real faults: SIGKILL and SIGSTOP of holders,
//! SIGSTOP and crash-restarts of the server (for the Kubernetes stand-in, its paused mode and
//! restart). The engine is in `tests/faults/`.
#![cfg(all(
    feature = "redis",
    feature = "postgres",
    feature = "etcd",
    feature = "dynamodb",
    feature = "memcached",
    feature = "kubernetes"
))]

mod common;
mod faults;

use std::time::Duration;

use faults::chaos::{self, Config};
use faults::proc::Rng;
use faults::target::{Kind, Target};
use faults::trials;

/// N workers on one resource under every kind of fault the backend allows (TTL 2 s; the long
/// version runs minutes per backend with TTL 3 s).
fn chaos_run(kind: Kind, secs: u64) {
    chaos_run_with(kind, secs, &[]);
}

fn chaos_run_with(kind: Kind, secs: u64, run_args: &[&str]) {
    let target = Target::start(kind);
    let mut cfg = Config::short(secs);
    cfg.run_args = run_args.iter().map(|a| a.to_string()).collect();
    if run_args.contains(&"--fair") {
        // A place left by a waiter that could not reach the server (see `Config::fault_lingers`).
        cfg.fault_lingers = Duration::from_secs(11);
    }
    cfg.ttl = Duration::from_secs(2);
    cfg.pause_for = cfg.ttl * 2;
    cfg.stop_for = cfg.ttl + Duration::from_secs(1);
    let report = chaos::run(&target, &cfg);
    eprintln!("{report}");
    report.assert_safe();
    assert!(
        report.covers_all_faults(kind),
        "not every kind of fault was injected:\n{report}"
    );
}

#[test]
fn chaos_file() {
    chaos_run(Kind::File, 20);
}

#[test]
fn chaos_redis() {
    chaos_run(Kind::Redis, 26);
}

#[test]
fn chaos_postgres() {
    chaos_run(Kind::Postgres, 26);
}

#[test]
fn chaos_etcd() {
    chaos_run(Kind::Etcd, 26);
}

/// The same with first-come, first-served waiting: waiters queue in etcd, the first in line
/// holds a lock lease granted ahead, and a stopped or killed waiter's place expires.
#[test]
fn chaos_etcd_fair() {
    chaos_run_with(Kind::Etcd, 26, &["--fair"]);
}

#[test]
fn chaos_dynamodb() {
    chaos_run(Kind::Dynamodb, 20);
}

#[test]
fn chaos_memcached() {
    chaos_run(Kind::Memcached, 20);
}

#[test]
fn chaos_kubernetes() {
    chaos_run(Kind::Kubernetes, 20);
}

/// `kill -9` of a holding lockrun: its command's tree (`sh -c` and its child) is gone at once,
/// and the waiter gets the lease within TTL + 1 s of the kill (TTL + 2 s where waiters poll, see
/// `Kind::takeover_bound`), but not before it could expire.
fn kill9(kind: Kind) {
    let target = Target::start(kind);
    let ttl = Duration::from_secs(3);
    let t = trials::kill9(&target, ttl);
    eprintln!("{}: {t:?}", kind.name());
    assert!(t.survivors.is_empty(), "survivors: {t:?}");
    assert!(t.tree_gone_ms.is_some_and(|g| g < 1000.0), "{t:?}");
    let bound = kind.takeover_bound(ttl).as_secs_f64() * 1e3;
    assert!(t.takeover_ms <= bound, "{t:?}");
    assert!(
        t.after_expiry_ms > 0.0,
        "the waiter started before the lease could expire: {t:?}"
    );
}

#[test]
fn kill9_file() {
    kill9(Kind::File);
}

#[test]
fn kill9_redis() {
    kill9(Kind::Redis);
}

#[test]
fn kill9_postgres() {
    kill9(Kind::Postgres);
}

#[test]
fn kill9_etcd() {
    kill9(Kind::Etcd);
}

#[test]
fn kill9_dynamodb() {
    kill9(Kind::Dynamodb);
}

#[test]
fn kill9_memcached() {
    kill9(Kind::Memcached);
}

#[test]
fn kill9_kubernetes() {
    kill9(Kind::Kubernetes);
}

/// SIGSTOP of a holding lockrun for longer than the TTL: the command is dead before the lease
/// could expire (not merely when lockrun resumes), lockrun exits 124 when it resumes, and the
/// waiter starts only after the command died.
fn stopped_lockrun(kind: Kind) {
    let target = Target::start(kind);
    let ttl = Duration::from_secs(2);
    let t = trials::stopped_lockrun(&target, ttl, ttl * 2);
    eprintln!("{}: {t:?}", kind.name());
    assert_eq!(t.exit, Some(124), "{t:?}");
    assert!(t.margin_ms.is_some_and(|m| m > 0.0), "{t:?}");
    assert_eq!(t.ticks_after_expiry, 0, "{t:?}");
    assert!(t.waiter_after_death_ms.is_some_and(|w| w > 0.0), "{t:?}");
    assert!(t.exit_after_cont_ms < 2000.0, "{t:?}");
}

#[test]
fn stopped_lockrun_file() {
    stopped_lockrun(Kind::File);
}

#[test]
fn stopped_lockrun_redis() {
    stopped_lockrun(Kind::Redis);
}

#[test]
fn stopped_lockrun_postgres() {
    stopped_lockrun(Kind::Postgres);
}

#[test]
fn stopped_lockrun_etcd() {
    stopped_lockrun(Kind::Etcd);
}

#[test]
fn stopped_lockrun_dynamodb() {
    stopped_lockrun(Kind::Dynamodb);
}

#[test]
fn stopped_lockrun_memcached() {
    stopped_lockrun(Kind::Memcached);
}

#[test]
fn stopped_lockrun_kubernetes() {
    stopped_lockrun(Kind::Kubernetes);
}

/// The server paused for twice the TTL while `run` holds a lease: the command dies before the
/// server could let anyone else in. One trial with a command that obeys TERM, one with a command
/// that ignores it (killed at the deadline). The long version runs 20 trials with TTL 5 s and a
/// 20 s pause per backend.
fn server_pause(kind: Kind) {
    let target = Target::start(kind);
    let ttl = Duration::from_secs(2);
    let (mut rng, seed) = Rng::from_entropy();
    for ignores_term in [false, true] {
        let t = trials::server_pause(&target, ttl, ttl * 2, ignores_term, &mut rng);
        eprintln!("{} (seed {seed}): {t:?}", kind.name());
        assert!(t.margin_ms() > 0.0, "{t:?}");
        assert_eq!(t.exit, Some(124), "{t:?}");
    }
}

#[test]
fn server_pause_redis() {
    server_pause(Kind::Redis);
}

#[test]
fn server_pause_postgres() {
    server_pause(Kind::Postgres);
}

#[test]
fn server_pause_etcd() {
    server_pause(Kind::Etcd);
}

#[test]
fn server_pause_dynamodb() {
    server_pause(Kind::Dynamodb);
}

#[test]
fn server_pause_memcached() {
    server_pause(Kind::Memcached);
}

#[test]
fn server_pause_kubernetes() {
    server_pause(Kind::Kubernetes);
}
