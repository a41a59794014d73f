//! The library API, through the public crate interface, on the file backend.

use std::time::{Duration, Instant};

use lockrun::{Lock, Wait};

async fn backend(dir: &tempfile::TempDir) -> std::sync::Arc<dyn lockrun::backend::Backend> {
    lockrun::open(&format!("file://{}/locks", dir.path().display()))
        .await
        .unwrap()
}

#[tokio::test]
async fn acquire_try_timeout_release() {
    let dir = tempfile::tempdir().unwrap();
    let lock = Lock::new(backend(&dir).await, "job")
        .unwrap()
        .principal("lib@test");
    assert!(!lock.is_locked().await.unwrap());
    let guard = lock.acquire().await.unwrap();
    assert_eq!(guard.fencing_token(), Some(1));
    assert_eq!(guard.id().as_str().len(), 32);
    assert!(lock.is_locked().await.unwrap());
    let holder = lock.current().await.unwrap().unwrap();
    assert_eq!(holder.principal, "lib@test");
    assert_eq!(&holder.id, guard.id());
    assert!(lock.try_acquire().await.unwrap().is_none());
    let t = Instant::now();
    assert!(lock
        .acquire_timeout(Duration::from_millis(200))
        .await
        .unwrap()
        .is_none());
    assert!(t.elapsed() >= Duration::from_millis(200));
    let limited = lock.clone().wait(Wait::AtMost(Duration::from_millis(50)));
    assert!(matches!(
        limited.acquire().await,
        Err(lockrun::Error::Busy(Some(_)))
    ));
    assert!(guard.release().await.unwrap());
    let again = lock
        .try_acquire()
        .await
        .unwrap()
        .expect("free after release");
    assert_eq!(again.fencing_token(), Some(2));
}

#[tokio::test]
async fn dropping_the_guard_releases() {
    let dir = tempfile::tempdir().unwrap();
    let lock = Lock::new(backend(&dir).await, "job").unwrap();
    drop(lock.acquire().await.unwrap());
    let mut free = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if !lock.is_locked().await.unwrap() {
            free = true;
            break;
        }
    }
    assert!(free, "drop released the lease");
}

#[tokio::test]
async fn the_guard_renews_and_reports_loss() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir).await;
    let lock = Lock::new(b.clone(), "job")
        .unwrap()
        .ttl(Duration::from_secs(1));
    let guard = lock.acquire().await.unwrap();
    // Renewed in the background: still held well after the first TTL.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!guard.is_lost());
    assert_eq!(&lock.current().await.unwrap().unwrap().id, guard.id());
    // Another process releases it by id: the next renewal notices.
    assert!(b.release(lock.resource(), guard.id()).await.unwrap());
    tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("lost() resolves");
    assert!(guard.is_lost());
}

#[tokio::test]
async fn a_guard_that_does_not_renew_is_lost_at_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let lock = Lock::new(backend(&dir).await, "job")
        .unwrap()
        .ttl(Duration::from_millis(300))
        .renew(false);
    let guard = lock.acquire().await.unwrap();
    let granted = tokio::time::Instant::now();
    // Trusted no longer than the TTL from the grant (a deadline, not a measured wake-up, so a
    // loaded machine cannot make this flaky).
    let trusted_until = match *guard.state().borrow() {
        lockrun::heartbeat::State::Held { trusted_until } => trusted_until,
        lockrun::heartbeat::State::Lost => panic!("lost at once"),
    };
    assert!(trusted_until <= granted + Duration::from_millis(300));
    guard.lost().await;
    assert!(tokio::time::Instant::now() >= trusted_until);
    assert!(guard.is_lost());
    let lease = guard.into_lease();
    assert_eq!(lease.resource.as_str(), "job");
}

#[tokio::test]
async fn into_lease_keeps_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let lock = Lock::new(backend(&dir).await, "job")
        .unwrap()
        .renew(false)
        .ttl(Duration::from_secs(60));
    let lease = lock.acquire().await.unwrap().into_lease();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(lock.current().await.unwrap().unwrap().id, lease.id);
}

#[tokio::test]
async fn bad_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Lock::new(backend(&dir).await, ""),
        Err(lockrun::Error::Invalid(_))
    ));
    assert!(lockrun::open("nope://x").await.is_err());
    let lock = Lock::new(backend(&dir).await, "job")
        .unwrap()
        .ttl(Duration::from_millis(10));
    assert!(
        matches!(lock.acquire().await, Err(lockrun::Error::Invalid(_))),
        "TTL too short to renew"
    );
}
