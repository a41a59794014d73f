//! PgBouncer in front of a test PostgreSQL server, for the connection-pooler tests.
//!
//! Started like every test server (a free loopback port, a temporary directory, a watchdog that
//! stops it when the test process ends). Like postgres, pgbouncer refuses to run as root, so
//! under root it runs as `nobody`.

use std::path::PathBuf;
use std::process::Command;

use super::server::{self, Server, PG_PASSWORD};

/// The pgbouncer binary (Debian installs it in /usr/sbin), or a panic with the install hint.
fn binary() -> PathBuf {
    server::which("pgbouncer")
        .or_else(|| server::which("/usr/sbin/pgbouncer"))
        .unwrap_or_else(|| server::require("pgbouncer", "pgbouncer"))
}

/// Starts pgbouncer in front of `pg` in `pool_mode` (`transaction`, `session`), with never more
/// than `pool_size` server connections: fewer than the clients, so that clients really share
/// them.
/// Clients log in as `postgres` with [`PG_PASSWORD`] (SCRAM), as they would to the server.
pub fn start(pg: &Server, pool_mode: &str, pool_size: u32) -> Server {
    let dir = server::server_dir("pgbouncer");
    let port = server::free_port();
    let users = dir.join("userlist.txt");
    std::fs::write(&users, format!("\"postgres\" \"{PG_PASSWORD}\"\n")).expect("userlist");
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\n\
             postgres = host=127.0.0.1 port={pg_port} dbname=postgres\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {users}\n\
             pool_mode = {pool_mode}\n\
             default_pool_size = {pool_size}\n\
             max_db_connections = {pool_size}\n\
             max_client_conn = 200\n\
             server_reset_query =\n\
             logfile = {log}\n",
            pg_port = pg.port,
            users = users.display(),
            log = dir.join("pgbouncer.log").display(),
        ),
    )
    .expect("pgbouncer.ini");
    let mut cmd = Command::new(binary());
    cmd.arg(&ini);
    for p in [&dir, &users, &ini] {
        server::chown_nobody(p);
    }
    server::unprivileged(&mut cmd);
    let pid = server::spawn_managed(cmd, &dir);
    server::wait_for_port(port, "pgbouncer", &dir);
    Server { port, dir, pid }
}

/// A postgres:// URL through the pooler.
pub fn url(bouncer: &Server) -> String {
    format!(
        "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/postgres",
        bouncer.port
    )
}
