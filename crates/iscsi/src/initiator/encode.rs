//! Encoding what the initiator sends: a SCSI Command PDU with its
//! immediate data and unsolicited Data-Out, and Data-Out runs for R2Ts,
//! each PDU at most the target's MaxRecvDataSegmentLength.
//!
//! Write data is never copied here: [`Frames`] keeps the headers, padding
//! and digests in one buffer of its own and borrows each data segment from
//! the command's shared buffer, and the wire sends both with vectored
//! writes.

pub(super) use crate::pdu::outgoing::Frames;

use super::login::Negotiated;
use super::task::Request;
use crate::pdu::bhs::{self, Header};
use crate::pdu::Digests;
use bytes::Bytes;

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
    out: &mut Frames,
    digests: Digests,
    r: DataOutRun,
    data: &Bytes,
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
        out.push(digests, &Header::DataOut(h), data, off..off + n);
        data_sn += 1;
        off += n;
    }
}

/// The SCSI Command PDU, its immediate data and any unsolicited Data-Out.
pub(super) fn encode_command(
    out: &mut Frames,
    neg: &Negotiated,
    itt: u32,
    cmd_sn: u32,
    exp_stat_sn: u32,
    req: &Request,
) {
    let digests = neg.digests;
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
    out.push(digests, &Header::ScsiCommand(h), &req.data, 0..immediate);
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
                // Borrow from the middle of a larger buffer, as a Data-Out
                // run does.
                let mut big = vec![0xee; 3];
                big.extend_from_slice(&data);
                big.push(0xee);
                let big = Bytes::from(big);
                let mut ours = Frames::default();
                ours.push(digests, &h, &big, 3..3 + len);
                ours.push(digests, &h, &big, 3..3 + len);
                let one = Pdu::new(h.clone(), data).encode(digests);
                assert_eq!(ours.to_vec(), [one.clone(), one].concat(), "len {len}");
                ours.clear();
                assert!(ours.is_empty());
            }
        }
    }
}
