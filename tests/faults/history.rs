//! The history of critical sections, lockrun's `--events` stream, and the checker.
//!
//! # History format
//!
//! Every critical section is the command [`SECTION`] run by `lockrun run`. It appends two lines
//! to one shared history file (`O_APPEND`, one short `write` each, so lines never interleave):
//!
//! ```text
//! start <worker> <fencing token> <CLOCK_REALTIME s.µs> <pid of the section's shell>
//! end   <worker> <fencing token> <CLOCK_REALTIME s.µs> <pid>
//! ```
//!
//! The times are bash's `$EPOCHREALTIME` (microseconds, no fork): the section is the interval
//! between the two clock reads. A section whose process group was killed has no `end` line; its
//! end is then, in order of preference:
//! 1. the observed death of its whole process group (pidfds opened before the fault, see
//!    [`super::proc::GroupWatch`]), when the fault injector was watching it;
//! 2. lockrun's `child_exited` event plus 1 ms: lockrun emits it after the whole group is reaped,
//!    and the event time is truncated to the millisecond;
//! 3. the moment the worker saw lockrun exit (lockrun waits for the whole group first).
//!
//! Each is an upper bound of the true end, so a late estimate can only invent an overlap,
//! never hide one.
//!
//! # Checks
//!
//! Sections sorted by start: no section may start before every earlier one has ended
//! (overlap), and fencing tokens must strictly increase in that order (inversion).

use std::collections::HashMap;
use std::path::Path;

/// The critical section. `$1` worker, `$2` history file, `$3` seconds to hold the resource.
pub const SECTION: &str = r#"s=$EPOCHREALTIME
echo "start $1 ${LOCKRUN_FENCING_TOKEN:-0} $s $$" >> "$2"
sleep "$3"
e=$EPOCHREALTIME
echo "end $1 ${LOCKRUN_FENCING_TOKEN:-0} $e $$" >> "$2""#;

/// How the end of a section is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// Its own `end` line.
    Line,
    /// The observed death of its process group.
    Death,
    /// lockrun's `child_exited` event (+1 ms).
    ChildExited,
    /// lockrun's exit.
    LockrunExit,
    /// Unknown: counted, and treated as never ending.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Section {
    pub worker: u32,
    pub token: u64,
    pub pid: i32,
    pub start: i64,
    pub end: i64,
    pub ended_by: EndedBy,
}

impl Section {
    pub fn key(&self) -> (u32, u64) {
        (self.worker, self.token)
    }
}

fn parse_time(s: &str) -> Option<i64> {
    let (sec, frac) = s.split_once('.')?;
    let us: i64 = format!("{frac:0<6}")[..6].parse().ok()?;
    Some(sec.parse::<i64>().ok()? * 1_000_000_000 + us * 1000)
}

/// Reads the history file; sections without an `end` line get `end = i64::MAX`,
/// `ended_by = Unknown` until [`fill_ends`] finds out more.
pub fn read(path: &Path) -> Vec<Section> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut open: HashMap<(u32, u64, i32), usize> = HashMap::new();
    let mut out: Vec<Section> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [what, w, tok, t, pid] = f[..] else {
            panic!("malformed history line {line:?}")
        };
        let (w, tok, pid): (u32, u64, i32) = (
            w.parse().unwrap(),
            tok.parse().unwrap(),
            pid.parse().unwrap(),
        );
        let t = parse_time(t).unwrap_or_else(|| panic!("bad time in {line:?}"));
        match what {
            "start" => {
                open.insert((w, tok, pid), out.len());
                out.push(Section {
                    worker: w,
                    token: tok,
                    pid,
                    start: t,
                    end: i64::MAX,
                    ended_by: EndedBy::Unknown,
                });
            }
            "end" => {
                let i = open
                    .remove(&(w, tok, pid))
                    .unwrap_or_else(|| panic!("end without start: {line:?}"));
                out[i].end = t;
                out[i].ended_by = EndedBy::Line;
            }
            _ => panic!("malformed history line {line:?}"),
        }
    }
    out
}

/// What one `lockrun run` reported on `--events`.
#[derive(Debug, Clone, Default)]
pub struct Events {
    /// (time, fencing token, `expires_at` as the store reported it)
    pub acquired: Option<(i64, u64, i64)>,
    /// (time, round trip ms) of each successful renewal.
    pub renewed: Vec<(i64, f64)>,
    pub failed_renewals: usize,
    pub lost: bool,
    pub child_exited: Option<i64>,
    pub released: Option<bool>,
}

fn rfc3339_ns(s: &str) -> i64 {
    humantime::parse_rfc3339(s)
        .expect("event time")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64
}

impl Events {
    pub fn read(path: &Path) -> Events {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut ev = Events::default();
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue; // a line cut short by a SIGKILL of lockrun
            };
            let t = rfc3339_ns(v["time"].as_str().unwrap_or_default());
            match v["event"].as_str().unwrap_or_default() {
                "acquired" => {
                    ev.acquired = Some((
                        t,
                        v["fencing_token"].as_u64().unwrap_or(0),
                        rfc3339_ns(v["expires_at"].as_str().unwrap_or_default()),
                    ))
                }
                "renewed" => ev
                    .renewed
                    .push((t, v["round_trip_ms"].as_f64().unwrap_or(0.0))),
                "renewal_failed" => ev.failed_renewals += 1,
                "lost" => ev.lost = true,
                "child_exited" => ev.child_exited = Some(t),
                "released" => ev.released = v["released"].as_bool(),
                _ => {}
            }
        }
        ev
    }

    pub fn token(&self) -> Option<u64> {
        self.acquired.map(|a| a.1)
    }

    /// The earliest moment the store could grant the lease to someone else, as far as this
    /// client can tell:
    /// - after a successful renewal, its send time (the `renewed` event's time minus its round
    ///   trip) plus the TTL: the store set the expiry when the request *arrived*, which is later;
    /// - before any, the `expires_at` of the grant as the store reported it (the server's clock
    ///   for Redis and PostgreSQL, the record for the file backend; for etcd, which has no
    ///   wall-clock API, this client's clock at the reply plus the granted TTL, late by at most
    ///   one loopback round trip).
    ///
    /// Event times have millisecond resolution (truncated).
    pub fn earliest_expiry(&self, ttl_ns: i64) -> Option<i64> {
        match self.renewed.last() {
            Some(&(t, rt)) => Some(t - (rt * 1e6) as i64 + ttl_ns),
            None => self.acquired.map(|a| a.2),
        }
    }
}

/// Two sections that overlap, or whose tokens are out of order.
#[derive(Debug, Clone)]
pub struct Pair(pub Section, pub Section);

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b) = (&self.0, &self.1);
        write!(
            f,
            "worker {} token {} [{} .. {} ({:?})] / worker {} token {} [{} .. {} ({:?})]",
            a.worker,
            a.token,
            a.start,
            a.end,
            a.ended_by,
            b.worker,
            b.token,
            b.start,
            b.end,
            b.ended_by
        )
    }
}

/// The checker's verdict.
#[derive(Debug, Default)]
pub struct Verdict {
    pub sections: usize,
    pub unknown_ends: usize,
    pub overlaps: Vec<Pair>,
    pub inversions: Vec<Pair>,
}

/// Checks mutual exclusion and token order. `fenced`: whether the backend's tokens must
/// strictly increase (BestEffort backends are excluded from the token check).
pub fn check(mut sections: Vec<Section>, fenced: bool) -> Verdict {
    sections.sort_by_key(|s| (s.start, s.end));
    let mut v = Verdict {
        sections: sections.len(),
        unknown_ends: sections
            .iter()
            .filter(|s| s.ended_by == EndedBy::Unknown)
            .count(),
        ..Verdict::default()
    };
    for (i, a) in sections.iter().enumerate() {
        for b in &sections[i + 1..] {
            if b.start >= a.end {
                break;
            }
            v.overlaps.push(Pair(a.clone(), b.clone()));
        }
    }
    if fenced {
        for w in sections.windows(2) {
            if w[1].token <= w[0].token {
                v.inversions.push(Pair(w[0].clone(), w[1].clone()));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(worker: u32, token: u64, start: i64, end: i64) -> Section {
        Section {
            worker,
            token,
            pid: 1,
            start,
            end,
            ended_by: EndedBy::Line,
        }
    }

    #[test]
    fn checker_finds_overlaps_and_inversions() {
        let ok = check(vec![s(1, 1, 0, 10), s(2, 2, 10, 20), s(1, 3, 25, 30)], true);
        assert!(ok.overlaps.is_empty() && ok.inversions.is_empty());
        // A long section overlapping two later ones, and a token that goes back.
        let bad = check(
            vec![s(1, 5, 0, 100), s(2, 6, 10, 20), s(3, 4, 30, 40)],
            true,
        );
        assert_eq!(bad.overlaps.len(), 2);
        assert_eq!(bad.inversions.len(), 1);
        assert_eq!(bad.inversions[0].1.token, 4);
        let unfenced = check(vec![s(1, 0, 0, 10), s(2, 0, 10, 20)], false);
        assert!(unfenced.inversions.is_empty());
    }

    #[test]
    fn history_lines_parse() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h");
        std::fs::write(
            &p,
            "start 1 7 100.000001 42\nstart 2 8 101.5 43\nend 1 7 100.25 42\n",
        )
        .unwrap();
        let h = read(&p);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].start, 100_000_001_000);
        assert_eq!(h[0].end, 100_250_000_000);
        assert_eq!(h[1].ended_by, EndedBy::Unknown);
        assert_eq!(h[1].start, 101_500_000_000);
    }
}
