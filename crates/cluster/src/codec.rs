//! Ferry's record envelope for everything the cluster database persists or
//! sends: the Raft log, the vote, the snapshot, and Raft RPC bodies.
//!
//! A sealed record is one frame:
//!
//! ```text
//!  magic[4]  version u16 LE  length u32 LE  crc32 u32 LE  payload[length]
//! ```
//!
//! The magic names the kind of record (log entry, vote, snapshot, RPC), the
//! version names the payload's schema, and the CRC-32 covers the payload.
//! The payload is JSON. A decoder checks the length against a cap before it
//! reads or allocates, then the checksum, then parses: bad input is an error
//! that says what is wrong, never a panic.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes before the payload: magic, version, length, checksum.
pub const HEADER_LEN: usize = 4 + 2 + 4 + 4;

/// The schema version this build writes and reads.
pub const VERSION: u16 = 1;

/// A kind of record: its magic and the largest payload accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// Four bytes that open every record of this kind.
    pub magic: [u8; 4],
    /// The largest payload a decoder accepts, in bytes.
    pub max_len: u32,
    /// A name for error messages.
    pub name: &'static str,
}

/// A Raft log record (entry, truncation or purge).
pub const LOG_RECORD: Kind = Kind {
    magic: *b"FLOG",
    max_len: 16 << 20,
    name: "log record",
};
/// A small metadata file: the vote, the committed log id.
pub const META: Kind = Kind {
    magic: *b"FMET",
    max_len: 64 << 10,
    name: "metadata record",
};
/// A state machine snapshot, on disk or on the wire.
pub const SNAPSHOT: Kind = Kind {
    magic: *b"FSNP",
    max_len: 256 << 20,
    name: "snapshot",
};
/// A heartbeat datagram.
pub const HEARTBEAT: Kind = Kind {
    magic: *b"FHBT",
    max_len: 4096,
    name: "heartbeat",
};
/// A Raft RPC request or response body.
pub const RPC: Kind = Kind {
    magic: *b"FRPC",
    max_len: 64 << 20,
    name: "Raft RPC body",
};

/// Why a record could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than the header or the header's length promise.
    #[error("{kind}: truncated: {have} bytes, need {need}")]
    Truncated {
        /// The record kind.
        kind: &'static str,
        /// Bytes present.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The record does not start with this kind's magic.
    #[error("{kind}: bad magic {found:02x?}")]
    BadMagic {
        /// The record kind.
        kind: &'static str,
        /// The bytes found instead.
        found: [u8; 4],
    },
    /// A version this build does not know.
    #[error("{kind}: unsupported version {found} (this build reads {VERSION})")]
    BadVersion {
        /// The record kind.
        kind: &'static str,
        /// The version found.
        found: u16,
    },
    /// The length field is beyond the cap for this kind.
    #[error("{kind}: length {len} exceeds the cap of {max} bytes")]
    TooLarge {
        /// The record kind.
        kind: &'static str,
        /// The length claimed.
        len: u64,
        /// The cap.
        max: u32,
    },
    /// The payload does not match its checksum.
    #[error("{kind}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        /// The record kind.
        kind: &'static str,
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the payload read.
        computed: u32,
    },
    /// The payload is not the JSON this kind expects.
    #[error("{kind}: malformed payload")]
    Malformed {
        /// The record kind.
        kind: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Serialises `value` into one sealed record of `kind`.
pub fn seal<T: Serialize>(kind: Kind, value: &T) -> Result<Vec<u8>, CodecError> {
    let payload = serde_json::to_vec(value).map_err(|source| CodecError::Malformed {
        kind: kind.name,
        source,
    })?;
    if payload.len() as u64 > u64::from(kind.max_len) {
        return Err(CodecError::TooLarge {
            kind: kind.name,
            len: payload.len() as u64,
            max: kind.max_len,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&kind.magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Checks the header at the start of `buf` and returns the payload length.
/// Needs only [`HEADER_LEN`] bytes.
pub fn payload_len(kind: Kind, buf: &[u8]) -> Result<usize, CodecError> {
    let header = buf.get(..HEADER_LEN).ok_or(CodecError::Truncated {
        kind: kind.name,
        have: buf.len(),
        need: HEADER_LEN,
    })?;
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&header[..4]);
    if magic != kind.magic {
        return Err(CodecError::BadMagic {
            kind: kind.name,
            found: magic,
        });
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != VERSION {
        return Err(CodecError::BadVersion {
            kind: kind.name,
            found: version,
        });
    }
    let len = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
    if len > kind.max_len {
        return Err(CodecError::TooLarge {
            kind: kind.name,
            len: u64::from(len),
            max: kind.max_len,
        });
    }
    Ok(len as usize)
}

/// Opens the record at the start of `buf`; returns it and the bytes it took.
pub fn open_prefix<T: DeserializeOwned>(kind: Kind, buf: &[u8]) -> Result<(T, usize), CodecError> {
    let len = payload_len(kind, buf)?;
    let total = HEADER_LEN + len;
    let payload = buf.get(HEADER_LEN..total).ok_or(CodecError::Truncated {
        kind: kind.name,
        have: buf.len(),
        need: total,
    })?;
    let stored = u32::from_le_bytes([buf[10], buf[11], buf[12], buf[13]]);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(CodecError::BadChecksum {
            kind: kind.name,
            stored,
            computed,
        });
    }
    let value = serde_json::from_slice(payload).map_err(|source| CodecError::Malformed {
        kind: kind.name,
        source,
    })?;
    Ok((value, total))
}

/// Opens a buffer that holds exactly one record of `kind`.
pub fn open<T: DeserializeOwned>(kind: Kind, buf: &[u8]) -> Result<T, CodecError> {
    let (value, used) = open_prefix(kind, buf)?;
    if used != buf.len() {
        return Err(CodecError::Truncated {
            kind: kind.name,
            have: buf.len(),
            need: used,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let sealed = seal(META, &("vote", 7u64)).expect("seal");
        let back: (String, u64) = open(META, &sealed).expect("open");
        assert_eq!(back, ("vote".to_string(), 7));
    }

    #[test]
    fn rejects_every_kind_of_damage() {
        let sealed = seal(META, &vec![1u32, 2, 3]).expect("seal");
        let err = |buf: &[u8]| {
            open::<Vec<u32>>(META, buf)
                .expect_err("must fail")
                .to_string()
        };
        assert!(err(&sealed[..5]).contains("truncated"));
        assert!(err(&sealed[..sealed.len() - 1]).contains("truncated"));
        let mut bad = sealed.clone();
        bad[0] = b'X';
        assert!(err(&bad).contains("magic"));
        let mut bad = sealed.clone();
        bad[4] = 9;
        assert!(err(&bad).contains("version 9"));
        let mut bad = sealed.clone();
        bad[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(err(&bad).contains("cap"));
        let mut bad = sealed.clone();
        let last = bad.len() - 2;
        bad[last] ^= 0x40;
        assert!(err(&bad).contains("checksum"));
        let other = seal(META, &"not a list").expect("seal");
        assert!(err(&other).contains("malformed"));
        assert!(
            open::<Vec<u32>>(LOG_RECORD, &sealed).is_err(),
            "kind is checked"
        );
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut seed = 0x1234_5678u32;
        for len in 0..200usize {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = open::<serde_json::Value>(META, &buf);
            let mut framed = seal(META, &0u8).expect("seal")[..HEADER_LEN].to_vec();
            framed.extend_from_slice(&buf);
            let _ = open::<serde_json::Value>(META, &framed);
        }
    }
}
