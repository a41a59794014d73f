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
    // Trusted no longer than the TTL from the grant less the safety margin (50 ms here), as a
    // renewed lease is, so that lost() resolves before the store could grant the lease to anyone
    // else (a deadline, not a measured wake-up, so a loaded machine cannot make this flaky).
    let trusted_until = match *guard.state().borrow() {
        lockrun::heartbeat::State::Held { trusted_until } => trusted_until,
        other => panic!("lost at once: {other:?}"),
    };
    assert!(trusted_until <= granted + Duration::from_millis(250));
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

#[tokio::test]
async fn out_of_range_durations_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let lock = Lock::new(backend(&dir).await, "job").unwrap();
    for l in [
        lock.clone().ttl(Duration::MAX),
        lock.clone().ttl(Duration::MAX).renew(false),
        lock.clone().ttl(Duration::ZERO).renew(false),
        lock.clone().heartbeat(Some(Duration::MAX), None),
        lock.clone().heartbeat(None, Some(Duration::MAX)),
        lock.clone().heartbeat(Some(Duration::from_nanos(1)), None),
    ] {
        assert!(matches!(l.acquire().await, Err(lockrun::Error::Invalid(_))));
    }
    assert!(!lock.is_locked().await.unwrap(), "nothing was granted");
    // "Wait forever", spelt as the longest wait.
    let g = lock.acquire_timeout(Duration::MAX).await.unwrap().unwrap();
    assert!(lock.is_locked().await.unwrap());
    g.release().await.unwrap();
}

/// A guard dropped when `main` returns, or by `?` there, is released although its runtime runs
/// no task after that.
#[test]
fn a_guard_dropped_as_the_runtime_ends_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/locks", dir.path().display());
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let held = |url: &str| {
        rt().block_on(async {
            let lock = Lock::new(lockrun::open(url).await.unwrap(), "job").unwrap();
            lock.is_locked().await.unwrap()
        })
    };
    // Dropped inside the runtime's last poll.
    rt().block_on(async {
        let lock = Lock::new(lockrun::open(&url).await.unwrap(), "job").unwrap();
        let _guard = lock.acquire().await.unwrap();
    });
    assert!(!held(&url));
    // Dropped outside the runtime, which is still there.
    let runtime = rt();
    let guard = runtime.block_on(async {
        let lock = Lock::new(lockrun::open(&url).await.unwrap(), "job").unwrap();
        lock.acquire().await.unwrap()
    });
    drop(guard);
    assert!(!held(&url));
    drop(runtime);
}

#[tokio::test]
async fn errors_map_to_the_cli_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let lock = Lock::new(backend(&dir).await, "job").unwrap();
    let _g = lock.acquire().await.unwrap();
    let busy = lock
        .clone()
        .wait(Wait::AtMost(Duration::ZERO))
        .acquire()
        .await
        .unwrap_err();
    assert_eq!(busy.exit().code(), 75);
    let bad = Lock::new(backend(&dir).await, "").unwrap_err();
    assert_eq!(bad.exit().code(), 2);
    let Err(url) = lockrun::open("nope://x").await else {
        panic!("opened nope://x")
    };
    assert_eq!(url.exit().code(), 78, "{url}");
}

/// `Lock::configured` takes the backend, principal and TTL that the config file chooses for the
/// resource. The configuration comes from the environment, which is the process's: the test
/// runs its checks in a child process of its own.
#[test]
fn a_configured_lock_follows_the_plan_for_its_resource() {
    const CHILD: &str = "LOCKRUN_TEST_CONFIGURED_CHILD";
    if let Some(role) = std::env::var_os(CHILD) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        return rt.block_on(async {
            if role == "broken" {
                let e = Lock::configured("nightly-report").await.unwrap_err();
                assert!(matches!(e, lockrun::Error::Config(_)), "{e:?}");
                assert_eq!(e.exit().code(), 78);
                assert!(e.to_string().contains("unknown key 'bakend'"), "{e}");
                return;
            }
            let lock = Lock::configured("nightly-report").await.unwrap();
            let guard = lock.acquire().await.unwrap();
            let lease = guard.lease().clone();
            assert_eq!(lease.principal, "cron@test");
            let ttl = lease.expires_at.duration_since(lease.acquired_at).unwrap();
            assert_eq!(ttl, Duration::from_secs(120));
            guard.into_lease();
            // Another resource gets the [default] section's backend, where that lease is not.
            let other = Lock::configured("other").await.unwrap();
            assert!(other.try_acquire().await.unwrap().is_some());
            let e = Lock::configured("").await.unwrap_err();
            assert_eq!(e.exit().code(), 2, "{e}");
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[default]\nbackend = \"file://{d}/default\"\nprincipal = \"cron@test\"\nrun_ttl = \"2m\"\n\
             [resource.\"nightly-report\"]\nbackend = \"file://{d}/reports\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let child = |config: &std::path::Path, role: &str| {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "a_configured_lock_follows_the_plan_for_its_resource",
        ])
        .args(["--test-threads", "1"])
        .env(CHILD, role);
        for (k, _) in std::env::vars() {
            if (k.starts_with("LOCKRUN_") && k != CHILD) || k.starts_with("XDG_") {
                c.env_remove(k);
            }
        }
        c.env("LOCKRUN_CONFIG", config).output().unwrap()
    };
    let ok = |o: std::process::Output| {
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // The child ran the test (not zero tests, which would also succeed).
        assert!(String::from_utf8_lossy(&o.stdout).contains("1 passed"));
    };
    ok(child(&config, "plan"));
    let records = |sub: &str| std::fs::read_dir(dir.path().join(sub)).map_or(0, |d| d.count());
    assert!(
        records("reports") > 0,
        "nightly-report's lease is in its own backend"
    );
    // A broken config file is a configuration error (78), not a panic.
    std::fs::write(&config, "[default]\nbakend = 1\n").unwrap();
    ok(child(&config, "broken"));
}

/// The inotify instances and io_uring rings this process has open: a wait's watch on the file
/// backend, and the ring that closes it (one lingers on purpose until the next close).
fn wait_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| {
                let l = l.to_string_lossy();
                l.contains("inotify") || l.contains("io_uring")
            })
        })
        .count()
}

#[tokio::test]
async fn finished_waits_leave_no_descriptors_open() {
    let dir = tempfile::tempdir().unwrap();
    let lock = Lock::new(backend(&dir).await, "job").unwrap();
    let _held = lock.acquire().await.unwrap();
    // One wait first, so that whatever a wait keeps for the process (a closing ring) exists.
    assert!(lock
        .acquire_timeout(Duration::from_millis(20))
        .await
        .unwrap()
        .is_none());
    let before = wait_descriptors();
    // Waits side by side (a service waiting for several resources), each given up by its
    // deadline or by dropping its future.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let lock = lock.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                assert!(lock
                    .acquire_timeout(Duration::from_millis(50))
                    .await
                    .unwrap()
                    .is_none());
            } else {
                let waited = tokio::time::timeout(Duration::from_millis(50), lock.acquire()).await;
                assert!(waited.is_err());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Other tests of this binary run alongside and may be waiting too; and where io_uring is
    // refused, a thread closes each instance, a moment later.
    let end = Instant::now() + Duration::from_secs(2);
    let mut after = wait_descriptors();
    while after > before + 4 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        after = wait_descriptors();
    }
    assert!(
        after <= before + 4,
        "20 finished waits left {} inotify instances or rings open",
        after.saturating_sub(before)
    );
}

/// Holds the kernel lock of resource `name` in `dir`'s lock directory (as another process's
/// read-decide-write step does, for microseconds) for `hold`, on a thread.
fn busy_lock_file(
    dir: &tempfile::TempDir,
    name: &str,
    hold: Duration,
) -> std::thread::JoinHandle<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(dir.path().join(format!("locks/{name}.lock"))).unwrap();
    // SAFETY: flock on an open descriptor.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    std::thread::spawn(move || {
        std::thread::sleep(hold);
        drop(file);
    })
}

/// A release cut short (a timeout around it, here while another process holds the lock file)
/// leaves the guard to its drop, which releases: the lease used to stay held until its TTL.
#[test]
fn a_cancelled_release_still_releases() {
    let dir = tempfile::tempdir().unwrap();
    let rt = current_thread();
    rt.block_on(async {
        let lock = Lock::new(backend(&dir).await, "job")
            .unwrap()
            .ttl(Duration::from_secs(60));
        let guard = lock.acquire().await.unwrap();
        let busy = busy_lock_file(&dir, "job", Duration::from_millis(800));
        let cut = tokio::time::timeout(Duration::from_millis(200), guard.release()).await;
        assert!(cut.is_err(), "the release was not cut short");
        busy.join().unwrap();
        let holder = lock.current().await.unwrap();
        assert!(holder.is_none(), "still held: {holder:?}");
    });
}

/// On a multi-thread runtime, a task that acquires and then blocks its worker (CPU-bound work,
/// a blocking call) keeps its lease while another worker is free: the renewer used to sit in the
/// blocked worker's LIFO slot, never run, and the lease was lost at its deadline.
#[test]
fn a_task_that_blocks_its_worker_keeps_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = rt.block_on(backend(&dir));
    let kept = rt.block_on(async move {
        tokio::spawn(async move {
            let lock = Lock::new(backend, "job")
                .unwrap()
                .ttl(Duration::from_secs(2));
            let guard = lock.acquire().await.unwrap();
            std::thread::sleep(Duration::from_secs(3));
            let holder = lock.current().await.unwrap().map(|l| l.id);
            (!guard.is_lost(), holder.as_ref() == Some(guard.id()))
        })
        .await
        .unwrap()
    });
    assert_eq!(kept, (true, true));
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_guard_dropped_while_its_runtime_is_idle_is_released_by_then() {
    let dir = tempfile::tempdir().unwrap();
    let rt = current_thread();
    rt.block_on(async {
        let lock = Lock::new(backend(&dir).await, "job").unwrap();
        let guard = lock.acquire().await.unwrap();
        let busy = busy_lock_file(&dir, "job", Duration::from_millis(100));
        drop(guard);
        // No await in between: the runtime ran nothing else, yet the lease is free.
        let holder = lock.current().await.unwrap();
        assert!(holder.is_none(), "still held after drop: {holder:?}");
        busy.join().unwrap();
    });
}

#[test]
fn a_guard_dropped_after_its_runtime_is_released_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let rt = current_thread();
    let (lock, guard) = rt.block_on(async {
        let lock = Lock::new(backend(&dir).await, "job").unwrap();
        let guard = lock.acquire().await.unwrap();
        (lock, guard)
    });
    drop(rt);
    let busy = busy_lock_file(&dir, "job", Duration::from_millis(100));
    drop(guard);
    busy.join().unwrap();
    let holder = current_thread().block_on(lock.current()).unwrap();
    assert!(holder.is_none(), "still held after drop: {holder:?}");
}

#[test]
fn acquiring_outside_a_runtime_is_an_error_not_a_panic() {
    use std::future::Future;
    use std::task::{Context, Poll, Wake, Waker};
    struct Nothing;
    impl Wake for Nothing {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = current_thread().block_on(backend(&dir));
    let lock = Lock::new(backend, "job").unwrap();
    // Polled by hand, with no tokio runtime anywhere (as an executor of another kind would).
    let mut attempt = Box::pin(lock.try_acquire());
    let waker = Waker::from(std::sync::Arc::new(Nothing));
    match attempt.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(Err(lockrun::Error::Invalid(e))) => {
            assert!(e.to_string().contains("needs a tokio runtime"), "{e}")
        }
        other => panic!(
            "expected an error at once, got {:?}",
            other.map(|r| r.map(|g| g.is_some()))
        ),
    }
}
