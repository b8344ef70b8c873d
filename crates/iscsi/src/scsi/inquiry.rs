//! INQUIRY (standard data and VPD pages) and REPORT SUPPORTED OPERATION
//! CODES.

use super::cdb::{self, op};
use super::{truncate, LogicalUnit, Response, Sense};

const VENDOR: &[u8; 8] = b"FERRY   ";
const PRODUCT: &[u8; 16] = b"SAN LUN         ";
const REVISION: &[u8; 4] = b"0001";

/// Largest transfer in blocks (VPD 0xB0), as the I/O commands enforce it.
pub const MAX_TRANSFER_BLOCKS: u32 = 16384;
/// Largest WRITE SAME in blocks.
pub const MAX_WRITE_SAME_BLOCKS: u64 = 65535;
/// Largest UNMAP in blocks, and descriptors per UNMAP.
pub const MAX_UNMAP_BLOCKS: u32 = 1 << 20;
/// Largest number of UNMAP block descriptors.
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// Largest COMPARE AND WRITE in blocks.
pub const MAX_COMPARE_AND_WRITE: u8 = 1;

/// INQUIRY to a LUN that does not exist: peripheral qualifier 3.
pub fn no_lun(c: &[u8]) -> Response {
    if c[1] & 1 != 0 {
        return Response::check(Sense::lun_not_supported());
    }
    let mut d = standard_data();
    d[0] = 0x7f;
    Response::good(truncate(d, usize::from(cdb::be16(&c[3..]))))
}

fn standard_data() -> Vec<u8> {
    let mut d = vec![0u8; 96];
    d[0] = 0x00; // direct access block device
    d[2] = 0x06; // SPC-4
    d[3] = 0x12; // HISUP, response data format 2
    d[4] = (d.len() - 5) as u8;
    d[5] = 0x00;
    d[7] = 0x02; // CMDQUE
    d[8..16].copy_from_slice(VENDOR);
    d[16..32].copy_from_slice(PRODUCT);
    d[32..36].copy_from_slice(REVISION);
    // Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
    for (i, v) in [0x00a0u16, 0x0960, 0x0460, 0x04c0].iter().enumerate() {
        d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    d
}

/// INQUIRY for an existing unit.
pub fn inquiry(lu: &LogicalUnit, c: &[u8]) -> Response {
    let evpd = c[1] & 1 != 0;
    let page = c[2];
    let alloc = usize::from(cdb::be16(&c[3..]));
    if c[1] & 0xfe != 0 {
        return Response::check(Sense::invalid_field_in_cdb(1));
    }
    if !evpd {
        if page != 0 {
            return Response::check(Sense::invalid_field_in_cdb(2));
        }
        return Response::good(truncate(standard_data(), alloc));
    }
    let body = match page {
        0x00 => vec![0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2],
        0x80 => lu.ident.serial.as_bytes().to_vec(),
        0x83 => device_identification(lu),
        0xb0 => block_limits(),
        0xb1 => {
            let mut b = vec![0u8; 0x3c];
            b[1] = 1; // non-rotating medium
            b
        }
        0xb2 => {
            // LBPU, LBPWS, LBPWS10, LBPRZ; thin provisioning.
            vec![0, 0x80 | 0x40 | 0x20 | 0x04, 0x02, 0]
        }
        _ => return Response::check(Sense::invalid_field_in_cdb(2)),
    };
    let mut d = vec![0x00, page, 0, 0];
    d[2..4].copy_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend_from_slice(&body);
    Response::good(truncate(d, alloc))
}

fn designator(out: &mut Vec<u8>, code_set: u8, assoc_type: u8, id: &[u8]) {
    // PIV set for target-port associations, protocol iSCSI (5).
    let piv = if assoc_type & 0x30 != 0 { 0x80 } else { 0 };
    out.push(0x50 | code_set);
    out.push(piv | assoc_type);
    out.push(0);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
}

fn device_identification(lu: &LogicalUnit) -> Vec<u8> {
    let mut out = Vec::new();
    // NAA, logical unit association.
    designator(&mut out, 1, 0x03, &lu.ident.naa);
    // T10 vendor ID: vendor + serial.
    let mut t10 = VENDOR.to_vec();
    t10.extend_from_slice(lu.ident.serial.as_bytes());
    designator(&mut out, 2, 0x01, &t10);
    // Relative target port 1, target port association.
    designator(&mut out, 1, 0x14, &[0, 0, 0, 1]);
    // SCSI name string of the target device.
    let mut name = lu.ident.target.as_bytes().to_vec();
    name.push(0);
    while !name.len().is_multiple_of(4) {
        name.push(0);
    }
    designator(&mut out, 3, 0x28, &name);
    out
}

fn block_limits() -> Vec<u8> {
    let mut b = vec![0u8; 0x3c];
    b[1] = MAX_COMPARE_AND_WRITE;
    b[2..4].copy_from_slice(&1u16.to_be_bytes());
    b[4..8].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
    b[8..12].copy_from_slice(&(MAX_TRANSFER_BLOCKS / 16).to_be_bytes());
    b[16..20].copy_from_slice(&MAX_UNMAP_BLOCKS.to_be_bytes());
    b[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
    b[24..28].copy_from_slice(&8u32.to_be_bytes());
    b[32..40].copy_from_slice(&MAX_WRITE_SAME_BLOCKS.to_be_bytes());
    b
}

/// One supported command: opcode, service action (if any), CDB usage mask.
struct OpInfo {
    opcode: u8,
    sa: Option<u16>,
    usage: &'static [u8],
}

const fn info(opcode: u8, sa: Option<u16>, usage: &'static [u8]) -> OpInfo {
    OpInfo { opcode, sa, usage }
}

/// CDB usage bitmaps (SPC-4 6.35.3): which bits of each byte may be set.
static OPS: &[OpInfo] = &[
    info(op::TEST_UNIT_READY, None, &[0x00, 0, 0, 0, 0, 0x00]),
    info(op::REQUEST_SENSE, None, &[0x03, 0x01, 0, 0, 0xff, 0x00]),
    info(op::READ_6, None, &[0x08, 0x1f, 0xff, 0xff, 0xff, 0x00]),
    info(op::WRITE_6, None, &[0x0a, 0x1f, 0xff, 0xff, 0xff, 0x00]),
    info(op::INQUIRY, None, &[0x12, 0x01, 0xff, 0xff, 0xff, 0x00]),
    info(op::MODE_SELECT_6, None, &[0x15, 0x11, 0, 0, 0xff, 0x00]),
    info(op::RESERVE_6, None, &[0x16, 0, 0, 0, 0, 0x00]),
    info(op::RELEASE_6, None, &[0x17, 0, 0, 0, 0, 0x00]),
    info(
        op::MODE_SENSE_6,
        None,
        &[0x1a, 0x08, 0xff, 0xff, 0xff, 0x00],
    ),
    info(
        op::START_STOP_UNIT,
        None,
        &[0x1b, 0x01, 0, 0x0f, 0xf7, 0x00],
    ),
    info(op::PREVENT_ALLOW, None, &[0x1e, 0, 0, 0, 0x03, 0x00]),
    info(
        op::READ_CAPACITY_10,
        None,
        &[0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0x00],
    ),
    info(
        op::READ_10,
        None,
        &[0x28, 0x18, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x00],
    ),
    info(
        op::WRITE_10,
        None,
        &[0x2a, 0x18, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x00],
    ),
    info(
        op::WRITE_VERIFY_10,
        None,
        &[0x2e, 0x12, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x00],
    ),
    info(
        op::VERIFY_10,
        None,
        &[0x2f, 0x16, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x00],
    ),
    info(
        op::PREFETCH_10,
        None,
        &[0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x00],
    ),
    info(
        op::SYNCHRONIZE_CACHE_10,
        None,
        &[0x35, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x00],
    ),
    info(
        op::WRITE_SAME_10,
        None,
        &[0x41, 0x08, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x00],
    ),
    info(
        op::UNMAP,
        None,
        &[0x42, 0x00, 0, 0, 0, 0, 0x1f, 0xff, 0xff, 0x00],
    ),
    info(
        op::MODE_SELECT_10,
        None,
        &[0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0x00],
    ),
    info(
        op::MODE_SENSE_10,
        None,
        &[0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x00],
    ),
    info(
        op::PERSISTENT_RESERVE_IN,
        Some(0),
        &[0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x00],
    ),
    info(
        op::PERSISTENT_RESERVE_IN,
        Some(1),
        &[0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x00],
    ),
    info(
        op::PERSISTENT_RESERVE_IN,
        Some(2),
        &[0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x00],
    ),
    info(
        op::PERSISTENT_RESERVE_IN,
        Some(3),
        &[0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x00],
    ),
    info(
        op::PERSISTENT_RESERVE_OUT,
        Some(0),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x00],
    ),
    info(
        op::PERSISTENT_RESERVE_OUT,
        Some(1),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x00],
    ),
    info(
        op::PERSISTENT_RESERVE_OUT,
        Some(2),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x00],
    ),
    info(
        op::PERSISTENT_RESERVE_OUT,
        Some(3),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x00],
    ),
    info(
        op::PERSISTENT_RESERVE_OUT,
        Some(4),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x00],
    ),
    info(
        op::PERSISTENT_RESERVE_OUT,
        Some(5),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x00],
    ),
    info(
        op::PERSISTENT_RESERVE_OUT,
        Some(6),
        &[0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x00],
    ),
    info(
        op::READ_16,
        None,
        &[
            0x88, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x00,
        ],
    ),
    info(
        op::COMPARE_AND_WRITE,
        None,
        &[
            0x89, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x1f, 0x00,
        ],
    ),
    info(
        op::WRITE_16,
        None,
        &[
            0x8a, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x00,
        ],
    ),
    info(
        op::ORWRITE_16,
        None,
        &[
            0x8b, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x00,
        ],
    ),
    info(
        op::WRITE_VERIFY_16,
        None,
        &[
            0x8e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x00,
        ],
    ),
    info(
        op::VERIFY_16,
        None,
        &[
            0x8f, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x00,
        ],
    ),
    info(
        op::PREFETCH_16,
        None,
        &[
            0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x00,
        ],
    ),
    info(
        op::SYNCHRONIZE_CACHE_16,
        None,
        &[
            0x91, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x00,
        ],
    ),
    info(
        op::WRITE_SAME_16,
        None,
        &[
            0x93, 0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x00,
        ],
    ),
    info(
        op::SERVICE_ACTION_IN_16,
        Some(0x10),
        &[
            0x9e, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
            0x00,
        ],
    ),
    info(
        op::SERVICE_ACTION_IN_16,
        Some(0x12),
        &[
            0x9e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
            0x00,
        ],
    ),
    info(
        op::REPORT_LUNS,
        None,
        &[0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x00],
    ),
    info(
        op::MAINTENANCE_IN,
        Some(0x0c),
        &[
            0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x00,
        ],
    ),
    info(
        op::READ_12,
        None,
        &[
            0xa8, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00,
        ],
    ),
    info(
        op::WRITE_12,
        None,
        &[
            0xaa, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00,
        ],
    ),
    info(
        op::WRITE_VERIFY_12,
        None,
        &[
            0xae, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00,
        ],
    ),
    info(
        op::VERIFY_12,
        None,
        &[
            0xaf, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00,
        ],
    ),
];

fn timeout_descriptor() -> [u8; 12] {
    let mut t = [0u8; 12];
    t[1] = 0x0a;
    t[8..12].copy_from_slice(&30u32.to_be_bytes());
    t
}

/// REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN, service action 0x0C).
pub fn report_opcodes(c: &[u8]) -> Response {
    let rctd = c[2] & 0x80 != 0;
    let options = c[2] & 0x07;
    let req_op = c[3];
    let req_sa = cdb::be16(&c[4..]);
    let alloc = cdb::be32(&c[6..]) as usize;
    let mut out = Vec::new();
    match options {
        0 => {
            out.extend_from_slice(&[0; 4]);
            for o in OPS {
                out.push(o.opcode);
                out.push(0);
                out.extend_from_slice(&o.sa.unwrap_or(0).to_be_bytes());
                out.push(0);
                out.push(u8::from(o.sa.is_some()) | if rctd { 0x02 } else { 0 });
                out.extend_from_slice(&(o.usage.len() as u16).to_be_bytes());
                if rctd {
                    out.extend_from_slice(&timeout_descriptor());
                }
            }
            let len = (out.len() - 4) as u32;
            out[..4].copy_from_slice(&len.to_be_bytes());
        }
        1..=3 => {
            let has_sa = OPS.iter().any(|o| o.opcode == req_op && o.sa.is_some());
            let found = match options {
                1 if has_sa => return Response::check(Sense::invalid_field_in_cdb(2)),
                1 => OPS.iter().find(|o| o.opcode == req_op && o.sa.is_none()),
                2 if !has_sa && OPS.iter().any(|o| o.opcode == req_op) => {
                    return Response::check(Sense::invalid_field_in_cdb(2))
                }
                _ => OPS
                    .iter()
                    .find(|o| o.opcode == req_op && o.sa.is_none_or(|s| s == req_sa)),
            };
            match found {
                Some(o) => {
                    out.push(0);
                    out.push(if rctd { 0x80 } else { 0 } | 0x03);
                    out.extend_from_slice(&(o.usage.len() as u16).to_be_bytes());
                    out.extend_from_slice(o.usage);
                    if rctd {
                        out.extend_from_slice(&timeout_descriptor());
                    }
                }
                None => out.extend_from_slice(&[0, 0x01, 0, 0]),
            }
        }
        _ => return Response::check(Sense::invalid_field_in_cdb(2)),
    }
    Response::good(truncate(out, alloc))
}
