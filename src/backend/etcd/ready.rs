//! Lock leases granted ahead for waiters.
//!
//! A waiter's failed attempt would otherwise grant an etcd lease and revoke it again, two raft
//! writes, for every release it is woken by. Instead a waiter keeps the etcd lease of its first
//! failed attempt, keeps it alive while it waits, and attempts with it: the acquiring
//! transaction plus a keep-alive sent with it. The keep-alive restarts the lease's TTL no
//! earlier than the attempt began, so the lease is good for its whole TTL from the moment the
//! waiting policy measures from. When the wait ends without the lease being used, it is revoked.
//!
//! Racing waiters are known by their watch (the policy subscribes when it starts waiting, and
//! closes the watch when it stops); a `--fair` waiter's ticket holds its own.

use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use super::ops::Grant;
use super::Etcd;
use crate::backend::{Acquire, AcquireRequest, Error};
use crate::lease::LeaseId;

/// The longest interval between two keep-alives of a lease granted ahead.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(3);

/// A lock key's etcd lease granted ahead, kept alive until used or given up. Dropping it stops
/// the keep-alives; revoking is the owner's business.
pub(super) struct Ready {
    pub grant: Grant,
    keeper: JoinHandle<()>,
}

impl Drop for Ready {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Ready {
    /// Starts keeping `grant` alive (at most every 3 s, and at least three times per TTL).
    pub fn new(etcd: &Etcd, grant: Grant) -> Ready {
        let every = KEEP_ALIVE_EVERY.min(Duration::from_secs(grant.ttl.max(1) as u64) / 3);
        Ready {
            grant,
            keeper: tokio::spawn(keep_alive(etcd.clone(), grant.id, every)),
        }
    }
}

/// The racing waiters of one key in this process: how many watches, and their leases.
#[derive(Default)]
pub(super) struct Waiters {
    watches: usize,
    ready: Vec<(LeaseId, Ready)>,
}

impl Etcd {
    /// Notes that a waiter watches `key`.
    pub(super) fn start_waiting(&self, key: &[u8]) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.entry(key.to_vec()).or_default().watches += 1;
        }
    }

    /// A watch of `key` ended: when it was the last, the leases granted ahead are revoked.
    pub(super) fn stop_waiting(&self, key: &[u8]) -> Vec<i64> {
        let Ok(mut waiting) = self.waiting.lock() else {
            return Vec::new();
        };
        let Some(w) = waiting.get_mut(key) else {
            return Vec::new();
        };
        w.watches = w.watches.saturating_sub(1);
        if w.watches > 0 {
            return Vec::new();
        }
        let w = waiting.remove(key).unwrap_or_default();
        w.ready.into_iter().map(|(_, r)| r.grant.id).collect()
    }

    /// Whether a waiter watches `key`, and the lease granted ahead for `id`, taken out.
    fn waiting_with(&self, key: &[u8], id: &LeaseId) -> (bool, Option<Ready>) {
        let Ok(mut waiting) = self.waiting.lock() else {
            return (false, None);
        };
        let Some(w) = waiting.get_mut(key) else {
            return (false, None);
        };
        let ready = w
            .ready
            .iter()
            .position(|(i, _)| i == id)
            .map(|at| w.ready.swap_remove(at).1);
        (true, ready)
    }

    /// Puts a lease granted ahead back for the next attempt, or revokes it when nobody waits
    /// on `key` any more.
    async fn keep_ready(&self, key: &[u8], id: &LeaseId, ready: Ready) {
        let kept = match self.waiting.lock() {
            Ok(mut waiting) => match waiting.get_mut(key) {
                Some(w) => {
                    w.ready.push((id.clone(), ready));
                    None
                }
                None => Some(ready),
            },
            Err(_) => Some(ready),
        };
        if let Some(ready) = kept {
            let lease = ready.grant.id;
            drop(ready);
            self.revoke(lease).await;
        }
    }

    /// One attempt of a racing waiter: with its lease granted ahead if it has one; otherwise
    /// granting one and, if the resource is busy, keeping it for the next attempt. Not a waiter
    /// (a single attempt, or the first before subscribing): a plain attempt.
    pub(super) async fn acquire_racing(&self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
        let key = self.key(req.resource);
        let (waiting, mut ready) = self.waiting_with(&key, req.id);
        if !waiting {
            return self.acquire_once(req, None).await;
        }
        let out = match ready.as_ref().map(|r| r.grant) {
            Some(grant) => self.acquire_ready(req, None, &mut ready, grant).await,
            None => {
                let t0 = SystemTime::now();
                let grant = self.grant(req.ttl).await?;
                let out = self.acquire_with(req, None, grant, t0, true).await;
                if let Ok(Acquire::Busy { .. }) = &out {
                    ready = Some(Ready::new(self, grant));
                }
                out
            }
        };
        if let Some(ready) = ready {
            self.keep_ready(&key, req.id, ready).await;
        }
        out
    }

    /// Acquires with the lease granted ahead in `ready` (see the module docs). `ready` is
    /// emptied when the lease was used or can no longer be.
    pub(super) async fn acquire_ready(
        &self,
        req: &AcquireRequest<'_>,
        queued: Option<&[u8]>,
        ready: &mut Option<Ready>,
        grant: Grant,
    ) -> Result<Acquire, Error> {
        let t0 = SystemTime::now();
        let (alive, out) = tokio::join!(
            self.keep_alive(grant.id),
            self.acquire_with(req, queued, grant, t0, true)
        );
        match out {
            Ok(Acquire::Acquired(lease)) => {
                // The key now holds the lease: the keeper must stop, and nothing may revoke it.
                *ready = None;
                let refreshed = match alive {
                    Ok(true) => true,
                    _ => self.keep_alive(grant.id).await.unwrap_or(false),
                };
                if refreshed {
                    Ok(Acquire::Acquired(lease))
                } else {
                    // Not known to be refreshed: give it back rather than trust it.
                    self.revoke(grant.id).await;
                    Err(Error::Unavailable(format!(
                        "{}: acquiring: could not refresh the etcd lease",
                        self.opts.name
                    )))
                }
            }
            Ok(busy) => {
                if !alive.unwrap_or(true) {
                    *ready = None; // expired: grant a new one next time
                }
                Ok(busy)
            }
            Err(e) => {
                // Revoked by `acquire_with` (unknown outcome), or gone (refused for it: it
                // expired); a new one is granted next time.
                *ready = None;
                Err(e)
            }
        }
    }
}

/// Keeps an etcd lease alive every `every` until the task is aborted or the lease is gone.
pub(super) async fn keep_alive(etcd: Etcd, lease: i64, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match etcd.keep_alive(lease).await {
            Ok(true) => {}
            // Gone: the waiter notices at its next attempt and starts over.
            Ok(false) => return,
            Err(e) => tracing::debug!("keeping a waiter's etcd lease alive: {e}"),
        }
    }
}
