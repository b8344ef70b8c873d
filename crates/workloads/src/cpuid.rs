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

/// Flags per console line: short lines, each one write, so other writers
/// on the serial console cannot land in the middle of one.
const FLAGS_PER_LINE: usize = 12;

/// Prints the kernel's flags, then the CPUID words every `interval`.
pub fn run(interval: Duration) -> ! {
    let flags = kernel_flags();
    let words: Vec<&str> = flags.split_whitespace().collect();
    let chunks: Vec<&[&str]> = words.chunks(FLAGS_PER_LINE).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        println!("{FLAGS_TAG} {}/{} {}", i + 1, chunks.len(), chunk.join(" "));
    }
    loop {
        println!("{TAG} {}", feature_words());
        std::thread::sleep(interval);
    }
}

/// The text after `tag` on a console line, wherever on the line it starts.
fn after<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    line.find(tag).map(|i| line[i + tag.len()..].trim())
}

/// Every distinct CPUID line in a console log, in order of appearance.
pub fn distinct_words(log: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for l in log.lines() {
        if let Some(rest) = after(l, &format!("{TAG} ")) {
            let w = rest.trim().to_string();
            if !seen.contains(&w) {
                seen.push(w);
            }
        }
    }
    seen
}

/// The kernel's flags from a console log, once every line of them is there.
pub fn flags_in(log: &str) -> Option<Vec<String>> {
    let mut parts: Vec<Option<Vec<String>>> = Vec::new();
    for l in log.lines() {
        let Some(rest) = after(l, FLAGS_TAG) else {
            continue;
        };
        let mut w = rest.split_whitespace();
        let (i, n) = w.next()?.split_once('/')?;
        let (i, n): (usize, usize) = (i.parse().ok()?, n.parse().ok()?);
        if i == 0 || i > n {
            return None;
        }
        parts.resize(n, None);
        parts[i - 1] = Some(w.map(str::to_string).collect());
    }
    if parts.is_empty() {
        return None;
    }
    parts
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .map(|p| p.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_come_back_whole_from_chunked_lines_amid_other_output() {
        let log = "boot\nFERRY-GUEST started FERRY-CPUFLAGS 1/2 fpu vme\nnoise\nFERRY-CPUFLAGS 2/2 sse4_2\nFERRY-CPUID l1=1\n";
        assert_eq!(flags_in(log).unwrap(), ["fpu", "vme", "sse4_2"]);
        assert_eq!(flags_in("FERRY-CPUFLAGS 1/2 fpu\n"), None, "incomplete");
        assert_eq!(distinct_words(log), ["l1=1"]);
    }
}
