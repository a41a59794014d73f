//! The clock-free takeover rule, written once for the backends whose store has no clock
//! (DynamoDB, Kubernetes) or whose clock is only a backstop (memcached).
//!
//! A held record may be taken over when
//! - (b) the taker has itself seen the same record version unchanged for a full lease duration on
//!   its monotonic clock (the DynamoDB lock client's and client-go's rule, immune to clock
//!   offsets between machines); or, only when the operator opted in with `skew_allowance`,
//! - (a) the holder's stored expiry plus that allowance has passed on the taker's wall clock.
//!   Rule (a) compares two machines' wall clocks: a taker whose clock runs ahead of the holder's
//!   by more than the allowance takes over a live lease. So it is off unless asked for, and only
//!   safe where every host's clock is known to stay within the allowance of the others'.
//!
//! [`Observations`] keeps what rule (b) needs: per record, the version first seen and when. A
//! backend opened from a URL keeps them in the user's state directory as well, on the boot
//! clock, so that a one-shot attempt (`-n`, from cron) counts from when an earlier `lockrun` on
//! this host first saw the same version: a lease whose holder crashed is taken over by the first
//! attempt a full lease duration after the first sight, whichever process made it.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// What to do about a held record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(any(feature = "dynamodb", feature = "kubernetes")),
    allow(dead_code)
)]
pub(crate) enum Verdict {
    /// The holder's lease has run out by rule (b), or by rule (a) when it is on.
    TakeOver,
    /// Still held; the earlier of the rules allows a takeover this much later.
    Wait(Duration),
}

/// The rules, as a pure function.
///
/// - (b) we have seen the same record version for `unchanged_for` ≥ `duration` (the holder's
///   TTL), on our monotonic clock;
/// - (a), only with `skew` given: `now` (our wall clock) has reached `expires` (the holder's
///   stored expiry) plus `skew`.
#[cfg_attr(
    not(any(feature = "dynamodb", feature = "kubernetes")),
    allow(dead_code)
)]
pub(crate) fn judge(
    expires: SystemTime,
    duration: Duration,
    now: SystemTime,
    skew: Option<Duration>,
    unchanged_for: Duration,
) -> Verdict {
    let by_version = duration.saturating_sub(unchanged_for);
    let by_clock = skew.map_or(Duration::MAX, |skew| {
        expires
            .checked_add(skew)
            .map_or(Duration::MAX, |t| t.duration_since(now).unwrap_or_default())
    });
    let left = by_clock.min(by_version);
    if left.is_zero() {
        Verdict::TakeOver
    } else {
        Verdict::Wait(left)
    }
}

/// Beyond this many resources, observations are dropped (which only delays rule (b)).
const MAX_OBSERVED: usize = 4096;

/// The record versions this process has seen, per record, with when it first saw each (on the
/// monotonic clock, which wall-clock steps do not move), and optionally where other processes on
/// this host left theirs.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    seen: Mutex<HashMap<String, (String, Instant)>>,
    kept: Option<Kept>,
}

impl Observations {
    /// Observations that are also kept in `$XDG_STATE_HOME/lockrun/observed` (or
    /// `~/.local/state/lockrun/observed`) for the store named by `scope` (which must tell stores
    /// apart: endpoint, table or namespace, prefix). Without a state directory they live in this
    /// process only.
    pub fn kept(scope: &str) -> Observations {
        let env = |k: &str| std::env::var(k).ok();
        Observations {
            seen: Mutex::default(),
            kept: crate::config::state_dir(&env).map(|dir| Kept {
                dir: dir.join("observed"),
                scope: scope.to_owned(),
            }),
        }
    }

    /// Records that `version` of object `name` was read just now; returns how long it has been
    /// seen unchanged (by this process, or by an earlier one on this boot of this host).
    pub fn observe(&self, name: &str, version: &str) -> Duration {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, first)) = seen.get(name) {
            if v == version {
                return now.saturating_duration_since(*first);
            }
        }
        let earlier = self.kept.as_ref().and_then(|k| k.recall(name, version));
        let first = match earlier {
            Some(ago) => now.checked_sub(ago).unwrap_or(now),
            None => {
                if let Some(k) = &self.kept {
                    k.record(name, version);
                }
                now
            }
        };
        if seen.len() >= MAX_OBSERVED {
            seen.clear();
        }
        seen.insert(name.to_owned(), (version.to_owned(), first));
        now.saturating_duration_since(first)
    }

    /// Forgets `name` (we hold it now, or it is free).
    pub fn forget(&self, name: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(k) = &self.kept {
            k.erase(name);
        }
    }
}

/// First sightings kept on disk: one file per boot, store and record, named by a hash of the
/// three (so hosts sharing a home directory keep theirs apart), holding the boot id, the
/// sighting's time on that boot's CLOCK_BOOTTIME (which counts through suspend, unlike the
/// monotonic clock, and which no wall-clock step moves) and the version. The directory is used
/// only when it is ours and nobody else may write to it. Every failure to read or write a
/// sighting only makes rule (b) count from now, which is the safe side.
#[derive(Debug)]
struct Kept {
    dir: PathBuf,
    scope: String,
}

impl Kept {
    fn path(&self, name: &str, boot: &str) -> PathBuf {
        let mut key = self.scope.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(name.as_bytes());
        key.push(0);
        key.extend_from_slice(boot.as_bytes());
        let hex: String = crate::backend::file::sha256(&key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(hex)
    }

    /// How long ago this boot first saw `version` of `name`, if it did.
    fn recall(&self, name: &str, version: &str) -> Option<Duration> {
        let (now_boot, now_ms) = boot_clock()?;
        if !self.safe_dir() {
            return None;
        }
        let text = std::fs::read_to_string(self.path(name, &now_boot)).ok()?;
        let mut lines = text.lines();
        let (boot, at, v) = (lines.next()?, lines.next()?, lines.next()?);
        if boot != now_boot || v != version {
            return None;
        }
        let at: u64 = at.parse().ok()?;
        now_ms.checked_sub(at).map(Duration::from_millis)
    }

    fn record(&self, name: &str, version: &str) {
        let Some((boot, at)) = boot_clock() else {
            return;
        };
        if version.contains('\n') {
            return;
        }
        let write = || -> std::io::Result<()> {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)?;
            if !self.safe_dir() {
                return Err(std::io::Error::other("not ours, or others may write to it"));
            }
            let path = self.path(name, &boot);
            // A name no other process picks, even one with the same pid after a crash.
            let tmp = path.with_extension(format!("{}.tmp", crate::lease::LeaseId::generate()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            let wrote = f
                .write_all(format!("{boot}\n{at}\n{version}\n").as_bytes())
                .and_then(|()| std::fs::rename(&tmp, &path));
            if wrote.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            wrote
        };
        if let Err(e) = write() {
            tracing::debug!("cannot keep a sighting in {}: {e}", self.dir.display());
        }
    }

    fn erase(&self, name: &str) {
        if let Some((boot, _)) = boot_clock() {
            let _ = std::fs::remove_file(self.path(name, &boot));
        }
    }

    /// Whether the directory is a real directory of ours that nobody else may write to: planted
    /// sightings would let lockrun take a live lease over at once.
    fn safe_dir(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(&self.dir).is_ok_and(|m| {
            m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o022 == 0
        })
    }
}

/// This boot's id and the time on its CLOCK_BOOTTIME, in milliseconds.
fn boot_clock() -> Option<(String, u64)> {
    let now = crate::backend::file::BootClock::read();
    (!now.boot_id.is_empty()).then_some((now.boot_id, now.boot_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: Option<Duration> = Some(Duration::from_secs(5));
    const TTL: Duration = Duration::from_secs(30);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rule_a_waits_for_expiry_plus_skew() {
        let fresh = Duration::ZERO;
        assert_eq!(
            judge(at(100), TTL, at(90), SKEW, fresh),
            Verdict::Wait(Duration::from_secs(15))
        );
        assert_eq!(
            judge(at(100), TTL, at(101), SKEW, fresh),
            Verdict::Wait(Duration::from_secs(4))
        );
        assert_eq!(judge(at(100), TTL, at(105), SKEW, fresh), Verdict::TakeOver);
        assert_eq!(
            judge(at(100), TTL, at(100_000), SKEW, fresh),
            Verdict::TakeOver
        );
    }

    #[test]
    fn rule_b_ignores_a_clock_far_ahead() {
        let ahead = at(3600 + 30);
        assert_eq!(
            judge(ahead, TTL, at(0), SKEW, Duration::from_secs(12)),
            Verdict::Wait(Duration::from_secs(18))
        );
        assert_eq!(judge(ahead, TTL, at(0), SKEW, TTL), Verdict::TakeOver);
    }

    #[test]
    fn huge_values_saturate() {
        assert!(matches!(
            judge(
                at(u64::MAX / 4),
                Duration::MAX,
                at(0),
                Some(Duration::MAX),
                Duration::ZERO
            ),
            Verdict::Wait(_)
        ));
    }

    #[test]
    fn without_an_allowance_only_rule_b_takes_over() {
        // A taker whose clock is an hour ahead of the holder's: rule (a) would take over at once.
        let fresh = Duration::ZERO;
        assert_eq!(
            judge(at(100), TTL, at(3700), None, fresh),
            Verdict::Wait(TTL)
        );
        assert_eq!(
            judge(at(100), TTL, at(3700), None, Duration::from_secs(29)),
            Verdict::Wait(Duration::from_secs(1))
        );
        assert_eq!(judge(at(100), TTL, at(0), None, TTL), Verdict::TakeOver);
    }

    fn kept_in(dir: &std::path::Path, scope: &str) -> Observations {
        Observations {
            seen: Mutex::default(),
            kept: Some(Kept {
                dir: dir.join("observed"),
                scope: scope.to_owned(),
            }),
        }
    }

    #[test]
    fn a_later_process_counts_from_an_earlier_ones_first_sighting() {
        let tmp = tempfile::tempdir().unwrap();
        let first = kept_in(tmp.path(), "store");
        assert_eq!(first.observe("r", "v1"), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(30));
        // Another process (a fresh Observations) on the same store sees the same version.
        let later = kept_in(tmp.path(), "store");
        assert!(later.observe("r", "v1") >= Duration::from_millis(20));
        // Another store, or another version, counts from now.
        assert_eq!(
            kept_in(tmp.path(), "other store").observe("r", "v1"),
            Duration::ZERO
        );
        let third = kept_in(tmp.path(), "store");
        assert_eq!(third.observe("r", "v2"), Duration::ZERO);
        // The file now holds v2: v1 is a new sighting again.
        assert_eq!(
            kept_in(tmp.path(), "store").observe("r", "v1"),
            Duration::ZERO
        );
        // Forgetting erases the sighting for every process.
        let holder = kept_in(tmp.path(), "store");
        holder.forget("r");
        assert_eq!(
            kept_in(tmp.path(), "store").observe("r", "v1"),
            Duration::ZERO
        );
        let files: Vec<_> = std::fs::read_dir(tmp.path().join("observed"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            files.iter().all(|f| !f.to_string_lossy().contains("tmp")),
            "{files:?}"
        );
    }

    #[test]
    fn a_sighting_from_another_boot_or_a_damaged_file_is_not_used() {
        let tmp = tempfile::tempdir().unwrap();
        let obs = kept_in(tmp.path(), "store");
        let (boot, now) = boot_clock().unwrap();
        let path = obs.kept.as_ref().unwrap().path("r", &boot);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "another-boot\n0\nv1\n").unwrap();
        assert_eq!(obs.observe("r", "v1"), Duration::ZERO);
        for junk in ["", "x", "\n\n\n", "boot\nnot a number\nv1\n"] {
            std::fs::write(&path, junk).unwrap();
            assert_eq!(
                kept_in(tmp.path(), "store").observe("r", "v1"),
                Duration::ZERO
            );
        }
        // A sighting "in the future" (a clock that went back) counts from now, not from then.
        std::fs::write(&path, format!("{boot}\n{}\nv1\n", now + 60_000)).unwrap();
        assert_eq!(
            kept_in(tmp.path(), "store").observe("r", "v1"),
            Duration::ZERO
        );
        // One from ten minutes ago on this boot counts.
        std::fs::write(
            &path,
            format!("{boot}\n{}\nv1\n", now.saturating_sub(600_000)),
        )
        .unwrap();
        assert!(kept_in(tmp.path(), "store").observe("r", "v1") >= Duration::from_secs(599));
    }

    #[test]
    fn sightings_are_kept_apart_per_boot_and_only_in_a_directory_nobody_else_writes() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let obs = kept_in(tmp.path(), "store");
        let kept = obs.kept.as_ref().unwrap();
        // Hosts sharing a home directory (NFS) do not overwrite each other's sightings.
        assert_ne!(kept.path("r", "boot-a"), kept.path("r", "boot-b"));
        // A directory others may write to is not used: planted sightings could take a live
        // lease over at once.
        assert_eq!(obs.observe("r", "v1"), Duration::ZERO);
        let dir = tmp.path().join("observed");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            kept_in(tmp.path(), "store").observe("r", "v1"),
            Duration::ZERO
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(kept_in(tmp.path(), "store").observe("r", "v1") >= Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn observations_restart_when_the_version_changes() {
        let obs = Observations::default();
        assert_eq!(obs.observe("r", "1"), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(obs.observe("r", "1"), Duration::from_secs(3));
        assert_eq!(obs.observe("other", "1"), Duration::ZERO);
        assert_eq!(obs.observe("r", "2"), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(obs.observe("r", "2"), Duration::from_secs(1));
        obs.forget("r");
        assert_eq!(obs.observe("r", "2"), Duration::ZERO);
    }
}
