//! Single-fault measurements, each on a resource of its own:
//!
//! - [`server_pause`]: `run` holds a lease, the server is paused longer than the TTL. The margin
//!   is the earliest moment the server could let another holder in minus the death of the
//!   command's process group; it must be positive.
//! - [`kill9`]: `kill -9` of a holding lockrun whose command is `sh -c` with a child of its own.
//!   No process of the command's tree may survive, and a waiter must start within TTL + 1 s
//!   (TTL + 2 s where waiters poll: [`super::target::Kind::takeover_bound`]).
//! - [`stopped_lockrun`]: SIGSTOP of a holding lockrun for longer than the TTL, then SIGCONT.
//!   The command must be dead before the lease could expire, lockrun must exit 124, and a
//!   waiter must start only after the command died.
//!
//! The earliest moment the server could let another holder in is computed two ways where the
//! server allows: from lockrun's `--events` (send time of the last successful renewal + TTL, see
//! [`Events::earliest_expiry`]) and from the server's own record read just before the fault
//! (Redis `PEXPIRETIME`, PostgreSQL `expires_at`), used when no renewal answered after the read
//! began (such a renewal may have landed after the read and extended the lease). The margin
//! reported is the smaller of the two.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::history::Events;
use super::proc::{alive, group_members, kill, ms, now_ns, Gone, GroupWatch, Rng};
use super::target::Target;
use super::{spawn_with_fd3, ttl_arg, wait_bounded};
use crate::common::{eventually, read_pid};

/// A directory and a resource name of their own for one trial.
fn scratch(target: &Target, what: &str) -> (PathBuf, String) {
    let res = format!("{what}-{}", crate::common::server::prefix());
    let dir = target.env.path().join(&res);
    std::fs::create_dir_all(&dir).expect("trial dir");
    (dir, res)
}

/// `lockrun run --ttl TTL --events 3 RES -- sh -c SCRIPT`, events to `dir/events-NAME`.
fn start_run(
    target: &Target,
    dir: &Path,
    name: &str,
    ttl: Duration,
    res: &str,
    script: &str,
) -> Child {
    let events = std::fs::File::create(dir.join(format!("events-{name}"))).expect("events");
    let mut cmd = target.lockrun();
    cmd.args([
        "run",
        "--ttl",
        &ttl_arg(ttl),
        "-w",
        "60s",
        "--events",
        "3",
        res,
    ])
    .args(["--", "bash", "-c", script])
    .stdout(Stdio::null())
    .stderr(Stdio::from(
        std::fs::File::create(dir.join(format!("stderr-{name}"))).expect("stderr"),
    ));
    spawn_with_fd3(&mut cmd, &events)
}

/// A `lockrun run` queued behind the holder; its command writes the time it started to the
/// returned file.
fn start_waiter(target: &Target, dir: &Path, ttl: Duration, res: &str) -> (Child, PathBuf) {
    let got = dir.join("got");
    let script = format!(
        "echo $EPOCHREALTIME > {g}.tmp; mv {g}.tmp {g}",
        g = got.display()
    );
    (start_run(target, dir, "waiter", ttl, res, &script), got)
}

fn events(dir: &Path, name: &str) -> Events {
    Events::read(&dir.join(format!("events-{name}")))
}

/// Reads a file written atomically by a trial's command (`... > f.tmp; mv f.tmp f`); if it
/// never appears, fails with what the trial's lockruns wrote on stderr.
fn wait_file(path: &Path, limit: Duration) -> String {
    if !eventually(limit, || path.exists()) {
        let dir = path.parent().expect("a trial dir");
        let mut stderr: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("stderr-"))
            .map(|e| {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                format!("{}: {text:?}", e.file_name().to_string_lossy())
            })
            .collect();
        stderr.sort();
        panic!("{} never appeared; {}", path.display(), stderr.join("; "));
    }
    std::fs::read_to_string(path).expect("read")
}

fn epoch_ns(text: &str) -> i64 {
    let (s, us) = text.trim().split_once('.').expect("s.us");
    s.parse::<i64>().unwrap() * 1_000_000_000 + us.parse::<i64>().unwrap() * 1000
}

#[derive(Debug, Clone)]
pub struct PauseTrial {
    pub ignores_term: bool,
    /// Margin by the events method, and by the server's own record (where it has one, and no
    /// renewal answered after it was read), in ms.
    pub margin_events_ms: f64,
    pub margin_server_ms: Option<f64>,
    /// From the pause to the death of the command.
    pub death_after_pause_ms: f64,
    pub exit: Option<i32>,
}

impl PauseTrial {
    pub fn margin_ms(&self) -> f64 {
        self.margin_server_ms
            .map_or(self.margin_events_ms, |s| s.min(self.margin_events_ms))
    }
}

/// One trial: hold with `ttl`, pause the server for `pause`, measure.
pub fn server_pause(
    target: &Target,
    ttl: Duration,
    pause: Duration,
    ignores_term: bool,
    rng: &mut Rng,
) -> PauseTrial {
    let server = target.server.as_ref().expect("a network backend");
    let (dir, res) = scratch(target, "pause");
    let pid_file = dir.join("pid");
    let trap = if ignores_term { "trap '' TERM; " } else { "" };
    let script = format!(
        "{trap}echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 1000",
        p = pid_file.display()
    );
    let mut holder = start_run(target, &dir, "holder", ttl, &res, &script);
    let child: i32 = wait_file(&pid_file, Duration::from_secs(20))
        .trim()
        .parse()
        .unwrap();
    // At least one renewal, then a random phase within a heartbeat.
    assert!(
        eventually(ttl, || !events(&dir, "holder").renewed.is_empty()),
        "no renewal within the TTL"
    );
    std::thread::sleep(rng.between(Duration::ZERO, ttl / 3));
    let read_at = now_ns();
    let server_expiry = target.server_expiry(&res);
    let watch = GroupWatch::new(child);
    let paused = now_ns();
    let t = Instant::now();
    server.pause();
    let gone = watch.wait(pause);
    std::thread::sleep(pause.saturating_sub(t.elapsed()));
    server.resume();
    let status = wait_bounded(&mut holder, Duration::from_secs(30))
        .expect("lockrun still running 30 s after the paused server was resumed");
    let Gone::At(death) = gone else {
        panic!(
            "the command was still running when the paused server was resumed ({:?})",
            gone
        )
    };
    let ev = events(&dir, "holder");
    let expiry = ev
        .earliest_expiry(ttl.as_nanos() as i64)
        .expect("acquired event");
    // The server's record is the expiry at the pause only if no renewal answered after the read
    // began (one that did may have landed after the read and extended the lease).
    let stale = ev.renewed.last().is_some_and(|&(t, _)| t > read_at);
    PauseTrial {
        ignores_term,
        margin_events_ms: ms(expiry - death),
        margin_server_ms: server_expiry.filter(|_| !stale).map(|e| ms(e - death)),
        death_after_pause_ms: ms(death - paused),
        exit: status.code(),
    }
}

#[derive(Debug, Clone)]
pub struct Kill9Trial {
    /// From the kill to the death of every process of the command's tree.
    pub tree_gone_ms: Option<f64>,
    pub survivors: Vec<i32>,
    /// From the kill to the start of the waiter's command.
    pub takeover_ms: f64,
    /// The waiter's start minus the holder's earliest possible expiry (never negative).
    pub after_expiry_ms: f64,
}

/// One trial: a holder running `sh -c 'sleep 300 & ...; wait'`, a waiter, `kill -9` of the
/// holding lockrun.
pub fn kill9(target: &Target, ttl: Duration) -> Kill9Trial {
    let (dir, res) = scratch(target, "kill9");
    let pids = dir.join("pids");
    let script = format!(
        "sleep 300 & echo \"$$ $!\" > {p}.tmp; mv {p}.tmp {p}; wait",
        p = pids.display()
    );
    let mut holder = start_run(target, &dir, "holder", ttl, &res, &script);
    let procs: Vec<i32> = wait_file(&pids, Duration::from_secs(20))
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(procs.iter().all(|&p| alive(p)), "the command tree runs");
    let (mut waiter, got) = start_waiter(target, &dir, ttl, &res);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!got.exists(), "the waiter must wait");
    let watch = GroupWatch::new(procs[0]).spawn(Duration::from_secs(5));
    let killed = now_ns();
    kill(holder.id() as i32, libc::SIGKILL);
    let _ = holder.wait();
    let gone = watch.join().expect("watch");
    let started = epoch_ns(&wait_file(&got, ttl + Duration::from_secs(30)));
    let status = wait_bounded(&mut waiter, Duration::from_secs(30)).expect("the waiter hangs");
    assert_eq!(status.code(), Some(0), "the waiter ran");
    let mut survivors: Vec<i32> = procs.iter().copied().filter(|&p| alive(p)).collect();
    survivors.extend(group_members(procs[0]));
    survivors.sort();
    survivors.dedup();
    let expiry = events(&dir, "holder")
        .earliest_expiry(ttl.as_nanos() as i64)
        .expect("holder acquired");
    Kill9Trial {
        tree_gone_ms: match gone {
            Gone::At(t) => Some(ms(t - killed)),
            Gone::Survivors(_) => None,
        },
        survivors,
        takeover_ms: ms(started - killed),
        after_expiry_ms: ms(started - expiry),
    }
}

#[derive(Debug, Clone)]
pub struct StopTrial {
    pub exit: Option<i32>,
    /// Earliest possible expiry minus the death of the command (positive: in time).
    pub margin_ms: Option<f64>,
    /// From SIGCONT to lockrun's exit.
    pub exit_after_cont_ms: f64,
    /// The waiter's start minus the death of the holder's command.
    pub waiter_after_death_ms: Option<f64>,
    /// Ticks the command wrote after the lease could have expired.
    pub ticks_after_expiry: usize,
}

/// One trial: a holder whose command ticks every 50 ms, a waiter, SIGSTOP of the holding
/// lockrun for `stop`, SIGCONT.
pub fn stopped_lockrun(target: &Target, ttl: Duration, stop: Duration) -> StopTrial {
    let (dir, res) = scratch(target, "stop");
    let (pid_file, ticks) = (dir.join("pid"), dir.join("ticks"));
    let script = format!(
        "echo $$ > {p}.tmp; mv {p}.tmp {p}; while :; do echo $EPOCHREALTIME >> {t}; sleep 0.05; done",
        p = pid_file.display(),
        t = ticks.display()
    );
    let mut holder = start_run(target, &dir, "holder", ttl, &res, &script);
    wait_file(&pid_file, Duration::from_secs(20));
    let child = read_pid(&pid_file).expect("pid");
    let (mut waiter, got) = start_waiter(target, &dir, ttl, &res);
    std::thread::sleep(Duration::from_millis(500));
    let gone = GroupWatch::new(child).spawn(stop + Duration::from_secs(10));
    kill(holder.id() as i32, libc::SIGSTOP);
    std::thread::sleep(stop);
    let cont = Instant::now();
    kill(holder.id() as i32, libc::SIGCONT);
    let status = wait_bounded(&mut holder, Duration::from_secs(30))
        .expect("lockrun still running 30 s after SIGCONT");
    let exit_after_cont_ms = cont.elapsed().as_secs_f64() * 1e3;
    let death = match gone.join().expect("watch") {
        Gone::At(d) => Some(d),
        Gone::Survivors(_) => None,
    };
    let started = wait_file(&got, ttl + Duration::from_secs(30));
    wait_bounded(&mut waiter, Duration::from_secs(30)).expect("the waiter hangs");
    let expiry = events(&dir, "holder").earliest_expiry(ttl.as_nanos() as i64);
    let ticks_after_expiry = match expiry {
        Some(e) => std::fs::read_to_string(&ticks)
            .unwrap_or_default()
            .lines()
            .filter(|l| epoch_ns(l) >= e)
            .count(),
        None => usize::MAX,
    };
    StopTrial {
        exit: status.code(),
        margin_ms: death.zip(expiry).map(|(d, e)| ms(e - d)),
        exit_after_cont_ms,
        waiter_after_death_ms: death.map(|d| ms(epoch_ns(&started) - d)),
        ticks_after_expiry,
    }
}
