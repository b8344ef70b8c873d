//! iSCSI PDU decoders (no I/O): framing with and without digests, the
//! typed header of every opcode, AHS, text key=value lists, and the SCSI
//! LUN field. Any input must give a value or an error, never a panic.
#![no_main]
use ferry_iscsi::pdu::{text, Digests, Pdu};

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
    let _ = text::parse(data);
    if let Some(b) = data.get(..8) {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(b);
        let _ = ferry_iscsi::scsi::decode_lun(u64::from_be_bytes(raw));
    }
});
