//! The value stored under a resource's key, and the rounding of TTLs to etcd's whole seconds.
//!
//! The value is one JSON object:
//!
//! ```json
//! {"lockrun":1,"id":"<lease id>","principal":"ci@build-7","acquired_at_ms":1767225600000,
//!  "ttl_s":30,"etcd_lease":"694d9a1b2c3d4e5f","etcd_ttl_s":30}
//! ```
//!
//! `id` is lockrun's lease id (the caller's 128-bit random token), never the etcd lease id: etcd
//! lease ids are sequential and guessable. `ttl_s` is the TTL the holder asked for, rounded up;
//! `etcd_ttl_s` the TTL etcd granted (etcd raises TTLs below its minimum). `etcd_lease` (hex)
//! must equal the lease the key is attached to. Unknown fields are ignored, so later versions may
//! add some; a different `lockrun` format number is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::backend::Error;
use crate::lease::{escape, Lease, LeaseId, Resource};

/// The value format this code writes and reads.
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    lockrun: u32,
    id: String,
    principal: String,
    acquired_at_ms: u64,
    ttl_s: i64,
    etcd_lease: String,
    etcd_ttl_s: i64,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub id: LeaseId,
    pub principal: String,
    /// The acquiring client's wall clock (etcd has no clock API): for display only.
    pub acquired_at_ms: u64,
    /// The TTL the holder asked for, in whole seconds (rounded up).
    pub ttl_s: i64,
    /// The etcd lease the key is attached to, and the TTL etcd granted it.
    pub etcd_lease: i64,
    pub etcd_ttl_s: i64,
}

impl Record {
    /// The JSON value.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            lockrun: FORMAT,
            id: self.id.as_str().to_owned(),
            principal: self.principal.clone(),
            acquired_at_ms: self.acquired_at_ms,
            ttl_s: self.ttl_s,
            etcd_lease: format!("{:x}", self.etcd_lease),
            etcd_ttl_s: self.etcd_ttl_s,
        };
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Decodes the value of `resource`'s key, which is attached to the etcd lease `key_lease`
    /// (0 for none). Anything that is not a lockrun value, or disagrees with the key's lease, is
    /// [`Error::Corrupt`].
    pub fn decode(resource: &Resource, value: &[u8], key_lease: i64) -> Result<Record, Error> {
        let corrupt = |why: String| {
            Error::Corrupt(format!(
                "etcd key for '{}' {why}; lockrun will not use or overwrite it (delete the key \
                 if it is stale)",
                escape(resource.as_str())
            ))
        };
        let wire: Wire = serde_json::from_slice(value)
            .map_err(|e| corrupt(format!("does not hold a lockrun lease ({e})")))?;
        if wire.lockrun != FORMAT {
            return Err(corrupt(format!(
                "holds a lease in format {} (this lockrun reads format {FORMAT})",
                wire.lockrun
            )));
        }
        let id =
            LeaseId::parse(&wire.id).map_err(|e| corrupt(format!("has a bad lease id: {e}")))?;
        let etcd_lease = u64::from_str_radix(&wire.etcd_lease, 16)
            .map(|l| l as i64)
            .map_err(|_| corrupt("has a bad etcd lease id".into()))?;
        if key_lease == 0 {
            return Err(corrupt(
                "is not attached to an etcd lease, so it would never expire".into(),
            ));
        }
        if etcd_lease != key_lease {
            return Err(corrupt(format!(
                "is attached to etcd lease {key_lease:x}, but its value names {etcd_lease:x}"
            )));
        }
        if wire.ttl_s < 1 || wire.etcd_ttl_s < 1 {
            return Err(corrupt("has a TTL below one second".into()));
        }
        Ok(Record {
            id,
            principal: wire.principal,
            acquired_at_ms: wire.acquired_at_ms,
            ttl_s: wire.ttl_s,
            etcd_lease,
            etcd_ttl_s: wire.etcd_ttl_s,
        })
    }

    /// The lease this record describes: `token` is the key's create revision, `granted` the TTL
    /// of the etcd lease.
    pub fn lease(
        &self,
        resource: &Resource,
        token: i64,
        expires_at: SystemTime,
        granted: Duration,
    ) -> Lease {
        Lease {
            resource: resource.clone(),
            id: self.id.clone(),
            principal: self.principal.clone(),
            fencing_token: u64::try_from(token).ok(),
            acquired_at: UNIX_EPOCH + Duration::from_millis(self.acquired_at_ms),
            expires_at,
            ttl: granted,
        }
    }
}

/// A TTL in etcd's whole seconds: rounded up, at least 1 s. Rounding up keeps lockrun's local
/// deadline (computed from the TTL asked for) no later than the server's expiry.
pub(super) fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

/// Seconds from etcd as a duration (negative means none).
pub(super) fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// Milliseconds since the Unix epoch.
pub(super) fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            id: LeaseId::generate(),
            principal: "me@host \u{1b}".into(),
            acquired_at_ms: 1_767_225_600_000,
            ttl_s: 30,
            etcd_lease: 0x694d_9a1b_2c3d_4e5f,
            etcd_ttl_s: 30,
        }
    }

    fn res() -> Resource {
        Resource::new("deploy").unwrap()
    }

    #[test]
    fn round_trip() {
        let r = record();
        let bytes = r.encode();
        assert_eq!(Record::decode(&res(), &bytes, r.etcd_lease).unwrap(), r);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains("\"etcd_lease\":\"694d9a1b2c3d4e5f\""),
            "{text}"
        );
    }

    #[test]
    fn foreign_values_are_corrupt() {
        let r = record();
        let good = r.encode();
        let cases: Vec<(Vec<u8>, i64)> = vec![
            (b"hello".to_vec(), r.etcd_lease),
            (b"{}".to_vec(), r.etcd_lease),
            (b"\xff\xfe".to_vec(), r.etcd_lease),
            (good.clone(), 0),
            (good.clone(), 42),
            (
                String::from_utf8(good.clone())
                    .unwrap()
                    .replace("\"lockrun\":1", "\"lockrun\":2")
                    .into_bytes(),
                r.etcd_lease,
            ),
            (
                String::from_utf8(good)
                    .unwrap()
                    .replace(r.id.as_str(), "bad id")
                    .into_bytes(),
                r.etcd_lease,
            ),
        ];
        for (value, lease) in cases {
            match Record::decode(&res(), &value, lease) {
                Err(Error::Corrupt(m)) => assert!(m.contains("'deploy'"), "{m}"),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(&value)),
            }
        }
    }

    #[test]
    fn ttls_round_up_to_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_secs(Duration::from_secs(30)), 30);
        assert_eq!(ttl_secs(Duration::MAX), i64::MAX);
        assert_eq!(secs(-1), Duration::ZERO);
        assert_eq!(secs(7), Duration::from_secs(7));
    }

    #[test]
    fn lease_view() {
        let r = record();
        let now = SystemTime::now();
        let l = r.lease(
            &res(),
            42,
            now + Duration::from_secs(10),
            Duration::from_secs(30),
        );
        assert_eq!(l.fencing_token, Some(42));
        assert_eq!(l.ttl, Duration::from_secs(30));
        assert!(l.expires_at > l.acquired_at);
        assert_eq!(epoch_ms(l.acquired_at), r.acquired_at_ms);
    }
}
