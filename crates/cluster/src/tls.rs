//! TLS for the cluster endpoint: both ends present a certificate from the
//! cluster CA and check the other's.
//!
//! A member's credentials are the directory `ferry_pki::Ca::ensure_host`
//! writes (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`): one key and
//! one certificate good for TLS server and client authentication, so the
//! same identity serves the member's endpoint, calls other members, and
//! secures migration streams. A client checks that the server's certificate
//! names the member it meant to reach; a server accepts only clients whose
//! certificate the cluster CA signed. The ring provider is named
//! explicitly, so nothing depends on a process-wide default.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Problems loading credentials or building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing or unreadable.
    #[error("cannot read {path}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client verifier could not be built from the CA.
    #[error("TLS client verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// One member's TLS identity and the cluster CA it trusts.
#[derive(Debug)]
pub struct Identity {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            roots: self.roots.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Identity {
    /// Loads the credentials in a host directory made by
    /// `ferry_pki::Ca::ensure_host`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in certs(&dir.join("ca-cert.pem"))? {
            roots.add(ca)?;
        }
        let key_path = dir.join("server-key.pem");
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|source| TlsError::Pem {
            path: key_path,
            source,
        })?;
        Ok(Identity {
            roots: Arc::new(roots),
            chain: certs(&dir.join("server-cert.pem"))?,
            key,
        })
    }

    /// This member's certificate (DER).
    pub fn cert_der(&self) -> Option<&[u8]> {
        self.chain.first().map(|c| c.as_ref())
    }

    /// This member's private key (PKCS#8 DER, as `ferry_pki` writes it).
    pub(crate) fn key_der(&self) -> &[u8] {
        self.key.secret_der()
    }

    /// The SHA-256 (hex) of this member's certificate.
    pub fn cert_sha256(&self) -> Option<String> {
        self.chain
            .first()
            .map(|c| crate::api::auth::sha256_hex(c.as_ref()))
    }

    /// The server side: this member's certificate. A client certificate, if
    /// presented, must come from the cluster CA (or the handshake fails);
    /// a client without one reaches only what a bearer token opens (see
    /// `api::auth`).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .allow_unauthenticated()
            .build()?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The client side: servers must present a certificate from the cluster
    /// CA for the name dialled; this member authenticates with its own.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A client configuration with no certificate of its own (the CLI, which
/// authenticates with a token) that trusts servers of the CA in `ca_cert`.
pub fn anonymous_client_config(ca_cert: &Path) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certs(ca_cert)? {
        roots.add(ca)?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
