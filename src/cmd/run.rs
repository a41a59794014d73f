//! `lockrun run` (and `lockrun RESOURCE -- CMD`): acquire, run, renew, release.

use std::path::Path;

use serde_json::json;
use tokio::sync::mpsc;

use super::events::Events;
use super::{wait_policy, Ctx, Failure};
use crate::cli::RunArgs;
use crate::config::Plan;
use crate::exit::Exit;
use crate::heartbeat::{Beat, State};
use crate::lease::{rfc3339, Lease, Resource};
use crate::lock::{Guard, Lock};
use crate::supervise::{self, Signals, SpawnError, Spec, Status, Stop};
use crate::wait::Wait;

/// How long a release may take after renewals failed until the deadline.
const DEADLINE_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn run(ctx: &Ctx, args: RunArgs) -> Result<Exit, Failure> {
    let (resource, plan) = ctx.plan(&args.resource)?;
    let ttl = args.ttl.unwrap_or(plan.run_ttl);
    let backend = ctx.open(&plan).await?;
    let lock = Lock::new(backend.clone(), resource.as_str())?
        .ttl(ttl)
        .principal(plan.principal.clone())
        .order(super::order_policy(&args.wait, &plan))
        .heartbeat(args.heartbeat, args.kill_after);
    let timing = lock.timing().map_err(|e| Failure::usage(e.to_string()))?;
    let events = super::events::open_opt(args.events.as_deref(), &resource)?;
    let lock = match &events {
        Some(ev) => lock.report_renewals(beat_events(ev.clone())),
        None => lock,
    };
    let mut signals = Signals::install().map_err(|e| {
        Failure::new(
            Exit::Internal,
            format!("cannot install signal handlers: {e}"),
        )
    })?;
    // Looked up, and the guard started, while waiting: a granted lease then starts the command
    // with one clone and one exec.
    let path = supervise::resolve(&args.command[0]);
    let watchdog = supervise::Guard::arm();
    let wait = wait_policy(&args.wait, &plan);
    let acquire_started = std::time::Instant::now();
    let mut retried_late_grant = false;
    let guard = loop {
        let left = match wait {
            Wait::AtMost(d) => Wait::AtMost(d.saturating_sub(acquire_started.elapsed())),
            Wait::Forever => Wait::Forever,
        };
        let guard = tokio::select! {
            g = super::acquire::obtain(ctx, &lock, (left, wait), &args.wait, events.as_ref()) => g?,
            sig = signals.next_stop_request() => return Ok(match sig {
                // From the keyboard, the rest of lockrun's job got it too.
                libc::SIGINT | libc::SIGQUIT => Exit::Interrupted { signal: sig, group: false },
                _ => Exit::ChildSignal(sig),
            }),
        };
        // A grant whose answer came too late to leave the command any trusted time (the
        // request sat on a stalled backend, or lockrun was stopped meanwhile) may already have
        // expired in the store and been granted again. Nothing has run under it: give it back
        // and ask again, rather than start the command under a lease that is not trusted.
        if room_to_start(&guard, timing.kill_after) {
            break guard;
        }
        let _ = tokio::time::timeout(DEADLINE_RELEASE_WAIT, guard.release()).await;
        let out_of_time = matches!(left, Wait::AtMost(d) if d.is_zero());
        if out_of_time && retried_late_grant {
            return Err(Failure::new(
                Exit::Unavailable,
                format!(
                    "the lease on {} was granted too late to be trusted (the backend answered after the TTL); the command was not started",
                    esc(&resource)
                ),
            ));
        }
        tracing::warn!(
            "the lease on {} was granted too late to be trusted (the backend answered after the TTL): asking again",
            esc(&resource)
        );
        retried_late_grant = true;
    };
    // Once the lease is held: a busy or failed run keeps to its one line.
    // Redis names the setting to change when it connects; memcached evicts by design.
    if backend.capabilities().may_evict
        && !plan.backend.scheme().starts_with("redis")
        && ctx.chatty()
    {
        tracing::warn!(
            "{} may evict a lock under memory pressure; use it only where a duplicate run is \
             harmless",
            plan.backend.scheme()
        );
    }
    match guard.fencing_token() {
        Some(token) => tracing::debug!("acquired {resource} (fencing token {token})"),
        None => tracing::debug!("acquired {resource} (no fencing token)"),
    }
    if let Some(ev) = &events {
        ev.emit(
            "acquired",
            json!({
                "lease_id": guard.id().as_str(),
                "fencing_token": guard.fencing_token(),
                "principal": guard.lease().principal,
                "expires_at": rfc3339(guard.lease().expires_at),
                "waited_ms": ms(acquire_started.elapsed()),
            }),
        );
    }

    let spec = Spec {
        program: args.command[0].clone(),
        path,
        args: args.command[1..].to_vec(),
        env: child_env(guard.lease(), &plan, ctx.config.path()),
        started_with: super::started_with(),
    };
    let outcome = supervise::supervise(
        &spec,
        &mut signals,
        guard.state(),
        timing.kill_after,
        watchdog,
    )
    .await;

    let exit = match &outcome {
        Err(SpawnError::NotFound { .. }) => Exit::NotFound,
        Err(SpawnError::CannotExecute { .. }) => Exit::CannotExecute,
        Err(SpawnError::Setup(_)) => Exit::Internal,
        Err(SpawnError::Late) => Exit::Unavailable,
        Err(SpawnError::Lost) => Exit::Lost,
        Ok(o) => match (o.stopped, o.status) {
            (Some(Stop::Lost | Stop::Deadline), _) => Exit::Lost,
            (_, Status::Exited(n)) => Exit::Child(n.clamp(0, 255) as u8),
            (_, Status::Signaled(s)) => match o.interrupt {
                Some((signal, group)) => Exit::Interrupted { signal, group },
                None => Exit::ChildSignal(s),
            },
        },
    };
    if let (Some(ev), Ok(o)) = (&events, &outcome) {
        if o.stopped == Some(Stop::Deadline) {
            // The lease may have run out on the server: as good as lost, and the command was
            // stopped for it, as for a renewal that found it gone.
            ev.emit("lost", json!({ "reason": "deadline" }));
        }
        let status = match o.status {
            Status::Exited(n) => json!({ "code": n }),
            Status::Signaled(s) => json!({ "signal": s }),
        };
        ev.emit("child_exited", status);
    }
    let released = if matches!(&outcome, Ok(o) if o.stopped == Some(Stop::Lost))
        || matches!(&outcome, Err(SpawnError::Lost))
    {
        drop(guard.into_lease()); // someone else's now: nothing to release
        false
    } else if matches!(&outcome, Ok(o) if !o.survivors.is_empty()) {
        // Past its deadline, with the command's processes still running: not handed to the
        // next holder any sooner than its expiry does.
        drop(guard.into_lease()); // left to expire
        false
    } else if matches!(&outcome, Ok(o) if o.stopped == Some(Stop::Deadline))
        || matches!(&outcome, Err(SpawnError::Late))
    {
        // The backend did not answer renewals; do not wait long for it to answer a release.
        // It may have run out by now; the 124 line says why, without a warning before it.
        tokio::time::timeout(DEADLINE_RELEASE_WAIT, release(guard, &resource, true))
            .await
            .unwrap_or(false)
    } else {
        release(guard, &resource, false).await
    };
    if let Some(ev) = &events {
        ev.emit("released", json!({ "released": released }));
    }
    match outcome {
        Err(SpawnError::Late) => Err(Failure::new(
            exit,
            format!(
                "the lease on {} could no longer be trusted when the command was to start \
                 (lockrun was held up since the grant); the command was not started",
                esc(&resource)
            ),
        )),
        Err(SpawnError::Lost) => Err(Failure::new(
            exit,
            format!(
                "lost the lease on {} before the command started; it was not started",
                esc(&resource)
            ),
        )),
        Err(e) => Err(Failure::new(exit, e.to_string())),
        Ok(o) if !o.survivors.is_empty() => Err(Failure::new(
            exit,
            format!(
                "{} the lease on {} while processes of the command that lockrun may not kill \
                 (another user's, as a sudo in the command starts) still run: pids {}",
                if o.stopped == Some(Stop::Lost) { "lost" } else { "could not renew" },
                esc(&resource),
                supervise::pids(&o.survivors)
            ),
        )),
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

/// Whether the lease is still trusted for longer than the TERM grace: otherwise the command
/// would be stopped as soon as it started, or start under a lease that may have expired.
fn room_to_start(guard: &Guard, kill_after: std::time::Duration) -> bool {
    match *guard.state().borrow() {
        State::Held { trusted_until } => tokio::time::Instant::now() + kill_after < trusted_until,
        State::Lost => false,
    }
}

/// Releases after the command's group is reaped; a failure is a warning, not a changed exit code.
/// A lease found ended already is one too, unless that was to be expected (`may_have_ended`).
async fn release(guard: Guard, resource: &Resource, may_have_ended: bool) -> bool {
    let ttl = guard.lease().ttl;
    match guard.release().await {
        Ok(true) => true,
        Ok(false) if may_have_ended => false,
        Ok(false) => {
            tracing::warn!(
                "the lease on {} had already ended at release",
                esc(resource)
            );
            false
        }
        // After a deadline stop the backend did not answer renewals: no news that it does not
        // answer this either.
        Err(e) if may_have_ended => {
            tracing::info!("could not release the lease on {}: {e}", esc(resource));
            false
        }
        Err(e) => {
            tracing::warn!(
                "could not release the lease on {}: {e}; unless it was, it runs out within {}",
                esc(resource),
                crate::duration::format(ttl)
            );
            false
        }
    }
}

/// A channel whose renewal reports become `renewed` / `renewal_failed` / `lost` events.
fn beat_events(ev: Events) -> mpsc::UnboundedSender<Beat> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(beat) = rx.recv().await {
            match beat {
                Beat::Renewed { round_trip } => {
                    ev.emit("renewed", json!({ "round_trip_ms": ms(round_trip) }))
                }
                Beat::Failed { error } => ev.emit("renewal_failed", json!({ "error": error })),
                Beat::Lost => ev.emit("lost", json!({ "reason": "gone" })),
            }
        }
    });
    tx
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn esc(r: &Resource) -> String {
    crate::lease::escape(r.as_str())
}

/// What the command learns about its lease. Variables an outer lockrun may have set are
/// overwritten or removed, never inherited.
///
/// A `lockrun` inside the command must reach the same store the same way: `LOCKRUN_BACKEND` is
/// the `[backend.NAME]` name when the backend came from one (its URL alone would lose the
/// section's prefix, table, region...), and `LOCKRUN_CONFIG` the config file it is in. Else it
/// is the URL, with no secrets (a password is `***`). `LOCKRUN_CONFIGURED_BACKEND` and
/// `LOCKRUN_CONFIGURED_PRINCIPAL` repeat them when they came from the configuration, not a flag
/// or the environment: a lockrun inside the command then uses them for this resource only (see
/// [`crate::config::Config::plan`]).
fn child_env(lease: &Lease, plan: &Plan, config: Option<&Path>) -> Vec<(String, Option<String>)> {
    let backend = match &plan.backend_name {
        Some(name) => name.clone(),
        None => plan.backend.redacted(),
    };
    let mut env = vec![
        ("LOCKRUN_RESOURCE".into(), Some(lease.resource.to_string())),
        ("LOCKRUN_LEASE_ID".into(), Some(lease.id.to_string())),
        ("LOCKRUN_PRINCIPAL".into(), Some(lease.principal.clone())),
        ("LOCKRUN_BACKEND".into(), Some(backend.clone())),
        (
            "LOCKRUN_CONFIGURED_BACKEND".into(),
            plan.backend_configured.then_some(backend),
        ),
        (
            "LOCKRUN_CONFIGURED_PRINCIPAL".into(),
            plan.principal_configured.then(|| lease.principal.clone()),
        ),
        (
            "LOCKRUN_FENCING_TOKEN".into(),
            lease.fencing_token.map(|t| t.to_string()),
        ),
    ];
    // Absolute, as the command may change directory.
    let config = config.and_then(|p| std::path::absolute(p).ok());
    if let Some(path) = config.as_deref().and_then(Path::to_str) {
        env.push(("LOCKRUN_CONFIG".into(), Some(path.to_owned())));
    }
    env
}
