//! The clock-free takeover rule, written once for the backends whose store has no clock
//! (DynamoDB, Kubernetes) or whose clock is only a backstop (memcached).
//!
//! A held record may be taken over when either
//! - (a) the holder's stored expiry plus a skew allowance has passed on the taker's wall clock, or
//! - (b) the taker has itself seen the same record version unchanged for a full lease duration on
//!   its monotonic clock (the DynamoDB lock client's and client-go's rule, immune to clock
//!   offsets between machines).
//!
//! [`Observations`] keeps what rule (b) needs: per record, the version first seen and when.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// What to do about a held record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(any(feature = "dynamodb", feature = "kubernetes")),
    allow(dead_code)
)]
pub(crate) enum Verdict {
    /// The holder's lease has run out by rule (a) or rule (b).
    TakeOver,
    /// Still held; the earlier of the two rules allows a takeover this much later.
    Wait(Duration),
}

/// The two rules, as a pure function.
///
/// - (a) `now` (our wall clock) has reached `expires` (the holder's stored expiry) plus `skew`;
/// - (b) we have seen the same record version for `unchanged_for` ≥ `duration` (the holder's
///   TTL), on our monotonic clock.
#[cfg_attr(
    not(any(feature = "dynamodb", feature = "kubernetes")),
    allow(dead_code)
)]
pub(crate) fn judge(
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

/// The record versions this process has seen, per record, with when it first saw each (on the
/// monotonic clock, which wall-clock steps do not move).
#[derive(Debug, Default)]
pub(crate) struct Observations {
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
