//! The backend under test, and its server as something a fault can pause, resume and restart.
//!
//! Servers are started by the test harness (`tests/common`) on free loopback ports. A restart is
//! a crash: SIGKILL to the server process and all its descendants, then the very same command line (read
//! back from `/proc/PID/cmdline`, with its user, environment and working directory) started
//! again on the same port and data directory. The servers are configured so that an
//! acknowledged write survives that: Redis with `appendonly yes` and `appendfsync always`,
//! PostgreSQL with `synchronous_commit=on` (its `fsync=off` only matters when the machine
//! crashes, not the process), etcd with its defaults (WAL fsynced before each reply).
//! A pause is SIGSTOP to the server process and all its descendants (PostgreSQL serves each
//! connection from a process of its own, in a session of its own: stopping only the postmaster,
//! or its process group, would pause nothing).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::proc::{alive, group_members, kill, stat};
use crate::common::server::{self, Server};
use crate::common::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Redis,
    Postgres,
    Etcd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Redis => "redis",
            Kind::Postgres => "postgres",
            Kind::Etcd => "etcd",
        }
    }

    pub fn all() -> [Kind; 4] {
        [Kind::File, Kind::Redis, Kind::Postgres, Kind::Etcd]
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::all().into_iter().find(|k| k.name() == s)
    }
}

/// A backend with, for network backends, a server of its own.
pub struct Target {
    pub kind: Kind,
    pub url: String,
    pub env: Env,
    pub server: Option<Restartable>,
}

impl Target {
    /// A fresh backend of `kind` (a new server for network backends).
    pub fn start(kind: Kind) -> Target {
        let env = Env::new();
        let (url, server) = match kind {
            Kind::File => (env.backend(), None),
            Kind::Redis => {
                let s = server::start_redis(&["appendonly yes", "appendfsync always"]);
                let url = format!("redis://127.0.0.1:{}/0", s.port);
                let mut r = Restartable::capture(&s, &[]);
                // redis-server rewrites its argv and environ area (process title): use what the
                // harness started it with.
                r.argv = vec![
                    server::which("redis-server").expect("redis-server").into(),
                    s.dir.join("redis.conf").into(),
                ];
                r.envs = std::env::vars_os().collect();
                (url, Some(r))
            }
            Kind::Postgres => {
                let s = server::start_postgres();
                let url = server::postgres_url(&s);
                let r = Restartable::capture(
                    &s,
                    &[("synchronous_commit=off", "synchronous_commit=on")],
                );
                // Come back with the durable setting before anything is written.
                r.restart(libc::SIGINT);
                (url, Some(r))
            }
            Kind::Etcd => {
                let s = crate::common::etcd::start_etcd();
                (
                    crate::common::etcd::url(&s),
                    Some(Restartable::capture(&s, &[])),
                )
            }
        };
        Target {
            kind,
            url,
            env,
            server,
        }
    }

    /// `lockrun -q -b URL` in this target's environment.
    pub fn lockrun(&self) -> Command {
        let mut c = self.env.cmd();
        c.args(["-q", "-b", &self.url]);
        c
    }

    /// The server's own view of when the lease on `resource` expires (ns since the epoch), where
    /// the server offers an absolute expiry: Redis `PEXPIRETIME`, PostgreSQL `expires_at`.
    pub fn server_expiry(&self, resource: &str) -> Option<i64> {
        let s = self.server.as_ref()?;
        match self.kind {
            Kind::Redis => {
                let out = Command::new("redis-cli")
                    .args(["-p", &s.port.to_string(), "PEXPIRETIME"])
                    .arg(format!("lockrun:lease:{resource}"))
                    .output()
                    .ok()?;
                let ms: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
                (ms > 0).then_some(ms * 1_000_000)
            }
            Kind::Postgres => {
                let sql = format!(
                    "SELECT (extract(epoch FROM expires_at) * 1000000)::bigint \
                     FROM lockrun_leases WHERE resource = '{}' AND NOT released",
                    resource.replace('\'', "''")
                );
                let out = Command::new(server::pg_bin().join("psql"))
                    .args(["-h", "127.0.0.1", "-p", &s.port.to_string()])
                    .args(["-U", "postgres", "-At", "-c", &sql, "postgres"])
                    .env("PGPASSWORD", server::PG_PASSWORD)
                    .output()
                    .ok()?;
                let us: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
                Some(us * 1000)
            }
            _ => None,
        }
    }
}

/// A managed server that can be paused, resumed and crash-restarted.
pub struct Restartable {
    pub port: u16,
    pub dir: PathBuf,
    pid: AtomicU32,
    argv: Vec<OsString>,
    uid: u32,
    gid: u32,
    envs: Vec<(OsString, OsString)>,
    cwd: PathBuf,
}

impl Restartable {
    /// Reads the running server's command line, user, environment and directory from `/proc`;
    /// `patch` rewrites arguments (exact matches) for the next start.
    fn capture(s: &Server, patch: &[(&str, &str)]) -> Restartable {
        let read = |f: &str| std::fs::read(format!("/proc/{}/{f}", s.pid)).expect("/proc");
        let split = |b: Vec<u8>| -> Vec<OsString> {
            b.split(|&c| c == 0)
                .filter(|p| !p.is_empty())
                .map(|p| OsString::from_vec(p.to_vec()))
                .collect()
        };
        let argv = split(read("cmdline"))
            .into_iter()
            .map(|a| match patch.iter().find(|(from, _)| a == *from) {
                Some((_, to)) => OsString::from(to),
                None => a,
            })
            .collect();
        let envs = split(read("environ"))
            .into_iter()
            .filter_map(|kv| {
                let kv = kv.into_vec();
                let eq = kv.iter().position(|&c| c == b'=')?;
                Some((
                    OsString::from_vec(kv[..eq].to_vec()),
                    OsString::from_vec(kv[eq + 1..].to_vec()),
                ))
            })
            .collect();
        let status = String::from_utf8(read("status")).expect("status");
        let id = |key: &str| -> u32 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .expect("uid/gid")
        };
        Restartable {
            port: s.port,
            dir: s.dir.clone(),
            pid: AtomicU32::new(s.pid),
            argv,
            uid: id("Uid:"),
            gid: id("Gid:"),
            envs,
            cwd: std::fs::read_link(format!("/proc/{}/cwd", s.pid)).expect("cwd"),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid.load(Ordering::SeqCst) as i32
    }

    /// The server process and all its descendants. (PostgreSQL's backends call `setsid`: they
    /// are not in the postmaster's process group.)
    pub fn tree(&self) -> Vec<i32> {
        let mut pids = vec![self.pid()];
        let mut i = 0;
        while i < pids.len() {
            pids.extend(children(pids[i]));
            i += 1;
        }
        pids
    }

    /// SIGSTOP to every process of the server, the parent first (so it forks no more).
    pub fn pause(&self) {
        for p in self.tree() {
            kill(p, libc::SIGSTOP);
        }
    }

    pub fn resume(&self) {
        for p in self.tree().into_iter().rev() {
            kill(p, libc::SIGCONT);
        }
    }

    /// Stops the server with `sig` sent to its group (SIGKILL: a crash), waits until every
    /// process of it is gone, and starts it again. Returns how long it was down.
    pub fn restart(&self, sig: i32) -> Duration {
        let pid = self.pid();
        let t = Instant::now();
        let tree = self.tree();
        for &p in &tree {
            kill(p, libc::SIGCONT);
        }
        if sig == libc::SIGKILL {
            for &p in &tree {
                kill(p, sig);
            }
        } else {
            kill(pid, sig);
        }
        let end = Instant::now() + Duration::from_secs(30);
        while tree.iter().any(|&p| alive(p)) || !group_members(pid).is_empty() {
            assert!(Instant::now() < end, "server {pid} did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
        // PostgreSQL's socket lock file names the old postmaster too.
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(".s.PGSQL.") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        // PostgreSQL refuses to start while its lock file names a live pid, and the old
        // postmaster stays a zombie of this test process (it is reaped when the process ends).
        let _ = std::fs::remove_file(self.dir.join("data/postmaster.pid"));
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .env_clear()
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd);
        // SAFETY: geteuid has no preconditions.
        if self.uid != unsafe { libc::geteuid() } {
            cmd.uid(self.uid).gid(self.gid);
        }
        let pid = server::spawn_managed(cmd, &self.dir);
        self.pid.store(pid, Ordering::SeqCst);
        server::wait_for_port(self.port, "restarted server", &self.dir);
        t.elapsed()
    }
}

/// The children of `pid` (from `/proc/PID/task/*/children`).
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|&p| stat(p).is_some())
        .collect()
}
