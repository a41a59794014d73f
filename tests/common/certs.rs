//! Test certificates made with the `openssl` command: a CA, and a server certificate (for
//! `127.0.0.1` only) and a client certificate that it signed. Used by the TLS tests of the etcd,
//! Redis and PostgreSQL backends.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::server::require;

/// The files [`make`] wrote, all PEM.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate: subjectAltName IP:127.0.0.1, extendedKeyUsage serverAuth.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The client certificate: extendedKeyUsage clientAuth.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Makes a new CA (P-256, valid for two days) and the certificates it signed, in `dir`.
pub fn make(dir: &Path) -> Certs {
    let openssl = require("openssl", "openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509", "-days", "2", "-subj", "/CN=lockrun test CA"],
        &ec[..],
        &["-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat());
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext");
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        run(&[
            &["req", "-subj", &format!("/CN={name}")],
            &ec[..],
            &["-keyout", &key, "-out", &csr],
        ]
        .concat());
        run(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ]);
    }
    Certs {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}
