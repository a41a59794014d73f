//! The backend conformance suite against a real redis-server on a loopback port.
#![cfg(feature = "redis")]

mod common;

use std::process::Command;
use std::sync::Arc;

use common::server;
use futures_util::FutureExt;
use lockrun::backend::conformance::{Outcome, Suite};
use lockrun::backend::redis::Redis;
use lockrun::backend::{Backend, BackendUrl, Settings};

fn url(port: u16) -> BackendUrl {
    BackendUrl::parse(&format!("redis://127.0.0.1:{port}/0")).expect("url")
}

fn settings(key_prefix: &str) -> Settings {
    let mut t = toml::Table::new();
    t.insert("prefix".into(), toml::Value::String(key_prefix.to_owned()));
    Settings::new("conformance test", t)
}

/// `redis-cli` against the shared server; fails on any error reply.
fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.starts_with("ERR") || text.starts_with("WRONGTYPE") {
        return Err(format!("redis-cli {args:?}: {text}"));
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_passes_the_suite() {
    let port = server::redis().port;
    let prefix = server::prefix();
    let key_prefix = format!("{prefix}:");
    let (open_prefix, corrupt_prefix) = (key_prefix.clone(), key_prefix.clone());
    let report = Suite::new(prefix, move || {
        let settings = settings(&open_prefix);
        async move {
            Redis::open(&url(port), &settings)
                .await
                .map(|r| Arc::new(r) as Arc<dyn Backend>)
        }
        .boxed()
    })
    .corrupt_with(move |resource| {
        let key = format!("{corrupt_prefix}lease:{}", resource.as_str());
        async move {
            cli(port, &["SET", &key, "not a lease"])?;
            Ok(())
        }
        .boxed()
    })
    .run_all()
    .await;
    report.assert_passed();
    for (name, outcome) in &report.results {
        assert_eq!(*outcome, Outcome::Passed, "{name}");
    }
}

/// Other kinds of damage: a hash without the marker, a non-numeric token, a damaged counter.
#[tokio::test]
async fn other_damage_is_reported_and_left_alone() {
    let port = server::redis().port;
    let prefix = server::prefix();
    let damages: [(&str, &[&str]); 4] = [
        ("lease", &["HSET", "{key}", "id", "x", "token", "1"]),
        (
            "lease",
            &[
                "HSET",
                "{key}",
                "lockrun",
                "1",
                "id",
                "abc",
                "principal",
                "p",
                "token",
                "seven",
                "acquired_ms",
                "1",
                "ttl_ms",
                "1",
            ],
        ),
        ("lease", &["RPUSH", "{key}", "a"]),
        ("token", &["SET", "{key}", "-3"]),
    ];
    for (i, (kind, cmd)) in damages.iter().enumerate() {
        let key_prefix = format!("{prefix}:");
        let resource = format!("{prefix}/damage-{i}");
        let key = format!("{key_prefix}{kind}:{resource}");
        let args: Vec<&str> = cmd
            .iter()
            .map(|a| if *a == "{key}" { key.as_str() } else { a })
            .collect();
        cli(port, &args).unwrap();
        let before = cli(port, &["DUMP", &key]).unwrap();
        let b = Redis::open(&url(port), &settings(&key_prefix))
            .await
            .unwrap();
        let res = lockrun::lease::Resource::new(resource).unwrap();
        let id = lockrun::lease::LeaseId::generate();
        let req = lockrun::backend::AcquireRequest {
            resource: &res,
            id: &id,
            principal: "me",
            ttl: std::time::Duration::from_secs(60),
        };
        match b.try_acquire(&req).await {
            Err(lockrun::backend::Error::Corrupt(m)) => {
                assert!(m.contains(&key), "{m}");
                assert!(m.contains("inspect or delete it"), "{m}");
            }
            other => panic!("damage {i}: {other:?}"),
        }
        if *kind == "lease" {
            assert!(matches!(
                b.current(&res).await,
                Err(lockrun::backend::Error::Corrupt(_))
            ));
        }
        assert_eq!(cli(port, &["DUMP", &key]).unwrap(), before, "key untouched");
    }
}

#[tokio::test]
async fn debug_output_never_shows_the_password() {
    let s = server::start_redis(&["requirepass debug-secret-pw"]);
    let url = BackendUrl::parse(&format!("redis://:debug-secret-pw@127.0.0.1:{}/0", s.port))
        .expect("url");
    let b = Redis::open(&url, &Settings::default()).await.expect("open");
    let shown = format!("{b:?}");
    assert!(!shown.contains("debug-secret-pw"), "{shown}");
    assert!(shown.contains("redis://:***@127.0.0.1"), "{shown}");
}

/// A call that cannot connect (the server is gone) says that nothing was sent, so the waiting
/// policy neither gives back nor names a lease that the server might grant late.
#[tokio::test]
async fn a_call_that_cannot_connect_says_nothing_was_sent() {
    use lockrun::backend::{AcquireRequest, Error};
    use lockrun::{LeaseId, Resource};
    let s = server::start_redis(&[]);
    let b = Redis::open(&url(s.port), &settings("unreached:"))
        .await
        .expect("open");
    // SAFETY: kill(2) on the server's pid (the harness cleans up its directory at exit).
    unsafe { libc::kill(s.pid as i32, libc::SIGKILL) };
    // Until the server is gone, a new connection may still be accepted, then reset.
    let gone = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok() {
        assert!(
            gone.elapsed() < std::time::Duration::from_secs(10),
            "the server lives on"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (res, id) = (Resource::new("r").unwrap(), LeaseId::generate());
    let req = AcquireRequest {
        resource: &res,
        id: &id,
        principal: "test",
        ttl: std::time::Duration::from_secs(10),
    };
    // The connection in use may fail first (its request may have been sent); the next call
    // has to connect, and cannot.
    let mut last = None;
    for _ in 0..3 {
        match b.try_acquire(&req).await {
            Err(e @ Error::Unreached(_)) => {
                last = Some(e);
                break;
            }
            Err(e) => last = Some(e),
            Ok(out) => panic!("{out:?}"),
        }
    }
    let e = last.expect("an error");
    assert!(matches!(e, Error::Unreached(_)), "{e:?}");
    assert!(e.to_string().contains("cannot connect"), "{e}");
    assert!(e.is_retryable());
}
