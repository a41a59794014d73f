//! The real binary against a real PostgreSQL server: init, the verbs, `run` losing its lease,
//! LISTEN/NOTIFY wake-ups, and every bad input with its exit code and one-line message.
#![cfg(feature = "postgres")]

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::server::{self, Server, PG_PASSWORD};
use common::*;

/// A test's environment: its own table, reached through a `[backend.pg]` config section.
struct Pg {
    env: Env,
    server: &'static Server,
    table: String,
    prefix: String,
}

impl Pg {
    fn new() -> Pg {
        Pg::with_url(&server::postgres_url(server::postgres()))
    }

    /// The test server through a URL without its password.
    fn no_password() -> Pg {
        Pg::with_url(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            server::postgres().port
        ))
    }

    fn with_url(url: &str) -> Pg {
        let prefix = server::prefix();
        let pg = Pg {
            env: Env::new(),
            server: server::postgres(),
            table: format!("t_{prefix}"),
            prefix,
        };
        pg.config(url, &format!("table = \"{}\"", pg.table));
        pg
    }

    fn config(&self, url: &str, extra: &str) {
        std::fs::write(
            self.env.file("config.toml"),
            format!("[backend.pg]\nurl = \"{url}\"\n{extra}\n"),
        )
        .expect("config");
    }

    fn resource(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// `lockrun -c config.toml -b pg ARGS`, with no PostgreSQL variables from the outside.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.env.cmd();
        for k in ["PGPASSWORD", "PGPASSFILE", "PGUSER", "PGHOST", "PGDATABASE"] {
            c.env_remove(k);
        }
        let config = self.env.file("config.toml");
        c.arg("-c").arg(config).args(["-b", "pg"]).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn lockrun")
    }

    /// Releases `id` on `res` and waits for `waiter`: its output, and how long after the
    /// release it ended.
    fn release_to(&self, res: &str, id: &str, waiter: std::process::Child) -> (Output, Duration) {
        ok(&self.run(&["release", res, id]));
        let released = Instant::now();
        let out = waiter.wait_with_output().expect("wait");
        (out, released.elapsed())
    }

    /// `lockrun acquire -w 60s RES` in the background, its output captured.
    fn waiter(&self, res: &str) -> std::process::Child {
        self.cmd(&["acquire", "-w", "60s", res])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn waiter")
    }

    /// Runs SQL as the superuser and returns the unaligned output.
    fn sql(&self, sql: &str) -> String {
        query(self.server, sql)
    }
}

/// Runs SQL as the superuser on `server` and returns the unaligned output.
fn query(server: &Server, sql: &str) -> String {
    let psql = server::pg_bin().join("psql");
    let out = Command::new(if psql.exists() { psql } else { "psql".into() })
        .arg(server::postgres_url(server))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out).trim().to_owned()
}

/// Asserts the exit code, showing stderr when it differs.
#[track_caller]
fn exits(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "stderr: {}", stderr(o));
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    stdout(o).trim().to_owned()
}

#[test]
fn init_is_idempotent() {
    let pg = Pg::new();
    let o = pg.run(&["init"]);
    ok(&o);
    assert!(stderr(&o).contains("created table"), "{}", stderr(&o));
    let o = pg.run(&["init"]);
    ok(&o);
    assert!(stderr(&o).contains("already set up"), "{}", stderr(&o));
    let cols = pg.sql(&format!(
        "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) \
         FROM information_schema.columns WHERE table_name = '{}'",
        pg.table
    ));
    assert_eq!(
        cols,
        "resource,lease_id,principal,token,acquired_at,expires_at,ttl_ms,released"
    );
    let idx = pg.sql(&format!(
        "SELECT count(*) FROM pg_indexes WHERE tablename = '{}' AND indexdef LIKE '%(expires_at)%'",
        pg.table
    ));
    assert_eq!(idx, "1");
}

#[test]
fn init_creates_a_configured_schema() {
    let pg = Pg::new();
    let schema = format!("s_{}", pg.prefix);
    pg.config(
        &server::postgres_url(pg.server),
        &format!("table = \"leases\"\nschema = \"{schema}\""),
    );
    ok(&pg.run(&["init"]));
    let res = pg.resource("in-schema");
    let id = ok(&pg.run(&["acquire", &res]));
    let n = pg.sql(&format!(
        "SELECT count(*) FROM \"{schema}\".leases WHERE lease_id = '{id}'"
    ));
    assert_eq!(n, "1");
}

#[test]
fn verbs_round_trip() {
    let pg = Pg::new();
    let res = pg.resource("db-migration");
    // No init: the superuser's first verb creates the table.
    let id = ok(&pg.run(&["-p", "alice@db1", "acquire", "--ttl", "2h", &res]));
    assert_eq!(id.len(), 32, "{id:?}");
    let rows = ok(&pg.run(&["current", &res]));
    for needle in ["principal:     alice@db1", &id, "fencing_token: 1"] {
        assert!(rows.contains(needle), "{needle:?} in {rows}");
    }
    let o = pg.run(&["acquire", "-n", &res]);
    exits(&o, 75);
    assert!(stderr(&o).contains("alice@db1"), "{}", stderr(&o));

    ok(&pg.run(&["renew", "--ttl", "30m", &res, &id]));
    let left = pg.sql(&format!(
        "SELECT round(extract(epoch FROM expires_at - clock_timestamp()) / 60) \
         FROM {} WHERE resource = '{res}'",
        pg.table
    ));
    assert_eq!(left, "30");
    ok(&pg.run(&["is-held", &res, &id]));
    exits(&pg.run(&["is-held", &res, "0123456789abcdef"]), 1);
    exits(&pg.run(&["release", &res, "0123456789abcdef"]), 1);
    ok(&pg.run(&["release", &res, &id]));
    exits(&pg.run(&["is-held", &res, &id]), 1);
    exits(&pg.run(&["current", &res]), 1);
    exits(&pg.run(&["release", &res, &id]), 1);
    exits(&pg.run(&["renew", &res, &id]), 1);

    // The row stays, so the next grant gets the next token.
    let json: serde_json::Value =
        serde_json::from_str(&ok(&pg.run(&["acquire", "--json", &res]))).expect("json");
    assert_eq!(json["fencing_token"], 2);
}

/// The server's Unix socket, as libpq URLs name it (`host=/dir`, or no host with PGHOST), works
/// whatever `sslmode` says: TLS is never used on a socket.
#[test]
fn a_unix_socket_url_connects_without_tls() {
    let s = server::postgres();
    let dir = s.dir.display().to_string();
    for query in [
        "",
        "&sslmode=disable",
        "&sslmode=prefer",
        "&sslmode=require",
    ] {
        let pg = Pg::with_url(&format!(
            "postgres:///postgres?host={dir}&port={}&user=postgres{query}",
            s.port
        ));
        let res = pg.resource("socket");
        let id = ok(&pg.run(&["acquire", &res]));
        ok(&pg.run(&["is-held", &res, &id]));
        ok(&pg.run(&["release", &res, &id]));
    }
    let pg = Pg::with_url(&format!(
        "postgres:///postgres?port={}&user=postgres",
        s.port
    ));
    let o = pg
        .cmd(&["current", "x"])
        .env("PGHOST", &dir)
        .output()
        .expect("spawn");
    exits(&o, 1);
}

#[test]
fn run_stops_the_command_when_the_row_is_taken_away() {
    let pg = Pg::new();
    let res = pg.resource("taken");
    let idfile = pg.env.file("id");
    let script = format!(
        "echo \"$LOCKRUN_LEASE_ID\" > '{}.tmp' && mv '{0}.tmp' '{0}' && exec sleep 60",
        idfile.display()
    );
    let child = pg
        .cmd(&["-q", "run", "--ttl", "3s", &res, "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    assert!(
        eventually(Duration::from_secs(20), || idfile.exists()),
        "the command did not start"
    );
    let id = std::fs::read_to_string(&idfile).expect("id");
    ok(&pg.run(&["release", &res, id.trim()]));
    let start = Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_fails(&out, 124, "lost the lease");
}

#[test]
fn a_waiter_wakes_on_release() {
    let pg = Pg::new();
    let res = pg.resource("wake");
    let id = ok(&pg.run(&["acquire", "--ttl", "1h", &res]));
    let waiter = pg.waiter(&res);
    // Give it time to find the resource busy and LISTEN.
    std::thread::sleep(Duration::from_millis(1500));
    let (out, woke) = pg.release_to(&res, &id, waiter);
    exits(&out, 0);
    // Without the notification it would wait for the safety poll (>= 3.75 s) or the 1h expiry.
    assert!(woke < Duration::from_millis(3500), "woke after {woke:?}");
    assert_ne!(stdout(&out).trim(), id);
}

/// Waiters stand in a line kept by the server (session advisory locks): only the first LISTENs
/// and is woken by a release; the others wait for their turn, and are served in arrival order.
#[test]
fn waiters_stand_in_line_and_are_served_in_arrival_order() {
    let pg = Pg::new();
    let res = pg.resource("line");
    let order = pg.env.file("order");
    let id = ok(&pg.run(&["acquire", "--ttl", "1h", &res]));
    let mut waiters = Vec::new();
    for n in 1..=3 {
        let script = format!("echo {n} >> '{}'; sleep 0.2", order.display());
        waiters.push(
            pg.cmd(&["run", "-w", "60s", &res, "--", "sh", "-c", &script])
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn waiter"),
        );
        // Until this waiter stands in line: one place granted, n - 1 waiting for theirs
        // (counting the advisory locks of this test's table's sessions only).
        let want = format!("1|{}", n - 1);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = pg.sql(&format!(
                "SELECT count(*) FILTER (WHERE l.granted) || '|' || \
                        count(*) FILTER (WHERE NOT l.granted) \
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND a.query LIKE '%{}%' \
                   AND a.pid <> pg_backend_pid()",
                pg.table
            ));
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "line of waiters: {got}, wanted {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    ok(&pg.run(&["release", &res, &id]));
    for w in waiters {
        let out = w.wait_with_output().expect("wait");
        exits(&out, 0);
    }
    let served = std::fs::read_to_string(&order).expect("order");
    assert_eq!(
        served.split_whitespace().collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
}

/// A waiter in line asks for its place again when its statement times out (here the server's
/// `statement_timeout` of 1 s, normally lockrun's own `lock_timeout`), so that it never keeps a
/// transaction open for long, and it still gets the lease when its turn comes.
#[test]
fn a_waiter_in_line_keeps_no_long_transaction() {
    let pg = Pg::new();
    let res = pg.resource("line-short");
    let holder = ok(&pg.run(&["acquire", "--ttl", "1h", &res]));
    let first = pg
        .cmd(&["run", "-w", "60s", &res, "--", "sleep", "0.5"])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn first");
    std::thread::sleep(Duration::from_millis(1000));
    let app = format!("lockrun_second_{}", pg.prefix.replace('-', "_"));
    std::fs::write(
        pg.env.file("second.toml"),
        format!(
            "[backend.pg]\nurl = \"{}?application_name={app}&options=-c%20statement_timeout%3D1000\"\n\
             table = \"{}\"\n",
            server::postgres_url(pg.server),
            pg.table
        ),
    )
    .expect("config");
    let second = pg
        .env
        .cmd()
        .arg("-c")
        .arg(pg.env.file("second.toml"))
        .args(["-b", "pg", "run", "-w", "60s", &res, "--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn second");
    std::thread::sleep(Duration::from_millis(3000));
    // Still waiting for its place, in a transaction younger than the timeout.
    let waiting = pg.sql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' \
           AND state = 'active' AND query LIKE '%pg_advisory_lock%' \
           AND now() - xact_start < interval '1.5 seconds'"
    ));
    assert_eq!(waiting, "1", "the second waiter, in a fresh transaction");
    ok(&pg.run(&["release", &res, &holder]));
    let released = Instant::now();
    let out = second.wait_with_output().expect("wait");
    exits(&out, 0);
    // First's command takes 0.5 s; without a notification the second would wait >= 3.75 s.
    assert!(
        released.elapsed() < Duration::from_millis(3500),
        "second got it after {:?}",
        released.elapsed()
    );
    let mut first = first;
    assert!(first.wait().expect("first").success());
}

/// A waiter that dies while first in line gives its place up with its connection: the next one
/// is woken by the release, not by the safety poll.
#[test]
fn the_line_moves_on_when_the_first_waiter_dies() {
    let pg = Pg::new();
    let res = pg.resource("line-kill");
    let id = ok(&pg.run(&["acquire", "--ttl", "1h", &res]));
    let mut first = pg.waiter(&res);
    std::thread::sleep(Duration::from_millis(1000));
    let second = pg.waiter(&res);
    std::thread::sleep(Duration::from_millis(1000));
    first.kill().expect("kill first");
    first.wait().expect("reap first");
    std::thread::sleep(Duration::from_millis(500));
    let (out, woke) = pg.release_to(&res, &id, second);
    exits(&out, 0);
    assert!(woke < Duration::from_millis(3500), "woke after {woke:?}");
}

#[test]
fn server_down_is_unavailable() {
    let port = server::free_port();
    let pg = Pg::with_url(&format!(
        "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{port}/postgres"
    ));
    let o = pg.run(&["current", "x"]);
    assert_fails(&o, 69, &format!("127.0.0.1:{port}"));
    assert!(!stderr(&o).contains(PG_PASSWORD));
}

#[test]
fn wrong_password_is_a_config_error() {
    let s = server::postgres();
    let pg = Pg::with_url(&format!(
        "postgres://postgres:wrong-xyzzy@127.0.0.1:{}/postgres",
        s.port
    ));
    let o = pg.run(&["acquire", "x"]);
    assert_fails(&o, 78, "password authentication failed for user");
    assert!(!stderr(&o).contains("wrong-xyzzy"), "{}", stderr(&o));
}

#[test]
fn password_from_the_environment_or_a_file() {
    let s = server::postgres();
    let pg = Pg::no_password();
    let o = pg.run(&["current", "x"]);
    assert_fails(&o, 78, "password");
    let o = pg
        .cmd(&["init"])
        .env("LOCKRUN_POSTGRES_PASSWORD", PG_PASSWORD)
        .output()
        .expect("spawn");
    ok(&o);
    let o = pg
        .cmd(&["current", "x"])
        .env("PGPASSWORD", PG_PASSWORD)
        .output()
        .expect("spawn");
    exits(&o, 1);
    let file = pg.env.file("pgpw");
    std::fs::write(&file, format!("{PG_PASSWORD}\n")).expect("pw file");
    pg.config(
        &format!("postgres://postgres@127.0.0.1:{}/postgres", s.port),
        &format!("table = \"{}\"\npassword_file = {:?}", pg.table, file),
    );
    exits(&pg.run(&["current", "x"]), 1);
}

/// libpq's password file: `~/.pgpass` (the test's HOME), or the one `PGPASSFILE` names; one that
/// others may read is ignored, and the authentication error says so.
#[test]
fn password_from_the_pgpass_file() {
    use std::os::unix::fs::PermissionsExt;
    let s = server::postgres();
    let pg = Pg::no_password();
    ok(&pg
        .cmd(&["init"])
        .env("PGPASSWORD", PG_PASSWORD)
        .output()
        .expect("spawn"));
    let pgpass = pg.env.file(".pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "# lockrun test\nother-host:*:*:*:wrong\n127.0.0.1:{}:postgres:postgres:{PG_PASSWORD}\n",
            s.port
        ),
    )
    .expect("pgpass");
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = pg.run(&["current", "x"]);
    assert_fails(&o, 78, "password");
    assert!(stderr(&o).contains("was ignored: it has group or world access"));
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    exits(&pg.run(&["current", "x"]), 1);
    // PGPASSFILE names another file; a line for another port does not match.
    let named = pg.env.file("named.pgpass");
    std::fs::write(&named, format!("*:1:*:*:{PG_PASSWORD}\n")).expect("named");
    std::fs::set_permissions(&named, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let o = pg
        .cmd(&["current", "x"])
        .env("PGPASSFILE", &named)
        .output()
        .expect("spawn");
    assert_fails(&o, 78, "password");
}

#[test]
fn unknown_database_is_a_config_error() {
    let s = server::postgres();
    let pg = Pg::with_url(&format!(
        "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/no_such_db",
        s.port
    ));
    assert_fails(
        &pg.run(&["current", "x"]),
        78,
        "\"no_such_db\" does not exist",
    );
}

#[test]
fn missing_table_without_ddl_rights_points_to_init() {
    let s = server::postgres();
    let pg = Pg::with_url(&format!(
        "postgres://plain:plain-pw@127.0.0.1:{}/postgres",
        s.port
    ));
    let o = pg.run(&["acquire", "x"]);
    assert_fails(&o, 78, "lockrun init");
    assert!(stderr(&o).contains("may not create it"), "{}", stderr(&o));
    let o = pg.run(&["init"]);
    assert_fails(&o, 78, "may not create table");
}

#[test]
fn tls_required_but_not_offered() {
    let s = server::postgres();
    let pg = Pg::with_url(&format!(
        "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/postgres?sslmode=require",
        s.port
    ));
    assert_fails(&pg.run(&["current", "x"]), 78, "does not offer TLS");
    // prefer (the default) falls back to plaintext, like libpq.
    pg.config(
        &format!(
            "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/postgres?sslmode=prefer",
            s.port
        ),
        &format!("table = \"{}\"", pg.table),
    );
    exits(&pg.run(&["current", "x"]), 1);
}

/// The takeover guard checks the lease id's shape in SQL (`length` and `ltrim`, not a regular
/// expression): an expired row that is valid but for its lease id is never taken over, and one
/// whose id uses every allowed character, at the longest length, is.
#[test]
fn only_a_well_formed_lease_id_is_taken_over() {
    let pg = Pg::new();
    ok(&pg.run(&["init"]));
    let expired = |res: &str, id: &str| {
        pg.sql(&format!(
            "INSERT INTO {} VALUES ('{res}', '{id}', 'someone', 7, clock_timestamp() - interval \
             '2 hours', clock_timestamp() - interval '1 hour', 1000, false)",
            pg.table
        ));
    };
    let long = "a".repeat(129);
    for (n, id) in [
        "",
        "has space",
        long.as_str(),
        "caf\u{e9}",
        "semi;colon",
        "a/b",
    ]
    .into_iter()
    .enumerate()
    {
        let res = pg.resource(&format!("bad-id-{n}"));
        expired(&res, id);
        let row = format!("SELECT * FROM {} WHERE resource = '{res}'", pg.table);
        let before = pg.sql(&row);
        assert_fails(&pg.run(&["acquire", "-n", &res]), 65, "lease_id");
        assert_eq!(before, pg.sql(&row), "id {id:?}: the row is left alone");
    }
    let chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-";
    let good: String = chars.chars().cycle().take(128).collect();
    let res = pg.resource("good-id");
    expired(&res, &good);
    let id = ok(&pg.run(&["acquire", "-n", &res]));
    let cur = ok(&pg.run(&["current", "-f", "json", &res]));
    assert!(cur.contains(&id), "{cur}");
    assert!(cur.contains("\"fencing_token\":8"), "{cur}");
}

#[test]
fn a_foreign_row_is_reported_and_left_alone() {
    let pg = Pg::new();
    ok(&pg.run(&["init"]));
    let res = pg.resource("foreign");
    let row = format!(
        "'{res}', '', 'someone', -5, clock_timestamp(), clock_timestamp() - interval '1 hour', \
         1000, false"
    );
    pg.sql(&format!("INSERT INTO {} VALUES ({row})", pg.table));
    let before = pg.sql(&format!(
        "SELECT * FROM {} WHERE resource = '{res}'",
        pg.table
    ));
    assert_fails(&pg.run(&["current", &res]), 65, "not a lockrun lease");
    assert_fails(&pg.run(&["acquire", "-n", &res]), 65, "lease_id");
    assert_fails(
        &pg.run(&["renew", &res, "0123456789abcdef"]),
        65,
        "leaves it untouched",
    );
    let after = pg.sql(&format!(
        "SELECT * FROM {} WHERE resource = '{res}'",
        pg.table
    ));
    assert_eq!(before, after);
}

#[test]
fn a_table_of_another_shape_is_a_config_error() {
    let pg = Pg::new();
    pg.sql(&format!(
        "CREATE TABLE {} (id serial PRIMARY KEY, name text)",
        pg.table
    ));
    assert_fails(&pg.run(&["acquire", "x"]), 78, "not a lockrun lease table");
    assert_fails(&pg.run(&["init"]), 78, "not a lockrun lease table");
    assert_eq!(pg.sql(&format!("SELECT count(*) FROM {}", pg.table)), "0");
}

#[test]
fn bad_settings_are_config_errors() {
    let pg = Pg::new();
    let url = server::postgres_url(pg.server);
    for (extra, needle) in [
        ("table = \"x; drop table y\"", "not a plain SQL identifier"),
        ("tabel = \"x\"", "unknown key 'tabel'"),
        ("statement_timeout = \"soon\"", "statement_timeout"),
    ] {
        pg.config(&url, extra);
        let o = pg.run(&["current", "x"]);
        assert_fails(&o, 78, needle);
        assert!(!stderr(&o).contains(PG_PASSWORD), "{}", stderr(&o));
    }
    let o = pg
        .env
        .run(&["-b", "postgres://u@h/db?sslmode=sometimes", "current", "x"]);
    assert_fails(&o, 78, "sslmode");
    let o = pg
        .env
        .run(&["-b", "postgres://u@127.0.0.1:1/db?host=", "current", "x"]);
    assert_fails(&o, 78, "host= is empty");
    // Settings the URL gives the session that the server refuses at its start.
    let sep = if url.contains('?') { '&' } else { '?' };
    for (options, needle) in [
        ("-c%20lock_timeout%3Dx", "invalid value for parameter"),
        ("-c%20nosuch%3Dx", "unrecognized configuration parameter"),
    ] {
        pg.config(
            &format!("{url}{sep}options={options}"),
            &format!("table = \"{}\"", pg.table),
        );
        assert_fails(&pg.run(&["current", "x"]), 78, needle);
    }
}

/// A statement the server refuses (here a read-only session, as on a standby during a
/// failover) was rolled back: it is retried like a server that cannot be reached (69), but no
/// message says it may still be applied (review: the acquire named a lease that could never
/// hold the resource, and the release said it may have been applied).
#[test]
fn a_refused_statement_is_not_one_that_may_be_applied_late() {
    let pg = Pg::new();
    let url = server::postgres_url(pg.server);
    let res = pg.resource("read-only");
    ok(&pg.run(&["init"]));
    let id = ok(&pg.run(&["acquire", &res]));
    pg.config(
        &format!("{url}?options=-c%20default_transaction_read_only%3Don"),
        &format!("table = \"{}\"", pg.table),
    );
    for args in [
        &["acquire", "-n", &pg.resource("read-only-2")][..],
        &["release", &res, &id][..],
        &["renew", &res, &id][..],
    ] {
        let o = pg.run(args);
        assert_fails(&o, 69, "read-only");
        let e = stderr(&o);
        assert!(
            !e.contains("may hold") && !e.contains("may have been"),
            "{args:?}: {e}"
        );
    }
    pg.config(&url, &format!("table = \"{}\"", pg.table));
    exits(&pg.run(&["is-held", &res, &id]), 0);
    ok(&pg.run(&["release", &res, &id]));
}

#[test]
fn a_statement_that_hangs_times_out() {
    let pg = Pg::new();
    let res = pg.resource("hang");
    let id = ok(&pg.run(&["acquire", &res]));
    // Another session holds the row lock, so the renewal's UPDATE waits.
    let psql = server::pg_bin().join("psql");
    let mut blocker = Command::new(if psql.exists() { psql } else { "psql".into() })
        .arg(server::postgres_url(pg.server))
        .args(["-X", "-q", "-c"])
        .arg(format!(
            "BEGIN; SELECT 1 FROM {} WHERE resource = '{res}' FOR UPDATE; \
             SELECT pg_sleep(30); COMMIT;",
            pg.table
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    let locked = eventually(Duration::from_secs(10), || {
        pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND granted")
            != "0"
            && pg.sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND state = 'active' AND pid <> pg_backend_pid()") != "0"
    });
    assert!(locked, "the blocking session did not start");
    pg.config(
        &server::postgres_url(pg.server),
        &format!("table = \"{}\"\nstatement_timeout = \"1s\"", pg.table),
    );
    let start = Instant::now();
    let o = pg.run(&["renew", &res, &id]);
    let took = start.elapsed();
    let _ = blocker.kill();
    let _ = blocker.wait();
    assert_fails(&o, 69, "no answer within 1s");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// The test server through a loopback proxy that can freeze connections (plain text, so that
/// the proxy can see the statements).
fn through(proxy: &proxy::Proxy) -> Pg {
    Pg::with_url(&format!(
        "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable",
        proxy.port
    ))
}

/// A connection that stops answering while the server answers new ones: the renewal that
/// stalled on it is given up at the heartbeat's limit, and the next one goes out on a new
/// connection, so the command runs to its end. (Pausing the server cannot show this.)
#[test]
fn a_run_replaces_a_connection_that_stops_answering() {
    let proxy = proxy::Proxy::start(server::postgres().port);
    let pg = through(&proxy);
    let res = pg.resource("half-open");
    ok(&pg.run(&["init"]));
    let (o, before) = proxy::run_through_a_freeze(
        &proxy,
        pg.cmd(&["run", "--ttl", "6s", "--heartbeat", "1s", &res]),
        pg.env.path(),
    );
    exits(&o, 0);
    assert!(proxy.connections() > before, "a new connection was opened");
}

/// A wait whose attempt stalls gets the lease on a new connection, under the same lease id.
/// The stalled attempt may reach the server later: after the lease was released it would grant
/// that id again, to nobody, for its whole TTL (review: the resource stayed held for the
/// acquire's hour). A release that keeps the genuine grant (its fencing token) goes behind it
/// on its connection: it undoes the late grant, and leaves the lease alone while it is held.
#[test]
fn a_late_acquire_after_the_wait_got_the_lease_grants_nothing() {
    let proxy = proxy::Proxy::start(server::postgres().port);
    let pg = through(&proxy);
    let direct = Pg::with_url(&server::postgres_url(pg.server));
    direct.config(
        &server::postgres_url(pg.server),
        &format!("table = \"{}\"", pg.table),
    );
    ok(&pg.run(&["init"]));
    for released_first in [true, false] {
        let res = pg.resource(&format!("late-after-grant-{released_first}"));
        ok(&direct.run(&["acquire", "--ttl", "2s", &res]));
        // The waiter's first attempt finds the resource busy; the one at the holder's expiry
        // goes out on a connection frozen meanwhile, and the next on a new one.
        let waiter = pg.waiter(&res);
        std::thread::sleep(Duration::from_millis(1000));
        proxy.freeze_existing();
        let o = waiter.wait_with_output().unwrap();
        let id = ok(&o);
        assert!(
            stderr(&o).contains("still waiting"),
            "no attempt stalled: {}",
            stderr(&o)
        );
        if released_first {
            ok(&direct.run(&["release", &res, &id]));
        }
        proxy.thaw();
        let row = format!(
            "SELECT token || ' ' || released FROM {} WHERE resource = '{res}'",
            pg.table
        );
        // The late attempt draws a token of its own only when the resource was free, and the
        // release behind it marks that grant released.
        let settled = if released_first { "3 true" } else { "2 false" };
        assert!(
            eventually(Duration::from_secs(5), || pg.sql(&row) == settled),
            "released first: {released_first}: the row is {:?}",
            pg.sql(&row)
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(pg.sql(&row), settled);
        if !released_first {
            exits(&direct.run(&["is-held", &res, &id]), 0);
            ok(&direct.run(&["release", &res, &id]));
        }
    }
}

/// An acquire whose connection stalls: lockrun gives up after `statement_timeout` and gives
/// the lease back, on the stalled connection too, behind the acquire. When that connection
/// delivers the acquire late, the release follows it, so no lease nobody knows the id of is left
/// for its whole TTL. The one-line message names the lease all the same (the stalled connection
/// may be one the give-back could not go out on).
#[test]
fn an_unanswered_acquire_is_given_back_behind_it() {
    let proxy = proxy::Proxy::start(server::postgres().port);
    let pg = through(&proxy);
    let res = pg.resource("unanswered");
    ok(&pg.run(&["init"]));
    proxy.freeze_on(b"INSERT INTO");
    let o = proxy::acquire_frozen(
        &proxy,
        || pg.run(&["acquire", "--ttl", "1h", &res]),
        "no answer within 5s",
    );
    let id = proxy::lease_named_in(&stderr(&o), &res);
    proxy.thaw();
    // The acquire arrives now (it draws a fencing token), and the release right after it.
    let row = format!(
        "SELECT lease_id || ' ' || token || ' ' || released FROM {} WHERE resource = '{res}'",
        pg.table
    );
    let settled = format!("{id} 1 true");
    assert!(
        eventually(Duration::from_secs(5), || pg.sql(&row) == settled),
        "lease {id} left held by the late acquire: {:?}",
        pg.sql(&row)
    );
}

#[test]
fn a_paused_server_is_unavailable_after_the_connect_timeout() {
    let s = server::start_postgres();
    let pg = Pg::with_url(&server::postgres_url(&s));
    pg.config(
        &server::postgres_url(&s),
        &format!("table = \"{}\"\nconnect_timeout = \"1s\"", pg.table),
    );
    exits(&pg.run(&["current", "x"]), 1);
    s.pause();
    let start = Instant::now();
    let o = pg.run(&["current", "x"]);
    let took = start.elapsed();
    s.resume();
    assert_fails(&o, 69, "while connecting");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A release does not wait for its WAL to be flushed; acquire and renew do. Observed on a server
/// of its own that flushes at commit (`synchronous_commit=on`, `fsync=on`) and otherwise writes
/// no WAL of its own (`wal_level=minimal`: no standby snapshots) and flushes in the background
/// only every 10 s: right after a durable commit everything inserted has been flushed, right
/// after an asynchronous one the release's commit record has not.
#[test]
fn a_release_commits_without_waiting_for_the_wal_flush() {
    let s = server::start_postgres_with(&[
        "fsync=on",
        "synchronous_commit=on",
        "wal_level=minimal",
        "max_wal_senders=0",
        "wal_writer_delay=10000ms",
        "autovacuum=off",
    ]);
    let pg = Pg::with_url(&server::postgres_url(&s));
    let res = pg.resource("async");
    let flushed = || {
        query(
            &s,
            "SELECT pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()",
        ) == "t"
    };
    // The table made, and the dead catalog rows its making left vacuumed away: otherwise the
    // check's own reading of the catalogs may prune them on access, which writes WAL that
    // nothing flushes, and makes a durable commit look unflushed (seen once, under CI load).
    ok(&pg.run(&["init"]));
    query(&s, "VACUUM");
    // The WAL writer's own 10-second flush may land between a release and the check: a release
    // that is flushed at once every time, three times over, is a synchronous one.
    let mut unflushed_releases = 0;
    for _ in 0..3 {
        let id = ok(&pg.run(&["acquire", &res]));
        assert!(flushed(), "an acquire must be durable when it returns");
        ok(&pg.run(&["renew", &res, &id]));
        assert!(flushed(), "a renewal must be durable when it returns");
        ok(&pg.run(&["release", &res, &id]));
        if !flushed() {
            unflushed_releases += 1;
        }
        // The setting was for the release's transaction alone.
        assert_eq!(query(&s, "SHOW synchronous_commit"), "on");
    }
    assert!(
        unflushed_releases > 0,
        "every release waited for its WAL flush"
    );
    exits(&pg.run(&["current", &res]), 1);
}

#[test]
fn list_shows_live_leases() {
    let pg = Pg::new();
    let (a, b) = (pg.resource("a"), pg.resource("b"));
    ok(&pg.run(&["-p", "alice", "acquire", &a]));
    let id = ok(&pg.run(&["acquire", &b]));
    ok(&pg.run(&["release", &b, id.trim()]));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&pg.run(&["list", "-f", "json"]))).unwrap();
    let all = json.as_array().unwrap();
    assert_eq!(all.len(), 1, "{json}");
    assert_eq!(all[0]["resource"], a.as_str());
    assert_eq!(all[0]["principal"], "alice");
}
