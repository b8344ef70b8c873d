//! The test guest: Debian's cloud kernel and an initramfs built by Ferry.
//!
//! [`build`] downloads the kernel package with `apt-get download`, extracts
//! the kernel and the virtio modules the guest needs, and packs an initramfs
//! (cpio newc) with busybox-static, those modules, Ferry's `/init` and the
//! `ferry-workload` binary. The result is cached: a second build with the same
//! inputs does nothing.

pub mod builder;
pub mod cpio;
mod kernel;

pub use builder::{build, BuildOptions, GuestError, Manifest, MANIFEST_FILE};

/// Text the guest prints on its serial console once it is up.
pub const READY_MARKER: &str = "FERRY-GUEST-READY";

/// Where the guest is built when no directory is given.
pub fn default_dir() -> std::path::PathBuf {
    std::env::var_os("FERRY_GUEST_DIR")
        .map(Into::into)
        .unwrap_or_else(|| "/var/lib/ferry/guest".into())
}
