//! When a held item may be taken over: the two clock rules, and this process's observations of
//! record versions for rule (b).

use std::time::{Duration, SystemTime};

use super::item::Stored;

pub(super) use crate::backend::takeover::{Observations, Verdict};

/// The shared rule ([`crate::backend::takeover::judge`]) on a stored item: (a) its stored expiry
/// plus `skew` has passed on our clock (`now_ms`), or (b) we have seen its version unchanged
/// for its TTL.
pub(super) fn judge(
    stored: &Stored,
    now_ms: u64,
    skew: Option<Duration>,
    unchanged_for: Duration,
) -> Verdict {
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    crate::backend::takeover::judge(
        at(stored.expires_ms),
        Duration::from_millis(stored.ttl_ms),
        at(now_ms),
        skew,
        unchanged_for,
    )
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

    const SKEW: Option<Duration> = Some(Duration::from_secs(5));

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
            judge(&st, 0, Some(Duration::MAX), Duration::ZERO),
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
