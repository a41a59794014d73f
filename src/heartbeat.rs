//! The renewal loop and the local safety deadline.
//!
//! A renewal *sent* at time `s` that succeeds makes the lease trusted until `s + ttl - margin`,
//! measured on this process's monotonic clock. The request may have reached the store any time
//! after `s`, so the store's expiry is never earlier than ours. Once that deadline has passed
//! (renewals kept failing, or the process was stopped or starved), the lease was unprotected
//! and nothing restores it: the loop ends, no renewal is sent, and one answered after the
//! deadline is not trusted, so the store's lease runs out at its TTL and whoever waits gets it
//! then, even if the holder keeps its guard. If renewals keep failing, the
//! supervisor stops the command at that deadline (TERM at `deadline - kill_after`, KILL at the
//! deadline), so it is dead before anyone else can be granted the lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::{Backend, Renewal};
use crate::lease::{LeaseId, Resource};

/// The timing of a supervised lease, validated so that the deadline logic has room to work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timing {
    pub ttl: Duration,
    /// How often to renew.
    pub heartbeat: Duration,
    /// How long before the deadline the command gets TERM (KILL follows at the deadline).
    pub kill_after: Duration,
    /// Subtracted from the TTL to allow for clock-rate differences and signal delivery.
    pub margin: Duration,
}

/// The shortest TTL of a lease that is renewed (a supervised command's).
pub const MIN_TTL: Duration = Duration::from_millis(500);

/// The shortest heartbeat: a renewal request to the backend 20 times a second.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(50);

impl Timing {
    /// Defaults: heartbeat TTL/3, kill-after min(TTL/6, 10s), margin 5% of the TTL within
    /// [50ms, 2s]. Rejects settings where heartbeat + kill-after + margin do not fit in the TTL.
    pub fn new(
        ttl: Duration,
        heartbeat: Option<Duration>,
        kill_after: Option<Duration>,
    ) -> Result<Timing, String> {
        // The supervised minimum first: `--ttl 0` is as short as `--ttl 100ms`.
        if ttl < MIN_TTL {
            return Err(format!(
                "TTL {} is too short for a supervised command (at least {})",
                crate::duration::format(ttl),
                crate::duration::format(MIN_TTL)
            ));
        }
        crate::lease::check_ttl(ttl).map_err(|e| e.0)?;
        let margin = margin(ttl);
        let heartbeat = heartbeat.unwrap_or(ttl / 3);
        let kill_after = kill_after.unwrap_or((ttl / 6).min(Duration::from_secs(10)));
        if heartbeat < MIN_HEARTBEAT {
            return Err(format!(
                "heartbeat {} is too short (at least {}): every beat is a request to the backend",
                crate::duration::format(heartbeat),
                crate::duration::format(MIN_HEARTBEAT)
            ));
        }
        if heartbeat.saturating_add(kill_after).saturating_add(margin) >= ttl {
            return Err(format!(
                "heartbeat ({}) + kill-after ({}) + safety margin ({}) must be less than the TTL ({}); \
                 raise --ttl or lower --heartbeat/--kill-after",
                crate::duration::format(heartbeat),
                crate::duration::format(kill_after),
                crate::duration::format(margin),
                crate::duration::format(ttl)
            ));
        }
        Ok(Timing {
            ttl,
            heartbeat,
            kill_after,
            margin,
        })
    }

    /// How long a lease granted or renewed by a request sent at `sent_at` is trusted.
    pub fn trusted_until(&self, sent_at: Instant) -> Instant {
        sent_at + self.ttl - self.margin
    }
}

/// How much earlier than the TTL says a lease stops being trusted: 5% of the TTL within
/// [50ms, 2s], and at most half the TTL. It allows for clock-rate differences with the store
/// and for timers and signals that act late, never early.
pub fn margin(ttl: Duration) -> Duration {
    ttl.mul_f64(0.05)
        .clamp(Duration::from_millis(50), Duration::from_secs(2))
        .min(ttl / 2)
}

/// What the heartbeat knows about the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Held, and trusted until this instant unless a renewal sent and answered before it
    /// succeeds. Once it has passed, it stays: the heartbeat stops renewing.
    Held { trusted_until: Instant },
    /// A renewal found the lease gone or someone else's.
    Lost,
}

/// One renewal attempt, for event reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Beat {
    Renewed { round_trip: Duration },
    Failed { error: String },
    Lost,
}

/// Renews the lease every `timing.heartbeat` until the returned handle is dropped or aborted,
/// publishing the [`State`] on the watch channel and each attempt on `beats`.
pub fn spawn(
    backend: Arc<dyn Backend>,
    resource: Resource,
    id: LeaseId,
    timing: Timing,
    granted_sent_at: Instant,
    beats: Option<tokio::sync::mpsc::UnboundedSender<Beat>>,
) -> (watch::Receiver<State>, tokio::task::JoinHandle<()>) {
    let first = State::Held {
        trusted_until: timing.trusted_until(granted_sent_at),
    };
    let (tx, rx) = watch::channel(first);
    let task = tokio::spawn(async move {
        run(
            &*backend,
            &resource,
            &id,
            timing,
            granted_sent_at,
            &tx,
            beats.as_ref(),
        )
        .await;
        // Ended (lost, or past the deadline): the state stays as published. Kept open while
        // anyone watches, so that their `changed()` waits instead of failing at once.
        tx.closed().await;
    });
    (rx, task)
}

async fn run(
    backend: &dyn Backend,
    resource: &Resource,
    id: &LeaseId,
    timing: Timing,
    granted_sent_at: Instant,
    state: &watch::Sender<State>,
    beats: Option<&tokio::sync::mpsc::UnboundedSender<Beat>>,
) {
    let mut trusted_until = timing.trusted_until(granted_sent_at);
    let mut next = granted_sent_at + timing.heartbeat;
    // Whether the last renewal failed.
    let mut failing = false;
    let retry = (timing.heartbeat / 4).clamp(Duration::from_millis(50), Duration::from_secs(2));
    let report = |b: Beat| {
        if let Some(tx) = beats {
            let _ = tx.send(b);
        }
    };
    loop {
        tokio::time::sleep_until(next).await;
        let sent = Instant::now();
        if sent >= trusted_until {
            // The supervisor stops the command at that deadline (the guard, if lockrun itself
            // was stopped); keeping the store's lease alive past it would only keep waiters out.
            tracing::info!(
                "the lease on {resource} was not renewed before its local deadline; no longer renewing it"
            );
            return;
        }
        // Give each attempt at most a heartbeat, and never past the deadline plus a little,
        // so a hung connection cannot stall the loop.
        let limit = timing
            .heartbeat
            .min(trusted_until.saturating_duration_since(sent))
            .max(Duration::from_millis(200));
        match tokio::time::timeout(limit, backend.renew(resource, id, timing.ttl)).await {
            Ok(Ok(Renewal::Renewed(_))) if Instant::now() >= trusted_until => {
                // Answered after the deadline (a slow store, or this process was stopped or
                // starved): the lease was not trusted in between, and the supervisor stops the
                // command at that deadline. A late success cannot make up for that.
                tracing::info!(
                    "the lease on {resource} was renewed only after its local deadline; not trusting it again"
                );
                report(Beat::Renewed {
                    round_trip: sent.elapsed(),
                });
                return;
            }
            Ok(Ok(Renewal::Renewed(_))) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("renewed the lease on {resource} again");
                }
                trusted_until = trusted_until.max(timing.trusted_until(sent));
                state.send_replace(State::Held { trusted_until });
                report(Beat::Renewed {
                    round_trip: sent.elapsed(),
                });
                next = sent + timing.heartbeat;
            }
            Ok(Ok(Renewal::Lost)) => {
                tracing::info!("lease on {resource} was lost");
                state.send_replace(State::Lost);
                report(Beat::Lost);
                return;
            }
            Ok(Err(e)) => {
                failed(
                    &mut failing,
                    &format!("renewing the lease on {resource} failed: {e}"),
                );
                report(Beat::Failed {
                    error: e.to_string(),
                });
                next = Instant::now() + crate::wait::jitter(retry);
            }
            Err(_) => {
                let what = format!("timed out after {limit:?}");
                failed(
                    &mut failing,
                    &format!("renewing the lease on {resource} {what}"),
                );
                report(Beat::Failed { error: what });
                next = Instant::now() + crate::wait::jitter(retry);
            }
        }
    }
}

/// Reports a failed renewal: the first of a run of failures as a warning, the ones after it
/// (retries every fraction of a heartbeat, often with the same error) only with `-v`. If they
/// go on until the deadline, the line lockrun ends with says so.
fn failed(failing: &mut bool, what: &str) {
    if std::mem::replace(failing, true) {
        tracing::info!("{what}");
    } else {
        tracing::warn!("{what} (retrying)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Acquire, AcquireRequest, Capabilities, Error, Fencing};
    use crate::lease::Lease;
    use async_trait::async_trait;
    use std::sync::Mutex;
    use std::time::SystemTime;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn defaults_fit() {
        let t = Timing::new(secs(30), None, None).unwrap();
        assert_eq!(t.heartbeat, secs(10));
        assert_eq!(t.kill_after, secs(5));
        assert_eq!(t.margin, Duration::from_millis(1500));
        for ttl in [1, 2, 5, 10, 60, 3600, 86400] {
            assert!(Timing::new(secs(ttl), None, None).is_ok(), "ttl {ttl}");
        }
    }

    #[test]
    fn rejects_settings_that_do_not_fit() {
        assert!(Timing::new(secs(30), Some(secs(25)), None).is_err());
        assert!(Timing::new(secs(30), None, Some(secs(25))).is_err());
        assert!(Timing::new(secs(30), Some(Duration::ZERO), None).is_err());
        assert!(Timing::new(Duration::from_millis(100), None, None).is_err());
        let e = Timing::new(secs(30), Some(Duration::from_nanos(1)), None).unwrap_err();
        assert!(e.contains("too short (at least 50ms)"), "{e}");
        assert!(Timing::new(secs(30), Some(MIN_HEARTBEAT), None).is_ok());
        // Out-of-range values are errors, not overflows.
        let e = Timing::new(Duration::MAX, None, None).unwrap_err();
        assert_eq!(e, "the TTL must be at most 10 years");
        assert!(Timing::new(secs(30), Some(Duration::MAX), None).is_err());
        assert!(Timing::new(secs(30), None, Some(Duration::MAX)).is_err());
        let e = Timing::new(secs(30), Some(secs(20)), Some(secs(9))).unwrap_err();
        assert!(e.contains("heartbeat (20s)"), "{e}");
    }

    /// A backend whose renewals follow a script: Some(true) renewed, Some(false) lost, None error;
    /// each answered after the delay.
    struct Script(Mutex<Vec<Option<bool>>>, Mutex<Vec<Instant>>, Duration);

    #[async_trait]
    impl Backend for Script {
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                fencing: Fencing::None,
                server_time: true,
                watch: false,
                may_evict: false,
                local: false,
                fair: false,
            }
        }
        async fn try_acquire(&self, _: &AcquireRequest<'_>) -> Result<Acquire, Error> {
            unreachable!()
        }
        async fn renew(&self, r: &Resource, id: &LeaseId, ttl: Duration) -> Result<Renewal, Error> {
            self.1.lock().unwrap().push(Instant::now());
            tokio::time::sleep(self.2).await;
            let next = {
                let mut s = self.0.lock().unwrap();
                if s.is_empty() {
                    Some(true)
                } else {
                    s.remove(0)
                }
            };
            match next {
                Some(true) => Ok(Renewal::Renewed(Lease {
                    resource: r.clone(),
                    id: id.clone(),
                    principal: "p".into(),
                    fencing_token: None,
                    acquired_at: SystemTime::now(),
                    expires_at: SystemTime::now() + ttl,
                    ttl,
                })),
                Some(false) => Ok(Renewal::Lost),
                None => Err(Error::Unavailable("down".into())),
            }
        }
        async fn release(&self, _: &Resource, _: &LeaseId) -> Result<bool, Error> {
            Ok(true)
        }
        async fn current(&self, _: &Resource) -> Result<Option<Lease>, Error> {
            Ok(None)
        }
    }

    fn start(script: Vec<Option<bool>>, timing: Timing) -> (Arc<Script>, watch::Receiver<State>) {
        start_slow(script, timing, Duration::ZERO)
    }

    fn start_slow(
        script: Vec<Option<bool>>,
        timing: Timing,
        delay: Duration,
    ) -> (Arc<Script>, watch::Receiver<State>) {
        let b = Arc::new(Script(Mutex::new(script), Mutex::new(vec![]), delay));
        let (rx, _task) = spawn(
            b.clone(),
            Resource::new("r").unwrap(),
            LeaseId::generate(),
            timing,
            Instant::now(),
            None,
        );
        (b, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn renews_on_the_heartbeat_and_extends_the_deadline() {
        let timing = Timing::new(secs(30), None, None).unwrap();
        let t0 = Instant::now();
        let (b, rx) = start(vec![], timing);
        tokio::time::sleep(secs(35)).await;
        let calls = b.1.lock().unwrap().clone();
        assert_eq!(calls.len(), 3, "renewals at 10s, 20s, 30s");
        assert_eq!(calls[0] - t0, secs(10));
        let State::Held { trusted_until } = *rx.borrow() else {
            panic!()
        };
        assert_eq!(trusted_until, calls[2] + secs(30) - timing.margin);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_do_not_extend_the_deadline() {
        let timing = Timing::new(secs(30), None, None).unwrap();
        let t0 = Instant::now();
        let (b, rx) = start(vec![None; 1000], timing);
        tokio::time::sleep(secs(40)).await;
        assert!(
            b.1.lock().unwrap().len() > 5,
            "retries faster than the heartbeat"
        );
        assert_eq!(
            *rx.borrow(),
            State::Held {
                trusted_until: t0 + secs(30) - timing.margin
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_failure_restores_trust() {
        let timing = Timing::new(secs(30), None, None).unwrap();
        let (b, rx) = start(vec![None, None, Some(true)], timing);
        tokio::time::sleep(secs(16)).await;
        let calls = b.1.lock().unwrap().clone();
        assert_eq!(calls.len(), 3);
        let State::Held { trusted_until } = *rx.borrow() else {
            panic!()
        };
        assert_eq!(trusted_until, calls[2] + secs(30) - timing.margin);
    }

    #[tokio::test(start_paused = true)]
    async fn no_renewal_is_sent_after_the_deadline() {
        let timing = Timing::new(secs(30), None, None).unwrap();
        let t0 = Instant::now();
        let deadline = t0 + secs(30) - timing.margin;
        // Failures (retried every 1.875 s or more) until past the deadline at 28.5 s, then
        // successes that must not be asked for: the store's lease is left to run out.
        let (b, rx) = start([vec![None; 20], vec![Some(true); 5]].concat(), timing);
        tokio::time::sleep(secs(100)).await;
        let calls = b.1.lock().unwrap().clone();
        assert!(
            calls.len() > 5,
            "retried until the deadline: {}",
            calls.len()
        );
        assert!(
            calls.iter().all(|&c| c < deadline),
            "renewed after the deadline"
        );
        assert_eq!(
            *rx.borrow(),
            State::Held {
                trusted_until: deadline
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_answered_after_the_deadline_does_not_restore_trust() {
        // The first renewal goes out 100 ms before the deadline (28.5 s) and is answered 50 ms
        // after it: the guard was already told its lease is lost, and stays told.
        let ms = Duration::from_millis;
        let timing = Timing::new(secs(30), Some(ms(28_400)), Some(ms(50))).unwrap();
        let t0 = Instant::now();
        let (b, mut rx) = start_slow(vec![Some(true); 5], timing, ms(150));
        tokio::time::sleep(secs(100)).await;
        assert_eq!(
            b.1.lock().unwrap().len(),
            1,
            "no renewal after the deadline"
        );
        assert_eq!(
            *rx.borrow_and_update(),
            State::Held {
                trusted_until: t0 + secs(30) - timing.margin
            }
        );
        // The heartbeat has ended, and a watcher still waits rather than failing at once.
        let changed = tokio::time::timeout(secs(10), rx.changed()).await;
        assert!(changed.is_err(), "changed() returned: {changed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn lost_is_published_at_once() {
        let timing = Timing::new(secs(30), None, None).unwrap();
        let (_b, mut rx) = start(vec![Some(false)], timing);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), State::Lost);
    }
}
