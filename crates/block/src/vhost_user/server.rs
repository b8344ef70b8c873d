//! The vhost-user socket of one disk: one QEMU at a time, and the next one
//! (a restarted QEMU, a migration's destination on this host) after it.

use super::device::{BlkDevice, Gm};
use crate::nbd::server::Export;
use crate::service::ServiceError;
use std::path::Path;
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::GuestMemoryMmap;

/// Listens on `path`, replacing a stale socket file but never a live one
/// (as the service's NBD socket, see [`crate::service::bind`]).
pub fn bind(path: &Path) -> Result<Listener, ServiceError> {
    crate::service::bind(path).map(Listener::from)
}

/// Serves `export` to each QEMU that connects, one after another, forever.
pub fn serve(mut listener: Listener, export: &Export, queues: u16) {
    let serial = format!("ferry-{}", export.name);
    loop {
        let device = BlkDevice::new(
            export.backend.clone(),
            export.counters.clone(),
            &serial,
            queues,
        );
        let mem = Gm::new(GuestMemoryMmap::new());
        let mut daemon = match VhostUserDaemon::new(format!("vhost-{}", export.name), device, mem) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(export = %export.name, "cannot start the vhost-user device: {e}");
                return;
            }
        };
        if let Err(e) = daemon.start(&mut listener) {
            tracing::warn!(export = %export.name, "vhost-user accept: {e}");
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        tracing::info!(export = %export.name, "vhost-user front end connected");
        match daemon.wait() {
            Ok(()) => tracing::info!(export = %export.name, "vhost-user front end disconnected"),
            Err(e) => tracing::warn!(export = %export.name, "vhost-user connection ended: {e}"),
        }
    }
}
