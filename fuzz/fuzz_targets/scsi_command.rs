//! The SCSI command layer of `ferry san`: a run of commands, each a CDB and
//! Data-Out bytes from one of two initiators, against one logical unit
//! (reservations and unit attentions carry over from command to command).
//! Whatever an initiator sends must give a status, never a panic.
#![no_main]
use ferry_iscsi::scsi::device::{Identity, LogicalUnit};
use ferry_iscsi::scsi::lun::{Lun, LunError};
use ferry_iscsi::scsi::{Nexus, Request};
use std::sync::Mutex;

const BLOCK: u32 = 512;
const BLOCKS: u64 = 64;

/// A small LUN in memory.
struct Memory(Mutex<Vec<u8>>);

impl Lun for Memory {
    fn block_size(&self) -> u32 {
        BLOCK
    }
    fn num_blocks(&self) -> u64 {
        BLOCKS
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), LunError> {
        let m = self.0.lock().unwrap();
        let at = offset as usize;
        buf.copy_from_slice(&m[at..at + buf.len()]);
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), LunError> {
        let mut m = self.0.lock().unwrap();
        let at = offset as usize;
        m[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn flush(&self) -> Result<(), LunError> {
        Ok(())
    }
    fn unmap(&self, offset: u64, len: u64) -> Result<(), LunError> {
        let mut m = self.0.lock().unwrap();
        m[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
    fn mapping(&self, _offset: u64, len: u64) -> Result<(bool, u64), LunError> {
        Ok((true, len))
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let lu = LogicalUnit::new(
        Box::new(Memory(Mutex::new(vec![0; (BLOCK as u64 * BLOCKS) as usize]))),
        Identity::derive("iqn.2026-01.dev.ferry:fuzz", 0),
        None,
    );
    let nexus = [
        Nexus { initiator_port: "iqn.a,i,0x000000000001".into(), rel_port: 1 },
        Nexus { initiator_port: "iqn.b,i,0x000000000002".into(), rel_port: 1 },
    ];
    // Each command: [who, cdb length, data-out length, cdb..., data-out...].
    let mut rest = data;
    while rest.len() >= 3 {
        let who = usize::from(rest[0] & 1);
        let cdb_len = usize::from(rest[1] % 33);
        let out_len = usize::from(rest[2]) * 4;
        rest = &rest[3..];
        let cdb = &rest[..cdb_len.min(rest.len())];
        rest = &rest[cdb.len()..];
        let data_out = &rest[..out_len.min(rest.len())];
        rest = &rest[data_out.len()..];
        let r = lu.execute(&Request { cdb, data_out, nexus: &nexus[who] });
        // Data-In never exceeds what a CDB can ask for.
        assert!(r.data.len() <= 1 << 24, "{} bytes of Data-In", r.data.len());
    }
});
