//! Shared helpers for integration tests: run the real binary in an isolated environment.
#![allow(dead_code)]

pub mod certs;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod etcd;
#[cfg(feature = "kubernetes")]
pub mod k8s;
#[cfg(feature = "memcached")]
pub mod memcached;
#[cfg(feature = "postgres")]
pub mod pgbouncer;
pub mod proxy;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// An isolated home for one test: its own lock directory and config location.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The file backend URL of this environment.
    pub fn backend(&self) -> String {
        format!("file://{}/locks", self.path().display())
    }

    /// `lockrun` with a clean environment pointing at this test's directories.
    pub fn cmd(&self) -> Command {
        cmd_in(self.path())
    }

    /// Runs lockrun with `args` and waits for it.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn lockrun")
    }

    /// Runs a shell command line in this environment (for redirections such as `3>file`).
    pub fn cmd_sh(&self, line: &str) -> Output {
        let c = cmd_in(self.path());
        let mut sh = Command::new("sh");
        sh.args(["-c", line]).stdin(Stdio::null());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        sh.output().expect("sh")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Makes a FIFO at `name` (relative to this environment) and returns its path.
    pub fn fifo(&self, name: &str) -> PathBuf {
        let path = self.file(name);
        assert!(Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo")
            .success());
        path
    }

    /// Runs lockrun with `args` against the backend section `[backend.r]` whose body is
    /// `section` (`url = "..."` and any settings), written to this environment's config file.
    pub fn run_section(&self, section: &str, args: &[&str]) -> Output {
        let config = self.file("config.toml");
        std::fs::write(&config, format!("[backend.r]\n{section}\n")).expect("config");
        self.cmd()
            .arg("-c")
            .arg(&config)
            .args(["-b", "r"])
            .args(args)
            .output()
            .expect("spawn lockrun")
    }
}

/// `lockrun` with a clean environment whose home, config and lock directory are under `dir`.
pub fn cmd_in(dir: &Path) -> Command {
    {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lockrun"));
        for (k, _) in std::env::vars() {
            if k.starts_with("LOCKRUN_") || k.starts_with("XDG_") {
                c.env_remove(k);
            }
        }
        c.env("HOME", dir)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_STATE_HOME", dir.join("state"))
            .env("LOCKRUN_BACKEND", format!("file://{}/locks", dir.display()))
            .stdin(Stdio::null());
        c
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and that stderr is exactly one `lockrun: ` line containing `needle`.
#[track_caller]
pub fn assert_fails(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one stderr line, got: {err:?}");
    assert!(lines[0].starts_with("lockrun: "), "prefix: {err:?}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Asserts the exit code and that the last stderr line is the `lockrun: ` line with `needle`
/// (progress lines such as "waiting for" may come before it).
#[track_caller]
pub fn assert_fails_last(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("lockrun: ") && last.contains(needle),
        "{needle:?} not in last line of {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// Polls `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// The fencing token of a lease printed with `--json`.
pub fn token_of(json: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
    v["fencing_token"].as_u64().expect("token")
}

/// The lease id of a lease printed with `--json`.
pub fn lease_id_of(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
    v["lease_id"].as_str().expect("lease_id").to_owned()
}
