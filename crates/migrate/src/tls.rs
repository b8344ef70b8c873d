//! TLS for migration streams: both QEMUs load their host's credentials
//! (`tls-creds-x509`, verify-peer on both ends), so a destination accepts a
//! stream only from a host Ferry's CA signed, and the source sends guest
//! memory only to the host it named.

use crate::destination::Qmp;
use crate::hosts::Host;
use crate::live::{qmp_err, MigrateError};
use serde_json::json;
use std::path::{Path, PathBuf};

/// QOM id of the credentials object in each QEMU.
const CREDS_ID: &str = "ferry-migration-tls";

/// Who is who, for certificates, and where each side's credentials are.
#[derive(Debug, Clone)]
pub struct TlsPlan {
    /// The destination host's name: the source checks the destination's
    /// certificate carries it.
    pub destination: String,
    /// The source's credentials directory, in the layout QEMU loads
    /// (`ca-cert.pem`, `{server,client}-{cert,key}.pem`), on the source.
    pub source_dir: PathBuf,
    /// The destination's credentials directory, on the destination.
    pub destination_dir: PathBuf,
}

impl TlsPlan {
    /// Credentials for a migration between two hosts of a hosts file,
    /// issued by Ferry's CA at `ca_dir` (made on first use) into each host's
    /// runtime directory.
    pub fn from_ca(
        ca_dir: &Path,
        (src_name, src): (&str, &Host),
        (dst_name, dst): (&str, &Host),
    ) -> Result<Self, ferry_pki::PkiError> {
        let ca = ferry_pki::Ca::open_or_create(ca_dir)?;
        let addr = |h: &Host| h.migration_address.parse().into_iter().collect::<Vec<_>>();
        Ok(TlsPlan {
            destination: dst_name.to_string(),
            source_dir: ca.ensure_host(src_name, &addr(src), &src.tls_dir())?,
            destination_dir: ca.ensure_host(dst_name, &addr(dst), &dst.tls_dir())?,
        })
    }
}

/// Loads credentials from `dir` into one QEMU as the `endpoint` side.
async fn load(q: &impl Qmp, dir: &Path, endpoint: &str, side: &str) -> Result<(), MigrateError> {
    // An earlier attempt may have left its object behind.
    let _ = q.execute("object-del", Some(json!({"id": CREDS_ID}))).await;
    q.execute(
        "object-add",
        Some(json!({
            "qom-type": "tls-creds-x509",
            "id": CREDS_ID,
            "dir": dir,
            "endpoint": endpoint,
            "verify-peer": true,
        })),
    )
    .await
    .map_err(|source| MigrateError::Qmp {
        step: format!(
            "loading the {side}'s TLS credentials from {}",
            dir.display()
        ),
        source,
    })?;
    Ok(())
}

/// Loads credentials into both QEMUs and points their migration at them, or,
/// with no plan, makes sure no credentials from an earlier attempt linger.
pub(crate) async fn configure(
    plan: Option<&TlsPlan>,
    s: &impl Qmp,
    d: &impl Qmp,
) -> Result<(), MigrateError> {
    let Some(plan) = plan else {
        let off = json!({"tls-creds": ""});
        s.execute("migrate-set-parameters", Some(off.clone()))
            .await
            .map_err(qmp_err("turning migration TLS off at the source"))?;
        d.execute("migrate-set-parameters", Some(off))
            .await
            .map_err(qmp_err("turning migration TLS off at the destination"))?;
        return Ok(());
    };
    load(s, &plan.source_dir, "client", "source").await?;
    load(d, &plan.destination_dir, "server", "destination").await?;
    d.execute(
        "migrate-set-parameters",
        Some(json!({"tls-creds": CREDS_ID})),
    )
    .await
    .map_err(qmp_err("turning TLS on at the destination"))?;
    s.execute(
        "migrate-set-parameters",
        Some(json!({"tls-creds": CREDS_ID, "tls-hostname": plan.destination})),
    )
    .await
    .map_err(qmp_err("turning TLS on at the source"))?;
    Ok(())
}
