//! Disk integrity: numbered, checksummed blocks with flushes.
//!
//! Block `i` of generation `g` is 4 KiB: magic, `i`, `g`, a payload derived
//! from `(i, g)`, and a CRC32 of everything before it. A block in the wrong
//! place, torn, stale or corrupted fails verification. The workload prints a
//! line after every flush; the blocks named there must verify afterwards from
//! inside the guest or from the host image ([`verify`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Tag that starts every line this workload prints.
pub const TAG: &str = "FERRY-DISKTEST";
/// Size of one test block.
pub const BLOCK: usize = 4096;
const MAGIC: &[u8; 8] = b"FERRYDSK";
const CRC_AT: usize = BLOCK - 4;
/// Blocks written between two flushes.
pub const FLUSH_EVERY: u64 = 64;

/// Fills `buf` with block `index` of generation `generation`.
pub fn encode(buf: &mut [u8], index: u64, generation: u64) {
    buf[..8].copy_from_slice(MAGIC);
    buf[8..16].copy_from_slice(&index.to_le_bytes());
    buf[16..24].copy_from_slice(&generation.to_le_bytes());
    let mut x = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ generation;
    for chunk in buf[24..CRC_AT].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let crc = crc32fast::hash(&buf[..CRC_AT]);
    buf[CRC_AT..BLOCK].copy_from_slice(&crc.to_le_bytes());
}

/// What one block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// All zeroes: never written.
    Unwritten,
    /// A valid block of this generation.
    Valid {
        /// Its generation.
        generation: u64,
    },
}

/// Why a block failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockError {
    /// Not zeroes and not a test block.
    BadMagic,
    /// A valid block that belongs elsewhere.
    WrongIndex {
        /// The index it carries.
        found: u64,
    },
    /// The checksum does not match: torn or corrupted.
    BadChecksum,
    /// The checksum matches but the payload does not: a forged or buggy block.
    BadPayload,
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockError::BadMagic => write!(f, "not a test block"),
            BlockError::WrongIndex { found } => write!(f, "holds block {found}"),
            BlockError::BadChecksum => write!(f, "checksum mismatch"),
            BlockError::BadPayload => write!(f, "payload mismatch"),
        }
    }
}

impl std::error::Error for BlockError {}

/// Decodes a block read from position `index`.
pub fn decode(buf: &[u8], index: u64) -> Result<BlockState, BlockError> {
    if buf.iter().all(|&b| b == 0) {
        return Ok(BlockState::Unwritten);
    }
    if &buf[..8] != MAGIC {
        return Err(BlockError::BadMagic);
    }
    let stored = u32::from_le_bytes([
        buf[CRC_AT],
        buf[CRC_AT + 1],
        buf[CRC_AT + 2],
        buf[CRC_AT + 3],
    ]);
    if crc32fast::hash(&buf[..CRC_AT]) != stored {
        return Err(BlockError::BadChecksum);
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&buf[8..16]);
    let found = u64::from_le_bytes(word);
    if found != index {
        return Err(BlockError::WrongIndex { found });
    }
    word.copy_from_slice(&buf[16..24]);
    let generation = u64::from_le_bytes(word);
    let mut want = vec![0u8; BLOCK];
    encode(&mut want, index, generation);
    if want != buf[..BLOCK] {
        return Err(BlockError::BadPayload);
    }
    Ok(BlockState::Valid { generation })
}

/// Result of verifying a range of blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blocks examined.
    pub blocks: u64,
    /// Blocks never written.
    pub unwritten: u64,
    /// Lowest generation seen among valid blocks.
    pub min_generation: Option<u64>,
    /// Highest generation seen among valid blocks.
    pub max_generation: Option<u64>,
    /// Blocks that failed, with the reason (at most the first 16).
    pub failures: Vec<(u64, String)>,
    /// Total failed blocks.
    pub failed: u64,
}

impl VerifyReport {
    /// True when every block is a valid test block.
    pub fn all_valid(&self) -> bool {
        self.failed == 0 && self.unwritten == 0
    }

    /// One summary line.
    pub fn summary(&self) -> String {
        let verdict = if self.all_valid() { "ok" } else { "FAIL" };
        format!(
            "{TAG} verify {verdict} blocks={} unwritten={} failed={} min_gen={} max_gen={}{}",
            self.blocks,
            self.unwritten,
            self.failed,
            self.min_generation.map_or("-".into(), |g| g.to_string()),
            self.max_generation.map_or("-".into(), |g| g.to_string()),
            self.failures
                .first()
                .map(|(i, why)| format!(" first_failure=block{i}:{why}"))
                .unwrap_or_default()
        )
    }
}

/// Verifies blocks `0..blocks` of any readable source (a device or an image).
pub fn verify_from(src: &mut impl Read, blocks: u64) -> std::io::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut storage = AlignedBlock::new();
    for index in 0..blocks {
        let buf = storage.as_mut();
        src.read_exact(buf)?;
        report.blocks += 1;
        match decode(buf, index) {
            Ok(BlockState::Unwritten) => report.unwritten += 1,
            Ok(BlockState::Valid { generation }) => {
                report.min_generation = Some(
                    report
                        .min_generation
                        .map_or(generation, |g| g.min(generation)),
                );
                report.max_generation = Some(
                    report
                        .max_generation
                        .map_or(generation, |g| g.max(generation)),
                );
            }
            Err(e) => {
                report.failed += 1;
                if report.failures.len() < 16 {
                    report.failures.push((index, e.to_string()));
                }
            }
        }
    }
    Ok(report)
}

/// Parses a `FERRY-DISKTEST flushed gen=G upto=U` line into `(G, U)`.
pub fn parse_flushed(line: &str) -> Option<(u64, u64)> {
    // Other programs share the console: the tag may follow their output.
    let rest = line[line.find(TAG)? + TAG.len()..]
        .trim()
        .strip_prefix("flushed ")?;
    let mut gen = None;
    let mut upto = None;
    for f in rest.split_whitespace() {
        if let Some(v) = f.strip_prefix("gen=") {
            gen = v.parse().ok();
        } else if let Some(v) = f.strip_prefix("upto=") {
            upto = v.parse().ok();
        }
    }
    Some((gen?, upto?))
}

/// The last flush a console log reports, as `(generation, upto)`.
pub fn last_flushed(console: &str) -> Option<(u64, u64)> {
    console.lines().rev().find_map(parse_flushed)
}

/// Checks that everything the guest saw flushed is on disk: after the flush
/// `(gen, upto)`, blocks below `upto` hold generation `gen` or the next one,
/// the rest `gen - 1` or later (unwritten only if that is 0), none newer
/// than `gen + 1`, and every block is a valid test block.
pub fn check_durable(
    path: &Path,
    blocks: u64,
    gen: u64,
    upto: u64,
) -> std::io::Result<Result<VerifyReport, String>> {
    let mut f = File::open(path)?;
    let mut storage = AlignedBlock::new();
    let mut report = VerifyReport::default();
    for index in 0..blocks {
        let buf = storage.as_mut();
        f.read_exact(buf)?;
        report.blocks += 1;
        let need = if index < upto {
            gen
        } else {
            gen.saturating_sub(1)
        };
        let found = match decode(buf, index) {
            Ok(BlockState::Unwritten) => 0,
            Ok(BlockState::Valid { generation }) => generation,
            Err(e) => return Ok(Err(format!("block {index}: {e}"))),
        };
        if found < need {
            return Ok(Err(format!(
                "block {index} holds generation {found} but generation {need} was flushed (last flush: gen={gen} upto={upto})"
            )));
        }
        if found > gen + 1 {
            return Ok(Err(format!(
                "block {index} holds generation {found}, newer than any written (gen={gen})"
            )));
        }
        if found == 0 {
            report.unwritten += 1;
        } else {
            report.min_generation = Some(report.min_generation.map_or(found, |g| g.min(found)));
            report.max_generation = Some(report.max_generation.map_or(found, |g| g.max(found)));
        }
    }
    Ok(Ok(report))
}

/// Verifies the first `blocks` blocks of an image file from the host.
pub fn verify(path: &Path, blocks: u64) -> std::io::Result<VerifyReport> {
    let mut f = File::open(path)?;
    verify_from(&mut f, blocks)
}

/// A 4 KiB buffer aligned for O_DIRECT, carved from a larger allocation.
struct AlignedBlock {
    raw: Vec<u8>,
}

impl AlignedBlock {
    fn new() -> Self {
        AlignedBlock {
            raw: vec![0; 2 * BLOCK],
        }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        let skip = self.raw.as_ptr().align_offset(BLOCK).min(BLOCK);
        &mut self.raw[skip..skip + BLOCK]
    }
}

fn open_device(dev: &Path, write: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
}

/// Writes generations `first_gen..` over blocks `0..blocks`, flushing every
/// [`FLUSH_EVERY`] blocks and printing what each flush made durable.
/// With `passes == None` it rewrites forever.
pub fn write(dev: &Path, blocks: u64, first_gen: u64, passes: Option<u64>) -> std::io::Result<()> {
    let mut f = open_device(dev, true)?;
    let mut out = std::io::stdout();
    let mut storage = AlignedBlock::new();
    let mut generation = first_gen;
    let _ = writeln!(
        out,
        "{TAG} start dev={} blocks={blocks} gen={generation}",
        dev.display()
    );
    loop {
        f.seek(SeekFrom::Start(0))?;
        for index in 0..blocks {
            let buf = storage.as_mut();
            encode(buf, index, generation);
            f.write_all(buf)?;
            if (index + 1) % FLUSH_EVERY == 0 || index + 1 == blocks {
                f.sync_data()?;
                let _ = writeln!(out, "{TAG} flushed gen={generation} upto={}", index + 1);
            }
        }
        let _ = writeln!(out, "{TAG} pass done gen={generation} blocks={blocks}");
        if passes.is_some_and(|p| generation + 1 - first_gen >= p) {
            return Ok(());
        }
        generation += 1;
    }
}

/// Verifies blocks on a device from inside the guest, bypassing its cache.
pub fn verify_device(dev: &Path, blocks: u64) -> std::io::Result<VerifyReport> {
    let mut f = open_device(dev, false)?;
    verify_from(&mut f, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_and_every_fault_is_caught() {
        let mut b = vec![0u8; BLOCK];
        assert_eq!(decode(&b, 3), Ok(BlockState::Unwritten));
        encode(&mut b, 3, 9);
        assert_eq!(decode(&b, 3), Ok(BlockState::Valid { generation: 9 }));
        assert_eq!(decode(&b, 4), Err(BlockError::WrongIndex { found: 3 }));
        b[100] ^= 0x40;
        assert_eq!(decode(&b, 3), Err(BlockError::BadChecksum));
        b[0] = b'X';
        assert_eq!(decode(&b, 3), Err(BlockError::BadMagic));
    }

    #[test]
    fn flush_lines_parse_after_other_console_output() {
        assert_eq!(
            parse_flushed("/ # FERRY-DISKTEST flushed gen=4 upto=64"),
            Some((4, 64))
        );
        assert_eq!(parse_flushed("FERRY-DISKTEST pass done gen=4"), None);
    }

    #[test]
    fn durability_check_follows_the_last_flush() {
        assert_eq!(
            parse_flushed("FERRY-DISKTEST flushed gen=3 upto=128\r"),
            Some((3, 128))
        );
        assert_eq!(
            last_flushed(
                "FERRY-DISKTEST flushed gen=1 upto=64\nFERRY-DISKTEST flushed gen=2 upto=64\nx"
            ),
            Some((2, 64))
        );
        let path = std::env::temp_dir().join(format!("ferry-durable-{}.img", std::process::id()));
        let mut img = vec![0u8; BLOCK * 4];
        for (i, g) in [3u64, 3, 2, 2].iter().enumerate() {
            encode(&mut img[i * BLOCK..(i + 1) * BLOCK], i as u64, *g);
        }
        std::fs::write(&path, &img).unwrap();
        assert!(check_durable(&path, 4, 3, 2).unwrap().is_ok());
        // Generation 3 was flushed up to block 3, but block 2 still holds 2: lost.
        assert!(check_durable(&path, 4, 3, 3).unwrap().is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn verifies_an_image_written_on_the_host() {
        let path = std::env::temp_dir().join(format!("ferry-disktest-{}.img", std::process::id()));
        let mut img = vec![0u8; BLOCK * 10];
        for i in 0..8u64 {
            encode(&mut img[i as usize * BLOCK..(i as usize + 1) * BLOCK], i, 2);
        }
        std::fs::write(&path, &img).unwrap();
        let r = verify(&path, 10).unwrap();
        assert_eq!((r.unwritten, r.failed, r.max_generation), (2, 0, Some(2)));
        assert!(!r.all_valid());
        assert!(verify(&path, 8).unwrap().all_valid());
        std::fs::remove_file(&path).unwrap();
    }
}
