//! The library API: a [`Lock`] on a named resource, and the [`Guard`] that holds it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lockrun::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! use std::time::Duration;
//!
//! let backend = lockrun::open(&format!("file://{}", dir.path().display())).await?;
//! let lock = lockrun::Lock::new(backend, "nightly-report")?.ttl(Duration::from_secs(30));
//! let guard = lock.acquire().await?; // waits while someone else holds it
//! let token = guard.fencing_token(); // pass it to whatever you protect
//! assert!(lock.try_acquire().await?.is_none()); // a second owner gets nothing
//! tokio::select! {
//!     _ = tokio::time::sleep(Duration::from_millis(10)) => {} // the work
//!     _ = guard.lost() => panic!("stop working: the lease is gone"),
//! }
//! guard.release().await?;
//! # assert!(token.is_some());
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::{AcquireRequest, Backend};
use crate::error::Error;
use crate::heartbeat::{self, Beat, State, Timing};
use crate::lease::{Lease, LeaseId, Resource};
use crate::wait::{self, Event, Order, Outcome, Retry, Wait};

/// A lock on one resource of one backend: the settings for acquiring it. Cheap to clone.
#[derive(Clone)]
pub struct Lock {
    backend: Arc<dyn Backend>,
    resource: Resource,
    ttl: Duration,
    principal: Option<String>,
    wait: Wait,
    renew: bool,
    heartbeat: Option<Duration>,
    kill_after: Option<Duration>,
    beats: Option<mpsc::UnboundedSender<Beat>>,
    retry: Retry,
    order: Order,
}

impl Lock {
    /// A lock on `resource` (validated: 1..=255 bytes, no control characters). Defaults: TTL 30s,
    /// renewed every TTL/3 while the guard lives, principal `user@host`, wait forever.
    pub fn new(backend: Arc<dyn Backend>, resource: &str) -> Result<Lock, Error> {
        Ok(Lock {
            backend,
            resource: Resource::new(resource)?,
            ttl: Duration::from_secs(30),
            principal: None,
            wait: Wait::Forever,
            renew: true,
            heartbeat: None,
            kill_after: None,
            beats: None,
            retry: Retry::FailFast,
            order: Order::Race,
        })
    }

    /// A lock on `resource` as `lockrun run` would take it: the backend, principal, TTL (`run_ttl`,
    /// as the guard renews it), wait and order that the lockrun configuration (config file and
    /// `LOCKRUN_*` environment, see [`crate::open_configured`]) chooses for that resource. The
    /// builder methods can still change any of them.
    pub async fn configured(resource: &str) -> Result<Lock, Error> {
        let (backend, plan) = crate::open_configured(resource).await?;
        Ok(Lock::new(backend, resource)?
            .principal(plan.principal)
            .ttl(plan.run_ttl)
            .wait(plan.wait)
            .order(if plan.fair { Order::Fair } else { Order::Race }))
    }

    /// The lease TTL: at least 1ms and at most 10 years ([`crate::lease::MAX_TTL`]); at least
    /// 500ms when the guard renews it (the default). Checked when acquiring.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Who holds it, shown to people who wait (default `user@host`).
    pub fn principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// How long [`Lock::acquire`] waits for a busy resource.
    pub fn wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    /// Renewal cadence (default TTL/3) and the grace the CLI gives a command between TERM and
    /// KILL; validated against the TTL at acquire time.
    pub fn heartbeat(mut self, every: Option<Duration>, kill_after: Option<Duration>) -> Self {
        self.heartbeat = every;
        self.kill_after = kill_after;
        self
    }

    /// Whether the guard renews the lease in the background (default true). Without renewal the
    /// lease simply ends at its TTL unless renewed by other means (`lockrun renew`); the guard
    /// counts it lost a safety margin before that (5% of the TTL within [50ms, 2s]).
    pub fn renew(mut self, renew: bool) -> Self {
        self.renew = renew;
        self
    }

    /// What to do with errors that may go away while acquiring ([`Retry::FailFast`] by default).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// In which order waiters get the resource ([`Order::Race`] by default; [`Order::Fair`] is
    /// first come, first served, on backends that keep a line of waiters).
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Reports every renewal attempt of the guards this lock grants (round-trip times, failures,
    /// loss). The receiver must be drained.
    pub fn report_renewals(mut self, to: mpsc::UnboundedSender<Beat>) -> Self {
        self.beats = Some(to);
        self
    }

    /// The resource.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// The renewal timing this lock would use, validated.
    pub fn timing(&self) -> Result<Timing, Error> {
        Timing::new(self.ttl, self.heartbeat, self.kill_after)
            .map_err(|e| Error::Invalid(crate::lease::InvalidInput(e)))
    }

    /// Acquires the lease, waiting as configured ([`Wait::Forever`] by default).
    /// Returns [`Error::Busy`] when a limited wait runs out.
    pub async fn acquire(&self) -> Result<Guard, Error> {
        self.acquire_reporting(self.wait, &mut |_| {}).await
    }

    /// One attempt: `None` when the resource is busy.
    pub async fn try_acquire(&self) -> Result<Option<Guard>, Error> {
        self.acquire_at_most(Duration::ZERO).await
    }

    /// Waits at most `limit`: `None` when the resource is still busy then.
    pub async fn acquire_timeout(&self, limit: Duration) -> Result<Option<Guard>, Error> {
        self.acquire_at_most(limit).await
    }

    async fn acquire_at_most(&self, limit: Duration) -> Result<Option<Guard>, Error> {
        match self
            .acquire_reporting(Wait::AtMost(limit), &mut |_| {})
            .await
        {
            Ok(g) => Ok(Some(g)),
            Err(Error::Busy(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Acquires under `wait`, reporting progress (busy holders, retried errors) to `on_event`.
    pub async fn acquire_reporting(
        &self,
        wait: Wait,
        on_event: &mut (dyn FnMut(Event<'_>) + Send),
    ) -> Result<Guard, Error> {
        // Checked before anything is granted: the guard renews and releases on this runtime.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Invalid(crate::lease::InvalidInput(
                "acquiring a lease needs a tokio runtime to renew and release it on (built \
                 with enable_all()); call it from within one"
                    .into(),
            )));
        }
        // The TTL's bounds: checked by the renewal timing, or here when there is none.
        let timing = if self.renew {
            Some(self.timing()?)
        } else {
            crate::lease::check_ttl(self.ttl)?;
            None
        };
        let principal = self
            .principal
            .clone()
            .unwrap_or_else(crate::lease::default_principal);
        let id = LeaseId::generate();
        let req = AcquireRequest {
            resource: &self.resource,
            id: &id,
            principal: &principal,
            ttl: self.ttl,
        };
        match wait::acquire(&*self.backend, &req, wait, self.retry, self.order, on_event).await? {
            Outcome::Busy(holder) => Err(Error::Busy(holder.map(Box::new))),
            Outcome::Granted(g) => {
                let guard = Guard::new(
                    Arc::clone(&self.backend),
                    g.lease,
                    g.sent_at,
                    self.ttl,
                    timing.map(|t| (t, self.beats.clone())),
                );
                // On a multi-thread runtime the renewer just spawned sits in this worker's
                // LIFO slot, which other workers do not steal: if the caller's task then blocks
                // this worker, it would never run, however idle the others. Yielding once lets
                // it start (and wait on its timer, whose wake-up any worker takes).
                if tokio::runtime::Handle::current().runtime_flavor()
                    == tokio::runtime::RuntimeFlavor::MultiThread
                {
                    tokio::task::yield_now().await;
                }
                Ok(guard)
            }
        }
    }

    /// Whether anyone holds the resource now.
    pub async fn is_locked(&self) -> Result<bool, Error> {
        Ok(self.current().await?.is_some())
    }

    /// The current holder's lease, if any.
    pub async fn current(&self) -> Result<Option<Lease>, Error> {
        Ok(self.backend.current(&self.resource).await?)
    }
}

/// A held lease. While it lives it renews the lease in the background; [`Guard::lost`] resolves
/// when the lease can no longer be trusted. [`Guard::release`] ends it and says whether it was
/// still held.
///
/// Dropping the guard releases too. On the file backend the release is done when `drop`
/// returns, inside or outside any runtime, also once the guard's runtime is shut down: it runs
/// on a thread of its own, usually for well under a millisecond. (`drop` waits for it at most
/// 2 s: should another process hold the resource's kernel lock longer, being stopped, the
/// release goes on in the background and is lost if this process ends first.) On a network
/// backend it goes on as a task on the runtime the guard was made in, which is lost if that
/// runtime stops first, leaving the lease to run out at its TTL: there, `release().await`
/// before returning from `main`.
pub struct Guard {
    backend: Arc<dyn Backend>,
    lease: Lease,
    state: watch::Receiver<State>,
    renewer: Option<JoinHandle<()>>,
    /// The runtime the guard was made in, where a drop's release runs.
    runtime: Option<tokio::runtime::Handle>,
    done: bool,
}

impl Guard {
    fn new(
        backend: Arc<dyn Backend>,
        lease: Lease,
        sent_at: Instant,
        ttl: Duration,
        timing: Option<(Timing, Option<mpsc::UnboundedSender<Beat>>)>,
    ) -> Guard {
        let (state, renewer) = match timing {
            Some((t, beats)) => {
                let (rx, task) = heartbeat::spawn(
                    Arc::clone(&backend),
                    lease.resource.clone(),
                    lease.id.clone(),
                    t,
                    sent_at,
                    beats,
                );
                (rx, Some(task))
            }
            // Not renewed: trusted for the TTL from when the grant was requested, less the
            // margin a renewed lease keeps, so that `lost()` resolves before the store could
            // grant the lease to anyone else.
            None => (
                watch::channel(State::Held {
                    trusted_until: sent_at + ttl - heartbeat::margin(ttl),
                })
                .1,
                None,
            ),
        };
        Guard {
            backend,
            lease,
            state,
            renewer,
            runtime: tokio::runtime::Handle::try_current().ok(),
            done: false,
        }
    }

    /// The lease as granted (the expiry is that of the grant, not of later renewals).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The lease id: with the resource name, all another process needs to renew, check or
    /// release this lease.
    pub fn id(&self) -> &LeaseId {
        &self.lease.id
    }

    /// The fencing token, on backends that provide one.
    pub fn fencing_token(&self) -> Option<u64> {
        self.lease.fencing_token
    }

    /// The renewal state, for supervisors that act on it.
    pub fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// A cheap check: true once a renewal found the lease gone or someone else's, or the local
    /// safety deadline passed without a successful renewal.
    pub fn is_lost(&self) -> bool {
        match *self.state.borrow() {
            State::Lost => true,
            State::Held { trusted_until } => Instant::now() >= trusted_until,
        }
    }

    /// Resolves when the lease is lost (see [`Guard::is_lost`]).
    pub async fn lost(&self) {
        let mut rx = self.state.clone();
        loop {
            let deadline = match *rx.borrow_and_update() {
                State::Lost => return,
                State::Held { trusted_until } => trusted_until,
            };
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The renewer stopped: the deadline is final.
                        tokio::time::sleep_until(deadline).await;
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Stops renewing and releases the lease. `Ok(false)` when it had already ended. Cancelled
    /// (a timeout around it), the guard is dropped with the release unfinished, and the drop
    /// releases, as for any guard.
    pub async fn release(mut self) -> Result<bool, Error> {
        self.stop_renewing();
        let released = self
            .backend
            .release(&self.lease.resource, &self.lease.id)
            .await;
        self.done = true;
        Ok(released?)
    }

    /// Stops renewing and keeps the lease: it lasts until its TTL runs out or someone releases
    /// it by id (what `lockrun acquire` does).
    pub fn into_lease(mut self) -> Lease {
        self.stop_renewing();
        self.done = true;
        self.lease.clone()
    }

    fn stop_renewing(&mut self) {
        if let Some(t) = self.renewer.take() {
            t.abort();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop_renewing();
        if self.done {
            return;
        }
        let (backend, lease) = (Arc::clone(&self.backend), self.lease.clone());
        if backend.capabilities().local {
            // A local store needs no connection of the guard's runtime: the release runs to
            // its end on a thread with a runtime of its own, so it is done when `drop` returns,
            // whether the guard's runtime is running, idle, shutting down or gone.
            if let Some(done) = release_aside(Arc::clone(&backend), lease.clone()) {
                let _ = done.recv_timeout(DROP_RELEASE_WAIT);
                return;
            }
        }
        let Some(rt) = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.runtime.take())
        else {
            return;
        };
        let release = async move {
            if let Err(e) = backend.release(&lease.resource, &lease.id).await {
                tracing::warn!("releasing {} on drop failed: {e}", lease.resource);
            }
        };
        rt.spawn(release);
    }
}

/// How long dropping a guard of a local store waits for its release: the kernel lock it takes
/// is held by others for microseconds, unless one of them is stopped.
const DROP_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// A release started on a thread of its own, which says when it is done. `None` if no thread
/// or runtime could be made.
fn release_aside(backend: Arc<dyn Backend>, lease: Lease) -> Option<std::sync::mpsc::Receiver<()>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    std::thread::Builder::new()
        .name("lockrun-release".into())
        .spawn(move || {
            let released = rt.block_on(backend.release(&lease.resource, &lease.id));
            if let Err(e) = released {
                tracing::warn!("releasing {} on drop failed: {e}", lease.resource);
            }
            let _ = tx.send(());
        })
        .ok()?;
    Some(rx)
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("resource", &self.resource)
            .field("ttl", &self.ttl)
            .field("principal", &self.principal)
            .field("wait", &self.wait)
            .field("renew", &self.renew)
            .field("heartbeat", &self.heartbeat)
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}
