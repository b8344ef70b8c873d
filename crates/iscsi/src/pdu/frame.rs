//! Framing: a PDU is BHS + AHS + [header digest] + data + padding +
//! [data digest]. [`frame_len`] says how many bytes a PDU needs once its
//! 48-byte header is in; [`Pdu::parse`] decodes one complete frame and
//! [`Pdu::encode`] writes one.

use super::bhs::{BhsError, Header};
use super::digest::{crc32c, crc32c_parts};
use super::{BHS_LEN, MAX_DATA_SEGMENT};

/// Which digests the connection negotiated (CRC32C or none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digests {
    /// HeaderDigest=CRC32C.
    pub header: bool,
    /// DataDigest=CRC32C.
    pub data: bool,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The basic header segment is invalid.
    #[error("bad basic header segment")]
    Bhs(#[from] BhsError),
    /// DataSegmentLength exceeds what this connection accepts.
    #[error("data segment of {len} bytes exceeds the limit of {max}")]
    DataTooLong {
        /// Announced length.
        len: usize,
        /// Accepted maximum.
        max: usize,
    },
    /// The buffer ended before the frame did.
    #[error("frame truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the header announces.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// The header digest does not match.
    #[error("header digest mismatch: computed {computed:#010x}, received {received:#010x}")]
    HeaderDigest {
        /// Digest computed over the header.
        computed: u32,
        /// Digest on the wire.
        received: u32,
    },
    /// The data digest does not match.
    #[error("data digest mismatch: computed {computed:#010x}, received {received:#010x}")]
    DataDigest {
        /// Digest computed over the data.
        computed: u32,
        /// Digest on the wire.
        received: u32,
    },
    /// An additional header segment's own length runs past the AHS area.
    #[error("additional header segment at offset {offset} overruns the AHS area")]
    AhsOverrun {
        /// Offset of the bad segment inside the AHS area.
        offset: usize,
    },
}

/// One PDU: typed header, raw AHS bytes, data segment without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    /// The decoded basic header segment.
    pub header: Header,
    /// Additional header segments, raw (a multiple of 4 bytes).
    pub ahs: Vec<u8>,
    /// The data segment, padding removed.
    pub data: Vec<u8>,
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Lengths announced by a raw header: (AHS bytes, data segment bytes).
pub fn announced_lengths(bhs: &[u8; BHS_LEN]) -> (usize, usize) {
    let ahs = usize::from(bhs[4]) * 4;
    let data = (usize::from(bhs[5]) << 16) | (usize::from(bhs[6]) << 8) | usize::from(bhs[7]);
    (ahs, data)
}

/// Total bytes of the frame that starts with `bhs`, or an error when its
/// data segment is longer than `max_data` (never more than
/// [`MAX_DATA_SEGMENT`]).
pub fn frame_len(
    bhs: &[u8; BHS_LEN],
    digests: Digests,
    max_data: usize,
) -> Result<usize, FrameError> {
    let (ahs, data) = announced_lengths(bhs);
    let max = max_data.min(MAX_DATA_SEGMENT);
    if data > max {
        return Err(FrameError::DataTooLong { len: data, max });
    }
    let mut n = BHS_LEN + ahs;
    if digests.header {
        n += 4;
    }
    if data > 0 {
        n += data + pad4(data);
        if digests.data {
            n += 4;
        }
    }
    Ok(n)
}

fn le32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w)
}

impl Pdu {
    /// A PDU with no AHS and the given data segment.
    pub fn new(header: Header, data: Vec<u8>) -> Pdu {
        Pdu {
            header,
            ahs: Vec::new(),
            data,
        }
    }

    /// Decodes one complete frame from the start of `buf`; returns it and
    /// the number of bytes it used.
    pub fn parse(
        buf: &[u8],
        digests: Digests,
        max_data: usize,
    ) -> Result<(Pdu, usize), FrameError> {
        let have = buf.len();
        let bhs: &[u8; BHS_LEN] =
            buf.get(..BHS_LEN)
                .and_then(|s| s.try_into().ok())
                .ok_or(FrameError::Truncated {
                    need: BHS_LEN,
                    have,
                })?;
        let need = frame_len(bhs, digests, max_data)?;
        if have < need {
            return Err(FrameError::Truncated { need, have });
        }
        let (ahs_len, data_len) = announced_lengths(bhs);
        let mut at = BHS_LEN + ahs_len;
        if digests.header {
            let computed = crc32c(&buf[..at]);
            let received = le32(&buf[at..]);
            if computed != received {
                return Err(FrameError::HeaderDigest { computed, received });
            }
            at += 4;
        }
        let header = Header::decode(bhs)?;
        let ahs = buf[BHS_LEN..BHS_LEN + ahs_len].to_vec();
        check_ahs(&ahs)?;
        let mut data = Vec::new();
        if data_len > 0 {
            let padded = data_len + pad4(data_len);
            let seg = &buf[at..at + padded];
            at += padded;
            if digests.data {
                let computed = crc32c(seg);
                let received = le32(&buf[at..]);
                if computed != received {
                    return Err(FrameError::DataDigest { computed, received });
                }
                at += 4;
            }
            data = seg[..data_len].to_vec();
        }
        Ok((Pdu { header, ahs, data }, at))
    }

    /// Encodes this PDU with the given digests.
    pub fn encode(&self, digests: Digests) -> Vec<u8> {
        let mut out = Vec::with_capacity(BHS_LEN + self.ahs.len() + self.data.len() + 12);
        self.encode_into(digests, &mut out);
        out
    }

    /// Appends this PDU's frame to `out`.
    pub fn encode_into(&self, digests: Digests, out: &mut Vec<u8>) {
        // A data segment longer than 24 bits cannot be sent; callers split
        // data by MaxRecvDataSegmentLength long before this.
        let data = &self.data[..self.data.len().min(0xff_ffff)];
        encode_head(&self.header, &self.ahs, data.len(), digests, out);
        out.extend_from_slice(data);
        out.extend_from_slice(encode_tail(data, digests).as_bytes());
    }

    /// The extended CDB bytes from an AHS of type 1, if any (appended after
    /// the 16 CDB bytes of the header).
    pub fn extended_cdb(&self) -> Option<&[u8]> {
        ahs_segments(&self.ahs)
            .find(|(t, _)| *t == 1)
            .map(|(_, body)| body)
    }
}

/// Appends what a frame puts before its data segment: the BHS (with the
/// AHS and data lengths filled in), the AHS and the header digest. With
/// [`encode_tail`] this is the one PDU encoder; a sender that keeps the
/// data segment elsewhere (the initiator's write data) sends the three
/// pieces with a vectored write instead of copying the data after the head.
pub fn encode_head(
    header: &Header,
    ahs: &[u8],
    data_len: usize,
    digests: Digests,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let mut bhs = header.encode();
    let len = data_len.min(0xff_ffff);
    bhs[4] = u8::try_from(ahs.len() / 4).unwrap_or(u8::MAX);
    bhs[5] = (len >> 16) as u8;
    bhs[6] = (len >> 8) as u8;
    bhs[7] = len as u8;
    out.extend_from_slice(&bhs);
    out.extend_from_slice(ahs);
    if digests.header {
        let d = crc32c(&out[start..]);
        out.extend_from_slice(&d.to_le_bytes());
    }
}

/// What a frame puts after its data segment: padding and data digest.
#[derive(Debug, Clone, Copy)]
pub struct Tail {
    bytes: [u8; 7],
    len: usize,
}

impl Tail {
    /// The bytes to send after the data segment (none for an empty one).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The padding and data digest that follow `data` (see [`encode_head`]).
pub fn encode_tail(data: &[u8], digests: Digests) -> Tail {
    let mut tail = Tail {
        bytes: [0; 7],
        len: 0,
    };
    if data.is_empty() {
        return tail;
    }
    let pad = pad4(data.len());
    tail.len = pad;
    if digests.data {
        let d = crc32c_parts(&[data, &tail.bytes[..pad]]);
        tail.bytes[pad..pad + 4].copy_from_slice(&d.to_le_bytes());
        tail.len += 4;
    }
    tail
}

/// Why [`read_rest`] could not produce a PDU.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed or ended early.
    #[error("reading a PDU")]
    Io(#[from] std::io::Error),
    /// The bytes are not a valid PDU.
    #[error("invalid PDU")]
    Frame(#[from] FrameError),
}

/// What follows a basic header segment on the wire, from its lengths: a
/// stream reader reads [`Layout::head_len`] bytes (AHS and header digest),
/// checks them with [`decode_head`], then reads [`Layout::data_len`] bytes
/// (data segment, padding, data digest) straight into the buffer the PDU
/// keeps and checks them with [`finish_data`]. The checks are those of
/// [`Pdu::parse`], in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    ahs: usize,
    header_digest: bool,
    data: usize,
    data_digest: bool,
}

impl Layout {
    /// The layout announced by `bhs`, or an error when its data segment is
    /// longer than `max_data` (see [`frame_len`]).
    pub fn of(
        bhs: &[u8; BHS_LEN],
        digests: Digests,
        max_data: usize,
    ) -> Result<Layout, FrameError> {
        frame_len(bhs, digests, max_data)?;
        let (ahs, data) = announced_lengths(bhs);
        Ok(Layout {
            ahs,
            header_digest: digests.header,
            data,
            data_digest: digests.data && data > 0,
        })
    }

    /// Bytes of AHS and header digest after the BHS.
    pub fn head_len(&self) -> usize {
        self.ahs + if self.header_digest { 4 } else { 0 }
    }

    /// Bytes of the data segment itself (no padding, no digest).
    pub fn data_segment(&self) -> usize {
        self.data
    }

    /// Whether a data digest follows the data segment's padding.
    pub fn data_digest(&self) -> bool {
        self.data_digest
    }

    /// Bytes of data segment, padding and data digest after the head.
    pub fn data_len(&self) -> usize {
        if self.data == 0 {
            return 0;
        }
        self.data + pad4(self.data) + if self.data_digest { 4 } else { 0 }
    }
}

/// Checks the header digest, decodes the BHS and checks the AHS; `head`
/// holds the [`Layout::head_len`] bytes after the BHS and becomes the AHS.
pub fn decode_head(
    bhs: &[u8; BHS_LEN],
    layout: &Layout,
    mut head: Vec<u8>,
) -> Result<(Header, Vec<u8>), FrameError> {
    if layout.header_digest {
        let computed = crc32c_parts(&[bhs, &head[..layout.ahs]]);
        let received = le32(&head[layout.ahs..]);
        if computed != received {
            return Err(FrameError::HeaderDigest { computed, received });
        }
    }
    head.truncate(layout.ahs);
    let header = Header::decode(bhs)?;
    check_ahs(&head)?;
    Ok((header, head))
}

/// Checks the data digest of the [`Layout::data_len`] bytes in `data` and
/// cuts them down to the data segment, in place.
pub fn finish_data(layout: &Layout, data: &mut Vec<u8>) -> Result<(), FrameError> {
    if layout.data_digest {
        let padded = layout.data + pad4(layout.data);
        let computed = crc32c(&data[..padded]);
        let received = le32(&data[padded..]);
        if computed != received {
            return Err(FrameError::DataDigest { computed, received });
        }
    }
    data.truncate(layout.data);
    Ok(())
}

/// Reads the rest of one PDU, whose 48-byte header is `bhs`, from a stream:
/// the checks of [`Pdu::parse`], with the data segment read straight into
/// its own buffer (not zero-filled first) instead of a frame buffer it is
/// then copied out of.
pub fn read_rest(
    r: &mut impl std::io::Read,
    bhs: [u8; BHS_LEN],
    digests: Digests,
    max_data: usize,
) -> Result<Pdu, ReadError> {
    let (layout, header, ahs) = read_head(r, bhs, digests, max_data)?;
    use std::io::Read as _;
    let want = layout.data_len();
    // An exactly sized, uninitialised buffer that read_to_end fills: no
    // zeroing pass over bytes about to be overwritten, no reallocation.
    let mut data = Vec::with_capacity(want);
    r.by_ref().take(want as u64).read_to_end(&mut data)?;
    if data.len() < want {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    finish_data(&layout, &mut data)?;
    Ok(Pdu { header, ahs, data })
}

/// Reads and checks what follows `bhs` up to the data segment (AHS, header
/// digest): the PDU's layout, decoded header and AHS.
pub fn read_head(
    r: &mut impl std::io::Read,
    bhs: [u8; BHS_LEN],
    digests: Digests,
    max_data: usize,
) -> Result<(Layout, Header, Vec<u8>), ReadError> {
    let layout = Layout::of(&bhs, digests, max_data)?;
    let mut head = vec![0u8; layout.head_len()];
    r.read_exact(&mut head)?;
    let (header, ahs) = decode_head(&bhs, &layout, head)?;
    Ok((layout, header, ahs))
}

/// Reads the padding and data digest after a data segment its reader took
/// elsewhere, `crc` being the CRC32C of those bytes, and checks the digest.
pub fn read_tail(r: &mut impl std::io::Read, layout: &Layout, crc: u32) -> Result<(), ReadError> {
    if layout.data == 0 {
        return Ok(());
    }
    let pad = pad4(layout.data);
    let mut tail = [0u8; 7];
    let len = pad + if layout.data_digest { 4 } else { 0 };
    r.read_exact(&mut tail[..len])?;
    if layout.data_digest {
        let computed = crc32c::crc32c_append(crc, &tail[..pad]);
        let received = le32(&tail[pad..]);
        if computed != received {
            return Err(FrameError::DataDigest { computed, received }.into());
        }
    }
    Ok(())
}

/// Iterates (type, body) over well-formed AHS segments.
fn ahs_segments(ahs: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let hdr = ahs.get(at..at + 3)?;
        let len = usize::from(u16::from_be_bytes([hdr[0], hdr[1]]));
        let kind = hdr[2];
        // The length counts the body after the type byte, including one
        // reserved byte.
        let body = ahs.get(at + 4..at + 3 + len.max(1))?;
        at += 3 + len + pad4(3 + len);
        Some((kind, body))
    })
}

fn check_ahs(ahs: &[u8]) -> Result<(), FrameError> {
    let mut at = 0;
    while at < ahs.len() {
        let hdr = ahs
            .get(at..at + 3)
            .ok_or(FrameError::AhsOverrun { offset: at })?;
        let len = usize::from(u16::from_be_bytes([hdr[0], hdr[1]]));
        let end = at + 3 + len;
        if end > ahs.len() || len == 0 {
            return Err(FrameError::AhsOverrun { offset: at });
        }
        at = end + pad4(end);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::bhs::{NopOut, ScsiCommand};

    fn sample() -> Pdu {
        Pdu::new(
            Header::NopOut(NopOut {
                immediate: true,
                itt: 5,
                ttt: 0xffff_ffff,
                ..Default::default()
            }),
            b"hello".to_vec(),
        )
    }

    #[test]
    fn round_trip_with_and_without_digests() {
        for digests in [
            Digests::default(),
            Digests {
                header: true,
                data: true,
            },
            Digests {
                header: true,
                data: false,
            },
        ] {
            let p = sample();
            let bytes = p.encode(digests);
            assert_eq!(bytes.len() % 4, 0);
            let (q, used) = Pdu::parse(&bytes, digests, 8192).expect("parse");
            assert_eq!(used, bytes.len());
            assert_eq!(p, q);
        }
    }

    #[test]
    fn digest_mismatch_and_truncation_are_errors() {
        let d = Digests {
            header: true,
            data: true,
        };
        let mut bytes = sample().encode(d);
        let n = bytes.len();
        assert!(matches!(
            Pdu::parse(&bytes[..n - 1], d, 8192),
            Err(FrameError::Truncated { .. })
        ));
        bytes[n - 1] ^= 1;
        assert!(matches!(
            Pdu::parse(&bytes, d, 8192),
            Err(FrameError::DataDigest { .. })
        ));
        bytes[3] ^= 1;
        assert!(matches!(
            Pdu::parse(&bytes, d, 8192),
            Err(FrameError::HeaderDigest { .. })
        ));
    }

    #[test]
    fn streamed_reading_matches_parse() {
        for digests in [
            Digests::default(),
            Digests {
                header: true,
                data: true,
            },
        ] {
            let bytes = sample().encode(digests);
            let mut bhs = [0u8; BHS_LEN];
            bhs.copy_from_slice(&bytes[..BHS_LEN]);
            let mut rest = &bytes[BHS_LEN..];
            let p = read_rest(&mut rest, bhs, digests, 8192).expect("read");
            assert_eq!(p, Pdu::parse(&bytes, digests, 8192).expect("parse").0);
            assert!(rest.is_empty());
            let mut bad = bytes.clone();
            let n = bad.len();
            bad[n - 1] ^= 1;
            let mut rest = &bad[BHS_LEN..];
            assert!(read_rest(&mut rest, bhs, digests, 8192).is_err() == digests.data);
        }
    }

    #[test]
    fn oversized_data_segment_is_refused() {
        let p = Pdu::new(sample().header, vec![0; 9000]);
        let bytes = p.encode(Digests::default());
        assert_eq!(
            Pdu::parse(&bytes, Digests::default(), 8192).err(),
            Some(FrameError::DataTooLong {
                len: 9000,
                max: 8192
            })
        );
    }

    #[test]
    fn extended_cdb_ahs() {
        let mut p = Pdu::new(Header::ScsiCommand(ScsiCommand::default()), vec![]);
        // length 5 = reserved byte + 4 CDB bytes, type 1.
        p.ahs = vec![0, 5, 1, 0, 0xaa, 0xbb, 0xcc, 0xdd];
        let bytes = p.encode(Digests::default());
        let (q, _) = Pdu::parse(&bytes, Digests::default(), 0).expect("parse");
        assert_eq!(q.extended_cdb(), Some(&[0xaa, 0xbb, 0xcc, 0xdd][..]));
        let mut bad = bytes.clone();
        bad[BHS_LEN + 1] = 200;
        assert!(matches!(
            Pdu::parse(&bad, Digests::default(), 0),
            Err(FrameError::AhsOverrun { offset: 0 })
        ));
    }
}
