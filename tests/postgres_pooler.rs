//! The PostgreSQL backend through a real PgBouncer in transaction mode, as the README promises:
//! the lease operations use no session state, so clients that share one server connection
//! between their transactions still see exactly one holder at a time. Waiters poll there
//! (`listen = false`).
#![cfg(feature = "postgres")]

mod common;

use std::process::{Child, Output, Stdio};
use std::sync::OnceLock;

use common::server::{self, Server};
use common::*;

/// One pooler for this test binary, in front of the shared test server, with at most two
/// server connections for all its clients.
fn bouncer() -> &'static Server {
    static B: OnceLock<Server> = OnceLock::new();
    B.get_or_init(|| common::pgbouncer::start(server::postgres(), "transaction", 2))
}

/// A test's environment: its own table, reached through the pooler, waiters polling.
struct Pooled {
    env: Env,
    table: String,
    prefix: String,
}

impl Pooled {
    fn new() -> Pooled {
        let prefix = server::prefix();
        let p = Pooled {
            env: Env::new(),
            table: format!("t_{prefix}"),
            prefix,
        };
        std::fs::write(
            p.env.file("config.toml"),
            format!(
                "[backend.pg]\nurl = \"{}\"\ntable = \"{}\"\nlisten = false\n",
                common::pgbouncer::url(bouncer()),
                p.table
            ),
        )
        .expect("config");
        p
    }

    fn resource(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.env.cmd();
        for k in ["PGPASSWORD", "PGPASSFILE", "PGUSER", "PGHOST", "PGDATABASE"] {
            c.env_remove(k);
        }
        c.arg("-c")
            .arg(self.env.file("config.toml"))
            .args(["-b", "pg"])
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn lockrun")
    }
}

#[track_caller]
fn exits(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "stderr: {}", stderr(o));
    stdout(o).trim().to_owned()
}

#[test]
fn the_verbs_work_through_a_transaction_pooler() {
    let p = Pooled::new();
    let res = p.resource("verbs");
    exits(&p.run(&["init"]), 0);
    let id = exits(&p.run(&["acquire", "--ttl", "1h", &res]), 0);
    exits(&p.run(&["acquire", "-n", &res]), 75);
    assert_eq!(exits(&p.run(&["current", "--id-only", &res]), 0), id);
    exits(&p.run(&["is-held", &res, &id]), 0);
    exits(&p.run(&["renew", "--ttl", "2h", &res, &id]), 0);
    exits(&p.run(&["release", &res, "not-the-lease-id"]), 1);
    exits(&p.run(&["is-held", &res, &id]), 0);
    let before: serde_json::Value =
        serde_json::from_str(&exits(&p.run(&["current", "-f", "json", &res]), 0)).unwrap();
    exits(&p.run(&["release", &res, &id]), 0);
    exits(&p.run(&["current", &res]), 1);
    let again = exits(&p.run(&["acquire", &res]), 0);
    let after: serde_json::Value =
        serde_json::from_str(&exits(&p.run(&["current", "-f", "json", &res]), 0)).unwrap();
    assert!(
        after["fencing_token"].as_u64() > before["fencing_token"].as_u64(),
        "{before} then {after}"
    );
    exits(&p.run(&["release", &res, &again]), 0);
}

/// Eight `lockrun run`s at once, four rounds each, through two server connections: with more
/// clients than connections, the transactions of different clients take turns on each
/// connection. The critical sections never overlap and the fencing tokens increase.
#[test]
fn run_keeps_one_holder_at_a_time_through_a_transaction_pooler() {
    let p = Pooled::new();
    let res = p.resource("contention");
    exits(&p.run(&["init"]), 0);
    let log = p.env.file("stamps");
    let section = format!(
        "echo \"start $LOCKRUN_FENCING_TOKEN\" >> '{log}'; sleep 0.02; \
         echo \"end $LOCKRUN_FENCING_TOKEN\" >> '{log}'",
        log = log.display()
    );
    let (workers, rounds) = (8, 4);
    let spawn = |_: usize| -> Child {
        p.cmd(&["run", "-w", "60s", &res, "--", "sh", "-c", &section])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lockrun")
    };
    for _ in 0..rounds {
        let children: Vec<Child> = (0..workers).map(spawn).collect();
        for c in children {
            exits(&c.wait_with_output().expect("wait"), 0);
        }
    }
    let text = std::fs::read_to_string(&log).expect("stamps");
    let lines: Vec<(&str, u64)> = text
        .lines()
        .map(|l| {
            let (kind, token) = l.split_once(' ').expect("stamp");
            (kind, token.parse().expect("token"))
        })
        .collect();
    assert_eq!(lines.len(), 2 * workers * rounds, "{text}");
    let mut last = 0;
    for pair in lines.chunks(2) {
        assert_eq!(pair[0].0, "start", "overlapping sections:\n{text}");
        assert_eq!(pair[1], ("end", pair[0].1), "overlapping sections:\n{text}");
        assert!(pair[0].1 > last, "tokens out of order:\n{text}");
        last = pair[0].1;
    }
}
