//! Memory integrity: a verifiable pattern rewritten continuously.
//!
//! The buffer is split into 4 KiB pages. Each page carries a generation;
//! every word's value is a hash of (page, word, generation). The workload
//! walks the pages in order, checks every word of a page against its current
//! generation, then rewrites the page with the next one. Any bit that a
//! migration or restore loses or corrupts shows up as a mismatch.

use std::io::Write;
use std::time::{Duration, Instant};

/// Tag that starts every line this workload prints.
pub const TAG: &str = "FERRY-MEMTEST";

const WORDS_PER_PAGE: usize = 4096 / 8;
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// How fast to rewrite memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as the CPU allows.
    Max,
    /// At most this many MiB per second.
    MibPerSec(f64),
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(v) if v > 0.0 && v.is_finite() => Ok(Rate::MibPerSec(v)),
            _ => Err(format!(
                "rate {s:?} must be a positive number of MiB/s or 'max'"
            )),
        }
    }
}

/// The value a word holds: a cheap, well-mixed hash (splitmix64).
fn expected(page: usize, word: usize, generation: u32) -> u64 {
    let mut z = ((page as u64) << 32)
        ^ ((word as u64) << 8)
        ^ (u64::from(generation) << 48)
        ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A mismatch found while verifying.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Page index.
    pub page: usize,
    /// Word index within the page.
    pub word: usize,
    /// What the word should hold.
    pub expected: u64,
    /// What it held.
    pub found: u64,
}

/// The pattern buffer and its per-page generations.
pub struct Pattern {
    words: Vec<u64>,
    generations: Vec<u32>,
}

impl Pattern {
    /// Allocates and fills `mib` MiB with generation 0.
    pub fn new(mib: usize) -> Self {
        let pages = mib * 256;
        let mut p = Pattern {
            words: vec![0; pages * WORDS_PER_PAGE],
            generations: vec![0; pages],
        };
        for page in 0..pages {
            p.write_page(page, 0);
        }
        p
    }

    /// Number of 4 KiB pages.
    pub fn pages(&self) -> usize {
        self.generations.len()
    }

    fn write_page(&mut self, page: usize, generation: u32) {
        let base = page * WORDS_PER_PAGE;
        for (w, slot) in self.words[base..base + WORDS_PER_PAGE]
            .iter_mut()
            .enumerate()
        {
            *slot = expected(page, w, generation);
        }
        self.generations[page] = generation;
    }

    /// Checks a page against its generation.
    pub fn verify_page(&self, page: usize) -> Result<(), Mismatch> {
        let generation = self.generations[page];
        let base = page * WORDS_PER_PAGE;
        for (w, &found) in self.words[base..base + WORDS_PER_PAGE].iter().enumerate() {
            let want = expected(page, w, generation);
            if found != want {
                return Err(Mismatch {
                    page,
                    word: w,
                    expected: want,
                    found,
                });
            }
        }
        Ok(())
    }

    /// Verifies a page, then rewrites it with the next generation.
    pub fn step(&mut self, page: usize) -> Result<(), Mismatch> {
        self.verify_page(page)?;
        let next = self.generations[page].wrapping_add(1);
        self.write_page(page, next);
        Ok(())
    }

    /// Flips one bit; tests use it to prove mismatches are caught.
    pub fn corrupt(&mut self, page: usize, word: usize) {
        self.words[page * WORDS_PER_PAGE + word] ^= 1;
    }
}

/// Runs forever; returns the mismatch that stopped it.
pub fn run(mib: usize, rate: Rate) -> Mismatch {
    let mut out = std::io::stdout();
    let mut pattern = Pattern::new(mib);
    let _ = writeln!(out, "{TAG} start mib={mib} rate={rate:?}");
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut pages_done: u64 = 0;
    let pages = pattern.pages();
    let mut page = 0;
    loop {
        if let Err(m) = pattern.step(page) {
            let _ = writeln!(
                out,
                "{TAG} FAIL page={} word={} expected={:#018x} found={:#018x}",
                m.page, m.word, m.expected, m.found
            );
            return m;
        }
        pages_done += 1;
        page = (page + 1) % pages;
        if let Rate::MibPerSec(r) = rate {
            // Pace by the budget so far: sleep when ahead of the rate.
            let due = Duration::from_secs_f64(pages_done as f64 / 256.0 / r);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                if ahead > Duration::from_millis(2) {
                    std::thread::sleep(ahead);
                }
            }
        }
        if last_report.elapsed() >= REPORT_EVERY {
            let mib_done = pages_done as f64 / 256.0;
            let _ = writeln!(
                out,
                "{TAG} ok passes={} rewritten_mib={mib_done:.0} mibps={:.1} uptime={:.2}",
                pages_done / pages as u64,
                mib_done / started.elapsed().as_secs_f64(),
                crate::uptime_secs()
            );
            last_report = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_verify_and_corruption_is_caught() {
        let mut p = Pattern::new(1);
        for round in 0..3 {
            for page in 0..p.pages() {
                p.step(page)
                    .unwrap_or_else(|m| panic!("round {round}: {m:?}"));
            }
        }
        p.corrupt(7, 100);
        let m = p.step(7).unwrap_err();
        assert_eq!((m.page, m.word), (7, 100));
    }

    #[test]
    fn rate_parses() {
        assert_eq!("max".parse::<Rate>().unwrap(), Rate::Max);
        assert_eq!("16".parse::<Rate>().unwrap(), Rate::MibPerSec(16.0));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }
}
