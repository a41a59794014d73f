use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::backend::conformance::Suite;

fn res(name: &str) -> Resource {
    Resource::new(name).unwrap()
}

fn record_path(dir: &Path, r: &Resource) -> PathBuf {
    dir.join(name::record(r.as_str()))
}

async fn grant(b: &File, r: &Resource) -> Lease {
    let id = LeaseId::generate();
    let req = AcquireRequest {
        resource: r,
        id: &id,
        principal: "me@here",
        ttl: Duration::from_secs(60),
    };
    match b.try_acquire(&req).await.unwrap() {
        Acquire::Acquired(l) => l,
        busy => panic!("{busy:?}"),
    }
}

fn config_error(r: Result<File, Error>) -> String {
    match r {
        Err(Error::Config(m)) => m,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn creates_missing_directory_private_at_the_first_acquire_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/locks");
    let b = File::at(&dir).unwrap();
    // Steps that only read or give back find nothing held, and create nothing.
    let r = res("r");
    let id = LeaseId::generate();
    assert!(b.seen_busy(&r).is_none());
    assert!(b.current(&r).await.unwrap().is_none());
    assert!(!b.release(&r, &id).await.unwrap());
    assert!(matches!(
        b.renew(&r, &id, Duration::from_secs(5)).await.unwrap(),
        Renewal::Lost
    ));
    assert_eq!(b.resources().await.unwrap(), Some(vec![]));
    assert!(!tmp.path().join("a").exists());
    // The first acquire creates it, mode 0700, and the backend opened before finds it.
    let lease = grant(&b, &r).await;
    let mode = fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    assert_eq!(b.current(&r).await.unwrap().unwrap().id, lease.id);
    let again = File::at(&dir).unwrap();
    assert_eq!(again.current(&r).await.unwrap().unwrap().id, lease.id);
    assert!(again.release(&r, &lease.id).await.unwrap());
}

/// A backend opened while the directory was missing sees it once another process made it.
#[tokio::test]
async fn a_directory_made_since_opening_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("locks");
    let late = File::at(&dir).unwrap();
    let r = res("r");
    let lease = grant(&File::at(&dir).unwrap(), &r).await;
    assert_eq!(late.current(&r).await.unwrap().unwrap().id, lease.id);
    match late.seen_busy(&r) {
        Some(Acquire::Busy {
            holder: Some(holder),
            ..
        }) => assert_eq!(holder.id, lease.id),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refuses_symlink_and_non_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    fs::create_dir(&real).unwrap();
    let link = tmp.path().join("link");
    symlink(&real, &link).unwrap();
    let m = config_error(File::at(&link));
    assert!(m.contains("symbolic link") && m.contains("/link"), "{m}");
    // Also when the path ends in a slash (a plain path given as the backend becomes one).
    let m = config_error(File::at(&tmp.path().join("link/")));
    assert!(m.contains("symbolic link"), "{m}");

    let plain = tmp.path().join("plain");
    fs::write(&plain, "x").unwrap();
    let m = config_error(File::at(&plain));
    assert!(m.ends_with("is not a directory"), "{m}");
    let m = config_error(File::at(&plain.join("sub")));
    assert!(m.contains("cannot be"), "{m}");
}

#[test]
fn refuses_shared_directory_without_sticky_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shared");
    fs::create_dir(&dir).unwrap();
    for mode in [0o777, 0o770, 0o757] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        let m = config_error(File::at(&dir));
        assert!(m.contains("without the sticky bit"), "{m}");
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
    File::at(&dir).unwrap();
}

#[test]
fn ownership_rules() {
    let p = Path::new("/x");
    assert!(store::check_mode(p, 0o40700, 1000, 1000).is_ok());
    assert!(
        store::check_mode(p, 0o41777, 0, 1000).is_ok(),
        "root-owned like /run/lock"
    );
    assert!(store::check_mode(p, 0o41777, 1000, 1000).is_ok());
    let e = store::check_mode(p, 0o41777, 1001, 1000).unwrap_err();
    assert!(e.to_string().contains("owned by uid 1001"), "{e}");
    assert!(store::check_mode(p, 0o43770, 1001, 1000).is_err());
    // Owned by someone else but not writable by others: only they can write; access() decides.
    assert!(store::check_mode(p, 0o40755, 1001, 1000).is_ok());
    // Root, for whom access() always passes: only root's own directories.
    assert!(store::check_mode(p, 0o40700, 0, 0).is_ok());
    assert!(store::check_mode(p, 0o41777, 0, 0).is_ok());
    for mode in [0o40700, 0o40755, 0o41777] {
        let e = store::check_mode(p, mode, 65534, 0).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
    }
}

#[test]
fn the_owner_of_new_files_is_probed_without_a_trace() {
    // What tells root on NFS with root_squash (its new files belong to the squashed uid) from
    // root in another user's directory.
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path(), false).unwrap().unwrap();
    assert_eq!(dir.new_files_owner(), Some(nix::unistd::geteuid().as_raw()));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn refuses_unwritable_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ro");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o500)).unwrap();
    let result = File::at(&dir);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    // root passes access checks on any directory, so only unprivileged runs can see the refusal.
    if nix::unistd::geteuid().is_root() {
        eprintln!("running as root: skipping the unwritable-directory assertion");
        return;
    }
    let m = config_error(result);
    assert_eq!(
        m,
        format!(
            "lock directory {} is not writable: Permission denied",
            dir.display()
        )
    );
}

#[tokio::test]
async fn opens_from_url_and_checks_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let url = BackendUrl::parse(&format!("file://{}/locks", tmp.path().display())).unwrap();
    let b = crate::backend::open(&url, &Settings::default())
        .await
        .unwrap();
    assert_eq!(b.capabilities().fencing, Fencing::Strict);

    let mut table = toml::Table::new();
    table.insert("dir".into(), toml::Value::String("/x".into()));
    let e = File::open(&url, &Settings::new("config.toml [backend.f]", table)).unwrap_err();
    assert!(
        matches!(e, Error::Config(ref m) if m.contains("unknown key 'dir'")),
        "{e:?}"
    );

    let remote = BackendUrl::parse("file://otherhost/locks").unwrap();
    assert!(matches!(
        File::open(&remote, &Settings::default()),
        Err(Error::Config(_))
    ));
}

#[tokio::test]
async fn records_are_private_and_survive_release() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("db/migrate");
    let l = grant(&b, &r).await;
    assert!(b.release(&r, &l.id).await.unwrap());
    let path = record_path(tmp.path(), &r);
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("\"released\":true") && text.contains("\"token\":1"),
        "{text}"
    );
    let reservation = reservation_path(tmp.path(), &r);
    let mode = fs::metadata(&reservation).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let spare = tmp.path().join(name::spare("db/migrate"));
    let mode = fs::metadata(&spare).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // The record, the one before it, the reservation and the lock file: no temporary files.
    assert_eq!(
        names(tmp.path()),
        [
            ".db%2Fmigrate.spare",
            "db%2Fmigrate.lease",
            "db%2Fmigrate.lock",
            "db%2Fmigrate.token"
        ]
    );
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// After the first write, records are replaced by exchanging them with the spare: the same two
/// files take turns, none is created or deleted (which would cost disk I/O, and wake waiters that
/// watch the directory for the record's deletion).
#[tokio::test]
async fn records_take_turns_with_the_spare() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("turns");
    let first = grant(&b, &r).await;
    assert!(b.release(&r, &first.id).await.unwrap());
    let inode = |name: &str| fs::metadata(tmp.path().join(name)).unwrap().ino();
    let pair = [inode("turns.lease"), inode(".turns.spare")];
    let before = names(tmp.path());
    for round in 0..5 {
        let l = grant(&b, &r).await;
        assert_eq!(l.fencing_token, Some(round + 2));
        assert_eq!(
            b.current(&r).await.unwrap().map(|c| c.id),
            Some(l.id.clone())
        );
        assert!(matches!(
            b.renew(&r, &l.id, Duration::from_secs(60)).await.unwrap(),
            Renewal::Renewed(_)
        ));
        assert!(b.release(&r, &l.id).await.unwrap());
        let mut now = [inode("turns.lease"), inode(".turns.spare")];
        now.sort();
        let mut was = pair;
        was.sort();
        assert_eq!(now, was, "round {round}: a file was created");
    }
    assert_eq!(names(tmp.path()), before);
}

/// Where the file system has no `RENAME_EXCHANGE` (NFS), every write renames a fresh temporary
/// file over the record, and no spare is made.
#[tokio::test]
async fn without_exchange_records_are_renamed_over() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    b.dir(true).unwrap().unwrap().without_exchange();
    let r = res("nfs");
    for round in 1..=3 {
        let l = grant(&b, &r).await;
        assert_eq!(l.fencing_token, Some(round));
        assert_eq!(
            b.current(&r).await.unwrap().map(|c| c.id),
            Some(l.id.clone())
        );
        assert!(b.release(&r, &l.id).await.unwrap());
    }
    assert_eq!(names(tmp.path()), ["nfs.lease", "nfs.lock", "nfs.token"]);
}

/// A spare that is not a private regular file of ours with one name is never written: the record
/// goes through a fresh temporary file, and whatever the spare points to is left alone.
#[tokio::test]
async fn untrusted_spare_is_left_alone() {
    for case in ["symlink", "readable", "hard link"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("locks");
        fs::create_dir(&dir).unwrap();
        let b = File::at(&dir).unwrap();
        let r = res("spare");
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"precious").unwrap();
        let spare = dir.join(name::spare("spare"));
        match case {
            "symlink" => symlink(&outside, &spare).unwrap(),
            "readable" => {
                fs::write(&spare, b"precious").unwrap();
                fs::set_permissions(&spare, fs::Permissions::from_mode(0o644)).unwrap();
            }
            _ => {
                fs::set_permissions(&outside, fs::Permissions::from_mode(0o600)).unwrap();
                fs::hard_link(&outside, &spare).unwrap();
            }
        }
        for _ in 0..3 {
            let l = grant(&b, &r).await;
            assert!(b.release(&r, &l.id).await.unwrap(), "{case}");
        }
        assert_eq!(fs::read(&outside).unwrap(), b"precious", "{case}");
        if case == "readable" {
            assert_eq!(fs::read(&spare).unwrap(), b"precious", "{case}");
        }
        let leftovers = names(&dir)
            .into_iter()
            .filter(|n| n.ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0, "{case}");
        assert_eq!(stored_record(&dir, &r).token, 3, "{case}");
    }
}

fn reservation_path(dir: &Path, r: &Resource) -> PathBuf {
    dir.join(name::reservation(r.as_str()))
}

/// The stored reservation and the inode of its file (every write replaces the file).
fn stored_reservation(dir: &Path, r: &Resource) -> (record::Reservation, u64) {
    let path = reservation_path(dir, r);
    let bytes = fs::read(&path).unwrap();
    let ino = fs::metadata(&path).unwrap().ino();
    (record::Reservation::decode(&bytes, r).unwrap(), ino)
}

fn stored_record(dir: &Path, r: &Resource) -> record::Record {
    record::Record::decode(&fs::read(record_path(dir, r)).unwrap(), r).unwrap()
}

fn store_record(dir: &Path, r: &Resource, rec: &record::Record) {
    fs::write(record_path(dir, r), rec.encode(r).unwrap()).unwrap();
}

fn store_reservation(dir: &Path, r: &Resource, res: &record::Reservation) {
    fs::write(reservation_path(dir, r), res.encode(r).unwrap()).unwrap();
}

#[tokio::test]
async fn reservation_is_written_once_per_block() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("busy resource");
    let boot_id = record::Now::read().boot_id;
    let mut writes = 0;
    let mut last: Option<(record::Reservation, u64)> = None;
    for expect in 1..=record::BLOCK + 1 {
        let l = grant(&b, &r).await;
        assert_eq!(l.fencing_token, Some(expect));
        let now = stored_reservation(tmp.path(), &r);
        assert!(now.0.reserved >= expect);
        assert_eq!(now.0.boot_id, boot_id);
        if last.as_ref() != Some(&now) {
            writes += 1;
            last = Some(now);
        }
        assert!(b.release(&r, &l.id).await.unwrap());
    }
    // The first grant reserved 1..=BLOCK, grant BLOCK + 1 the next block.
    assert_eq!(writes, 2);
    assert_eq!(last.unwrap().0.reserved, 2 * record::BLOCK);
}

#[tokio::test]
async fn tokens_jump_past_the_reservation_after_a_reboot() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("rebooted");
    let l = grant(&b, &r).await;
    b.release(&r, &l.id).await.unwrap();
    // Simulate a power loss: tokens up to 700 were issued in an earlier boot, the record was
    // rolled back to token 5, and the reservation (fsynced) says 1024.
    let mut rec = stored_record(tmp.path(), &r);
    rec.token = 5;
    rec.boot_id = "earlier-boot".into();
    store_record(tmp.path(), &r, &rec);
    let before = record::Reservation {
        reserved: record::BLOCK,
        boot_id: "earlier-boot".into(),
    };
    store_reservation(tmp.path(), &r, &before);

    let l = grant(&b, &r).await;
    assert_eq!(l.fencing_token, Some(before.reserved + 1));
    let (after, _) = stored_reservation(tmp.path(), &r);
    assert_eq!(after.reserved, before.reserved + record::BLOCK);
    assert_eq!(after.boot_id, record::Now::read().boot_id);
    // Back to counting by one within this boot.
    b.release(&r, &l.id).await.unwrap();
    assert_eq!(grant(&b, &r).await.fencing_token, Some(before.reserved + 2));
}

#[tokio::test]
async fn lost_record_continues_above_the_reservation() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("lost");
    let l = grant(&b, &r).await;
    b.release(&r, &l.id).await.unwrap();
    fs::remove_file(record_path(tmp.path(), &r)).unwrap();
    assert_eq!(grant(&b, &r).await.fencing_token, Some(record::BLOCK + 1));
}

/// A renewal after a reboot stamps the new boot id onto a record that a power loss may have
/// rolled back; the next grant must still go past the reservation.
#[tokio::test]
async fn renewal_after_a_reboot_does_not_hide_it() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("renewed across boots");
    let l = grant(&b, &r).await;
    let mut rec = stored_record(tmp.path(), &r);
    rec.token = 5;
    rec.boot_id = "earlier-boot".into();
    store_record(tmp.path(), &r, &rec);
    store_reservation(
        tmp.path(),
        &r,
        &record::Reservation {
            reserved: record::BLOCK,
            boot_id: "earlier-boot".into(),
        },
    );
    // Still live by the wall clock: renew it in this boot, then release it.
    let renewed = b.renew(&r, &l.id, Duration::from_secs(60)).await.unwrap();
    assert!(matches!(renewed, Renewal::Renewed(_)), "{renewed:?}");
    assert_eq!(
        stored_record(tmp.path(), &r).boot_id,
        record::Now::read().boot_id
    );
    assert!(b.release(&r, &l.id).await.unwrap());
    assert_eq!(grant(&b, &r).await.fencing_token, Some(record::BLOCK + 1));
}

#[tokio::test]
async fn missing_reservation_continues_from_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("legacy");
    for _ in 0..3 {
        let l = grant(&b, &r).await;
        b.release(&r, &l.id).await.unwrap();
    }
    // As left by a version without reservations (which fsynced every record).
    fs::remove_file(reservation_path(tmp.path(), &r)).unwrap();
    assert_eq!(grant(&b, &r).await.fencing_token, Some(4));
    let (res, _) = stored_reservation(tmp.path(), &r);
    assert_eq!(res.reserved, 4 + record::BLOCK - 1);
}

#[tokio::test]
async fn corrupt_reservation_is_reported_and_left_alone() {
    for (damage, why) in [
        (&b"\x00garbage"[..], "not JSON"),
        (b"{}", "not a lockrun record: missing field `v`"),
        (
            b"{\"v\":2,\"resource\":\"damaged token\",\"new_field\":1}",
            "written in version 2 of the format",
        ),
        (b"", "empty"),
        (
            b"{\"v\":1,\"resource\":\"damaged token\",\"reserved\":9999,\"boot_id\":\"\",\"sum\":\"0\"}",
            "checksum mismatch",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let b = File::at(tmp.path()).unwrap();
        let r = res("damaged token");
        let l = grant(&b, &r).await;
        let path = reservation_path(tmp.path(), &r);
        fs::write(&path, damage).unwrap();
        // Only a grant needs the reservation.
        assert!(matches!(
            b.renew(&r, &l.id, Duration::from_secs(60)).await.unwrap(),
            Renewal::Renewed(_)
        ));
        assert!(b.release(&r, &l.id).await.unwrap());
        let id = LeaseId::generate();
        let req = AcquireRequest {
            resource: &r,
            id: &id,
            principal: "p",
            ttl: Duration::from_secs(1),
        };
        match b.try_acquire(&req).await.unwrap_err() {
            Error::Corrupt(m) => {
                assert!(m.contains(&path.display().to_string()), "{m}");
                assert!(m.contains("reservation") && m.contains(why), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), damage, "the reservation was rewritten");
        // The grant did not happen.
        assert!(b.current(&r).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn symlinked_reservation_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("linked token");
    let l = grant(&b, &r).await;
    b.release(&r, &l.id).await.unwrap();
    let path = reservation_path(tmp.path(), &r);
    let target = tmp.path().join("elsewhere");
    fs::rename(&path, &target).unwrap();
    symlink(&target, &path).unwrap();
    let id = LeaseId::generate();
    let req = AcquireRequest {
        resource: &r,
        id: &id,
        principal: "p",
        ttl: Duration::from_secs(1),
    };
    match b.try_acquire(&req).await.unwrap_err() {
        Error::Corrupt(m) => assert!(m.contains("symbolic link"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[tokio::test]
async fn survives_a_deleted_lock_file() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("x");
    let l = grant(&b, &r).await;
    fs::remove_file(tmp.path().join(name::lock("x"))).unwrap();
    assert_eq!(b.current(&r).await.unwrap().map(|c| c.id), Some(l.id));
}

/// Damages the record with `damage`, then checks every operation reports it and leaves it alone.
async fn assert_corrupt(damage: impl FnOnce(&Path, &Path), why: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("damaged record");
    let l = grant(&b, &r).await;
    let path = record_path(tmp.path(), &r);
    damage(&path, tmp.path());
    let before = fs::symlink_metadata(&path).map(|m| (m.ino(), m.len())).ok();
    let bytes = fs::read(&path).ok();
    let check = |e: Error| match e {
        Error::Corrupt(m) => {
            assert!(m.contains(&path.display().to_string()), "{m}");
            assert!(m.contains(why), "{m}");
            assert!(m.ends_with("inspect or delete it"), "{m}");
        }
        other => panic!("{other:?}"),
    };
    let id = LeaseId::generate();
    let req = AcquireRequest {
        resource: &r,
        id: &id,
        principal: "p",
        ttl: Duration::from_secs(1),
    };
    check(b.try_acquire(&req).await.unwrap_err());
    check(b.current(&r).await.unwrap_err());
    check(
        b.renew(&r, &l.id, Duration::from_secs(9))
            .await
            .unwrap_err(),
    );
    check(b.release(&r, &l.id).await.unwrap_err());
    let after = fs::symlink_metadata(&path).map(|m| (m.ino(), m.len())).ok();
    assert_eq!(before, after, "the damaged record was replaced");
    assert_eq!(
        bytes,
        fs::read(&path).ok(),
        "the damaged record was rewritten"
    );
}

#[tokio::test]
async fn garbage_record() {
    assert_corrupt(
        |p, _| fs::write(p, b"\x00\xffnot a lease").unwrap(),
        "not JSON",
    )
    .await;
}

/// What a power loss can leave of a record that was being replaced: with the reservation there,
/// the resource is free and tokens go on past the reservation.
#[tokio::test]
async fn empty_record_is_a_lease_lost_in_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("emptied");
    let held = grant(&b, &r).await;
    fs::write(record_path(tmp.path(), &r), b"").unwrap();
    assert_eq!(b.current(&r).await.unwrap(), None);
    assert!(!b.release(&r, &held.id).await.unwrap());
    assert_eq!(grant(&b, &r).await.fencing_token, Some(record::BLOCK + 1));
}

/// Without a reservation nothing bounds the tokens issued before: an empty record is corrupt.
#[tokio::test]
async fn empty_record_without_reservation() {
    assert_corrupt(
        |p, dir| {
            fs::write(p, b"").unwrap();
            fs::remove_file(reservation_path(dir, &res("damaged record"))).unwrap();
        },
        "empty",
    )
    .await;
}

#[tokio::test]
async fn torn_record() {
    assert_corrupt(
        |p, _| {
            let bytes = fs::read(p).unwrap();
            fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
        },
        "not JSON",
    )
    .await;
}

#[tokio::test]
async fn edited_record() {
    assert_corrupt(
        |p, _| {
            let text = fs::read_to_string(p).unwrap();
            fs::write(p, text.replace("\"released\":false", "\"released\":true")).unwrap();
        },
        "checksum mismatch",
    )
    .await;
}

#[tokio::test]
async fn record_of_another_resource() {
    assert_corrupt(
        |p, _| {
            let rec = record::Record::decode(&fs::read(p).unwrap(), &res("damaged record"));
            fs::write(p, rec.unwrap().encode(&res("other")).unwrap()).unwrap();
        },
        "belongs to resource \"other\"",
    )
    .await;
}

#[tokio::test]
async fn symlinked_record() {
    assert_corrupt(
        |p, dir| {
            let target = dir.join("target");
            fs::rename(p, &target).unwrap();
            symlink(&target, p).unwrap();
        },
        "symbolic link",
    )
    .await;
}

#[tokio::test]
async fn symlinked_lock_file_is_corrupt_not_an_internal_error() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("linked");
    grant(&b, &r).await;
    let lock = fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "lock"))
        .expect("a .lock file");
    fs::remove_file(&lock).unwrap();
    symlink(tmp.path().join("elsewhere"), &lock).unwrap();
    match b.current(&r).await.unwrap_err() {
        Error::Corrupt(m) => assert!(m.contains("symbolic link"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(
        !tmp.path().join("elsewhere").exists(),
        "nothing written through it"
    );
}

#[tokio::test]
async fn directory_instead_of_record() {
    assert_corrupt(
        |p, _| {
            fs::remove_file(p).unwrap();
            fs::create_dir(p).unwrap();
        },
        "not a regular file",
    )
    .await;
}

async fn quiet(w: &mut Box<dyn Watch>, why: &str) {
    let r = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
    assert!(r.is_err(), "woke up for {why}");
}

async fn wakes(w: &mut Box<dyn Watch>, why: &str) {
    tokio::time::timeout(Duration::from_secs(5), w.changed())
        .await
        .unwrap_or_else(|_| panic!("no wake-up for {why}"))
        .unwrap();
}

#[tokio::test]
async fn watch_ignores_other_resources() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let mut w = b.watch(&res("mine")).await.unwrap().expect("inotify");
    let other = grant(&b, &res("other")).await;
    b.release(&res("other"), &other.id).await.unwrap();
    quiet(&mut w, "another resource").await;
    // Writing the reservation alone wakes no one.
    {
        let mine = res("mine");
        let locked = b.dir(true).unwrap().unwrap().lock(&mine).unwrap();
        locked
            .reserve(&record::Reservation {
                reserved: 7,
                boot_id: String::new(),
            })
            .unwrap();
    }
    quiet(&mut w, "the reservation").await;
}

#[tokio::test]
async fn watch_wakes_for_what_may_free_the_resource_not_for_grants() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let other = File::at(tmp.path()).unwrap(); // another process, as far as the files go
    let r = res("mine");
    let mut w = b.watch(&r).await.unwrap().expect("inotify");
    let first = grant(&other, &r).await;
    quiet(&mut w, "a grant").await;
    other
        .renew(&r, &first.id, Duration::from_secs(1))
        .await
        .unwrap();
    wakes(&mut w, "a renewal (it may shorten the lease)").await;
    other.release(&r, &first.id).await.unwrap();
    wakes(&mut w, "a release").await;
    // A release that finds the lease gone changes nothing and wakes no one.
    other.release(&r, &first.id).await.unwrap();
    quiet(&mut w, "a release of a lease already released").await;
    grant(&other, &r).await;
    quiet(&mut w, "the next grant").await;
    fs::remove_file(record_path(tmp.path(), &r)).unwrap();
    wakes(&mut w, "the record's deletion").await;
}

#[tokio::test]
async fn watch_falls_back_to_record_writes_when_the_lock_file_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("mine");
    let mut w = b.watch(&r).await.unwrap().expect("inotify");
    fs::remove_file(tmp.path().join(name::lock("mine"))).unwrap();
    wakes(&mut w, "the lock file's removal").await;
    // Releases now touch a new lock file nobody watches; the record is watched instead.
    grant(&b, &r).await;
    wakes(&mut w, "a write of the record").await;
}

#[tokio::test]
async fn a_busy_resource_is_answered_without_its_kernel_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("x");
    let holder = grant(&b, &r).await;
    let id = LeaseId::generate();
    let req = AcquireRequest {
        resource: &r,
        id: &id,
        principal: "me@here",
        ttl: Duration::from_secs(60),
    };
    {
        // Another process in the middle of a step on this resource.
        let _held = b.dir(true).unwrap().unwrap().lock(&r).unwrap();
        let busy = tokio::time::timeout(Duration::from_secs(1), b.try_acquire(&req))
            .await
            .expect("waited for the kernel lock")
            .unwrap();
        assert!(matches!(busy, Acquire::Busy { holder: Some(h), .. } if h.id == holder.id));
    }
    b.release(&r, &holder.id).await.unwrap();
    // A free resource is decided under the kernel lock: the attempt waits for it.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel::<()>();
    let path = tmp.path().to_owned();
    let stepper = std::thread::spawn(move || {
        let dir = Dir::open(&path, false).unwrap().unwrap();
        let r = res("x");
        let _held = dir.lock(&r).unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    locked_rx.recv().unwrap();
    let started = std::time::Instant::now();
    let got = b.try_acquire(&req).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
    stepper.join().unwrap();
    assert!(matches!(got, Acquire::Acquired(l) if l.id == id));
}

/// A process stopped in the middle of a step keeps the resource's kernel lock: a step waiting
/// for it can be cancelled (a caller's timeout), and gives up as unavailable after
/// `LOCK_PATIENCE` rather than hang (`acquire -n` used to wait for good).
#[tokio::test(start_paused = true)]
async fn a_step_behind_a_stalled_holder_gives_up_as_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    let b = File::at(tmp.path()).unwrap();
    let r = res("stalled");
    let id = LeaseId::generate();
    let req = AcquireRequest {
        resource: &r,
        id: &id,
        principal: "me@here",
        ttl: Duration::from_secs(60),
    };
    let _held = b.dir(true).unwrap().unwrap().lock(&r).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), b.try_acquire(&req))
            .await
            .is_err(),
        "the wait is cancellable"
    );
    let started = tokio::time::Instant::now();
    match b.try_acquire(&req).await {
        Err(Error::Unavailable(m)) => assert!(m.contains("does not finish its step"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= super::LOCK_PATIENCE);
}

#[tokio::test]
async fn conformance_smoke() {
    // The full suite runs in tests/conformance_file.rs; this keeps the unit run honest.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let suite = Suite::new("unit", move || {
        let dir = dir.clone();
        Box::pin(async move { File::at(&dir).map(|f| Arc::new(f) as Arc<dyn Backend>) })
    })
    .race(4, 5);
    for p in [
        "exclusive_acquire",
        "race_one_winner_per_round",
        "resource_names",
    ] {
        assert_eq!(
            suite.run(p).await,
            crate::backend::conformance::Outcome::Passed,
            "{p}"
        );
    }
}
