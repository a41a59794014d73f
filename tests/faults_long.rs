//! The fault-injection safety suite, long version. Every test is `#[ignore]`d: run them with
//! `scripts/faults-long`, which prints the report and writes the figures into RELIABILITY.md.
//! The engine is shared with the short version (`tests/faults_short.rs`, in CI).
//!
//! Parameters (environment):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `FAULTS_BACKENDS` | `file,redis,postgres,etcd,dynamodb,memcached,kubernetes` | backends to test |
//! | `FAULTS_CHAOS_SECS` | 180 | length of the N-worker run, per backend |
//! | `FAULTS_WORKERS` | 4 | workers of the N-worker run |
//! | `FAULTS_TRIALS` | 20 | server-pause trials per network backend |
//! | `FAULTS_PAUSE_SECS` | 20 | how long the server is paused in those trials (TTL 5 s) |
//! | `FAULTS_KILL_TRIALS` | 10 | `kill -9` and SIGSTOP trials per backend |
//! | `FAULTS_OUT` | (none) | directory for the report fragments |
//!
//! Each table goes to `$FAULTS_OUT` in pieces, so that runs of different backends can be merged
//! (`scripts/faults-long` does it): `TABLE.head.md` (title, parameters, header), and per
//! backend `TABLE.row.BACKEND.md` (its row) and `TABLE.detail.BACKEND.txt` (the checker's
//! output, for the N-worker run).
#![cfg(all(
    feature = "redis",
    feature = "postgres",
    feature = "etcd",
    feature = "dynamodb",
    feature = "memcached",
    feature = "kubernetes"
))]

mod common;
mod faults;

use std::fmt::Write as _;
use std::time::Duration;

use faults::chaos::{self, Config, Report};
use faults::proc::Rng;
use faults::summary;
use faults::target::{Kind, Target};
use faults::trials::{self, Kill9Trial, PauseTrial, StopTrial};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn backends() -> Vec<Kind> {
    match std::env::var("FAULTS_BACKENDS") {
        Ok(list) => list
            .split(',')
            .map(|b| Kind::parse(b.trim()).unwrap_or_else(|| panic!("unknown backend {b:?}")))
            .collect(),
        Err(_) => Kind::all().to_vec(),
    }
}

/// Writes a report piece to `$FAULTS_OUT/NAME` (see the module docs), and prints it.
fn piece(name: &str, text: &str) {
    println!("{text}");
    if let Ok(dir) = std::env::var("FAULTS_OUT") {
        std::fs::write(std::path::Path::new(&dir).join(name), text).expect("write report piece");
    }
}

/// The row of a backend whose thread panicked: the panic message, in every column.
fn failed_row(kind: Kind, columns: usize, why: &str) -> String {
    let why = why.replace(['|', '\n'], " ");
    let mut row = format!("| {} | **FAILED: {why}** |", kind.name());
    for _ in 2..columns {
        row.push_str(" |");
    }
    row
}

/// Runs `f` for each backend, all at once, in the order given; a backend whose thread panicked
/// gets the panic message.
fn per_backend<T: Send>(
    kinds: &[Kind],
    f: impl Fn(Kind) -> T + Sync,
) -> Vec<(Kind, Result<T, String>)> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = kinds.iter().map(|&k| (k, s.spawn(move || f(k)))).collect();
        handles
            .into_iter()
            .map(|(k, h)| (k, h.join().map_err(|e| panic_message(&*e))))
            .collect()
    })
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".into())
}

fn fmt3((min, med, max): (f64, f64, f64)) -> String {
    format!("{min:.0} / {med:.0} / {max:.0}")
}

#[test]
#[ignore = "long: run by scripts/faults-long"]
fn chaos_all_backends() {
    let secs = env_u64("FAULTS_CHAOS_SECS", 180);
    let mut cfg = Config::short(secs);
    cfg.workers = env_u64("FAULTS_WORKERS", 4) as u32;
    let mut head = String::new();
    writeln!(
        head,
        "### N workers under faults\n\n{} workers on one resource, TTL {} s, about {} s per backend; \
         server paused for {} s, holder stopped for {} s. Faults per backend as in \
         [What is run](#what-is-run) (no server faults for the file backend, no restart of \
         moto_server and memcached). A takeover after a `kill -9` must come within TTL + 1 s \
         ({} ms), or TTL + 2 s ({} ms) where waiters poll (DynamoDB, memcached, Kubernetes); it is \
         not measured when a server fault came first.\n",
        cfg.workers,
        cfg.ttl.as_secs(),
        secs,
        cfg.pause_for.as_secs(),
        cfg.stop_for.as_secs(),
        Kind::Redis.takeover_bound(cfg.ttl).as_millis(),
        Kind::Dynamodb.takeover_bound(cfg.ttl).as_millis(),
    )
    .unwrap();
    head.push_str(
        "| backend | sections run | faults injected | overlaps | token inversions | leases lost (stopped in time) | smallest margin, ms | kill -9: tree gone (max ms) / survivors / next holder (max ms) | stopped lockruns: exit codes |\n\
         |---|---|---|---|---|---|---|---|---|",
    );
    piece("1-chaos.head.md", &head);
    let mut failed = Vec::new();
    for kind in backends() {
        let run = std::panic::catch_unwind(|| {
            let target = Target::start(kind);
            chaos::run(&target, &cfg)
        });
        let r = match run {
            Ok(r) => r,
            Err(e) => {
                let why = panic_message(&*e);
                piece(
                    &format!("1-chaos.row.{}.md", kind.name()),
                    &failed_row(kind, 9, &why),
                );
                failed.push(format!("{}: {why}", kind.name()));
                continue;
            }
        };
        eprintln!("{r}");
        piece(&format!("1-chaos.row.{}.md", kind.name()), &chaos_row(&r));
        piece(
            &format!("1-chaos.detail.{}.txt", kind.name()),
            &r.to_string(),
        );
        if !r.is_safe() || !r.covers_all_faults(kind) {
            failed.push(r.to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "fault runs failed:\n{}",
        failed.join("\n")
    );
}

fn chaos_row(r: &Report) -> String {
    let faults: Vec<String> = r.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let trees: Vec<f64> = r.kill9.iter().filter_map(|k| k.tree_gone_ms).collect();
    let takeovers: Vec<f64> = r.kill9.iter().filter_map(|k| k.takeover_ms).collect();
    let mut exits: Vec<String> = r
        .stopped_lockrun_exits
        .iter()
        .map(|(c, _)| c.clone())
        .collect();
    exits.sort();
    exits.dedup();
    format!(
        "| {} | {} | {} | {} | {} | {} ({}) | {:.0} | {:.1} / {} / {:.0} ({} not measured) | {} |",
        r.backend,
        r.sections,
        faults.join(", "),
        r.overlaps.len(),
        r.inversions.len(),
        r.lost.len(),
        r.lost.len() - r.late().len(),
        r.min_margin_ms().unwrap_or(f64::NAN),
        summary(&trees).2,
        r.survivors(),
        summary(&takeovers).2,
        r.kill9_disturbed,
        exits.join(", "),
    )
}

#[test]
#[ignore = "long: run by scripts/faults-long"]
fn trials_server_pause() {
    let n = env_u64("FAULTS_TRIALS", 20);
    let pause = Duration::from_secs(env_u64("FAULTS_PAUSE_SECS", 20));
    let ttl = Duration::from_secs(5);
    let kinds: Vec<Kind> = backends()
        .into_iter()
        .filter(|&k| k != Kind::File)
        .collect();
    if kinds.is_empty() {
        return;
    }
    let mut head = String::new();
    writeln!(
        head,
        "### Server paused while `run` holds a lease\n\nTTL {} s, server paused for {} s (SIGSTOP of \
         its processes; the Kubernetes stand-in's paused mode), {} trials per backend: half with a \
         command that exits on TERM, half with one that ignores TERM (so it dies only at the KILL \
         deadline). Margin = earliest moment the server could let another holder in − death of \
         the command's process group; min / median / max, in ms. For DynamoDB and Kubernetes \
         (no server clock) and memcached, the margin is by events only, which understates it: \
         see [What is run](#what-is-run).\n",
        ttl.as_secs(),
        pause.as_secs(),
        n
    )
    .unwrap();
    head.push_str(
        "| backend | trials | margin, command obeys TERM | margin, command ignores TERM | smallest margin | margin by events only (min) | by the server's record (min) | command dead after pause (max ms) | lockrun exit codes |\n\
         |---|---|---|---|---|---|---|---|---|",
    );
    piece("2-server-pause.head.md", &head);
    let results = per_backend(&kinds, |kind| {
        let target = Target::start(kind);
        let (mut rng, _) = Rng::from_entropy();
        (0..n)
            .map(|i| {
                let t = trials::server_pause(&target, ttl, pause, i % 2 == 1, &mut rng);
                eprintln!("{} pause trial {i}: {t:?}", kind.name());
                t
            })
            .collect::<Vec<PauseTrial>>()
    });
    let mut failed = Vec::new();
    for (kind, result) in &results {
        let row = match result {
            Err(why) => {
                failed.push(format!("{}: {why}", kind.name()));
                failed_row(*kind, 9, why)
            }
            Ok(trials) => {
                for tr in trials {
                    if tr.margin_ms() <= 0.0 || tr.exit != Some(124) {
                        failed.push(format!("{}: {tr:?}", kind.name()));
                    }
                }
                pause_row(*kind, trials)
            }
        };
        piece(&format!("2-server-pause.row.{}.md", kind.name()), &row);
    }
    assert!(failed.is_empty(), "failed trials:\n{}", failed.join("\n"));
}

fn pause_row(kind: Kind, trials: &[PauseTrial]) -> String {
    let m = |ign: bool| -> Vec<f64> {
        trials
            .iter()
            .filter(|t| t.ignores_term == ign)
            .map(|t| t.margin_ms())
            .collect()
    };
    let all: Vec<f64> = trials.iter().map(|t| t.margin_ms()).collect();
    let ev: Vec<f64> = trials.iter().map(|t| t.margin_events_ms).collect();
    let sv: Vec<f64> = trials.iter().filter_map(|t| t.margin_server_ms).collect();
    let dead: Vec<f64> = trials.iter().map(|t| t.death_after_pause_ms).collect();
    let mut exits: Vec<String> = trials.iter().map(|t| format!("{:?}", t.exit)).collect();
    exits.sort();
    exits.dedup();
    let server = match kind {
        _ if !sv.is_empty() => format!(
            "{:.0} ({} of {} read)",
            summary(&sv).0,
            sv.len(),
            trials.len()
        ),
        Kind::Redis | Kind::Postgres => "n/a (every read overtaken by a renewal)".into(),
        Kind::Etcd => "n/a (no absolute expiry)".into(),
        Kind::Memcached => "n/a (whole seconds)".into(),
        _ => "n/a (no server clock)".into(),
    };
    format!(
        "| {} | {} | {} | {} | **{:.0}** | {:.0} | {} | {:.0} | {} |",
        kind.name(),
        trials.len(),
        fmt3(summary(&m(false))),
        fmt3(summary(&m(true))),
        summary(&all).0,
        summary(&ev).0,
        server,
        summary(&dead).2,
        exits.join(", ").replace("Some(", "").replace(')', ""),
    )
}

#[test]
#[ignore = "long: run by scripts/faults-long"]
fn trials_kill9() {
    let n = env_u64("FAULTS_KILL_TRIALS", 10);
    let ttl = Duration::from_secs(3);
    let mut head = String::new();
    writeln!(
        head,
        "### `kill -9` of a holding lockrun\n\nTTL {} s; the command is `sh -c 'sleep 300 & ...; wait'`; \
         a waiter is queued. {} trials per backend; min / median / max, in ms. The waiter must \
         start within the bound: TTL + 1 s, or TTL + 2 s where waiters poll.\n",
        ttl.as_secs(),
        n
    )
    .unwrap();
    head.push_str(
        "| backend | trials | command tree gone after the kill | surviving processes | waiter started after the kill | bound | waiter started after the earliest possible expiry |\n\
         |---|---|---|---|---|---|---|",
    );
    piece("3-kill9.head.md", &head);
    let results = per_backend(&backends(), |kind| {
        let target = Target::start(kind);
        (0..n)
            .map(|i| {
                let t = trials::kill9(&target, ttl);
                eprintln!("{} kill -9 trial {i}: {t:?}", kind.name());
                t
            })
            .collect::<Vec<Kill9Trial>>()
    });
    let mut failed = Vec::new();
    for (kind, result) in &results {
        let bound = kind.takeover_bound(ttl).as_secs_f64() * 1e3;
        let row = match result {
            Err(why) => {
                failed.push(format!("{}: {why}", kind.name()));
                failed_row(*kind, 7, why)
            }
            Ok(trials) => {
                for tr in trials {
                    if !tr.survivors.is_empty()
                        || tr.tree_gone_ms.is_none()
                        || tr.takeover_ms > bound
                        || tr.after_expiry_ms <= 0.0
                    {
                        failed.push(format!("{}: {tr:?}", kind.name()));
                    }
                }
                let gone: Vec<f64> = trials.iter().filter_map(|t| t.tree_gone_ms).collect();
                let take: Vec<f64> = trials.iter().map(|t| t.takeover_ms).collect();
                let after: Vec<f64> = trials.iter().map(|t| t.after_expiry_ms).collect();
                let survivors: usize = trials.iter().map(|t| t.survivors.len()).sum();
                format!(
                    "| {} | {} | {} | {} | {} | {bound:.0} | {} |",
                    kind.name(),
                    trials.len(),
                    fmt3(summary(&gone)),
                    survivors,
                    fmt3(summary(&take)),
                    fmt3(summary(&after)),
                )
            }
        };
        piece(&format!("3-kill9.row.{}.md", kind.name()), &row);
    }
    assert!(failed.is_empty(), "failed trials:\n{}", failed.join("\n"));
}

#[test]
#[ignore = "long: run by scripts/faults-long"]
fn trials_stopped_lockrun() {
    let n = env_u64("FAULTS_KILL_TRIALS", 10);
    let ttl = Duration::from_secs(3);
    let stop = ttl * 2;
    let mut head = String::new();
    writeln!(
        head,
        "### SIGSTOP of a holding lockrun\n\nTTL {} s, lockrun stopped for {} s then continued; its \
         command writes a tick every 50 ms; a waiter is queued. {} trials per backend; min / \
         median / max, in ms.\n",
        ttl.as_secs(),
        stop.as_secs(),
        n
    )
    .unwrap();
    head.push_str(
        "| backend | trials | lockrun exit codes | margin: earliest possible expiry − death of the command | ticks after the earliest possible expiry | lockrun exited after SIGCONT | waiter started after the death |\n\
         |---|---|---|---|---|---|---|",
    );
    piece("4-stopped-lockrun.head.md", &head);
    let results = per_backend(&backends(), |kind| {
        let target = Target::start(kind);
        (0..n)
            .map(|i| {
                let t = trials::stopped_lockrun(&target, ttl, stop);
                eprintln!("{} SIGSTOP trial {i}: {t:?}", kind.name());
                t
            })
            .collect::<Vec<StopTrial>>()
    });
    let mut failed = Vec::new();
    for (kind, result) in &results {
        let row = match result {
            Err(why) => {
                failed.push(format!("{}: {why}", kind.name()));
                failed_row(*kind, 7, why)
            }
            Ok(trials) => {
                for tr in trials {
                    if tr.exit != Some(124)
                        || !tr.margin_ms.is_some_and(|m| m > 0.0)
                        || tr.ticks_after_expiry != 0
                        || !tr.waiter_after_death_ms.is_some_and(|w| w > 0.0)
                    {
                        failed.push(format!("{}: {tr:?}", kind.name()));
                    }
                }
                let mut exits: Vec<String> =
                    trials.iter().map(|t| format!("{:?}", t.exit)).collect();
                exits.sort();
                exits.dedup();
                let margin: Vec<f64> = trials.iter().filter_map(|t| t.margin_ms).collect();
                let ticks: usize = trials.iter().map(|t| t.ticks_after_expiry).sum();
                let exit_after: Vec<f64> = trials.iter().map(|t| t.exit_after_cont_ms).collect();
                let waiter: Vec<f64> = trials
                    .iter()
                    .filter_map(|t| t.waiter_after_death_ms)
                    .collect();
                format!(
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    kind.name(),
                    trials.len(),
                    exits.join(", ").replace("Some(", "").replace(')', ""),
                    fmt3(summary(&margin)),
                    ticks,
                    fmt3(summary(&exit_after)),
                    fmt3(summary(&waiter)),
                )
            }
        };
        piece(&format!("4-stopped-lockrun.row.{}.md", kind.name()), &row);
    }
    assert!(failed.is_empty(), "failed trials:\n{}", failed.join("\n"));
}
