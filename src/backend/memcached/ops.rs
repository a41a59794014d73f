//! The lease operations as sequences of memcached commands on one connection.
//!
//! Nothing here writes without a condition: `add` only creates, `cas` only replaces the exact
//! item that was read and checked. An item that is not a lockrun record is reported as
//! [`Fault::Corrupt`] and never written.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::proto::{Cas, Conn, Item, ProtoError};
use super::record::{now_ms, Held, Record, FLAGS};
use super::takeover::{judge, Observations, Verdict};
use crate::backend::{Acquire, Renewal};
use crate::lease::{Lease, LeaseId, Resource};

/// memcached reads an expiry above 30 days as an absolute unix time.
pub(super) const MAX_RELATIVE_EXPTIME: u64 = 30 * 24 * 3600;
/// A tombstone's expiry: memcached drops it at its next clock tick, within a second.
const TOMBSTONE_EXPTIME: u32 = 1;
/// How often one call re-reads an item that changed between its read and its write.
const ATTEMPTS: usize = 4;

/// Why an operation failed.
#[derive(Debug)]
pub(super) enum Fault {
    Proto(ProtoError),
    /// The item under `key` is not a lockrun record (or the counter not a number).
    Corrupt {
        key: String,
        why: String,
    },
    /// The item changed under every attempt.
    Contended,
}

impl From<ProtoError> for Fault {
    fn from(e: ProtoError) -> Self {
        Fault::Proto(e)
    }
}

type Result<T> = std::result::Result<T, Fault>;

/// One resource's keys and the state the takeover rules need.
pub(super) struct Place<'a> {
    pub resource: &'a Resource,
    pub lease_key: &'a str,
    pub token_key: &'a str,
    pub skew: Option<Duration>,
    pub seen: &'a Observations,
}

/// The memcached expiry for a lease of `ttl`: whole seconds rounded up, plus one, because
/// memcached's clock ticks once a second and may drop a key up to a second before its exptime.
/// `None` when that reaches 30 days, which memcached would read as a date.
pub(super) fn exptime(ttl: Duration) -> Option<u32> {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0) + 1);
    (secs <= MAX_RELATIVE_EXPTIME).then_some(secs as u32)
}

impl Place<'_> {
    fn read(&self, item: &Item) -> Result<Record> {
        let why = if item.data.len() < item.len {
            Err(format!("a value of {} bytes", item.len))
        } else {
            Record::parse(self.resource, item.flags, &item.data)
        };
        why.map_err(|why| Fault::Corrupt {
            key: self.lease_key.to_owned(),
            why,
        })
    }

    async fn get<S: Io>(&self, c: &mut Conn<S>) -> Result<Option<(Record, u64)>> {
        match c.gets(self.lease_key).await? {
            None => Ok(None),
            Some(item) => Ok(Some((self.read(&item)?, item.cas))),
        }
    }
}

pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Io for S {}

/// `add` the lease; if the key exists, take it over with `cas` when it is released, ours, or
/// expired by the takeover rules, else report who holds it.
pub(super) async fn acquire<S: Io>(
    c: &mut Conn<S>,
    p: &Place<'_>,
    id: &LeaseId,
    principal: &str,
    ttl: Duration,
    exptime: u32,
) -> Result<Acquire> {
    // The token of a record being taken over: a fencing counter evicted meanwhile starts again
    // above it, not at 0.
    let mut floor = 0;
    for _ in 0..ATTEMPTS {
        let mut mine = Held::new(id, principal, ttl);
        if c.add(p.lease_key, FLAGS, exptime, &mine.encode(p.resource))
            .await?
        {
            return grant(c, p, mine, exptime, floor).await;
        }
        let Some((record, cas)) = p.get(c).await? else {
            continue; // expired between the add and the read
        };
        if let Record::Held(held) = &record {
            floor = floor.max(held.token.unwrap_or(0));
            if held.id == *id {
                // Our own earlier attempt whose answer was lost: granted again from now.
                mine.token = held.token;
            } else {
                // CAS uniques start again when memcached restarts: the lease id and expiry make
                // a version that a restarted server cannot hand out again for another lease.
                let version = format!("{cas}:{}:{}", held.id.as_str(), held.expires_ms);
                let seen = p.seen.observe(p.lease_key, &version);
                if let Verdict::Wait(left) = judge(held, now_ms(), p.skew, seen) {
                    return Ok(Acquire::Busy {
                        holder: Some(held.lease(p.resource)),
                        expires_in: Some(left),
                    });
                }
                tracing::debug!(
                    "taking over {} from lease {:?}: expired by lockrun's rules",
                    p.lease_key,
                    held.id
                );
            }
        }
        match c
            .cas(p.lease_key, FLAGS, exptime, &mine.encode(p.resource), cas)
            .await?
        {
            Cas::Stored => return grant(c, p, mine, exptime, floor).await,
            Cas::Exists | Cas::NotFound => continue,
        }
    }
    busy_now(c, p).await
}

/// The key is ours: draw the fencing token (after winning, so tokens of successive holders
/// increase) and store it in the record.
async fn grant<S: Io>(
    c: &mut Conn<S>,
    p: &Place<'_>,
    mine: Held,
    exptime: u32,
    floor: u64,
) -> Result<Acquire> {
    p.seen.forget(p.lease_key);
    let token = match mine.token {
        Some(t) => t,
        None => match next_token(c, p, floor).await {
            Ok(t) => t,
            // The key is ours, with no token yet: given back, or it would hold the resource
            // for its TTL under an id nobody was given (review).
            Err(e @ Fault::Corrupt { .. }) => {
                let _ = release(c, p, &mine.id).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        },
    };
    for _ in 0..ATTEMPTS {
        let Some((Record::Held(held), cas)) = p.get(c).await? else {
            return busy_now(c, p).await; // dropped (evicted) the moment it was granted
        };
        if held.id != mine.id {
            return busy_now(c, p).await;
        }
        let granted = Held {
            token: Some(token),
            ..held
        };
        match c
            .cas(
                p.lease_key,
                FLAGS,
                exptime,
                &granted.encode(p.resource),
                cas,
            )
            .await?
        {
            Cas::Stored => return Ok(Acquire::Acquired(granted.lease(p.resource))),
            Cas::Exists => continue,
            Cas::NotFound => return busy_now(c, p).await,
        }
    }
    Err(Fault::Contended)
}

/// `incr` the counter, creating it at `floor` (no expiry) when it is missing: 0 for a resource
/// never seen, or the token of the record being taken over, which outlived an evicted counter.
async fn next_token<S: Io>(c: &mut Conn<S>, p: &Place<'_>, floor: u64) -> Result<u64> {
    for _ in 0..2 {
        match c.incr(p.token_key, 1).await {
            Ok(Some(t)) => return Ok(t),
            Ok(None) => {
                // Another contender's concurrent add is as good as ours.
                c.add(p.token_key, FLAGS, 0, floor.to_string().as_bytes())
                    .await?;
            }
            Err(ProtoError::Client(m)) => {
                return Err(Fault::Corrupt {
                    key: p.token_key.to_owned(),
                    why: format!("the fencing counter is not a number: {m}"),
                })
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Fault::Contended)
}

/// A busy answer with whoever holds the key now.
async fn busy_now<S: Io>(c: &mut Conn<S>, p: &Place<'_>) -> Result<Acquire> {
    let holder = current(c, p).await?;
    Ok(Acquire::Busy {
        holder,
        expires_in: None,
    })
}

/// Extends the lease when `id` holds it: `gets`, check the id, `cas` the new expiry.
pub(super) async fn renew<S: Io>(
    c: &mut Conn<S>,
    p: &Place<'_>,
    id: &LeaseId,
    ttl: Duration,
    exptime: u32,
) -> Result<Renewal> {
    for _ in 0..ATTEMPTS {
        let held = match p.get(c).await? {
            // Past its expiry the lease has ended, though memcached (whole seconds, plus one)
            // may keep the key a little longer: a renewal never brings it back.
            Some((Record::Held(held), cas)) if held.id == *id && held.expires_ms > now_ms() => {
                (held.renewed(ttl), cas)
            }
            _ => return Ok(Renewal::Lost),
        };
        let (renewed, cas) = held;
        match c
            .cas(
                p.lease_key,
                FLAGS,
                exptime,
                &renewed.encode(p.resource),
                cas,
            )
            .await?
        {
            Cas::Stored => return Ok(Renewal::Renewed(renewed.lease(p.resource))),
            Cas::Exists => continue,
            Cas::NotFound => return Ok(Renewal::Lost),
        }
    }
    Err(Fault::Contended)
}

/// Ends the lease when `id` holds it: `gets`, check the id, `cas` a tombstone that memcached
/// drops within a second (the text protocol has no conditional delete).
pub(super) async fn release<S: Io>(c: &mut Conn<S>, p: &Place<'_>, id: &LeaseId) -> Result<bool> {
    for _ in 0..ATTEMPTS {
        let (held, cas) = match p.get(c).await? {
            Some((Record::Held(held), cas)) if held.id == *id => (held, cas),
            _ => return Ok(false),
        };
        let tombstone = held.tombstone(p.resource);
        // Past its expiry too (nobody else can hold it under this id): the answer is whether
        // it still held the resource.
        let live = held.expires_ms > now_ms();
        match c
            .cas(p.lease_key, FLAGS, TOMBSTONE_EXPTIME, &tombstone, cas)
            .await?
        {
            Cas::Stored => return Ok(live),
            Cas::Exists => continue,
            Cas::NotFound => return Ok(false),
        }
    }
    Err(Fault::Contended)
}

/// The lease the key holds, if any: a tombstone holds none, nor does a record past its expiry.
pub(super) async fn current<S: Io>(c: &mut Conn<S>, p: &Place<'_>) -> Result<Option<Lease>> {
    Ok(match p.get(c).await? {
        Some((Record::Held(held), _)) if held.expires_ms > now_ms() => Some(held.lease(p.resource)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exptime_rounds_up_and_adds_a_tick() {
        assert_eq!(exptime(Duration::ZERO), Some(1));
        assert_eq!(exptime(Duration::from_millis(1)), Some(2));
        assert_eq!(exptime(Duration::from_secs(1)), Some(2));
        assert_eq!(exptime(Duration::from_millis(1500)), Some(3));
        assert_eq!(exptime(Duration::from_secs(30)), Some(31));
        let limit = Duration::from_secs(MAX_RELATIVE_EXPTIME);
        assert_eq!(
            exptime(limit - Duration::from_secs(1)),
            Some(MAX_RELATIVE_EXPTIME as u32)
        );
        assert_eq!(exptime(limit - Duration::from_millis(500)), None);
        assert_eq!(exptime(limit), None);
        assert_eq!(exptime(Duration::MAX), None);
    }
}
