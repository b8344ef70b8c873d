//! NBD, the protocol QEMU speaks to Ferry-served disks.
//!
//! [`proto`] encodes and decodes the wire format with no I/O (and is fuzzed);
//! [`server`] runs the handshake and the transmission phase on a socket;
//! [`batch`] gathers the replies a backend's thread makes into one write.
//! Ferry implements the fixed-newstyle handshake with `NBD_OPT_GO`/`INFO`/
//! `LIST`/`EXPORT_NAME`, simple replies, and the READ, WRITE (with FUA),
//! FLUSH, TRIM, WRITE_ZEROES and DISC commands — what QEMU's client uses.
//! Reference: the NBD protocol document (doc/proto.md in the NBD project).

pub mod batch;
pub mod proto;
pub mod server;
