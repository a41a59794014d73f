//! `lockrun acquire`: take a lease and print its id (or the lease as JSON) on stdout.

use std::sync::Mutex;
use std::time::Duration;

use super::events::Events;
use super::status::Status;
use super::{order_policy, wait_policy, Ctx, Failure};
use crate::cli::{AcquireArgs, WaitArgs};
use crate::exit::Exit;
use crate::lock::{Guard, Lock};
use crate::wait::{self, Wait};

pub async fn acquire(ctx: &Ctx, args: AcquireArgs) -> Result<Exit, Failure> {
    // `ID=$(lockrun acquire -n -E 0 res) && migrate` would go on with no lease and an empty id.
    // (`run -E 0` is fine: there the command does not run.)
    if args.wait.conflict_exit_code == 0 {
        return Err(Failure::usage(
            "acquire -E 0 would report a busy resource as acquired (exit 0 with no lease id); \
             give a non-zero code",
        ));
    }
    let (resource, plan) = ctx.plan(&args.resource)?;
    let ttl = args.ttl.unwrap_or(plan.ttl);
    check_ttl(ttl)?;
    let backend = ctx.open(&plan).await?;
    let lock = Lock::new(backend, resource.as_str())?
        .ttl(ttl)
        .principal(plan.principal.clone())
        .order(order_policy(&args.wait, &plan))
        .renew(false);
    let wait = wait_policy(&args.wait, &plan);
    let guard = obtain(ctx, &lock, (wait, wait), &args.wait, None).await?;
    let lease = guard.lease();
    let shown = if args.json {
        serde_json::to_string(&lease.to_json())
            .map_err(|e| Failure::new(Exit::Internal, format!("cannot encode JSON: {e}")))
    } else {
        Ok(lease.id.to_string())
    };
    // A lease whose id the caller never got could only run out at its TTL: release it.
    let written = shown.and_then(|text| {
        super::write_out(format_args!("{text}\n"))
            .map_err(|e| Failure::new(Exit::Internal, format!("cannot write to stdout: {e}")))
    });
    match written {
        Ok(()) => {
            guard.into_lease();
            Ok(Exit::Success)
        }
        Err(mut f) => {
            // Named here when it stays, so that it can still be released by hand (stderr is
            // all the caller gets).
            let (id, res) = (lease.id.to_string(), crate::wait::resource_word(&resource));
            match guard.release().await {
                Ok(_) => f.message += "; the lease was released",
                Err(_) => {
                    f.message += &format!(
                        "; the lease could not be released and runs out at its TTL (to free \
                         it, with this command's backend options: lockrun release {res} {id})"
                    )
                }
            }
            Err(f)
        }
    }
}

/// A TTL must be positive and representable by every backend (checked before the backend is
/// opened, so that a bad `--ttl` is a usage error whatever the backend's state).
pub(super) fn check_ttl(ttl: Duration) -> Result<(), Failure> {
    Ok(crate::lease::check_ttl(ttl)?)
}

/// The lease of the `lockrun run` whose command this process runs under (`LOCKRUN_RESOURCE`,
/// `LOCKRUN_LEASE_ID`), when it holds `lock`'s resource: waiting for it would wait forever. One
/// read of the holder, made only when the names match.
async fn own_lease(lock: &Lock) -> Option<String> {
    let outer = std::env::var("LOCKRUN_LEASE_ID").ok()?;
    if std::env::var("LOCKRUN_RESOURCE").ok()? != lock.resource().as_str() {
        return None;
    }
    let holder = lock.current().await.ok()??;
    (holder.id.to_string() == outer).then_some(outer)
}

/// Acquires under the wait policy, keeping the "waiting for" line up to date, and turns a busy
/// outcome into the busy exit code.
/// `wait` is (what is left of the wait, the whole wait): the first bounds this attempt, the
/// second is what a busy message says was waited.
pub(super) async fn obtain(
    ctx: &Ctx,
    lock: &Lock,
    (wait, whole): (Wait, Wait),
    wait_args: &WaitArgs,
    events: Option<&Events>,
) -> Result<Guard, Failure> {
    let resource = lock.resource();
    if let Some(id) = own_lease(lock).await {
        return Err(Failure::outcome(
            Exit::Busy(wait_args.conflict_exit_code),
            format!(
                "{} is held by the lockrun this command runs under (lease {id}): a nested \
                 lockrun on the same resource would wait for itself; lock another resource, or \
                 leave this one to the outer lockrun",
                crate::lease::escape(resource.as_str())
            ),
        ));
    }
    // `run -E 0`: not getting the lease is a normal outcome, as with `flock -E 0`, so the
    // waiting line stays quiet too.
    let chatty = ctx.chatty() && wait_args.conflict_exit_code != 0;
    let status = Mutex::new(Status::new(resource, chatty));
    let tick_every = status.lock().map(|s| s.tick_every()).unwrap_or(None);
    let mut on_event = |e: wait::Event<'_>| {
        let waiting = match (events, &e) {
            (Some(_), wait::Event::Busy { holder }) => Some(Events::holder(*holder)),
            _ => None,
        };
        // One `waiting` event per holder, however often the wait finds the resource busy.
        let new_holder = status.lock().map(|mut s| s.event(e)).unwrap_or(true);
        if let (Some(ev), Some(holder), true) = (events, waiting, new_holder) {
            ev.emit("waiting", serde_json::json!({ "holder": holder }));
        }
    };
    let attempt = lock.acquire_reporting(wait, &mut on_event);
    tokio::pin!(attempt);
    let outcome = match tick_every {
        None => attempt.await,
        Some(every) => {
            let mut ticker = tokio::time::interval(every);
            loop {
                tokio::select! {
                    r = &mut attempt => break r,
                    _ = ticker.tick() => {
                        if let Ok(mut s) = status.lock() {
                            s.tick();
                        }
                    }
                }
            }
        }
    };
    if let Ok(mut s) = status.lock() {
        s.clear();
    }
    match outcome {
        Ok(guard) => Ok(guard),
        Err(crate::Error::Busy(holder)) => {
            if let Some(ev) = events {
                ev.emit(
                    "busy",
                    serde_json::json!({ "holder": Events::holder(holder.as_deref()) }),
                );
            }
            let who = holder.map_or_else(|| "held by someone else".into(), |h| h.holder_summary());
            let why = match whole {
                Wait::AtMost(d) if !d.is_zero() => {
                    format!(" after waiting {}", crate::duration::format(d))
                }
                _ => String::new(),
            };
            Err(Failure::outcome(
                Exit::Busy(wait_args.conflict_exit_code),
                format!(
                    "{} is busy{why}: {who}",
                    crate::lease::escape(resource.as_str())
                ),
            ))
        }
        Err(e) => Err(e.into()),
    }
}
