//! DynamoDB over HTTPS, against a moto server that speaks only TLS with a certificate made for
//! the test. The SDK's HTTPS client (rustls with ring, see `Cargo.toml`) verifies the server
//! against the system's trust store, which `SSL_CERT_FILE` replaces: with the test's CA there the
//! verbs work; without it the server is refused with one line, and so is a server that does not
//! speak TLS, after one connection (a failed handshake is not retried).
#![cfg(feature = "dynamodb")]

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use common::certs::Certs;
use common::dynamodb::{self as ddb, REGION};
use common::server::Server;
use common::*;

/// The HTTPS moto server of this test binary and its certificates.
fn tls_server() -> &'static (Server, Certs) {
    static TLS: OnceLock<(Server, Certs)> = OnceLock::new();
    TLS.get_or_init(|| {
        let dir = common::server::server_dir("moto-certs");
        let certs = common::certs::make(&dir);
        (ddb::start_moto_tls(&certs), certs)
    })
}

fn url(server: &Server, table: &str) -> String {
    format!(
        "dynamodb://{table}?endpoint=https://127.0.0.1:{}&region={REGION}",
        server.port
    )
}

/// lockrun against `url`, trusting the CA in `ca` (the system's trust store otherwise).
fn lockrun(env: &Env, url: &str, ca: Option<&std::path::Path>, args: &[&str]) -> Output {
    let mut c = env.cmd();
    ddb::aws_env(&mut c)
        .env("LOCKRUN_BACKEND", url)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some(ca) = ca {
        c.env("SSL_CERT_FILE", ca);
    }
    c.args(args).output().expect("spawn lockrun")
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    stdout(o)
}

#[test]
fn a_trusted_server_serves_every_verb() {
    let (server, certs) = tls_server();
    let env = Env::new();
    let url = url(server, &ddb::table());
    let ca = Some(certs.ca.as_path());
    ok(&lockrun(&env, &url, ca, &["init"]));
    ok(&lockrun(&env, &url, ca, &["run", "job", "--", "true"]));
    let id = ok(&lockrun(&env, &url, ca, &["acquire", "-n", "held"]));
    let id = id.trim();
    let current = ok(&lockrun(&env, &url, ca, &["current", "--id-only", "held"]));
    assert_eq!(current.trim(), id);
    ok(&lockrun(&env, &url, ca, &["release", "held", id]));
    let o = lockrun(&env, &url, ca, &["current", "held"]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
}

#[test]
fn an_untrusted_server_is_refused() {
    let (server, _) = tls_server();
    let env = Env::new();
    let url = url(server, &ddb::table());
    let o = lockrun(&env, &url, None, &["run", "job", "--", "true"]);
    assert_fails(&o, 78, "SSL_CERT_FILE");
}

#[test]
fn a_plain_server_is_refused_after_one_connection() {
    // Answers every connection with plain HTTP and hangs up, counting connections.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let env = Env::new();
    let url = format!("dynamodb://leases?endpoint=https://127.0.0.1:{port}&region={REGION}");
    let o = lockrun(&env, &url, None, &["acquire", "-n", "job"]);
    assert_fails(&o, 78, "does the server speak TLS on this port?");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the handshake was retried");
}
