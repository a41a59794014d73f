//! The lease record: its on-disk form, clocks, and the decisions of each operation.
//!
//! A record is one JSON object on one line. `sum` is the first 16 hex digits of the SHA-256 of
//! the same object serialized with `sum` empty, so a damaged or hand-edited record is detected
//! instead of trusted. The decisions are pure functions of (stored record, clocks, request), which
//! keeps them testable without a file system.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::name;
use crate::backend::{Acquire, AcquireRequest, Renewal};
use crate::lease::{Lease, LeaseId, Resource};

/// Record format version.
const VERSION: u32 = 1;

/// The on-disk form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    resource: String,
    lease_id: String,
    principal: String,
    token: u64,
    acquired_at_ms: u64,
    expires_at_ms: u64,
    ttl_ms: u64,
    boot_id: String,
    expires_boot_ms: u64,
    released: bool,
    sum: String,
}

/// A validated record of one resource (the resource name is checked on decoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub id: LeaseId,
    pub principal: String,
    /// Fencing token of the latest grant; the next grant gets `token + 1`.
    pub token: u64,
    /// Wall clock, milliseconds since the Unix epoch: for display and for other boots.
    pub acquired_at_ms: u64,
    pub expires_at_ms: u64,
    pub ttl_ms: u64,
    /// The boot that wrote the record, and the expiry on that boot's CLOCK_BOOTTIME.
    pub boot_id: String,
    pub expires_boot_ms: u64,
    /// Set by release. The record stays so that the token keeps increasing.
    pub released: bool,
}

/// The clocks at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Now {
    pub wall_ms: u64,
    pub boot_ms: u64,
    /// Empty when unknown; an empty boot id never matches a record.
    pub boot_id: String,
}

impl Now {
    /// Reads the wall clock, CLOCK_BOOTTIME and the kernel's boot id.
    pub fn read() -> Now {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        match boottime_ms() {
            Some(boot_ms) => Now {
                wall_ms,
                boot_ms,
                boot_id,
            },
            // Without CLOCK_BOOTTIME only the wall clock is left.
            None => Now {
                wall_ms,
                boot_ms: 0,
                boot_id: String::new(),
            },
        }
    }
}

fn boottime_ms() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own and touches nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    Some(secs.saturating_mul(1000).saturating_add(nanos / 1_000_000))
}

impl Record {
    /// Time left before expiry: on this boot's CLOCK_BOOTTIME when the record was written during
    /// this boot (immune to wall-clock steps), else by the wall clock. Zero means expired.
    pub fn remaining(&self, now: &Now) -> Duration {
        let ms = if !now.boot_id.is_empty() && self.boot_id == now.boot_id {
            self.expires_boot_ms.saturating_sub(now.boot_ms)
        } else {
            self.expires_at_ms.saturating_sub(now.wall_ms)
        };
        Duration::from_millis(ms)
    }

    /// Time left when the lease is live (not released, not expired).
    pub fn live(&self, now: &Now) -> Option<Duration> {
        let left = self.remaining(now);
        (!self.released && !left.is_zero()).then_some(left)
    }

    /// The lease this record describes.
    pub fn lease(&self, resource: &Resource) -> Lease {
        Lease {
            resource: resource.clone(),
            id: self.id.clone(),
            principal: self.principal.clone(),
            fencing_token: Some(self.token),
            acquired_at: at_ms(self.acquired_at_ms),
            expires_at: at_ms(self.expires_at_ms),
            ttl: Duration::from_millis(self.ttl_ms),
        }
    }

    fn wire(&self, resource: &Resource) -> Wire {
        Wire {
            v: VERSION,
            resource: resource.as_str().to_owned(),
            lease_id: self.id.as_str().to_owned(),
            principal: self.principal.clone(),
            token: self.token,
            acquired_at_ms: self.acquired_at_ms,
            expires_at_ms: self.expires_at_ms,
            ttl_ms: self.ttl_ms,
            boot_id: self.boot_id.clone(),
            expires_boot_ms: self.expires_boot_ms,
            released: self.released,
            sum: String::new(),
        }
    }

    /// The bytes of the record file.
    pub fn encode(&self, resource: &Resource) -> Result<Vec<u8>, String> {
        let mut wire = self.wire(resource);
        wire.sum = checksum(&wire)?;
        let mut out = serde_json::to_vec(&wire).map_err(|e| e.to_string())?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses and checks the bytes of the record file of `resource`; the error says why the
    /// record cannot be trusted.
    pub fn decode(bytes: &[u8], resource: &Resource) -> Result<Record, String> {
        if bytes.is_empty() {
            return Err("the file is empty".into());
        }
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        if wire.v != VERSION {
            return Err(format!("unsupported record version {}", wire.v));
        }
        let mut unsummed = wire.clone();
        unsummed.sum = String::new();
        if checksum(&unsummed)? != wire.sum {
            return Err("checksum mismatch".into());
        }
        if wire.resource != resource.as_str() {
            return Err(format!(
                "it belongs to resource {:?}",
                crate::lease::escape(&wire.resource)
            ));
        }
        let id = LeaseId::parse(&wire.lease_id).map_err(|e| e.to_string())?;
        if wire.token == 0 {
            return Err("fencing token 0".into());
        }
        Ok(Record {
            id,
            principal: wire.principal,
            token: wire.token,
            acquired_at_ms: wire.acquired_at_ms,
            expires_at_ms: wire.expires_at_ms,
            ttl_ms: wire.ttl_ms,
            boot_id: wire.boot_id,
            expires_boot_ms: wire.expires_boot_ms,
            released: wire.released,
        })
    }
}

fn checksum(wire: &Wire) -> Result<String, String> {
    let body = serde_json::to_vec(wire).map_err(|e| e.to_string())?;
    Ok(name::hex(&name::sha256(&body)[..8]))
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

/// A TTL in whole milliseconds, rounded up, at least 1.
fn ttl_ms(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

/// What an operation decided: leave the record alone, or replace it.
#[derive(Debug)]
pub(super) enum Step<T> {
    Keep(T),
    Write(Record, T),
}

/// Grants when there is no record or it is released or expired; the token goes up by one.
pub(super) fn acquire(
    old: Option<&Record>,
    req: &AcquireRequest<'_>,
    now: &Now,
) -> Result<Step<Acquire>, String> {
    let token = match old {
        Some(rec) => {
            if let Some(left) = rec.live(now) {
                return Ok(Step::Keep(Acquire::Busy {
                    holder: Some(rec.lease(req.resource)),
                    expires_in: Some(left),
                }));
            }
            rec.token
                .checked_add(1)
                .ok_or("the fencing token is exhausted")?
        }
        None => 1,
    };
    let ttl = ttl_ms(req.ttl);
    let rec = Record {
        id: req.id.clone(),
        principal: req.principal.to_owned(),
        token,
        acquired_at_ms: now.wall_ms,
        expires_at_ms: now.wall_ms.saturating_add(ttl),
        ttl_ms: ttl,
        boot_id: now.boot_id.clone(),
        expires_boot_ms: now.boot_ms.saturating_add(ttl),
        released: false,
    };
    let lease = rec.lease(req.resource);
    Ok(Step::Write(rec, Acquire::Acquired(lease)))
}

/// Extends a live lease held by `id`; never resurrects an expired or released one.
pub(super) fn renew(
    old: Option<&Record>,
    resource: &Resource,
    id: &LeaseId,
    ttl: Duration,
    now: &Now,
) -> Step<Renewal> {
    match old {
        Some(rec) if rec.id == *id && rec.live(now).is_some() => {
            let ttl = ttl_ms(ttl);
            let new = Record {
                expires_at_ms: now.wall_ms.saturating_add(ttl),
                ttl_ms: ttl,
                boot_id: now.boot_id.clone(),
                expires_boot_ms: now.boot_ms.saturating_add(ttl),
                ..rec.clone()
            };
            let lease = new.lease(resource);
            Step::Write(new, Renewal::Renewed(lease))
        }
        _ => Step::Keep(Renewal::Lost),
    }
}

/// Marks a live lease held by `id` released; anything else is left alone.
pub(super) fn release(old: Option<&Record>, id: &LeaseId, now: &Now) -> Step<bool> {
    match old {
        Some(rec) if rec.id == *id && rec.live(now).is_some() => Step::Write(
            Record {
                released: true,
                ..rec.clone()
            },
            true,
        ),
        _ => Step::Keep(false),
    }
}

/// The live lease, if any.
pub(super) fn current(old: Option<&Record>, resource: &Resource, now: &Now) -> Option<Lease> {
    old.filter(|rec| rec.live(now).is_some())
        .map(|rec| rec.lease(resource))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res() -> Resource {
        Resource::new("db migrate").unwrap()
    }

    fn now(wall_ms: u64, boot_ms: u64, boot_id: &str) -> Now {
        Now {
            wall_ms,
            boot_ms,
            boot_id: boot_id.into(),
        }
    }

    fn granted(at: &Now, ttl: Duration) -> (Record, LeaseId) {
        let id = LeaseId::generate();
        let r = res();
        let req = AcquireRequest {
            resource: &r,
            id: &id,
            principal: "me@host",
            ttl,
        };
        match acquire(None, &req, at).unwrap() {
            Step::Write(rec, Acquire::Acquired(_)) => (rec, id),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn round_trip_and_checksum() {
        let (rec, _) = granted(&now(1_000, 50, "b1"), Duration::from_secs(10));
        let bytes = rec.encode(&res()).unwrap();
        assert_eq!(Record::decode(&bytes, &res()).unwrap(), rec);
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);

        let text = String::from_utf8(bytes.clone()).unwrap();
        let tampered = text.replace("\"token\":1", "\"token\":7");
        assert_ne!(tampered, text);
        let why = Record::decode(tampered.as_bytes(), &res()).unwrap_err();
        assert!(why.contains("checksum"), "{why}");

        let other = Resource::new("db-migrate").unwrap();
        let why = Record::decode(&bytes, &other).unwrap_err();
        assert!(why.contains("belongs to resource"), "{why}");
    }

    #[test]
    fn torn_and_garbage_records_are_rejected() {
        let (rec, _) = granted(&now(1_000, 50, "b1"), Duration::from_secs(10));
        let bytes = rec.encode(&res()).unwrap();
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 3] {
            assert!(
                Record::decode(&bytes[..cut], &res()).is_err(),
                "cut at {cut}"
            );
        }
        assert!(Record::decode(b"\x00\x01garbage", &res()).is_err());
        assert!(Record::decode(b"{}", &res()).is_err());
        let extra = String::from_utf8(bytes)
            .unwrap()
            .replace("{\"v\"", "{\"x\":1,\"v\"");
        assert!(Record::decode(extra.as_bytes(), &res()).is_err());
    }

    #[test]
    fn same_boot_uses_boottime_not_wall_clock() {
        let t0 = now(1_000_000, 5_000, "boot-a");
        let (rec, _) = granted(&t0, Duration::from_secs(10));
        // The wall clock jumps a day ahead, but only 3 s passed on this boot: still live.
        let later = now(1_000_000 + 86_400_000, 8_000, "boot-a");
        assert_eq!(rec.live(&later), Some(Duration::from_secs(7)));
        // The wall clock jumps back; 11 s passed on this boot: expired.
        let later = now(0, 16_000, "boot-a");
        assert_eq!(rec.live(&later), None);
    }

    #[test]
    fn other_boot_falls_back_to_wall_clock() {
        let t0 = now(1_000_000, 5_000_000, "boot-a");
        let (rec, _) = granted(&t0, Duration::from_secs(10));
        // After a reboot CLOCK_BOOTTIME restarts near zero; the wall clock decides.
        let rebooted = now(1_004_000, 1_000, "boot-b");
        assert_eq!(rec.live(&rebooted), Some(Duration::from_secs(6)));
        let rebooted = now(1_010_000, 1_000, "boot-b");
        assert_eq!(rec.live(&rebooted), None);
        // An unknown boot id never matches, even an unknown one in the record.
        let mut rec = rec;
        rec.boot_id = String::new();
        let unknown = now(1_004_000, 99_999_999, "");
        assert_eq!(rec.live(&unknown), Some(Duration::from_secs(6)));
    }

    #[test]
    fn decisions() {
        let r = res();
        let t0 = now(1_000, 1_000, "b");
        let (rec, id) = granted(&t0, Duration::from_secs(10));
        assert_eq!(rec.token, 1);
        let other = LeaseId::generate();
        let req = AcquireRequest {
            resource: &r,
            id: &other,
            principal: "you@host",
            ttl: Duration::from_secs(5),
        };
        // Busy while live, with the holder and the time left.
        match acquire(Some(&rec), &req, &now(2_000, 4_000, "b")).unwrap() {
            Step::Keep(Acquire::Busy {
                holder: Some(h),
                expires_in,
            }) => {
                assert_eq!(h.id, id);
                assert_eq!(expires_in, Some(Duration::from_secs(7)));
            }
            other => panic!("{other:?}"),
        }
        // Wrong id: nothing changes.
        assert!(matches!(
            renew(Some(&rec), &r, &other, Duration::from_secs(9), &t0),
            Step::Keep(Renewal::Lost)
        ));
        assert!(matches!(
            release(Some(&rec), &other, &t0),
            Step::Keep(false)
        ));
        // Renew keeps id and token, moves expiry.
        let t1 = now(3_000, 3_000, "b");
        let renewed = match renew(Some(&rec), &r, &id, Duration::from_secs(20), &t1) {
            Step::Write(new, Renewal::Renewed(l)) => {
                assert_eq!((l.id.clone(), l.fencing_token), (id.clone(), Some(1)));
                assert_eq!(new.expires_boot_ms, 23_000);
                new
            }
            other => panic!("{other:?}"),
        };
        // Expired: renew and release fail, acquire takes over with token + 1.
        let t2 = now(30_000, 30_000, "b");
        assert!(matches!(
            renew(Some(&renewed), &r, &id, Duration::from_secs(9), &t2),
            Step::Keep(Renewal::Lost)
        ));
        assert!(matches!(
            release(Some(&renewed), &id, &t2),
            Step::Keep(false)
        ));
        assert_eq!(current(Some(&renewed), &r, &t2), None);
        match acquire(Some(&renewed), &req, &t2).unwrap() {
            Step::Write(new, Acquire::Acquired(l)) => {
                assert_eq!((new.token, l.fencing_token), (2, Some(2)));
            }
            other => panic!("{other:?}"),
        }
        // Released: free at once, token still increases.
        let released = match release(Some(&renewed), &id, &t1) {
            Step::Write(new, true) => new,
            other => panic!("{other:?}"),
        };
        assert_eq!(current(Some(&released), &r, &t1), None);
        assert!(matches!(
            release(Some(&released), &id, &t1),
            Step::Keep(false)
        ));
        match acquire(Some(&released), &req, &t1).unwrap() {
            Step::Write(new, Acquire::Acquired(_)) => assert_eq!(new.token, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ttl_rounding() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1_500)), 2);
        assert_eq!(ttl_ms(Duration::MAX), u64::MAX);
    }
}
