//! The four lease operations as reads and optimistic writes of one Lease object.
//!
//! Every write carries the `resourceVersion` of the object it was decided on (a create carries
//! none and fails if the object exists), so of several contenders exactly one wins; the others
//! get 409 Conflict or AlreadyExists, read the object again and decide again.

use std::future::Future;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease as Object;
use kube::api::PostParams;

use super::record::{self, Grant, Holder, Stored};
use super::{errors, quoted, Kubernetes};
use crate::backend::takeover::{judge, Verdict};
use crate::backend::{Acquire, AcquireRequest, Error, Renewal};
use crate::lease::{Lease, LeaseId, Resource};

/// Attempts per operation: a write, then one or two more if others kept writing first.
const ATTEMPTS: usize = 3;

/// The outcome of an optimistic write.
enum Write {
    /// Written; the object as stored now.
    Done(Box<Object>),
    /// Someone else wrote first (409), or the object went away meanwhile.
    Conflict,
}

impl Kubernetes {
    pub(super) async fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
        let res = req.resource;
        let name = self.object_name(res);
        let op = format!("acquiring {}", quoted(res));
        let mut holder: Option<Lease> = None;
        for _ in 0..ATTEMPTS {
            let found = self.read(&op, &name).await?;
            if let Some(found) = &found {
                let stored = self.parse(res, &name, found)?;
                if stored.holder != Holder::Free {
                    let unchanged_for = self.seen.observe(&name, &stored.sighting);
                    holder = stored.lease(res);
                    let now = SystemTime::now();
                    match judge(
                        stored.expires(),
                        stored.duration,
                        now,
                        self.skew,
                        unchanged_for,
                    ) {
                        Verdict::TakeOver => {}
                        Verdict::Wait(left) => {
                            return Ok(Acquire::Busy {
                                holder,
                                expires_in: Some(left),
                            })
                        }
                    }
                }
            }
            // The times are taken for each attempt, after any wait and before sending.
            let grant = Grant {
                name: &name,
                resource: res,
                id: req.id,
                principal: req.principal,
                ttl: req.ttl,
                now: record::now(),
            };
            let obj = grant
                .object(found.as_ref())
                .map_err(|why| Error::Other(format!("{op}: {why}")))?;
            let written = match &found {
                None => self.create(&op, &obj).await?,
                Some(_) => self.replace(&op, &name, &obj).await?,
            };
            if let Write::Done(obj) = written {
                self.seen.forget(&name);
                return self
                    .ours(&op, res, &name, &obj, req.id)
                    .map(Acquire::Acquired);
            }
        }
        // Others kept winning the race: busy, and the caller polls.
        Ok(Acquire::Busy {
            holder,
            expires_in: None,
        })
    }

    pub(super) async fn extend(
        &self,
        res: &Resource,
        id: &LeaseId,
        ttl: Duration,
    ) -> Result<Renewal, Error> {
        let name = self.object_name(res);
        let op = format!("renewing the lease on {}", quoted(res));
        for _ in 0..ATTEMPTS {
            let Some(found) = self.held_by(&op, res, &name, id).await? else {
                return Ok(Renewal::Lost);
            };
            let obj = record::renewal(&found, ttl, record::now());
            if let Write::Done(obj) = self.replace(&op, &name, &obj).await? {
                return self.ours(&op, res, &name, &obj, id).map(Renewal::Renewed);
            }
        }
        Err(contended(&op))
    }

    pub(super) async fn end(&self, res: &Resource, id: &LeaseId) -> Result<bool, Error> {
        let name = self.object_name(res);
        let op = format!("releasing the lease on {}", quoted(res));
        for _ in 0..ATTEMPTS {
            let Some(found) = self.read(&op, &name).await? else {
                return Ok(false);
            };
            let stored = self.parse(res, &name, &found)?;
            if !matches!(&stored.holder, Holder::Ours(held) if held == id) {
                return Ok(false);
            }
            // Expired or not: nobody else can hold it under this id, and freeing an expired one
            // spares waiters watching it for a full lease duration first. The answer is whether
            // it still held the resource, by this host's clock.
            let live = stored.expires() > SystemTime::now();
            let obj = record::release(&found, record::now());
            if let Write::Done(_) = self.replace(&op, &name, &obj).await? {
                self.seen.forget(&name);
                return Ok(live);
            }
        }
        Err(contended(&op))
    }

    /// The live lease: held, not expired by this host's clock, and not unchanged for a full
    /// lease duration as far as this process has seen (rule (b)).
    pub(super) async fn live(&self, res: &Resource) -> Result<Option<Lease>, Error> {
        let name = self.object_name(res);
        let op = format!("reading the lease on {}", quoted(res));
        let Some(found) = self.read(&op, &name).await? else {
            return Ok(None);
        };
        let stored = self.parse(res, &name, &found)?;
        if stored.holder == Holder::Free || stored.expires() <= SystemTime::now() {
            return Ok(None);
        }
        if self.seen.observe(&name, &stored.sighting) >= stored.duration {
            return Ok(None);
        }
        Ok(stored.lease(res))
    }

    /// The object, if lease `id` holds it and has not expired by this host's clock: renewal
    /// never resurrects an expired lease.
    async fn held_by(
        &self,
        op: &str,
        res: &Resource,
        name: &str,
        id: &LeaseId,
    ) -> Result<Option<Object>, Error> {
        let Some(found) = self.read(op, name).await? else {
            return Ok(None);
        };
        let stored = self.parse(res, name, &found)?;
        let mine = matches!(&stored.holder, Holder::Ours(held) if held == id);
        Ok((mine && stored.expires() > SystemTime::now()).then_some(found))
    }

    /// Reads back a written object, which must hold lease `id`.
    fn ours(
        &self,
        op: &str,
        res: &Resource,
        name: &str,
        obj: &Object,
        id: &LeaseId,
    ) -> Result<Lease, Error> {
        let stored = self.parse(res, name, obj)?;
        match (&stored.holder, stored.lease(res)) {
            (Holder::Ours(held), Some(lease)) if held == id => Ok(lease),
            _ => Err(Error::Other(format!(
                "{op}: the Kubernetes API stored the Lease '{name}' differently from what was \
                 sent"
            ))),
        }
    }

    fn parse(&self, res: &Resource, name: &str, obj: &Object) -> Result<Stored, Error> {
        Stored::parse(res, obj).map_err(|why| {
            Error::Corrupt(format!(
                "the Lease '{name}' in namespace '{}' is not a lockrun lease on {} ({why}); it \
                 was left alone",
                self.place.namespace,
                quoted(res)
            ))
        })
    }

    /// The resources named by the lockrun Lease objects of the namespace (label-selected).
    pub(super) async fn list_resources(&self) -> Result<Vec<Resource>, Error> {
        let op = "listing";
        let lp = kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=lockrun");
        let list = self
            .call(op, self.api.list(&lp))
            .await?
            .map_err(|e| errors::map(&self.place, op, &e))?;
        Ok(list
            .items
            .iter()
            .filter_map(|o| o.metadata.annotations.as_ref()?.get(super::RESOURCE))
            .filter_map(|name| Resource::new(name.as_str()).ok())
            .collect())
    }

    async fn read(&self, op: &str, name: &str) -> Result<Option<Object>, Error> {
        self.call(op, self.api.get_opt(name))
            .await?
            .map_err(|e| errors::map(&self.place, op, &e))
    }

    async fn create(&self, op: &str, obj: &Object) -> Result<Write, Error> {
        let written = self.call(op, self.api.create(&params(), obj)).await?;
        self.written(op, written, false)
    }

    async fn replace(&self, op: &str, name: &str, obj: &Object) -> Result<Write, Error> {
        let written = self
            .call(op, self.api.replace(name, &params(), obj))
            .await?;
        self.written(op, written, true)
    }

    fn written(
        &self,
        op: &str,
        result: kube::Result<Object>,
        replacing: bool,
    ) -> Result<Write, Error> {
        match result {
            Ok(obj) => Ok(Write::Done(Box::new(obj))),
            // 409: Conflict (another resourceVersion) or AlreadyExists (created meanwhile).
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Write::Conflict),
            // The object was deleted between the read and a replace.
            Err(kube::Error::Api(e)) if replacing && e.code == 404 && !is_ns(&e) => {
                Ok(Write::Conflict)
            }
            Err(e) => Err(errors::map(&self.place, op, &e)),
        }
    }

    /// Runs one API call under the command timeout.
    async fn call<T>(
        &self,
        op: &str,
        call: impl Future<Output = kube::Result<T>>,
    ) -> Result<kube::Result<T>, Error> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| errors::timeout(&self.place, op))
    }
}

fn is_ns(e: &kube::error::ErrorResponse) -> bool {
    e.message.starts_with("namespaces \"")
}

fn params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some("lockrun".into()),
    }
}

fn contended(op: &str) -> Error {
    Error::Unavailable(format!(
        "{op}: the Lease kept changing under concurrent writes; try again"
    ))
}
