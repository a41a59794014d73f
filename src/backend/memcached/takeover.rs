//! When a lease that memcached still keeps may be taken over anyway, and this process's
//! observations of CAS uniques for rule (b).
//!
//! memcached's expiry, on the server's clock, is what normally frees a lease. These rules are a
//! backstop for records the server keeps (a server whose clock misbehaves), the same two as the
//! DynamoDB backend's: (b) this host has seen the same record (CAS unique, which every write
//! changes, with the lease id and expiry) for a full lease duration on its monotonic clock, or
//! (a), only when `skew_allowance` is set, the stored expiry plus the allowance has passed on
//! this host's wall clock.

use std::time::Duration;

use super::record::{millis, Held};

/// What to do about a held lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    TakeOver,
    /// Still held; the holder's lease runs out in about this long.
    Wait(Duration),
}

/// Rules (a) and (b), as a pure function.
pub(super) fn judge(
    held: &Held,
    now_ms: u64,
    skew: Option<Duration>,
    unchanged_for: Duration,
) -> Verdict {
    let by_clock = skew.map(|skew| held.expires_ms.saturating_add(millis(skew)));
    let by_version = Duration::from_millis(held.ttl_ms).saturating_sub(unchanged_for);
    if by_clock.is_some_and(|at| now_ms >= at) || by_version.is_zero() {
        return Verdict::TakeOver;
    }
    // memcached drops the key at about the stored expiry (if the clocks agree), so that is when
    // a waiter should look again, unless rule (b) comes first.
    let expiry = Duration::from_millis(held.expires_ms.saturating_sub(now_ms));
    Verdict::Wait(expiry.min(by_version).max(MIN_WAIT))
}

/// A busy answer never says "now": memcached may keep an expired key for up to a second.
const MIN_WAIT: Duration = Duration::from_millis(50);

pub(super) use crate::backend::takeover::Observations;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseId;

    fn held(expires_ms: u64, ttl_ms: u64) -> Held {
        Held {
            id: LeaseId::generate(),
            principal: "p".into(),
            token: Some(1),
            acquired_ms: expires_ms.saturating_sub(ttl_ms),
            expires_ms,
            ttl_ms,
        }
    }

    const SKEW: Option<Duration> = Some(Duration::from_secs(5));
    const FRESH: Duration = Duration::ZERO;

    #[test]
    fn rule_a_waits_for_expiry_plus_skew() {
        let h = held(100_000, 30_000);
        assert_eq!(
            judge(&h, 90_000, SKEW, FRESH),
            Verdict::Wait(Duration::from_secs(10))
        );
        // Past the stored expiry but within the allowance: look again soon.
        assert_eq!(judge(&h, 101_000, SKEW, FRESH), Verdict::Wait(MIN_WAIT));
        assert_eq!(judge(&h, 105_000, SKEW, FRESH), Verdict::TakeOver);
        assert_eq!(judge(&h, u64::MAX, SKEW, FRESH), Verdict::TakeOver);
    }

    #[test]
    fn rule_b_ignores_a_clock_far_ahead() {
        let h = held(3_600_000 + 30_000, 30_000);
        assert_eq!(
            judge(&h, 0, SKEW, Duration::from_secs(12)),
            Verdict::Wait(Duration::from_secs(18))
        );
        assert_eq!(
            judge(&h, 0, SKEW, Duration::from_secs(30)),
            Verdict::TakeOver
        );
    }

    #[test]
    fn huge_values_saturate() {
        let h = held(u64::MAX, u64::MAX);
        assert!(matches!(
            judge(&h, 0, Some(Duration::MAX), FRESH),
            Verdict::Wait(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn observations_restart_when_the_cas_changes() {
        let obs = Observations::default();
        assert_eq!(obs.observe("k", "1"), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(obs.observe("k", "1"), Duration::from_secs(3));
        assert_eq!(obs.observe("other", "1"), Duration::ZERO);
        assert_eq!(obs.observe("k", "2"), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(obs.observe("k", "2"), Duration::from_secs(1));
        obs.forget("k");
        assert_eq!(obs.observe("k", "2"), Duration::ZERO);
    }
}
