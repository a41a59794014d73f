//! The backend conformance suite against the Kubernetes API stand-in (`common/k8s.rs`), plus
//! interplay with Leases written by client-go leader election.
#![cfg(feature = "kubernetes")]

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use common::k8s::{StandIn, NAMESPACE};
use futures_util::FutureExt;
use lockrun::backend::conformance::{Outcome, Suite};
use lockrun::backend::kubernetes::Kubernetes;
use lockrun::backend::{Acquire, AcquireRequest, Backend, Error, Renewal};
use lockrun::lease::{LeaseId, Resource};
use serde_json::json;

/// One stand-in for the whole test binary; every test uses its own resources.
fn stand_in() -> &'static StandIn {
    static SERVER: OnceLock<StandIn> = OnceLock::new();
    SERVER.get_or_init(StandIn::start)
}

/// A backend that turns rule (a) on with `skew` as the allowance, or leaves it off.
async fn backend(skew: Option<Duration>) -> Kubernetes {
    let config = stand_in().config(NAMESPACE).await;
    let k = Kubernetes::from_config(config, None).expect("backend");
    match skew {
        Some(skew) => k.skew_allowance(skew),
        None => k,
    }
}

fn suite(skew: Option<Duration>) -> Suite {
    Suite::new(common::server::prefix(), move || {
        async move { Ok(Arc::new(backend(skew).await) as Arc<dyn Backend>) }.boxed()
    })
    .corrupt_with(|resource| {
        async move {
            let server = stand_in();
            let lease = server
                .lease_of(NAMESPACE, resource.as_str())
                .ok_or("no Lease carries the resource")?;
            let name = lease["metadata"]["name"]
                .as_str()
                .ok_or("no name")?
                .to_owned();
            server.overwrite(NAMESPACE, &name, |l| {
                let notes = &mut l["metadata"]["annotations"];
                notes["lockrun.dev/lease-id"] = json!("!! not a lease id !!");
                notes["lockrun.dev/fencing-token"] = json!("minus one");
            });
            Ok(())
        }
        .boxed()
    })
}

/// The whole suite as configured by default (rule (a) off): every takeover is rule (b), one TTL
/// after the taker first saw the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_backend_passes_the_suite() {
    let short = Duration::from_secs(1);
    let report = suite(None)
        .expiry(short, short + Duration::from_secs(1))
        .run_all()
        .await;
    report.assert_passed();
    for (name, outcome) in &report.results {
        match *name {
            "watch_fires_on_release" => assert!(matches!(outcome, Outcome::Skipped(_))),
            _ => assert_eq!(*outcome, Outcome::Passed, "{name}"),
        }
    }
    stand_in().assert_no_unknown_requests();
    for request in stand_in().requests() {
        let (method, target) = request.split_once(' ').expect("METHOD target");
        assert!(
            matches!(method, "GET" | "POST" | "PUT")
                && target.starts_with("/apis/coordination.k8s.io/v1/namespaces/locks/leases"),
            "{request}"
        );
    }
}

/// With rule (a) turned on and no allowance, it takes over right at `renewTime +
/// leaseDurationSeconds`, before rule (b) could.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_a_takes_over_at_the_expiry_without_skew() {
    let s = suite(Some(Duration::ZERO)).expiry(Duration::from_secs(1), Duration::from_millis(500));
    for property in [
        "expired_lease_can_be_taken",
        "renew_after_expiry_is_lost",
        "fencing_tokens_increase",
    ] {
        assert_eq!(s.run(property).await, Outcome::Passed, "{property}");
    }
}

fn req<'a>(res: &'a Resource, id: &'a LeaseId, ttl: Duration) -> AcquireRequest<'a> {
    AcquireRequest {
        resource: res,
        id,
        principal: "lockrun-user",
        ttl,
    }
}

/// A client-go leader election Lease: holderIdentity, times, transitions, no annotations.
fn client_go_lease(
    name: &str,
    holder: &str,
    transitions: i64,
    renewed: SystemTime,
) -> serde_json::Value {
    let t = humantime::format_rfc3339_micros(renewed).to_string();
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 2, "acquireTime": t,
                 "renewTime": t, "leaseTransitions": transitions},
    })
}

/// A Lease held by a client-go elector is busy, shown with its holderIdentity, until it expires;
/// then lockrun takes it over with leaseTransitions + 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_go_lease_is_respected_then_taken_over() {
    let server = stand_in();
    let name = format!("{}-leader", common::server::prefix());
    let post = format!("/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases");
    let body = client_go_lease(&name, "controller-0_5f2c", 6, SystemTime::now());
    let (code, answer) = server.request("POST", &post, Some(&body));
    assert_eq!(code, 201, "{answer}");
    let k = backend(Some(Duration::ZERO))
        .await
        .name_prefix("")
        .expect("prefix");
    let res = Resource::new(name.clone()).unwrap();
    let id = LeaseId::generate();
    let Acquire::Busy { holder, expires_in } = k
        .try_acquire(&req(&res, &id, Duration::from_secs(30)))
        .await
        .unwrap()
    else {
        panic!("acquired a Lease held by client-go");
    };
    let holder = holder.expect("the holder is shown");
    assert_eq!(holder.principal, "controller-0_5f2c");
    assert_eq!(holder.fencing_token, Some(6));
    assert!(expires_in.unwrap() <= Duration::from_secs(2));
    assert_eq!(
        k.current(&res)
            .await
            .unwrap()
            .map(|l| l.principal)
            .as_deref(),
        Some("controller-0_5f2c")
    );
    assert!(matches!(
        k.renew(&res, &holder.id, Duration::from_secs(30)).await,
        Ok(Renewal::Lost)
    ));
    assert!(!k.release(&res, &holder.id).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let Acquire::Acquired(lease) = k
        .try_acquire(&req(&res, &id, Duration::from_secs(30)))
        .await
        .unwrap()
    else {
        panic!("an expired client-go Lease was not taken over");
    };
    assert_eq!(lease.fencing_token, Some(7));
    let stored = server.lease(NAMESPACE, &name).expect("stored");
    assert_eq!(stored["spec"]["holderIdentity"], "lockrun-user");
    assert_eq!(stored["spec"]["leaseTransitions"], 7);
}

/// client-go taking over an expired lockrun Lease keeps lockrun's annotations but bumps
/// leaseTransitions: the old lockrun lease id no longer holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_go_takeover_ends_the_lockrun_lease() {
    let server = stand_in();
    let k = backend(None).await;
    let res = Resource::new(format!("{}-taken", common::server::prefix())).unwrap();
    let id = LeaseId::generate();
    let Acquire::Acquired(lease) = k
        .try_acquire(&req(&res, &id, Duration::from_secs(30)))
        .await
        .unwrap()
    else {
        panic!("busy");
    };
    let name = k.object_name(&res);
    server.overwrite(NAMESPACE, &name, |l| {
        let now = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        l["spec"]["holderIdentity"] = json!("controller-1_77aa");
        l["spec"]["leaseTransitions"] = json!(lease.fencing_token.unwrap() + 1);
        l["spec"]["acquireTime"] = json!(now);
        l["spec"]["renewTime"] = json!(now);
    });
    assert!(matches!(
        k.renew(&res, &id, Duration::from_secs(30)).await,
        Ok(Renewal::Lost)
    ));
    assert!(!k.release(&res, &id).await.unwrap());
    let cur = k.current(&res).await.unwrap().expect("held");
    assert_eq!(cur.principal, "controller-1_77aa");
    assert_ne!(cur.id, id);
}

/// A Lease whose annotation names another resource (a name clash) is corrupt, never written.
#[tokio::test]
async fn a_lease_of_another_resource_is_corrupt() {
    let server = stand_in();
    let k = backend(None).await;
    let res = Resource::new(format!("{}-clash", common::server::prefix())).unwrap();
    let id = LeaseId::generate();
    assert!(matches!(
        k.try_acquire(&req(&res, &id, Duration::from_secs(30)))
            .await,
        Ok(Acquire::Acquired(_))
    ));
    let name = k.object_name(&res);
    let before = server.overwrite(NAMESPACE, &name, |l| {
        l["metadata"]["annotations"]["lockrun.dev/resource"] = json!("Some/Other");
    });
    let e = k.current(&res).await.unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt(m) if m.contains("names resource 'Some/Other'")),
        "{e:?}"
    );
    assert!(matches!(
        k.renew(&res, &id, Duration::from_secs(30)).await,
        Err(Error::Corrupt(_))
    ));
    assert_eq!(server.lease(NAMESPACE, &name), Some(before));
}

/// The stand-in answers as kube-apiserver does where the backend depends on it.
#[test]
fn the_stand_in_answers_like_the_api_server() {
    let server = StandIn::start();
    let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases");
    let one = |name: &str| format!("{leases}/{name}");
    let lease = |name: &str, rv: Option<&str>| {
        let mut l = client_go_lease(name, "h", 0, SystemTime::now());
        if let Some(rv) = rv {
            l["metadata"]["resourceVersion"] = json!(rv);
        }
        l
    };
    let (code, created) = server.request("POST", &leases, Some(&lease("a", None)));
    assert_eq!(code, 201, "{created}");
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(created["metadata"]["uid"].is_string());
    let expect = |(code, body): (u16, serde_json::Value), want: u16, reason: &str| {
        assert_eq!(code, want, "{body}");
        assert_eq!(body["kind"], "Status", "{body}");
        assert_eq!(body["reason"], reason, "{body}");
        assert_eq!(body["code"], want, "{body}");
    };
    expect(
        server.request("POST", &leases, Some(&lease("a", None))),
        409,
        "AlreadyExists",
    );
    expect(
        server.request("PUT", &one("a"), Some(&lease("a", Some("999")))),
        409,
        "Conflict",
    );
    expect(
        server.request("PUT", &one("a"), Some(&lease("a", None))),
        422,
        "Invalid",
    );
    expect(
        server.request("PUT", &one("b"), Some(&lease("b", Some("1")))),
        409,
        "Conflict",
    );
    expect(
        server.request("PUT", &one("b"), Some(&lease("a", Some(&rv)))),
        400,
        "BadRequest",
    );
    expect(server.request("GET", &one("b"), None), 404, "NotFound");
    expect(
        server.request("POST", &leases, Some(&lease("Bad_Name", None))),
        422,
        "Invalid",
    );
    let mut zero = lease("z", None);
    zero["spec"]["leaseDurationSeconds"] = json!(0);
    expect(server.request("POST", &leases, Some(&zero)), 422, "Invalid");
    let elsewhere = "/apis/coordination.k8s.io/v1/namespaces/nope/leases";
    let mut there = lease("a", None);
    there["metadata"]["namespace"] = json!("nope");
    let (code, body) = server.request("POST", elsewhere, Some(&there));
    assert_eq!(
        (code, body["message"].as_str()),
        (404, Some("namespaces \"nope\" not found"))
    );
    expect(
        server.request("GET", &format!("{elsewhere}/a"), None),
        404,
        "NotFound",
    );
    let (code, body) = common::k8s::http::request(server.port, "wrong", "GET", &one("a"), None);
    assert_eq!((code, &body["reason"]), (401, &json!("Unauthorized")));
    // A real update gets a new resourceVersion; a no-op update keeps it.
    let mut update = created.clone();
    update["spec"]["holderIdentity"] = json!("other");
    let (code, updated) = server.request("PUT", &one("a"), Some(&update));
    assert_eq!(code, 200, "{updated}");
    let rv2 = updated["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(rv2, rv);
    let (code, again) = server.request("PUT", &one("a"), Some(&updated));
    assert_eq!(
        (code, again["metadata"]["resourceVersion"].as_str()),
        (200, Some(rv2.as_str()))
    );
    let stale = json!({"preconditions": {"resourceVersion": rv}});
    expect(
        server.request("DELETE", &one("a"), Some(&stale)),
        409,
        "Conflict",
    );
    assert_eq!(server.request("DELETE", &one("a"), None).0, 200);
    expect(server.request("GET", &one("a"), None), 404, "NotFound");
    assert_eq!(server.request("PATCH", &one("a"), None).0, 404);
    assert_eq!(server.unknown_requests().len(), 1);
}
