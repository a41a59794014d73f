//! `lockrun init`: create what the configured backend needs (tables, indexes). Idempotent.

use super::{Ctx, Failure};
use crate::cli::InitArgs;
use crate::exit::Exit;

pub async fn init(ctx: &Ctx, args: InitArgs) -> Result<Exit, Failure> {
    // The backend is chosen per resource; without one, the [default] section decides.
    let name = args.resource.as_deref().unwrap_or("lockrun-init");
    let (resource, plan) = ctx.plan(name)?;
    let backend = ctx.open(&plan).await?;
    // What was done is progress: -q leaves it out, as it does every progress line.
    match backend.init().await? {
        Some(done) if ctx.chatty() => say!("lockrun: {}: {done}", plan.backend),
        Some(_) => {}
        None => {
            // Nothing to create, but a server must answer: `init` in a deploy script is the
            // place to learn that it does not (some backends connect only on first use). An
            // existing lock directory was checked when it was opened (a missing one is created
            // by the backend's init).
            if plan.backend.scheme() != "file" {
                backend.current(&resource).await?;
            }
            if ctx.chatty() {
                say!("lockrun: {}: nothing to set up", plan.backend)
            }
        }
    }
    Ok(Exit::Success)
}
