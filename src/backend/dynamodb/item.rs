//! The item layout, reading items back, and the conditions every write carries.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::lease::{Lease, LeaseId, Resource};

/// An item as DynamoDB returns it.
pub(super) type Item = HashMap<String, AttributeValue>;

// Attribute names. Every expression refers to them as `#name` (some, like `token`, are close to
// DynamoDB's reserved words).
pub(super) const RESOURCE: &str = "resource";
pub(super) const LEASE_ID: &str = "lease_id";
pub(super) const PRINCIPAL: &str = "principal";
pub(super) const TOKEN: &str = "token";
pub(super) const VERSION: &str = "version";
pub(super) const ACQUIRED_MS: &str = "acquired_ms";
pub(super) const EXPIRES_MS: &str = "expires_ms";
pub(super) const TTL_MS: &str = "ttl_ms";
pub(super) const RELEASED: &str = "released";
/// Epoch seconds for DynamoDB's TTL sweeper (garbage collection only, never for expiry).
pub(super) const TTL_EPOCH: &str = "ttl_epoch";

const ALL: &[&str] = &[
    RESOURCE,
    LEASE_ID,
    PRINCIPAL,
    TOKEN,
    VERSION,
    ACQUIRED_MS,
    EXPIRES_MS,
    TTL_MS,
    RELEASED,
    TTL_EPOCH,
];

/// How long after a lease's expiry the item may be garbage-collected. Deleting the item resets
/// the fencing counter, so this is long enough for any plausible stalled holder to have woken up.
pub(super) const GC_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// Every attribute a lockrun item has, with its type. Writes that touch an existing item require
/// this, so a foreign item is never overwritten (and `token + 1` never meets a non-number).
/// The token is also bounded, so that a negative one, or one past what `+ 1` keeps within a
/// u64, is reported and not counted on (review: a released item with token -7 was taken over,
/// to token -6, and then reported as left alone). A fractional token cannot be told apart in a
/// condition; reading it back reports it, after the write.
pub(super) const TYPED: &str = "attribute_type(#lease_id, :S) AND attribute_type(#principal, :S) \
     AND attribute_type(#token, :N) AND #token BETWEEN :token_min AND :token_max \
     AND attribute_type(#version, :S) \
     AND attribute_type(#acquired_ms, :N) AND attribute_type(#expires_ms, :N) \
     AND attribute_type(#ttl_ms, :N) AND attribute_type(#released, :BOOL)";

/// A lockrun item, read back and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stored {
    pub lease_id: LeaseId,
    pub principal: String,
    pub token: u64,
    /// The record version number: random, replaced by every write.
    pub version: String,
    pub acquired_ms: u64,
    /// The holder's wall clock when it wrote the item, plus the TTL.
    pub expires_ms: u64,
    pub ttl_ms: u64,
    pub released: bool,
}

impl Stored {
    /// Checks an item; the error says what makes it foreign.
    pub fn parse(resource: &Resource, item: &Item) -> Result<Stored, String> {
        match item.get(RESOURCE) {
            Some(AttributeValue::S(r)) if r == resource.as_str() => {}
            _ => return Err(format!("attribute '{RESOURCE}' does not name the resource")),
        }
        let lease_id = LeaseId::parse(string(item, LEASE_ID)?)
            .map_err(|_| format!("attribute '{LEASE_ID}' is not a lease id"))?;
        let released = match item.get(RELEASED) {
            Some(AttributeValue::Bool(b)) => *b,
            _ => {
                return Err(format!(
                    "attribute '{RELEASED}' is missing or not a boolean"
                ))
            }
        };
        let version = string(item, VERSION)?;
        if version.is_empty() {
            return Err(format!("attribute '{VERSION}' is empty"));
        }
        Ok(Stored {
            lease_id,
            principal: string(item, PRINCIPAL)?.to_owned(),
            token: match number(item, TOKEN)? {
                u64::MAX => return Err(format!("attribute '{TOKEN}' is at its largest")),
                t => t,
            },
            version: version.to_owned(),
            acquired_ms: number(item, ACQUIRED_MS)?,
            expires_ms: number(item, EXPIRES_MS)?,
            ttl_ms: number(item, TTL_MS)?,
            released,
        })
    }

    /// The lease this item describes.
    pub fn lease(&self, resource: &Resource) -> Lease {
        Lease {
            resource: resource.clone(),
            id: self.lease_id.clone(),
            principal: self.principal.clone(),
            fencing_token: Some(self.token),
            acquired_at: UNIX_EPOCH + Duration::from_millis(self.acquired_ms),
            expires_at: UNIX_EPOCH + Duration::from_millis(self.expires_ms),
            ttl: Duration::from_millis(self.ttl_ms),
        }
    }
}

fn string<'a>(item: &'a Item, name: &str) -> Result<&'a str, String> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        _ => Err(format!("attribute '{name}' is missing or not a string")),
    }
}

fn number(item: &Item, name: &str) -> Result<u64, String> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n
            .parse()
            .map_err(|_| format!("attribute '{name}' is not a whole number of the expected size")),
        _ => Err(format!("attribute '{name}' is missing or not a number")),
    }
}

/// Milliseconds since the epoch on this host's wall clock (0 before 1970).
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// A duration in whole milliseconds, saturating.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// The `ttl_epoch` value for a lease expiring at `expires_ms`.
pub(super) fn gc_epoch(expires_ms: u64) -> AttributeValue {
    n((expires_ms / 1000).saturating_add(GC_AFTER.as_secs()))
}

/// A fresh record version number.
pub(super) fn new_version() -> AttributeValue {
    s(LeaseId::generate().as_str())
}

/// The placeholders of a request: the `#names` and `:values` its expressions actually use
/// (DynamoDB rejects unused ones). `values` may offer more than are used.
pub(super) struct Placeholders {
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

impl Placeholders {
    pub fn for_exprs(exprs: &[&str], values: Vec<(&str, AttributeValue)>) -> Placeholders {
        let used = |placeholder: &str| exprs.iter().any(|e| uses(e, placeholder));
        let mut all_values: Vec<(&str, AttributeValue)> = vec![
            (":S", s("S")),
            (":N", s("N")),
            (":BOOL", s("BOOL")),
            (":token_min", n(0)),
            (":token_max", n(u64::MAX - 1)),
            (":true", AttributeValue::Bool(true)),
            (":false", AttributeValue::Bool(false)),
        ];
        all_values.extend(values);
        Placeholders {
            names: ALL
                .iter()
                .map(|a| (format!("#{a}"), (*a).to_owned()))
                .filter(|(p, _)| used(p))
                .collect(),
            values: all_values
                .into_iter()
                .filter(|(p, _)| used(p))
                .map(|(p, v)| (p.to_owned(), v))
                .collect(),
        }
    }
}

/// Whether `expr` contains `placeholder` as a whole token.
fn uses(expr: &str, placeholder: &str) -> bool {
    expr.match_indices(placeholder).any(|(i, _)| {
        !expr[i + placeholder.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(resource: &Resource) -> Item {
        [
            (RESOURCE, s(resource.as_str())),
            (LEASE_ID, s("0123456789abcdef0123456789abcdef")),
            (PRINCIPAL, s("me@host")),
            (TOKEN, n(7)),
            (VERSION, s("v1")),
            (ACQUIRED_MS, n(1_000)),
            (EXPIRES_MS, n(31_000)),
            (TTL_MS, n(30_000)),
            (RELEASED, AttributeValue::Bool(false)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[test]
    fn parses_a_lockrun_item() {
        let r = Resource::new("db").unwrap();
        let st = Stored::parse(&r, &good(&r)).unwrap();
        assert_eq!(st.token, 7);
        assert!(!st.released);
        let lease = st.lease(&r);
        assert_eq!(lease.ttl, Duration::from_secs(30));
        assert_eq!(lease.fencing_token, Some(7));
        assert_eq!(
            lease.expires_at.duration_since(lease.acquired_at).unwrap(),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn foreign_items_are_refused() {
        let r = Resource::new("db").unwrap();
        let cases: Vec<(&str, Option<AttributeValue>)> = vec![
            (TOKEN, Some(s("7"))),
            (TOKEN, Some(AttributeValue::N("-1".into()))),
            (TOKEN, None),
            (RELEASED, Some(s("false"))),
            (LEASE_ID, Some(s("not an id!"))),
            (VERSION, Some(s(""))),
            (EXPIRES_MS, Some(AttributeValue::N("1.5".into()))),
            (RESOURCE, Some(s("other"))),
        ];
        for (attr, value) in cases {
            let mut item = good(&r);
            match value {
                Some(v) => item.insert(attr.to_owned(), v),
                None => item.remove(attr),
            };
            let why = Stored::parse(&r, &item).unwrap_err();
            assert!(why.contains(attr), "{attr}: {why}");
        }
    }

    #[test]
    fn placeholders_only_used_ones() {
        let p = Placeholders::for_exprs(
            &["#ttl_ms = :ttl AND #released = :true"],
            vec![(":ttl", n(1)), (":ttl_unused", n(2))],
        );
        let mut names: Vec<_> = p.names.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["#released", "#ttl_ms"]);
        let mut values: Vec<_> = p.values.keys().cloned().collect();
        values.sort();
        assert_eq!(values, [":true", ":ttl"]);
        assert!(!uses("#ttl_epoch", "#ttl"));
        assert!(uses("(#ttl, x)", "#ttl"));
    }
}
