//! The fault-injection safety suite, long version. Every test is `#[ignore]`d: run them with
//! `scripts/faults-long`, which prints the report and writes the figures into RELIABILITY.md.
//! The engine is shared with the short version (`tests/faults_short.rs`, in CI).
//!
//! Parameters (environment):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `FAULTS_BACKENDS` | `file,redis,postgres,etcd` | backends to test |
//! | `FAULTS_CHAOS_SECS` | 180 | length of the N-worker run, per backend |
//! | `FAULTS_WORKERS` | 4 | workers of the N-worker run |
//! | `FAULTS_TRIALS` | 20 | server-pause trials per network backend |
//! | `FAULTS_PAUSE_SECS` | 20 | how long the server is paused in those trials (TTL 5 s) |
//! | `FAULTS_KILL_TRIALS` | 10 | `kill -9` and SIGSTOP trials per backend |
//! | `FAULTS_OUT` | (none) | directory for the report fragments (Markdown) |
#![cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]

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
    let list =
        std::env::var("FAULTS_BACKENDS").unwrap_or_else(|_| "file,redis,postgres,etcd".into());
    list.split(',')
        .map(|b| Kind::parse(b.trim()).unwrap_or_else(|| panic!("unknown backend {b:?}")))
        .collect()
}

/// Prints a report fragment and writes it to `$FAULTS_OUT/NAME.md`.
fn fragment(name: &str, text: &str) {
    println!("{text}");
    if let Ok(dir) = std::env::var("FAULTS_OUT") {
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.md")), text)
            .expect("write report fragment");
    }
}

/// Runs `f` for each backend, all at once, in the order given.
fn per_backend<T: Send>(kinds: &[Kind], f: impl Fn(Kind) -> T + Sync) -> Vec<(Kind, T)> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = kinds.iter().map(|&k| (k, s.spawn(move || f(k)))).collect();
        handles
            .into_iter()
            .map(|(k, h)| (k, h.join().expect("backend thread")))
            .collect()
    })
}

fn fmt3((min, med, max): (f64, f64, f64)) -> String {
    format!("{min:.0} / {med:.0} / {max:.0}")
}

#[test]
#[ignore = "long: run by scripts/faults-long"]
fn chaos_all_backends() {
    let secs = env_u64("FAULTS_CHAOS_SECS", 180);
    let mut reports: Vec<Report> = Vec::new();
    for kind in backends() {
        let target = Target::start(kind);
        let mut cfg = Config::short(secs);
        cfg.workers = env_u64("FAULTS_WORKERS", 4) as u32;
        let report = chaos::run(&target, &cfg);
        eprintln!("{report}");
        reports.push(report);
    }
    let mut t = String::new();
    let r0 = &reports[0];
    writeln!(
        t,
        "### N workers under faults\n\n{} workers on one resource, TTL {} s, about {} s per backend; \
         server paused for {} s, holder stopped for {} s.\n",
        r0.workers,
        r0.ttl.as_secs(),
        secs,
        (r0.ttl * 2).as_secs(),
        (r0.ttl + Duration::from_secs(1)).as_secs()
    )
    .unwrap();
    t.push_str(
        "| backend | sections run | faults injected | overlaps | token inversions | leases lost (stopped in time) | smallest margin, ms | kill -9: tree gone (max ms) / survivors / next holder (max ms; not measured when a server fault came first) | stopped lockruns: exit codes |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &reports {
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
        writeln!(
            t,
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
        .unwrap();
    }
    t.push_str("\nCheckers' full output:\n\n```text\n");
    for r in &reports {
        t.push_str(&r.to_string());
    }
    t.push_str("```\n");
    fragment("1-chaos", &t);
    for r in &reports {
        r.assert_safe();
    }
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
    let mut t = String::new();
    writeln!(
        t,
        "### Server paused while `run` holds a lease\n\nTTL {} s, server paused (SIGSTOP of its process group) for {} s, {} trials per backend: \
         half with a command that exits on TERM, half with one that ignores TERM (so it dies only \
         at the KILL deadline). Margin = earliest moment the server could let another holder in − \
         death of the command's process group; min / median / max, in ms.\n",
        ttl.as_secs(),
        pause.as_secs(),
        n
    )
    .unwrap();
    t.push_str(
        "| backend | trials | margin, command obeys TERM | margin, command ignores TERM | smallest margin | margin by events only (min) | by the server's record (min) | command dead after pause (max ms) | lockrun exit codes |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (kind, trials) in &results {
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
        writeln!(
            t,
            "| {} | {} | {} | {} | **{:.0}** | {:.0} | {} | {:.0} | {} |",
            kind.name(),
            trials.len(),
            fmt3(summary(&m(false))),
            fmt3(summary(&m(true))),
            summary(&all).0,
            summary(&ev).0,
            if sv.is_empty() {
                "n/a (no absolute expiry)".into()
            } else {
                format!("{:.0}", summary(&sv).0)
            },
            summary(&dead).2,
            exits.join(", ").replace("Some(", "").replace(')', ""),
        )
        .unwrap();
    }
    fragment("2-server-pause", &t);
    for (kind, trials) in &results {
        for tr in trials {
            assert!(tr.margin_ms() > 0.0, "{}: {tr:?}", kind.name());
            assert_eq!(tr.exit, Some(124), "{}: {tr:?}", kind.name());
        }
    }
}

#[test]
#[ignore = "long: run by scripts/faults-long"]
fn trials_kill9() {
    let n = env_u64("FAULTS_KILL_TRIALS", 10);
    let ttl = Duration::from_secs(3);
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
    let mut t = String::new();
    writeln!(
        t,
        "### `kill -9` of a holding lockrun\n\nTTL {} s; the command is `sh -c 'sleep 300 & ...; wait'`; a waiter is queued. {} trials per backend; min / median / max, in ms.\n",
        ttl.as_secs(),
        n
    )
    .unwrap();
    t.push_str(
        "| backend | trials | command tree gone after the kill | surviving processes | waiter started after the kill (bound: TTL + 1 s = 4000) | waiter started after the earliest possible expiry |\n\
         |---|---|---|---|---|---|\n",
    );
    for (kind, trials) in &results {
        let gone: Vec<f64> = trials.iter().filter_map(|t| t.tree_gone_ms).collect();
        let take: Vec<f64> = trials.iter().map(|t| t.takeover_ms).collect();
        let after: Vec<f64> = trials.iter().map(|t| t.after_expiry_ms).collect();
        let survivors: usize = trials.iter().map(|t| t.survivors.len()).sum();
        writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} |",
            kind.name(),
            trials.len(),
            fmt3(summary(&gone)),
            survivors,
            fmt3(summary(&take)),
            fmt3(summary(&after)),
        )
        .unwrap();
    }
    fragment("3-kill9", &t);
    for (kind, trials) in &results {
        for tr in trials {
            assert!(
                tr.survivors.is_empty() && tr.tree_gone_ms.is_some(),
                "{}: {tr:?}",
                kind.name()
            );
            assert!(
                tr.takeover_ms <= 4000.0 && tr.after_expiry_ms > 0.0,
                "{}: {tr:?}",
                kind.name()
            );
        }
    }
}

#[test]
#[ignore = "long: run by scripts/faults-long"]
fn trials_stopped_lockrun() {
    let n = env_u64("FAULTS_KILL_TRIALS", 10);
    let ttl = Duration::from_secs(3);
    let stop = ttl * 2;
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
    let mut t = String::new();
    writeln!(
        t,
        "### SIGSTOP of a holding lockrun\n\nTTL {} s, lockrun stopped for {} s then continued; its command writes a tick every 50 ms; a waiter is queued. {} trials per backend; min / median / max, in ms.\n",
        ttl.as_secs(),
        stop.as_secs(),
        n
    )
    .unwrap();
    t.push_str(
        "| backend | trials | lockrun exit codes | margin: earliest possible expiry − death of the command | ticks after the earliest possible expiry | lockrun exited after SIGCONT | waiter started after the death |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (kind, trials) in &results {
        let mut exits: Vec<String> = trials.iter().map(|t| format!("{:?}", t.exit)).collect();
        exits.sort();
        exits.dedup();
        let margin: Vec<f64> = trials.iter().filter_map(|t| t.margin_ms).collect();
        let ticks: usize = trials.iter().map(|t| t.ticks_after_expiry).sum();
        let exit_after: Vec<f64> = trials.iter().map(|t| t.exit_after_cont_ms).collect();
        let waiter: Vec<f64> = trials
            .iter()
            .filter_map(|t| t.waiter_after_death_ms)
            .collect();
        writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            trials.len(),
            exits.join(", ").replace("Some(", "").replace(')', ""),
            fmt3(summary(&margin)),
            ticks,
            fmt3(summary(&exit_after)),
            fmt3(summary(&waiter)),
        )
        .unwrap();
    }
    fragment("4-stopped-lockrun", &t);
    for (kind, trials) in &results {
        for tr in trials {
            assert_eq!(tr.exit, Some(124), "{}: {tr:?}", kind.name());
            assert!(
                tr.margin_ms.is_some_and(|m| m > 0.0),
                "{}: {tr:?}",
                kind.name()
            );
            assert_eq!(tr.ticks_after_expiry, 0, "{}: {tr:?}", kind.name());
        }
    }
}
