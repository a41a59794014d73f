//! The lease operations as etcd calls and transactions (see the module docs of
//! [`crate::backend::etcd`] for the protocol).

use std::time::{Duration, SystemTime};

use etcd_client::{Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::record::{epoch_ms, secs, ttl_secs, Record};
use super::{errors, Etcd};
use crate::backend::{Acquire, AcquireRequest, Error, Renewal};
use crate::lease::{Lease, LeaseId, Resource};

/// How often a guarded transaction is retried when the key changed between reading and writing
/// but still holds our lease (a concurrent renewal of the same lease).
const ATTEMPTS: usize = 3;

/// An etcd lease granted for a lock key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Grant {
    pub id: i64,
    /// The TTL asked for and the TTL granted, in seconds.
    pub want: i64,
    pub ttl: i64,
}

/// The key of a resource as read: the decoded value and the revisions that guard writes.
struct Held {
    rec: Record,
    create_revision: i64,
    mod_revision: i64,
}

impl Etcd {
    /// One acquire attempt. With `queued` (the caller's key in the line of waiters, see the
    /// `queue` submodule), the attempt also requires that key to still exist, and deletes it in
    /// the same transaction when it succeeds.
    pub(super) async fn acquire_once(
        &self,
        req: &AcquireRequest<'_>,
        queued: Option<&[u8]>,
    ) -> Result<Acquire, Error> {
        let t0 = SystemTime::now();
        let grant = self.grant(req.ttl).await?;
        self.acquire_with(req, queued, grant, t0, false).await
    }

    /// Grants an etcd lease for a lock key with the TTL `ttl` (rounded up to whole seconds).
    ///
    /// A grant that failed unanswered is [`Error::Unreached`] to the caller: even if etcd
    /// applies it late, an etcd lease that no key is attached to holds no resource (the key is
    /// written by the transaction after it) and runs out on its own, so there is no lockrun
    /// lease to give back or to name.
    pub(super) async fn grant(&self, ttl: Duration) -> Result<Grant, Error> {
        let want = ttl_secs(ttl);
        let grant = self
            .call("granting an etcd lease", |mut c| async move {
                c.lease_grant(want, None).await
            })
            .await
            .map_err(Error::unreached)?;
        Ok(Grant {
            id: grant.id(),
            want,
            ttl: grant.ttl(),
        })
    }

    /// One keep-alive of an etcd lease: false when etcd no longer knows it.
    pub(super) async fn keep_alive(&self, lease: i64) -> Result<bool, Error> {
        match self
            .call_raw(
                "keeping an etcd lease alive",
                self.command_limit(),
                |mut c| async move { c.lease_keep_alive(lease).await },
            )
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) if errors::is_lease_not_found(&e) => Ok(false),
            Err(e) => Err(errors::map(
                &self.opts.name,
                "keeping an etcd lease alive",
                e,
            )),
        }
    }

    /// The acquire transaction with an etcd lease granted at `t0` (see [`Etcd::acquire_once`]).
    /// A failed attempt revokes the etcd lease, unless it is a `waiter`'s: a waiter keeps it
    /// for its next attempt, and is told the holder from its record alone (see
    /// [`Etcd::describe`]). An attempt of unknown outcome leaves it to the give-back (a release
    /// of the attempt's lease id revokes it; see [`crate::wait`]).
    pub(super) async fn acquire_with(
        &self,
        req: &AcquireRequest<'_>,
        queued: Option<&[u8]>,
        grant: Grant,
        t0: SystemTime,
        waiter: bool,
    ) -> Result<Acquire, Error> {
        let key = self.key(req.resource);
        let rec = Record {
            id: req.id.clone(),
            principal: req.principal.to_owned(),
            acquired_at_ms: epoch_ms(t0),
            ttl_s: grant.want,
            etcd_lease: grant.id,
            etcd_ttl_s: grant.ttl,
        };
        let mut when = vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)];
        let mut then = vec![TxnOp::put(
            key.clone(),
            rec.encode(),
            Some(PutOptions::new().with_lease(rec.etcd_lease)),
        )];
        if let Some(q) = queued {
            when.push(Compare::create_revision(q, CompareOp::Greater, 0));
            then.push(TxnOp::delete(q, None));
        }
        let txn = Txn::new()
            .when(when)
            .and_then(then)
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = match self.txn("acquiring", &txn).await {
            Ok(resp) => resp,
            // Refused unapplied (the etcd lease had expired): nothing to give back.
            Err(e @ Error::Unreached(_)) => return Err(e),
            // Refused for good (permission denied): the transaction was not applied, and the
            // wait ends here; the etcd lease granted for it goes now, not at the end of its TTL
            // (review: an hour, for `acquire`).
            Err(e @ Error::Config(_)) => {
                self.revoke(rec.etcd_lease).await;
                return Err(e);
            }
            Err(e) => {
                // Unknown outcome: the transaction may still be applied. Revoking the etcd lease
                // undoes the grant if it was made, and keeps it from being made later. That is
                // the give-back the caller sends next, bounded (a release of this id revokes a
                // remembered lease first: see `crate::wait`), rather than one more full
                // command_timeout here, against a cluster that is not answering.
                self.remember(&key, req.id, rec.etcd_lease);
                return Err(e);
            }
        };
        if resp.succeeded() {
            self.remember(&key, req.id, rec.etcd_lease);
            let token = resp.header().map_or(0, |h| h.revision());
            let granted = secs(rec.etcd_ttl_s);
            return Ok(Acquire::Acquired(rec.lease(
                req.resource,
                token,
                t0 + granted,
                granted,
            )));
        }
        // Lost the race: give the fresh etcd lease back at once, and describe the holder.
        let holder = first_kv(resp.op_responses());
        let revoke = async {
            if !waiter {
                self.revoke(rec.etcd_lease).await;
            }
        };
        let (_, described) = tokio::join!(revoke, self.describe(req.resource, holder, waiter));
        // The lease of an earlier attempt of unknown outcome goes too. Had that attempt been
        // applied, the key would be ours under it, and the caller gives that back and asks
        // again anyway (see `crate::wait`).
        if let Some(earlier) = (!waiter)
            .then(|| self.forget_granted(&key, req.id))
            .flatten()
        {
            self.revoke(earlier).await;
        }
        let (holder, expires_in) = described?;
        Ok(Acquire::Busy { holder, expires_in })
    }

    /// `Busy` with the holder when the resource is held, `None` when it is free: reads only (the
    /// holder described from its record, for a waiter).
    pub(super) async fn busy(&self, resource: &Resource) -> Result<Option<Acquire>, Error> {
        let Some(kv) = self.read_kv(resource).await? else {
            return Ok(None);
        };
        let (holder, expires_in) = self.describe(resource, Some(kv), true).await?;
        Ok(Some(Acquire::Busy { holder, expires_in }))
    }

    /// The holder's lease and an upper bound of its remaining time (etcd reports whole seconds,
    /// rounded down). For a `waiter`, the holder as its record tells it, without asking etcd for
    /// its lease's time left: a waiter learns of a release or an expiry from its watch (etcd
    /// deletes the key of an expired lease), so `expires_in` is `None`. The expiry shown is then
    /// an upper bound (the granted TTL from now), exact for a holder that has just acquired,
    /// which is whom a waiter that lost a race sees.
    async fn describe(
        &self,
        resource: &Resource,
        kv: Option<KeyValue>,
        waiter: bool,
    ) -> Result<(Option<Lease>, Option<Duration>), Error> {
        let Some(kv) = kv else {
            return Ok((None, Some(Duration::ZERO))); // deleted meanwhile
        };
        if waiter {
            return Ok((Some(waiter_view(resource, &kv)?), None));
        }
        let held = held(resource, &kv)?;
        let ttl = self.time_to_live(held.rec.etcd_lease).await?;
        let lease = held.rec.lease(
            resource,
            held.create_revision,
            SystemTime::now() + secs(ttl.0),
            secs(ttl.1),
        );
        let left = if ttl.0 < 0 {
            Duration::ZERO // expired; the key is being deleted
        } else {
            secs(ttl.0) + Duration::from_secs(1)
        };
        Ok((Some(lease), Some(left)))
    }

    pub(super) async fn renew_lease(
        &self,
        resource: &Resource,
        id: &LeaseId,
        ttl: Duration,
    ) -> Result<Renewal, Error> {
        let want = ttl_secs(ttl);
        for attempt in 0..ATTEMPTS {
            // A first read that fails has sent nothing that changes the lease.
            let read = self.read(resource).await;
            let read = if attempt == 0 {
                read.map_err(Error::unreached)
            } else {
                read
            };
            let Some(held) = read? else {
                return Ok(Renewal::Lost);
            };
            if held.rec.id != *id {
                return Ok(Renewal::Lost);
            }
            let sent = SystemTime::now();
            // Proves the etcd lease alive and restarts its TTL. etcd answers "not found" for an
            // expired lease (it waits for the revocation first), so nothing is resurrected.
            let lease = held.rec.etcd_lease;
            match self
                .call_raw("renewing", self.command_limit(), |mut c| async move {
                    c.lease_keep_alive(lease).await
                })
                .await?
            {
                Ok(_) => {}
                Err(e) if errors::is_lease_not_found(&e) => return Ok(Renewal::Lost),
                Err(e) => return Err(errors::map(&self.opts.name, "renewing", e)),
            }
            // The TTL asked for, or the one etcd granted for it (raised to etcd's minimum, which
            // `current` reports, and so a plain `lockrun renew` asks for): the keep-alive
            // restarts it.
            if want == held.rec.ttl_s || want == held.rec.etcd_ttl_s {
                let granted = secs(held.rec.etcd_ttl_s);
                return Ok(Renewal::Renewed(held.rec.lease(
                    resource,
                    held.create_revision,
                    sent + granted,
                    granted,
                )));
            }
            if let Some(lease) = self.swap(resource, &held, want).await? {
                return Ok(Renewal::Renewed(lease));
            }
        }
        Err(Error::Unavailable(format!(
            "{}: renewing: the key kept changing",
            self.opts.name
        )))
    }

    /// Moves the key to a fresh etcd lease with a TTL of `want` seconds, if it is unchanged
    /// since `held` was read; `None` if it changed.
    async fn swap(
        &self,
        resource: &Resource,
        held: &Held,
        want: i64,
    ) -> Result<Option<Lease>, Error> {
        let key = self.key(resource);
        let sent = SystemTime::now();
        let grant = self
            .call("granting an etcd lease", |mut c| async move {
                c.lease_grant(want, None).await
            })
            .await?;
        let rec = Record {
            ttl_s: want,
            etcd_lease: grant.id(),
            etcd_ttl_s: grant.ttl(),
            ..held.rec.clone()
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                held.mod_revision,
            )])
            .and_then([TxnOp::put(
                key.clone(),
                rec.encode(),
                Some(PutOptions::new().with_lease(rec.etcd_lease)),
            )]);
        // On an unknown outcome the new etcd lease is left to expire on its own: revoking it
        // could delete the key if the put happened. A later renewal then finds and keeps
        // whichever etcd lease the key is attached to.
        // The keep-alive before this was applied: a refusal here is no longer "nothing sent".
        let moved = self.txn("renewing", &txn).await.map_err(|e| match e {
            Error::Unreached(m) => Error::Unavailable(m),
            other => other,
        })?;
        if moved.succeeded() {
            self.remember(&self.key(resource), &rec.id, rec.etcd_lease);
            self.revoke(held.rec.etcd_lease).await;
            let granted = secs(rec.etcd_ttl_s);
            Ok(Some(rec.lease(
                resource,
                held.create_revision,
                sent + granted,
                granted,
            )))
        } else {
            self.revoke(rec.etcd_lease).await;
            Ok(None)
        }
    }

    pub(super) async fn release_lease(
        &self,
        resource: &Resource,
        id: &LeaseId,
    ) -> Result<bool, Error> {
        let key = self.key(resource);
        if let Some(lease) = self.forget_granted(&key, id) {
            match self
                .call_raw("releasing", self.command_limit(), |mut c| async move {
                    c.lease_revoke(lease).await
                })
                .await?
            {
                Ok(_) => return Ok(true),
                // Expired, or moved to another etcd lease by a renewal elsewhere: look.
                Err(e) if errors::is_lease_not_found(&e) => {}
                Err(e) => return Err(errors::map(&self.opts.name, "releasing", e)),
            }
        }
        for _ in 0..ATTEMPTS {
            // Nothing sent before this read changed the key (a revoke that found no lease, a
            // delete whose comparison failed): a read that fails leaves the lease as it was.
            let Some(held) = self.read(resource).await.map_err(Error::unreached)? else {
                return Ok(false);
            };
            if held.rec.id != *id {
                return Ok(false);
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    held.mod_revision,
                )])
                .and_then([TxnOp::delete(key.clone(), None)]);
            if self.txn("releasing", &txn).await?.succeeded() {
                self.revoke(held.rec.etcd_lease).await;
                return Ok(true);
            }
        }
        Err(Error::Unavailable(format!(
            "{}: releasing: the key kept changing",
            self.opts.name
        )))
    }

    pub(super) async fn current_lease(&self, resource: &Resource) -> Result<Option<Lease>, Error> {
        let Some(held) = self.read(resource).await? else {
            return Ok(None);
        };
        let (left, granted) = self.time_to_live(held.rec.etcd_lease).await?;
        if left < 0 {
            return Ok(None); // expired; the key is being deleted
        }
        Ok(Some(held.rec.lease(
            resource,
            held.create_revision,
            SystemTime::now() + secs(left),
            secs(granted),
        )))
    }

    /// Reads and decodes the key of `resource`.
    async fn read(&self, resource: &Resource) -> Result<Option<Held>, Error> {
        match self.read_kv(resource).await? {
            Some(kv) => held(resource, &kv).map(Some),
            None => Ok(None),
        }
    }

    /// Reads the key of `resource`.
    async fn read_kv(&self, resource: &Resource) -> Result<Option<KeyValue>, Error> {
        let key = self.key(resource);
        let mut resp = self
            .call("reading", |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(resp.take_kvs().into_iter().next())
    }

    pub(super) async fn txn(
        &self,
        what: &str,
        txn: &Txn,
    ) -> Result<etcd_client::TxnResponse, Error> {
        self.call(what, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// The remaining and granted TTL of an etcd lease, in seconds (remaining is -1 when the
    /// lease no longer exists).
    async fn time_to_live(&self, lease: i64) -> Result<(i64, i64), Error> {
        let resp = self
            .call("reading the lease's TTL", |mut c| async move {
                c.lease_time_to_live(lease, None).await
            })
            .await?;
        Ok((resp.ttl(), resp.granted_ttl()))
    }

    /// Revokes etcd leases that hold nothing we need in a task of their own, for places that
    /// cannot wait (drops); without a runtime they simply expire.
    pub(super) fn revoke_later(&self, leases: Vec<i64>) {
        if leases.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let etcd = self.clone();
            rt.spawn(async move {
                for lease in leases {
                    etcd.revoke(lease).await;
                }
            });
        }
    }

    /// Revokes an etcd lease that holds nothing we need, best effort: if that fails, the lease
    /// still expires on its own after its TTL.
    pub(super) async fn revoke(&self, lease: i64) {
        match self
            .call_raw(
                "revoking an etcd lease",
                self.command_limit(),
                |mut c| async move { c.lease_revoke(lease).await },
            )
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if errors::is_lease_not_found(&e) => {}
            Ok(Err(e)) => tracing::warn!(
                "could not revoke etcd lease {lease:x} (it expires on its own): {}",
                errors::map(&self.opts.name, "revoking", e)
            ),
            Err(e) => {
                tracing::warn!("could not revoke etcd lease {lease:x} (it expires on its own): {e}")
            }
        }
    }
}

impl Etcd {
    /// Notes that `key` is held by `id` through etcd lease `lease` (or may be: see
    /// [`Etcd::acquire_with`]). An etcd lease this replaces for the same id (that of an attempt of unknown outcome,
    /// followed by one that was granted) is revoked in the background.
    fn remember(&self, key: &[u8], id: &LeaseId, lease: i64) {
        let replaced = match self.granted.lock() {
            Ok(mut granted) => granted.insert(key.to_vec(), (id.clone(), lease)),
            Err(_) => None,
        };
        if let Some((before, old)) = replaced {
            if before == *id && old != lease {
                self.revoke_later(vec![old]);
            }
        }
    }

    /// The etcd lease this process knows `id` holds `key` through, forgetting it.
    fn forget_granted(&self, key: &[u8], id: &LeaseId) -> Option<i64> {
        let mut granted = self.granted.lock().ok()?;
        match granted.get(key) {
            Some((held_by, lease)) if held_by == id => {
                let lease = *lease;
                granted.remove(key);
                Some(lease)
            }
            _ => None,
        }
    }
}

/// The holder as a waiter sees it, from the key's record alone: the expiry shown is the granted
/// TTL from now, an upper bound (see [`Etcd::describe`]).
pub(super) fn waiter_view(resource: &Resource, kv: &KeyValue) -> Result<Lease, Error> {
    let held = held(resource, kv)?;
    let granted = secs(held.rec.etcd_ttl_s);
    Ok(held.rec.lease(
        resource,
        held.create_revision,
        SystemTime::now() + granted,
        granted,
    ))
}

fn held(resource: &Resource, kv: &KeyValue) -> Result<Held, Error> {
    Ok(Held {
        rec: Record::decode(resource, kv.value(), kv.lease())?,
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// The key-value of a transaction's single `get`.
fn first_kv(responses: Vec<TxnOpResponse>) -> Option<KeyValue> {
    responses.into_iter().find_map(|r| match r {
        TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
        _ => None,
    })
}
