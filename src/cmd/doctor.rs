//! `lockrun doctor`: checks the configured backend end to end on a scratch resource (connect,
//! acquire, renew, current, release), measures the round trips, and warns about settings that
//! are unsafe for what it measured.

use std::time::{Duration, Instant};

use super::{out, Ctx, Failure};
use crate::backend::{Acquire, AcquireRequest, Fencing, Renewal};
use crate::cli::DoctorArgs;
use crate::duration::format as human;
use crate::exit::Exit;
use crate::heartbeat::Timing;
use crate::lease::{LeaseId, Resource};

/// The scratch resource doctor locks is this prefix and the principal: one record per principal,
/// reused by each of its runs, so that two users' doctors (or the same user's on two hosts) do not
/// meet on one resource. In a shared lock directory, one user could not even open another's
/// record.
const SCRATCH: &str = "lockrun.doctor";
const ROUNDS: usize = 5;

pub async fn doctor(ctx: &Ctx, args: DoctorArgs) -> Result<Exit, Failure> {
    // A check that fails ends the report with a `fail` line, so that a report captured from
    // stdout alone does not read as healthy (the error's own line goes to stderr, as always).
    report(ctx, args).await.inspect_err(|f| {
        if !f.outcome {
            let _ = out(format_args!(
                "fail  {}",
                crate::error::without_os_error(&super::one_line(&f.message))
            ));
        }
    })
}

async fn report(ctx: &Ctx, args: DoctorArgs) -> Result<Exit, Failure> {
    let name = args.resource.as_deref().unwrap_or(SCRATCH);
    let (_, plan) = ctx.plan(name)?;
    let scratch = scratch(&plan.principal);
    let mut warnings = 0;
    let mut warn = |msg: String| {
        warnings += 1;
        out(format_args!("warn  {msg}"))
    };
    match ctx.config.path() {
        Some(p) => out(format_args!("ok    config {}", p.display()))?,
        None => out("ok    config: none found, built-in defaults")?,
    }
    out(format_args!(
        "ok    backend {} (principal {})",
        plan.backend,
        crate::lease::escape(&plan.principal)
    ))?;

    // Opening may not touch the server (etcd connects on first use): a read of the scratch
    // resource makes "connect" mean the same on every backend.
    let t = Instant::now();
    let backend = ctx.open(&plan).await?;
    backend.current(&scratch).await?;
    out(format_args!("ok    connect {}", ms(t.elapsed())))?;
    let caps = backend.capabilities();
    out(format_args!(
        "ok    capabilities: fencing tokens {}, expiry by {}, waiters wake by {}",
        match caps.fencing {
            Fencing::Strict => "strictly increasing",
            Fencing::BestEffort => "increasing while the store keeps its counter",
            Fencing::None => "none",
        },
        if caps.server_time {
            "the server's clock"
        } else {
            "lockrun's clocks"
        },
        if caps.watch {
            "notification"
        } else {
            "polling"
        }
    ))?;
    if caps.fencing == Fencing::None {
        warn(
            "this backend gives no fencing token: the command cannot fence off a late predecessor"
                .into(),
        )?;
    }
    if plan.fair && !caps.fair {
        warn(
            "fair = true, but this backend cannot serve waiters in order: a run or acquire that \
             waits would refuse it (exit 78; -n still works); etcd can"
                .into(),
        )?;
    }
    for line in backend.setup_warnings().await {
        warn(line)?;
    }
    if caps.may_evict {
        warn("this backend may evict a lock under memory pressure: use it only where a duplicate run is harmless, or make the server refuse writes instead (Redis: maxmemory-policy noeviction; memcached: -M)".into())?;
    }

    // Round trips on the scratch resource (the first acquire creates a missing lock directory).
    let mut rtts = Vec::new();
    for _ in 0..ROUNDS {
        rtts.push(round(&*backend, &scratch, &plan.principal).await?);
    }
    if plan.backend.scheme() == "file" {
        if let Ok(path) = plan.backend.secret_url().to_file_path() {
            if let Some(fs) = network_filesystem(&path) {
                warn(format!("the lock directory is on {fs}: its locks are only as good as that filesystem's rename and flock across hosts; use a network backend for locks across machines"))?;
            }
        }
    }
    let worst = rtts.iter().map(|r| r.worst()).max().unwrap_or_default();
    let median = |f: fn(&Round) -> Duration| {
        let mut v: Vec<Duration> = rtts.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    out(format_args!(
        "ok    round trips (median of {ROUNDS}): acquire {}, renew {}, current {}, release {}; worst {}",
        ms(median(|r| r.acquire)),
        ms(median(|r| r.renew)),
        ms(median(|r| r.current)),
        ms(median(|r| r.release)),
        ms(worst)
    ))?;

    // The settings `run` would use.
    let ttl = args.ttl.unwrap_or(plan.run_ttl);
    match Timing::new(ttl, args.heartbeat, args.kill_after) {
        Err(e) => warn(format!("run settings are rejected: {e}"))?,
        Ok(t) => {
            out(format_args!(
                "ok    run timing: TTL {}, heartbeat {}, kill-after {}, safety margin {}",
                human(t.ttl),
                human(t.heartbeat),
                human(t.kill_after),
                human(t.margin)
            ))?;
            // A renewal that takes longer than the slack before the deadline cannot save the lease.
            let slack = t.ttl.saturating_sub(t.heartbeat + t.kill_after + t.margin);
            if worst * 4 > slack {
                warn(format!(
                    "the worst round trip ({}) is large next to the {} between the last heartbeat and the kill deadline: raise --ttl",
                    ms(worst),
                    human(slack)
                ))?;
            }
            if t.heartbeat * 2 > t.ttl {
                warn(format!("the heartbeat ({}) is more than half the TTL ({}): one lost renewal stops the command", human(t.heartbeat), human(t.ttl)))?;
            }
        }
    }
    if warnings == 0 {
        out(format_args!("ok    no problems found"))?;
        Ok(Exit::Success)
    } else {
        out(format_args!("{warnings} warning(s)"))?;
        Err(Failure::outcome(
            Exit::Warned,
            format!("doctor found {warnings} thing(s) to fix (the warn lines above)"),
        ))
    }
}

struct Round {
    acquire: Duration,
    renew: Duration,
    current: Duration,
    release: Duration,
}

impl Round {
    fn worst(&self) -> Duration {
        self.acquire
            .max(self.renew)
            .max(self.current)
            .max(self.release)
    }
}

/// One acquire/renew/current/release cycle, each step checked.
async fn round(
    b: &dyn crate::backend::Backend,
    r: &Resource,
    principal: &str,
) -> Result<Round, Failure> {
    let id = LeaseId::generate();
    let ttl = Duration::from_secs(30);
    let req = AcquireRequest {
        resource: r,
        id: &id,
        principal,
        ttl,
    };
    let fail = |what: &str| {
        Failure::new(
            Exit::Internal,
            format!(
                "doctor: {what} on the scratch resource {} failed",
                crate::wait::resource_word(r)
            ),
        )
    };
    let t = Instant::now();
    let acquire = match b.try_acquire(&req).await? {
        Acquire::Acquired(_) => t.elapsed(),
        Acquire::Busy { holder, .. } => {
            let who = holder.map_or_else(|| "someone".into(), |h| h.holder_summary());
            return Err(Failure::new(
                Exit::Busy(crate::exit::BUSY_DEFAULT),
                format!(
                    "the scratch resource {} is {who}; is another doctor running?",
                    crate::wait::resource_word(r)
                ),
            ));
        }
    };
    let t = Instant::now();
    if !matches!(b.renew(r, &id, ttl).await?, Renewal::Renewed(_)) {
        return Err(fail("renew"));
    }
    let renew = t.elapsed();
    let t = Instant::now();
    if b.current(r).await?.map(|l| l.id) != Some(id.clone()) {
        return Err(fail("current"));
    }
    let current = t.elapsed();
    let t = Instant::now();
    if !b.release(r, &id).await? {
        return Err(fail("release"));
    }
    Ok(Round {
        acquire,
        renew,
        current,
        release: t.elapsed(),
    })
}

/// The scratch resource of `principal`: `lockrun.doctor.<principal>`, or the bare prefix for a
/// principal too long to fit in a resource name.
fn scratch(principal: &str) -> Resource {
    Resource::new(format!("{SCRATCH}.{principal}"))
        .or_else(|_| Resource::new(SCRATCH))
        .expect("the scratch prefix is a valid resource name")
}

/// The name of the network filesystem `path` is on, if it is on one.
fn network_filesystem(path: &std::path::Path) -> Option<&'static str> {
    let st = nix::sys::statfs::statfs(path).ok()?;
    let magic = st.filesystem_type().0 as i64;
    match magic {
        0x6969 => Some("NFS"),
        0xFF534D42 | 0xFE534D42 => Some("CIFS/SMB"),
        0x65735546 => Some("a FUSE filesystem"),
        0x564c => Some("NCP"),
        0x6B414653 => Some("AFS"),
        0x47504653 => Some("GPFS"),
        0x0BD00BD0 => Some("Lustre"),
        0x00C36400 => Some("CephFS"),
        _ => None,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
