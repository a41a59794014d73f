//! `rediss://` against a real redis-server that speaks only TLS, with a certificate made for the
//! test: a trusted CA (`ca_file`) works, an untrusted certificate or a wrong host name is a
//! configuration error (78), `#insecure` skips the checks.
#![cfg(feature = "redis")]

mod common;

use std::process::Output;
use std::sync::OnceLock;

use common::certs::Certs;
use common::server::{self, Server};
use common::*;

/// The TLS server of this test binary and its certificates.
fn tls_server() -> &'static (Server, Certs) {
    static TLS: OnceLock<(Server, Certs)> = OnceLock::new();
    TLS.get_or_init(server::start_redis_tls)
}

/// Runs lockrun against `[backend.r]` with `url` and the extra settings `extra`.
fn lockrun(env: &Env, url: &str, extra: &str, args: &[&str]) -> Output {
    env.run_section(
        &format!("url = \"{url}\"\nconnect_timeout = \"3s\"\n{extra}"),
        args,
    )
}

fn ca_file(path: &std::path::Path) -> String {
    format!("ca_file = \"{}\"", path.display())
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    stdout(o).trim().to_owned()
}

/// A full round trip: acquire, current, release.
fn round_trip(env: &Env, url: &str, extra: &str) {
    let res = format!("{}/tls", server::prefix());
    let id = ok(&lockrun(env, url, extra, &["acquire", "--ttl", "1m", &res]));
    assert_eq!(id.len(), 32, "{id}");
    let json = ok(&lockrun(env, url, extra, &["current", "-f", "json", &res]));
    assert!(json.contains(&id), "{json}");
    ok(&lockrun(env, url, extra, &["release", &res, &id]));
    let o = lockrun(env, url, extra, &["current", &res]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn a_certificate_signed_by_ca_file_is_trusted() {
    let (s, certs) = tls_server();
    let url = format!("rediss://127.0.0.1:{}/0", s.port);
    round_trip(&Env::new(), &url, &ca_file(&certs.ca));
}

#[test]
fn insecure_skips_the_certificate_checks() {
    let (s, _) = tls_server();
    round_trip(
        &Env::new(),
        &format!("rediss://127.0.0.1:{}/0#insecure", s.port),
        "",
    );
    // Also under a name the certificate is not for.
    round_trip(
        &Env::new(),
        &format!("rediss://localhost:{}/0#insecure", s.port),
        "",
    );
}

#[test]
fn a_certificate_the_system_does_not_trust_is_a_config_error() {
    let (s, _) = tls_server();
    let env = Env::new();
    let o = lockrun(
        &env,
        &format!("rediss://127.0.0.1:{}/0", s.port),
        "",
        &["current", "res"],
    );
    assert_fails(&o, 78, "the server's certificate is not trusted");
    assert!(stderr(&o).contains("TLS handshake"), "{}", stderr(&o));
}

#[test]
fn a_certificate_from_another_ca_is_a_config_error() {
    let (s, _) = tls_server();
    let env = Env::new();
    let other = common::certs::make(env.path());
    let o = lockrun(
        &env,
        &format!("rediss://127.0.0.1:{}/0", s.port),
        &ca_file(&other.ca),
        &["current", "res"],
    );
    assert_fails(&o, 78, "the server's certificate is not trusted");
}

#[test]
fn the_host_name_is_checked() {
    // The certificate is for 127.0.0.1 only.
    let (s, certs) = tls_server();
    let o = lockrun(
        &Env::new(),
        &format!("rediss://localhost:{}/0", s.port),
        &ca_file(&certs.ca),
        &["current", "res"],
    );
    assert_fails(
        &o,
        78,
        "the server's certificate is not for the host in the URL",
    );
}

#[test]
fn ca_file_needs_rediss() {
    let (s, certs) = tls_server();
    let o = lockrun(
        &Env::new(),
        &format!("redis://127.0.0.1:{}/0", s.port),
        &ca_file(&certs.ca),
        &["current", "res"],
    );
    assert_fails(&o, 78, "is only used with a rediss:// URL");
}

/// A plain client at a TLS port: the server hangs up on it.
#[test]
fn plain_redis_against_a_tls_port_is_unavailable() {
    let (s, _) = tls_server();
    let o = lockrun(
        &Env::new(),
        &format!("redis://127.0.0.1:{}/0", s.port),
        "",
        &["current", "res"],
    );
    assert_fails(&o, 69, "(if the server requires TLS, use rediss://)");
}
