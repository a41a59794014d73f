//! N `lockrun run` workers contending for one resource on a real backend while faults are
//! injected, and the report of what the checker found.
//!
//! Each worker runs sections back to back: most are short (20-200 ms), a share is long (0.5 to
//! 2.5 TTL, so they live on renewals). One fault at a time is injected at random intervals, the
//! kinds taken in shuffled rounds so their counts stay even:
//!
//! - `kill-child`: SIGKILL of the holding section's shell (its `sleep` lives on until lockrun
//!   cleans up the group);
//! - `kill-lockrun`: SIGKILL of the holding lockrun;
//! - `stop-lockrun`: SIGSTOP of the holding lockrun for longer than the TTL, then SIGCONT;
//! - `pause-server`: SIGSTOP of the backend server for longer than the TTL, then SIGCONT (the
//!   Kubernetes stand-in's paused mode);
//! - `restart-server`: SIGKILL of the backend server, then the same server started again (the
//!   Kubernetes stand-in: connections cut, port closed for 1 s, same store).
//!
//! Which of them a backend gets is [`Kind::faults`]: no server faults for the file backend, no
//! restart for the servers that keep nothing across one (moto_server, memcached).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::history::{self, EndedBy, Events, Pair, Section, SECTION};
use super::proc::{comm, kill, ms, now_ns, stat, Gone, GroupWatch, Rng};
use super::target::{Kind, Target};
use super::{spawn_with_fd3, ttl_arg};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillChild,
    KillLockrun,
    StopLockrun,
    PauseServer,
    RestartServer,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillChild => "kill-child",
            Fault::KillLockrun => "kill-lockrun",
            Fault::StopLockrun => "stop-lockrun",
            Fault::PauseServer => "pause-server",
            Fault::RestartServer => "restart-server",
        }
    }

    pub fn needs_server(self) -> bool {
        matches!(self, Fault::PauseServer | Fault::RestartServer)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub workers: u32,
    pub duration: Duration,
    pub ttl: Duration,
    /// Random gap between two faults.
    pub gap: (Duration, Duration),
    /// How long a server pause lasts.
    pub pause_for: Duration,
    /// How long a holding lockrun stays stopped.
    pub stop_for: Duration,
    /// Share of long sections (0.5 to 2.5 TTL).
    pub long_share: f64,
    pub seed: Option<u64>,
    /// More `run` options for every worker (e.g. `--fair`).
    pub run_args: Vec<String>,
    /// How long before a kill of the holder a server fault can still delay the takeover. Zero
    /// for racing waiters. In etcd's line of waiters (`--fair`) a waiter that gives up because
    /// the server was unreachable cannot delete its place, which then holds up the waiters
    /// behind it until its queue lease expires (10 s, renewed in full when etcd restarts).
    pub fault_lingers: Duration,
}

impl Config {
    /// The bounded CI run: 4 workers, TTL 3 s, about `secs` seconds.
    pub fn short(secs: u64) -> Config {
        let ttl = Duration::from_secs(3);
        Config {
            workers: 4,
            duration: Duration::from_secs(secs),
            ttl,
            gap: (Duration::from_millis(500), Duration::from_millis(1500)),
            pause_for: ttl * 2,
            stop_for: ttl + Duration::from_secs(1),
            long_share: 0.3,
            seed: None,
            run_args: Vec::new(),
            fault_lingers: Duration::ZERO,
        }
    }
}

/// One `lockrun run` of a worker.
#[derive(Debug, Clone)]
struct Run {
    worker: u32,
    pid: i32,
    ended: i64,
    code: String,
    events: Events,
}

/// One injected fault.
struct Injected {
    fault: Fault,
    at: i64,
    /// (worker, token) of the section that held the resource, if any.
    holder: Option<(u32, u64)>,
    lockrun: Option<i32>,
    watch: Option<JoinHandle<Gone>>,
}

const NEVER_STARTED: &str = "the command never recorded its start";

/// A lease that ended while its command ran (lockrun exit 124, or the holder was killed).
#[derive(Debug, Clone)]
pub struct Lost {
    pub worker: u32,
    pub token: u64,
    pub cause: &'static str,
    /// Earliest possible expiry minus the end of the section, in ms (positive: in time).
    pub margin_ms: Option<f64>,
    /// Why there is no margin.
    pub note: &'static str,
}

/// What happened after a `kill -9` of a holding lockrun.
#[derive(Debug, Clone)]
pub struct Kill9 {
    /// From the kill to the death of the whole process group of the command.
    pub tree_gone_ms: Option<f64>,
    pub survivors: Vec<i32>,
    /// From the kill to the start of the next section.
    pub takeover_ms: Option<f64>,
}

#[derive(Debug)]
pub struct Report {
    pub backend: &'static str,
    pub kind: Kind,
    pub seed: u64,
    pub seconds: f64,
    pub workers: u32,
    pub ttl: Duration,
    pub sections: usize,
    pub runs: usize,
    pub faults: BTreeMap<&'static str, usize>,
    pub skipped: usize,
    pub overlaps: Vec<Pair>,
    pub inversions: Vec<Pair>,
    pub unknown_ends: usize,
    pub lost: Vec<Lost>,
    pub kill9: Vec<Kill9>,
    /// Kills of a holder whose takeover was delayed by a server fault (not measured).
    pub kill9_disturbed: usize,
    /// Exit code of each stopped lockrun, and the one expected.
    pub stopped_lockrun_exits: Vec<(String, &'static str)>,
    pub exits: BTreeMap<String, usize>,
    pub ends: BTreeMap<String, usize>,
    /// Where the history and events of a failed run were kept.
    pub kept: Option<PathBuf>,
}

/// Runs the workers and the fault injector, then checks the history.
pub fn run(target: &Target, cfg: &Config) -> Report {
    let (mut rng, seed) = match cfg.seed {
        Some(s) => (Rng::new(s), s),
        None => Rng::from_entropy(),
    };
    let dir = target
        .env
        .path()
        .join(format!("chaos-{}", super::proc::now_ns()));
    std::fs::create_dir_all(&dir).expect("chaos dir");
    let hist = dir.join("history");
    let started = Instant::now();
    let end = started + cfg.duration;
    let runs: Mutex<Vec<Run>> = Mutex::default();
    let seeds: Vec<u64> = (0..cfg.workers).map(|_| rng.next()).collect();
    // The workers run until the injector is done: at `end`, or later when some kind of fault
    // has not been injected yet (a loaded machine can make one fault take most of a short run).
    let done = AtomicBool::new(false);
    let (injected, skipped) = std::thread::scope(|scope| {
        for (w, wseed) in (1..=cfg.workers).zip(seeds) {
            let (runs, dir, hist, done) = (&runs, &dir, &hist, &done);
            scope.spawn(move || {
                let mut rng = Rng::new(wseed);
                let mut k = 0;
                while !done.load(Ordering::SeqCst) {
                    k += 1;
                    let run = one_run(&mut target.lockrun(), &mut rng, cfg, w, k, dir, hist);
                    runs.lock().unwrap().push(run);
                    std::thread::sleep(rng.between(Duration::ZERO, Duration::from_millis(30)));
                }
            });
        }
        let out = inject_until(target, cfg, &mut rng, end, &hist);
        done.store(true, Ordering::SeqCst);
        out
    });
    let runs = runs.into_inner().unwrap();
    let mut report = report(target, cfg, seed, started, &hist, runs, injected, skipped);
    if !report.is_safe() {
        // Keep the evidence: history, events and lockrun's stderr of every run.
        let keep =
            std::env::temp_dir().join(format!("lockrun-faults-{}-{seed}", target.kind.name()));
        let _ = std::process::Command::new("cp")
            .arg("-a")
            .arg(&dir)
            .arg(&keep)
            .status();
        report.kept = Some(keep);
    }
    report
}

/// Injects one fault at a time until `end`, and past it (by up to the run's duration again) until
/// every kind of fault has been injected at least once; returns what was injected and how many
/// faults were skipped for want of a holder.
fn inject_until(
    target: &Target,
    cfg: &Config,
    rng: &mut Rng,
    end: Instant,
    hist: &Path,
) -> (Vec<Injected>, usize) {
    // The faults that are real for this backend (no restart of servers that keep nothing).
    let kinds: Vec<Fault> = target.kind.faults().to_vec();
    assert!(
        kinds
            .iter()
            .all(|f| !f.needs_server() || target.server.is_some()),
        "server faults for a backend without a server"
    );
    // How long a fault may take, with the search for a suitable holder.
    let takes = |f: Fault| match f {
        Fault::StopLockrun => cfg.stop_for + cfg.ttl * 2,
        Fault::PauseServer => cfg.pause_for + cfg.ttl * 2,
        Fault::RestartServer => Duration::from_secs(5),
        Fault::KillChild | Fault::KillLockrun => Duration::from_secs(2),
    };
    let hard_end = end + cfg.duration;
    let mut injected: Vec<Injected> = Vec::new();
    let mut skipped = 0;
    let mut round: Vec<Fault> = Vec::new();
    let missing = |injected: &[Injected]| -> Vec<Fault> {
        kinds
            .iter()
            .copied()
            .filter(|k| !injected.iter().any(|i| i.fault == *k))
            .collect()
    };
    // Let the workers get going before the first fault.
    std::thread::sleep(Duration::from_secs(1).min(cfg.duration / 4));
    loop {
        let now = Instant::now();
        let todo = missing(&injected);
        let fault = if now + cfg.gap.1 + Duration::from_secs(2) < end {
            if round.is_empty() {
                round = kinds.clone();
                // The first round goes longest first, so that even a short run sees every
                // kind; later rounds are shuffled.
                if !injected.is_empty() || skipped > 0 {
                    for i in (1..round.len()).rev() {
                        round.swap(i, (rng.next() % (i as u64 + 1)) as usize);
                    }
                }
            }
            let fault = round.pop().expect("a fault");
            if now + takes(fault) > end && !todo.contains(&fault) {
                continue; // no time left for this one
            }
            fault
        } else if let (Some(&fault), true) = (todo.first(), now < hard_end) {
            fault // overtime: only the kinds not seen yet
        } else {
            break;
        };
        std::thread::sleep(rng.between(cfg.gap.0, cfg.gap.1));
        match inject(target, cfg, fault, hist) {
            Some(i) => injected.push(i),
            None => skipped += 1,
        }
    }
    (injected, skipped)
}

fn one_run(
    cmd: &mut std::process::Command,
    rng: &mut Rng,
    cfg: &Config,
    w: u32,
    k: u32,
    dir: &Path,
    hist: &Path,
) -> Run {
    let hold = if rng.unit() < cfg.long_share {
        rng.between(cfg.ttl / 2, cfg.ttl * 5 / 2)
    } else {
        rng.between(Duration::from_millis(20), Duration::from_millis(200))
    };
    let ev_path = dir.join(format!("ev-{w}-{k}.jsonl"));
    let events = std::fs::File::create(&ev_path).expect("events file");
    let err = std::fs::File::create(dir.join(format!("err-{w}-{k}"))).expect("stderr file");
    cmd.args([
        "run",
        "--ttl",
        &ttl_arg(cfg.ttl),
        "-w",
        "60s",
        "--events",
        "3",
    ])
    .args(&cfg.run_args)
    .args(["contended", "--", "bash", "-c", SECTION, "section"])
    .arg(w.to_string())
    .arg(hist)
    .arg(format!("{:.3}", hold.as_secs_f64()))
    .stdout(Stdio::null())
    .stderr(Stdio::from(err));
    let mut child = spawn_with_fd3(cmd, &events);
    drop(events);
    let pid = child.id() as i32;
    // A lockrun that outlives its wait (60 s), its section and the longest fault by far is hung:
    // kill it, and fail the run.
    let limit = Duration::from_secs(90) + cfg.ttl * 3 + cfg.pause_for * 2;
    let status = super::wait_bounded(&mut child, limit);
    let ended = now_ns();
    let code = match status {
        None => "hung".into(),
        Some(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
            (Some(c), _) => c.to_string(),
            (None, Some(s)) => format!("signal {s}"),
            _ => "?".into(),
        },
    };
    Run {
        worker: w,
        pid,
        ended,
        code,
        events: Events::read(&ev_path),
    }
}

/// The section holding the resource now: an open section whose shell is alive, leads its
/// process group, and is a child of a lockrun.
struct Holder {
    worker: u32,
    token: u64,
    child: i32,
    lockrun: i32,
}

/// `outlives`: only a section that will still run after that long.
fn holder(hist: &Path, within: Duration, outlives: Duration) -> Option<Holder> {
    let end = Instant::now() + within;
    loop {
        let open = history::read(hist)
            .into_iter()
            .filter(|s| s.ended_by == EndedBy::Unknown)
            .filter_map(|s| {
                let st = stat(s.pid)?;
                let ok = st.state != 'Z' && st.pgrp == s.pid && comm(st.ppid)? == "lockrun";
                let ends = s.start + (hold_of(s.pid)? * 1e9) as i64;
                let left = ends - now_ns();
                (ok && left > outlives.as_nanos() as i64).then_some((s, st.ppid))
            })
            .max_by_key(|(s, _)| s.start);
        if let Some((s, lockrun)) = open {
            return Some(Holder {
                worker: s.worker,
                token: s.token,
                child: s.pid,
                lockrun,
            });
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a section means to hold the resource: the last argument of its shell.
fn hold_of(pid: i32) -> Option<f64> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let last = cmdline.split(|&b| b == 0).rfind(|a| !a.is_empty())?;
    std::str::from_utf8(last).ok()?.parse().ok()
}

fn inject(target: &Target, cfg: &Config, fault: Fault, hist: &Path) -> Option<Injected> {
    // Stops and pauses go for a section that would outlive the lease unless lockrun stops it.
    let h = match fault {
        Fault::StopLockrun | Fault::PauseServer => holder(hist, cfg.ttl * 2, cfg.ttl),
        _ => None,
    }
    .or_else(|| holder(hist, Duration::from_secs(2), Duration::ZERO));
    if h.is_none() && !fault.needs_server() {
        return None;
    }
    // Watching starts before the fault, so that the death time is the time of the death.
    let limit = cfg.pause_for.max(cfg.stop_for) + Duration::from_secs(10);
    let watch = h.as_ref().map(|h| GroupWatch::new(h.child).spawn(limit));
    let at = now_ns();
    let server = target.server.as_ref();
    match fault {
        Fault::KillChild => kill(h.as_ref()?.child, libc::SIGKILL),
        Fault::KillLockrun => kill(h.as_ref()?.lockrun, libc::SIGKILL),
        Fault::StopLockrun => {
            let pid = h.as_ref()?.lockrun;
            kill(pid, libc::SIGSTOP);
            std::thread::sleep(cfg.stop_for);
            kill(pid, libc::SIGCONT)
        }
        Fault::PauseServer => {
            server?.pause();
            std::thread::sleep(cfg.pause_for);
            server?.resume();
            true
        }
        Fault::RestartServer => {
            server?.crash_restart();
            true
        }
    };
    Some(Injected {
        fault,
        at,
        holder: h.as_ref().map(|h| (h.worker, h.token)),
        lockrun: h.as_ref().map(|h| h.lockrun),
        watch,
    })
}

#[allow(clippy::too_many_arguments)]
fn report(
    target: &Target,
    cfg: &Config,
    seed: u64,
    started: Instant,
    hist: &Path,
    runs: Vec<Run>,
    injected: Vec<Injected>,
    skipped: usize,
) -> Report {
    let ttl_ns = cfg.ttl.as_nanos() as i64;
    let by_key: HashMap<(u32, u64), &Run> = runs
        .iter()
        .filter_map(|r| Some(((r.worker, r.events.token()?), r)))
        .collect();
    // Deaths observed by the injector, and what each fault did.
    let mut deaths: HashMap<(u32, u64), i64> = HashMap::new();
    let mut faults: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut kill9 = Vec::new();
    let mut stopped_lockruns = Vec::new();
    let mut watched = Vec::new();
    let mut kill9_disturbed = 0;
    let mut log = String::new();
    for i in injected {
        log.push_str(&format!(
            "{} {} holder {:?} lockrun {:?}\n",
            i.at,
            i.fault.name(),
            i.holder,
            i.lockrun
        ));
        *faults.entry(i.fault.name()).or_default() += 1;
        let gone = i.watch.map(|w| w.join().expect("watch"));
        if let (Some(key), Some(Gone::At(t))) = (i.holder, &gone) {
            deaths.insert(key, *t);
        }
        watched.push((i.fault, i.at, i.holder, i.lockrun, gone));
    }
    if let Some(dir) = hist.parent() {
        let _ = std::fs::write(dir.join("faults"), &log);
    }
    let mut sections: Vec<Section> = history::read(hist);
    for s in sections
        .iter_mut()
        .filter(|s| s.ended_by == EndedBy::Unknown)
    {
        let run = by_key.get(&s.key());
        if let Some(&t) = deaths.get(&s.key()) {
            (s.end, s.ended_by) = (t, EndedBy::Death);
        } else if let Some(t) = run.and_then(|r| r.events.child_exited) {
            (s.end, s.ended_by) = (t + 1_000_000, EndedBy::ChildExited);
        } else if let Some(r) = run {
            (s.end, s.ended_by) = (r.ended, EndedBy::LockrunExit);
        }
    }
    let starts: Vec<i64> = {
        let mut v: Vec<i64> = sections.iter().map(|s| s.start).collect();
        v.sort();
        v
    };
    let section_of: HashMap<(u32, u64), &Section> = sections.iter().map(|s| (s.key(), s)).collect();
    for (fault, at, holder, lockrun, gone) in &watched {
        match fault {
            Fault::KillLockrun => {
                let next = starts.iter().find(|&&s| s > *at);
                // A server paused or restarted before anyone took over delays the takeover by
                // design (a paused server grants nothing; etcd gives every lease a full TTL
                // again when it restarts): that takeover is not measured. So is one that a
                // fault shortly before the kill can still delay (`Config::fault_lingers`).
                let since = *at - cfg.fault_lingers.as_nanos() as i64;
                let disturbed = next.is_some_and(|&n| {
                    watched
                        .iter()
                        .any(|(f, t, ..)| f.needs_server() && *t > since && *t < n)
                });
                if disturbed {
                    kill9_disturbed += 1;
                }
                kill9.push(Kill9 {
                    tree_gone_ms: match gone {
                        Some(Gone::At(t)) => Some(ms(t - at)),
                        _ => None,
                    },
                    survivors: match gone {
                        Some(Gone::Survivors(v)) => v.clone(),
                        _ => vec![],
                    },
                    takeover_ms: next.filter(|_| !disturbed).map(|s| ms(s - at)),
                });
            }
            Fault::StopLockrun => {
                let code = lockrun
                    .and_then(|p| runs.iter().find(|r| r.pid == p))
                    .map_or("?".to_owned(), |r| r.code.clone());
                // A section that ended on its own while lockrun was stopped passes its exit
                // status on; one that had to be killed makes lockrun exit 124.
                let ended_itself = holder
                    .and_then(|k| section_of.get(&k))
                    .is_some_and(|s| s.ended_by == EndedBy::Line);
                stopped_lockruns.push((code, if ended_itself { "0" } else { "124" }));
            }
            _ => {}
        }
    }
    // Leases that ended under the command: exit 124, or the holder was killed with -9.
    let mut lost = Vec::new();
    for r in &runs {
        let Some(token) = r.events.token() else {
            continue;
        };
        let killed = watched
            .iter()
            .any(|(f, _, h, _, _)| *f == Fault::KillLockrun && *h == Some((r.worker, token)));
        if r.code != "124" && !killed {
            continue;
        }
        let end = section_of.get(&(r.worker, token)).map(|s| s.end);
        let (margin_ms, note) = match (r.events.earliest_expiry(ttl_ns), end) {
            (Some(e), Some(d)) if d != i64::MAX => (Some(ms(e - d)), ""),
            (None, _) => (None, "no expiry known from the events"),
            (_, None) => (None, NEVER_STARTED),
            (_, Some(_)) => (None, "the end of the section is unknown"),
        };
        lost.push(Lost {
            worker: r.worker,
            token,
            cause: if killed {
                "kill -9 of lockrun"
            } else {
                "exit 124"
            },
            margin_ms,
            note,
        });
    }
    let mut exits: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        *exits.entry(r.code.clone()).or_default() += 1;
    }
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sections {
        *ends.entry(format!("{:?}", s.ended_by)).or_default() += 1;
    }
    let verdict = history::check(sections, true);
    Report {
        backend: target.kind.name(),
        kind: target.kind,
        seed,
        seconds: started.elapsed().as_secs_f64(),
        workers: cfg.workers,
        ttl: cfg.ttl,
        sections: verdict.sections,
        runs: runs.len(),
        faults,
        skipped,
        overlaps: verdict.overlaps,
        inversions: verdict.inversions,
        unknown_ends: verdict.unknown_ends,
        lost,
        kill9,
        stopped_lockrun_exits: stopped_lockruns,
        kill9_disturbed,
        exits,
        ends,
        kept: None,
    }
}

impl Report {
    /// Lost leases whose command was not shown to be dead before the lease could expire. A
    /// command that never recorded its start ran no critical section: lockrun stopped it at
    /// once because the grant's reply came after the lease's local deadline (the request had
    /// waited on a paused server).
    pub fn late(&self) -> Vec<&Lost> {
        self.lost
            .iter()
            .filter(|l| l.note != NEVER_STARTED && !l.margin_ms.is_some_and(|m| m > 0.0))
            .collect()
    }

    /// Lost leases whose command was stopped before it recorded its start.
    pub fn lost_before_start(&self) -> usize {
        self.lost.iter().filter(|l| l.note == NEVER_STARTED).count()
    }

    pub fn survivors(&self) -> usize {
        self.kill9.iter().map(|k| k.survivors.len()).sum()
    }

    /// Kills of a holder after which the next section started later than
    /// [`Kind::takeover_bound`] (TTL + 1 s, or TTL + 2 s for backends whose waiters poll).
    pub fn slow_takeovers(&self) -> Vec<f64> {
        let bound = self.kind.takeover_bound(self.ttl).as_secs_f64() * 1e3;
        self.kill9
            .iter()
            .filter_map(|k| k.takeover_ms)
            .filter(|&t| t > bound)
            .collect()
    }

    pub fn min_margin_ms(&self) -> Option<f64> {
        self.lost
            .iter()
            .filter_map(|l| l.margin_ms)
            .min_by(|a, b| a.total_cmp(b))
    }

    /// Panics with the report unless everything held.
    pub fn assert_safe(&self) {
        assert!(self.is_safe(), "fault run failed its checks:\n{self}");
    }

    /// Whether everything held.
    pub fn is_safe(&self) -> bool {
        self.overlaps.is_empty()
            && self.inversions.is_empty()
            && self.unknown_ends == 0
            && self.late().is_empty()
            && self.survivors() == 0
            && self.slow_takeovers().is_empty()
            && self.stopped_lockrun_exits.iter().all(|(c, want)| c == want)
            && !self.exits.contains_key("hung")
            && self.sections > 0
    }

    /// Whether the run injected every kind of fault this backend supports ([`Kind::faults`]) at
    /// least once, and no other.
    pub fn covers_all_faults(&self, kind: Kind) -> bool {
        let want = kind.faults();
        want.iter()
            .all(|f| self.faults.get(f.name()).is_some_and(|&n| n > 0))
            && self.faults.len() == want.len()
    }
}

fn list<K: fmt::Display>(m: &BTreeMap<K, usize>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let margins: Vec<f64> = self.lost.iter().filter_map(|l| l.margin_ms).collect();
        let takeovers: Vec<f64> = self.kill9.iter().filter_map(|k| k.takeover_ms).collect();
        let trees: Vec<f64> = self.kill9.iter().filter_map(|k| k.tree_gone_ms).collect();
        let (mmin, _, _) = super::summary(&margins);
        let (_, _, tmax) = super::summary(&takeovers);
        let (_, _, gmax) = super::summary(&trees);
        writeln!(
            f,
            "backend {}: {} workers, TTL {:?}, {:.0} s, seed {}",
            self.backend, self.workers, self.ttl, self.seconds, self.seed
        )?;
        writeln!(
            f,
            "  sections run:        {} (lockrun runs: {})",
            self.sections, self.runs
        )?;
        writeln!(
            f,
            "  faults injected:     {} (skipped, no holder: {})",
            list(&self.faults),
            self.skipped
        )?;
        writeln!(f, "  overlaps found:      {}", self.overlaps.len())?;
        writeln!(f, "  token inversions:    {}", self.inversions.len())?;
        writeln!(
            f,
            "  leases lost:         {} ({} stopped in time, {} before the command started, {} late; smallest margin {:.0} ms)",
            self.lost.len(),
            self.lost.len() - self.late().len() - self.lost_before_start(),
            self.lost_before_start(),
            self.late().len(),
            mmin
        )?;
        writeln!(
            f,
            "  kill -9 of a holder: {} (command tree gone within {:.1} ms at most, survivors {}, next holder after {:.0} ms at most; {} takeovers delayed by a server fault, not measured)",
            self.kill9.len(),
            gmax,
            self.survivors(),
            tmax,
            self.kill9_disturbed
        )?;
        let stopped: Vec<String> = self
            .stopped_lockrun_exits
            .iter()
            .map(|(c, want)| {
                if c == want {
                    c.clone()
                } else {
                    format!("{c} (want {want})")
                }
            })
            .collect();
        writeln!(f, "  stopped lockruns exited: {}", stopped.join(", "))?;
        writeln!(f, "  lockrun exit codes:  {}", list(&self.exits))?;
        writeln!(f, "  section ends known by: {}", list(&self.ends))?;
        if let Some(k) = &self.kept {
            writeln!(f, "  history and events kept in {}", k.display())?;
        }
        for p in self.overlaps.iter().take(10) {
            writeln!(f, "  OVERLAP {p}")?;
        }
        for p in self.inversions.iter().take(10) {
            writeln!(f, "  INVERSION {p}")?;
        }
        for l in &self.lost {
            let late = if l.note == NEVER_STARTED || l.margin_ms.is_some_and(|m| m > 0.0) {
                ""
            } else {
                "LATE "
            };
            writeln!(f, "  {late}lost: {l:?}")?;
        }
        Ok(())
    }
}
