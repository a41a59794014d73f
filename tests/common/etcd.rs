//! Real etcd servers for the etcd backend tests, and a client to inspect and tamper with them.
//!
//! Each server is the Debian `etcd` binary (package `etcd-server`) on two free loopback ports
//! (client and peer), with its data directory under a managed temporary directory (see
//! [`super::server`]). The raft timers are shortened (heartbeat 10 ms, election 100 ms) so that
//! etcd's minimum lease TTL, 1.5 election timeouts rounded up to whole seconds, is 1 s instead of
//! the default 2 s; the expiry tests rely on that.
#![cfg(feature = "etcd")]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::server::{free_port, require, server_dir, spawn_managed, wait_for_port, Server};

/// The user and password of [`start_etcd_with_auth`].
pub const ROOT_PASSWORD: &str = "lockrun-etcd-root-pw";

/// The shared etcd server of this test binary (no auth, plain HTTP).
pub fn etcd() -> &'static Server {
    static ETCD: OnceLock<Server> = OnceLock::new();
    ETCD.get_or_init(start_etcd)
}

/// An etcd server of its own, for tests that pause it or enable auth.
pub fn start_etcd() -> Server {
    start_etcd_with(&[])
}

/// An etcd server of its own with extra command-line flags.
pub fn start_etcd_with(extra: &[&str]) -> Server {
    launch(extra, false).0
}

/// Certificates for a TLS server: a CA, and a client certificate and key it signed.
#[derive(Debug, Clone)]
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A server that speaks only TLS on its client port and requires a client certificate; its
/// certificates are made with `openssl` in the server directory.
pub fn start_etcd_tls() -> (Server, Certs) {
    let (server, certs) = launch(&[], true);
    (server, certs.expect("certificates"))
}

fn launch(extra: &[&str], tls: bool) -> (Server, Option<Certs>) {
    let bin = require("etcd", "etcd-server");
    let dir = server_dir("etcd");
    let (port, peer) = (free_port(), free_port());
    let scheme = if tls { "https" } else { "http" };
    let client_url = format!("{scheme}://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut cmd = Command::new(bin);
    cmd.arg("--name")
        .arg("default")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("default={peer_url}")])
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .args(["--log-level", "warn"])
        .args(extra);
    let certs = tls.then(|| {
        let certs = make_certs(&dir);
        cmd.arg("--cert-file")
            .arg(dir.join("server.pem"))
            .arg("--key-file")
            .arg(dir.join("server.key"))
            .arg("--trusted-ca-file")
            .arg(&certs.ca)
            .arg("--client-cert-auth");
        certs
    });
    // etcd 3.4 refuses to start on architectures it does not officially support unless told.
    if let Some(arch) = unsupported_arch() {
        cmd.env("ETCD_UNSUPPORTED_ARCH", arch);
    }
    let pid = spawn_managed(cmd, &dir);
    wait_for_port(port, "etcd", &dir);
    let server = Server { port, dir, pid };
    wait_ready(&server, certs.as_ref());
    (server, certs)
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn make_certs(dir: &Path) -> Certs {
    let made = super::certs::make(dir);
    Certs {
        ca: made.ca,
        cert: made.client_cert,
        key: made.client_key,
    }
}

/// A client of a TLS server, with the client certificate.
pub async fn tls_client(server: &Server, certs: &Certs) -> etcd_client::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |p: &PathBuf| std::fs::read(p).expect("certificate file");
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&certs.ca)))
        .identity(etcd_client::Identity::from_pem(
            read(&certs.cert),
            read(&certs.key),
        ));
    let opts = etcd_client::ConnectOptions::new().with_tls(tls);
    etcd_client::Client::connect([format!("https://127.0.0.1:{}", server.port)], Some(opts))
        .await
        .expect("etcd TLS client")
}

/// A private server with auth enabled: user `root` with [`ROOT_PASSWORD`]; `extra` flags.
pub fn start_etcd_with_auth(extra: &[&str]) -> Server {
    let server = start_etcd_with(extra);
    block_on(async {
        let mut c = client(&server).await;
        c.user_add("root", ROOT_PASSWORD, None)
            .await
            .expect("user add");
        c.role_add("root").await.expect("role add");
        c.user_grant_role("root", "root").await.expect("grant");
        c.auth_enable().await.expect("auth enable");
    });
    server
}

/// The backend URL of a server.
pub fn url(server: &Server) -> String {
    format!("etcd://127.0.0.1:{}", server.port)
}

/// A client without credentials.
pub async fn client(server: &Server) -> etcd_client::Client {
    etcd_client::Client::connect([format!("http://127.0.0.1:{}", server.port)], None)
        .await
        .expect("etcd client")
}

/// A client logged in as root of an auth-enabled server.
pub async fn root_client(server: &Server) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new().with_user("root", ROOT_PASSWORD);
    etcd_client::Client::connect([format!("http://127.0.0.1:{}", server.port)], Some(opts))
        .await
        .expect("etcd root client")
}

/// The number of live etcd leases on the server.
pub async fn lease_count(c: &mut etcd_client::Client) -> usize {
    c.leases().await.expect("lease list").leases().len()
}

/// Runs `f` to completion on a runtime of its own in another thread, so that synchronous
/// harness code works both inside and outside async tests.
pub fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f)
        })
        .join()
        .expect("harness thread panicked")
    })
}

/// Waits until the server answers a linearizable read (it has elected itself leader).
fn wait_ready(server: &Server, certs: Option<&Certs>) {
    block_on(async {
        let end = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut c = match certs {
                Some(certs) => tls_client(server, certs).await,
                None => client(server).await,
            };
            match tokio::time::timeout(std::time::Duration::from_secs(2), c.get("ready", None))
                .await
            {
                Ok(Ok(_)) => return,
                _ if tokio::time::Instant::now() > end => {
                    let log =
                        std::fs::read_to_string(server.dir.join("server.err")).unwrap_or_default();
                    panic!("etcd on port {} never became ready:\n{log}", server.port);
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    });
}

/// The GOARCH name to put in `ETCD_UNSUPPORTED_ARCH`, on architectures that need it.
fn unsupported_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => None,
        "aarch64" => Some("arm64"),
        "x86" => Some("386"),
        "powerpc64" => Some("ppc64le"),
        other => Some(other),
    }
}
