//! QMP messages from QEMU: any line decodes or is refused, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ferry_qemu::qmp::decode(data);
});
