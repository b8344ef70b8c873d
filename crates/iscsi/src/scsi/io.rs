//! The block commands that move data: READ, WRITE, VERIFY, WRITE AND
//! VERIFY, COMPARE AND WRITE, ORWRITE, WRITE SAME, UNMAP, GET LBA STATUS,
//! SYNCHRONIZE CACHE and PRE-FETCH.

use super::cdb::{self, op, Rw};
use super::inquiry::{
    MAX_COMPARE_AND_WRITE, MAX_TRANSFER_BLOCKS, MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS,
    MAX_WRITE_SAME_BLOCKS,
};
use super::sense::key;
use super::{LogicalUnit, Response, Sense};
use tracing::warn;

type R<T> = Result<T, Response>;

fn decode(c: &[u8]) -> R<Rw> {
    cdb::rw(c).ok_or_else(|| Response::check(Sense::invalid_field_in_cdb(0)))
}

fn in_range(lu: &LogicalUnit, lba: u64, blocks: u64) -> R<()> {
    match lba.checked_add(blocks) {
        Some(end) if end <= lu.backend.num_blocks() => Ok(()),
        _ => Err(Response::check(Sense::lba_out_of_range())),
    }
}

fn writable(lu: &LogicalUnit) -> R<()> {
    if lu.backend.read_only() {
        Err(Response::check(Sense::write_protected()))
    } else {
        Ok(())
    }
}

fn no_protect(rw: &Rw) -> R<()> {
    if rw.protect() != 0 {
        Err(Response::check(Sense::invalid_field_in_cdb(1)))
    } else {
        Ok(())
    }
}

fn max_len(rw: &Rw) -> R<()> {
    if rw.blocks > u64::from(MAX_TRANSFER_BLOCKS) {
        Err(Response::check(Sense::invalid_field_in_cdb(
            if rw.lba > 0xffff_ffff { 10 } else { 7 },
        )))
    } else {
        Ok(())
    }
}

/// The Data-Out bytes the CDB asked for, or CHECK CONDITION when the
/// initiator's expected transfer length was shorter.
fn data(data_out: &[u8], need: usize) -> R<&[u8]> {
    data_out.get(..need).ok_or_else(|| {
        Response::check(Sense::new(key::ILLEGAL_REQUEST, 0x0e, 0x03)).with_data_out_len(need)
    })
}

/// For WRITE and WRITE AND VERIFY: when the initiator's expected transfer
/// length is shorter than the CDB's, only the whole blocks it sent are
/// written (RFC 7143 residual overflow semantics).
fn data_truncated<'a>(lu: &LogicalUnit, data_out: &'a [u8], need: usize) -> &'a [u8] {
    let bs = lu.block_size() as usize;
    let n = need.min(data_out.len() / bs * bs);
    &data_out[..n]
}

fn io_read(lu: &LogicalUnit, off: u64, buf: &mut [u8]) -> R<()> {
    lu.backend.read_at(off, buf).map_err(|e| {
        warn!(lun = lu.ident.lun, error = %e, "read failed");
        Response::check(Sense::medium_error_read())
    })
}

/// Reads `len` bytes at `off` into a new buffer (not zero-filled first).
fn io_read_vec(lu: &LogicalUnit, off: u64, len: usize) -> R<Vec<u8>> {
    lu.backend.read_vec(off, len).map_err(|e| {
        warn!(lun = lu.ident.lun, error = %e, "read failed");
        Response::check(Sense::medium_error_read())
    })
}

fn io_write(lu: &LogicalUnit, off: u64, buf: &[u8], fua: bool) -> R<()> {
    let r = lu.backend.write_at(off, buf).and_then(|()| {
        if fua || !lu.lock().wce {
            lu.backend.flush()
        } else {
            Ok(())
        }
    });
    r.map_err(|e| {
        warn!(lun = lu.ident.lun, error = %e, "write failed");
        Response::check(Sense::medium_error_write())
    })
}

fn bytes(lu: &LogicalUnit, blocks: u64) -> usize {
    (blocks * lu.block_size()) as usize
}

fn done(r: R<Response>) -> Response {
    r.unwrap_or_else(|e| e)
}

/// READ (6/10/12/16).
pub fn read(lu: &LogicalUnit, c: &[u8]) -> Response {
    done((|| {
        let rw = decode(c)?;
        if c[0] != op::READ_6 {
            no_protect(&rw)?;
        }
        in_range(lu, rw.lba, rw.blocks)?;
        max_len(&rw)?;
        let buf = io_read_vec(lu, rw.lba * lu.block_size(), bytes(lu, rw.blocks))?;
        Ok(Response::good(buf))
    })())
}

/// WRITE (6/10/12/16), FUA honoured.
pub fn write(lu: &LogicalUnit, c: &[u8], data_out: &[u8]) -> Response {
    let need = cdb::rw(c).map_or(0, |rw| bytes(lu, rw.blocks.min(u64::from(u32::MAX))));
    done((|| {
        let rw = decode(c)?;
        if c[0] != op::WRITE_6 {
            no_protect(&rw)?;
        }
        writable(lu)?;
        in_range(lu, rw.lba, rw.blocks)?;
        max_len(&rw)?;
        let d = data_truncated(lu, data_out, need);
        io_write(lu, rw.lba * lu.block_size(), d, rw.fua())?;
        Ok(Response::good(Vec::new()))
    })())
    .with_data_out_len(need)
}

/// WRITE AND VERIFY (10/12/16): the write is synchronous, so the verify is
/// the write's own success.
pub fn write_verify(lu: &LogicalUnit, c: &[u8], data_out: &[u8]) -> Response {
    let need = cdb::rw(c).map_or(0, |rw| bytes(lu, rw.blocks.min(u64::from(u32::MAX))));
    done((|| {
        let rw = decode(c)?;
        no_protect(&rw)?;
        if rw.flags & 0x04 != 0 {
            return Err(Response::check(Sense::invalid_field_in_cdb(1)));
        }
        writable(lu)?;
        in_range(lu, rw.lba, rw.blocks)?;
        max_len(&rw)?;
        let d = data_truncated(lu, data_out, need);
        io_write(lu, rw.lba * lu.block_size(), d, true)?;
        Ok(Response::good(Vec::new()))
    })())
    .with_data_out_len(need)
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// VERIFY (10/12/16) with BYTCHK 0, 1 or 3.
pub fn verify(lu: &LogicalUnit, c: &[u8], data_out: &[u8]) -> Response {
    let rw = cdb::rw(c);
    let bytchk = rw.map_or(0, |r| (r.flags >> 1) & 3);
    let need = match (rw, bytchk) {
        (Some(r), 1) => bytes(lu, r.blocks.min(u64::from(u32::MAX))),
        (Some(_), 3) => bytes(lu, 1),
        _ => 0,
    };
    done((|| {
        let rw = decode(c)?;
        no_protect(&rw)?;
        if bytchk == 2 {
            return Err(Response::check(Sense::invalid_field_in_cdb(1)));
        }
        in_range(lu, rw.lba, rw.blocks)?;
        max_len(&rw)?;
        if bytchk == 0 || rw.blocks == 0 {
            return Ok(Response::good(Vec::new()));
        }
        let d = data(data_out, need)?;
        let mut buf = vec![0u8; bytes(lu, rw.blocks)];
        io_read(lu, rw.lba * lu.block_size(), &mut buf)?;
        let bs = lu.block_size() as usize;
        let diff = if bytchk == 1 {
            first_difference(&buf, d)
        } else {
            buf.chunks(bs)
                .enumerate()
                .find_map(|(i, blk)| first_difference(blk, d).map(|o| i * bs + o))
        };
        match diff {
            Some(o) => Err(Response::check(Sense::miscompare(o as u64))),
            None => Ok(Response::good(Vec::new())),
        }
    })())
    .with_data_out_len(need)
}

/// COMPARE AND WRITE: compare the first half of the data with the medium,
/// write the second half if equal; atomic against other such commands.
pub fn compare_and_write(lu: &LogicalUnit, c: &[u8], data_out: &[u8]) -> Response {
    let n = u64::from(c[13]);
    let need = bytes(lu, 2 * n);
    done((|| {
        if c[1] >> 5 != 0 {
            return Err(Response::check(Sense::invalid_field_in_cdb(1)));
        }
        writable(lu)?;
        if n > u64::from(MAX_COMPARE_AND_WRITE) {
            return Err(Response::check(Sense::invalid_field_in_cdb(13)));
        }
        let lba = cdb::be64(&c[2..]);
        in_range(lu, lba, n)?;
        if n == 0 {
            if !data_out.is_empty() {
                // Data for a zero-length compare: the CDB and the transfer disagree.
                return Err(Response::check(Sense::invalid_field_in_cdb(13)));
            }
            return Ok(Response::good(Vec::new()));
        }
        if data_out.len() > need {
            return Err(Response::check(Sense::invalid_field_in_cdb(13)));
        }
        let d = data(data_out, need)?;
        let half = need / 2;
        let _g = lu.caw_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut cur = vec![0u8; half];
        io_read(lu, lba * lu.block_size(), &mut cur)?;
        if let Some(o) = first_difference(&cur, &d[..half]) {
            return Err(Response::check(Sense::miscompare(o as u64)));
        }
        io_write(lu, lba * lu.block_size(), &d[half..], c[1] & 0x08 != 0)?;
        Ok(Response::good(Vec::new()))
    })())
    .with_data_out_len(need)
}

/// ORWRITE (16): the medium becomes medium OR data.
pub fn orwrite(lu: &LogicalUnit, c: &[u8], data_out: &[u8]) -> Response {
    let need = cdb::rw(c).map_or(0, |rw| bytes(lu, rw.blocks.min(u64::from(u32::MAX))));
    done((|| {
        let rw = decode(c)?;
        no_protect(&rw)?;
        writable(lu)?;
        in_range(lu, rw.lba, rw.blocks)?;
        max_len(&rw)?;
        let d = data(data_out, need)?;
        let _g = lu.caw_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut cur = vec![0u8; need];
        io_read(lu, rw.lba * lu.block_size(), &mut cur)?;
        for (a, b) in cur.iter_mut().zip(d) {
            *a |= *b;
        }
        io_write(lu, rw.lba * lu.block_size(), &cur, rw.fua())?;
        Ok(Response::good(Vec::new()))
    })())
    .with_data_out_len(need)
}

/// WRITE SAME (10/16), with UNMAP (the range is deallocated) and NDOB.
pub fn write_same(lu: &LogicalUnit, c: &[u8], data_out: &[u8]) -> Response {
    let sixteen = c[0] == op::WRITE_SAME_16;
    let ndob = sixteen && c[1] & 0x01 != 0;
    let need = if ndob { 0 } else { bytes(lu, 1) };
    done((|| {
        let rw = decode(c)?;
        no_protect(&rw)?;
        if c[1] & 0x10 != 0 || (!sixteen && c[1] & 0x01 != 0) {
            return Err(Response::check(Sense::invalid_field_in_cdb(1)));
        }
        writable(lu)?;
        let len_byte = if sixteen { 10 } else { 7 };
        in_range(lu, rw.lba, 0)?;
        // WSNZ=0: zero blocks means "to the end of the medium".
        let blocks = if rw.blocks == 0 {
            lu.backend.num_blocks() - rw.lba
        } else {
            rw.blocks
        };
        if blocks > MAX_WRITE_SAME_BLOCKS {
            return Err(Response::check(Sense::invalid_field_in_cdb(len_byte)));
        }
        in_range(lu, rw.lba, blocks)?;
        if data_out.len() > need {
            // More than the one block WRITE SAME repeats.
            return Err(Response::check(Sense::invalid_field_in_cdb(len_byte)));
        }
        let block = if ndob {
            vec![0u8; bytes(lu, 1)]
        } else {
            data(data_out, need)?.to_vec()
        };
        let bs = lu.block_size();
        // UNMAP bit: deallocate whatever the block holds, as LIO and tgt do
        // (LBPRZ: the range then reads as zeros).
        if c[1] & 0x08 != 0 {
            lu.backend.unmap(rw.lba * bs, blocks * bs).map_err(|e| {
                warn!(lun = lu.ident.lun, error = %e, "unmap failed");
                Response::check(Sense::medium_error_write())
            })?;
            return Ok(Response::good(Vec::new()));
        }
        let per_chunk = 256u64;
        let chunk: Vec<u8> = block
            .iter()
            .copied()
            .cycle()
            .take(bytes(lu, per_chunk))
            .collect();
        let mut done_blocks = 0;
        while done_blocks < blocks {
            let n = (blocks - done_blocks).min(per_chunk);
            io_write(
                lu,
                (rw.lba + done_blocks) * bs,
                &chunk[..bytes(lu, n)],
                false,
            )?;
            done_blocks += n;
        }
        if rw.fua() {
            io_write(lu, 0, &[], true)?;
        }
        Ok(Response::good(Vec::new()))
    })())
    .with_data_out_len(need)
}

/// UNMAP with a block descriptor list.
pub fn unmap(lu: &LogicalUnit, c: &[u8], data_out: &[u8]) -> Response {
    let len = usize::from(cdb::be16(&c[7..]));
    done((|| {
        if c[1] & 0x01 != 0 {
            return Err(Response::check(Sense::invalid_field_in_cdb(1)));
        }
        writable(lu)?;
        if len == 0 {
            return Ok(Response::good(Vec::new()));
        }
        let d = data(data_out, len)?;
        if len < 8 {
            return Err(Response::check(Sense::param_list_length()));
        }
        let desc_len = usize::from(cdb::be16(&d[2..]));
        let descs = &d[8..];
        let n = desc_len.min(descs.len()) / 16;
        if n > MAX_UNMAP_DESCRIPTORS as usize {
            return Err(Response::check(Sense::invalid_field_in_param(2)));
        }
        let mut ranges = Vec::with_capacity(n);
        for i in 0..n {
            let e = &descs[i * 16..i * 16 + 16];
            let lba = cdb::be64(e);
            let blocks = u64::from(cdb::be32(&e[8..]));
            if blocks > u64::from(MAX_UNMAP_BLOCKS) {
                return Err(Response::check(Sense::invalid_field_in_param(
                    (8 + i * 16 + 8) as u16,
                )));
            }
            in_range(lu, lba, blocks)?;
            ranges.push((lba, blocks));
        }
        let bs = lu.block_size();
        for (lba, blocks) in ranges {
            if blocks > 0 {
                lu.backend.unmap(lba * bs, blocks * bs).map_err(|e| {
                    warn!(lun = lu.ident.lun, error = %e, "unmap failed");
                    Response::check(Sense::medium_error_write())
                })?;
            }
        }
        Ok(Response::good(Vec::new()))
    })())
    .with_data_out_len(len)
}

/// GET LBA STATUS: mapped or deallocated runs from the starting LBA.
pub fn get_lba_status(lu: &LogicalUnit, c: &[u8]) -> Response {
    done((|| {
        let lba = cdb::be64(&c[2..]);
        let alloc = cdb::be32(&c[10..]) as usize;
        let total = lu.backend.num_blocks();
        if lba >= total {
            return Err(Response::check(Sense::lba_out_of_range()));
        }
        let bs = lu.block_size();
        let mut out = vec![0u8; 8];
        let mut at = lba;
        while at < total && out.len() + 16 <= alloc.max(24) && out.len() < 8 + 16 * 64 {
            let (mapped, run) = lu
                .backend
                .mapping(at * bs, (total - at) * bs)
                .map_err(|_| Response::check(Sense::medium_error_read()))?;
            let mut blocks = run / bs;
            if blocks == 0 {
                // A partially mapped block counts as mapped.
                blocks = 1;
            }
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&at.to_be_bytes());
            d[8..12].copy_from_slice(&u32::try_from(blocks).unwrap_or(u32::MAX).to_be_bytes());
            d[12] = if mapped || run % bs != 0 { 0 } else { 1 };
            out.extend_from_slice(&d);
            at += blocks.min(u64::from(u32::MAX));
        }
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        Ok(Response::good(super::truncate(out, alloc)))
    })())
}

fn lba_and_blocks_10_16(c: &[u8]) -> (u64, u64) {
    if c[0] == op::SYNCHRONIZE_CACHE_16 || c[0] == op::PREFETCH_16 {
        (cdb::be64(&c[2..]), u64::from(cdb::be32(&c[10..])))
    } else {
        (u64::from(cdb::be32(&c[2..])), u64::from(cdb::be16(&c[7..])))
    }
}

/// SYNCHRONIZE CACHE (10/16): every completed write is made durable.
pub fn sync_cache(lu: &LogicalUnit, c: &[u8]) -> Response {
    done((|| {
        let (lba, blocks) = lba_and_blocks_10_16(c);
        in_range(lu, lba, blocks)?;
        lu.backend.flush().map_err(|e| {
            warn!(lun = lu.ident.lun, error = %e, "flush failed");
            Response::check(Sense::medium_error_write())
        })?;
        Ok(Response::good(Vec::new()))
    })())
}

/// PRE-FETCH (10/16): a range check; the page cache does the rest.
pub fn prefetch(lu: &LogicalUnit, c: &[u8]) -> Response {
    done((|| {
        let (lba, blocks) = lba_and_blocks_10_16(c);
        in_range(lu, lba, blocks)?;
        Ok(Response::good(Vec::new()))
    })())
}
