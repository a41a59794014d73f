//! Backend calls that turn unexpected outcomes into failure messages.

use std::time::Duration;

use super::{fail, SLACK};
use crate::backend::{Acquire, AcquireRequest, Backend, Renewal};
use crate::lease::{Lease, LeaseId, Resource};

pub(super) fn req<'a>(
    resource: &'a Resource,
    id: &'a LeaseId,
    principal: &'a str,
    ttl: Duration,
) -> AcquireRequest<'a> {
    AcquireRequest {
        resource,
        id,
        principal,
        ttl,
    }
}

pub(super) async fn acquire(
    b: &dyn Backend,
    res: &Resource,
    principal: &str,
    ttl: Duration,
) -> Result<Lease, String> {
    let id = LeaseId::generate();
    match b.try_acquire(&req(res, &id, principal, ttl)).await {
        Ok(Acquire::Acquired(l)) if l.id == id && l.principal == principal => Ok(l),
        Ok(Acquire::Acquired(l)) => Err(format!(
            "try_acquire granted a lease with other details: {l:?}"
        )),
        Ok(busy) => Err(format!("try_acquire on a free resource: {busy:?}")),
        Err(e) => Err(fail("try_acquire", e)),
    }
}

pub(super) async fn busy(
    b: &dyn Backend,
    res: &Resource,
    ttl: Duration,
) -> Result<(Option<Lease>, Option<Duration>), String> {
    let id = LeaseId::generate();
    match b
        .try_acquire(&req(res, &id, "conformance-other", ttl))
        .await
    {
        Ok(Acquire::Busy { holder, expires_in }) => Ok((holder, expires_in)),
        Ok(Acquire::Acquired(_)) => Err("a second owner acquired a held resource".into()),
        Err(e) => Err(fail("try_acquire", e)),
    }
}

pub(super) async fn renew(
    b: &dyn Backend,
    res: &Resource,
    id: &LeaseId,
    ttl: Duration,
) -> Result<Lease, String> {
    match b.renew(res, id, ttl).await {
        Ok(Renewal::Renewed(l)) => Ok(l),
        Ok(Renewal::Lost) => Err("renewing a live lease returned Lost".into()),
        Err(e) => Err(fail("renew", e)),
    }
}

pub(super) async fn expect_lost(
    b: &dyn Backend,
    res: &Resource,
    id: &LeaseId,
) -> Result<(), String> {
    match b.renew(res, id, Duration::from_secs(120)).await {
        Ok(Renewal::Lost) => Ok(()),
        Ok(Renewal::Renewed(_)) => Err("renew with a wrong, stale or expired id succeeded".into()),
        Err(e) => Err(fail("renew", e)),
    }
}

pub(super) async fn release(
    b: &dyn Backend,
    res: &Resource,
    id: &LeaseId,
    want: bool,
) -> Result<(), String> {
    match b.release(res, id).await {
        Ok(got) if got == want => Ok(()),
        Ok(got) => Err(format!("release returned {got}, expected {want}")),
        Err(e) => Err(fail("release", e)),
    }
}

pub(super) async fn current(b: &dyn Backend, res: &Resource) -> Result<Option<Lease>, String> {
    b.current(res).await.map_err(|e| fail("current", e))
}

/// The current lease is still `before`: same id, token and principal, expiry not moved.
pub(super) async fn unchanged(
    b: &dyn Backend,
    res: &Resource,
    before: &Lease,
) -> Result<(), String> {
    let now = current(b, res).await?.ok_or("the lease disappeared")?;
    ensure!(now.id == before.id, "the lease id changed");
    ensure!(
        now.fencing_token == before.fencing_token && now.principal == before.principal,
        "the lease changed: {now:?}"
    );
    ensure!(
        now.expires_at <= before.expires_at + SLACK,
        "the expiry moved: {now:?}"
    );
    Ok(())
}
