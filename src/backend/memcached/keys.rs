//! Where a resource lives: its memcached keys, and which server of the list holds them.
//!
//! memcached keys are at most 250 bytes of printable ASCII without spaces. A resource name made
//! only of `[A-Za-z0-9._/:-]` that fits is used as it is, readable with any memcached tool:
//! `{prefix}lease:{resource}`. Every other name (spaces, `%`, non-ASCII, too long) is replaced by
//! the hex SHA-256 of its UTF-8 bytes, after a `#` that a plain name cannot contain:
//! `{prefix}lease#{sha256}`. Either way the record stores the real name and every read checks it.
//!
//! The server is chosen by rendezvous (highest random weight) hashing: each server `host:port`
//! scores `SHA-256(host:port NUL resource)`, and the highest score holds the resource. The order
//! of the list does not matter, and adding or removing one server moves only the resources it
//! wins or held; but those do move, and while clients disagree about the list two of them can
//! hold the same resource.

use crate::lease::Resource;

use crate::backend::file::sha256;

/// memcached's limit on key length.
pub(super) const MAX_KEY: usize = 250;
/// The longest prefix accepted, so that hashed keys always fit.
pub(super) const MAX_PREFIX: usize = 100;

/// Where the records of one resource are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The server (`host:port`, as in the URL) that holds both keys.
    pub server: String,
    /// The key of the lease record.
    pub lease_key: String,
    /// The key of the fencing counter.
    pub token_key: String,
}

/// Whether `prefix` can start a memcached key: printable ASCII, no space, not too long.
pub(super) fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_PREFIX {
        return Err(format!(
            "is {} bytes long; the limit is {MAX_PREFIX}",
            prefix.len()
        ));
    }
    if !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("may contain only printable ASCII characters, no spaces".into());
    }
    Ok(())
}

/// The part of both keys after `lease`/`token`: `:{name}` for plain names, `#{sha256}` else.
fn suffix(prefix: &str, resource: &Resource) -> String {
    let name = resource.as_str();
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b':' | b'-'));
    if plain && prefix.len() + "token:".len() + name.len() <= MAX_KEY {
        format!(":{name}")
    } else {
        format!("#{}", hex(&sha256(name.as_bytes())))
    }
}

/// The lease and counter keys of `resource`.
pub(super) fn keys(prefix: &str, resource: &Resource) -> (String, String) {
    let s = suffix(prefix, resource);
    (format!("{prefix}lease{s}"), format!("{prefix}token{s}"))
}

/// The index in `servers` of the server that holds `resource` (rendezvous hashing).
pub(super) fn pick(servers: &[String], resource: &Resource) -> usize {
    let mut best = (0usize, [0u8; 32]);
    for (i, server) in servers.iter().enumerate() {
        let mut input = Vec::with_capacity(server.len() + 1 + resource.as_str().len());
        input.extend_from_slice(server.as_bytes());
        input.push(0);
        input.extend_from_slice(resource.as_str().as_bytes());
        let score = sha256(&input);
        if i == 0 || score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str) -> Resource {
        Resource::new(name).unwrap()
    }

    #[test]
    fn plain_names_are_kept() {
        let (lease, token) = keys("lockrun:", &res("deploy/prod-1.2_x:y"));
        assert_eq!(lease, "lockrun:lease:deploy/prod-1.2_x:y");
        assert_eq!(token, "lockrun:token:deploy/prod-1.2_x:y");
    }

    #[test]
    fn other_names_are_hashed() {
        let sha_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        for name in ["a b", "a%2Fb", "ünï", "semi;colon", "tab\u{a0}nbsp"] {
            let (lease, token) = keys("p:", &res(name));
            assert!(lease.starts_with("p:lease#"), "{lease}");
            assert!(token.starts_with("p:token#"), "{token}");
            assert_eq!(lease.len(), "p:lease#".len() + 64);
            assert!(lease.bytes().all(|b| b.is_ascii_graphic()));
        }
        assert_eq!(keys("", &res("abc!")).0.len(), 5 + 1 + 64);
        // A plain name that would not fit is hashed too; the hash is of the name alone.
        let long = "x".repeat(250);
        let (lease, _) = keys("lockrun:", &res(&long));
        assert!(lease.starts_with("lockrun:lease#"));
        assert!(lease.len() <= MAX_KEY);
        assert_ne!(keys("", &res("abc ")).0, format!("lease#{sha_abc}"));
        assert_eq!(
            suffix("", &res("abc ")),
            format!("#{}", hex(&sha256(b"abc ")))
        );
    }

    #[test]
    fn keys_never_collide_between_forms() {
        // A plain name cannot contain '#', so it never equals a hashed key.
        let hashed = keys("", &res("a b")).0;
        let tail = hashed.trim_start_matches("lease#");
        assert_ne!(keys("", &res(tail)).0, hashed);
        assert_ne!(keys("", &res("A/B")).0, keys("", &res("a/b")).0);
    }

    #[test]
    fn longest_prefix_and_name_fit() {
        let prefix = "p".repeat(MAX_PREFIX);
        for name in ["é".repeat(127), "x".repeat(255), "y".repeat(140)] {
            let (lease, token) = keys(&prefix, &res(&name));
            assert!(lease.len() <= MAX_KEY && token.len() <= MAX_KEY, "{lease}");
        }
    }

    #[test]
    fn prefixes() {
        assert!(check_prefix("lockrun:").is_ok());
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("a b").is_err());
        assert!(check_prefix("a\nb").is_err());
        assert!(check_prefix("é").is_err());
        assert!(check_prefix(&"p".repeat(MAX_PREFIX + 1)).is_err());
    }

    #[test]
    fn rendezvous_is_stable_and_spreads() {
        let servers: Vec<String> = ["a:11211", "b:11211", "c:11211"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut counts = [0usize; 3];
        for i in 0..300 {
            let r = res(&format!("job-{i}"));
            let at = pick(&servers, &r);
            counts[at] += 1;
            // The order of the list does not matter.
            let mut rev = servers.clone();
            rev.reverse();
            assert_eq!(rev[pick(&rev, &r)], servers[at]);
            // Removing another server does not move it.
            let fewer: Vec<String> = servers
                .iter()
                .enumerate()
                .filter(|(j, _)| *j == at || *j != (at + 1) % 3)
                .map(|(_, s)| s.clone())
                .collect();
            assert_eq!(fewer[pick(&fewer, &r)], servers[at]);
        }
        assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
        // Fixed forever: changing the hash would move every lock.
        assert_eq!(pick(&servers, &res("deploy-prod")), 1);
        assert_eq!(pick(&servers[..1], &res("x")), 0);
    }
}
