//! The lease record and the fencing-token reservation: their on-disk forms, clocks, and the
//! decisions of each operation.
//!
//! A record or reservation is one JSON object on one line. `sum` is the first 16 hex digits of the
//! SHA-256 of the same object serialized with `sum` empty, so a damaged or hand-edited file is
//! detected instead of trusted. The decisions are pure functions of (stored record, reservation,
//! clocks, request), which keeps them testable without a file system.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::name;
use crate::backend::{Acquire, AcquireRequest, Renewal};
use crate::lease::{Lease, LeaseId, Resource};

/// Record and reservation format version.
const VERSION: u32 = 1;

/// How many fencing tokens one durable reservation write covers. Only about one grant in `BLOCK`
/// pays for fsyncs, and a power loss makes the tokens skip ahead by at most `BLOCK`.
pub(super) const BLOCK: u64 = 1024;

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

/// The on-disk form of a reservation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservationWire {
    v: u32,
    resource: String,
    reserved: u64,
    boot_id: String,
    sum: String,
}

/// A validated record of one resource (the resource name is checked on decoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub id: LeaseId,
    pub principal: String,
    /// Fencing token of the latest grant; the next grant gets a higher one (see [`next_token`]).
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

/// The highest fencing token that may be issued for a resource. It is only ever written durably
/// (fsynced), and before any grant that uses a token above it, so it is an upper bound of every
/// token ever handed out, whatever a power loss does to the (not fsynced) record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reservation {
    pub reserved: u64,
    /// The boot that wrote the reservation; empty when unknown, which never matches.
    pub boot_id: String,
}

/// The clocks at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Now {
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
        // The boot id cannot change while this process lives: read it once.
        static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let boot_id = BOOT_ID
            .get_or_init(|| {
                std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default()
            })
            .clone();
        // A time namespace (`unshare -T --boottime`, a container restored by CRIU) shifts
        // CLOCK_BOOTTIME but keeps the boot id: read the host's clock, which every process of
        // this boot shares, by taking the namespace's offset off.
        static OFFSET_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        let offset_ms = *OFFSET_MS.get_or_init(|| {
            std::fs::read_to_string("/proc/self/timens_offsets")
                .ok()
                .and_then(|text| boottime_offset_ms(&text))
                .unwrap_or(0)
        });
        match boottime_ms() {
            Some(boot_ms) => Now {
                wall_ms,
                boot_ms: boot_ms.saturating_add_signed(-offset_ms),
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

/// The CLOCK_BOOTTIME offset of this process's time namespace, in milliseconds, from the text
/// of `/proc/self/timens_offsets` (`boottime <seconds> <nanoseconds>`).
fn boottime_offset_ms(text: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "boottime" {
            return None;
        }
        let secs: i64 = words.next()?.parse().ok()?;
        let nanos: i64 = words.next()?.parse().ok()?;
        Some(secs.saturating_mul(1000).saturating_add(nanos / 1_000_000))
    })
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
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| unreadable(bytes, e))?;
        if wire.v != VERSION {
            return Err(other_version(wire.v));
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

impl Reservation {
    fn wire(&self, resource: &Resource) -> ReservationWire {
        ReservationWire {
            v: VERSION,
            resource: resource.as_str().to_owned(),
            reserved: self.reserved,
            boot_id: self.boot_id.clone(),
            sum: String::new(),
        }
    }

    /// The bytes of the reservation file.
    pub fn encode(&self, resource: &Resource) -> Result<Vec<u8>, String> {
        let mut wire = self.wire(resource);
        wire.sum = checksum(&wire)?;
        let mut out = serde_json::to_vec(&wire).map_err(|e| e.to_string())?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses and checks the bytes of the reservation file of `resource`; the error says why the
    /// reservation cannot be trusted.
    pub fn decode(bytes: &[u8], resource: &Resource) -> Result<Reservation, String> {
        if bytes.is_empty() {
            return Err("the file is empty".into());
        }
        let wire: ReservationWire =
            serde_json::from_slice(bytes).map_err(|e| unreadable(bytes, e))?;
        if wire.v != VERSION {
            return Err(other_version(wire.v));
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
        if wire.reserved == 0 {
            return Err("reserved token 0".into());
        }
        Ok(Reservation {
            reserved: wire.reserved,
            boot_id: wire.boot_id,
        })
    }
}

fn checksum<W: Serialize>(wire: &W) -> Result<String, String> {
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

/// `Busy` when the stored lease is live; `None` when the resource can be granted (no record, or
/// it is released or expired).
pub(super) fn busy(old: Option<&Record>, resource: &Resource, now: &Now) -> Option<Acquire> {
    let rec = old?;
    let left = rec.live(now)?;
    Some(Acquire::Busy {
        holder: Some(rec.lease(resource)),
        expires_in: Some(left),
    })
}

/// The fencing token of the next grant, and the reservation to write durably before using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NextToken {
    pub token: u64,
    /// `Some` when `token` is above the stored reservation (or there is none).
    pub reserve: Option<Reservation>,
}

/// Picks the next fencing token.
///
/// Within one boot the record, written without fsync but through the page cache, holds the latest
/// token, so the next is `record + 1`. A power loss can roll the record back, but never past the
/// durable reservation, which bounds every token ever issued. So unless both the record and the
/// reservation were written during this boot (a grant of this boot has already moved past the
/// reservation; a reboot since changes the boot id), count on from `max(record, reservation)`.
/// Checking the reservation's boot id as well matters because a renewal stamps the current boot
/// id onto a record that may have been rolled back by the power loss.
///
/// Without a reservation (first use, or a directory written by a version that fsynced every
/// record) the record is trusted. Whenever the new token exceeds the reservation, the caller must
/// first durably store `reserve`, which covers the next [`BLOCK`] tokens.
pub(super) fn next_token(
    old: Option<&Record>,
    reservation: Option<&Reservation>,
    now: &Now,
) -> Result<NextToken, String> {
    let this_boot = |boot_id: &str| !now.boot_id.is_empty() && boot_id == now.boot_id;
    let last = old.map_or(0, |rec| rec.token);
    let (base, reserved) = match reservation {
        None => (last, 0),
        Some(res) => {
            let current = this_boot(&res.boot_id) && old.is_some_and(|rec| this_boot(&rec.boot_id));
            let base = if current {
                last
            } else {
                last.max(res.reserved)
            };
            (base, res.reserved)
        }
    };
    let token = base
        .checked_add(1)
        .ok_or("the fencing token is exhausted")?;
    let reserve = (token > reserved).then(|| Reservation {
        reserved: token.saturating_add(BLOCK - 1),
        boot_id: now.boot_id.clone(),
    });
    Ok(NextToken { token, reserve })
}

/// The record of a new grant with fencing token `token`, and the lease it describes.
pub(super) fn grant(token: u64, req: &AcquireRequest<'_>, now: &Now) -> (Record, Lease) {
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
    (rec, lease)
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

/// The resource name a record file says it belongs to, without checking anything else (for
/// listing; every use then reads the record properly).
pub(super) fn stored_resource(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        resource: String,
    }
    serde_json::from_slice::<Peek>(bytes)
        .ok()
        .map(|p| p.resource)
}

/// How the reason for a file in another version of the format begins.
pub const OTHER_VERSION: &str = "written in version";

fn other_version(v: u32) -> String {
    format!("{OTHER_VERSION} {v} of the format, where this lockrun reads version {VERSION} (a newer lockrun wrote it?)")
}

/// Why a stored file could not be read: not JSON at all; written by another version of lockrun
/// (a version other than [`VERSION`], whose fields this one does not know); or JSON of another
/// shape (`{}`). The version is looked at only once the file has failed to parse, so that
/// reading a good record parses it once.
fn unreadable(bytes: &[u8], e: serde_json::Error) -> String {
    #[derive(Deserialize)]
    struct Versioned {
        v: u32,
    }
    match e.classify() {
        serde_json::error::Category::Data => match serde_json::from_slice::<Versioned>(bytes) {
            Ok(Versioned { v }) if v != VERSION => other_version(v),
            _ => format!("not a lockrun record: {e}"),
        },
        _ => format!("not JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_namespace_offsets() {
        let text = "monotonic           0         0\nboottime         3600   5000000\n";
        assert_eq!(boottime_offset_ms(text), Some(3_600_005));
        assert_eq!(boottime_offset_ms("boottime -20 0\n"), Some(-20_000));
        assert_eq!(boottime_offset_ms("monotonic 5 0\n"), None);
    }

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

    /// Acquire as the backend runs it, with no reservation on file.
    fn acquire(
        old: Option<&Record>,
        req: &AcquireRequest<'_>,
        now: &Now,
    ) -> Result<Step<Acquire>, String> {
        if let Some(b) = busy(old, req.resource, now) {
            return Ok(Step::Keep(b));
        }
        let next = next_token(old, None, now)?;
        let (rec, lease) = grant(next.token, req, now);
        Ok(Step::Write(rec, Acquire::Acquired(lease)))
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

    fn record(token: u64, boot_id: &str) -> Record {
        let (mut rec, _) = granted(&now(1_000, 1_000, boot_id), Duration::from_secs(1));
        rec.token = token;
        rec
    }

    fn reservation(reserved: u64, boot_id: &str) -> Reservation {
        Reservation {
            reserved,
            boot_id: boot_id.into(),
        }
    }

    fn next(old: Option<&Record>, res: Option<&Reservation>, now: &Now) -> (u64, Option<u64>) {
        let n = next_token(old, res, now).unwrap();
        if let Some(r) = &n.reserve {
            assert_eq!(r.boot_id, now.boot_id);
            assert!(r.reserved >= n.token);
        }
        (n.token, n.reserve.map(|r| r.reserved))
    }

    #[test]
    fn reservation_round_trip_and_checks() {
        let r = res();
        let good = reservation(2048, "b1");
        let bytes = good.encode(&r).unwrap();
        assert_eq!(Reservation::decode(&bytes, &r).unwrap(), good);
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let tampered = text.replace("\"reserved\":2048", "\"reserved\":4096");
        assert_ne!(tampered, text);
        let why = Reservation::decode(tampered.as_bytes(), &r).unwrap_err();
        assert!(why.contains("checksum"), "{why}");
        let why = Reservation::decode(&bytes, &Resource::new("other").unwrap()).unwrap_err();
        assert!(why.contains("belongs to resource"), "{why}");
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 3] {
            assert!(Reservation::decode(&bytes[..cut], &r).is_err(), "{cut}");
        }
        let zero = reservation(0, "b1").encode(&r).unwrap();
        assert!(Reservation::decode(&zero, &r).unwrap_err().contains("0"));
        // A record is not a reservation, nor the other way round.
        let rec = record(5, "b1").encode(&r).unwrap();
        assert!(Reservation::decode(&rec, &r).is_err());
        assert!(Record::decode(&bytes, &r).is_err());
    }

    #[test]
    fn tokens_are_reserved_a_block_at_a_time() {
        let t = now(1_000, 1_000, "b");
        // First use: reserve a block.
        assert_eq!(next(None, None, &t), (1, Some(BLOCK)));
        // Inside the block: no reservation write.
        let res = reservation(BLOCK, "b");
        for last in [1, 2, BLOCK - 1] {
            assert_eq!(
                next(Some(&record(last, "b")), Some(&res), &t),
                (last + 1, None)
            );
        }
        // The block is used up: the next grant reserves the following block first.
        assert_eq!(
            next(Some(&record(BLOCK, "b")), Some(&res), &t),
            (BLOCK + 1, Some(2 * BLOCK))
        );
        // Count the reservation writes over many grants.
        let mut stored = None::<Reservation>;
        let mut rec = None::<Record>;
        let mut writes = 0;
        for expect in 1..=3 * BLOCK + 1 {
            let n = next_token(rec.as_ref(), stored.as_ref(), &t).unwrap();
            assert_eq!(n.token, expect);
            if let Some(r) = n.reserve {
                writes += 1;
                stored = Some(r);
            }
            rec = Some(record(n.token, "b"));
        }
        assert_eq!(writes, 4);
        assert_eq!(stored.unwrap().reserved, 4 * BLOCK);
    }

    #[test]
    fn legacy_record_without_reservation_is_trusted() {
        // Written by a version that fsynced every record: count on from it, and reserve.
        for boot in ["b", "old", ""] {
            let t = now(1_000, 1_000, "b");
            assert_eq!(
                next(Some(&record(41, boot)), None, &t),
                (42, Some(42 + BLOCK - 1))
            );
        }
    }

    #[test]
    fn after_a_reboot_tokens_jump_past_the_reservation() {
        let t = now(1_000, 1_000, "new");
        // The record survived as it was, or was rolled back: either way go past the reservation.
        for last in [BLOCK, 5, 1] {
            assert_eq!(
                next(
                    Some(&record(last, "old")),
                    Some(&reservation(BLOCK, "old")),
                    &t
                ),
                (BLOCK + 1, Some(2 * BLOCK))
            );
        }
        // The record was lost altogether.
        assert_eq!(
            next(None, Some(&reservation(BLOCK, "old")), &t),
            (BLOCK + 1, Some(2 * BLOCK))
        );
        // A renewal after the reboot stamped the new boot id onto a rolled-back record; the
        // reservation still says the last jump was in another boot.
        assert_eq!(
            next(
                Some(&record(5, "new")),
                Some(&reservation(BLOCK, "old")),
                &t
            ),
            (BLOCK + 1, Some(2 * BLOCK))
        );
        // A record from another boot with a reservation of this one (another host on a shared
        // directory, or a hand-made mess): jump anyway; skipping is always safe.
        assert_eq!(
            next(
                Some(&record(5, "old")),
                Some(&reservation(BLOCK, "new")),
                &t
            ),
            (BLOCK + 1, Some(2 * BLOCK))
        );
        // The record lost while the reservation is of this boot.
        assert_eq!(
            next(None, Some(&reservation(BLOCK, "new")), &t),
            (BLOCK + 1, Some(2 * BLOCK))
        );
        // The record is ahead of the reservation (an older version granted meanwhile).
        assert_eq!(
            next(
                Some(&record(5000, "old")),
                Some(&reservation(BLOCK, "old")),
                &t
            ),
            (5001, Some(5000 + BLOCK))
        );
        // An unknown boot id never matches: every grant jumps, and stays correct.
        let unknown = now(1_000, 1_000, "");
        assert_eq!(
            next(
                Some(&record(5, "")),
                Some(&reservation(BLOCK, "")),
                &unknown
            ),
            (BLOCK + 1, Some(2 * BLOCK))
        );
    }

    #[test]
    fn token_exhaustion() {
        let t = now(1_000, 1_000, "b");
        let why = next_token(Some(&record(u64::MAX, "b")), None, &t).unwrap_err();
        assert!(why.contains("exhausted"), "{why}");
        let why = next_token(
            Some(&record(1, "old")),
            Some(&reservation(u64::MAX, "old")),
            &t,
        )
        .unwrap_err();
        assert!(why.contains("exhausted"), "{why}");
        // The last block is cut short instead of overflowing.
        assert_eq!(
            next(Some(&record(u64::MAX - 10, "b")), None, &t),
            (u64::MAX - 9, Some(u64::MAX))
        );
    }

    #[test]
    fn ttl_rounding() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1_500)), 2);
        assert_eq!(ttl_ms(Duration::MAX), u64::MAX);
    }
}
