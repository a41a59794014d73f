//! Real servers for backend tests, started by the test process itself.
//!
//! Each server gets a free loopback port and a temporary data directory. A watchdog shell reads
//! a pipe whose write end only this test process holds: when the process ends, however it ends
//! (success, panic, abort, SIGKILL), the pipe closes and the watchdog stops the server and
//! removes its directory. One server per kind is shared by all tests of a test binary; each test
//! uses its own random key prefix.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Write ends of the watchdog pipes and the process handles: held until the process exits (the
/// watchdogs stop and reap the servers then).
static WATCHDOGS: Mutex<Vec<(ChildStdin, Child, Child)>> = Mutex::new(Vec::new());

/// A running server.
#[derive(Debug)]
pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    pub pid: u32,
}

impl Server {
    /// Stops the server process (SIGSTOP), for fault tests.
    pub fn pause(&self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid as i32, libc::SIGSTOP) };
    }

    /// Resumes a paused server.
    pub fn resume(&self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.pid as i32, libc::SIGCONT) };
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The path of a server binary, or a panic that says how to install it. Never a silent skip.
pub fn require(binary: &str, package: &str) -> PathBuf {
    which(binary).unwrap_or_else(|| {
        panic!(
            "{binary} is not installed: run ./scripts/test (it installs the test servers), \
             or apt-get install -y {package}"
        )
    })
}

pub fn which(binary: &str) -> Option<PathBuf> {
    if binary.contains('/') {
        return Path::new(binary).exists().then(|| PathBuf::from(binary));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.is_file())
}

/// A fresh temporary directory for a server (not removed by a destructor: the watchdog does it).
pub fn server_dir(kind: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(&format!("lockrun-{kind}-"))
        .tempdir()
        .expect("tempdir")
        .keep();
    dir
}

/// Starts `cmd` as a managed server: stopped and its `dir` removed when this process ends.
/// Returns the server's pid.
pub fn spawn_managed(mut cmd: Command, dir: &Path) -> u32 {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(
            std::fs::File::create(dir.join("server.log")).expect("log file"),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("server.err")).expect("log file"),
        ));
    // The server gets its own process group, so terminal signals to the tests do not reach it.
    cmd.process_group(0);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let script = format!(
        "read _ignored; kill -TERM {pid} 2>/dev/null; i=0; \
         while kill -0 {pid} 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; \
         kill -KILL {pid} 2>/dev/null; rm -rf '{dir}'",
        pid = child.id(),
        dir = dir.display()
    );
    let mut watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("watchdog");
    let pipe = watchdog.stdin.take().expect("watchdog pipe");
    let pid = child.id();
    WATCHDOGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((pipe, child, watchdog));
    pid
}

/// Waits until something accepts connections on the port.
pub fn wait_for_port(port: u16, what: &str, dir: &Path) {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(dir.join("server.err")).unwrap_or_default()
        + &std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    panic!("{what} did not start on port {port}:\n{log}");
}

/// A random key prefix for one test.
pub fn prefix() -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).expect("random");
    format!(
        "t{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

// ---------------------------------------------------------------------------------------------
// Redis

/// The shared Redis server of this test binary (persistence off).
pub fn redis() -> &'static Server {
    static REDIS: OnceLock<Server> = OnceLock::new();
    REDIS.get_or_init(|| start_redis(&[]))
}

/// A Redis server of its own (for tests that stop or reconfigure it); `extra` are config lines.
pub fn start_redis(extra: &[&str]) -> Server {
    let dir = server_dir("redis");
    let port = free_port();
    launch_redis(dir, port, &format!("port {port}"), extra)
}

/// A Redis server that speaks only TLS, with a server certificate for 127.0.0.1 made in its
/// directory (see [`super::certs`]); clients need no certificate. Returns the certificates too.
pub fn start_redis_tls() -> (Server, super::certs::Certs) {
    let dir = server_dir("redis-tls");
    let certs = super::certs::make(&dir);
    let port = free_port();
    let tls = format!(
        "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
         tls-auth-clients no",
        certs.server_cert.display(),
        certs.server_key.display(),
        certs.ca.display()
    );
    (launch_redis(dir, port, &tls, &[]), certs)
}

/// Kills `server` (SIGKILL: its keys are gone, as after a crash without persistence) and starts
/// a new one on the same port once the old one refuses connections.
pub fn restart_redis(server: &Server) -> Server {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(server.pid as i32, libc::SIGKILL) };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
        assert!(std::time::Instant::now() < end, "redis-server did not die");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let port = server.port;
    launch_redis(server_dir("redis"), port, &format!("port {port}"), &[])
}

fn launch_redis(dir: PathBuf, port: u16, listen: &str, extra: &[&str]) -> Server {
    let bin = require("redis-server", "redis-server");
    let mut conf = format!(
        "{listen}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\nprotected-mode yes\n",
        dir.display()
    );
    for line in extra {
        conf.push_str(line);
        conf.push('\n');
    }
    std::fs::write(dir.join("redis.conf"), conf).expect("redis.conf");
    let mut cmd = Command::new(bin);
    cmd.arg(dir.join("redis.conf"));
    let pid = spawn_managed(cmd, &dir);
    wait_for_port(port, "redis-server", &dir);
    Server { port, dir, pid }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// The superuser password of the test clusters.
pub const PG_PASSWORD: &str = "lockrun-test-pw";

/// The shared PostgreSQL server of this test binary. TCP connections need the password
/// ([`PG_PASSWORD`] for user `postgres`); an unprivileged role `plain` (password `plain-pw`)
/// without CREATE rights exists for permission tests.
pub fn postgres() -> &'static Server {
    static PG: OnceLock<Server> = OnceLock::new();
    PG.get_or_init(start_postgres)
}

/// The directory with initdb and postgres from the Debian packages.
pub fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    if let Some(d) = dirs.pop() {
        return d;
    }
    require("initdb", "postgresql")
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

/// postgres and pgbouncer refuse to run as root: run them as `nobody` then.
pub fn unprivileged(cmd: &mut Command) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(65534).gid(65534);
    }
}

/// Gives `path` to `nobody` when the tests run as root (see [`unprivileged`]).
pub fn chown_nobody(path: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).expect("chown");
    }
}

pub fn start_postgres() -> Server {
    start_postgres_in(server_dir("postgres"), &[])
}

/// A PostgreSQL server of its own with extra `name=value` settings, which override the
/// harness's (e.g. `fsync=on`).
pub fn start_postgres_with(settings: &[&str]) -> Server {
    let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
    start_postgres_in(server_dir("postgres-own"), &settings)
}

/// A PostgreSQL server of its own with `ssl=on`, its server certificate (for 127.0.0.1) made
/// in its directory (see [`super::certs`]). TCP connections must use TLS (`hostssl` only in its
/// pg_hba.conf), so a plain one is refused: no pg_hba.conf entry.
pub fn start_postgres_tls() -> (Server, super::certs::Certs) {
    let dir = server_dir("postgres-tls");
    let certs = super::certs::make(&dir);
    let hba = dir.join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
    )
    .expect("pg_hba.conf");
    // The server (run as nobody under root) must own its key, readable by it alone.
    chown_nobody(&certs.server_key);
    std::fs::set_permissions(
        &certs.server_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod key");
    let settings = [
        "ssl=on".to_owned(),
        format!("ssl_cert_file={}", certs.server_cert.display()),
        format!("ssl_key_file={}", certs.server_key.display()),
        format!("hba_file={}", hba.display()),
    ];
    (start_postgres_in(dir, &settings), certs)
}

/// Starts a server in `dir`; `settings` are extra `-c name=value` settings.
fn start_postgres_in(dir: PathBuf, settings: &[String]) -> Server {
    let bin = pg_bin();
    let data = dir.join("data");
    std::fs::create_dir(&data).expect("data dir");
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, PG_PASSWORD).expect("pwfile");
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&dir).expect("meta").permissions(),
        0o755,
    );
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    for p in [&dir, &data, &pwfile] {
        chown_nobody(p);
    }
    let mut init = Command::new(bin.join("initdb"));
    init.args([
        "-D",
        data.to_str().expect("utf-8"),
        "-U",
        "postgres",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
    ])
    .arg(format!("--pwfile={}", pwfile.display()))
    .env("LC_ALL", "C")
    .stdout(Stdio::null());
    unprivileged(&mut init);
    let out = init.output().expect("initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.args([
        "-D",
        data.to_str().expect("utf-8"),
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ])
    .args(["-k", dir.to_str().expect("utf-8")])
    .args([
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
    ])
    .args(["-c", "max_connections=200"])
    .args(settings.iter().flat_map(|s| ["-c", s]))
    .env("LC_ALL", "C");
    unprivileged(&mut cmd);
    let pid = spawn_managed(cmd, &dir);
    wait_for_port(port, "postgres", &dir);
    let server = Server { port, dir, pid };
    psql(
        &server,
        "CREATE ROLE plain LOGIN PASSWORD 'plain-pw'; REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
    );
    server
}

/// Runs SQL as the superuser through the server's Unix socket.
pub fn psql(server: &Server, sql: &str) {
    let psql = pg_bin().join("psql");
    let psql = if psql.exists() {
        psql
    } else {
        require("psql", "postgresql-client")
    };
    let mut cmd = Command::new(psql);
    cmd.args([
        "-h",
        server.dir.to_str().expect("utf-8"),
        "-p",
        &server.port.to_string(),
        "-U",
        "postgres",
    ])
    .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql, "postgres"]);
    unprivileged(&mut cmd);
    // Wait out "the database system is starting up", and the moment between the TCP port
    // accepting and the Unix socket appearing.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cmd.output().expect("psql");
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let starting = err.contains("starting up") || err.contains("No such file or directory");
        if Instant::now() > end || !starting {
            panic!("psql {sql:?} failed: {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A postgres:// URL for the superuser.
pub fn postgres_url(server: &Server) -> String {
    format!(
        "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/postgres",
        server.port
    )
}
