//! `lockrun release`: end a lease. Never frees someone else's.

use super::{Ctx, Failure};
use crate::cli::LeaseArgs;
use crate::exit::Exit;
use crate::lease::LeaseId;

pub async fn release(ctx: &Ctx, args: LeaseArgs) -> Result<Exit, Failure> {
    let (resource, plan) = ctx.plan(&args.resource)?;
    let id = LeaseId::parse(&args.lease_id)?;
    let backend = ctx.open(&plan).await?;
    let released = backend.release(&resource, &id).await;
    if released.map_err(|e| super::unsettled(e, &*backend, "released", &resource))? {
        Ok(Exit::Success)
    } else {
        Err(super::renew::not_held(&resource, &id))
    }
}
