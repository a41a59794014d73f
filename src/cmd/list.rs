//! `lockrun list`: every live lease on the configured backend.

use super::{Ctx, Failure};
use crate::cli::{ListArgs, ListFormat};
use crate::exit::Exit;
use crate::lease::{escape, rfc3339, Lease};

pub async fn list(ctx: &Ctx, args: ListArgs) -> Result<Exit, Failure> {
    // The backend is chosen per resource; without one, the [default] section decides.
    let (_, plan) = ctx.plan(args.resource.as_deref().unwrap_or("lockrun-list"))?;
    let cannot = || {
        Failure::new(
            Exit::Config,
            format!("the backend {} cannot list its leases", plan.backend),
        )
    };
    // Said without reaching the server, which may be down: the answer is the same.
    if !plan.backend.can_list() {
        return Err(cannot());
    }
    let backend = ctx.open(&plan).await?;
    let Some(names) = backend.resources().await? else {
        return Err(cannot());
    };
    let mut leases: Vec<Lease> = Vec::new();
    for name in names {
        match backend.current(&name).await {
            Ok(Some(lease)) => leases.push(lease),
            Ok(None) => {}
            // A damaged record must not hide the others; `current` on it reports it.
            Err(e) => tracing::warn!("{}: {e}", escape(name.as_str())),
        }
    }
    leases.sort_by(|a, b| a.resource.cmp(&b.resource));
    // Control characters read back from the store are escaped in rows (see `current`).
    let text = escape;
    match args.format {
        ListFormat::Json => {
            let all: Vec<_> = leases.iter().map(Lease::to_json).collect();
            let json = serde_json::to_string(&all)
                .map_err(|e| Failure::new(Exit::Internal, format!("cannot encode JSON: {e}")))?;
            super::out(format_args!("{json}"))?;
        }
        ListFormat::Rows => {
            if !leases.is_empty() {
                super::out(format_args!("RESOURCE\tPRINCIPAL\tTOKEN\tEXPIRES"))?;
            }
            for l in &leases {
                let token = l
                    .fencing_token
                    .map_or_else(|| "-".to_owned(), |t| t.to_string());
                super::out(format_args!(
                    "{}\t{}\t{token}\t{}",
                    text(l.resource.as_str()),
                    text(&l.principal),
                    rfc3339(l.expires_at)
                ))?;
            }
        }
    }
    Ok(Exit::Success)
}
