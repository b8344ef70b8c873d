//! iSCSI PDU decoders (no I/O): framing with and without digests, the
//! typed header of every opcode, AHS, text key=value lists, and the SCSI
//! LUN field, and the initiator's streamed reading (`read_rest`), which must
//! agree with `Pdu::parse`. Any input must give a value or an error, never
//! a panic.
#![no_main]
use ferry_iscsi::pdu::frame::read_rest;
use ferry_iscsi::pdu::{text, Digests, Pdu, BHS_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for digests in [Digests::default(), Digests { header: true, data: true }] {
        if let Ok((pdu, used)) = Pdu::parse(data, digests, 65536) {
            assert!(used <= data.len());
            let _ = pdu.extended_cdb();
            // What decodes must encode to a frame that decodes the same.
            let again = pdu.encode(digests);
            let (back, _) = Pdu::parse(&again, digests, 65536).expect("re-encoded PDU decodes");
            assert_eq!(back.header, pdu.header);
        }
    }
    // The initiator reads PDUs from its socket with `read_rest`: it must
    // agree with `Pdu::parse` on every input.
    if let Some(head) = data.get(..BHS_LEN) {
        let mut bhs = [0u8; BHS_LEN];
        bhs.copy_from_slice(head);
        for digests in [Digests::default(), Digests { header: true, data: true }] {
            let mut rest = &data[BHS_LEN..];
            let streamed = read_rest(&mut rest, bhs, digests, 65536);
            match (Pdu::parse(data, digests, 65536), streamed) {
                (Ok((p, _)), Ok(q)) => assert_eq!(p, q),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("parse and read_rest disagree: {a:?} vs {b:?}"),
            }
        }
    }
    let _ = text::parse(data);
    if let Some(b) = data.get(..8) {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(b);
        let _ = ferry_iscsi::scsi::decode_lun(u64::from_be_bytes(raw));
    }
});
