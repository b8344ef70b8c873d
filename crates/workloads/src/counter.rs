//! A monotonic counter printed with the guest's uptime.
//!
//! Across a pause, a migration or a save/restore the count must never go
//! back and the uptime must keep rising; a test reads the lines to prove it.

use std::io::Write;
use std::time::Duration;

/// Tag that starts every line this workload prints.
pub const TAG: &str = "FERRY-COUNTER";

/// Prints `FERRY-COUNTER n=<count> uptime=<secs>` every `interval`, forever.
pub fn run(interval: Duration) -> ! {
    let stdout = std::io::stdout();
    let mut n: u64 = 0;
    loop {
        n += 1;
        let line = format!("{TAG} n={n} uptime={:.2}\n", crate::uptime_secs());
        // A console that is gone must not stop the count.
        let _ = stdout.lock().write_all(line.as_bytes());
        std::thread::sleep(interval);
    }
}

/// One parsed counter line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterLine {
    /// The count.
    pub n: u64,
    /// Guest uptime in seconds when it was printed.
    pub uptime: f64,
}

/// Parses a console line printed by [`run`]; `None` for other lines.
pub fn parse_line(line: &str) -> Option<CounterLine> {
    // Other programs share the console: the tag may follow their output.
    let rest = line[line.find(TAG)? + TAG.len()..].trim();
    let mut n = None;
    let mut uptime = None;
    for field in rest.split_whitespace() {
        if let Some(v) = field.strip_prefix("n=") {
            n = v.parse().ok();
        } else if let Some(v) = field.strip_prefix("uptime=") {
            uptime = v.parse().ok();
        }
    }
    Some(CounterLine {
        n: n?,
        uptime: uptime?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_own_lines() {
        let l = parse_line("FERRY-COUNTER n=42 uptime=3.25\r").unwrap();
        assert_eq!(
            l,
            CounterLine {
                n: 42,
                uptime: 3.25
            }
        );
        assert!(parse_line("FERRY-COUNTER n=x uptime=1").is_none());
        assert!(parse_line("other").is_none());
        assert_eq!(parse_line("/ # FERRY-COUNTER n=2 uptime=1.5").unwrap().n, 2);
    }
}
