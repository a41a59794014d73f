//! The password file libpq reads: `PGPASSFILE`, else `~/.pgpass`.
//!
//! Each line is `hostname:port:database:username:password`; any of the first four may be `*`,
//! `\:` and `\\` escape a colon and a backslash, and lines starting with `#` are comments. The
//! first line that matches wins. As in libpq, `localhost` also matches a connection through the
//! default socket directory, and a file that the group or others may read is ignored (the
//! authentication error then says so), since it would leak the passwords in it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a line must match.
pub struct Target<'a> {
    /// The host name or address, or the socket directory.
    pub host: &'a str,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
}

/// The socket directory that libpq treats as `localhost`.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// The password for `target` from the password file, if there is one and a line matches.
/// `Err` says why a file that exists was not used (a note for the authentication error).
pub fn lookup(
    target: &Target<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    let Some(path) = file(env) else {
        return Ok(None);
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "password file {} was ignored: it has group or world access (chmod 600 it)",
            path.display()
        ));
    }
    let text = crate::small_file::read_text(&path)
        .map_err(|e| format!("password file {} cannot be read: {e}", path.display()))?;
    Ok(find(&text, target))
}

fn file(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    match env("PGPASSFILE").filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => env("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| Path::new(&h).join(".pgpass")),
    }
}

/// The password of the first line of `text` that matches `target`.
pub fn find(text: &str, target: &Target<'_>) -> Option<String> {
    let port = target.port.to_string();
    let host = if target.host == DEFAULT_SOCKET_DIR || target.host.is_empty() {
        "localhost"
    } else {
        target.host
    };
    let wanted = [host, port.as_str(), target.database, target.user];
    text.lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let fields = split(line)?;
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|(f, w)| f == "*" || f == w);
            matches.then(|| fields[4].clone())
        })
}

/// The five fields of a line, unescaped; `None` for a line with fewer. A fifth field takes the
/// rest of the line (unescaped), as in libpq.
fn split(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = Vec::with_capacity(5);
    let mut cur = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if fields.len() < 4 {
        return None;
    }
    fields.push(cur);
    fields.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(host: &'a str, port: u16, database: &'a str, user: &'a str) -> Target<'a> {
        Target {
            host,
            port,
            database,
            user,
        }
    }

    #[test]
    fn the_first_matching_line_wins_with_wildcards() {
        let text = "# comment\n\
                    db.example:5432:ops:alice:first\n\
                    *:5432:ops:alice:second\n\
                    *:*:*:*:fallback\n";
        let t = |h, p, d, u| find(text, &target(h, p, d, u));
        assert_eq!(
            t("db.example", 5432, "ops", "alice").as_deref(),
            Some("first")
        );
        assert_eq!(t("other", 5432, "ops", "alice").as_deref(), Some("second"));
        assert_eq!(
            t("other", 6432, "ops", "alice").as_deref(),
            Some("fallback")
        );
        assert_eq!(find("a:1:b:c:pw\n", &target("a", 2, "b", "c")), None);
        assert_eq!(find("", &target("a", 1, "b", "c")), None);
    }

    #[test]
    fn escapes_and_short_lines() {
        let text = "short:line\n\
                    h\\:x:5432:d\\\\b:u:pa\\:ss:word\r\n";
        assert_eq!(
            find(text, &target("h:x", 5432, "d\\b", "u")).as_deref(),
            Some("pa:ss:word")
        );
    }

    #[test]
    fn localhost_matches_the_default_socket_directory() {
        let text = "localhost:5432:*:*:local\n/tmp/sock:5432:*:*:other\n";
        let t = |h| find(text, &target(h, 5432, "d", "u"));
        assert_eq!(t(DEFAULT_SOCKET_DIR).as_deref(), Some("local"));
        assert_eq!(t("localhost").as_deref(), Some("local"));
        assert_eq!(t("/tmp/sock").as_deref(), Some("other"));
        assert_eq!(t("127.0.0.1"), None);
    }

    #[test]
    fn the_file_is_found_and_a_readable_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".pgpass");
        std::fs::write(&path, "*:*:*:*:secret\n").unwrap();
        let t = target("h", 5432, "d", "u");
        let home = dir.path().display().to_string();
        let by_home = |k: &str| (k == "HOME").then(|| home.clone());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let ignored = lookup(&t, &by_home).unwrap_err();
        assert!(ignored.contains("group or world access"), "{ignored}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&t, &by_home).unwrap().as_deref(), Some("secret"));
        let other = dir.path().join("elsewhere");
        std::fs::write(&other, "*:*:*:*:named\n").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
        let named = other.display().to_string();
        let by_var = |k: &str| match k {
            "PGPASSFILE" => Some(named.clone()),
            "HOME" => Some(home.clone()),
            _ => None,
        };
        assert_eq!(lookup(&t, &by_var).unwrap().as_deref(), Some("named"));
        assert_eq!(lookup(&t, &|_| None), Ok(None));
    }
}
