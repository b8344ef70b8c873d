//! Where a virtio-blk request's parts lie in guest memory.
//!
//! A request is one descriptor chain: a 16-byte header the driver wrote,
//! the data, and one status byte the device writes last. The spec lets a
//! driver split them across descriptors any way it likes, so the chain's
//! byte ranges are cut at byte boundaries, not taken a descriptor each.

/// One descriptor's guest range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: u64,
    /// Bytes.
    pub len: u32,
    /// The device writes it (a read's data, the status).
    pub writable: bool,
}

/// The parts of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The header's 16 bytes, in order.
    pub header: Vec<Segment>,
    /// The data between header and status.
    pub data: Vec<Segment>,
    /// Address of the status byte.
    pub status: u64,
}

impl Layout {
    /// Bytes of data.
    pub fn data_len(&self) -> u64 {
        self.data.iter().map(|s| u64::from(s.len)).sum()
    }
    /// Whether the device may write every data byte (a read) or
    /// (`false`) only read them (a write).
    pub fn data_all(&self, writable: bool) -> bool {
        self.data.iter().all(|s| s.writable == writable)
    }
}

/// Size of a virtio-blk request header.
pub const HEADER_LEN: u32 = 16;

/// A chain that is not a virtio-blk request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Fewer bytes than a header and a status byte.
    #[error("request of {0} bytes is shorter than its header and status")]
    TooShort(u64),
    /// The device could write the header.
    #[error("request header is in device-writable memory")]
    HeaderWritable,
    /// The device could not write the status byte.
    #[error("request status byte is in read-only memory")]
    StatusReadOnly,
    /// A range runs past the end of the address space.
    #[error("descriptor range {addr:#x}+{len} wraps around the address space")]
    Wraps {
        /// Its address.
        addr: u64,
        /// Its length.
        len: u32,
    },
}

/// Cuts a chain's ranges into header, data and status.
pub fn carve(chain: &[Segment]) -> Result<Layout, LayoutError> {
    if let Some(s) = chain
        .iter()
        .find(|s| s.addr.checked_add(u64::from(s.len)).is_none())
    {
        return Err(LayoutError::Wraps {
            addr: s.addr,
            len: s.len,
        });
    }
    let total: u64 = chain.iter().map(|s| u64::from(s.len)).sum();
    if total < u64::from(HEADER_LEN) + 1 {
        return Err(LayoutError::TooShort(total));
    }
    let last = chain
        .iter()
        .rev()
        .find(|s| s.len > 0)
        .ok_or(LayoutError::TooShort(0))?;
    if !last.writable {
        return Err(LayoutError::StatusReadOnly);
    }
    let status = last.addr + u64::from(last.len) - 1;
    let data_end = total - 1;
    let (mut header, mut data) = (Vec::new(), Vec::new());
    let mut pos = 0u64;
    for s in chain {
        let (start, end) = (pos, pos + u64::from(s.len));
        pos = end;
        // Part of the header.
        let h_end = end.min(u64::from(HEADER_LEN));
        if start < h_end {
            if s.writable {
                return Err(LayoutError::HeaderWritable);
            }
            header.push(Segment {
                len: (h_end - start) as u32,
                ..*s
            });
        }
        // Part of the data.
        let (d_start, d_end) = (start.max(u64::from(HEADER_LEN)), end.min(data_end));
        if d_start < d_end {
            data.push(Segment {
                addr: s.addr + (d_start - start),
                len: (d_end - d_start) as u32,
                writable: s.writable,
            });
        }
    }
    Ok(Layout {
        header,
        data,
        status,
    })
}

/// Request types (virtio 1.2, 5.2.6).
pub mod kind {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush.
    pub const FLUSH: u32 = 4;
    /// The device's serial, 20 bytes.
    pub const GET_ID: u32 = 8;
    /// Discard ranges.
    pub const DISCARD: u32 = 11;
    /// Zero ranges.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Status values the device writes.
pub mod status {
    /// Done.
    pub const OK: u8 = 0;
    /// Failed.
    pub const IOERR: u8 = 1;
    /// Not a request this device does.
    pub const UNSUPP: u8 = 2;
}

/// A request header: its type and first 512-byte sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// One of [`kind`].
    pub kind: u32,
    /// First sector (512 bytes, whatever the block size).
    pub sector: u64,
}

impl Header {
    /// Decodes the header's bytes (little-endian).
    pub fn parse(b: &[u8; HEADER_LEN as usize]) -> Header {
        let mut kind = [0u8; 4];
        kind.copy_from_slice(&b[..4]);
        let mut sector = [0u8; 8];
        sector.copy_from_slice(&b[8..]);
        Header {
            kind: u32::from_le_bytes(kind),
            sector: u64::from_le_bytes(sector),
        }
    }
}

/// One range of a DISCARD or WRITE_ZEROES request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First sector.
    pub sector: u64,
    /// Sectors.
    pub sectors: u32,
    /// For WRITE_ZEROES: the device may unmap.
    pub unmap: bool,
}

/// Decodes the 16-byte ranges of a DISCARD or WRITE_ZEROES request.
pub fn ranges(data: &[u8]) -> Result<Vec<Range>, LayoutError> {
    if data.is_empty() || !data.len().is_multiple_of(16) {
        return Err(LayoutError::TooShort(data.len() as u64));
    }
    Ok(data
        .chunks_exact(16)
        .map(|c| {
            let mut sector = [0u8; 8];
            sector.copy_from_slice(&c[..8]);
            let mut n = [0u8; 4];
            n.copy_from_slice(&c[8..12]);
            Range {
                sector: u64::from_le_bytes(sector),
                sectors: u32::from_le_bytes(n),
                unmap: c[12] & 1 != 0,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(addr: u64, len: u32, writable: bool) -> Segment {
        Segment {
            addr,
            len,
            writable,
        }
    }

    #[test]
    fn one_descriptor_each() {
        let l = carve(&[
            seg(0x1000, 16, false),
            seg(0x2000, 4096, true),
            seg(0x3000, 1, true),
        ])
        .unwrap();
        assert_eq!(l.header, vec![seg(0x1000, 16, false)]);
        assert_eq!(l.data, vec![seg(0x2000, 4096, true)]);
        assert_eq!(l.status, 0x3000);
        assert!(l.data_all(true));
        assert_eq!(l.data_len(), 4096);
    }

    #[test]
    fn parts_split_anywhere() {
        // Header and data share a descriptor; data and status share one.
        let l = carve(&[
            seg(0x1000, 10, false),
            seg(0x2000, 520, false),
            seg(0x3000, 9, true),
        ])
        .unwrap();
        assert_eq!(
            l.header,
            vec![seg(0x1000, 10, false), seg(0x2000, 6, false)]
        );
        assert_eq!(l.data, vec![seg(0x2006, 514, false), seg(0x3000, 8, true)]);
        assert_eq!(l.status, 0x3008);
        assert!(
            !l.data_all(false),
            "mixed directions are caught by the caller"
        );
        // A flush: header and status only.
        let f = carve(&[seg(0x1000, 16, false), seg(0x2000, 1, true)]).unwrap();
        assert!(f.data.is_empty());
    }

    #[test]
    fn malformed_chains() {
        assert_eq!(carve(&[]), Err(LayoutError::TooShort(0)));
        assert_eq!(carve(&[seg(0, 16, false)]), Err(LayoutError::TooShort(16)));
        assert_eq!(
            carve(&[seg(0, 16, false), seg(16, 1, false)]),
            Err(LayoutError::StatusReadOnly)
        );
        assert_eq!(
            carve(&[seg(0, 16, true), seg(16, 1, true)]),
            Err(LayoutError::HeaderWritable)
        );
        assert_eq!(
            carve(&[seg(0, 16, false), seg(u64::MAX, 1, true)]),
            Err(LayoutError::Wraps {
                addr: u64::MAX,
                len: 1
            })
        );
    }

    #[test]
    fn header_and_ranges_decode() {
        let mut h = [0u8; 16];
        h[0] = 1;
        h[8..].copy_from_slice(&77u64.to_le_bytes());
        assert_eq!(
            Header::parse(&h),
            Header {
                kind: kind::OUT,
                sector: 77
            }
        );
        let mut r = vec![0u8; 32];
        r[..8].copy_from_slice(&8u64.to_le_bytes());
        r[8..12].copy_from_slice(&16u32.to_le_bytes());
        r[16 + 12] = 1;
        let got = ranges(&r).unwrap();
        assert_eq!(
            got[0],
            Range {
                sector: 8,
                sectors: 16,
                unmap: false
            }
        );
        assert!(got[1].unmap);
        assert!(ranges(&r[..20]).is_err());
        assert!(ranges(&[]).is_err());
    }
}
