//! Lease object names: a valid Kubernetes name for every resource, distinct for distinct
//! resources.
//!
//! A Lease name must be a lowercase RFC 1123 DNS subdomain: at most 253 characters of `a-z`,
//! `0-9`, `-` and `.`, in dot-separated labels that start and end with a letter or digit.
//!
//! - A resource that already gives a valid name after the prefix, and has no `--`, is used as
//!   it is: `deploy-prod` → `lockrun-deploy-prod`, so `kubectl get lease` reads naturally.
//! - Any other resource (uppercase, `/`, spaces, `_`, non-ASCII, `--`, too long) becomes a
//!   readable, lowercased stem with every other character turned into `-`, then `--` and 32 hex
//!   digits (128 bits) of the SHA-256 of the resource: `Deploy/Prod` →
//!   `lockrun-deploy-prod--5c1e…`.
//!
//! A verbatim name never contains `--` after the prefix and a hashed one always does, so the two
//! kinds cannot meet; two hashed names meet only if SHA-256 collides in 128 bits. The resource
//! itself is kept in an annotation and checked on every read, so even that would be reported,
//! never silently shared.

use sha2::{Digest, Sha256};

use crate::lease::Resource;

/// The default prefix of Lease names.
pub const DEFAULT_PREFIX: &str = "lockrun-";

/// Longest object name Kubernetes accepts.
const MAX_NAME: usize = 253;
/// Hex digits of the hash suffix.
const HASH_HEX: usize = 32;
/// Longest name prefix: leaves room for a readable stem before the hash.
const MAX_PREFIX: usize = 100;

/// Checks a name prefix: empty, or the start of a valid name (lowercase letters, digits, `-`
/// and `.`, starting with a letter or digit), at most 100 characters.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_PREFIX {
        return Err(format!(
            "name_prefix is {} characters long; the limit is {MAX_PREFIX}",
            prefix.len()
        ));
    }
    if prefix.is_empty() || is_dns_subdomain(&format!("{prefix}a")) {
        Ok(())
    } else {
        Err(format!(
            "name_prefix '{}' cannot start a Kubernetes object name (use lowercase letters, \
             digits, '-' and '.', starting with a letter or digit)",
            crate::lease::escape(prefix)
        ))
    }
}

/// The name of the Lease object for `resource`, given a prefix accepted by `check_prefix`.
pub fn object_name(prefix: &str, resource: &Resource) -> String {
    let r = resource.as_str();
    let verbatim = format!("{prefix}{r}");
    if !r.contains("--") && is_dns_subdomain(&verbatim) {
        return verbatim;
    }
    let room = MAX_NAME - prefix.len() - 2 - HASH_HEX;
    let mut stem = String::with_capacity(r.len());
    for c in r.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if c == '-' && (stem.is_empty() || stem.ends_with('-')) {
            continue;
        }
        if stem.len() == room {
            break;
        }
        stem.push(c);
    }
    let stem = stem.trim_end_matches('-');
    let stem = if stem.is_empty() { "x" } else { stem };
    let digest = Sha256::digest(r.as_bytes());
    let hash: String = digest
        .iter()
        .take(HASH_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{prefix}{stem}--{hash}")
}

/// Whether `name` is a lowercase RFC 1123 subdomain of at most 253 characters.
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            !b.is_empty()
                && b.first().is_some_and(alnum)
                && b.last().is_some_and(alnum)
                && b.iter().all(|c| alnum(c) || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(r: &str) -> String {
        object_name(DEFAULT_PREFIX, &Resource::new(r).unwrap())
    }

    #[test]
    fn valid_names_are_kept() {
        assert_eq!(name("deploy-prod"), "lockrun-deploy-prod");
        assert_eq!(name("db.migrate-2"), "lockrun-db.migrate-2");
        assert_eq!(object_name("", &Resource::new("x").unwrap()), "x");
    }

    #[test]
    fn other_names_get_a_hash() {
        let n = name("Deploy/Prod");
        assert!(n.starts_with("lockrun-deploy-prod--"), "{n}");
        assert_eq!(n.len(), "lockrun-deploy-prod--".len() + HASH_HEX);
        assert!(name("锁").starts_with("lockrun-x--"));
        assert!(name("a..b").starts_with("lockrun-a-b--"));
        assert!(object_name("", &Resource::new("-a").unwrap()).starts_with("a--"));
    }

    #[test]
    fn names_are_valid_and_distinct() {
        let long = |c: &str| c.repeat(255 / c.len());
        let resources = [
            "a",
            "A",
            "a/b",
            "a_b",
            "a b",
            "a-b",
            "a--b",
            "a.b",
            "a..b",
            ".a",
            "a.",
            "-a",
            "a-",
            "ü",
            "锁",
            "a%2Fb",
            "a%2fb",
            "deploy-prod",
            "Deploy-Prod",
        ]
        .map(String::from)
        .into_iter()
        .chain([long("x"), long("X"), long("é"), long("/"), long("-")])
        .collect::<Vec<_>>();
        let mut seen = std::collections::HashSet::new();
        for prefix in ["lockrun-", "", "team.a-", "a"] {
            seen.clear();
            for r in &resources {
                let n = object_name(prefix, &Resource::new(r.clone()).unwrap());
                assert!(is_dns_subdomain(&n), "{prefix:?} {r:?} -> {n:?}");
                assert!(seen.insert(n.clone()), "{prefix:?} {r:?} -> {n:?} twice");
            }
        }
    }

    #[test]
    fn a_verbatim_name_cannot_equal_a_hashed_one() {
        let hashed = name("A");
        let forged = hashed.trim_start_matches(DEFAULT_PREFIX);
        assert_ne!(name(forged), hashed);
    }

    #[test]
    fn prefixes() {
        for ok in ["", "lockrun-", "a", "team.a-", "x1."] {
            assert!(check_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["-a", ".a", "A-", "a_", "a..", "a/", &"a".repeat(101)] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdomains() {
        assert!(is_dns_subdomain("a.b-c.d0"));
        assert!(is_dns_subdomain(&"a".repeat(253)));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
        for bad in ["", "a.", ".a", "a..b", "a-.b", "a.-b", "A", "a_b", "a b"] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }
}
