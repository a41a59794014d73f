//! TLS against a real PostgreSQL server that accepts TCP connections only over TLS, with a
//! certificate made for the test (for 127.0.0.1 only), checking libpq's `sslmode` semantics:
//! `require` encrypts without checking, `verify-ca` checks the chain, `verify-full` the chain
//! and the host name; a certificate that fails a check is a configuration error (78).
#![cfg(feature = "postgres")]

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

use common::certs::Certs;
use common::server::{self, Server, PG_PASSWORD};
use common::*;

/// The TLS server of this test binary and its certificates.
fn tls_server() -> &'static (Server, Certs) {
    static TLS: OnceLock<(Server, Certs)> = OnceLock::new();
    TLS.get_or_init(server::start_postgres_tls)
}

/// The URL of the TLS server as `host`, with the query `params`.
fn url(host: &str, params: &str) -> String {
    let (s, _) = tls_server();
    format!(
        "postgres://postgres:{PG_PASSWORD}@{host}:{}/postgres?connect_timeout=5&{params}",
        s.port
    )
}

fn lockrun(env: &Env, url: &str, args: &[&str]) -> Output {
    let mut c = env.cmd();
    for k in [
        "PGPASSWORD",
        "PGUSER",
        "PGHOST",
        "PGDATABASE",
        "SSL_CERT_FILE",
    ] {
        c.env_remove(k);
    }
    c.args(["-b", url])
        .args(args)
        .output()
        .expect("spawn lockrun")
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    stdout(o).trim().to_owned()
}

/// A full round trip over `url`: acquire, current, release.
#[track_caller]
fn round_trip(env: &Env, url: &str) {
    let res = format!("{}/tls", server::prefix());
    let id = ok(&lockrun(env, url, &["acquire", "--ttl", "1m", &res]));
    assert_eq!(id.len(), 32, "{id}");
    let json = ok(&lockrun(env, url, &["current", "-f", "json", &res]));
    assert!(json.contains(&id), "{json}");
    ok(&lockrun(env, url, &["release", &res, &id]));
}

fn root(path: &Path) -> String {
    format!("sslrootcert={}", path.display())
}

#[test]
fn require_and_prefer_encrypt_without_checking() {
    let env = Env::new();
    round_trip(&env, &url("127.0.0.1", "sslmode=require"));
    round_trip(&env, &url("127.0.0.1", "sslmode=prefer"));
    // The default is prefer; the certificate is for 127.0.0.1 but nobody checks the name.
    round_trip(&env, &url("localhost", ""));
}

#[test]
fn a_plain_connection_is_refused_by_this_server() {
    // What shows that the other tests really used TLS.
    let o = lockrun(
        &Env::new(),
        &url("127.0.0.1", "sslmode=disable"),
        &["current", "res"],
    );
    assert_fails(&o, 78, "no encryption");
}

#[test]
fn verify_full_with_the_right_ca() {
    let (_, certs) = tls_server();
    round_trip(
        &Env::new(),
        &url(
            "127.0.0.1",
            &format!("sslmode=verify-full&{}", root(&certs.ca)),
        ),
    );
}

#[test]
fn verify_full_uses_home_root_crt() {
    let (_, certs) = tls_server();
    let env = Env::new();
    std::fs::create_dir(env.file(".postgresql")).unwrap();
    std::fs::copy(&certs.ca, env.file(".postgresql/root.crt")).unwrap();
    round_trip(&env, &url("127.0.0.1", "sslmode=verify-full"));
}

#[test]
fn a_wrong_ca_is_a_config_error() {
    let env = Env::new();
    let other = common::certs::make(env.path());
    for mode in ["verify-full", "verify-ca", "require"] {
        // With sslrootcert, require checks the chain too, as libpq does.
        let o = lockrun(
            &env,
            &url("127.0.0.1", &format!("sslmode={mode}&{}", root(&other.ca))),
            &["current", "res"],
        );
        assert_fails(&o, 78, "invalid peer certificate");
        assert!(
            stderr(&o).contains("sslrootcert must name the CA"),
            "{}",
            stderr(&o)
        );
    }
    // The system's roots do not know the test CA either.
    let o = lockrun(
        &env,
        &url("127.0.0.1", "sslmode=verify-full&sslrootcert=system"),
        &["current", "res"],
    );
    assert_fails(&o, 78, "invalid peer certificate");
}

#[test]
fn verify_ca_does_not_check_the_host_name_and_verify_full_does() {
    let (_, certs) = tls_server();
    let env = Env::new();
    round_trip(
        &env,
        &url(
            "localhost",
            &format!("sslmode=verify-ca&{}", root(&certs.ca)),
        ),
    );
    let o = lockrun(
        &env,
        &url(
            "localhost",
            &format!("sslmode=verify-full&{}", root(&certs.ca)),
        ),
        &["current", "res"],
    );
    assert_fails(&o, 78, "not valid for name");
    assert!(
        stderr(&o).contains("verify-ca does not check"),
        "{}",
        stderr(&o)
    );
}
