//! The lease model: [`Resource`], [`LeaseId`], [`Lease`].
//!
//! A *resource* is the name being locked. A *lease* is one grant of a resource to one holder, with
//! an id, a TTL and an expiry. The *lease id* is an unguessable token; together with the resource
//! name it is all another process needs to renew, check or release the lease. The *fencing token*
//! strictly increases with every grant of a resource on backends that can provide one.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Longest resource name, in bytes.
pub const MAX_RESOURCE_LEN: usize = 255;
/// Longest lease id accepted on the command line, in bytes.
pub const MAX_LEASE_ID_LEN: usize = 128;

/// A validated resource name: 1..=255 bytes of UTF-8, no NUL or other control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource(String);

impl Resource {
    /// Validates a resource name.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidInput> {
        let name = name.into();
        if name.is_empty() {
            return Err(InvalidInput("resource name is empty".into()));
        }
        if name.len() > MAX_RESOURCE_LEN {
            return Err(InvalidInput(format!(
                "resource name is {} bytes long; the limit is {MAX_RESOURCE_LEN}",
                name.len()
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidInput(format!(
                "resource name {} contains a control character",
                escape(&name)
            )));
        }
        Ok(Resource(name))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An opaque lease id. Generated ids are 32 lowercase hex digits (128 bits from the OS CSPRNG);
/// ids given on the command line are only checked for a sane shape, since backends decide what
/// they issue.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LeaseId(String);

impl LeaseId {
    /// A fresh random lease id.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        // getrandom only fails when the OS has no randomness source at all; there is no safe
        // fallback for an unguessable id, so that is fatal.
        getrandom::getrandom(&mut bytes).expect("the operating system's CSPRNG is unavailable");
        let mut s = String::with_capacity(32);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        LeaseId(s)
    }

    /// Checks the shape of a lease id typed by a user: 1..=128 bytes of `[A-Za-z0-9._:-]`.
    pub fn parse(text: &str) -> Result<Self, InvalidInput> {
        if text.is_empty() {
            return Err(InvalidInput("lease id is empty".into()));
        }
        if text.len() > MAX_LEASE_ID_LEN
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            // Quoted, so that a stray space or quote shows.
            let why = if text.len() > MAX_LEASE_ID_LEN {
                format!("longer than {MAX_LEASE_ID_LEN} characters")
            } else {
                "only letters, digits and . _ : - can be in one".to_owned()
            };
            return Err(InvalidInput(format!(
                "lease id '{}' is malformed: {why} (expected the id printed by 'lockrun acquire')",
                escape(&truncate(text, 40))
            )));
        }
        Ok(LeaseId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lease ids are bearer tokens: `Debug` shows only a prefix.
impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({}…)", &self.0[..self.0.len().min(6)])
    }
}

/// A user input that does not have the required shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// One grant of a resource, as the backend stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub resource: Resource,
    pub id: LeaseId,
    /// Who holds it (free text, for people).
    pub principal: String,
    /// Strictly increasing per resource, where the backend provides it.
    pub fencing_token: Option<u64>,
    /// When this holder was granted the lease (backend clock where it has one).
    pub acquired_at: SystemTime,
    /// When the lease ends unless renewed (backend clock where it has one).
    pub expires_at: SystemTime,
    /// The TTL of the last grant or renewal.
    pub ttl: Duration,
}

/// The JSON form of a lease, shared by `acquire --json` and `current -f json`.
#[derive(Serialize)]
pub struct LeaseJson<'a> {
    pub resource: &'a str,
    pub principal: &'a str,
    pub lease_id: &'a str,
    pub fencing_token: Option<u64>,
    pub acquired_at: String,
    pub expires_at: String,
    pub ttl_seconds: f64,
}

impl Lease {
    /// The JSON view of this lease.
    pub fn to_json(&self) -> LeaseJson<'_> {
        LeaseJson {
            resource: self.resource.as_str(),
            principal: &self.principal,
            lease_id: self.id.as_str(),
            fencing_token: self.fencing_token,
            acquired_at: rfc3339(self.acquired_at),
            expires_at: rfc3339(self.expires_at),
            ttl_seconds: self.ttl.as_secs_f64(),
        }
    }

    /// A short description of the holder for people who wait: principal, since, expiry.
    pub fn holder_summary(&self) -> String {
        let now = SystemTime::now();
        let left = self
            .expires_at
            .duration_since(now)
            .map(|d| format!("expires in {}", crate::duration::format(d)))
            // Still in the store's way: a backend without server time frees a lease only once
            // it has seen it unchanged for a TTL, a server's expiry runs on its own clock.
            .unwrap_or_else(|_| "past its expiry, not freed yet".into());
        format!(
            "held by {} since {} ({left})",
            escape(&self.principal),
            rfc3339(self.acquired_at)
        )
    }
}

/// RFC 3339 in UTC with millisecond precision. Times RFC 3339 cannot show (before 1970 here, or
/// after 9999) are shown as the nearest it can, so that a far-off expiry read back from a store
/// never stops a listing.
pub fn rfc3339(t: SystemTime) -> String {
    // 9999-12-31T23:59:59.999Z
    let last = SystemTime::UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
    humantime::format_rfc3339_millis(t.clamp(SystemTime::UNIX_EPOCH, last)).to_string()
}

/// The longest TTL a lease may have: every backend can store it, and its expiry can be shown.
/// Ten years of 365.25 days, as `10y` reads.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 31_557_600);

/// A TTL must be positive (at least 1ms, the finest unit every backend keeps) and at most
/// [`MAX_TTL`].
pub fn check_ttl(ttl: Duration) -> Result<(), InvalidInput> {
    if ttl < Duration::from_millis(1) {
        return Err(InvalidInput("the TTL must be at least 1ms".into()));
    }
    if ttl > MAX_TTL {
        return Err(InvalidInput("the TTL must be at most 10 years".into()));
    }
    Ok(())
}

/// The default principal: `user@host`.
pub fn default_principal() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| format!("uid{}", nix::unistd::getuid()));
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

/// Escapes text read back from a shared store before it reaches a terminal or a log line:
/// control characters (including ESC) become `\u{..}` escapes, and so do the characters that
/// break or reorder a line without being control characters: the line and paragraph separators
/// (U+2028, U+2029), which some log tools split on, and the bidirectional overrides and isolates
/// (U+202A–U+202E, U+2066–U+2069), which can make a name read as another.
pub fn escape(text: &str) -> String {
    let hidden =
        |c: char| c.is_control() || matches!(c, '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(hidden) {
        return text.to_owned();
    }
    text.chars()
        .flat_map(|c| {
            if hidden(c) {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_past_its_expiry_is_described_as_not_freed_yet() {
        let now = SystemTime::now();
        let mut lease = Lease {
            resource: Resource::new("r").unwrap(),
            id: LeaseId::parse("abc").unwrap(),
            principal: "p@h".into(),
            fencing_token: Some(1),
            acquired_at: now - Duration::from_secs(60),
            expires_at: now - Duration::from_secs(30),
            ttl: Duration::from_secs(30),
        };
        let s = lease.holder_summary();
        assert!(s.ends_with("(past its expiry, not freed yet)"), "{s}");
        lease.expires_at = now + Duration::from_secs(90);
        let s = lease.holder_summary();
        assert!(
            s.contains("(expires in 1m 29s") || s.contains("(expires in 1m 30s"),
            "{s}"
        );
    }

    #[test]
    fn resource_names() {
        assert!(Resource::new("deploy-prod").is_ok());
        assert!(Resource::new("a b/c ü \"q\" '").is_ok());
        assert!(Resource::new("x".repeat(255)).is_ok());
        assert!(Resource::new("").is_err());
        assert!(Resource::new("x".repeat(256)).is_err());
        assert!(Resource::new("a\0b").is_err());
        assert!(Resource::new("a\nb").is_err());
        assert!(Resource::new("a\x1b[31m").is_err());
        // 255 bytes of multi-byte characters are fine, 256 are not.
        assert!(Resource::new("é".repeat(127)).is_ok());
        assert!(Resource::new("é".repeat(128)).is_err());
    }

    #[test]
    fn times_beyond_rfc3339_are_shown_clamped() {
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(rfc3339(epoch), "1970-01-01T00:00:00.000Z");
        let far = epoch + Duration::from_secs(400 * 365 * 86400 * 100);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999Z");
        let before = epoch - Duration::from_secs(86400);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn ttl_bounds() {
        assert!(check_ttl(Duration::from_millis(1)).is_ok());
        assert!(check_ttl(MAX_TTL).is_ok());
        assert_eq!(
            crate::duration::parse("10y").unwrap(),
            MAX_TTL,
            "`10y` is allowed"
        );
        assert_eq!(
            check_ttl(Duration::ZERO).unwrap_err().0,
            "the TTL must be at least 1ms"
        );
        assert_eq!(
            check_ttl(Duration::MAX).unwrap_err().0,
            "the TTL must be at most 10 years"
        );
    }

    #[test]
    fn generated_ids_are_unique_hex() {
        let a = LeaseId::generate();
        let b = LeaseId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(LeaseId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn lease_id_shapes() {
        assert!(LeaseId::parse("").is_err());
        assert!(LeaseId::parse("has space").is_err());
        assert!(LeaseId::parse("semi;colon").is_err());
        assert!(LeaseId::parse(&"a".repeat(129)).is_err());
        assert!(LeaseId::parse("7d7ba20398dd05ac").is_ok());
        assert!(LeaseId::parse("0b5c1c9e-4c0e-4b8e-9a8e-1f6f3c2f6a11").is_ok());
    }

    #[test]
    fn debug_hides_lease_id() {
        let id = LeaseId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let dbg = format!("{id:?}");
        assert!(!dbg.contains("0123456789abcdef0123"), "{dbg}");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\x1b[31mb"), "a\\u{1b}[31mb");
        assert_eq!(escape("l1\nl2"), "l1\\nl2");
        assert_eq!(escape("a\u{2028}b"), "a\\u{2028}b");
        assert_eq!(escape("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(escape("\u{2066}i\u{2069}"), "\\u{2066}i\\u{2069}");
        assert_eq!(escape("日本 ünïcode"), "日本 ünïcode");
    }

    #[test]
    fn principal_has_user_and_host() {
        let p = default_principal();
        assert!(p.contains('@'), "{p}");
    }
}
