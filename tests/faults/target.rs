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
//!
//! moto_server (DynamoDB) and memcached keep everything in memory: a restart loses every lease
//! and fencing counter, which is what those servers do and no client can prevent, so they are
//! never restarted ([`Kind::faults`]). The Kubernetes API is the in-process stand-in
//! (`tests/common/k8s.rs`): its pause answers nothing until the resume, as a SIGSTOPped
//! kube-apiserver would, and its restart cuts every connection and listens again on the same
//! port over the same store, as a kube-apiserver restarted over a surviving etcd would.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::chaos::Fault;
use super::proc::{alive, group_members, kill, stat};
use crate::common::k8s::{self, StandIn};
use crate::common::server::{self, Server};
use crate::common::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Redis,
    Postgres,
    Etcd,
    Dynamodb,
    Memcached,
    Kubernetes,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Redis => "redis",
            Kind::Postgres => "postgres",
            Kind::Etcd => "etcd",
            Kind::Dynamodb => "dynamodb",
            Kind::Memcached => "memcached",
            Kind::Kubernetes => "kubernetes",
        }
    }

    pub fn all() -> [Kind; 7] {
        [
            Kind::File,
            Kind::Redis,
            Kind::Postgres,
            Kind::Etcd,
            Kind::Dynamodb,
            Kind::Memcached,
            Kind::Kubernetes,
        ]
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::all().into_iter().find(|k| k.name() == s)
    }

    /// The faults that are real for this backend, in the order of the injector's first round.
    ///
    /// - The file backend has no server.
    /// - moto_server and memcached keep everything in memory: a restart loses every lease (and
    ///   memcached's fencing counter), a property of those servers that no lock client can
    ///   protect against, so they are paused but never restarted.
    /// - Redis, PostgreSQL and etcd keep acknowledged writes across a crash of the process, and
    ///   the Kubernetes stand-in's restart keeps its store (as kube-apiserver over etcd).
    pub fn faults(self) -> &'static [Fault] {
        use Fault::*;
        match self {
            Kind::File => &[KillChild, KillLockrun, StopLockrun],
            Kind::Dynamodb | Kind::Memcached => &[KillChild, KillLockrun, StopLockrun, PauseServer],
            Kind::Redis | Kind::Postgres | Kind::Etcd | Kind::Kubernetes => &[
                KillChild,
                KillLockrun,
                StopLockrun,
                PauseServer,
                RestartServer,
            ],
        }
    }
}

impl Kind {
    /// How long after a `kill -9` of a holder a queued waiter must have started.
    ///
    /// TTL + 1 s where a waiter learns the holder's expiry from the store (Redis, PostgreSQL,
    /// etcd, the file backend): it wakes when the lease expires. TTL + 2 s where waiters poll
    /// and take over by the clock-free rule (DynamoDB, Kubernetes; memcached as well, whose key
    /// expiry is whole seconds): a waiter sees the holder's last renewal only at its next poll,
    /// up to 1.25 s later (lockrun's longest poll, jittered), and counts the TTL from that
    /// observation.
    pub fn takeover_bound(self, ttl: Duration) -> Duration {
        match self {
            Kind::File | Kind::Redis | Kind::Postgres | Kind::Etcd => ttl + Duration::from_secs(1),
            Kind::Dynamodb | Kind::Memcached | Kind::Kubernetes => ttl + Duration::from_secs(2),
        }
    }
}

/// A backend's server: a process of its own, or the in-process Kubernetes stand-in.
pub enum BackendServer {
    Process(Restartable),
    StandIn(StandIn),
}

impl BackendServer {
    /// Freezes the server: SIGSTOP of its processes, or the stand-in's paused mode.
    pub fn pause(&self) {
        match self {
            BackendServer::Process(r) => r.pause(),
            BackendServer::StandIn(s) => s.pause(),
        }
    }

    pub fn resume(&self) {
        match self {
            BackendServer::Process(r) => r.resume(),
            BackendServer::StandIn(s) => s.resume(),
        }
    }

    /// Crashes the server and starts it again (SIGKILL of every process; for the stand-in, every
    /// connection cut and the port closed for 1 s). Returns how long it was down.
    pub fn crash_restart(&self) -> Duration {
        match self {
            BackendServer::Process(r) => r.restart(libc::SIGKILL),
            BackendServer::StandIn(s) => s.restart(Duration::from_secs(1)),
        }
    }

    /// The server's port (the stand-in's too).
    pub fn port(&self) -> u16 {
        match self {
            BackendServer::Process(r) => r.port,
            BackendServer::StandIn(s) => s.port,
        }
    }
}

/// A backend with, for network backends, a server of its own.
pub struct Target {
    pub kind: Kind,
    pub url: String,
    pub env: Env,
    pub server: Option<BackendServer>,
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
                (url, Some(BackendServer::Process(r)))
            }
            Kind::Postgres => {
                let s = server::start_postgres();
                let url = server::postgres_url(&s);
                let r = Restartable::capture(
                    &s,
                    &[("synchronous_commit=off", "synchronous_commit=on")],
                );
                // Come back with the durable setting before anything is written, and wait out
                // "the database system is starting up" (the port opens before that ends, and a
                // trial's first lockrun would exit 69 on it).
                r.restart(libc::SIGINT);
                server::psql(
                    &Server {
                        port: r.port,
                        dir: r.dir.clone(),
                        pid: r.pid() as u32,
                    },
                    "SELECT 1",
                );
                (url, Some(BackendServer::Process(r)))
            }
            Kind::Etcd => {
                let s = crate::common::etcd::start_etcd();
                (
                    crate::common::etcd::url(&s),
                    Some(BackendServer::Process(Restartable::capture(&s, &[]))),
                )
            }
            Kind::Dynamodb => {
                // A moto_server of its own (the pauses must not freeze other tests).
                let s = crate::common::dynamodb::start_moto(&[]);
                let url = crate::common::dynamodb::url(&s, &crate::common::dynamodb::table());
                (
                    url,
                    Some(BackendServer::Process(Restartable::capture(&s, &[]))),
                )
            }
            Kind::Memcached => {
                let s = crate::common::memcached::start_memcached(&[]);
                (
                    crate::common::memcached::url(&s),
                    Some(BackendServer::Process(Restartable::capture(&s, &[]))),
                )
            }
            Kind::Kubernetes => {
                let s = StandIn::start();
                s.write_kubeconfig(env.path(), k8s::NAMESPACE);
                (
                    format!("kubernetes://{}", k8s::NAMESPACE),
                    Some(BackendServer::StandIn(s)),
                )
            }
        };
        let target = Target {
            kind,
            url,
            env,
            server,
        };
        if kind == Kind::Dynamodb {
            // The table, as an operator makes it.
            let out = target.lockrun().arg("init").output().expect("lockrun init");
            assert!(
                out.status.success(),
                "lockrun init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        target
    }

    /// `lockrun -q -b URL` in this target's environment (for DynamoDB with dummy credentials
    /// and no other AWS variable, for Kubernetes with the stand-in's kubeconfig).
    pub fn lockrun(&self) -> Command {
        let mut c = self.env.cmd();
        c.args(["-q", "-b", &self.url]);
        match self.kind {
            Kind::Dynamodb => {
                crate::common::dynamodb::aws_env(&mut c);
            }
            Kind::Kubernetes => {
                for var in [
                    "KUBERNETES_SERVICE_HOST",
                    "KUBERNETES_SERVICE_PORT",
                    "HTTPS_PROXY",
                    "https_proxy",
                    "HTTP_PROXY",
                    "http_proxy",
                ] {
                    c.env_remove(var);
                }
                c.env("KUBECONFIG", self.env.path().join("kubeconfig"));
            }
            _ => {}
        }
        c
    }

    /// The server's own view of when the lease on `resource` expires (ns since the epoch), where
    /// the server offers an absolute expiry: Redis `PEXPIRETIME`, PostgreSQL `expires_at`.
    ///
    /// None for the others. etcd has leases with a TTL but no absolute time. DynamoDB and the
    /// Kubernetes Lease API have no server clock at all: the record holds the holder's own
    /// expiry, and another client takes over only after it has seen the record unchanged for a
    /// full TTL on its own clock (or after the stored expiry plus a skew allowance). memcached's
    /// expiry is whole seconds on its own clock (readable only as seconds left), so it is no
    /// millisecond figure either.
    pub fn server_expiry(&self, resource: &str) -> Option<i64> {
        let port = self.server.as_ref()?.port();
        match self.kind {
            Kind::Redis => {
                let out = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "PEXPIRETIME"])
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
                    .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                    .args(["-U", "postgres", "-At", "-c", &sql, "postgres"])
                    .env("PGPASSWORD", server::PG_PASSWORD)
                    .output()
                    .ok()?;
                let us: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
                Some(us * 1000)
            }
            Kind::File | Kind::Etcd | Kind::Dynamodb | Kind::Memcached | Kind::Kubernetes => None,
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
