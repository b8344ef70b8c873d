//! The iSCSI PDU codec (RFC 7143 section 11): no I/O, only bytes in and out.
//!
//! A PDU is a 48-byte basic header segment ([`Header`], one typed struct per
//! opcode), optional additional header segments, and a data segment padded
//! to 4 bytes; header and data may each carry a CRC32C digest. [`frame`]
//! splits a byte stream into PDUs and writes them back; [`text`] parses the
//! key=value lists of Login and Text PDUs.

pub mod bhs;
pub mod digest;
pub mod frame;
pub(crate) mod outgoing;
pub mod text;

pub use bhs::{Header, Opcode};
pub use frame::{Digests, FrameError, Pdu};

/// Length of the basic header segment.
pub const BHS_LEN: usize = 48;

/// The largest data segment Ferry accepts from the wire, whatever was
/// negotiated: a cap against a peer that announces gigabytes.
pub const MAX_DATA_SEGMENT: usize = 16 * 1024 * 1024;
