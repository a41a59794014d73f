//! The waiting policy, written once for every backend.
//!
//! [`acquire`] tries to take a lease and, while the resource is busy, sleeps until the earliest
//! of: a change event from the backend's [`Watch`] (a release), the
//! moment the holder's lease runs out (so a crashed holder is replaced exactly at its expiry, not
//! at the next poll), a jittered poll as a fallback, and the caller's deadline.
//!
//! With [`Order::Fair`] a waiter first joins the backend's line of waiters and waits for its turn
//! there (only a predecessor leaving wakes it); the first in line then waits for the resource as
//! above, so a release wakes one waiter, not all of them.

use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{Acquire, AcquireRequest, Backend, Change, Error, Renewal, Ticket, Watch};
use crate::lease::{Lease, Resource};

/// How long to wait for a busy resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until the lease is granted.
    Forever,
    /// At most this long; zero means a single attempt.
    AtMost(Duration),
}

impl Wait {
    /// Parses `forever` or a duration (`0` = try once).
    pub fn parse(text: &str) -> Result<Wait, String> {
        if text.trim().eq_ignore_ascii_case("forever") {
            Ok(Wait::Forever)
        } else {
            crate::duration::parse(text)
                .map(Wait::AtMost)
                .map_err(|e| format!("{e} (a duration, 0 to try once, or 'forever')"))
        }
    }
}

/// A granted lease plus the facts the safety deadline is computed from.
#[derive(Debug, Clone)]
pub struct Granted {
    pub lease: Lease,
    /// When the request that was granted was sent: the lease is trusted from here, never from
    /// when the answer arrived.
    pub sent_at: Instant,
    /// How long the caller waited in all.
    pub waited: Duration,
}

/// The result of [`acquire`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    Granted(Granted),
    /// Still busy when the wait ran out.
    Busy(Option<Lease>),
}

/// What happens while waiting, for progress reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The resource is busy; `holder` is the current holder when it could be read.
    Busy { holder: Option<&'a Lease> },
    /// An attempt failed with an error that may go away; the wait goes on.
    Retrying { error: &'a Error },
}

/// Poll intervals when the backend offers no watch.
const POLL_MIN: Duration = Duration::from_millis(25);
const POLL_MAX: Duration = Duration::from_secs(1);
/// A safety net for lost notifications when the backend does offer a watch.
const WATCH_SAFETY_POLL: Duration = Duration::from_secs(5);
/// How long a fair waiter waits in line before it reads who holds the resource, to report it.
const REPORT_HOLDER_AFTER: Duration = Duration::from_millis(200);
/// Wake a hair after the holder's expiry, so the attempt does not land just before it.
const EXPIRY_SLACK: Duration = Duration::from_millis(2);
/// How many times in a row an attempt that found the resource freed in the meantime is made
/// again at once (see [`acquire_in`]).
const FREE_AGAIN_TRIES: u32 = 3;

/// What to do with errors that may go away (an unreachable backend, a timeout) while acquiring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retry {
    /// Report an error of the first attempt at once (a backend that is down at start is an
    /// error, not a wait); retry later ones with backoff until the wait's deadline. The CLI's
    /// behaviour.
    #[default]
    FailFast,
    /// Retry every retryable error with backoff until the wait's deadline, the first included
    /// (for services that start before their backend).
    UntilDeadline,
}

/// In which order waiters get a busy resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Whoever tries first after a release (every waiter is woken). Works on every backend.
    #[default]
    Race,
    /// First come, first served (`--fair`): waiters queue in the backend's line of waiters, and
    /// only the first in line tries. Needs a backend that keeps one ([`Backend::enqueue`]).
    Fair,
}

/// Acquires a lease, waiting as `wait` says, in the order `order` says, retrying errors as
/// `retry` says. Past the deadline the last error is returned.
pub async fn acquire(
    backend: &dyn Backend,
    req: &AcquireRequest<'_>,
    wait: Wait,
    retry: Retry,
    order: Order,
    on_event: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<Outcome, Error> {
    crate::later::run();
    // A single attempt has nobody to queue behind.
    let fair = order == Order::Fair && wait != Wait::AtMost(Duration::ZERO);
    let mut line = Line { fair, ticket: None };
    let mut subscription = Subscription::default();
    // Whether an attempt went unanswered (and may still be applied) before a later one.
    let mut unanswered = false;
    let out = acquire_in(
        backend,
        req,
        (wait, retry),
        &mut line,
        &mut subscription,
        &mut unanswered,
        on_event,
    )
    .await;
    // Giving back, closing the watch and leaving the line share one bound: a stalled store
    // must not hold the caller past its wait by more than that. The give-back goes first: it
    // is what may free a lease; the watch's and the line's leftovers expire on their own.
    let cleanup_by = Instant::now() + GIVE_BACK_WAIT;
    let out = settle(backend, req, out, unanswered, cleanup_by).await;
    if let Some(watch) = subscription.watch.take() {
        let _ = tokio::time::timeout_at(cleanup_by, watch.close()).await;
    }
    if let Some(ticket) = line.ticket.take() {
        let _ = tokio::time::timeout_at(cleanup_by, ticket.leave()).await;
    }
    out
}

/// The outcome of a wait, once what an unanswered attempt may have been granted is given back.
///
/// An attempt whose answer did not come in time may still be applied by the store, leaving
/// a lease under this id that nobody knows of until its TTL. Give it back, should there be
/// one (nobody else can hold the id), but do not wait for a store that is not answering past
/// `by`. Unless that freed a lease, the attempt may still be on its way (a stalled connection
/// can deliver it after the give-back, which went out on another one): the error names the
/// lease, so that it can be freed.
async fn settle(
    backend: &dyn Backend,
    req: &AcquireRequest<'_>,
    out: Result<Outcome, Error>,
    unanswered: bool,
    cleanup_by: Instant,
) -> Result<Outcome, Error> {
    let local = backend.capabilities().local;
    match out {
        // A call that could not connect was not sent; but an earlier attempt may have been.
        Err(Error::Unreached(why)) if !unanswered => Err(Error::Unreached(why)),
        // A local store's step that failed was not applied, and never will be.
        Err(Error::Unavailable(why) | Error::Unreached(why)) if local => {
            Err(Error::Unavailable(why))
        }
        Err(Error::Unavailable(why) | Error::Unreached(why)) => Err(Error::Unavailable(
            if give_back(backend, req, cleanup_by).await {
                why
            } else {
                unconfirmed(&why, req)
            },
        )),
        // An earlier attempt went unanswered, and the wait ended otherwise (busy at its
        // deadline, or an error retrying cannot mend): that attempt may still be applied too.
        out if unanswered && !local && !matches!(out, Ok(Outcome::Granted(_))) => {
            if !give_back(backend, req, cleanup_by).await {
                tracing::warn!("{}", unconfirmed("an earlier attempt got no answer", req));
            }
            out
        }
        out => out,
    }
}

/// Releases what an attempt left unanswered may have been granted (nobody else can hold its
/// id), waiting for a store that is not answering only until `by`: whether that freed a lease.
async fn give_back(backend: &dyn Backend, req: &AcquireRequest<'_>, by: Instant) -> bool {
    let give_back = backend.release(req.resource, req.id);
    matches!(tokio::time::timeout_at(by, give_back).await, Ok(Ok(true)))
}

/// How long a failed acquire waits to give back a grant that may have been applied late.
const GIVE_BACK_WAIT: Duration = Duration::from_secs(1);

/// The message of an acquire that failed unanswered and whose give-back freed nothing: `why`,
/// and the lease the store may still grant, with the command that frees it. One line.
fn unconfirmed(why: &str, req: &AcquireRequest<'_>) -> String {
    let resource = resource_word(req.resource);
    format!(
        "{why}; if the server applies the request late, lease {id} may hold {resource} until \
         its TTL: lockrun release {resource} {id} (with the same -b/-c)",
        id = req.id
    )
}

/// `resource` as the shell word a command line names it by, with `--` before it when it would
/// read as an option.
pub(crate) fn resource_word(resource: &Resource) -> String {
    let word = shell_word(&crate::lease::escape(resource.as_str()));
    if word.starts_with('-') {
        format!("-- {word}")
    } else {
        word
    }
}

/// `text` as one shell word: as it is when plain, else in single quotes.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%+,-./:=@_".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The waiter's place in the backend's line, when waiting fairly.
struct Line {
    fair: bool,
    ticket: Option<Box<dyn Ticket>>,
}

impl Line {
    /// One attempt: directly, or as the first in line once every earlier waiter is served.
    /// `Ok(None)`: the deadline passed while waiting in line.
    async fn attempt(
        &mut self,
        backend: &dyn Backend,
        req: &AcquireRequest<'_>,
        deadline: Option<Instant>,
        on_event: &mut (dyn FnMut(Event<'_>) + Send),
        last_holder: &mut Option<Lease>,
        subscription: &mut Subscription,
    ) -> Result<Option<(Instant, Acquire)>, Error> {
        if !self.fair {
            let sent_at = Instant::now();
            return Ok(Some((sent_at, backend.try_acquire(req).await?)));
        }
        if self.ticket.is_none() {
            self.ticket = Some(backend.enqueue(req).await?.ok_or_else(|| {
                Error::Config(
                    "this backend keeps no line of waiters, so it cannot serve them in order \
                     (--fair, or fair = true in the config file); etcd can"
                        .into(),
                )
            })?);
        }
        let Some(ticket) = self.ticket.as_mut() else {
            unreachable!("joined above");
        };
        let mut first = ticket.first();
        // Who holds the resource is read only for a wait long enough to be noticed.
        let mut report_at = (last_holder.is_none()).then(|| Instant::now() + REPORT_HOLDER_AFTER);
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        loop {
            tokio::select! {
                r = &mut first => {
                    r?;
                    break;
                }
                _ = tokio::time::sleep_until(report_at.unwrap_or(far)), if report_at.is_some() => {
                    report_at = None;
                    // Not past the deadline, on a store that stalls.
                    let read = backend.current(req.resource);
                    if let Ok(Ok(Some(holder))) =
                        tokio::time::timeout_at(deadline.unwrap_or(far), read).await
                    {
                        on_event(Event::Busy { holder: Some(&holder) });
                        *last_holder = Some(holder);
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                    if last_holder.is_none() {
                        // For the busy message only: not long past the deadline (half the
                        // give-back's bound, which follows).
                        let read = backend.current(req.resource);
                        *last_holder = tokio::time::timeout(GIVE_BACK_WAIT / 2, read)
                            .await
                            .ok()
                            .and_then(|r| r.ok().flatten());
                    }
                    return Ok(None);
                }
            }
        }
        drop(first);
        // The first in line will wait for a release: subscribe before trying, so that the attempt
        // need not be repeated after subscribing.
        subscription.ensure(backend, req, deadline).await;
        let sent_at = Instant::now();
        Ok(Some((sent_at, ticket.try_acquire(req).await?)))
    }
}

/// The subscription to a resource's changes, made once, when the first attempt finds it busy.
#[derive(Default)]
struct Subscription {
    watch: Option<Box<dyn Watch>>,
    tried: bool,
}

impl Subscription {
    /// Subscribes unless done before; true if this call subscribed and the caller should try
    /// once more before it waits (a watch that wakes once armed makes that attempt itself). A
    /// subscription still unanswered at the wait's `deadline` is given up (the wait then makes
    /// its last attempt), so that a store that stalls keeps the wait within its bound.
    async fn ensure(
        &mut self,
        backend: &dyn Backend,
        req: &AcquireRequest<'_>,
        deadline: Option<Instant>,
    ) -> bool {
        if self.tried {
            return false;
        }
        self.tried = true;
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        let watch = tokio::time::timeout_at(deadline.unwrap_or(far), backend.watch(req.resource));
        self.watch = match watch.await {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                tracing::debug!("watch unavailable, polling: {e}");
                None
            }
            Err(_) => {
                tracing::debug!("no watch by the wait's deadline");
                return false;
            }
        };
        !self.watch.as_ref().is_some_and(|w| w.wakes_once_armed())
    }
}

async fn acquire_in(
    backend: &dyn Backend,
    req: &AcquireRequest<'_>,
    (wait, retry): (Wait, Retry),
    line: &mut Line,
    subscription: &mut Subscription,
    unanswered: &mut bool,
    on_event: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<Outcome, Error> {
    let start = Instant::now();
    let deadline = match wait {
        Wait::Forever => None,
        // A limit too far off to be an instant is no limit.
        Wait::AtMost(d) => start.checked_add(d),
    };
    let mut poll = POLL_MIN;
    let mut attempts = 0u32;
    let mut free_again = 0u32;
    let mut last_holder: Option<Lease> = None;
    // What the watch saw when it showed the resource held again: taken as the answer of an
    // attempt, without making one.
    let mut seen: Option<Acquire> = None;
    loop {
        let result = match seen.take() {
            Some(busy) => Ok(Some((Instant::now(), busy))),
            None => {
                attempts += 1;
                line.attempt(
                    backend,
                    req,
                    deadline,
                    on_event,
                    &mut last_holder,
                    subscription,
                )
                .await
            }
        };
        let wake = match result {
            Ok(None) => return Ok(Outcome::Busy(last_holder)),
            Ok(Some((sent_at, Acquire::Acquired(lease)))) => {
                return Ok(Outcome::Granted(Granted {
                    lease,
                    sent_at,
                    waited: sent_at.duration_since(start),
                }));
            }
            Ok(Some((_, Acquire::Busy { holder, expires_in }))) => {
                // Held under this very id: an earlier attempt that failed (its answer timed out
                // or was lost) was applied after all. Nobody else can hold that id: it is ours,
                // granted at a time we do not know. A renewal makes its time known (sent now,
                // the lease lasts a TTL from when the store applies it), also for a one-shot
                // attempt, which would otherwise leave that lease behind. (It used to be given
                // back and asked for again under the same id; the release, also sent behind
                // the stalled attempt on its connection, could arrive after the new grant and
                // release it.)
                if holder.as_ref().is_some_and(|h| h.id == *req.id) && free_again < FREE_AGAIN_TRIES
                {
                    free_again += 1;
                    let sent_at = Instant::now();
                    match backend.renew(req.resource, req.id, req.ttl).await {
                        Ok(Renewal::Renewed(lease)) => {
                            return Ok(Outcome::Granted(Granted {
                                lease,
                                sent_at,
                                waited: sent_at.duration_since(start),
                            }));
                        }
                        Ok(Renewal::Lost) => {}
                        Err(e) => *unanswered |= matches!(e, Error::Unavailable(_)),
                    }
                    continue;
                }
                if deadline.is_some_and(|d| Instant::now() >= d)
                    || wait == Wait::AtMost(Duration::ZERO)
                {
                    return Ok(Outcome::Busy(holder));
                }
                // No holder and no time left: the resource was freed between the attempt and
                // the read that followed it (the release raced the attempt). Try again at
                // once. Waiting would only delay the next holder: until the expiry slack, and
                // on PostgreSQL behind a new connection, since the watch made now borrows the
                // open one to stand in the line of waiters.
                if holder.is_none()
                    && expires_in == Some(Duration::ZERO)
                    && free_again < FREE_AGAIN_TRIES
                {
                    free_again += 1;
                    continue;
                }
                free_again = 0;
                if holder.as_ref().map(|h| &h.id) != last_holder.as_ref().map(|h| &h.id) {
                    poll = POLL_MIN; // a new holder: start polling fast again
                }
                on_event(Event::Busy {
                    holder: holder.as_ref(),
                });
                last_holder = holder;
                // Subscribe now, then try once more at once, so a release that happened
                // between the attempt and the subscription is not missed.
                if subscription.ensure(backend, req, deadline).await {
                    continue;
                }
                let mut wake = Instant::now()
                    + if subscription.watch.is_some() {
                        jitter(WATCH_SAFETY_POLL)
                    } else {
                        let p = jitter(poll);
                        poll = (poll * 3 / 2).min(POLL_MAX);
                        p
                    };
                // A holder's expiry read from the store may be anything.
                if let Some(at) = expires_in
                    .and_then(|left| Instant::now().checked_add(left.saturating_add(EXPIRY_SLACK)))
                {
                    wake = wake.min(at);
                }
                wake
            }
            Err(e)
                if e.is_retryable()
                    && (attempts > 1 || retry == Retry::UntilDeadline)
                    && !deadline.is_some_and(|d| Instant::now() >= d) =>
            {
                *unanswered |= matches!(e, Error::Unavailable(_));
                on_event(Event::Retrying { error: &e });
                let p = jitter(poll);
                poll = (poll * 2).min(POLL_MAX);
                Instant::now() + p
            }
            Err(e) => return Err(e),
        };
        let wake = deadline.map_or(wake, |d| wake.min(d));
        match subscription.watch.as_mut() {
            Some(w) => {
                tokio::select! {
                    r = w.changed() => match r {
                        Ok(Change::MayBeFree) => {}
                        Ok(Change::Held { holder, expires_in }) => {
                            seen = Some(Acquire::Busy { holder, expires_in });
                        }
                        Err(e) => {
                            tracing::debug!("watch failed, falling back to polling: {e}");
                            subscription.watch = None;
                        }
                    },
                    _ = tokio::time::sleep_until(wake) => {}
                }
            }
            None => tokio::time::sleep_until(wake).await,
        }
    }
}

/// `d` scaled by a random factor in [0.75, 1.25), so waiters do not poll in lockstep.
pub fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::getrandom(&mut b).is_ok() {
        u16::from_le_bytes(b)
    } else {
        32768
    };
    d.mul_f64(0.75 + 0.5 * f64::from(r) / 65536.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Capabilities, Fencing, Renewal};
    use crate::lease::{LeaseId, Resource};
    use async_trait::async_trait;
    use std::sync::Mutex;
    use std::time::SystemTime;

    /// A scripted backend: answers try_acquire from a list.
    struct Scripted {
        answers: Mutex<Vec<Result<bool, Error>>>,
        busy_for: Duration,
        calls: Mutex<Vec<Instant>>,
        /// How many attempts, before the answers, find the resource freed in the meantime.
        free_again: Mutex<usize>,
        /// How many attempts, before the answers, find it held under the request's own id.
        own: Mutex<usize>,
        /// The lease ids released.
        released: Mutex<Vec<LeaseId>>,
        /// Whether a release frees a lease.
        frees: Mutex<bool>,
        /// Whether the store is local (`Capabilities::local`).
        local: Mutex<bool>,
        /// Whether a renewal finds the lease (else it is lost), and the ids renewed.
        renews: Mutex<bool>,
        renewed: Mutex<Vec<LeaseId>>,
    }

    fn lease(r: &Resource, id: &LeaseId) -> Lease {
        Lease {
            resource: r.clone(),
            id: id.clone(),
            principal: "p".into(),
            fencing_token: Some(1),
            acquired_at: SystemTime::now(),
            expires_at: SystemTime::now(),
            ttl: Duration::from_secs(1),
        }
    }

    #[async_trait]
    impl Backend for Scripted {
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                fencing: Fencing::Strict,
                server_time: true,
                watch: false,
                may_evict: false,
                local: *self.local.lock().unwrap(),
                fair: false,
            }
        }
        async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
            self.calls.lock().unwrap().push(Instant::now());
            let mut free_again = self.free_again.lock().unwrap();
            if *free_again > 0 {
                *free_again -= 1;
                return Ok(Acquire::Busy {
                    holder: None,
                    expires_in: Some(Duration::ZERO),
                });
            }
            let mut own = self.own.lock().unwrap();
            if *own > 0 {
                *own -= 1;
                return Ok(Acquire::Busy {
                    holder: Some(lease(req.resource, req.id)),
                    expires_in: Some(self.busy_for),
                });
            }
            let next = self.answers.lock().unwrap().remove(0);
            match next {
                Ok(true) => Ok(Acquire::Acquired(lease(req.resource, req.id))),
                Ok(false) => Ok(Acquire::Busy {
                    holder: Some(lease(req.resource, &LeaseId::generate())),
                    expires_in: Some(self.busy_for),
                }),
                Err(e) => Err(e),
            }
        }
        async fn renew(&self, r: &Resource, id: &LeaseId, _: Duration) -> Result<Renewal, Error> {
            self.renewed.lock().unwrap().push(id.clone());
            Ok(if *self.renews.lock().unwrap() {
                Renewal::Renewed(lease(r, id))
            } else {
                Renewal::Lost
            })
        }
        async fn release(&self, _: &Resource, id: &LeaseId) -> Result<bool, Error> {
            self.released.lock().unwrap().push(id.clone());
            Ok(*self.frees.lock().unwrap())
        }
        async fn current(&self, _: &Resource) -> Result<Option<Lease>, Error> {
            Ok(None)
        }
    }

    fn scripted(answers: Vec<Result<bool, Error>>, busy_for: Duration) -> Scripted {
        Scripted {
            answers: Mutex::new(answers),
            busy_for,
            calls: Mutex::new(vec![]),
            free_again: Mutex::new(0),
            own: Mutex::new(0),
            released: Mutex::new(vec![]),
            frees: Mutex::new(false),
            local: Mutex::new(false),
            renews: Mutex::new(false),
            renewed: Mutex::new(vec![]),
        }
    }

    /// A request for `r` with a 5 s TTL.
    fn request<'a>(r: &'a Resource, id: &'a LeaseId) -> AcquireRequest<'a> {
        AcquireRequest {
            resource: r,
            id,
            principal: "me",
            ttl: Duration::from_secs(5),
        }
    }

    async fn run(b: &dyn Backend, wait: Wait) -> Result<Outcome, Error> {
        run_in(b, wait, Order::Race).await
    }

    async fn run_in(b: &dyn Backend, wait: Wait, order: Order) -> Result<Outcome, Error> {
        let r = Resource::new("r").unwrap();
        let id = LeaseId::generate();
        let req = request(&r, &id);
        acquire(b, &req, wait, Retry::FailFast, order, &mut |_| {}).await
    }

    /// [`run`] with a request of the caller's.
    async fn run_req(b: &dyn Backend, req: &AcquireRequest<'_>) -> Result<Outcome, Error> {
        acquire(
            b,
            req,
            Wait::Forever,
            Retry::FailFast,
            Order::Race,
            &mut |_| {},
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_tries_once() {
        let b = scripted(vec![Ok(false)], Duration::from_secs(10));
        assert!(matches!(
            run(&b, Wait::AtMost(Duration::ZERO)).await,
            Ok(Outcome::Busy(Some(_)))
        ));
        assert_eq!(b.calls.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_at_holder_expiry() {
        // Busy with 3s left, then granted: the retry lands right after the expiry, not at a
        // poll interval (the first retry is immediate, to subscribe).
        // The holder's lease ends in 5ms, sooner than the first poll (>= 18ms): the retry must
        // land right after that expiry.
        let b = scripted(
            vec![Ok(false), Ok(false), Ok(true)],
            Duration::from_millis(5),
        );
        let out = run(&b, Wait::Forever).await.unwrap();
        let Outcome::Granted(g) = out else {
            panic!("not granted")
        };
        let calls = b.calls.lock().unwrap();
        let gap = calls[2] - calls[1];
        assert!(gap >= Duration::from_millis(5), "{gap:?}");
        assert!(gap <= Duration::from_millis(5) + EXPIRY_SLACK, "{gap:?}");
        assert_eq!(g.waited, gap);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline() {
        let b = scripted(vec![Ok(false); 1000], Duration::from_secs(3600));
        let start = Instant::now();
        let out = run(&b, Wait::AtMost(Duration::from_secs(2))).await.unwrap();
        assert!(matches!(out, Outcome::Busy(_)));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_millis(2100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_grant_applied_after_its_answer_was_lost_is_renewed_and_kept() {
        // The store holds the resource under this very request's id (an attempt that timed
        // out was applied after all): a renewal gives it a known time, and it is the grant.
        // Nothing is released: a release also sent behind the stalled attempt could arrive
        // after a new grant under the same id, and release that.
        let b = scripted(vec![], Duration::from_secs(60));
        *b.own.lock().unwrap() = 1;
        *b.renews.lock().unwrap() = true;
        let r = Resource::new("r").unwrap();
        let id = LeaseId::generate();
        let start = Instant::now();
        let out = run_req(&b, &request(&r, &id)).await.unwrap();
        let Outcome::Granted(g) = out else {
            panic!("not granted: {out:?}")
        };
        assert_eq!(g.lease.id, id);
        assert_eq!(g.sent_at, start);
        assert_eq!(*b.renewed.lock().unwrap(), vec![id]);
        assert!(b.released.lock().unwrap().is_empty());
        assert_eq!(b.calls.lock().unwrap().len(), 1, "asked once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_one_shot_attempt_that_finds_its_own_lease_keeps_it_or_asks_again() {
        // `-n`: the first answer is busy under this very id. Returning busy there would leave
        // that lease for its whole TTL with nobody knowing its id. Renewed, it is the grant;
        // gone by the renewal (it ran out), the next attempt goes out at once.
        for renews in [true, false] {
            for wait in [
                Wait::AtMost(Duration::ZERO),
                Wait::AtMost(Duration::from_secs(5)),
            ] {
                let b = scripted(vec![Ok(true)], Duration::from_secs(60));
                *b.own.lock().unwrap() = 1;
                *b.renews.lock().unwrap() = renews;
                let r = Resource::new("r").unwrap();
                let id = LeaseId::generate();
                let start = Instant::now();
                let out = acquire(
                    &b,
                    &request(&r, &id),
                    wait,
                    Retry::FailFast,
                    Order::Race,
                    &mut |_| {},
                )
                .await
                .unwrap();
                assert!(matches!(out, Outcome::Granted(_)), "{wait:?}: {out:?}");
                assert_eq!(*b.renewed.lock().unwrap(), vec![id]);
                assert!(b.released.lock().unwrap().is_empty());
                let calls = b.calls.lock().unwrap();
                assert_eq!(calls.len(), if renews { 1 } else { 2 }, "{wait:?}");
                assert!(calls.iter().all(|&t| t == start), "no waiting");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_that_was_not_applied_names_no_lease_it_may_grant_late() {
        // A local store's step that failed (disk full, a lock file held for 10 s) was not
        // applied and never will be; a refused connection sent nothing. No give-back, no "may
        // hold it until its TTL".
        let r = Resource::new("r").unwrap();
        let id = LeaseId::generate();
        for (error, local) in [
            (Error::Unavailable("no space left".into()), true),
            (Error::Unreached("connection refused".into()), false),
        ] {
            let b = scripted(vec![Err(error.clone())], Duration::ZERO);
            *b.local.lock().unwrap() = local;
            let out = run_req(&b, &request(&r, &id)).await;
            assert_eq!(out.unwrap_err(), error);
            assert!(b.released.lock().unwrap().is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_attempt_is_given_back_whatever_the_wait_ends_with() {
        // The unanswered attempt may still be applied, however the wait ends: a refusal (a
        // network that first drops answers, then refuses connections), busy at the deadline,
        // or an error retrying cannot mend.
        let r = Resource::new("r").unwrap();
        let id = LeaseId::generate();
        let ends: [Vec<Result<bool, Error>>; 3] = [
            (0..100)
                .map(|_| Err(Error::Unreached("refused".into())))
                .collect(),
            (0..1000).map(|_| Ok(false)).collect(),
            vec![Err(Error::Other("protocol surprise".into()))],
        ];
        for end in ends {
            let mut answers = vec![Ok(false), Err(Error::Unavailable("timed out".into()))];
            answers.extend(end);
            let b = scripted(answers, Duration::from_secs(60));
            let out = acquire(
                &b,
                &request(&r, &id),
                Wait::AtMost(Duration::from_secs(2)),
                Retry::FailFast,
                Order::Race,
                &mut |_| {},
            )
            .await;
            assert_eq!(*b.released.lock().unwrap(), vec![id.clone()]);
            match out {
                Ok(Outcome::Busy(_)) | Err(Error::Other(_)) => {}
                Err(Error::Unavailable(text)) => assert!(
                    text.starts_with("refused; if the server applies the request late"),
                    "{text}"
                ),
                out => panic!("{out:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_acquire_that_fails_unanswered_gives_back_what_it_may_have_been_granted() {
        let r = Resource::new("r").unwrap();
        let id = LeaseId::generate();
        let req = request(&r, &id);
        let b = scripted(
            vec![Err(Error::Unavailable("timed out".into()))],
            Duration::ZERO,
        );
        let out = run_req(&b, &req).await;
        assert!(matches!(out, Err(Error::Unavailable(_))));
        assert_eq!(*b.released.lock().unwrap(), vec![id.clone()]);
        // The give-back freed nothing, so the attempt may still be applied: the message names
        // the lease and how to free it, on the same line.
        let Err(e) = out else { unreachable!() };
        let text = e.to_string();
        assert!(
            text.starts_with("timed out; if the server applies the request late, lease "),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(": lockrun release r {id} (with the same -b/-c)")),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
        // A give-back that freed the lease settles it: the message is the error alone.
        let b = scripted(
            vec![Err(Error::Unavailable("timed out".into()))],
            Duration::ZERO,
        );
        *b.frees.lock().unwrap() = true;
        let out = run_req(&b, &req).await;
        assert_eq!(out.unwrap_err(), Error::Unavailable("timed out".into()));
        // A refusal that is not about an unanswered request leaves nothing to give back.
        let b = scripted(vec![Err(Error::Config("bad".into()))], Duration::ZERO);
        let out = run_req(&b, &req).await;
        assert!(matches!(out, Err(Error::Config(_))));
        assert!(b.released.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn first_error_is_returned_later_ones_retried() {
        let down = || Err(Error::Unavailable("down".into()));
        let b = scripted(vec![down()], Duration::ZERO);
        assert!(matches!(
            run(&b, Wait::Forever).await,
            Err(Error::Unavailable(_))
        ));
        let b = scripted(
            vec![Ok(false), down(), down(), Ok(true)],
            Duration::from_millis(10),
        );
        assert!(matches!(
            run(&b, Wait::Forever).await,
            Ok(Outcome::Granted(_))
        ));
        let b = scripted(
            vec![Ok(false), Err(Error::Config("bad".into()))],
            Duration::ZERO,
        );
        assert!(matches!(
            run(&b, Wait::Forever).await,
            Err(Error::Config(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_policies() {
        let down = || Err(Error::Unavailable("down".into()));
        let r = Resource::new("r").unwrap();
        let id = LeaseId::generate();
        let req = request(&r, &id);
        // UntilDeadline retries even the first error.
        let b = scripted(vec![down(), down(), Ok(true)], Duration::ZERO);
        let out = acquire(
            &b,
            &req,
            Wait::Forever,
            Retry::UntilDeadline,
            Order::Race,
            &mut |_| {},
        )
        .await;
        assert!(matches!(out, Ok(Outcome::Granted(_))));
        // ...but never past the deadline: the last error is returned then.
        let b = scripted(vec![down(); 1000], Duration::ZERO);
        let start = Instant::now();
        let out = acquire(
            &b,
            &req,
            Wait::AtMost(Duration::from_secs(3)),
            Retry::UntilDeadline,
            Order::Race,
            &mut |_| {},
        )
        .await;
        assert!(matches!(out, Err(Error::Unavailable(_))));
        assert!(
            start.elapsed() >= Duration::from_secs(3) && start.elapsed() < Duration::from_secs(5)
        );
        // FailFast also stops retrying later errors at the deadline.
        let mut answers = vec![Ok(false)];
        answers.extend(vec![down(); 1000]);
        let b = scripted(answers, Duration::from_secs(3600));
        let out = acquire(
            &b,
            &req,
            Wait::AtMost(Duration::from_secs(2)),
            Retry::FailFast,
            Order::Race,
            &mut |_| {},
        )
        .await;
        assert!(matches!(out, Err(Error::Unavailable(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn fair_waiting_needs_a_backend_with_a_line_but_a_single_attempt_does_not() {
        let b = scripted(vec![Ok(true)], Duration::from_secs(1));
        let out = run_in(&b, Wait::Forever, Order::Fair).await;
        assert!(
            matches!(&out, Err(Error::Config(m)) if m.contains("--fair")),
            "{out:?}"
        );
        assert!(b.calls.lock().unwrap().is_empty(), "nothing was tried");
        let out = run_in(&b, Wait::AtMost(Duration::ZERO), Order::Fair).await;
        assert!(matches!(out, Ok(Outcome::Granted(_))), "{out:?}");
    }

    /// A backend whose watch plays back a list of changes, over the scripted answers.
    struct Watched {
        inner: Scripted,
        changes: Mutex<Vec<Change>>,
        /// How many watches were asked for.
        watches: Mutex<usize>,
    }

    struct Playback(Vec<Change>);

    #[async_trait]
    impl Watch for Playback {
        async fn changed(&mut self) -> Result<Change, Error> {
            if self.0.is_empty() {
                std::future::pending().await
            } else {
                Ok(self.0.remove(0))
            }
        }
    }

    #[async_trait]
    impl Backend for Watched {
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquire, Error> {
            self.inner.try_acquire(req).await
        }
        async fn renew(&self, r: &Resource, i: &LeaseId, t: Duration) -> Result<Renewal, Error> {
            self.inner.renew(r, i, t).await
        }
        async fn release(&self, r: &Resource, i: &LeaseId) -> Result<bool, Error> {
            self.inner.release(r, i).await
        }
        async fn current(&self, r: &Resource) -> Result<Option<Lease>, Error> {
            self.inner.current(r).await
        }
        async fn watch(&self, _: &Resource) -> Result<Option<Box<dyn Watch>>, Error> {
            *self.watches.lock().unwrap() += 1;
            let changes = std::mem::take(&mut *self.changes.lock().unwrap());
            Ok(Some(Box::new(Playback(changes))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_that_saw_a_new_holder_spares_the_attempt() {
        let r = Resource::new("r").unwrap();
        let newcomer = lease(&r, &LeaseId::generate());
        let b = Watched {
            inner: scripted(
                vec![Ok(false), Ok(false), Ok(true)],
                Duration::from_secs(60),
            ),
            changes: Mutex::new(vec![
                Change::Held {
                    holder: Some(newcomer.clone()),
                    expires_in: None,
                },
                Change::MayBeFree,
            ]),
            watches: Mutex::new(0),
        };
        let id = LeaseId::generate();
        let req = request(&r, &id);
        let mut holders = Vec::new();
        let out = acquire(
            &b,
            &req,
            Wait::Forever,
            Retry::FailFast,
            Order::Race,
            &mut |e| {
                if let Event::Busy { holder } = e {
                    holders.push(holder.map(|h| h.id.clone()));
                }
            },
        )
        .await
        .unwrap();
        assert!(matches!(out, Outcome::Granted(_)));
        // The first attempt, the one right after subscribing, and the one after the release:
        // none for the change that showed the newcomer holding the resource.
        assert_eq!(b.inner.calls.lock().unwrap().len(), 3);
        // ...which was reported all the same.
        assert_eq!(holders.len(), 3, "{holders:?}");
        assert_eq!(holders[2], Some(newcomer.id));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_raced_a_release_is_made_again_at_once() {
        // The resource was freed between the attempt and the read after it, twice: each time
        // the next attempt goes out at once, with no wait and no watch (on PostgreSQL a watch
        // takes the connection into the line of waiters, and the attempt would need a new one).
        let b = Watched {
            inner: scripted(vec![Ok(true)], Duration::from_secs(60)),
            changes: Mutex::new(vec![]),
            watches: Mutex::new(0),
        };
        *b.inner.free_again.lock().unwrap() = 2;
        let start = Instant::now();
        let out = run(&b, Wait::Forever).await.unwrap();
        assert!(matches!(out, Outcome::Granted(_)), "{out:?}");
        {
            let calls = b.inner.calls.lock().unwrap();
            assert_eq!(calls.len(), 3);
            assert!(calls.iter().all(|&t| t == start), "no waiting");
            assert_eq!(*b.watches.lock().unwrap(), 0, "no watch");
        }
        // A single attempt stays a single attempt.
        *b.inner.free_again.lock().unwrap() = 1;
        let out = run(&b, Wait::AtMost(Duration::ZERO)).await.unwrap();
        assert!(matches!(out, Outcome::Busy(None)), "{out:?}");
        assert_eq!(b.inner.calls.lock().unwrap().len(), 3 + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_keeps_finding_the_resource_freed_is_not_spun_on() {
        // Past FREE_AGAIN_TRIES in a row, the waiter waits as for any busy answer (here the
        // expiry slack), so a backend that always answers so cannot make it spin.
        let b = scripted(vec![Ok(true)], Duration::from_secs(60));
        *b.free_again.lock().unwrap() = 40;
        let start = Instant::now();
        let out = run(&b, Wait::Forever).await.unwrap();
        assert!(matches!(out, Outcome::Granted(_)), "{out:?}");
        let calls = b.calls.lock().unwrap();
        assert_eq!(calls.len(), 41);
        let at_once = calls.iter().filter(|&&t| t == start).count();
        assert!(at_once <= 2 * (FREE_AGAIN_TRIES as usize + 1), "{at_once}");
        assert!(
            Instant::now() - start >= EXPIRY_SLACK * 5,
            "it waited in between"
        );
    }

    #[test]
    fn a_resource_is_one_shell_word() {
        assert_eq!(shell_word("db/migrate-1.2@x"), "db/migrate-1.2@x");
        assert_eq!(shell_word("two words"), "'two words'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$(x)"), "'$(x)'");
        // A resource that reads as an option comes after `--`.
        let req = AcquireRequest {
            resource: &Resource::new("-x").unwrap(),
            id: &LeaseId::parse("abc").unwrap(),
            principal: "p",
            ttl: Duration::from_secs(1),
        };
        assert!(
            unconfirmed("timed out", &req)
                .ends_with(": lockrun release -- -x abc (with the same -b/-c)"),
            "{}",
            unconfirmed("timed out", &req)
        );
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            let j = jitter(Duration::from_millis(1000));
            assert!(j >= Duration::from_millis(750) && j < Duration::from_millis(1250));
        }
    }
}
