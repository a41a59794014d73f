//! From a resource name to safe file names in the lock directory.
//!
//! Every byte outside `[A-Za-z0-9_-]` is percent-encoded (`%2F`, `%20`, `%C3%BC`; `%` itself is
//! `%25` and the dot is `%2E`), so the mapping is injective, the result is never `.` or `..`,
//! never contains `/`, and never starts with a dot (temporary files do). A resource of 255 bytes
//! can encode to 765 characters, more than a file name may hold (`NAME_MAX` is 255), so an encoded
//! name longer than [`STEM_MAX`] becomes a readable prefix, a `~` (which encoded names never
//! contain, because it is itself encoded) and the SHA-256 of the whole resource name. The record
//! also stores the resource name, and reading it back checks that it matches.

/// Longest stem (file name without suffix). Leaves room for the temporary-file decoration.
pub(super) const STEM_MAX: usize = 200;

/// Hex digits of SHA-256.
const HASH_HEX: usize = 64;

/// The stem of every file that belongs to `resource`.
pub(super) fn stem(resource: &str) -> String {
    let encoded = encode(resource);
    if encoded.len() <= STEM_MAX {
        return encoded;
    }
    let mut cut = STEM_MAX - 1 - HASH_HEX;
    // Do not cut through a `%XX` escape.
    let bytes = encoded.as_bytes();
    if bytes[cut - 1] == b'%' {
        cut -= 1;
    } else if bytes[cut - 2] == b'%' {
        cut -= 2;
    }
    format!("{}~{}", &encoded[..cut], hex(&sha256(resource.as_bytes())))
}

/// The record file of `resource`.
/// The suffix of record files.
pub(super) const RECORD_SUFFIX: &str = ".lease";

pub(super) fn record(resource: &str) -> String {
    format!("{}{RECORD_SUFFIX}", stem(resource))
}

/// The fencing-token reservation of `resource`.
pub(super) fn reservation(resource: &str) -> String {
    format!("{}.token", stem(resource))
}

/// The lock file of `resource`, created once and never replaced.
pub(super) fn lock(resource: &str) -> String {
    format!("{}.lock", stem(resource))
}

/// The spare file of `resource`: the record before last, rewritten in place and exchanged with the
/// record at the next write (see `store::Dir::swap`).
pub(super) fn spare(resource: &str) -> String {
    format!(".{}.spare", stem(resource))
}

/// A fresh temporary file name for a new record of `resource`.
pub(super) fn temp(resource: &str) -> String {
    let mut rnd = [0u8; 8];
    // Uniqueness comes from O_EXCL; randomness only avoids collisions with leftovers of crashed
    // writers, so a clock-derived fallback is fine.
    if getrandom::getrandom(&mut rnd).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        rnd = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    format!(".{}.{}.tmp", stem(resource), hex(&rnd))
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lowercase hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (FIPS 180-4), for file names and record checksums.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn sha256_known_answers() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(&sha256(&[b'a'; 1000])),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
        );
    }

    #[test]
    fn plain_names_stay_readable() {
        assert_eq!(stem("deploy-prod_2"), "deploy-prod_2");
        assert_eq!(record("db"), "db.lease");
        assert_eq!(lock("db"), "db.lock");
        assert_eq!(reservation("db"), "db.token");
    }

    #[test]
    fn no_traversal_or_hidden_names() {
        for r in [
            ".",
            "..",
            "../x",
            "a/../../b",
            "/etc/passwd",
            ".hidden",
            "a\\b",
            "~x",
        ] {
            let s = stem(r);
            assert!(!s.contains('/'), "{r} -> {s}");
            assert!(!s.contains('.'), "{r} -> {s}");
            assert!(!s.starts_with('~'), "{r} -> {s}");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-%~".contains(&b)),
                "{r} -> {s}"
            );
        }
        assert_eq!(stem(".."), "%2E%2E");
        assert_eq!(stem("a/b"), "a%2Fb");
    }

    #[test]
    fn distinct_resources_get_distinct_names() {
        let long_a = "a".repeat(255);
        let long_b = format!("{}b", "a".repeat(254));
        let long_c = "ü".repeat(127);
        let long_d = format!("{}ö", "ü".repeat(126));
        let names = [
            "a/b", "a_b", "a%2Fb", "a%2fb", "a b", "a+b", "a.b", "A/B", "a\"b", "a'b", "ünï",
            "a~b", &long_a, &long_b, &long_c, &long_d,
        ];
        let stems: HashSet<String> = names.iter().map(|n| stem(n)).collect();
        assert_eq!(stems.len(), names.len(), "{stems:?}");
    }

    #[test]
    fn long_names_fit_name_max() {
        for r in [
            "a".repeat(255),
            "/".repeat(255),
            "ü".repeat(127),
            format!("{}{}", "a".repeat(134), "/".repeat(121)),
            format!("{}{}", "a".repeat(133), "/".repeat(122)),
            format!("{}{}", "a".repeat(135), "/".repeat(120)),
        ] {
            let s = stem(&r);
            assert!(s.len() <= STEM_MAX, "{} bytes", s.len());
            assert!(temp(&r).len() <= 255);
            assert!(record(&r).len() <= 255);
            assert!(reservation(&r).len() <= 255);
            // The prefix never ends in a broken escape.
            let prefix = s.split('~').next().unwrap_or("");
            let tail = prefix.len().saturating_sub(2);
            assert!(!prefix[tail..].contains('%'), "{s}");
        }
        // The longest name that still encodes in full.
        let r = "a".repeat(200);
        assert_eq!(stem(&r), r);
        assert!(stem(&"a".repeat(201)).contains('~'));
    }

    #[test]
    fn temp_names_are_hidden_and_unique() {
        let a = temp("x");
        let b = temp("x");
        assert_ne!(a, b);
        assert!(a.starts_with(".x.") && a.ends_with(".tmp"), "{a}");
    }
}
