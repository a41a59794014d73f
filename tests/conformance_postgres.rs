//! The backend conformance suite, and PostgreSQL-specific properties, against a real server.
//! Each test uses a table of its own (`t_<prefix>`), so tests do not see each other's rows.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use lockrun::backend::conformance::{Outcome, Suite};
use lockrun::backend::postgres::Postgres;
use lockrun::backend::{
    Acquire, AcquireRequest, Backend, BackendUrl, Error, Fencing, Renewal, Settings,
};
use lockrun::lease::{LeaseId, Resource};

use common::server::{self, Server};

/// URL and settings for a fresh table on `server`.
fn target(server: &Server, extra: &str) -> (BackendUrl, Settings, String) {
    let table = format!("t_{}", server::prefix());
    let toml: toml::Table = format!("table = \"{table}\"\n{extra}")
        .parse()
        .expect("settings");
    let url = BackendUrl::parse(&server::postgres_url(server)).expect("url");
    (url, Settings::new("conformance [backend.pg]", toml), table)
}

async fn open(url: &BackendUrl, settings: &Settings) -> Arc<dyn Backend> {
    Arc::new(Postgres::open(url, settings).await.expect("open"))
}

/// A superuser connection.
async fn superuser(server: &Server) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&server::postgres_url(server), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(conn);
    client
}

/// Runs `sql` as the superuser with `$1` = the resource.
fn tamper(
    server: &'static Server,
    sql: String,
) -> impl Fn(Resource) -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static {
    move |resource| {
        let sql = sql.clone();
        async move {
            let (client, conn) =
                tokio_postgres::connect(&server::postgres_url(server), tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
            let task = tokio::spawn(conn);
            let n = client
                .execute(&sql, &[&resource.as_str()])
                .await
                .map_err(|e| e.to_string())?;
            drop(client);
            let _ = task.await;
            if n == 1 {
                Ok(())
            } else {
                Err(format!("{n} rows changed"))
            }
        }
        .boxed()
    }
}

fn suite(url: BackendUrl, settings: Settings) -> Suite {
    Suite::new(server::prefix(), move || {
        let (url, settings) = (url.clone(), settings.clone());
        async move {
            Postgres::open(&url, &settings)
                .await
                .map(|p| Arc::new(p) as Arc<dyn Backend>)
        }
        .boxed()
    })
}

#[tokio::test]
async fn postgres_backend_passes_the_suite() {
    let s = server::postgres();
    let (url, settings, table) = target(s, "");
    let report = suite(url, settings)
        .corrupt_with(tamper(
            s,
            format!("UPDATE {table} SET token = -5 WHERE resource = $1"),
        ))
        .run_all()
        .await;
    report.assert_passed();
    // Everything applies to PostgreSQL: nothing may be skipped.
    for (name, outcome) in &report.results {
        assert_eq!(*outcome, Outcome::Passed, "{name}");
    }
}

#[tokio::test]
async fn other_damage_is_reported_too() {
    let s = server::postgres();
    for damage in [
        "lease_id = ''",
        "lease_id = 'not a lease id'",
        "ttl_ms = 0",
        "expires_at = 'infinity'",
    ] {
        let (url, settings, table) = target(s, "");
        let outcome = suite(url, settings)
            .corrupt_with(tamper(
                s,
                format!("UPDATE {table} SET {damage} WHERE resource = $1"),
            ))
            .run("corrupt_record_is_reported")
            .await;
        assert_eq!(outcome, Outcome::Passed, "{damage}");
    }
}

#[tokio::test]
async fn busy_reports_the_servers_view_of_the_expiry() {
    let (url, settings, _) = target(server::postgres(), "");
    let b = open(&url, &settings).await;
    let caps = b.capabilities();
    assert_eq!(caps.fencing, Fencing::Strict);
    assert!(caps.server_time && caps.watch && !caps.may_evict);

    let res = Resource::new("busy").expect("resource");
    let (a, other) = (LeaseId::generate(), LeaseId::generate());
    let req = |id| AcquireRequest {
        resource: &res,
        id,
        principal: "tester",
        ttl: Duration::from_secs(30),
    };
    let Acquire::Acquired(lease) = b.try_acquire(&req(&a)).await.expect("acquire") else {
        panic!("not acquired");
    };
    assert_eq!(lease.ttl, Duration::from_secs(30));
    let span = lease
        .expires_at
        .duration_since(lease.acquired_at)
        .expect("order");
    assert!(
        span.abs_diff(Duration::from_secs(30)) < Duration::from_millis(50),
        "{span:?}"
    );
    match b.try_acquire(&req(&other)).await.expect("busy") {
        Acquire::Busy {
            holder: Some(h),
            expires_in: Some(left),
        } => {
            assert_eq!(h.id, a);
            assert!(
                left <= Duration::from_secs(30) && left > Duration::from_secs(25),
                "{left:?}"
            );
        }
        busy => panic!("{busy:?}"),
    }
}

#[tokio::test]
async fn watch_ignores_other_resources() {
    let (url, settings, _) = target(server::postgres(), "");
    let b = open(&url, &settings).await;
    let (mine, theirs) = (
        Resource::new("mine").unwrap(),
        Resource::new("theirs").unwrap(),
    );
    let id = LeaseId::generate();
    let req = AcquireRequest {
        resource: &theirs,
        id: &id,
        principal: "tester",
        ttl: Duration::from_secs(60),
    };
    assert!(matches!(
        b.try_acquire(&req).await,
        Ok(Acquire::Acquired(_))
    ));
    let mut watch = b.watch(&mine).await.expect("watch").expect("a watch");
    // The watch stands in the waiters' line first, and says once when it is in force (the
    // resource has no row, so it may be free).
    assert!(watch.wakes_once_armed());
    tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .expect("armed within 5s")
        .expect("armed");
    assert!(b.release(&theirs, &id).await.expect("release"));
    let fired = tokio::time::timeout(Duration::from_millis(500), watch.changed()).await;
    assert!(fired.is_err(), "woke for another resource: {fired:?}");
}

#[tokio::test]
async fn listen_false_means_polling() {
    let (url, settings, _) = target(server::postgres(), "listen = false");
    let b = open(&url, &settings).await;
    assert!(!b.capabilities().watch);
    let res = Resource::new("poll").unwrap();
    assert!(b.watch(&res).await.expect("watch").is_none());
}

#[tokio::test]
async fn reconnects_after_the_server_ends_the_session() {
    let s = server::postgres();
    let (url, settings, table) = target(s, "");
    let b = open(&url, &settings).await;
    let res = Resource::new("reconnect").unwrap();
    let id = LeaseId::generate();
    let req = AcquireRequest {
        resource: &res,
        id: &id,
        principal: "tester",
        ttl: Duration::from_secs(60),
    };
    assert!(matches!(
        b.try_acquire(&req).await,
        Ok(Acquire::Acquired(_))
    ));
    // 57P01 admin_shutdown for this backend's session.
    let killed = superuser(s)
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'lockrun' AND query LIKE $1",
            &[&format!("%{table}%")],
        )
        .await
        .expect("terminate")
        .get::<_, i64>(0);
    assert_eq!(killed, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The dead connection is noticed and replaced; at most one call sees it fail.
    let first = b.renew(&res, &id, Duration::from_secs(60)).await;
    let renewed = match first {
        Ok(r) => r,
        Err(e) if e.is_retryable() => b
            .renew(&res, &id, Duration::from_secs(60))
            .await
            .expect("renew after reconnecting"),
        Err(e) => panic!("{e:?}"),
    };
    assert!(matches!(renewed, Renewal::Renewed(_)));
}

#[tokio::test]
async fn a_wrong_password_never_shows() {
    let s = server::postgres();
    let url = BackendUrl::parse(&format!(
        "postgres://postgres:hunter2-xyzzy@127.0.0.1:{}/postgres",
        s.port
    ))
    .unwrap();
    let err = Postgres::open(&url, &Settings::default())
        .await
        .expect_err("wrong password");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}

#[tokio::test]
async fn first_use_creates_schema_and_table_once_under_contention() {
    let s = server::postgres();
    let schema = format!("s_{}", server::prefix());
    let (url, settings, table) = target(s, &format!("schema = \"{schema}\""));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (url, settings) = (url.clone(), settings.clone());
            tokio::spawn(async move {
                let b = Postgres::open(&url, &settings).await.expect("open");
                let res = Resource::new(format!("first-use-{i}")).unwrap();
                let id = LeaseId::generate();
                let req = AcquireRequest {
                    resource: &res,
                    id: &id,
                    principal: "tester",
                    ttl: Duration::from_secs(60),
                };
                b.try_acquire(&req).await
            })
        })
        .collect();
    for t in futures_util::future::join_all(tasks).await {
        let out = t.expect("task");
        assert!(matches!(out, Ok(Acquire::Acquired(_))), "{out:?}");
    }
    let n = superuser(s)
        .await
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".\"{table}\""),
            &[],
        )
        .await
        .expect("count")
        .get::<_, i64>(0);
    assert_eq!(n, 8);
}
