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

/// SHA-256 (FIPS 180-4), enough for file names and record checksums.
pub(super) fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
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
