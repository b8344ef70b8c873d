//! TLS for migration streams: both QEMUs load their host's credentials
//! (`tls-creds-x509`, verify-peer on both ends), so a destination accepts a
//! stream only from a host Ferry's CA signed, and the source sends guest
//! memory only to the host it named.

use crate::hosts::Host;
use crate::live::{qmp_err, MigrateError};
use ferry_qemu::QmpClient;
use serde_json::json;
use std::path::PathBuf;

/// QOM id of the credentials object in each QEMU.
const CREDS_ID: &str = "ferry-migration-tls";

/// Who is who, for certificates.
#[derive(Debug, Clone)]
pub struct TlsPlan {
    /// Directory of Ferry's CA (made on first use).
    pub ca_dir: PathBuf,
    /// The source host's name: the name in its certificate.
    pub source: String,
    /// The destination host's name: the source checks the destination's
    /// certificate carries it.
    pub destination: String,
    /// Credentials that exist already — the cluster's host certificates,
    /// in the layout QEMU loads (`ca-cert.pem`, `{server,client}-{cert,
    /// key}.pem`) — as (source's directory, destination's directory);
    /// `ca_dir` is then not used. `None`: made from the CA at `ca_dir`.
    pub credentials: Option<(PathBuf, PathBuf)>,
}

/// Loads credentials into both QEMUs and points their migration at them, or,
/// with no plan, makes sure no credentials from an earlier attempt linger.
pub(crate) async fn configure(
    plan: Option<&TlsPlan>,
    src: &Host,
    dst: &Host,
    s: &QmpClient,
    d: &QmpClient,
) -> Result<(), MigrateError> {
    let Some(plan) = plan else {
        for q in [s, d] {
            q.execute("migrate-set-parameters", Some(json!({"tls-creds": ""})))
                .await
                .map_err(qmp_err("turning migration TLS off"))?;
        }
        return Ok(());
    };
    let (src_dir, dst_dir) = match &plan.credentials {
        Some(dirs) => dirs.clone(),
        None => {
            let ca = ferry_pki::Ca::open_or_create(&plan.ca_dir)?;
            let addr = |h: &Host| h.migration_address.parse().into_iter().collect::<Vec<_>>();
            (
                ca.ensure_host(&plan.source, &addr(src), &src.tls_dir())?,
                ca.ensure_host(&plan.destination, &addr(dst), &dst.tls_dir())?,
            )
        }
    };
    for (q, dir, endpoint, side) in [
        (s, src_dir, "client", "source"),
        (d, dst_dir, "server", "destination"),
    ] {
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
    }
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
