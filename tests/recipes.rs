//! The README's recipes work when pasted: each shell block is taken from README.md as written
//! and run against the file backend, with stub programs for the commands it protects.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

/// The code block that follows `heading` in README.md.
fn block_after(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let at = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let rest = &readme[at..];
    let start = rest.find("```").unwrap();
    let body = &rest[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_owned()
}

/// A shell in `env` whose PATH finds lockrun, with stubs in the working directory.
fn shell(env: &Env, script: &str) -> std::process::Output {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_lockrun"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("sh");
    c.args(["-c", script])
        .current_dir(env.path())
        .env("PATH", path);
    for (k, v) in env.cmd().get_envs() {
        if let (k, Some(v)) = (k, v) {
            c.env(k, v);
        }
    }
    c.output().unwrap()
}

fn stub(env: &Env, name: &str, body: &str) {
    let p = env.file(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn migration_recipe_holds_the_lease_across_commands() {
    let env = Env::new();
    let script = block_after("A migration holding a lease across several commands:");
    // The stub records whether it ran while the lease was held.
    stub(
        &env,
        "migrate",
        "lockrun current --id-only db-migration >> migrate.log && echo \"$1\" >> migrate.log",
    );
    let o = shell(&env, &script);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let log = std::fs::read_to_string(env.file("migrate.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{log}");
    assert_eq!(lines[0], lines[2], "the same lease across both steps");
    assert_eq!(&lines[1..2], ["step1"]);
    assert_eq!(&lines[3..4], ["step2"]);
    // The trap released it.
    assert_eq!(env.run(&["current", "db-migration"]).status.code(), Some(1));
}

#[test]
fn fencing_recipe_writes_only_with_a_newer_token() {
    let env = Env::new();
    let data = env.file("data");
    std::fs::create_dir(&data).unwrap();
    let script = block_after("A command that checks the fencing token before writing:")
        .replace("/data/", &format!("{}/", data.display()));
    stub(&env, "write-report", "echo written >> report.log");
    for _ in 0..3 {
        let o = shell(&env, &script);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    assert_eq!(
        std::fs::read_to_string(data.join("report.token"))
            .unwrap()
            .trim(),
        "3"
    );
    assert_eq!(
        std::fs::read_to_string(env.file("report.log"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    // A stale token (a higher one was recorded) is refused.
    std::fs::write(data.join("report.token"), "100\n").unwrap();
    let o = shell(&env, &script);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("stale lease"));
}

#[test]
fn cron_recipe_is_silent_when_busy() {
    let env = Env::new();
    let line = block_after("Cron — skip a run when the previous one is still going, quietly:");
    let command = line
        .splitn(6, ' ')
        .nth(5)
        .unwrap()
        .trim()
        .replace("/usr/local/bin/sync-reports", "true");
    // The recipe names lockrun where scripts/install puts it, in the test's home.
    assert!(
        command.starts_with("$HOME/.cargo/bin/lockrun "),
        "{command}"
    );
    let bin = env.path().join(".cargo/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lockrun"), bin.join("lockrun")).unwrap();
    let id = stdout(&env.run(&["acquire", "sync-reports"]));
    let o = shell(&env, &command);
    assert_eq!(o.status.code(), Some(75));
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "cron would mail: {}",
        stderr(&o)
    );
    env.run(&["release", "sync-reports", id.trim()]);
    assert_eq!(shell(&env, &command).status.code(), Some(0));
}
