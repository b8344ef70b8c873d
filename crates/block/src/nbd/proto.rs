//! The NBD wire format: constants, request decoding, reply encoding.
//! Pure functions over bytes, so every decoder can be fuzzed.

/// `NBDMAGIC`, the first thing the server sends.
pub const INIT_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle negotiation magic, also prefixes each client option.
pub const OPTS_MAGIC: u64 = 0x4948_4156_454f_5054;
/// Prefix of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Prefix of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefix of every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flag: fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag: no 124 zero bytes after `EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 2;

/// Options a client may send.
pub mod opt {
    /// Select an export by name and start transmission (old style).
    pub const EXPORT_NAME: u32 = 1;
    /// End negotiation.
    pub const ABORT: u32 = 2;
    /// List exports.
    pub const LIST: u32 = 3;
    /// Describe an export.
    pub const INFO: u32 = 6;
    /// Describe an export and start transmission.
    pub const GO: u32 = 7;
}

/// Option reply types.
pub mod rep {
    /// Done.
    pub const ACK: u32 = 1;
    /// One export, in reply to LIST.
    pub const SERVER: u32 = 2;
    /// Information about an export.
    pub const INFO: u32 = 3;
    /// Option not supported.
    pub const ERR_UNSUP: u32 = 0x8000_0001;
    /// Malformed option.
    pub const ERR_INVALID: u32 = 0x8000_0003;
    /// No such export.
    pub const ERR_UNKNOWN: u32 = 0x8000_0006;
}

/// Information types in `NBD_REP_INFO`.
pub mod info {
    /// Size and transmission flags.
    pub const EXPORT: u16 = 0;
    /// Block size constraints.
    pub const BLOCK_SIZE: u16 = 3;
}

/// Transmission flags advertised per export.
pub mod tflag {
    /// Flags field is valid.
    pub const HAS_FLAGS: u16 = 1;
    /// Writes are refused.
    pub const READ_ONLY: u16 = 2;
    /// FLUSH is supported.
    pub const SEND_FLUSH: u16 = 4;
    /// The FUA command flag is supported.
    pub const SEND_FUA: u16 = 8;
    /// TRIM is supported.
    pub const SEND_TRIM: u16 = 32;
    /// WRITE_ZEROES is supported.
    pub const SEND_WRITE_ZEROES: u16 = 64;
    /// Several connections may share the export safely (flush is global).
    pub const CAN_MULTI_CONN: u16 = 256;
}

/// Transmission commands.
pub mod cmd {
    /// Read.
    pub const READ: u16 = 0;
    /// Write.
    pub const WRITE: u16 = 1;
    /// Disconnect.
    pub const DISC: u16 = 2;
    /// Flush.
    pub const FLUSH: u16 = 3;
    /// Discard.
    pub const TRIM: u16 = 4;
    /// Write zeroes.
    pub const WRITE_ZEROES: u16 = 6;
}

/// Command flag: force unit access.
pub const CMD_FLAG_FUA: u16 = 1;

/// Error numbers in replies (Linux errno values, as the protocol fixes them).
pub mod errno {
    /// Write to a read-only export.
    pub const EPERM: u32 = 1;
    /// Storage failed.
    pub const EIO: u32 = 5;
    /// Bad request (out of range, too large).
    pub const EINVAL: u32 = 22;
    /// Unknown command.
    pub const ENOTSUP: u32 = 95;
}

/// Largest payload of one request Ferry accepts (QEMU sends at most 32 MiB).
pub const MAX_REQUEST_BYTES: u32 = 32 * 1024 * 1024;
/// Largest option payload accepted during negotiation.
pub const MAX_OPTION_BYTES: u32 = 64 * 1024;
/// Size of a request header on the wire.
pub const REQUEST_HEADER_LEN: usize = 28;

/// Decoding failures; each closes the connection with a log line naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A magic number did not match.
    #[error("bad {what} magic {found:#x}")]
    BadMagic {
        /// Which magic.
        what: &'static str,
        /// What came instead.
        found: u64,
    },
    /// A length field is over its limit.
    #[error("{what} of {len} bytes is over the {max}-byte limit")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// The length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The payload of an option does not fit its declared structure.
    #[error("malformed {0} option")]
    MalformedOption(&'static str),
    /// The client's handshake flags ask for something unsupported.
    #[error("client flags {0:#x} not supported (need fixed newstyle)")]
    ClientFlags(u32),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(w)
}

/// The server's opening: magic, `IHAVEOPT`, handshake flags.
pub fn server_greeting() -> [u8; 18] {
    let mut g = [0u8; 18];
    g[..8].copy_from_slice(&INIT_MAGIC.to_be_bytes());
    g[8..16].copy_from_slice(&OPTS_MAGIC.to_be_bytes());
    g[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    g
}

/// Checks the client's 4-byte flags; returns whether it wants no zeroes.
pub fn parse_client_flags(b: [u8; 4]) -> Result<bool, ProtoError> {
    let flags = u32::from_be_bytes(b);
    if flags & u32::from(FLAG_FIXED_NEWSTYLE) == 0 || flags & !3 != 0 {
        return Err(ProtoError::ClientFlags(flags));
    }
    Ok(flags & u32::from(FLAG_NO_ZEROES) != 0)
}

/// An option header: (option, payload length).
pub fn parse_option_header(b: &[u8; 16]) -> Result<(u32, u32), ProtoError> {
    let magic = be64(b, 0);
    if magic != OPTS_MAGIC {
        return Err(ProtoError::BadMagic {
            what: "option",
            found: magic,
        });
    }
    let (option, len) = (be32(b, 8), be32(b, 12));
    if len > MAX_OPTION_BYTES {
        return Err(ProtoError::TooLong {
            what: "option",
            len,
            max: MAX_OPTION_BYTES,
        });
    }
    Ok((option, len))
}

/// The payload of `NBD_OPT_INFO`/`GO`: export name and requested info types.
pub fn parse_info_request(data: &[u8]) -> Result<(String, Vec<u16>), ProtoError> {
    let bad = ProtoError::MalformedOption("INFO/GO");
    if data.len() < 4 {
        return Err(bad);
    }
    let name_len = be32(data, 0) as usize;
    let rest = &data[4..];
    if rest.len() < name_len + 2 {
        return Err(bad);
    }
    let name = String::from_utf8(rest[..name_len].to_vec())
        .map_err(|_| ProtoError::MalformedOption("INFO/GO"))?;
    let rest = &rest[name_len..];
    let count = be16(rest, 0) as usize;
    let rest = &rest[2..];
    if rest.len() != count * 2 {
        return Err(bad);
    }
    let infos = rest
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    Ok((name, infos))
}

/// An option reply.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + data.len());
    v.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&reply.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// `NBD_INFO_EXPORT` payload.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut v = info::EXPORT.to_be_bytes().to_vec();
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v
}

/// `NBD_INFO_BLOCK_SIZE` payload.
pub fn info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut v = info::BLOCK_SIZE.to_be_bytes().to_vec();
    for x in [min, preferred, max] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

/// A transmission request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// Command type.
    pub kind: u16,
    /// Opaque handle echoed in the reply.
    pub handle: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length (of the data that follows, for WRITE).
    pub length: u32,
}

/// Decodes a request header.
pub fn parse_request(b: &[u8; REQUEST_HEADER_LEN]) -> Result<Request, ProtoError> {
    let magic = be32(b, 0);
    if magic != REQUEST_MAGIC {
        return Err(ProtoError::BadMagic {
            what: "request",
            found: u64::from(magic),
        });
    }
    let req = Request {
        flags: be16(b, 4),
        kind: be16(b, 6),
        handle: be64(b, 8),
        offset: be64(b, 16),
        length: be32(b, 24),
    };
    if matches!(req.kind, cmd::READ | cmd::WRITE) && req.length > MAX_REQUEST_BYTES {
        return Err(ProtoError::TooLong {
            what: "request",
            len: req.length,
            max: MAX_REQUEST_BYTES,
        });
    }
    Ok(req)
}

/// A simple reply header (the data of a successful READ follows it).
pub fn simple_reply(error: u32, handle: u64) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    r[4..8].copy_from_slice(&error.to_be_bytes());
    r[8..].copy_from_slice(&handle.to_be_bytes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_and_limits() {
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&CMD_FLAG_FUA.to_be_bytes());
        b[6..8].copy_from_slice(&cmd::WRITE.to_be_bytes());
        b[8..16].copy_from_slice(&7u64.to_be_bytes());
        b[16..24].copy_from_slice(&4096u64.to_be_bytes());
        b[24..].copy_from_slice(&512u32.to_be_bytes());
        let r = parse_request(&b).unwrap();
        assert_eq!(
            (r.flags, r.kind, r.handle, r.offset, r.length),
            (1, cmd::WRITE, 7, 4096, 512)
        );
        b[24..].copy_from_slice(&(MAX_REQUEST_BYTES + 1).to_be_bytes());
        assert!(matches!(parse_request(&b), Err(ProtoError::TooLong { .. })));
        b[0] = 0;
        assert!(matches!(
            parse_request(&b),
            Err(ProtoError::BadMagic { .. })
        ));
    }

    #[test]
    fn info_request_parses_and_rejects_truncation() {
        let mut d = 4u32.to_be_bytes().to_vec();
        d.extend_from_slice(b"disk");
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
        assert_eq!(
            parse_info_request(&d).unwrap(),
            ("disk".to_string(), vec![info::BLOCK_SIZE])
        );
        for cut in 0..d.len() {
            assert!(parse_info_request(&d[..cut]).is_err(), "cut {cut}");
        }
        let mut huge = u32::MAX.to_be_bytes().to_vec();
        huge.extend_from_slice(b"xx");
        assert!(parse_info_request(&huge).is_err());
    }

    #[test]
    fn client_flags_and_option_headers() {
        assert_eq!(parse_client_flags([0, 0, 0, 3]), Ok(true));
        assert_eq!(parse_client_flags([0, 0, 0, 1]), Ok(false));
        assert!(parse_client_flags([0, 0, 0, 0]).is_err());
        assert!(parse_client_flags([0, 0, 1, 1]).is_err());
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&OPTS_MAGIC.to_be_bytes());
        h[8..12].copy_from_slice(&opt::GO.to_be_bytes());
        h[12..].copy_from_slice(&10u32.to_be_bytes());
        assert_eq!(parse_option_header(&h), Ok((opt::GO, 10)));
        h[12..].copy_from_slice(&(MAX_OPTION_BYTES + 1).to_be_bytes());
        assert!(parse_option_header(&h).is_err());
    }
}
