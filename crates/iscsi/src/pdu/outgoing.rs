//! PDUs encoded for sending without copying their data: headers, padding
//! and digests go into one buffer of [`Frames`]' own, each data segment
//! stays in the shared buffer it came in (a write's data, a read's
//! buffer), and the socket gets both by vectored writes. The initiator's
//! commands and Data-Out and the target's Data-In are queued this way.

use super::bhs::Header;
use super::frame::{encode_head, encode_tail};
use super::{Digests, Pdu};
use bytes::Bytes;
use std::io::IoSlice;
use std::ops::Range;

/// One piece of the byte stream to send.
enum Part {
    /// Bytes of [`Frames::own`].
    Own(Range<usize>),
    /// A data segment, borrowed from a shared buffer.
    Data(Bytes, Range<usize>),
}

/// Encoded frames waiting to be written, in wire order.
#[derive(Default)]
pub(crate) struct Frames {
    /// Headers, header digests, padding and data digests.
    own: Vec<u8>,
    parts: Vec<Part>,
    /// Bytes queued in all.
    len: usize,
}

/// Largest header buffer kept between sends.
const OWN_KEEP: usize = 1 << 20;

impl Frames {
    /// True when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Forgets what was queued (dropping the borrowed buffers), keeping
    /// the allocations for the next batch.
    pub(crate) fn clear(&mut self) {
        self.own.clear();
        self.parts.clear();
        self.len = 0;
        if self.own.capacity() > OWN_KEEP {
            self.own = Vec::new();
        }
    }

    /// Queues the own bytes appended from `start` on.
    fn own_since(&mut self, start: usize) {
        let end = self.own.len();
        if end == start {
            return;
        }
        self.len += end - start;
        // Consecutive own bytes (a data-less PDU after another) share one
        // slice, keeping the vectored write short.
        if let Some(Part::Own(r)) = self.parts.last_mut() {
            if r.end == start {
                r.end = end;
                return;
            }
        }
        self.parts.push(Part::Own(start..end));
    }

    /// Queues a whole PDU, data copied with its header (for small ones).
    pub(crate) fn push_pdu(&mut self, pdu: &Pdu, digests: Digests) {
        let start = self.own.len();
        pdu.encode_into(digests, &mut self.own);
        self.own_since(start);
    }

    /// Queues one PDU (no AHS) whose data segment is `data[range]`,
    /// borrowed rather than copied.
    pub(crate) fn push(
        &mut self,
        digests: Digests,
        header: &Header,
        data: &Bytes,
        range: Range<usize>,
    ) {
        let range = range.start..range.start + range.len().min(0xff_ffff);
        let segment = &data[range.clone()];
        let start = self.own.len();
        encode_head(header, &[], segment.len(), digests, &mut self.own);
        self.own_since(start);
        if !segment.is_empty() {
            let tail = encode_tail(segment, digests);
            self.len += segment.len();
            self.parts.push(Part::Data(data.clone(), range));
            let start = self.own.len();
            self.own.extend_from_slice(tail.as_bytes());
            self.own_since(start);
        }
    }

    /// The queued bytes as slices for a vectored write.
    pub(crate) fn slices(&self) -> Vec<IoSlice<'_>> {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Own(r) => IoSlice::new(&self.own[r.clone()]),
                Part::Data(buf, r) => IoSlice::new(&buf[r.clone()]),
            })
            .collect()
    }

    /// The queued bytes in one buffer (tests compare them with the codec).
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.slices()
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect()
    }
}
