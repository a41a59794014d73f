//! The value stored under a lease key: a small JSON object, and its checks on every read.
//!
//! A held lease:
//!
//! ```json
//! {"lockrun":1,"resource":"deploy","id":"7d7b…","principal":"ci@build1","token":42,
//!  "acquired_ms":1767225600000,"expires_ms":1767225630000,"ttl_ms":30000}
//! ```
//!
//! `token` is `null` for the instant between winning the key and drawing the fencing token. A
//! release leaves a tombstone that memcached drops within a second, and that acquire treats as
//! free: `{"lockrun":1,"resource":"deploy","released":true,"token":42}`. The times are the
//! writer's wall clock, for people and for takeover rule (a); memcached's own expiry is the
//! server's clock. Every item is stored with the flags [`FLAGS`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::lease::{Lease, LeaseId, Resource};

/// The item flags of lockrun's items ("LR").
pub(super) const FLAGS: u32 = 0x4c52;
/// The record format version.
const FORMAT: u32 = 1;

/// A held lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Held {
    pub id: LeaseId,
    pub principal: String,
    pub token: Option<u64>,
    pub acquired_ms: u64,
    pub expires_ms: u64,
    pub ttl_ms: u64,
}

/// What a lease key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record {
    Held(Held),
    /// Released; free to take.
    Released,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    lockrun: u32,
    resource: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    released: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    principal: Option<String>,
    #[serde(default)]
    token: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acquired_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
}

impl Held {
    /// A new grant to `id`, starting now on this host's clock.
    pub fn new(id: &LeaseId, principal: &str, ttl: Duration) -> Held {
        let now = now_ms();
        Held {
            id: id.clone(),
            principal: principal.to_owned(),
            token: None,
            acquired_ms: now,
            expires_ms: now.saturating_add(millis(ttl)),
            ttl_ms: millis(ttl),
        }
    }

    /// The same lease, extended to `ttl` from now.
    pub fn renewed(&self, ttl: Duration) -> Held {
        Held {
            expires_ms: now_ms().saturating_add(millis(ttl)),
            ttl_ms: millis(ttl),
            ..self.clone()
        }
    }

    /// The stored value.
    pub fn encode(&self, resource: &Resource) -> Vec<u8> {
        encode(&Wire {
            lockrun: FORMAT,
            resource: resource.as_str().to_owned(),
            released: false,
            id: Some(self.id.as_str().to_owned()),
            principal: Some(self.principal.clone()),
            token: self.token,
            acquired_ms: Some(self.acquired_ms),
            expires_ms: Some(self.expires_ms),
            ttl_ms: Some(self.ttl_ms),
        })
    }

    /// The tombstone a release of this lease leaves.
    pub fn tombstone(&self, resource: &Resource) -> Vec<u8> {
        encode(&Wire {
            lockrun: FORMAT,
            resource: resource.as_str().to_owned(),
            released: true,
            id: None,
            principal: None,
            token: self.token,
            acquired_ms: None,
            expires_ms: None,
            ttl_ms: None,
        })
    }

    pub fn lease(&self, resource: &Resource) -> Lease {
        Lease {
            resource: resource.clone(),
            id: self.id.clone(),
            principal: self.principal.clone(),
            fencing_token: self.token,
            acquired_at: UNIX_EPOCH + Duration::from_millis(self.acquired_ms),
            expires_at: UNIX_EPOCH + Duration::from_millis(self.expires_ms),
            ttl: Duration::from_millis(self.ttl_ms),
        }
    }
}

fn encode(wire: &Wire) -> Vec<u8> {
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_vec(wire).unwrap_or_default()
}

impl Record {
    /// Reads an item's value back; the error says why it is not a lockrun lease of `resource`.
    pub fn parse(resource: &Resource, flags: u32, data: &[u8]) -> Result<Record, String> {
        if flags != FLAGS {
            return Err(format!("item flags {flags}, not lockrun's {FLAGS}"));
        }
        let wire: Wire = serde_json::from_slice(data).map_err(|e| {
            let head = String::from_utf8_lossy(&data[..data.len().min(40)]).into_owned();
            format!("{e}; the value starts {:?}", crate::lease::escape(&head))
        })?;
        if wire.lockrun != FORMAT {
            return Err(format!("record format {}, expected {FORMAT}", wire.lockrun));
        }
        if wire.resource != resource.as_str() {
            return Err(format!(
                "it belongs to resource '{}'",
                crate::lease::escape(&wire.resource)
            ));
        }
        if wire.released {
            return Ok(Record::Released);
        }
        let missing = |field: &str| format!("no '{field}'");
        let id = wire.id.ok_or_else(|| missing("id"))?;
        Ok(Record::Held(Held {
            id: LeaseId::parse(&id).map_err(|e| e.0)?,
            principal: wire.principal.ok_or_else(|| missing("principal"))?,
            token: wire.token,
            acquired_ms: wire.acquired_ms.ok_or_else(|| missing("acquired_ms"))?,
            expires_ms: wire.expires_ms.ok_or_else(|| missing("expires_ms"))?,
            ttl_ms: wire.ttl_ms.ok_or_else(|| missing("ttl_ms"))?,
        }))
    }
}

/// This host's wall clock in milliseconds since the epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str) -> Resource {
        Resource::new(name).unwrap()
    }

    #[test]
    fn round_trip() {
        let r = res("deploy prod ✓");
        let mut held = Held::new(&LeaseId::generate(), "ci@\"b\"\n", Duration::from_secs(30));
        assert_eq!(held.expires_ms - held.acquired_ms, 30_000);
        assert_eq!(
            Record::parse(&r, FLAGS, &held.encode(&r)),
            Ok(Record::Held(held.clone()))
        );
        held.token = Some(42);
        let data = held.encode(&r);
        assert_eq!(
            Record::parse(&r, FLAGS, &data),
            Ok(Record::Held(held.clone()))
        );
        let lease = held.lease(&r);
        assert_eq!(lease.fencing_token, Some(42));
        assert_eq!(lease.ttl, Duration::from_secs(30));
        assert_eq!(
            Record::parse(&r, FLAGS, &held.tombstone(&r)),
            Ok(Record::Released)
        );
        let renewed = held.renewed(Duration::from_secs(90));
        assert_eq!((renewed.id, renewed.token), (held.id, held.token));
        assert_eq!(renewed.ttl_ms, 90_000);
        assert!(renewed.expires_ms >= held.expires_ms + 59_000);
    }

    #[test]
    fn foreign_values_are_refused() {
        let r = res("x");
        let held = Held::new(&LeaseId::generate(), "p", Duration::from_secs(1));
        let ours = held.encode(&r);
        let err = |flags, data: &[u8]| Record::parse(&r, flags, data).unwrap_err();
        assert!(err(0, &ours).contains("flags"));
        assert!(err(FLAGS, b"garbage\x1b[31m").contains("value starts"));
        assert!(!err(FLAGS, b"garbage\x1b[31m").contains('\x1b'));
        assert!(err(FLAGS, b"").contains("EOF"));
        assert!(err(FLAGS, br#"{"lockrun":2,"resource":"x"}"#).contains("format 2"));
        assert!(
            err(FLAGS, br#"{"lockrun":1,"resource":"y","released":true}"#)
                .contains("belongs to resource 'y'")
        );
        assert!(err(FLAGS, br#"{"lockrun":1,"resource":"x"}"#).contains("no 'id'"));
        assert!(err(FLAGS, br#"{"lockrun":1,"resource":"x","id":"a b"}"#).contains("malformed"));
        assert!(err(FLAGS, br#"{"lockrun":1,"resource":"x","owner":"z"}"#).contains("unknown"));
        assert!(err(
            FLAGS,
            br#"{"lockrun":1,"resource":"x","id":"ab","principal":"p","token":-1}"#
        )
        .contains("invalid"));
        assert!(Record::parse(&res("y"), FLAGS, &ours)
            .unwrap_err()
            .contains("belongs to resource 'x'"));
    }
}
