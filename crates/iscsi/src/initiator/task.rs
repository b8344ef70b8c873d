//! One outstanding SCSI command as the session tracks it: what to send
//! (kept so it can be sent again on a new connection), the Data-In
//! gathered so far, R2Ts waiting for data, and the outcome. No I/O here:
//! the reader thread feeds PDUs in, the caller's thread takes results out.

use super::IscsiError;
use crate::pdu::bhs::{DataIn, R2t, ScsiResponse};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar};
use std::time::Instant;

/// SCSI status GOOD.
pub const GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION.
pub const CHECK_CONDITION: u8 = 0x02;
/// SCSI status BUSY.
pub const BUSY: u8 = 0x08;
/// SCSI status RESERVATION CONFLICT.
pub const RESERVATION_CONFLICT: u8 = 0x18;
/// SCSI status TASK SET FULL.
pub const TASK_SET_FULL: u8 = 0x28;

/// A command to send: the CDB, the data it writes, how much it reads.
#[derive(Debug, Clone)]
pub struct Request {
    /// LUN number.
    pub lun: u64,
    /// The CDB (up to 16 bytes).
    pub cdb: Vec<u8>,
    /// Data-Out bytes (empty for reads).
    pub data: Bytes,
    /// Data-In bytes expected.
    pub read_len: u32,
    /// Where the Data-In goes as it arrives, for a started read whose
    /// caller gave memory of its own (else into the result's buffers).
    pub sink: Option<Arc<super::Sink>>,
}

impl Request {
    /// The CDB's operation code.
    pub fn opcode(&self) -> u8 {
        self.cdb.first().copied().unwrap_or(0)
    }
}

/// How a command ended at the SCSI level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResult {
    /// Status byte.
    pub status: u8,
    /// Sense data (without the 2-byte length), if any.
    pub sense: Vec<u8>,
    /// Data-In, as long as the target sent (residual removed).
    pub data: Vec<u8>,
    /// For a command started with [`Session::start`](super::Session::start):
    /// the Data-In buffers after `data`, in order, as they arrived (their
    /// user writes them on without joining them; a blocking caller always
    /// gets everything in `data`).
    pub data_rest: Vec<Vec<u8>>,
    /// Data-In bytes that went straight into the request's sink (all of
    /// them, or the read is short and must be done again).
    pub placed: usize,
}

impl ScsiResult {
    /// Every Data-In byte, `data` then `data_rest`.
    pub fn into_buffers(mut self) -> Vec<Vec<u8>> {
        let mut all = Vec::with_capacity(1 + self.data_rest.len());
        all.push(std::mem::take(&mut self.data));
        all.append(&mut self.data_rest);
        all
    }
}

impl ScsiResult {
    /// (sense key, ASC, ASCQ) from fixed or descriptor sense data.
    pub fn sense_code(&self) -> Option<(u8, u8, u8)> {
        let s = &self.sense;
        match s.first().map(|b| b & 0x7f) {
            Some(0x70) | Some(0x71) => Some((
                s.get(2)? & 0x0f,
                *s.get(12).unwrap_or(&0),
                *s.get(13).unwrap_or(&0),
            )),
            Some(0x72) | Some(0x73) => Some((s.get(1)? & 0x0f, *s.get(2)?, *s.get(3)?)),
            _ => None,
        }
    }
}

/// A data transfer the target asked for with an R2T.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Target transfer tag to echo.
    pub ttt: u32,
    /// Offset into the write buffer.
    pub offset: u32,
    /// Bytes wanted.
    pub len: u32,
    /// The connection generation the R2T came on.
    pub generation: u64,
}

/// What runs when a command submitted with
/// [`Session::start`](super::Session::start) ends: on the session's reader
/// thread for an answer, on a thread of its own for a timeout, on the
/// closing thread when the session closes. It must not block for long: the
/// reader thread reads every answer of the session.
pub struct Completion(Box<dyn FnOnce(Result<ScsiResult, IscsiError>) + Send>);

impl Completion {
    /// Wraps `f`.
    pub fn new(f: impl FnOnce(Result<ScsiResult, IscsiError>) + Send + 'static) -> Completion {
        Completion(Box::new(f))
    }

    /// Runs it.
    pub fn call(self, r: Result<ScsiResult, IscsiError>) {
        (self.0)(r)
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Completion")
    }
}

/// Why the reader refused a PDU for this task (the connection is then
/// dropped and the command sent again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

/// The session's record of one command.
#[derive(Debug)]
pub struct Task {
    /// Issue order; commands are re-sent in this order after a reconnect.
    pub seq: u64,
    /// What to send.
    pub req: Request,
    /// The connection generation the command went out on, if sent.
    pub sent_on: Option<u64>,
    /// The CmdSN it went out with (meaningful once sent).
    pub cmd_sn: u32,
    /// Data-In received so far (filled in order; grown to the offset of a
    /// PDU that arrives out of order).
    data_in: Vec<u8>,
    /// For a started command: Data-In buffers that followed `data_in` in
    /// order, kept as they came rather than copied onto it.
    data_more: Vec<Vec<u8>>,
    /// Bytes in `data_in` and `data_more` together.
    data_len: usize,
    /// Bytes written into the request's sink.
    placed: usize,
    /// R2Ts the caller's thread has not served yet.
    pub transfers: VecDeque<Transfer>,
    /// The end of the command, once known.
    pub outcome: Option<ScsiResult>,
    /// Wakes the caller waiting on this task.
    pub wake: Arc<Condvar>,
    /// For a command nobody waits on: what to run when it ends, and when
    /// it times out. Its R2Ts are then served by the sender thread.
    pub done: Option<(Completion, Instant)>,
}

impl Task {
    /// A task not yet sent.
    pub fn new(seq: u64, req: Request) -> Task {
        let data_in = Vec::new();
        Task {
            seq,
            req,
            sent_on: None,
            cmd_sn: 0,
            data_in,
            data_more: Vec::new(),
            data_len: 0,
            placed: 0,
            transfers: VecDeque::new(),
            outcome: None,
            wake: Arc::new(Condvar::new()),
            done: None,
        }
    }

    /// Forgets everything a lost connection delivered, ready to send again.
    pub fn reset(&mut self) {
        self.sent_on = None;
        self.data_in = Vec::new();
        self.data_more = Vec::new();
        self.data_len = 0;
        self.placed = 0;
        self.transfers.clear();
        self.outcome = None;
    }

    /// Places one Data-In PDU's bytes; completes the task when it carries status.
    pub fn data_in(&mut self, h: &DataIn, data: Vec<u8>) -> Result<(), Violation> {
        let want = self.req.read_len as usize;
        let off = h.buffer_offset as usize;
        let end = self.within(h, data.len())?;
        if off == 0 && self.data_len == 0 {
            // The first (often the only) PDU: keep its buffer, no copy.
            self.data_len = data.len();
            self.data_in = data;
        } else if off == self.data_len && self.done.is_some() {
            // In order, for a started command: kept as it came.
            self.data_len += data.len();
            self.data_more.push(data);
        } else if off == self.data_len && self.data_more.is_empty() {
            if self.data_in.capacity() < want {
                self.data_in.reserve_exact(want - self.data_in.len());
            }
            self.data_in.extend_from_slice(&data);
        } else {
            // Out of order: one buffer from here on.
            for more in std::mem::take(&mut self.data_more) {
                self.data_in.extend_from_slice(&more);
            }
            if self.data_in.len() < end {
                self.data_in.resize(end, 0);
            }
            self.data_in[off..end].copy_from_slice(&data);
        }
        self.data_len = self.data_len.max(end);
        self.end_if_status(h);
        Ok(())
    }

    /// Counts `n` Data-In bytes the reader wrote straight into the
    /// request's sink; completes the task when the PDU carries status.
    pub fn data_in_placed(&mut self, h: &DataIn, n: usize) -> Result<(), Violation> {
        self.within(h, n)?;
        self.placed += n;
        self.end_if_status(h);
        Ok(())
    }

    /// The end of a Data-In of `n` bytes, if it lies within the read.
    fn within(&self, h: &DataIn, n: usize) -> Result<usize, Violation> {
        let off = h.buffer_offset as usize;
        off.checked_add(n)
            .filter(|e| *e <= self.req.read_len as usize)
            .ok_or_else(|| {
                Violation(format!(
                    "Data-In {off}+{n} beyond the {} bytes asked for",
                    self.req.read_len
                ))
            })
    }

    /// Completes the task if the Data-In carries status.
    fn end_if_status(&mut self, h: &DataIn) {
        if h.has_status {
            let residual = if h.underflow { h.residual } else { 0 };
            self.finish(h.status, Vec::new(), residual);
        }
    }

    /// Completes the task from a SCSI Response.
    pub fn response(&mut self, h: &ScsiResponse, data: &[u8]) -> Result<(), Violation> {
        if h.response != 0 {
            return Err(Violation(format!(
                "target reported iSCSI response {:#04x} (target failure)",
                h.response
            )));
        }
        let sense = match data.get(..2) {
            Some(l) => {
                let n = usize::from(u16::from_be_bytes([l[0], l[1]]));
                data.get(2..2 + n).unwrap_or(&data[2..]).to_vec()
            }
            None => Vec::new(),
        };
        let residual = if h.underflow { h.residual } else { 0 };
        self.finish(h.status, sense, residual);
        Ok(())
    }

    /// Queues an R2T for the caller's thread.
    pub fn r2t(&mut self, h: &R2t, generation: u64) -> Result<(), Violation> {
        let end = u64::from(h.buffer_offset) + u64::from(h.desired_len);
        if end > self.req.data.len() as u64 || h.desired_len == 0 {
            return Err(Violation(format!(
                "R2T for {}+{} beyond the {} bytes of the write",
                h.buffer_offset,
                h.desired_len,
                self.req.data.len()
            )));
        }
        self.transfers.push_back(Transfer {
            ttt: h.ttt,
            offset: h.buffer_offset,
            len: h.desired_len,
            generation,
        });
        Ok(())
    }

    fn finish(&mut self, status: u8, sense: Vec<u8>, residual: u32) {
        let mut data = std::mem::take(&mut self.data_in);
        let mut rest = std::mem::take(&mut self.data_more);
        // What the target did not send of the expected length reads as zeros.
        let keep = (self.req.read_len as usize).saturating_sub(residual as usize);
        if self.placed > 0 {
            // In the sink; a short read shows as `placed` below `read_len`.
        } else if self.data_len != keep {
            // Short or trimmed: one buffer, cut or padded to length.
            for more in rest.drain(..) {
                data.extend_from_slice(&more);
            }
            data.resize(keep, 0);
        }
        self.data_len = 0;
        self.outcome = Some(ScsiResult {
            status,
            sense,
            data,
            data_rest: rest,
            placed: std::mem::take(&mut self.placed),
        });
    }
}

/// `a < b` in 32-bit serial number arithmetic (RFC 1982).
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in serial number arithmetic.
pub fn sn_le(a: u32, b: u32) -> bool {
    a == b || sn_lt(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_task(len: u32) -> Task {
        Task::new(
            1,
            Request {
                lun: 0,
                cdb: vec![0x88],
                data: Bytes::new(),
                read_len: len,
                sink: None,
            },
        )
    }

    #[test]
    fn data_in_in_pieces_then_status() {
        let mut t = read_task(8);
        let mut h = DataIn {
            buffer_offset: 4,
            ..Default::default()
        };
        t.data_in(&h, vec![5, 6, 7, 8]).unwrap();
        assert!(t.outcome.is_none());
        h.buffer_offset = 0;
        h.has_status = true;
        t.data_in(&h, vec![1, 2, 3, 4]).unwrap();
        let r = t.outcome.clone().unwrap();
        assert_eq!(r.data, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r.status, GOOD);
    }

    #[test]
    fn a_started_command_keeps_its_data_in_buffers_as_they_came() {
        let mut t = read_task(12);
        t.done = Some((Completion::new(|_| {}), std::time::Instant::now()));
        let mut h = DataIn::default();
        t.data_in(&h, vec![1, 2, 3, 4]).unwrap();
        h.buffer_offset = 4;
        t.data_in(&h, vec![5, 6, 7, 8]).unwrap();
        h.buffer_offset = 8;
        h.has_status = true;
        t.data_in(&h, vec![9, 10, 11, 12]).unwrap();
        let r = t.outcome.take().unwrap();
        assert_eq!(r.data, vec![1, 2, 3, 4]);
        assert_eq!(r.data_rest, vec![vec![5, 6, 7, 8], vec![9, 10, 11, 12]]);
        assert_eq!(r.into_buffers().concat(), (1..=12).collect::<Vec<u8>>());
        // Out of order, then short: joined into one buffer, padded.
        let mut t = read_task(12);
        t.done = Some((Completion::new(|_| {}), std::time::Instant::now()));
        let mut h = DataIn::default();
        t.data_in(&h, vec![1, 2, 3, 4]).unwrap();
        h.buffer_offset = 4;
        t.data_in(&h, vec![5, 6]).unwrap();
        h.buffer_offset = 0;
        t.data_in(&h, vec![7]).unwrap();
        h.buffer_offset = 6;
        h.has_status = true;
        t.data_in(&h, vec![8]).unwrap();
        let r = t.outcome.take().unwrap();
        assert_eq!(r.data, vec![7, 2, 3, 4, 5, 6, 8, 0, 0, 0, 0, 0]);
        assert!(r.data_rest.is_empty());
    }

    #[test]
    fn data_in_beyond_the_buffer_is_a_violation() {
        let mut t = read_task(4);
        let h = DataIn {
            buffer_offset: 2,
            ..Default::default()
        };
        assert!(t.data_in(&h, vec![0; 4]).is_err());
    }

    #[test]
    fn residual_shortens_and_sense_is_parsed() {
        let mut t = read_task(8);
        let h = ScsiResponse {
            status: CHECK_CONDITION,
            underflow: true,
            residual: 8,
            ..Default::default()
        };
        let mut sense = vec![0, 18, 0x70, 0, 0x05];
        sense.resize(20, 0);
        sense[2 + 12] = 0x25;
        t.response(&h, &sense).unwrap();
        let r = t.outcome.clone().unwrap();
        assert!(r.data.is_empty());
        assert_eq!(r.sense_code(), Some((5, 0x25, 0)));
        // Reset makes it sendable again, buffer intact in size.
        t.reset();
        assert!(t.outcome.is_none());
    }

    #[test]
    fn placed_data_in_is_counted_not_kept() {
        let mut t = read_task(8192);
        let h = DataIn {
            buffer_offset: 4096,
            ..Default::default()
        };
        t.data_in_placed(&h, 4096).unwrap();
        let last = DataIn {
            has_status: true,
            ..Default::default()
        };
        t.data_in_placed(&last, 4096).unwrap();
        let r = t.outcome.take().unwrap();
        assert_eq!((r.placed, r.data.len(), r.data_rest.len()), (8192, 0, 0));
        let past = DataIn {
            buffer_offset: 8000,
            ..Default::default()
        };
        assert!(t.data_in_placed(&past, 4096).is_err());
    }

    #[test]
    fn r2t_must_stay_inside_the_write() {
        let mut t = Task::new(
            1,
            Request {
                lun: 0,
                cdb: vec![0x8a],
                data: Bytes::from(vec![0u8; 4096]),
                read_len: 0,
                sink: None,
            },
        );
        let mut h = R2t {
            buffer_offset: 0,
            desired_len: 4096,
            ..Default::default()
        };
        t.r2t(&h, 3).unwrap();
        assert_eq!(t.transfers.front().map(|x| x.generation), Some(3));
        h.buffer_offset = 1;
        assert!(t.r2t(&h, 3).is_err());
    }

    #[test]
    fn serial_numbers_wrap() {
        assert!(sn_lt(1, 2));
        assert!(sn_lt(u32::MAX, 0));
        assert!(!sn_lt(0, u32::MAX));
        assert!(sn_le(5, 5));
        assert!(!sn_le(6, 5));
    }
}
