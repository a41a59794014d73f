//! When a held item may be taken over: the two clock rules, and this process's observations of
//! record versions for rule (b).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::item::Stored;

/// What to do about a held (not released) item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The holder's lease has run out by rule (a) or rule (b).
    TakeOver,
    /// Still held; the earlier of the two rules allows a takeover this much later.
    Wait(Duration),
}

/// The two rules, as a pure function.
///
/// - (a) `now_ms` (our wall clock) has reached the stored expiry plus `skew`;
/// - (b) we have seen the same record version for `unchanged_for` ≥ the stored TTL.
pub(super) fn judge(
    stored: &Stored,
    now_ms: u64,
    skew: Duration,
    unchanged_for: Duration,
) -> Verdict {
    let by_clock = stored
        .expires_ms
        .saturating_add(super::item::millis(skew))
        .saturating_sub(now_ms);
    let by_version = Duration::from_millis(stored.ttl_ms).saturating_sub(unchanged_for);
    let left = Duration::from_millis(by_clock).min(by_version);
    if left.is_zero() {
        Verdict::TakeOver
    } else {
        Verdict::Wait(left)
    }
}

/// Beyond this many resources, observations are dropped (which only delays rule (b)).
const MAX_OBSERVED: usize = 4096;

/// The record versions this process has seen, per resource, with when it first saw each (on the
/// monotonic clock, which wall-clock steps do not move).
#[derive(Debug, Default)]
pub(super) struct Observations {
    seen: Mutex<HashMap<String, (String, Instant)>>,
}

impl Observations {
    /// Records that `version` of `resource` was read just now; returns how long this process has
    /// seen that version unchanged.
    pub fn observe(&self, resource: &str, version: &str) -> Duration {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(resource) {
            Some((v, first)) if v == version => now.saturating_duration_since(*first),
            _ => {
                if seen.len() >= MAX_OBSERVED {
                    seen.clear();
                }
                seen.insert(resource.to_owned(), (version.to_owned(), now));
                Duration::ZERO
            }
        }
    }

    /// Forgets `resource` (we hold it now, or it is free).
    pub fn forget(&self, resource: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseId;

    fn stored(expires_ms: u64, ttl_ms: u64) -> Stored {
        Stored {
            lease_id: LeaseId::generate(),
            principal: "p".into(),
            token: 1,
            version: "v".into(),
            acquired_ms: expires_ms.saturating_sub(ttl_ms),
            expires_ms,
            ttl_ms,
            released: false,
        }
    }

    const SKEW: Duration = Duration::from_secs(5);

    #[test]
    fn rule_a_waits_for_expiry_plus_skew() {
        let st = stored(100_000, 30_000);
        let fresh = Duration::ZERO;
        // 10 s before expiry: rule (a) says 15 s, rule (b) 30 s.
        assert_eq!(
            judge(&st, 90_000, SKEW, fresh),
            Verdict::Wait(Duration::from_secs(15))
        );
        // Expired, but within the skew allowance.
        assert_eq!(
            judge(&st, 101_000, SKEW, fresh),
            Verdict::Wait(Duration::from_secs(4))
        );
        assert_eq!(judge(&st, 105_000, SKEW, fresh), Verdict::TakeOver);
        assert_eq!(judge(&st, u64::MAX, SKEW, fresh), Verdict::TakeOver);
    }

    #[test]
    fn rule_b_ignores_a_clock_far_ahead() {
        // The holder's clock is an hour ahead: rule (a) would wait an hour, rule (b) one TTL.
        let st = stored(3_600_000 + 30_000, 30_000);
        assert_eq!(
            judge(&st, 0, SKEW, Duration::from_secs(12)),
            Verdict::Wait(Duration::from_secs(18))
        );
        assert_eq!(
            judge(&st, 0, SKEW, Duration::from_secs(30)),
            Verdict::TakeOver
        );
    }

    #[test]
    fn huge_values_saturate() {
        let st = stored(u64::MAX, u64::MAX);
        assert!(matches!(
            judge(&st, 0, Duration::MAX, Duration::ZERO),
            Verdict::Wait(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn observations_restart_when_the_version_changes() {
        let obs = Observations::default();
        assert_eq!(obs.observe("r", "v1"), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(obs.observe("r", "v1"), Duration::from_secs(3));
        assert_eq!(obs.observe("other", "v1"), Duration::ZERO);
        assert_eq!(obs.observe("r", "v2"), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(obs.observe("r", "v2"), Duration::from_secs(1));
        obs.forget("r");
        assert_eq!(obs.observe("r", "v2"), Duration::ZERO);
    }
}
