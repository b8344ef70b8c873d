//! CDBs the initiator sends (SBC-3, SPC-4) and parsers for what comes
//! back. Pure functions over bytes.

/// READ(16).
pub fn read16(lba: u64, blocks: u32) -> Vec<u8> {
    rw16(0x88, lba, blocks, false)
}

/// WRITE(16), with FUA when asked.
pub fn write16(lba: u64, blocks: u32, fua: bool) -> Vec<u8> {
    rw16(0x8a, lba, blocks, fua)
}

fn rw16(op: u8, lba: u64, blocks: u32, fua: bool) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = op;
    if fua {
        c[1] = 0x08;
    }
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// SYNCHRONIZE CACHE(10) of the whole LUN.
pub fn synchronize_cache() -> Vec<u8> {
    vec![0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// WRITE SAME(16) of one block over `blocks` blocks, with UNMAP when asked.
pub fn write_same16(lba: u64, blocks: u32, unmap: bool) -> Vec<u8> {
    let mut c = rw16(0x93, lba, blocks, false);
    if unmap {
        c[1] = 0x08;
    }
    c
}

/// UNMAP with its parameter list for the given (lba, blocks) ranges.
pub fn unmap(ranges: &[(u64, u32)]) -> (Vec<u8>, Vec<u8>) {
    let n = ranges.len() * 16;
    let mut p = vec![0u8; 8 + n];
    p[0..2].copy_from_slice(&((6 + n) as u16).to_be_bytes());
    p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
    for (i, (lba, blocks)) in ranges.iter().enumerate() {
        let d = &mut p[8 + i * 16..8 + i * 16 + 16];
        d[0..8].copy_from_slice(&lba.to_be_bytes());
        d[8..12].copy_from_slice(&blocks.to_be_bytes());
    }
    let mut c = vec![0u8; 10];
    c[0] = 0x42;
    c[7..9].copy_from_slice(&(p.len() as u16).to_be_bytes());
    (c, p)
}

/// TEST UNIT READY.
pub fn test_unit_ready() -> Vec<u8> {
    vec![0; 6]
}

/// INQUIRY, standard data or a VPD page.
pub fn inquiry(vpd: Option<u8>, alloc: u16) -> Vec<u8> {
    let mut c = vec![0x12, 0, 0, 0, 0, 0];
    if let Some(page) = vpd {
        c[1] = 1;
        c[2] = page;
    }
    c[3..5].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// READ CAPACITY(16).
pub fn read_capacity16() -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x10;
    c[13] = 32;
    c
}

/// REPORT LUNS.
pub fn report_luns(alloc: u32) -> Vec<u8> {
    let mut c = vec![0u8; 12];
    c[0] = 0xa0;
    c[6..10].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// PERSISTENT RESERVE OUT with its 24-byte parameter list.
pub fn pr_out(action: u8, kind: u8, key: u64, sa_key: u64) -> (Vec<u8>, Vec<u8>) {
    let mut c = vec![0u8; 10];
    c[0] = 0x5f;
    c[1] = action & 0x1f;
    c[2] = kind & 0x0f;
    c[8] = 24;
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    (c, p)
}

/// PERSISTENT RESERVE IN.
pub fn pr_in(action: u8, alloc: u16) -> Vec<u8> {
    let mut c = vec![0u8; 10];
    c[0] = 0x5e;
    c[1] = action & 0x1f;
    c[7..9].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// What READ CAPACITY(16) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Number of blocks.
    pub blocks: u64,
    /// Bytes per block.
    pub block_size: u32,
    /// Logical block provisioning management enabled (UNMAP works).
    pub lbpme: bool,
    /// Unmapped blocks read as zeroes.
    pub lbprz: bool,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses READ CAPACITY(16) data.
pub fn parse_capacity16(d: &[u8]) -> Option<Capacity> {
    let last = be64(d, 0)?;
    let block_size = be32(d, 8)?;
    if block_size == 0 || block_size % 512 != 0 {
        return None;
    }
    let flags = d.get(14).copied().unwrap_or(0);
    Some(Capacity {
        blocks: last.checked_add(1)?,
        block_size,
        lbpme: flags & 0x80 != 0,
        lbprz: flags & 0x40 != 0,
    })
}

/// Limits from the Block Limits VPD page (0xB0); zero means "no limit given".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockLimits {
    /// MAXIMUM TRANSFER LENGTH in blocks.
    pub max_transfer: u32,
    /// MAXIMUM UNMAP LBA COUNT.
    pub max_unmap: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// MAXIMUM WRITE SAME LENGTH in blocks.
    pub max_write_same: u64,
}

/// Parses the Block Limits VPD page.
pub fn parse_block_limits(d: &[u8]) -> BlockLimits {
    BlockLimits {
        max_transfer: be32(d, 8).unwrap_or(0),
        max_unmap: be32(d, 20).unwrap_or(0),
        max_unmap_descriptors: be32(d, 24).unwrap_or(0),
        max_write_same: be64(d, 36).unwrap_or(0),
    }
}

/// The best identifier in a Device Identification VPD page (0x83): NAA
/// first, then EUI-64, then T10 vendor ID, as a hex or text string.
pub fn parse_device_id(d: &[u8]) -> Option<String> {
    let len = usize::from(u16::from_be_bytes([*d.get(2)?, *d.get(3)?]));
    let mut at = 4;
    let end = (4 + len).min(d.len());
    let mut best: Option<(u8, String)> = None;
    while at + 4 <= end {
        let code_set = d[at] & 0x0f;
        let assoc = (d[at + 1] >> 4) & 0x03;
        let kind = d[at + 1] & 0x0f;
        let n = usize::from(d[at + 3]);
        let Some(id) = d.get(at + 4..at + 4 + n) else {
            break;
        };
        at += 4 + n;
        if assoc != 0 {
            continue; // Identifies the port or target, not the LUN.
        }
        let rank = match kind {
            3 => 3, // NAA
            2 => 2, // EUI-64
            1 => 1, // T10 vendor ID
            8 => 1, // SCSI name string
            _ => continue,
        };
        let text = if code_set == 2 || code_set == 3 {
            String::from_utf8_lossy(id)
                .trim_end_matches('\0')
                .trim()
                .to_string()
        } else {
            id.iter().map(|b| format!("{b:02x}")).collect()
        };
        if best.as_ref().is_none_or(|(r, _)| rank > *r) {
            best = Some((rank, text));
        }
    }
    best.map(|(_, s)| s)
}

/// LUN numbers from REPORT LUNS data.
pub fn parse_report_luns(d: &[u8]) -> Vec<u64> {
    let len = be32(d, 0).unwrap_or(0) as usize;
    d.get(8..(8 + len).min(d.len()))
        .unwrap_or(&[])
        .chunks_exact(8)
        .filter_map(|c| {
            let raw = u64::from_be_bytes(c.try_into().ok()?);
            crate::scsi::decode_lun(raw)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rw_cdbs_carry_lba_count_and_fua() {
        let c = write16(0x0102_0304_0506_0708, 9, true);
        assert_eq!(c[0], 0x8a);
        assert_eq!(c[1], 0x08);
        assert_eq!(&c[2..10], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&c[10..14], &[0, 0, 0, 9]);
        assert_eq!(read16(0, 1)[1], 0);
    }

    #[test]
    fn unmap_parameter_list() {
        let (c, p) = unmap(&[(8, 16), (100, 1)]);
        assert_eq!(c[0], 0x42);
        assert_eq!(u16::from_be_bytes([c[7], c[8]]) as usize, p.len());
        assert_eq!(p.len(), 8 + 32);
        assert_eq!(u16::from_be_bytes([p[0], p[1]]), 38);
        assert_eq!(p[8 + 7], 8);
        assert_eq!(p[8 + 11], 16);
    }

    #[test]
    fn capacity_and_limits() {
        let mut d = vec![0u8; 32];
        d[7] = 99;
        d[10] = 2; // 512
        d[14] = 0xc0;
        let c = parse_capacity16(&d).unwrap();
        assert_eq!(
            (c.blocks, c.block_size, c.lbpme, c.lbprz),
            (100, 512, true, true)
        );
        d[10] = 0;
        assert!(parse_capacity16(&d).is_none());
        let mut b = vec![0u8; 64];
        b[23] = 8;
        assert_eq!(parse_block_limits(&b).max_unmap, 8);
    }

    #[test]
    fn device_id_prefers_naa() {
        let mut d = vec![0, 0x83, 0, 0];
        d.extend_from_slice(&[2, 1, 0, 4]);
        d.extend_from_slice(b"FERR");
        d.extend_from_slice(&[1, 3, 0, 2, 0x60, 0x01]);
        d.extend_from_slice(&[1, 0x13, 0, 2, 0xaa, 0xbb]); // port association: skipped
        d[3] = (d.len() - 4) as u8;
        assert_eq!(parse_device_id(&d).as_deref(), Some("6001"));
    }

    #[test]
    fn report_luns_list() {
        let mut d = vec![0, 0, 0, 16, 0, 0, 0, 0];
        d.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        d.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_report_luns(&d), vec![0, 1]);
    }
}
