//! The backend conformance suite against a real memcached on a loopback port, plus what only
//! memcached does: whole-second expiry, TTLs it cannot express, eviction and foreign counters.
#![cfg(feature = "memcached")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::memcached::{self as mc, Raw};
use common::server::{self, Server};
use futures_util::FutureExt;
use lockrun::backend::conformance::{Outcome, Suite};
use lockrun::backend::memcached::Memcached;
use lockrun::backend::{
    Acquire, AcquireRequest, Backend, BackendUrl, Error, Fencing, Renewal, Settings,
};
use lockrun::lease::{LeaseId, Resource};

fn settings(toml: &str) -> Settings {
    Settings::new("conformance test", toml.parse().expect("toml"))
}

async fn open(url: &str, toml: &str) -> Result<Memcached, Error> {
    Memcached::open(&BackendUrl::parse(url)?, &settings(toml)).await
}

/// A suite over `url` whose keys start with `key_prefix`, corrupting records with a `set` of
/// garbage under the lease key.
fn suite(url: String, key_prefix: String) -> Suite {
    let toml = format!("prefix = {key_prefix:?}");
    let (open_url, open_toml) = (url.clone(), toml.clone());
    Suite::new(server::prefix(), move || {
        let (url, toml) = (open_url.clone(), open_toml.clone());
        async move {
            open(&url, &toml)
                .await
                .map(|m| Arc::new(m) as Arc<dyn Backend>)
        }
        .boxed()
    })
    .corrupt_with(move |resource| {
        let (url, toml) = (url.clone(), toml.clone());
        async move {
            let m = open(&url, &toml).await.map_err(|e| e.to_string())?;
            let loc = m.locate(&resource);
            let port = loc.server.rsplit(':').next().and_then(|p| p.parse().ok());
            let port = port.ok_or(format!("no port in {}", loc.server))?;
            Raw::connect(port).set(&loc.lease_key, 0, 0, b"not a lease \x1b[31m");
            Ok(())
        }
        .boxed()
    })
    // memcached expires in whole seconds and may keep a key up to a second past its TTL.
    .expiry(Duration::from_secs(1), Duration::from_millis(2500))
}

fn assert_outcomes(report: &lockrun::backend::conformance::Report) {
    report.assert_passed();
    for (name, outcome) in &report.results {
        match *name {
            "watch_fires_on_release" | "fencing_tokens_increase" => {
                assert!(
                    matches!(outcome, Outcome::Skipped(_)),
                    "{name}: {outcome:?}"
                )
            }
            _ => assert_eq!(*outcome, Outcome::Passed, "{name}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_backend_passes_the_suite() {
    let s = mc::memcached();
    let report = suite(mc::url(s), format!("{}:", server::prefix()))
        .run_all()
        .await;
    assert_outcomes(&report);
    let fencing = &report
        .results
        .iter()
        .find(|(n, _)| *n == "fencing_tokens_increase");
    let Some((_, Outcome::Skipped(why))) = fencing else {
        panic!("{fencing:?}")
    };
    assert!(
        why.contains("best-effort") && why.contains("passed"),
        "{why}"
    );
}

/// Two servers: the same suite, with resources spread over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_pass_the_suite() {
    let (a, b) = (mc::memcached(), mc::start_memcached(&[]));
    let url = format!("memcached://127.0.0.1:{},127.0.0.1:{}", a.port, b.port);
    let report = suite(url, "lockrun:".into()).race(8, 20).run_all().await;
    assert_outcomes(&report);
}

fn req<'a>(res: &'a Resource, id: &'a LeaseId, ttl: Duration) -> AcquireRequest<'a> {
    AcquireRequest {
        resource: res,
        id,
        principal: "tester",
        ttl,
    }
}

fn resource(what: &str) -> Resource {
    Resource::new(format!("{}/{what}", server::prefix())).expect("resource")
}

#[tokio::test]
async fn capabilities_and_ttl_limits() {
    let m = open(&mc::url(mc::memcached()), "").await.expect("open");
    let caps = m.capabilities();
    assert_eq!(caps.fencing, Fencing::BestEffort);
    assert!(caps.server_time && caps.may_evict && !caps.watch);

    let res = resource("ttl");
    let id = LeaseId::generate();
    let month = Duration::from_secs(30 * 24 * 3600);
    for ttl in [month, month - Duration::from_millis(500), Duration::MAX] {
        match m.try_acquire(&req(&res, &id, ttl)).await {
            Err(Error::Config(msg)) => assert!(msg.contains("less than 30 days"), "{msg}"),
            other => panic!("{ttl:?}: {other:?}"),
        }
    }
    let longest = month - Duration::from_secs(1);
    let Ok(Acquire::Acquired(lease)) = m.try_acquire(&req(&res, &id, longest)).await else {
        panic!("a TTL just under 30 days is refused");
    };
    assert!(matches!(
        m.renew(&res, &id, month).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        m.renew(&res, &id, longest).await,
        Ok(Renewal::Renewed(_))
    ));
    assert!(m.release(&res, &lease.id).await.expect("release"));
}

/// A key that memcached evicts is simply gone: the holder's renewal is lost and the resource is
/// free, which is the documented hazard of this backend.
#[tokio::test]
async fn an_evicted_lease_is_lost() {
    let s = mc::start_memcached(&["-m", "2"]);
    let m = open(&mc::url(&s), "").await.expect("open");
    let res = resource("evicted");
    let id = LeaseId::generate();
    let Ok(Acquire::Acquired(first)) = m
        .try_acquire(&req(&res, &id, Duration::from_secs(600)))
        .await
    else {
        panic!("not acquired")
    };
    let loc = m.locate(&res);
    // Fill the cache with items of the lease's size (memcached evicts within a slab class)
    // until the lease is pushed out. Each look at the lease bumps it in the LRU, so look rarely:
    // 2 MB hold fewer than 10,000 such items.
    let mut raw = Raw::connect(s.port);
    let (_, value) = raw.get(&loc.lease_key).expect("the lease is stored");
    let filler = vec![b'x'; value.len()];
    let mut n = 0u32;
    while raw.get(&loc.lease_key).is_some() {
        for _ in 0..30_000 {
            let key = format!("{n:0>width$}", width = loc.lease_key.len());
            let reply = raw.command(&format!("set {key} 0 0 {}", filler.len()), Some(&filler));
            assert!(
                reply == "STORED" || reply.starts_with("SERVER_ERROR"),
                "{reply}"
            );
            n += 1;
        }
        assert!(n < 500_000, "the lease was never evicted");
    }
    assert!(matches!(
        m.renew(&res, &id, Duration::from_secs(600)).await,
        Ok(Renewal::Lost)
    ));
    let other = LeaseId::generate();
    let Ok(Acquire::Acquired(second)) = m
        .try_acquire(&req(&res, &other, Duration::from_secs(60)))
        .await
    else {
        panic!("an evicted lease still blocks")
    };
    assert!(second.fencing_token.is_some() && first.fencing_token.is_some());
}

/// A counter that is not a number is reported, never overwritten, and the resource stays usable
/// for nobody else's benefit.
#[tokio::test]
async fn a_foreign_counter_is_corrupt() {
    let s: &Server = mc::memcached();
    let m = open(&mc::url(s), "").await.expect("open");
    let res = resource("counter");
    let loc = m.locate(&res);
    let mut raw = Raw::connect(s.port);
    raw.set(&loc.token_key, 0, 0, b"twelve");
    match m
        .try_acquire(&req(&res, &LeaseId::generate(), Duration::from_secs(5)))
        .await
    {
        Err(Error::Corrupt(msg)) => {
            assert!(
                msg.contains(&loc.token_key) && msg.contains("not a number"),
                "{msg}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(raw.get_text(&loc.token_key).as_deref(), Some("twelve"));
}

#[tokio::test]
async fn a_server_that_is_down_is_unavailable() {
    let port = server::free_port();
    let err = open(&format!("memcached://127.0.0.1:{port}"), "")
        .await
        .unwrap_err();
    // Refused: nothing was sent.
    assert!(matches!(err, Error::Unreached(_)), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    // A listener that never answers: the connect succeeds, the version check times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let start = std::time::Instant::now();
    let err = open(
        &format!("memcached://127.0.0.1:{port}"),
        "command_timeout = \"300ms\"",
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("did not answer version within 300ms"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
}
