//! The line of waiters behind `--fair` (see "Fair waiting" in the module docs of
//! [`crate::backend::etcd`]).
//!
//! A waiter's place is a key `<prefix>\0queue\0<resource>\0<etcd lease, hex>` attached to an etcd
//! lease of its own ([`QUEUE_TTL_S`]), kept alive in the background while it waits. Its order is
//! the key's create revision. A waiter is first when no key of the line was created before its
//! own; until then it watches only the key just before it, so each departure wakes one waiter.
//! Resource names have no control characters, so the line's keys never clash with a resource's
//! key, and `list` skips them.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchFilterType,
    WatchOptions,
};
use tokio::task::JoinHandle;

use super::ready::{keep_alive, Ready};
use super::Etcd;
use crate::backend::{Acquire, AcquireRequest, Error, Ticket, Watch};

/// The TTL of a place in line: how long a waiter that died keeps the ones behind it waiting.
const QUEUE_TTL_S: i64 = 10;
/// How often a waiter keeps its place alive.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(3);
/// How often a waiter checks its place even without a change event (a safety net).
const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// A waiter's place in the line of one resource.
pub(super) struct EtcdTicket {
    etcd: Etcd,
    /// The key prefix of the line: `<prefix>\0queue\0<resource>\0`.
    line: Vec<u8>,
    /// Stored in the waiter's key, for people looking at the line with etcdctl.
    principal: String,
    /// `None` once the place is given up (acquired, left, or found expired).
    place: Option<Place>,
    /// No place taken before this one remains (true stays true: later places are behind).
    first: bool,
    /// The place just before this one (`None` inside: nobody), as last read, not yet acted on.
    ahead: Option<Option<Vec<u8>>>,
    /// This waiter became first by waiting for the one before it, which most likely holds the
    /// resource now: look before trying.
    look_first: bool,
    /// The etcd lease the lock key will be attached to, granted ahead by the first in line while
    /// the resource is busy, so that acquiring after a release is one transaction.
    ready: Option<Ready>,
}

struct Place {
    key: Vec<u8>,
    /// The key's create revision: its order in the line.
    revision: i64,
    lease: i64,
    keeper: JoinHandle<()>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl EtcdTicket {
    /// Joins the line for `req.resource` at the back.
    pub(super) async fn join(etcd: Etcd, req: &AcquireRequest<'_>) -> Result<EtcdTicket, Error> {
        let mut line = etcd.opts.prefix.clone();
        line.extend_from_slice(b"\0queue\0");
        line.extend_from_slice(req.resource.as_str().as_bytes());
        line.push(0);
        let mut ticket = EtcdTicket {
            etcd,
            line,
            principal: req.principal.to_owned(),
            place: None,
            first: false,
            ahead: None,
            look_first: false,
            ready: None,
        };
        ticket.take_place().await?;
        Ok(ticket)
    }

    async fn take_place(&mut self) -> Result<(), Error> {
        const WHAT: &str = "joining the line of waiters";
        let etcd = &self.etcd;
        let lease = etcd
            .call(WHAT, |mut c| async move {
                c.lease_grant(QUEUE_TTL_S, None).await
            })
            .await?
            .id();
        let mut key = self.line.clone();
        key.extend_from_slice(format!("{lease:016x}").as_bytes());
        // Put the place, and read the newest two places: this one and the one before it.
        let last_two = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(2);
        let txn = Txn::new().and_then([
            TxnOp::put(
                key.clone(),
                self.principal.clone(),
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::get(self.line.clone(), Some(last_two)),
        ]);
        let joined = etcd.txn(WHAT, &txn).await.and_then(|resp| {
            let revision = resp.header().map(|h| h.revision());
            let mut keys = gets(resp)
                .next()
                .map(|mut g| g.take_kvs())
                .unwrap_or_default();
            match (revision, keys.first()) {
                (Some(revision), Some(kv)) if kv.key() == key => {
                    let ahead = keys.get_mut(1).map(|kv| kv.key().to_vec());
                    Ok((revision, ahead))
                }
                _ => Err(Error::Other(format!(
                    "{}: {WHAT}: etcd's answer lacks the new place",
                    etcd.opts.name
                ))),
            }
        });
        // On an unknown outcome, revoking the lease removes the key if it was put.
        let (revision, ahead) = match joined {
            Ok(joined) => joined,
            Err(e) => {
                etcd.revoke(lease).await;
                return Err(e);
            }
        };
        let keeper = tokio::spawn(keep_alive(etcd.clone(), lease, KEEP_ALIVE_EVERY));
        self.place = Some(Place {
            key,
            revision,
            lease,
            keeper,
        });
        self.first = false;
        self.ahead = Some(ahead);
        Ok(())
    }

    /// Reads whether this waiter's key still exists, and the key just before it in line.
    async fn look(&self, place: &Place) -> Result<(bool, Option<Vec<u8>>), Error> {
        let before = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_max_create_revision(place.revision - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1);
        let txn = Txn::new().and_then([
            TxnOp::get(place.key.clone(), Some(GetOptions::new().with_count_only())),
            TxnOp::get(self.line.clone(), Some(before)),
        ]);
        let resp = self.etcd.txn("waiting in line", &txn).await?;
        let mut gets = gets(resp);
        let (Some(mine), Some(mut before)) = (gets.next(), gets.next()) else {
            return Err(Error::Other(format!(
                "{}: waiting in line: etcd's answer lacks a read",
                self.etcd.opts.name
            )));
        };
        let ahead = before
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| kv.key().to_vec());
        Ok((mine.count() > 0, ahead))
    }

    /// Gives the place (and a lease granted ahead) up, revoking their etcd leases in the
    /// background.
    fn abandon(&mut self) {
        let leases = (self.place.take().map(|p| p.lease).into_iter())
            .chain(self.ready.take().map(|r| r.grant.id))
            .collect();
        self.etcd.revoke_later(leases);
    }
}

#[async_trait]
impl Ticket for EtcdTicket {
    async fn first(&mut self) -> Result<(), Error> {
        loop {
            if self.place.is_none() {
                self.take_place().await?;
            }
            if self.first {
                return Ok(());
            }
            let Some(place) = self.place.as_ref() else {
                continue;
            };
            let (present, ahead) = match self.ahead.take() {
                Some(ahead) => (true, ahead),
                None => self.look(place).await?,
            };
            if !present {
                // The place expired (this process was stopped, or cut off from etcd for longer
                // than the queue TTL): join again at the back.
                tracing::debug!("lost the place in line; joining again");
                self.abandon();
                continue;
            }
            let Some(ahead) = ahead else {
                self.first = true;
                return Ok(());
            };
            // Wait for the waiter ahead to leave (it acquired, gave up, or died). The watch starts
            // at the current revision, and a read once it is in force confirms that the waiter
            // ahead is still there, so that no departure is missed. (A watch from an earlier
            // revision would be served by etcd's catch-up loop, which runs every 100 ms: under
            // contention, where the revision moves on before the watch is made, a waiter moving
            // up then learnt of its predecessor's departure up to 100 ms late.)
            let options = WatchOptions::new().with_filters([WatchFilterType::NoPut]);
            let mut watch = self.etcd.key_watch(ahead.clone(), Some(options)).await?;
            let (present, now_ahead) = self.look(place).await?;
            if !present || now_ahead.as_ref() != Some(&ahead) {
                self.ahead = present.then_some(now_ahead);
                continue;
            }
            self.look_first = true;
            tokio::select! {
                r = watch.changed() => drop(r?),
                _ = tokio::time::sleep(RECHECK_EVERY) => {}
            }
        }
    }

    async fn try_acquire(&mut self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
        let Some(place) = self.place.as_ref() else {
            // Not in line (the caller skipped `first`): nothing to try yet.
            return Ok(Acquire::Busy {
                holder: None,
                expires_in: Some(Duration::ZERO),
            });
        };
        let key = place.key.clone();
        if std::mem::take(&mut self.look_first) {
            // Look, and grant the lock key's etcd lease ahead at the same time.
            let need = self.ready.is_none();
            let etcd = &self.etcd;
            let (busy, grant) = tokio::join!(etcd.busy(req.resource), async {
                if need {
                    Some(etcd.grant(req.ttl).await)
                } else {
                    None
                }
            });
            match grant {
                Some(Ok(grant)) => self.ready = Some(Ready::new(&self.etcd, grant)),
                // Best effort: without a lease granted ahead, acquiring grants one.
                Some(Err(e)) => tracing::debug!("granting ahead: {e}"),
                None => {}
            }
            if let Some(busy) = busy? {
                return Ok(busy);
            }
        }
        let out = match self.ready.as_ref().map(|r| r.grant) {
            Some(grant) => {
                let etcd = self.etcd.clone();
                etcd.acquire_ready(req, Some(&key), &mut self.ready, grant)
                    .await
            }
            None => self.etcd.acquire_once(req, Some(&key)).await,
        };
        match &out {
            // The transaction deleted the waiter's key: the next in line is already woken.
            Ok(Acquire::Acquired(_)) => self.abandon(),
            // Free, yet not granted: this waiter's key may be gone. Check before trying again.
            Ok(Acquire::Busy { holder: None, .. }) => self.first = false,
            _ => {}
        }
        out
    }

    async fn leave(mut self: Box<Self>) {
        if let Some(place) = self.place.take() {
            place.keeper.abort();
            self.etcd.revoke(place.lease).await;
        }
        if let Some(ready) = self.ready.take() {
            let lease = ready.grant.id;
            drop(ready);
            self.etcd.revoke(lease).await;
        }
    }
}

impl Drop for EtcdTicket {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// The reads of a transaction's answer, in order.
fn gets(resp: etcd_client::TxnResponse) -> impl Iterator<Item = etcd_client::GetResponse> {
    resp.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    })
}
