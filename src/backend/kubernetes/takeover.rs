//! When a held Lease may be taken over: the two clock rules, and this process's observations of
//! resourceVersions for rule (b).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// What to do about a held Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The holder's lease has run out by rule (a) or rule (b).
    TakeOver,
    /// Still held; the earlier of the two rules allows a takeover this much later.
    Wait(Duration),
}

/// The two rules, as a pure function.
///
/// - (a) `now` (our wall clock) has reached `expires` (the holder's `renewTime` plus
///   `leaseDurationSeconds`) plus `skew`;
/// - (b) we have seen the same resourceVersion for `unchanged_for` ≥ `duration`, on our
///   monotonic clock (client-go's rule).
pub(super) fn judge(
    expires: SystemTime,
    duration: Duration,
    now: SystemTime,
    skew: Duration,
    unchanged_for: Duration,
) -> Verdict {
    let by_clock = expires
        .checked_add(skew)
        .map_or(Duration::MAX, |t| t.duration_since(now).unwrap_or_default());
    let by_version = duration.saturating_sub(unchanged_for);
    let left = by_clock.min(by_version);
    if left.is_zero() {
        Verdict::TakeOver
    } else {
        Verdict::Wait(left)
    }
}

/// Beyond this many resources, observations are dropped (which only delays rule (b)).
const MAX_OBSERVED: usize = 4096;

/// The resourceVersions this process has seen, per object, with when it first saw each (on the
/// monotonic clock, which wall-clock steps do not move).
#[derive(Debug, Default)]
pub(super) struct Observations {
    seen: Mutex<HashMap<String, (String, Instant)>>,
}

impl Observations {
    /// Records that `version` of object `name` was read just now; returns how long this process
    /// has seen that version unchanged.
    pub fn observe(&self, name: &str, version: &str) -> Duration {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(name) {
            Some((v, first)) if v == version => now.saturating_duration_since(*first),
            _ => {
                if seen.len() >= MAX_OBSERVED {
                    seen.clear();
                }
                seen.insert(name.to_owned(), (version.to_owned(), now));
                Duration::ZERO
            }
        }
    }

    /// Forgets `name` (we hold it now, or it is free).
    pub fn forget(&self, name: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: Duration = Duration::from_secs(5);
    const TTL: Duration = Duration::from_secs(30);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rule_a_waits_for_expiry_plus_skew() {
        let fresh = Duration::ZERO;
        assert_eq!(
            judge(at(100), TTL, at(90), SKEW, fresh),
            Verdict::Wait(Duration::from_secs(15))
        );
        assert_eq!(
            judge(at(100), TTL, at(101), SKEW, fresh),
            Verdict::Wait(Duration::from_secs(4))
        );
        assert_eq!(judge(at(100), TTL, at(105), SKEW, fresh), Verdict::TakeOver);
        assert_eq!(
            judge(at(100), TTL, at(100_000), SKEW, fresh),
            Verdict::TakeOver
        );
    }

    #[test]
    fn rule_b_ignores_a_clock_far_ahead() {
        let ahead = at(3600 + 30);
        assert_eq!(
            judge(ahead, TTL, at(0), SKEW, Duration::from_secs(12)),
            Verdict::Wait(Duration::from_secs(18))
        );
        assert_eq!(judge(ahead, TTL, at(0), SKEW, TTL), Verdict::TakeOver);
    }

    #[test]
    fn huge_values_saturate() {
        assert!(matches!(
            judge(
                at(u64::MAX / 4),
                Duration::MAX,
                at(0),
                Duration::MAX,
                Duration::ZERO
            ),
            Verdict::Wait(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn observations_restart_when_the_version_changes() {
        let obs = Observations::default();
        assert_eq!(obs.observe("r", "1"), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(obs.observe("r", "1"), Duration::from_secs(3));
        assert_eq!(obs.observe("other", "1"), Duration::ZERO);
        assert_eq!(obs.observe("r", "2"), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(obs.observe("r", "2"), Duration::from_secs(1));
        obs.forget("r");
        assert_eq!(obs.observe("r", "2"), Duration::ZERO);
    }
}
