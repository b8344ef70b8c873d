//! One disk as a vhost-user-blk device: QEMU hands over the guest's memory
//! and the virtqueues, and requests are served straight from and into
//! guest memory (no socket in the data path).
//!
//! Where a request runs: reads and writes of a local image inline on the
//! queue's thread (page-cache copies, like the NBD reader does them);
//! flushes, discards and write-zeroes, which wait on the disk, on a small
//! pool; reads and writes of a backend that starts requests (an iSCSI LUN)
//! are started and completed by the backend's own thread.

use super::config::BlkConfig;
use super::layout::{self, carve, kind, status, Header, Layout, Segment, HEADER_LEN};
use super::pool::{Inflight, Pool};
use crate::backend::{BackendError, BlockBackend, Ended, Op};
use crate::stats::{DiskCounters, OpKind};
use ferry_iscsi::initiator::Sink;
use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::bitmap::BitmapMmapRegion;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::QueueOwnedT;
use vm_memory::bitmap::Bitmap;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

/// Guest memory with a dirty log QEMU can read during live migration.
pub type Mem = GuestMemoryMmap<BitmapMmapRegion>;
/// The guest memory as the vhost-user library hands it over.
pub type Gm = GuestMemoryAtomic<Mem>;
/// One virtqueue.
pub type Vring = VringRwLock<Gm>;

/// Descriptors per queue at most (QEMU's default is 128).
pub const MAX_QUEUE_SIZE: usize = 256;

/// A disk served as a vhost-user-blk device. Cheap to clone: the vhost-user
/// library keeps clones on its threads.
#[derive(Clone)]
pub struct BlkDevice(Arc<Inner>);

struct Inner {
    backend: Arc<dyn BlockBackend>,
    counters: Arc<DiskCounters>,
    config: BlkConfig,
    /// GET_ID's answer, at most 20 bytes.
    serial: Vec<u8>,
    mem: Mutex<Option<Gm>>,
    event_idx: AtomicBool,
    pool: Pool,
    inflight: Arc<Inflight>,
}

impl BlkDevice {
    /// A device for `backend`, counting into `counters`, answering GET_ID
    /// with `serial`, with `queues` virtqueues.
    pub fn new(
        backend: Arc<dyn BlockBackend>,
        counters: Arc<DiskCounters>,
        serial: &str,
        queues: u16,
    ) -> Self {
        let config = BlkConfig {
            size: backend.size(),
            block_size: backend.block_size(),
            queues: queues.max(1),
            seg_max: MAX_QUEUE_SIZE as u32 - 2,
            read_only: backend.read_only(),
        };
        let serial = serial.as_bytes()[..serial.len().min(20)].to_vec();
        let workers = backend.workers();
        BlkDevice(Arc::new(Inner {
            backend,
            counters,
            config,
            serial,
            mem: Mutex::new(None),
            event_idx: AtomicBool::new(false),
            pool: Pool::new("vhost-blk-io", workers),
            inflight: Arc::new(Inflight::default()),
        }))
    }

    /// Tells queue `index` of this device from every queue of every
    /// device in the process, without the queue's lock (which the queue's
    /// thread holds while it takes requests).
    fn queue_key(&self, index: u16) -> usize {
        // The device's state is far larger than any queue count.
        (Arc::as_ptr(&self.0) as usize).wrapping_add(usize::from(index))
    }

    /// Serves what the queue holds until it is empty (with notifications
    /// suppressed meanwhile when EVENT_IDX was negotiated).
    fn serve_queue(&self, queue: u16, vring: &Vring) -> std::io::Result<()> {
        let gm = self
            .0
            .mem
            .lock()
            .map_err(|_| std::io::Error::other("memory lock poisoned"))?
            .clone()
            .ok_or_else(|| std::io::Error::other("kick before the guest memory was set"))?;
        let event_idx = self.0.event_idx.load(Ordering::Relaxed);
        loop {
            if event_idx {
                vring
                    .disable_notification()
                    .map_err(std::io::Error::other)?;
            }
            self.serve_available(queue, vring, &gm)?;
            if !event_idx || !vring.enable_notification().map_err(std::io::Error::other)? {
                return Ok(());
            }
        }
    }

    fn serve_available(&self, queue: u16, vring: &Vring, gm: &Gm) -> std::io::Result<()> {
        // Counted from before the ring is read until the requests served
        // here are returned, so `stop_vring` waits for them as it does for
        // those answered on other threads.
        let _serving = self.0.inflight.enter();
        let chains: Vec<_> = {
            let mut state = vring.get_mut();
            state
                .get_queue_mut()
                .iter(gm.memory())
                .map_err(std::io::Error::other)?
                .collect()
        };
        let mem = gm.memory();
        let key = self.queue_key(queue);
        let mut finished = Vec::new();
        let count = chains.len();
        for (i, chain) in chains.into_iter().enumerate() {
            let head = chain.head_index();
            let segs: Vec<Segment> = chain
                .map(|d| Segment {
                    addr: d.addr().0,
                    len: d.len(),
                    writable: d.is_write_only(),
                })
                .collect();
            let slot = Slot {
                head,
                key,
                vring,
                gm,
            };
            let hold = i + 1 < count;
            if let Some(used) = self.dispatch(&mem, &segs, slot, hold) {
                finished.push((head, used));
            }
        }
        if count > 0 {
            self.0.backend.send_held();
        }
        for (head, used) in &finished {
            vring
                .add_used(*head, *used)
                .map_err(std::io::Error::other)?;
        }
        if !finished.is_empty() {
            signal(key, vring);
        }
        Ok(())
    }

    /// Runs or starts one request. `Some(used bytes)` when it is done now;
    /// `None` when another thread ends it.
    fn dispatch(&self, mem: &Mem, segs: &[Segment], slot: Slot<'_>, hold: bool) -> Option<u32> {
        let layout = match carve(segs) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("malformed virtio-blk request: {e}");
                // No status byte to write to: hand the chain back empty.
                return Some(0);
            }
        };
        let header = match read_header(mem, &layout) {
            Some(h) => h,
            None => return Some(finish_now(mem, &layout, status::IOERR, 0)),
        };
        let inner = &self.0;
        if layout.data_len() > inner.config.max_request() {
            // Beyond what the device offered: never allocated for or read.
            tracing::warn!(
                "virtio-blk request of {} bytes exceeds the device's {} byte limit",
                layout.data_len(),
                inner.config.max_request()
            );
            return Some(finish_now(mem, &layout, status::IOERR, 0));
        }
        let remote_io = inner.backend.starts() && matches!(header.kind, kind::IN | kind::OUT);
        let inline =
            !inner.backend.remote() && matches!(header.kind, kind::IN | kind::OUT | kind::GET_ID);
        if remote_io && self.start(mem, &layout, header, slot, hold) {
            return None;
        }
        if inline {
            let (st, used) = self.run(mem, &layout, header);
            return Some(finish_now(mem, &layout, st, used));
        }
        // What waits on the disk or the network (and a LUN request that
        // could not be started) runs off the queue's thread.
        let (this, req, guard) = (self.clone(), slot.owned(), inner.inflight.enter());
        inner.pool.run(Box::new(move || {
            let mem = req.gm.memory();
            let (st, used) = this.run(&mem, &layout, header);
            req.complete(&mem, &layout, st, used);
            drop(guard);
        }));
        None
    }

    /// Starts a read or write on the backend; false if it cannot be
    /// started (the caller runs it itself).
    fn start(
        &self,
        mem: &Mem,
        layout: &Layout,
        header: Header,
        slot: Slot<'_>,
        hold: bool,
    ) -> bool {
        let inner = &self.0;
        let (offset, len) = (header.sector.saturating_mul(512), layout.data_len());
        let write = header.kind == kind::OUT;
        if !layout.data_all(!write) || inner.backend.check_range(offset, len, write).is_err() {
            return false;
        }
        let mut sink = None;
        let mut dirty: Vec<(BitmapMmapRegion, usize)> = Vec::new();
        let op = if write {
            let Some(data) = write_payload(mem, slot.gm, &layout.data) else {
                return false;
            };
            Op::Write {
                offset,
                data,
                fua: false,
            }
        } else {
            // The Data-In goes from the socket into guest memory directly.
            let Ok(slices) = host_slices(mem, &layout.data) else {
                return false;
            };
            let pieces = slices
                .iter()
                .map(|s| (s.ptr_guard_mut().as_ptr(), s.len()))
                .collect();
            // Written behind vm-memory's back: logged for migration at the end.
            dirty = slices
                .iter()
                .map(|s| (s.bitmap().clone(), s.len()))
                .collect();
            let keep: Arc<dyn Send + Sync> = slot.gm.memory().into_inner();
            // SAFETY: the pieces are guest memory that `keep` keeps mapped;
            // the guest gets this request's buffers back only after the
            // completion below has closed the sink.
            let s = unsafe { Sink::new(pieces, keep) };
            sink = Some(s.clone());
            Op::ReadInto { offset, sink: s }
        };
        let op_kind = if write {
            OpKind::Write(len)
        } else {
            OpKind::Read(len)
        };
        let started = inner.counters.begin();
        let (this, req, layout, guard) = (
            self.clone(),
            slot.owned(),
            layout.clone(),
            inner.inflight.enter(),
        );
        inner.backend.start(
            op,
            hold,
            Box::new(move |ended| {
                if let Some(sink) = &sink {
                    sink.close();
                }
                let mem = req.gm.memory();
                let counters = &this.0.counters;
                let (st, used) = match ended {
                    // A read's data is in the sink, not in `Ended::Read`.
                    Ended::Read(_) => {
                        for (bitmap, n) in &dirty {
                            bitmap.mark_dirty(0, *n);
                        }
                        counters.end(started, op_kind, true);
                        (status::OK, len as u32)
                    }
                    Ended::Written => {
                        counters.end(started, op_kind, true);
                        (status::OK, 0)
                    }
                    Ended::Failed(e) => {
                        tracing::warn!("{} at {offset}: {e}", this.0.backend.identity());
                        counters.end(started, op_kind, false);
                        (status::IOERR, 0)
                    }
                    Ended::Again => {
                        // Off the backend's thread: it carries other answers.
                        counters.handed_on();
                        let again = this.clone();
                        this.0.pool.run(Box::new(move || {
                            let mem = req.gm.memory();
                            let (st, used) = again.run(&mem, &layout, header);
                            req.complete(&mem, &layout, st, used);
                            drop(guard);
                        }));
                        return;
                    }
                };
                req.complete(&mem, &layout, st, used);
                drop(guard);
            }),
        );
        true
    }

    /// Runs a request to its end on this thread: (status, data bytes written
    /// into guest memory).
    fn run(&self, mem: &Mem, layout: &Layout, header: Header) -> (u8, u32) {
        let inner = &self.0;
        let (b, c) = (&inner.backend, &inner.counters);
        let offset = header.sector.saturating_mul(512);
        let len = layout.data_len();
        let report = |op: OpKind, r: Result<(), BackendError>, started| match r {
            Ok(()) => {
                c.end(started, op, true);
                status::OK
            }
            Err(e) => {
                tracing::warn!("{}: request at {offset} failed: {e}", b.identity());
                c.end(started, op, false);
                status::IOERR
            }
        };
        match header.kind {
            kind::IN if layout.data_all(true) => {
                let started = c.begin();
                let r = read_into_guest(&**b, mem, &layout.data, offset);
                let st = report(OpKind::Read(len), r, started);
                (st, if st == status::OK { len as u32 } else { 0 })
            }
            kind::OUT if layout.data_all(false) => {
                let started = c.begin();
                let r = write_from_guest(&**b, mem, &layout.data, offset);
                (report(OpKind::Write(len), r, started), 0)
            }
            kind::FLUSH => {
                let started = c.begin();
                (report(OpKind::Flush, b.flush(), started), 0)
            }
            kind::GET_ID if layout.data_all(true) => {
                let mut id = [0u8; 20];
                id[..inner.serial.len()].copy_from_slice(&inner.serial);
                let n = (len as usize).min(20);
                match scatter(mem, &layout.data, &[id[..n].to_vec()]) {
                    Ok(()) => (status::OK, n as u32),
                    Err(()) => (status::IOERR, 0),
                }
            }
            kind::DISCARD | kind::WRITE_ZEROES if layout.data_all(false) && len <= 4096 => {
                let started = c.begin();
                let mut raw = vec![0u8; len as usize];
                let r = match gather(mem, &layout.data, &mut raw)
                    .ok()
                    .and_then(|()| layout::ranges(&raw).ok())
                {
                    None => Err(BackendError::OutOfRange {
                        offset,
                        len,
                        size: b.size(),
                    }),
                    Some(ranges) => ranges.iter().try_for_each(|r| {
                        let (at, n) = (r.sector.saturating_mul(512), u64::from(r.sectors) * 512);
                        if header.kind == kind::DISCARD {
                            b.discard(at, n)
                        } else {
                            b.write_zeroes(at, n, false)
                        }
                    }),
                };
                let op = if header.kind == kind::DISCARD {
                    OpKind::Discard
                } else {
                    OpKind::Write(0)
                };
                (report(op, r, started), 0)
            }
            kind::IN | kind::OUT | kind::GET_ID | kind::DISCARD | kind::WRITE_ZEROES => {
                tracing::warn!(
                    "virtio-blk request type {} with misdirected data",
                    header.kind
                );
                (status::IOERR, 0)
            }
            _ => (status::UNSUPP, 0),
        }
    }
}

/// Where a request came from, borrowed while its queue is served.
#[derive(Clone, Copy)]
struct Slot<'a> {
    head: u16,
    /// Its queue, told apart from every other (see [`signal`]).
    key: usize,
    vring: &'a Vring,
    gm: &'a Gm,
}

impl Slot<'_> {
    /// What another thread needs to answer the request.
    fn owned(self) -> Req {
        Req {
            head: self.head,
            key: self.key,
            vring: self.vring.clone(),
            gm: self.gm.clone(),
        }
    }
}

/// What a request needs to be answered from another thread.
struct Req {
    head: u16,
    key: usize,
    vring: Vring,
    gm: Gm,
}

impl Req {
    /// Writes the status, returns the chain to the driver, and interrupts
    /// it if it asked to be.
    fn complete(&self, mem: &Mem, layout: &Layout, st: u8, data_used: u32) {
        let used = finish_now(mem, layout, st, data_used);
        if let Err(e) = self.vring.add_used(self.head, used) {
            tracing::warn!("cannot return a virtio-blk request: {e}");
            return;
        }
        signal(self.key, &self.vring);
    }
}

/// Writes the status byte; the bytes written into the chain.
fn finish_now(mem: &Mem, layout: &Layout, st: u8, data_used: u32) -> u32 {
    if let Err(e) = mem.write_obj(st, GuestAddress(layout.status)) {
        tracing::warn!("cannot write a virtio-blk status: {e}");
    }
    data_used + 1
}

thread_local! {
    /// Queues whose guest is owed an interrupt, on a thread that defers
    /// them (`None` until it joins: see [`signal_deferred`]).
    /// Each with its key (see [`BlkDevice::queue_key`]).
    static OWED: std::cell::RefCell<Option<Vec<(usize, Vring)>>> = const { std::cell::RefCell::new(None) };
}

/// Interrupts the guest for `vring` if it asked to be; on a thread that
/// defers interrupts, once for all the requests it ends before it next
/// waits (see [`signal_deferred`]). `key` tells `vring` from the others.
fn signal(key: usize, vring: &Vring) {
    let deferred = OWED.with(|o| {
        let mut o = o.borrow_mut();
        let Some(owed) = o.as_mut() else {
            return false;
        };
        if !owed.iter().any(|(k, _)| *k == key) {
            owed.push((key, vring.clone()));
        }
        true
    });
    if !deferred {
        interrupt(vring);
    }
}

/// Sends the interrupts this thread deferred, and from now on defers the
/// ones it owes. The iSCSI initiator's reader calls it each time it is
/// about to wait for the target: the requests ended by one read of the
/// socket then cost the guest one interrupt (and QEMU one wake-up), as
/// QEMU's own driver batches its notifications.
pub fn signal_deferred() {
    let owed = OWED.with(|o| o.borrow_mut().replace(Vec::new()).unwrap_or_default());
    for (_, vring) in &owed {
        interrupt(vring);
    }
}

fn interrupt(vring: &Vring) {
    match vring.needs_notification() {
        Ok(false) => {}
        Ok(true) | Err(_) => {
            if let Err(e) = vring.signal_used_queue() {
                tracing::debug!("cannot interrupt the guest: {e}");
            }
        }
    }
}

fn read_header(mem: &Mem, layout: &Layout) -> Option<Header> {
    let mut h = [0u8; HEADER_LEN as usize];
    gather(mem, &layout.header, &mut h).ok()?;
    Some(Header::parse(&h))
}

/// Copies guest ranges into `out` (as long as their total).
fn gather(mem: &Mem, segs: &[Segment], out: &mut [u8]) -> Result<(), ()> {
    let mut at = 0usize;
    for s in segs {
        let n = s.len as usize;
        let dst = out.get_mut(at..at + n).ok_or(())?;
        mem.read_slice(dst, GuestAddress(s.addr)).map_err(|_| ())?;
        at += n;
    }
    Ok(())
}

/// A write's data for a backend that sends it later: the guest's memory
/// itself when the ranges are one run of host memory (kept mapped until the
/// last reference is dropped; the guest gets the buffer back only when the
/// write has ended), else a copy.
fn write_payload(mem: &Mem, gm: &Gm, segs: &[Segment]) -> Option<bytes::Bytes> {
    let slices = host_slices(mem, segs).ok()?;
    let mut runs: Vec<(*const u8, usize)> = Vec::with_capacity(slices.len());
    for s in &slices {
        let p: *const u8 = s.ptr_guard().as_ptr();
        match runs.last_mut() {
            Some((start, n)) if start.wrapping_add(*n) == p => *n += s.len(),
            _ => runs.push((p, s.len())),
        }
    }
    if let [(ptr, len)] = runs[..] {
        return Some(bytes::Bytes::from_owner(GuestBytes {
            ptr,
            len,
            _keep: gm.memory().into_inner(),
        }));
    }
    let mut data = Vec::with_capacity(runs.iter().map(|r| r.1).sum());
    for (ptr, len) in runs {
        // SAFETY: a range of mapped guest memory (see `read_into_guest`).
        data.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, len) });
    }
    Some(bytes::Bytes::from(data))
}

/// One run of guest memory lent to a write in flight.
struct GuestBytes {
    ptr: *const u8,
    len: usize,
    /// Keeps the mapping alive.
    _keep: Arc<Mem>,
}

// SAFETY: the pointer is into shared guest memory that `_keep` keeps
// mapped; it is only read, from any thread.
unsafe impl Send for GuestBytes {}
// SAFETY: as above.
unsafe impl Sync for GuestBytes {}

impl AsRef<[u8]> for GuestBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range is mapped while `_keep` lives (see the type).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Copies `parts`, in order, into guest ranges (logging the pages as dirty).
fn scatter(mem: &Mem, segs: &[Segment], parts: &[Vec<u8>]) -> Result<(), ()> {
    let mut segs = segs.iter().map(|s| (s.addr, s.len as usize));
    let mut cur = segs.next();
    for part in parts {
        let mut rest = part.as_slice();
        while !rest.is_empty() {
            let (addr, room) = cur.ok_or(())?;
            let n = room.min(rest.len());
            mem.write_slice(&rest[..n], GuestAddress(addr))
                .map_err(|_| ())?;
            rest = &rest[n..];
            cur = if n == room {
                segs.next()
            } else {
                Some((addr + n as u64, room - n))
            };
        }
    }
    Ok(())
}

/// Guest ranges as host slices, split where guest memory regions end.
fn host_slices<'m>(
    mem: &'m Mem,
    segs: &[Segment],
) -> Result<
    Vec<
        vm_memory::VolatileSlice<
            'm,
            <BitmapMmapRegion as vm_memory::bitmap::WithBitmapSlice<'m>>::S,
        >,
    >,
    BackendError,
> {
    let mut out = Vec::with_capacity(segs.len());
    for s in segs {
        for slice in
            vm_memory::GuestMemoryBackend::get_slices(mem, GuestAddress(s.addr), s.len as usize)
        {
            out.push(slice.map_err(|e| BackendError::Remote {
                disk: "guest memory".into(),
                source: Box::new(e),
            })?);
        }
    }
    Ok(out)
}

/// Reads the disk straight into guest memory.
fn read_into_guest(
    b: &dyn BlockBackend,
    mem: &Mem,
    segs: &[Segment],
    offset: u64,
) -> Result<(), BackendError> {
    let slices = host_slices(mem, segs)?;
    let mut iov: Vec<IoSliceMut> = slices
        .iter()
        .map(|s| {
            // SAFETY: the slice points into guest memory mapped for as long
            // as `mem` is borrowed; the guest may touch it meanwhile, as it
            // may during any DMA, which is the guest's own affair.
            IoSliceMut::new(unsafe {
                std::slice::from_raw_parts_mut(s.ptr_guard_mut().as_ptr(), s.len())
            })
        })
        .collect();
    b.read_vectored_at(&mut iov, offset)?;
    for s in &slices {
        s.bitmap().mark_dirty(0, s.len());
    }
    Ok(())
}

/// Writes guest memory straight to the disk.
fn write_from_guest(
    b: &dyn BlockBackend,
    mem: &Mem,
    segs: &[Segment],
    offset: u64,
) -> Result<(), BackendError> {
    let slices = host_slices(mem, segs)?;
    let iov: Vec<IoSlice> = slices
        .iter()
        .map(|s| {
            // SAFETY: as in `read_into_guest`; only read here.
            IoSlice::new(unsafe { std::slice::from_raw_parts(s.ptr_guard().as_ptr(), s.len()) })
        })
        .collect();
    b.write_vectored_at(&iov, offset, false)
}

impl VhostUserBackend for BlkDevice {
    type Bitmap = BitmapMmapRegion;
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        usize::from(self.0.config.queues)
    }
    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }
    fn features(&self) -> u64 {
        self.0.config.features()
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::LOG_SHMFD
            | VhostUserProtocolFeatures::REPLY_ACK
    }
    fn acked_features(&self, features: u64) {
        // Once per connection: tells from the log how far a front end got
        // (a reconnect that never reaches the queues stops here).
        tracing::info!("front end acked features {features:#x}");
    }
    fn set_event_idx(&self, enabled: bool) {
        self.0.event_idx.store(enabled, Ordering::Relaxed);
    }
    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let space = self.0.config.space();
        let start = (offset as usize).min(space.len());
        let end = start.saturating_add(size as usize).min(space.len());
        space[start..end].to_vec()
    }
    fn update_memory(&self, mem: Gm) -> std::io::Result<()> {
        tracing::info!("guest memory table set");
        *self
            .0
            .mem
            .lock()
            .map_err(|_| std::io::Error::other("memory lock poisoned"))? = Some(mem);
        Ok(())
    }
    fn stop_vring(&self, _queue_index: u32) -> std::io::Result<()> {
        // QEMU stops the rings before a migration's switchover: every
        // request taken from them is answered first.
        self.0.inflight.wait_none();
        Ok(())
    }
    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        if evset != EventSet::IN {
            return Err(std::io::Error::other(format!(
                "unexpected queue event {evset:?}"
            )));
        }
        let vring = vrings
            .get(usize::from(device_event))
            .ok_or_else(|| std::io::Error::other(format!("no queue {device_event}")))?;
        // An error returned here ends the queues' thread for good, and the
        // guest's requests then hang with nothing logged: say what went
        // wrong and wait for the next kick instead.
        if let Err(e) = self.serve_queue(device_event, vring) {
            tracing::warn!(queue = device_event, "virtio-blk queue not served: {e}");
        }
        Ok(())
    }
}
