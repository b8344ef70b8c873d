//! Ferry's certificate authority.
//!
//! Migration streams run over TLS with certificates on both ends
//! (`tls-creds-x509`, verify-peer): a host accepts a stream only from a host
//! whose certificate Ferry's CA signed, and the source checks that it talks to
//! the host it meant. Until the cluster exists (and makes its CA at cluster
//! create), the CA lives next to the hosts file and `ferry vm migrate` issues
//! each host's certificate on first use.
//!
//! Layout, as QEMU's `tls-creds-x509` reads a directory:
//!
//! ```text
//!  CA dir:    ca-cert.pem  ca-key.pem (0600)
//!  host dir:  ca-cert.pem  server-cert.pem  server-key.pem (0600)
//!                          client-cert.pem  client-key.pem (0600)
//! ```
//!
//! A host has one key and one certificate good for both TLS server and client
//! authentication, written under both names: it listens for incoming
//! migrations and sends outgoing ones with the same identity.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Problems making or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("{what}: {source}")]
    Cert {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// A host name that cannot go into a certificate.
    #[error("host name {0:?} cannot be a certificate name (use letters, digits, '-' and '.')")]
    BadName(String),
}

const CA_CERT: &str = "ca-cert.pem";
const CA_KEY: &str = "ca-key.pem";
/// How long issued certificates are valid.
const VALID_DAYS: u64 = 3650;

/// Ferry's certificate authority, kept in one directory.
#[derive(Debug, Clone)]
pub struct Ca {
    dir: PathBuf,
}

fn cert_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Cert { what, source }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        what: "cannot read",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a file atomically (temp file + rename), private if it holds a key.
fn write(path: &Path, text: &str, private: bool) -> Result<(), PkiError> {
    let io = |what, source| PkiError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(|e| io("cannot write", e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io("cannot write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("cannot write", e))
}

fn validity(params: &mut CertificateParams) {
    let now = std::time::SystemTime::now();
    // A day of slack for clocks that disagree a little between hosts.
    params.not_before = (now - std::time::Duration::from_secs(86400)).into();
    params.not_after = (now + std::time::Duration::from_secs(VALID_DAYS * 86400)).into();
}

/// The CA's own parameters. Issuing needs only its name and key usages, so
/// they are rebuilt here rather than parsed back from the certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Ferry");
    dn.push(DnType::CommonName, "Ferry cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

impl Ca {
    /// The CA in `dir`, made there first if it does not exist yet.
    pub fn open_or_create(dir: &Path) -> Result<Self, PkiError> {
        let ca = Ca {
            dir: dir.to_path_buf(),
        };
        if ca.dir.join(CA_CERT).exists() && ca.dir.join(CA_KEY).exists() {
            return Ok(ca);
        }
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            what: "cannot create the CA directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let key = KeyPair::generate().map_err(cert_err("generating the CA key"))?;
        let mut params = ca_params();
        validity(&mut params);
        let cert = params
            .self_signed(&key)
            .map_err(cert_err("signing the CA certificate"))?;
        write(&ca.dir.join(CA_KEY), &key.serialize_pem(), true)?;
        write(&ca.dir.join(CA_CERT), &cert.pem(), false)?;
        tracing::info!("created Ferry's CA in {}", dir.display());
        Ok(ca)
    }

    /// The CA's certificate file.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// Makes sure `dir` holds credentials for host `name` (reachable at
    /// `addresses`) that this CA signed; issues them if not. Returns `dir`.
    pub fn ensure_host(
        &self,
        name: &str,
        addresses: &[IpAddr],
        dir: &Path,
    ) -> Result<PathBuf, PkiError> {
        if !valid_name(name) {
            return Err(PkiError::BadName(name.to_string()));
        }
        let ca_cert = read(&self.cert_path())?;
        let stamp = dir.join("issued-for");
        let want = format!("{name} {addresses:?}\n{ca_cert}");
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
            return Ok(dir.to_path_buf());
        }
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            what: "cannot create the host's TLS directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let ca_key = KeyPair::from_pem(&read(&self.dir.join(CA_KEY))?).map_err(cert_err(
            format!("reading the CA key {}", self.dir.join(CA_KEY).display()),
        ))?;
        let issuer = Issuer::new(ca_params(), ca_key);

        let key = KeyPair::generate().map_err(cert_err("generating a host key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Ferry");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = std::iter::once(
            name.to_string()
                .try_into()
                .map(SanType::DnsName)
                .map_err(cert_err(format!("host name {name:?}"))),
        )
        .chain(addresses.iter().map(|a| Ok(SanType::IpAddress(*a))))
        .collect::<Result<_, _>>()?;
        // QEMU insists on both usages for a peer certificate when the
        // extension is critical, as rcgen writes it.
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(cert_err(format!("signing the certificate of {name}")))?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        write(&dir.join(CA_CERT), &ca_cert, false)?;
        for role in ["server", "client"] {
            write(&dir.join(format!("{role}-key.pem")), &key_pem, true)?;
            write(&dir.join(format!("{role}-cert.pem")), &cert_pem, false)?;
        }
        write(&stamp, &want, false)?;
        tracing::info!("issued a certificate for host {name} in {}", dir.display());
        Ok(dir.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_once_and_reissues_when_the_ca_changes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = Ca::open_or_create(&tmp.path().join("ca")).expect("ca");
        let host = tmp.path().join("h1");
        let addr: IpAddr = "10.20.0.1".parse().expect("ip");
        ca.ensure_host("h1", &[addr], &host).expect("issue");
        let first = std::fs::read_to_string(host.join("server-cert.pem")).expect("cert");
        assert!(first.contains("BEGIN CERTIFICATE"));
        assert_eq!(
            first,
            std::fs::read_to_string(host.join("client-cert.pem")).expect("client cert")
        );
        ca.ensure_host("h1", &[addr], &host).expect("again");
        assert_eq!(
            first,
            std::fs::read_to_string(host.join("server-cert.pem")).expect("cert"),
            "a valid certificate is kept"
        );
        let mode = std::fs::metadata(host.join("server-key.pem"))
            .expect("key")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        let other = Ca::open_or_create(&tmp.path().join("ca2")).expect("ca2");
        other.ensure_host("h1", &[addr], &host).expect("reissue");
        assert_ne!(
            first,
            std::fs::read_to_string(host.join("server-cert.pem")).expect("cert")
        );
    }

    #[test]
    fn rejects_names_that_cannot_be_certificate_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = Ca::open_or_create(tmp.path()).expect("ca");
        let err = ca
            .ensure_host("bad name/..", &[], &tmp.path().join("x"))
            .expect_err("bad name");
        assert!(err.to_string().contains("bad name/.."), "{err}");
    }
}
