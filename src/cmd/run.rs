//! `lockrun run` (and `lockrun RESOURCE -- CMD`): acquire, run, renew, release.

use std::sync::Arc;

use super::{wait_policy, Ctx, Failure};
use crate::backend::Backend;
use crate::cli::RunArgs;
use crate::exit::Exit;
use crate::heartbeat::{self, Timing};
use crate::lease::{Lease, Resource};
use crate::supervise::{self, Signals, SpawnError, Spec, Status, Stop};

pub async fn run(ctx: &Ctx, args: RunArgs) -> Result<Exit, Failure> {
    let (resource, plan) = ctx.plan(&args.resource)?;
    let ttl = args.ttl.unwrap_or(plan.run_ttl);
    let timing = Timing::new(ttl, args.heartbeat, args.kill_after).map_err(Failure::usage)?;
    let backend = ctx.open(&plan).await?;
    if backend.capabilities().may_evict && ctx.chatty() {
        tracing::warn!("this backend may evict a lock under memory pressure; use it only where a duplicate run is harmless");
    }
    let mut signals = Signals::install().map_err(|e| {
        Failure::new(
            Exit::Internal,
            format!("cannot install signal handlers: {e}"),
        )
    })?;
    let wait = wait_policy(&args.wait, &plan);
    let granted = tokio::select! {
        g = super::acquire::obtain(ctx, &*backend, &resource, &plan.principal, ttl, wait, &args.wait) => g?,
        sig = signals.next_stop_request() => return Ok(Exit::ChildSignal(sig)),
    };
    let lease = granted.lease;
    tracing::debug!("acquired {resource} (token {:?})", lease.fencing_token);

    let (state, beat) = heartbeat::spawn(
        Arc::clone(&backend),
        resource.clone(),
        lease.id.clone(),
        timing,
        granted.sent_at,
        None,
    );
    let spec = Spec {
        program: args.command[0].clone(),
        args: args.command[1..].to_vec(),
        env: child_env(&lease, &plan.backend.redacted()),
    };
    let outcome = supervise::supervise(&spec, &mut signals, state, timing.kill_after).await;
    beat.abort();

    let exit = match &outcome {
        Err(SpawnError::NotFound { .. }) => Exit::NotFound,
        Err(SpawnError::CannotExecute { .. }) => Exit::CannotExecute,
        Err(SpawnError::Setup(_)) => Exit::Internal,
        Ok(o) => match (o.stopped, o.status) {
            (Some(Stop::Lost | Stop::Deadline), _) => Exit::Lost,
            (_, Status::Exited(n)) => Exit::Child(n.clamp(0, 255) as u8),
            (_, Status::Signaled(s)) => Exit::ChildSignal(s),
        },
    };
    let lost = matches!(&outcome, Ok(o) if o.stopped == Some(Stop::Lost));
    if !lost {
        release(&*backend, &resource, &lease).await;
    }
    match outcome {
        Err(e) => Err(Failure::new(exit, e.to_string())),
        Ok(o) => match o.stopped {
            Some(Stop::Lost) => Err(Failure::new(
                exit,
                format!("lost the lease on {} while the command ran; stopped the command", esc(&resource)),
            )),
            Some(Stop::Deadline) => Err(Failure::new(
                exit,
                format!(
                    "could not renew the lease on {} in time; stopped the command before the lease could expire",
                    esc(&resource)
                ),
            )),
            _ => Ok(exit),
        },
    }
}

/// Releases after the command's group is reaped; a failure is a warning, not a changed exit code.
async fn release(backend: &dyn Backend, resource: &Resource, lease: &Lease) {
    match backend.release(resource, &lease.id).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "the lease on {} had already ended at release",
            esc(resource)
        ),
        Err(e) => tracing::warn!("could not release the lease on {}: {e}", esc(resource)),
    }
}

fn esc(r: &Resource) -> String {
    crate::lease::escape(r.as_str())
}

/// What the command learns about its lease. No secrets: the backend URL is redacted. Variables
/// an outer lockrun may have set are overwritten or removed, never inherited.
fn child_env(lease: &Lease, backend: &str) -> Vec<(String, Option<String>)> {
    vec![
        ("LOCKRUN_RESOURCE".into(), Some(lease.resource.to_string())),
        ("LOCKRUN_LEASE_ID".into(), Some(lease.id.to_string())),
        ("LOCKRUN_PRINCIPAL".into(), Some(lease.principal.clone())),
        ("LOCKRUN_BACKEND".into(), Some(backend.to_owned())),
        (
            "LOCKRUN_FENCING_TOKEN".into(),
            lease.fencing_token.map(|t| t.to_string()),
        ),
    ]
}
