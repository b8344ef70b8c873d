//! What CPU the guest sees: the kernel's flags once, then the raw CPUID
//! feature words periodically, so a test can tell that features never
//! change under a running guest (across migrations too).

use std::time::Duration;

/// Tag of the kernel's flags line.
pub const FLAGS_TAG: &str = "FERRY-CPUFLAGS";
/// Tag of the periodic CPUID line.
pub const TAG: &str = "FERRY-CPUID";

/// The `flags` line of `/proc/cpuinfo` (first CPU).
pub fn kernel_flags() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.trim().to_string())
        .unwrap_or_default()
}

/// The feature words of CPUID leaves 1, 7.0 and 0x80000001.
#[cfg(target_arch = "x86_64")]
pub fn feature_words() -> String {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    let l1 = __cpuid(1);
    let l7 = __cpuid_count(7, 0);
    let e1 = __cpuid(0x8000_0001);
    format!(
        "l1={:08x}:{:08x} l7={:08x}:{:08x}:{:08x} e1={:08x}:{:08x}",
        l1.ecx, l1.edx, l7.ebx, l7.ecx, l7.edx, e1.ecx, e1.edx
    )
}

/// Not x86: no CPUID.
#[cfg(not(target_arch = "x86_64"))]
pub fn feature_words() -> String {
    "none".into()
}

/// Prints the kernel's flags, then the CPUID words every `interval`.
pub fn run(interval: Duration) -> ! {
    println!("{FLAGS_TAG} {}", kernel_flags());
    loop {
        println!("{TAG} {}", feature_words());
        std::thread::sleep(interval);
    }
}

/// Every distinct CPUID line in a console log, in order of appearance.
pub fn distinct_words(log: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for l in log.lines() {
        if let Some(rest) = l.trim().strip_prefix(TAG) {
            let w = rest.trim().to_string();
            if !seen.contains(&w) {
                seen.push(w);
            }
        }
    }
    seen
}

/// The kernel's flags from a console log, if printed.
pub fn flags_in(log: &str) -> Option<Vec<String>> {
    log.lines()
        .find_map(|l| l.trim().strip_prefix(FLAGS_TAG))
        .map(|f| f.split_whitespace().map(str::to_string).collect())
}
