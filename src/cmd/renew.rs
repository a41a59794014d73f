//! `lockrun renew`: extend a lease acquired earlier, keeping its id.

use super::{Ctx, Failure};
use crate::backend::Renewal;
use crate::cli::RenewArgs;
use crate::exit::Exit;
use crate::lease::LeaseId;

pub async fn renew(ctx: &Ctx, args: RenewArgs) -> Result<Exit, Failure> {
    let (resource, plan) = ctx.plan(&args.resource)?;
    let id = LeaseId::parse(&args.lease_id)?;
    let ttl = args.ttl.unwrap_or(plan.ttl);
    super::acquire::check_ttl(ttl)?;
    let backend = ctx.open(&plan).await?;
    match backend.renew(&resource, &id, ttl).await? {
        Renewal::Renewed(lease) => {
            if args.json {
                let json = serde_json::to_string(&lease.to_json()).map_err(|e| {
                    Failure::new(Exit::Internal, format!("cannot encode JSON: {e}"))
                })?;
                super::out(format_args!("{json}"))?;
            }
            Ok(Exit::Success)
        }
        Renewal::Lost => Err(not_held(&resource, &id)),
    }
}

/// The one line for "this lease id does not hold the resource".
pub(super) fn not_held(resource: &crate::lease::Resource, id: &LeaseId) -> Failure {
    // Enough of the id to tell leases apart; the ellipsis only when something was cut.
    let mut short: String = id.as_str().chars().take(8).collect();
    if short.len() < id.as_str().len() {
        short.push('…');
    }
    Failure::outcome(
        Exit::NotHeld,
        format!(
            "lease {short} does not hold {} (expired, released, or never granted)",
            crate::lease::escape(resource.as_str())
        ),
    )
}
