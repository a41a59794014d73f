//! TLS for PostgreSQL with rustls, with libpq's `sslmode` semantics:
//!
//! | `sslmode`                      | chain checked                  | host name checked |
//! |--------------------------------|--------------------------------|-------------------|
//! | `prefer`, `require` (`allow`)  | only if `sslrootcert` is given | no                |
//! | `verify-ca`                    | yes                            | no                |
//! | `verify-full`                  | yes                            | yes               |
//!
//! Roots: `sslrootcert=FILE`, else (for `verify-*`) `~/.postgresql/root.crt` when it exists,
//! else the system store (`sslrootcert=system` asks for it explicitly). Whether TLS is used at
//! all (`disable`, `prefer`, `require`) is tokio-postgres's business; this module only decides
//! what a handshake accepts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::Socket;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::options::SslMode;
use crate::backend::Error;

/// What tokio-postgres is handed to make TLS connections: rustls's, but one that also serves
/// a Unix socket. tokio-postgres asks for a TLS connector for every host, even with TLS off,
/// and names a socket's host "", which rustls refuses as a server name; TLS is never used on
/// a socket (see `Options::new`), so any valid name does there.
#[derive(Clone)]
pub struct Connector(MakeRustlsConnect);

/// The stream of a TLS connection.
pub type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

impl MakeTlsConnect<Socket> for Connector {
    type Stream = Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        let domain = if domain.is_empty() {
            "localhost"
        } else {
            domain
        };
        <MakeRustlsConnect as MakeTlsConnect<Socket>>::make_tls_connect(&mut self.0, domain)
    }
}

/// The connector for `mode`; `rootcert` is the URL's `sslrootcert`, `env` looks up `HOME`.
pub fn connector(
    mode: SslMode,
    rootcert: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Connector, Error> {
    let provider = crate::backend::tls::provider();
    let verify = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("cannot set up TLS: {e}")))?;
    let config = if !verify && rootcert.is_none() {
        // libpq's prefer/require: encrypted, but anyone may be at the other end.
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                roots: None,
                provider,
            }))
            .with_no_client_auth()
    } else {
        let file: Option<PathBuf> = match rootcert {
            Some("system") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => env("HOME")
                .map(|h| Path::new(&h).join(".postgresql/root.crt"))
                .filter(|p| p.exists()),
        };
        let roots = match file {
            Some(path) => file_roots(&path)?,
            None => system_roots()?,
        };
        if mode == SslMode::VerifyFull {
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    roots: Some(Arc::new(roots)),
                    provider,
                }))
                .with_no_client_auth()
        }
    };
    Ok(Connector(MakeRustlsConnect::new(config)))
}

/// The certificates of an `sslrootcert` file.
fn file_roots(path: &Path) -> Result<RootCertStore, Error> {
    let pem = crate::small_file::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read sslrootcert {}: {e}",
            crate::backend::shown(path)
        ))
    })?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(crate::backend::tls::pem_certificates(&pem));
    if added == 0 {
        return Err(Error::Config(format!(
            "sslrootcert {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// The system's trusted roots (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the usual bundle paths).
fn system_roots() -> Result<RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = match found.errors.first() {
            Some(e) => format!(": {e}"),
            None => String::new(),
        };
        return Err(Error::Config(format!(
            "no trusted root certificates found in the system store{why}; give \
             sslrootcert=FILE in the URL"
        )));
    }
    Ok(roots)
}

/// A certificate verifier that does less than rustls's own, for the libpq modes that ask for
/// less: with `roots`, it checks the chain but not the host name (`verify-ca`, or
/// `prefer`/`require` with `sslrootcert`); without, it accepts any certificate (plain
/// `prefer`/`require`). Either way the handshake signatures are checked, so the server still
/// proves it holds the key of the certificate it showed.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn every_mode_builds_a_connector() {
        for mode in [
            SslMode::Disable,
            SslMode::Allow,
            SslMode::Prefer,
            SslMode::Require,
        ] {
            assert!(connector(mode, None, &no_env).is_ok(), "{mode:?}");
        }
        // The verifying modes need roots: the system's are there on the test machines.
        if system_roots().is_ok() {
            for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
                assert!(connector(mode, None, &no_env).is_ok(), "{mode:?}");
                assert!(connector(mode, Some("system"), &no_env).is_ok(), "{mode:?}");
            }
        }
    }

    #[test]
    fn bad_root_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let err = |mode, file: &Path| match connector(mode, file.to_str(), &no_env).err() {
            Some(Error::Config(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(SslMode::VerifyFull, &missing).contains("cannot read sslrootcert"));
        // sslrootcert makes require check the chain too, so it must be readable there as well.
        assert!(err(SslMode::Require, &missing).contains("cannot read sslrootcert"));
        let junk = dir.path().join("junk.crt");
        std::fs::write(&junk, "junk").unwrap();
        assert!(err(SslMode::VerifyCa, &junk).contains("holds no PEM certificate"));
    }

    #[test]
    fn home_root_crt_is_used_for_verify_modes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".postgresql")).unwrap();
        std::fs::write(dir.path().join(".postgresql/root.crt"), "junk").unwrap();
        let home = dir.path().display().to_string();
        let env = |k: &str| (k == "HOME").then(|| home.clone());
        match connector(SslMode::VerifyCa, None, &env).err() {
            Some(Error::Config(m)) => assert!(m.contains(".postgresql/root.crt"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Not read without verification.
        assert!(connector(SslMode::Require, None, &env).is_ok());
    }
}
