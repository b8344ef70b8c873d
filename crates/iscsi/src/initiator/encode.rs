//! Encoding what the initiator sends: a SCSI Command PDU with its
//! immediate data and unsolicited Data-Out, and Data-Out runs for R2Ts,
//! each PDU at most the target's MaxRecvDataSegmentLength.

use super::login::Negotiated;
use super::task::Request;
use crate::pdu::bhs::{self, Header};
use crate::pdu::digest::{crc32c, crc32c_parts};
use crate::pdu::Digests;

/// Appends one PDU (no AHS) with a borrowed data segment: the same bytes
/// as [`crate::pdu::Pdu::encode_into`], without copying the data twice.
pub(super) fn frame(out: &mut Vec<u8>, digests: Digests, header: &Header, data: &[u8]) {
    let start = out.len();
    let mut bhs = header.encode();
    let len = data.len().min(0xff_ffff);
    bhs[4] = 0;
    bhs[5] = (len >> 16) as u8;
    bhs[6] = (len >> 8) as u8;
    bhs[7] = len as u8;
    out.extend_from_slice(&bhs);
    if digests.header {
        let d = crc32c(&out[start..]);
        out.extend_from_slice(&d.to_le_bytes());
    }
    if len > 0 {
        let pad = &[0u8; 3][..(4 - len % 4) % 4];
        out.extend_from_slice(&data[..len]);
        out.extend_from_slice(pad);
        if digests.data {
            let d = crc32c_parts(&[&data[..len], pad]);
            out.extend_from_slice(&d.to_le_bytes());
        }
    }
}

/// Who a run of Data-Out PDUs belongs to.
pub(super) struct DataOutRun {
    pub(super) itt: u32,
    pub(super) lun: u64,
    pub(super) ttt: u32,
    pub(super) exp_stat_sn: u32,
    pub(super) max_send: usize,
}

/// Data-Out PDUs for `data[start..end]`, each at most MaxRecvDataSegmentLength.
pub(super) fn encode_data_out(
    out: &mut Vec<u8>,
    digests: Digests,
    r: DataOutRun,
    data: &[u8],
    start: usize,
    end: usize,
) {
    let mut off = start;
    let mut data_sn = 0;
    while off < end {
        let n = (end - off).min(r.max_send.max(512));
        let h = bhs::DataOut {
            final_: off + n == end,
            lun: r.lun,
            itt: r.itt,
            ttt: r.ttt,
            exp_stat_sn: r.exp_stat_sn,
            data_sn,
            buffer_offset: off as u32,
        };
        frame(out, digests, &Header::DataOut(h), &data[off..off + n]);
        data_sn += 1;
        off += n;
    }
}

/// The SCSI Command PDU, its immediate data and any unsolicited Data-Out.
pub(super) fn encode_command(
    out: &mut Vec<u8>,
    digests: Digests,
    neg: &Negotiated,
    itt: u32,
    cmd_sn: u32,
    exp_stat_sn: u32,
    req: &Request,
) {
    let mut cdb = [0u8; 16];
    let n = req.cdb.len().min(16);
    cdb[..n].copy_from_slice(&req.cdb[..n]);
    let lun = u64::from_be_bytes(crate::scsi::encode_lun(req.lun));
    let len = req.data.len();
    let first_burst = (neg.first_burst as usize).min(len);
    let immediate = if neg.immediate_data {
        first_burst.min(neg.max_send as usize)
    } else {
        0
    };
    let unsolicited_end = if neg.initial_r2t {
        immediate
    } else {
        first_burst
    };
    let h = bhs::ScsiCommand {
        immediate: false,
        final_: unsolicited_end == immediate,
        read: req.read_len > 0,
        write: len > 0,
        attr: 1,
        lun,
        itt,
        edtl: if len > 0 { len as u32 } else { req.read_len },
        cmd_sn,
        exp_stat_sn,
        cdb,
    };
    frame(
        out,
        digests,
        &Header::ScsiCommand(h),
        &req.data[..immediate],
    );
    if unsolicited_end > immediate {
        encode_data_out(
            out,
            digests,
            DataOutRun {
                itt,
                lun,
                ttt: 0xffff_ffff,
                exp_stat_sn,
                max_send: neg.max_send as usize,
            },
            &req.data,
            immediate,
            unsolicited_end,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::Pdu;

    #[test]
    fn frame_matches_the_shared_codec() {
        for digests in [
            Digests::default(),
            Digests {
                header: true,
                data: true,
            },
        ] {
            for len in [0usize, 1, 5, 4096] {
                let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let h = Header::DataOut(bhs::DataOut {
                    final_: true,
                    itt: 9,
                    buffer_offset: 4,
                    ..Default::default()
                });
                let mut ours = Vec::new();
                frame(&mut ours, digests, &h, &data);
                assert_eq!(ours, Pdu::new(h, data).encode(digests), "len {len}");
            }
        }
    }
}
