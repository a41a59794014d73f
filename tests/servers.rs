//! The test harness itself: each real server starts on a loopback port and answers.

mod common;

use common::server;

#[test]
fn redis_starts_and_answers() {
    let s = server::redis();
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &s.port.to_string(), "PING"])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
}

#[test]
fn postgres_starts_and_answers() {
    let s = server::postgres();
    server::psql(s, "SELECT 1");
    assert!(s.dir.exists());
}
