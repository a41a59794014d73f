//! `lockrun is-held`: exit 0 if this lease id holds the resource, 1 if not.

use super::{Ctx, Failure};
use crate::cli::LeaseArgs;
use crate::exit::Exit;
use crate::lease::LeaseId;

pub async fn is_held(ctx: &Ctx, args: LeaseArgs) -> Result<Exit, Failure> {
    let (resource, plan) = ctx.plan(&args.resource)?;
    let id = LeaseId::parse(&args.lease_id)?;
    let backend = ctx.open(&plan).await?;
    match backend.current(&resource).await? {
        Some(lease) if lease.id == id => Ok(Exit::Success),
        _ => Err(super::renew::not_held(&resource, &id)),
    }
}
