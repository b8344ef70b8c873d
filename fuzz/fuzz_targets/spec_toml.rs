//! VM spec (TOML): any input is parsed and validated or refused, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ferry_spec::VmSpec::from_toml(text, std::path::Path::new("/fuzz"));
    }
});
