//! TLS for the network backends: one crypto provider for the whole process, and reading PEM
//! certificate bundles.
//!
//! Every backend that speaks TLS (Redis, PostgreSQL, etcd, and DynamoDB's SDK, whose HTTPS client
//! is built on ring too) uses rustls, never OpenSSL, so the binary links no `libssl`. Only
//! ring is linked: aws-lc, the AWS SDK's default, runs a CPU probe at the start of every process
//! (see `Cargo.toml`). Should another provider ever end up in the build, rustls would refuse to
//! pick one on its own (building a configuration without a process default panics), so every
//! backend calls [`ensure_provider`] before its first handshake, and lockrun's provider is ring.
//! Nothing here is done unless a TLS connection is about to be made, so runs that use no TLS
//! pay nothing for it.

use std::sync::{Arc, Once};

use rustls::crypto::CryptoProvider;

/// Installs ring as the process-wide default rustls provider, once. A default installed
/// earlier (by lockrun or anything else) is kept: that is not an error.
pub fn ensure_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error only means that a provider is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The process's provider, for code that builds a rustls configuration itself.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub fn provider() -> Arc<CryptoProvider> {
    ensure_provider();
    match CryptoProvider::get_default() {
        Some(p) => Arc::clone(p),
        None => Arc::new(rustls::crypto::ring::default_provider()),
    }
}

/// The certificates of a PEM bundle, in order; anything that is not a certificate is skipped.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub fn pem_certificates(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_is_installed_once_and_shared() {
        let a = provider();
        let b = provider();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(CryptoProvider::get_default().is_some());
        // Building a configuration does not panic, although two providers are compiled in.
        let _ = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
    }

    #[cfg(any(feature = "redis", feature = "postgres"))]
    #[test]
    fn pem_bundles() {
        assert!(pem_certificates(b"nothing").is_empty());
        assert!(
            pem_certificates(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n")
                .is_empty()
        );
        let one = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----\n";
        let two = format!("junk\n{one}{key}{one}trailer\n");
        let certs = pem_certificates(two.as_bytes());
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), &[0, 1, 2]);
    }
}
