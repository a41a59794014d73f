//! `lockrun renew`: extend a lease acquired earlier, keeping its id.

use super::{Ctx, Failure};
use crate::backend::Renewal;
use crate::cli::RenewArgs;
use crate::exit::Exit;
use crate::lease::LeaseId;

pub async fn renew(ctx: &Ctx, args: RenewArgs) -> Result<Exit, Failure> {
    let (resource, plan) = ctx.plan(&args.resource)?;
    let id = LeaseId::parse(&args.lease_id)?;
    if let Some(ttl) = args.ttl {
        super::acquire::check_ttl(ttl)?;
    }
    let backend = ctx.open(&plan).await?;
    // Without --ttl, the lease keeps the TTL it has: `acquire --ttl 2h` then `renew` must not
    // cut it to the configured 1h. A lease that this id does not hold falls through to the
    // renewal, which reports it.
    let ttl = match args.ttl {
        Some(ttl) => ttl,
        None => match backend.current(&resource).await? {
            Some(lease) if lease.id == id => lease.ttl,
            _ => plan.ttl,
        },
    };
    let renewed = backend.renew(&resource, &id, ttl).await;
    match renewed.map_err(|e| super::unsettled(e, &*backend, "renewed", &resource))? {
        Renewal::Renewed(lease) => {
            if args.json {
                let json = serde_json::to_string(&lease.to_json()).map_err(|e| {
                    Failure::new(Exit::Internal, format!("cannot encode JSON: {e}"))
                })?;
                super::out(format_args!("{json}")).map_err(|mut f| {
                    f.message += "; the lease was renewed";
                    f
                })?;
            }
            Ok(Exit::Success)
        }
        Renewal::Lost => Err(not_held(&resource, &id)),
    }
}

/// The one line for "this lease id does not hold the resource".
pub(super) fn not_held(resource: &crate::lease::Resource, id: &LeaseId) -> Failure {
    // Enough of a long id to tell leases apart (lockrun's are 32 characters); a short one whole.
    let whole = id.as_str();
    let short = if whole.chars().count() <= 12 {
        whole.to_owned()
    } else {
        whole.chars().take(8).chain(['…']).collect()
    };
    Failure::outcome(
        Exit::NotHeld,
        format!(
            "lease {short} does not hold {} (expired, released, or never granted)",
            crate::lease::escape(resource.as_str())
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Resource;

    #[test]
    fn a_long_lease_id_is_shortened_in_the_message_and_a_short_one_is_not() {
        let r = Resource::new("r").unwrap();
        let msg = |id: &str| not_held(&r, &LeaseId::parse(id).unwrap()).message;
        assert!(msg("bb4e2523993800e42b91625c84b8c333").starts_with("lease bb4e2523… does"));
        assert!(msg("not-an-id").starts_with("lease not-an-id does"));
        assert!(msg("abcdefghijklm").starts_with("lease abcdefgh… does"));
    }
}
