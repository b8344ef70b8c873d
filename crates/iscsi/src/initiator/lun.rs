//! A LUN as a disk: byte-addressed reads and writes split into pipelined
//! READ/WRITE(16) commands, FUA, flush, discard and write-zeroes, with the
//! retries SCSI expects (UNIT ATTENTION, BUSY) and none for a reservation
//! conflict.

use super::cdb::{self, BlockLimits, Capacity};
use super::session::{Session, SessionConfig};
use super::task::{
    Completion, Request, ScsiResult, BUSY, CHECK_CONDITION, GOOD, RESERVATION_CONFLICT,
    TASK_SET_FULL,
};
use super::{IscsiError, Sink};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sense key UNIT ATTENTION.
const UNIT_ATTENTION: u8 = 0x06;
/// Sense key NOT READY.
const NOT_READY: u8 = 0x02;
/// Sense key ILLEGAL REQUEST.
const ILLEGAL_REQUEST: u8 = 0x05;
/// ASC LOGICAL UNIT NOT SUPPORTED.
const LUN_NOT_SUPPORTED: u8 = 0x25;
/// Most UNIT ATTENTIONs one command goes through before giving up.
const MAX_UA_RETRIES: u32 = 8;
/// Largest single READ/WRITE command when the target states no limit.
const DEFAULT_MAX_IO: u64 = 1024 * 1024;

/// Why a read or write started with [`Lun::start_read`] or
/// [`Lun::start_write`] did not end well.
#[derive(Debug)]
pub enum Unfinished {
    /// The target answered some part with a status other than GOOD: run
    /// the operation again with the blocking call, which retries what SCSI
    /// says to retry (UNIT ATTENTION, BUSY, ...) and reports the rest, a
    /// reservation conflict included. Reads and writes of whole blocks can
    /// safely run twice.
    Again,
    /// The session failed it (timed out and aborted, or closed).
    Failed(IscsiError),
}

/// What a started read hands its caller: the data, a buffer per command.
pub type ReadDone = Box<dyn FnOnce(Result<Vec<Vec<u8>>, Unfinished>) + Send>;
/// What a started write hands its caller.
pub type WriteDone = Box<dyn FnOnce(Result<(), Unfinished>) + Send>;

/// The commands of one started read or write, gathered as they end; the
/// last one to end reports for all.
struct Gather {
    left: usize,
    /// Each command's Data-In buffers.
    parts: Vec<Vec<Vec<u8>>>,
    /// `Failed` wins over `Again`: a failure is final.
    unfinished: Option<Unfinished>,
    done: Option<ReadDone>,
}

/// What one started command's end means for its read or write: its Data-In
/// buffers, or why it did not finish.
fn settle(r: Result<ScsiResult, IscsiError>, want: usize) -> Result<Vec<Vec<u8>>, Unfinished> {
    match r {
        Ok(r)
            if r.status == GOOD
                && r.placed + r.data.len() + r.data_rest.iter().map(Vec::len).sum::<usize>()
                    == want =>
        {
            // Placed data left nothing in the result's buffers.
            Ok(if r.placed > 0 {
                Vec::new()
            } else {
                r.into_buffers()
            })
        }
        Ok(_) => Err(Unfinished::Again),
        Err(e) => Err(Unfinished::Failed(e)),
    }
}

impl Gather {
    /// One completion per command; `expected[i]` is command i's read
    /// length. A lone command reports straight to `done`.
    fn completions(done: ReadDone, expected: Vec<usize>) -> Vec<Completion> {
        if let [want] = expected[..] {
            return vec![Completion::new(move |r| done(settle(r, want)))];
        }
        let g = Arc::new(Mutex::new(Gather {
            left: expected.len(),
            parts: vec![Vec::new(); expected.len()],
            unfinished: None,
            done: Some(done),
        }));
        expected
            .into_iter()
            .enumerate()
            .map(|(i, want)| {
                let g = g.clone();
                Completion::new(move |r| Gather::end(&g, i, settle(r, want)))
            })
            .collect()
    }

    fn end(g: &Mutex<Gather>, i: usize, r: Result<Vec<Vec<u8>>, Unfinished>) {
        let mut s = g.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(buffers) => s.parts[i] = buffers,
            // A failure is final; it wins over a retry.
            Err(Unfinished::Again) if s.unfinished.is_some() => {}
            Err(u) => s.unfinished = Some(u),
        }
        s.left -= 1;
        if s.left > 0 {
            return;
        }
        let done = s.done.take();
        let result = match s.unfinished.take() {
            Some(u) => Err(u),
            None => Ok(std::mem::take(&mut s.parts).into_iter().flatten().collect()),
        };
        drop(s);
        if let Some(done) = done {
            done(result);
        }
    }
}

/// One LUN of a target, opened through its own session.
pub struct Lun {
    session: Session,
    lun: u64,
    cap: Capacity,
    limits: BlockLimits,
    id: String,
    max_io: u64,
}

impl Lun {
    /// Logs in and checks the LUN: it exists, is a disk, has a size.
    pub fn open(cfg: SessionConfig, lun: u64) -> Result<Lun, IscsiError> {
        let target = cfg.login.target.clone();
        let session = Session::open(cfg)?;
        let mut l = Lun {
            session,
            lun,
            cap: Capacity {
                blocks: 0,
                block_size: 512,
                lbpme: false,
                lbprz: false,
            },
            limits: BlockLimits::default(),
            id: String::new(),
            max_io: DEFAULT_MAX_IO,
        };
        let inq = l.exec(cdb::inquiry(None, 96), &[], 96);
        let inq = match inq {
            Ok(r) => r,
            Err(IscsiError::CheckCondition {
                key: ILLEGAL_REQUEST,
                asc: LUN_NOT_SUPPORTED,
                ..
            }) => return Err(l.no_such_lun(&target)),
            Err(e) => return Err(e),
        };
        let first = inq.data.first().copied().unwrap_or(0x7f);
        if first >> 5 != 0 {
            return Err(l.no_such_lun(&target));
        }
        if first & 0x1f != 0 {
            return Err(IscsiError::NotADisk {
                target,
                lun,
                kind: first & 0x1f,
            });
        }
        let r = l.exec(cdb::read_capacity16(), &[], 32)?;
        l.cap = cdb::parse_capacity16(&r.data).ok_or_else(|| IscsiError::Protocol {
            portal: l.session.config().login.portal.clone(),
            what: "READ CAPACITY(16) data is short or names a bad block size".into(),
        })?;
        if let Ok(r) = l.exec(cdb::inquiry(Some(0xb0), 64), &[], 64) {
            l.limits = cdb::parse_block_limits(&r.data);
        }
        l.id = match l.exec(cdb::inquiry(Some(0x83), 255), &[], 255) {
            Ok(r) => cdb::parse_device_id(&r.data).unwrap_or_default(),
            Err(_) => String::new(),
        };
        let neg = l.session.negotiated();
        let bs = u64::from(l.cap.block_size);
        let mut max_io = u64::from(neg.max_burst).max(bs);
        if l.limits.max_transfer > 0 {
            max_io = max_io.min(u64::from(l.limits.max_transfer) * bs);
        }
        l.max_io = (max_io / bs).max(1) * bs;
        tracing::info!(
            lun, blocks = l.cap.blocks, block_size = l.cap.block_size, id = %l.id,
            lbpme = l.cap.lbpme, max_io = l.max_io, "iSCSI LUN opened"
        );
        Ok(l)
    }

    fn no_such_lun(&self, target: &str) -> IscsiError {
        let available = self
            .exec_on(0, cdb::report_luns(4096), &[], 4096)
            .map(|r| {
                cdb::parse_report_luns(&r.data)
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        IscsiError::NoSuchLun {
            target: target.to_string(),
            lun: self.lun,
            available,
        }
    }

    /// The session underneath.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The LUN number.
    pub fn number(&self) -> u64 {
        self.lun
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.cap.blocks * u64::from(self.cap.block_size)
    }

    /// Bytes per block.
    pub fn block_size(&self) -> u32 {
        self.cap.block_size
    }

    /// The LUN's device identifier (VPD page 0x83), empty if it has none.
    pub fn device_id(&self) -> &str {
        &self.id
    }

    /// Runs one command with the usual retries; any status but GOOD is an error.
    pub fn exec(&self, cdb: Vec<u8>, data: &[u8], read_len: u32) -> Result<ScsiResult, IscsiError> {
        self.exec_on(self.lun, cdb, data, read_len)
    }

    fn exec_on(
        &self,
        lun: u64,
        cdb: Vec<u8>,
        data: &[u8],
        read_len: u32,
    ) -> Result<ScsiResult, IscsiError> {
        let req = Request {
            lun,
            cdb,
            data: Bytes::copy_from_slice(data),
            read_len,
            sink: None,
        };
        self.finish(req.clone(), self.session.command(req)?)
    }

    /// Turns a result into success or an error, retrying what SCSI says
    /// to retry (UNIT ATTENTION, NOT READY becoming ready, BUSY, TASK SET
    /// FULL) until the I/O timeout. RESERVATION CONFLICT is never retried.
    fn finish(&self, req: Request, mut r: ScsiResult) -> Result<ScsiResult, IscsiError> {
        let deadline = Instant::now() + self.session.config().io_timeout;
        let mut ua = 0;
        loop {
            let opcode = req.opcode();
            let retry = match r.status {
                GOOD => return Ok(r),
                RESERVATION_CONFLICT => {
                    return Err(IscsiError::ReservationConflict { lun: req.lun })
                }
                BUSY | TASK_SET_FULL => true,
                CHECK_CONDITION => {
                    let (key, asc, ascq) = r.sense_code().unwrap_or((0, 0, 0));
                    let retry = (key == UNIT_ATTENTION && ua < MAX_UA_RETRIES)
                        || (key == NOT_READY && asc == 0x04);
                    if key == UNIT_ATTENTION {
                        ua += 1;
                        tracing::debug!(asc, ascq, "unit attention; retrying");
                    }
                    if !retry {
                        return Err(IscsiError::CheckCondition {
                            opcode,
                            key,
                            asc,
                            ascq,
                        });
                    }
                    true
                }
                status => return Err(IscsiError::Status { opcode, status }),
            };
            if retry && Instant::now() >= deadline {
                return Err(IscsiError::Status {
                    opcode,
                    status: r.status,
                });
            }
            if r.status != CHECK_CONDITION {
                std::thread::sleep(Duration::from_millis(5));
            }
            r = self.session.command(req.clone())?;
        }
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), IscsiError> {
        let bs = u64::from(self.cap.block_size);
        if !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
            return Err(IscsiError::Invalid(format!(
                "{offset}+{len} is not aligned to the LUN's {bs}-byte blocks"
            )));
        }
        if offset.checked_add(len).is_none_or(|e| e > self.size()) {
            return Err(IscsiError::Invalid(format!(
                "{offset}+{len} is beyond the LUN's {} bytes",
                self.size()
            )));
        }
        Ok(())
    }

    /// Runs many commands at once (pipelined), then settles each.
    fn many(&self, reqs: Vec<Request>) -> Result<Vec<ScsiResult>, IscsiError> {
        let mut tickets = Vec::with_capacity(reqs.len());
        let mut first_err = None;
        for r in &reqs {
            match self.session.submit(r.clone()) {
                Ok(t) => tickets.push(Some(t)),
                Err(e) => {
                    first_err.get_or_insert(e);
                    tickets.push(None);
                }
            }
        }
        let mut out = Vec::with_capacity(reqs.len());
        for (req, t) in reqs.into_iter().zip(tickets) {
            let Some(t) = t else { continue };
            match self.session.wait(t).and_then(|r| self.finish(req, r)) {
                Ok(r) => out.push(r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn chunks(&self, len: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let step = self.max_io;
        (0..len.div_ceil(step)).map(move |i| {
            let at = i * step;
            (at, step.min(len - at))
        })
    }

    /// Reads `buf.len()` bytes at `offset` (block-aligned).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), IscsiError> {
        let len = buf.len() as u64;
        self.check(offset, len)?;
        let results = self.many(self.reads(offset, len))?;
        let mut at = 0usize;
        for r in results {
            let n = r.data.len();
            let Some(dst) = buf.get_mut(at..at + n) else {
                break;
            };
            dst.copy_from_slice(&r.data);
            at += n;
        }
        if at != buf.len() {
            return Err(IscsiError::Protocol {
                portal: self.session.config().login.portal.clone(),
                what: format!("read returned {at} of {} bytes", buf.len()),
            });
        }
        Ok(())
    }

    /// Starts reading `len` bytes at `offset` (block-aligned) without
    /// waiting: `done` gets the data, in order, when every command has
    /// ended (on the session's reader thread; see
    /// [`Completion`]).
    /// With `hold`, the commands wait for [`Lun::send_held`] or a later
    /// start without it (see [`Session::start`]).
    pub fn start_read(&self, offset: u64, len: u64, hold: bool, done: ReadDone) {
        self.start_reads(offset, len, None, hold, done);
    }

    /// As [`Lun::start_read`], the data going straight into `sink` (as long
    /// as the read) as it arrives: `done` then hears no buffers. The caller
    /// closes the sink before it reuses its memory.
    pub fn start_read_into(&self, offset: u64, sink: &Arc<Sink>, hold: bool, done: ReadDone) {
        self.start_reads(offset, sink.len() as u64, Some(sink), hold, done);
    }

    /// The started reads of `len` bytes at `offset`, each command's Data-In
    /// going to its window of `sink` if there is one.
    fn start_reads(
        &self,
        offset: u64,
        len: u64,
        sink: Option<&Arc<Sink>>,
        hold: bool,
        done: ReadDone,
    ) {
        if let Err(e) = self.check(offset, len) {
            return done(Err(Unfinished::Failed(e)));
        }
        let mut reqs = self.reads(offset, len);
        if let Some(sink) = sink {
            let mut at = 0usize;
            for r in &mut reqs {
                r.sink = sink.window(at, r.read_len as usize);
                at += r.read_len as usize;
            }
        }
        self.start_all(reqs, hold, done);
    }

    /// Starts writing `data` at `offset` (block-aligned) without waiting;
    /// `done` runs once every command has ended. With `fua` the data is on
    /// stable storage when `done` hears success.
    /// `hold` as for [`Lun::start_read`].
    pub fn start_write(&self, data: Bytes, offset: u64, fua: bool, hold: bool, done: WriteDone) {
        let len = data.len() as u64;
        if let Err(e) = self.check(offset, len) {
            return done(Err(Unfinished::Failed(e)));
        }
        let reqs = self.writes(&data, offset, fua);
        self.start_all(reqs, hold, Box::new(move |r| done(r.map(|_| ()))));
    }

    /// Starts `reqs`, the parts of one read or write, and reports their
    /// end to `done` once all have ended. All but the last are held, so
    /// they go out together.
    fn start_all(&self, reqs: Vec<Request>, hold: bool, done: ReadDone) {
        if reqs.is_empty() {
            return done(Ok(Vec::new()));
        }
        let expected = reqs.iter().map(|r| r.read_len as usize).collect();
        let last = reqs.len().saturating_sub(1);
        for (i, (req, c)) in reqs
            .into_iter()
            .zip(Gather::completions(done, expected))
            .enumerate()
        {
            self.session.start(req, c, hold || i < last);
        }
    }

    /// The READ(16) commands of `len` bytes at `offset`, each at most the
    /// largest transfer.
    fn reads(&self, offset: u64, len: u64) -> Vec<Request> {
        let bs = u64::from(self.cap.block_size);
        self.chunks(len)
            .map(|(at, n)| Request {
                lun: self.lun,
                cdb: cdb::read16((offset + at) / bs, (n / bs) as u32),
                data: Bytes::new(),
                read_len: n as u32,
                sink: None,
            })
            .collect()
    }

    /// The WRITE(16) commands of `data` at `offset`, each a slice of it.
    fn writes(&self, data: &Bytes, offset: u64, fua: bool) -> Vec<Request> {
        let bs = u64::from(self.cap.block_size);
        self.chunks(data.len() as u64)
            .map(|(at, n)| Request {
                lun: self.lun,
                cdb: cdb::write16((offset + at) / bs, (n / bs) as u32, fua),
                data: data.slice(at as usize..(at + n) as usize),
                read_len: 0,
                sink: None,
            })
            .collect()
    }

    /// Sends the commands started with `hold`.
    pub fn send_held(&self) {
        self.session.send_held();
    }

    /// Writes `buf` at `offset` (block-aligned); with `fua` it is on stable
    /// storage when this returns.
    pub fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), IscsiError> {
        let len = buf.len() as u64;
        self.check(offset, len)?;
        let reqs = self.writes(&Bytes::copy_from_slice(buf), offset, fua);
        self.many(reqs).map(|_| ())
    }

    /// SYNCHRONIZE CACHE: every completed write is on stable storage.
    pub fn flush(&self) -> Result<(), IscsiError> {
        self.exec(cdb::synchronize_cache(), &[], 0).map(|_| ())
    }

    /// UNMAP the range when the LUN supports it; otherwise nothing (a
    /// discard is only advice).
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), IscsiError> {
        self.check(offset, len)?;
        if !self.cap.lbpme || len == 0 {
            return Ok(());
        }
        let bs = u64::from(self.cap.block_size);
        let max = match self.limits.max_unmap {
            0 | u32::MAX => 1 << 20,
            n => n.min(1 << 20),
        };
        let mut lba = offset / bs;
        let mut left = len / bs;
        while left > 0 {
            let n = left.min(u64::from(max)) as u32;
            let (c, p) = cdb::unmap(&[(lba, n)]);
            match self.exec(c, &p, 0) {
                Ok(_) => {}
                Err(IscsiError::CheckCondition {
                    key: ILLEGAL_REQUEST,
                    ..
                }) => return Ok(()),
                Err(e) => return Err(e),
            }
            lba += u64::from(n);
            left -= u64::from(n);
        }
        Ok(())
    }

    /// Makes the range read as zeroes: WRITE SAME(16) (unmapping where
    /// unmapped blocks read as zeroes), or plain zero writes when the
    /// target refuses it.
    pub fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), IscsiError> {
        self.check(offset, len)?;
        let bs = u64::from(self.cap.block_size);
        let unmap = self.cap.lbpme && self.cap.lbprz;
        let max = match self.limits.max_write_same {
            0 => 65_536,
            n => n.min(1 << 22),
        };
        let zero = vec![0u8; bs as usize];
        let mut lba = offset / bs;
        let mut left = len / bs;
        while left > 0 {
            let n = left.min(max) as u32;
            match self.exec(cdb::write_same16(lba, n, unmap), &zero, 0) {
                Ok(_) => {}
                Err(IscsiError::CheckCondition {
                    key: ILLEGAL_REQUEST,
                    ..
                }) => return self.write_zero_buffers(lba * bs, left * bs, fua),
                Err(e) => return Err(e),
            }
            lba += u64::from(n);
            left -= u64::from(n);
        }
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    fn write_zero_buffers(&self, offset: u64, len: u64, fua: bool) -> Result<(), IscsiError> {
        let zeroes = vec![0u8; self.max_io.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64) as usize;
            self.write_at(&zeroes[..n], offset + done, fua)?;
            done += n as u64;
        }
        Ok(())
    }
}
