//! The backend conformance suite, and etcd-specific properties, against a real etcd server.
#![cfg(feature = "etcd")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::{
    client, etcd, lease_count, start_etcd, start_etcd_with, start_etcd_with_auth, url,
};
use common::server::{prefix, Server};
use futures_util::FutureExt;
use lockrun::backend::conformance::{Outcome, Suite};
use lockrun::backend::etcd::Etcd;
use lockrun::backend::{
    Acquire, AcquireRequest, Backend, BackendUrl, Change, Error, Renewal, Settings,
};
use lockrun::lease::{Lease, LeaseId, Resource};

async fn open_with(url: &str, settings: &str) -> Result<Etcd, Error> {
    let table: toml::Table = toml::from_str(settings).expect("settings");
    Etcd::open(
        &BackendUrl::parse(url)?,
        &Settings::new("test [backend.etcd]", table),
    )
    .await
}

async fn open(server: &Server) -> Etcd {
    open_with(&url(server), "")
        .await
        .expect("open etcd backend")
}

fn suite(server: &'static Server) -> Suite {
    Suite::new(prefix(), move || {
        async move {
            open_with(&url(server), "")
                .await
                .map(|b| Arc::new(b) as Arc<dyn Backend>)
        }
        .boxed()
    })
}

async fn acquire(b: &Etcd, res: &Resource, ttl: Duration) -> Lease {
    let id = LeaseId::generate();
    let req = AcquireRequest {
        resource: res,
        id: &id,
        principal: "test",
        ttl,
    };
    match b.try_acquire(&req).await.expect("try_acquire") {
        Acquire::Acquired(l) => l,
        busy => panic!("busy: {busy:?}"),
    }
}

fn resource(name: &str) -> Resource {
    Resource::new(format!("{}/{name}", prefix())).expect("resource")
}

/// The etcd lease the key of `res` is attached to, and its granted TTL.
async fn key_lease(b: &Etcd, server: &Server, res: &Resource) -> (i64, i64) {
    let mut c = client(server).await;
    let got = c.get(b.key(res), None).await.expect("get");
    let lease = got.kvs().first().expect("key exists").lease();
    let ttl = c.lease_time_to_live(lease, None).await.expect("ttl");
    (lease, ttl.granted_ttl())
}

#[tokio::test]
async fn etcd_backend_passes_the_suite() {
    let server = etcd();
    let report = suite(server)
        .corrupt_with(move |resource| {
            async move {
                let b = open_with(&url(server), "")
                    .await
                    .map_err(|e| e.to_string())?;
                let mut c = client(server).await;
                c.put(b.key(&resource), "garbage, not JSON", None)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
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

/// A lockrun value that is not attached to an etcd lease would never expire: it is corrupt.
#[tokio::test]
async fn value_without_etcd_lease_is_corrupt() {
    let server = etcd();
    let b = open(server).await;
    let res = resource("detached");
    let l = acquire(&b, &res, Duration::from_secs(60)).await;
    let mut c = client(server).await;
    let value = c.get(b.key(&res), None).await.expect("get").kvs()[0]
        .value()
        .to_vec();
    c.put(b.key(&res), value, None)
        .await
        .expect("put without lease");
    assert!(matches!(b.current(&res).await, Err(Error::Corrupt(_))));
    assert!(matches!(
        b.renew(&res, &l.id, Duration::from_secs(60)).await,
        Err(Error::Corrupt(_))
    ));
    c.delete(b.key(&res), None).await.expect("cleanup");
}

/// stormlock's etcd bug: every failed acquire left an etcd lease behind.
#[tokio::test]
async fn failed_acquires_leak_no_etcd_leases() {
    let server = start_etcd();
    let b = open(&server).await;
    let mut c = client(&server).await;
    let res = resource("leak");
    let held = acquire(&b, &res, Duration::from_secs(60)).await;
    let before = lease_count(&mut c).await;
    for _ in 0..20 {
        let id = LeaseId::generate();
        let req = AcquireRequest {
            resource: &res,
            id: &id,
            principal: "loser",
            ttl: Duration::from_secs(3600),
        };
        let out = b.try_acquire(&req).await.expect("try_acquire");
        assert!(matches!(out, Acquire::Busy { holder: Some(ref h), .. } if h.id == held.id));
    }
    assert_eq!(
        lease_count(&mut c).await,
        before,
        "failed acquires leaked leases"
    );
    assert!(b.release(&res, &held.id).await.expect("release"));
    assert_eq!(
        lease_count(&mut c).await,
        before - 1,
        "release left its lease"
    );
}

/// stormlock's etcd bug: `renew --ttl` was ignored. Here the server's TTL really changes, the old
/// etcd lease is revoked, and the lease id and fencing token stay.
#[tokio::test]
async fn renew_with_another_ttl_changes_the_server_ttl() {
    let server = start_etcd();
    let b = open(&server).await;
    let mut c = client(&server).await;
    let res = resource("ttl");
    let l = acquire(&b, &res, Duration::from_secs(30)).await;
    let (first, ttl) = key_lease(&b, &server, &res).await;
    assert_eq!(ttl, 30);
    let leases = lease_count(&mut c).await;
    let Renewal::Renewed(r) = b
        .renew(&res, &l.id, Duration::from_secs(600))
        .await
        .unwrap()
    else {
        panic!("lost")
    };
    assert_eq!(
        (r.id.clone(), r.fencing_token),
        (l.id.clone(), l.fencing_token)
    );
    assert_eq!(r.ttl, Duration::from_secs(600));
    let (second, ttl) = key_lease(&b, &server, &res).await;
    assert_eq!(ttl, 600);
    assert_ne!(first, second);
    assert_eq!(
        lease_count(&mut c).await,
        leases,
        "the old etcd lease was not revoked"
    );
    // The same TTL again is a plain keep-alive of the same etcd lease.
    b.renew(&res, &l.id, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(key_lease(&b, &server, &res).await.0, second);
    // Sub-second TTLs round up to whole seconds.
    b.renew(&res, &l.id, Duration::from_millis(1500))
        .await
        .unwrap();
    assert_eq!(key_lease(&b, &server, &res).await.1, 2);
    let cur = b.current(&res).await.unwrap().expect("held");
    assert_eq!(cur.fencing_token, l.fencing_token);
    assert!(b.release(&res, &l.id).await.unwrap());
}

/// etcd raises a TTL below its minimum (1.5 election timeouts: 2 s with etcd's default raft
/// timers), and `current` reports the raised one: renewing with it, as a plain `lockrun renew`
/// does, keeps the same etcd lease (a keep-alive, not a new grant).
#[tokio::test]
async fn renewing_with_the_raised_ttl_keeps_the_etcd_lease() {
    let server = start_etcd_with(&["--heartbeat-interval", "100", "--election-timeout", "1000"]);
    let b = open(&server).await;
    let res = resource("min-ttl");
    let l = acquire(&b, &res, Duration::from_secs(1)).await;
    let (first, granted) = key_lease(&b, &server, &res).await;
    assert_eq!(granted, 2, "etcd's minimum TTL");
    let cur = b.current(&res).await.unwrap().expect("held");
    assert_eq!(cur.ttl, Duration::from_secs(2));
    b.renew(&res, &l.id, cur.ttl).await.unwrap();
    assert_eq!(key_lease(&b, &server, &res).await.0, first);
    assert!(b.release(&res, &l.id).await.unwrap());
}

/// stormlock's etcd bug: release revoked the lease without checking the resource.
#[tokio::test]
async fn a_lease_id_of_another_resource_releases_nothing() {
    let b = open(etcd()).await;
    let (a, other) = (resource("a"), resource("b"));
    let la = acquire(&b, &a, Duration::from_secs(60)).await;
    let lb = acquire(&b, &other, Duration::from_secs(60)).await;
    assert!(!b.release(&other, &la.id).await.unwrap());
    assert!(matches!(
        b.renew(&other, &la.id, Duration::from_secs(60)).await,
        Ok(Renewal::Lost)
    ));
    assert_eq!(
        b.current(&other).await.unwrap().map(|l| l.id),
        Some(lb.id.clone())
    );
    assert!(b.release(&a, &la.id).await.unwrap());
    assert!(b.release(&other, &lb.id).await.unwrap());
}

/// A waiter's watch fires when the holder's lease expires, not only on release.
#[tokio::test]
async fn watch_fires_on_expiry() {
    let b = open(etcd()).await;
    let res = resource("expiry-watch");
    acquire(&b, &res, Duration::from_secs(1)).await;
    let mut w = b.watch(&res).await.unwrap().expect("a watch");
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), w.changed())
        .await
        .expect("watch fired")
        .expect("no error");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(b.current(&res).await.unwrap().is_none());
}

/// A paused server makes calls fail within the command timeout instead of hanging, and the
/// backend recovers when the server resumes.
#[tokio::test]
async fn paused_server_times_out_and_recovers() {
    let server = start_etcd();
    let b = open_with(&url(&server), "command_timeout = \"500ms\"")
        .await
        .unwrap();
    let res = resource("paused");
    let l = acquire(&b, &res, Duration::from_secs(30)).await;
    server.pause();
    let start = Instant::now();
    let out = b.renew(&res, &l.id, Duration::from_secs(30)).await;
    server.resume();
    // Unreached: the renewal's first step, a read, got no answer, so nothing that changes the
    // lease was sent.
    assert!(
        matches!(out, Err(Error::Unreached(ref m)) if m.contains("command_timeout")),
        "{out:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(
        b.renew(&res, &l.id, Duration::from_secs(30)).await,
        Ok(Renewal::Renewed(_))
    ));
}

/// etcd's auth tokens lapse when idle; the backend logs in again on its own.
#[tokio::test]
async fn lapsed_auth_token_is_renewed() {
    let server = start_etcd_with_auth(&["--auth-token-ttl", "1"]);
    let url = format!(
        "etcd://root:{}@127.0.0.1:{}",
        common::etcd::ROOT_PASSWORD,
        server.port
    );
    let b = open_with(&url, "").await.expect("open with credentials");
    let res = resource("auth");
    let l = acquire(&b, &res, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = b.renew(&res, &l.id, Duration::from_secs(30)).await;
    assert!(matches!(out, Ok(Renewal::Renewed(_))), "{out:?}");
    assert!(b.release(&res, &l.id).await.unwrap());
    let shown = format!("{b:?}");
    assert!(!shown.contains(common::etcd::ROOT_PASSWORD), "{shown}");
}

/// A host list works when its first host is down.
#[tokio::test]
async fn host_list_skips_a_dead_endpoint() {
    let server = etcd();
    let dead = common::server::free_port();
    let url = format!("etcd://127.0.0.1:{dead},127.0.0.1:{}", server.port);
    let b = open_with(&url, "")
        .await
        .expect("open with one dead endpoint");
    let res = resource("hosts");
    for _ in 0..5 {
        let l = acquire(&b, &res, Duration::from_secs(30)).await;
        assert!(b.release(&res, &l.id).await.unwrap());
    }
}

/// A `--fair` waiter moves up as soon as the waiter ahead of it leaves, whether that happens
/// before it starts watching (the departure is read, not missed) or while it watches. Either way
/// well before the 5 s re-check that backs the watch up.
#[tokio::test]
async fn a_fair_waiter_moves_up_when_the_one_ahead_leaves() {
    let server = etcd();
    let b = open(server).await;
    let res = resource("line-moves-up");
    let held = acquire(&b, &res, Duration::from_secs(30)).await;
    let ids: Vec<LeaseId> = (0..4).map(|_| LeaseId::generate()).collect();
    let req = |i: usize| AcquireRequest {
        resource: &res,
        id: &ids[i],
        principal: "test",
        ttl: Duration::from_secs(30),
    };
    let mut tickets = Vec::new();
    for i in 0..4 {
        let t = b
            .enqueue(&req(i))
            .await
            .expect("join")
            .expect("etcd keeps a line");
        tickets.push(t);
    }
    let mut tickets = tickets.into_iter();
    let (mut first, mut second, mut third, mut fourth) = (
        tickets.next().unwrap(),
        tickets.next().unwrap(),
        tickets.next().unwrap(),
        tickets.next().unwrap(),
    );
    first.first().await.expect("the first in line is first");
    let soon = Duration::from_secs(2);
    // The one ahead leaves before the next one has looked or watched, and unrelated writes move
    // etcd's revision on meanwhile.
    first.leave().await;
    let mut c = client(server).await;
    for i in 0..3 {
        c.put(format!("{}/elsewhere/{i}", prefix()), "x", None)
            .await
            .expect("put");
    }
    tokio::time::timeout(soon, second.first())
        .await
        .expect("moved up after the one ahead left before the watch")
        .expect("first");
    // The one ahead leaves while the next one watches.
    let waiting = tokio::spawn(async move { third.first().await.map(|()| third) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "third in line moved up early");
    second.leave().await;
    let third = tokio::time::timeout(soon, waiting)
        .await
        .expect("moved up after the one ahead left while it watched")
        .expect("task")
        .expect("first");
    // The last one gets the resource once it is released.
    let busy = tokio::time::timeout(Duration::from_millis(300), fourth.first()).await;
    assert!(busy.is_err(), "fourth in line moved up early");
    third.leave().await;
    tokio::time::timeout(soon, fourth.first())
        .await
        .expect("fourth moved up")
        .expect("first");
    assert!(b.release(&res, &held.id).await.unwrap());
    match fourth.try_acquire(&req(3)).await.expect("attempt") {
        Acquire::Acquired(l) => assert!(b.release(&res, &l.id).await.unwrap()),
        busy => panic!("free, yet {busy:?}"),
    }
    fourth.leave().await;
}

/// A waiter that reads its watch late, after the release that woke it and the next grant, is
/// told the new holder by the watch itself (no attempt is needed to learn it); a release alone
/// says the resource may be free.
#[tokio::test]
async fn a_late_watch_reports_the_next_holder() {
    let server = etcd();
    let b = open(server).await;
    let res = resource("late-watch");
    let first = acquire(&b, &res, Duration::from_secs(30)).await;
    let mut watch = b.watch(&res).await.expect("watch").expect("etcd watches");
    assert!(b.release(&res, &first.id).await.unwrap());
    let second = acquire(&b, &res, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // both events have arrived
    match watch.changed().await.expect("changed") {
        Change::Held {
            holder: Some(h), ..
        } => {
            assert_eq!(h.id, second.id);
            assert_eq!(h.fencing_token, second.fencing_token);
        }
        other => panic!("expected the next holder, got {other:?}"),
    }
    assert!(b.release(&res, &second.id).await.unwrap());
    let change = tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .expect("a release wakes the watch")
        .expect("changed");
    assert!(matches!(change, Change::MayBeFree), "{change:?}");
    watch.close().await;
}
