//! CPU profiles (QEMU expansions and `ferry host cpu` JSON from other hosts):
//! any input becomes a profile or an error, never a panic, and a profile
//! that parses can be baselined and checked.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(p) = ferry_cpu::CpuProfile::from_static_expansion(&v, "tcg") {
        let _ = p.digest();
        if let Ok(m) = ferry_cpu::baseline(&[p.clone(), p.clone()]) {
            let _ = ferry_cpu::check(&m, &p);
            let _ = m.qemu_arg();
        }
    }
    let _ = serde_json::from_value::<ferry_cpu::CpuProfile>(v);
});
