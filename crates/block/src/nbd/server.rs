//! The NBD server side: negotiation, then concurrent request handling.
//!
//! Each connection gets a reader thread that decodes requests and a few
//! worker threads that run them against the backend and write each reply,
//! whole, under a lock. Backends that start requests without waiting (an
//! iSCSI LUN) get their reads and writes straight from the reader thread,
//! and the backend's own thread that learns of the end sends the reply.
//! Plain threads, not an async runtime: the work is
//! blocking file I/O, and every hop between threads costs CPU the guest's
//! vCPUs (emulated, under TCG) need. On `DISC` or end of stream every request
//! already read is completed before the connection closes, so no
//! acknowledged write is lost and none is applied after the client left.

use super::proto::{self, cmd, errno, opt, rep, tflag, ProtoError, Request};
use crate::backend::{BackendError, BlockBackend, Ended, Op};
use crate::stats::{DiskCounters, OpKind};
use bytes::Bytes;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc, Condvar, Mutex};

/// Worker threads per connection: how many requests run at once.
pub const WORKERS: usize = 4;
/// Requests read ahead of the workers before the reader waits.
pub const QUEUE_DEPTH: usize = 64;
/// Preferred block size advertised to clients (raised to the minimum
/// when a disk's blocks are larger).
const PREFERRED_BLOCK: u32 = 4096;
/// Minimum block size advertised when the backend's own block size cannot
/// be (NBD wants a power of two of at most 64 KiB).
const DEFAULT_MIN_BLOCK: u32 = 512;
/// Requests at least this large move between socket and backend inside the
/// kernel (splice, sendfile) when the backend can.
const SPLICE_MIN: usize = 64 * 1024;
/// The reader's buffer: room for many pipelined small requests at once.
const READ_BUFFER: usize = 256 * 1024;
/// Batched replies are sent once they reach this size.
const REPLY_BATCH: usize = 64 * 1024;
/// Socket buffer size asked for, so a 1 MiB request moves in few syscalls.
const SOCKET_BUFFER: usize = 4 << 20;

/// One disk the service offers (over NBD, or as a vhost-user-blk device).
#[derive(Clone)]
pub struct Export {
    /// Export name clients ask for.
    pub name: String,
    /// The storage.
    pub backend: Arc<dyn BlockBackend>,
    /// Its counters.
    pub counters: Arc<DiskCounters>,
}

impl Export {
    /// `NBD_INFO_BLOCK_SIZE` for this disk: its own block size as the
    /// minimum, so QEMU aligns every request to whole LUN blocks itself
    /// rather than leaving the backend a read-modify-write per unaligned
    /// request.
    fn block_sizes(&self) -> (u32, u32, u32) {
        let bs = self.backend.block_size();
        let min = if bs.is_power_of_two() && bs <= 64 * 1024 {
            bs
        } else {
            DEFAULT_MIN_BLOCK
        };
        (min, PREFERRED_BLOCK.max(min), proto::MAX_REQUEST_BYTES)
    }

    fn flags(&self) -> u16 {
        let mut f = tflag::HAS_FLAGS | tflag::SEND_FLUSH | tflag::SEND_FUA | tflag::CAN_MULTI_CONN;
        if self.backend.read_only() {
            f |= tflag::READ_ONLY;
        } else {
            f |= tflag::SEND_TRIM | tflag::SEND_WRITE_ZEROES;
        }
        f
    }
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The client broke the protocol.
    #[error("protocol error")]
    Protocol(#[from] ProtoError),
    /// The client asked for an export that does not exist.
    #[error("client asked for unknown export {0:?}")]
    UnknownExport(String),
    /// The socket failed.
    #[error("connection I/O")]
    Io(#[from] std::io::Error),
}

fn set_buffers(stream: &UnixStream) {
    use std::os::fd::AsRawFd;
    let size = SOCKET_BUFFER as libc::c_int;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads `size` for the given length; the fd is open.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Serves one client connection from negotiation to disconnect.
pub fn serve_connection(stream: UnixStream, exports: Arc<Vec<Export>>) -> Result<(), ServerError> {
    set_buffers(&stream);
    let mut rd = stream.try_clone()?;
    let mut wr = stream;
    wr.write_all(&proto::server_greeting())?;
    let mut flags = [0u8; 4];
    rd.read_exact(&mut flags)?;
    let no_zeroes = proto::parse_client_flags(flags)?;
    let index = loop {
        let mut header = [0u8; 16];
        rd.read_exact(&mut header)?;
        let (option, len) = proto::parse_option_header(&header)?;
        let mut data = vec![0u8; len as usize];
        rd.read_exact(&mut data)?;
        match option {
            opt::EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data).into_owned();
                let Some(i) = exports.iter().position(|e| e.name == name) else {
                    return Err(ServerError::UnknownExport(name));
                };
                let e = &exports[i];
                let mut reply = e.backend.size().to_be_bytes().to_vec();
                reply.extend_from_slice(&e.flags().to_be_bytes());
                if !no_zeroes {
                    reply.extend_from_slice(&[0u8; 124]);
                }
                wr.write_all(&reply)?;
                break i;
            }
            opt::ABORT => {
                wr.write_all(&proto::option_reply(option, rep::ACK, &[]))?;
                return Ok(());
            }
            opt::LIST => {
                for e in exports.iter() {
                    let mut d = (e.name.len() as u32).to_be_bytes().to_vec();
                    d.extend_from_slice(e.name.as_bytes());
                    wr.write_all(&proto::option_reply(option, rep::SERVER, &d))?;
                }
                wr.write_all(&proto::option_reply(option, rep::ACK, &[]))?;
            }
            opt::INFO | opt::GO => {
                let (name, _wanted) = match proto::parse_info_request(&data) {
                    Ok(v) => v,
                    Err(e) => {
                        let msg = e.to_string();
                        wr.write_all(&proto::option_reply(
                            option,
                            rep::ERR_INVALID,
                            msg.as_bytes(),
                        ))?;
                        continue;
                    }
                };
                // An empty name means the default export: the first one.
                let found = if name.is_empty() && !exports.is_empty() {
                    Some(0)
                } else {
                    exports.iter().position(|e| e.name == name)
                };
                let Some(i) = found else {
                    let msg = format!("no export named {name:?}");
                    wr.write_all(&proto::option_reply(
                        option,
                        rep::ERR_UNKNOWN,
                        msg.as_bytes(),
                    ))?;
                    continue;
                };
                let e = &exports[i];
                let info = proto::info_export(e.backend.size(), e.flags());
                wr.write_all(&proto::option_reply(option, rep::INFO, &info))?;
                let (min, preferred, max) = e.block_sizes();
                let bs = proto::info_block_size(min, preferred, max);
                wr.write_all(&proto::option_reply(option, rep::INFO, &bs))?;
                wr.write_all(&proto::option_reply(option, rep::ACK, &[]))?;
                if option == opt::GO {
                    break i;
                }
            }
            other => {
                // STARTTLS, STRUCTURED_REPLY, meta contexts, extended headers:
                // refusing them makes clients fall back to simple replies.
                wr.write_all(&proto::option_reply(other, rep::ERR_UNSUP, &[]))?;
            }
        }
    };
    transmission(rd, wr, &exports[index])
}

/// A decoded request waiting for a worker.
struct Job {
    req: Request,
    data: Vec<u8>,
}

/// The reply side of a connection, shared with the threads that complete
/// started requests.
#[derive(Clone)]
struct Link {
    writer: Arc<Mutex<UnixStream>>,
    inflight: Arc<Inflight>,
}

impl Link {
    /// Sends one whole reply made of `parts` (batched on a backend thread
    /// that batches; see [`super::batch`]).
    fn reply(&self, parts: &[&[u8]]) -> std::io::Result<()> {
        super::batch::reply(&self.writer, parts)
    }
}

/// Requests handed to a backend and not answered yet: the connection
/// waits for them before it ends, so no reply is lost and no write of a
/// client that left is still running.
#[derive(Default)]
struct Inflight {
    count: Mutex<usize>,
    none: Condvar,
}

/// One request of [`Inflight`]; dropping it marks the request answered.
struct InflightGuard(Arc<Inflight>);

impl Inflight {
    fn enter(self: &Arc<Self>) -> InflightGuard {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        InflightGuard(self.clone())
    }

    fn wait_none(&self) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = self.none.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut n = self.0.count.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            self.0.none.notify_all();
        }
    }
}

fn transmission(mut rd: UnixStream, wr: UnixStream, export: &Export) -> Result<(), ServerError> {
    let link = Link {
        writer: Arc::new(Mutex::new(wr)),
        inflight: Arc::default(),
    };
    let writer = &*link.writer;
    let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE_DEPTH);
    let rx = Mutex::new(rx);
    std::thread::scope(|scope| {
        for _ in 0..export.backend.workers().clamp(1, QUEUE_DEPTH) {
            scope.spawn(|| {
                let mut reply = Vec::new();
                loop {
                    let job = match rx.lock() {
                        Ok(guard) => match guard.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        },
                        Err(_) => return,
                    };
                    reply.clear();
                    execute(
                        &*export.backend,
                        &export.counters,
                        job.req,
                        &job.data,
                        &mut reply,
                    );
                    let sent = match writer.lock() {
                        Ok(mut w) => w.write_all(&reply),
                        Err(_) => return,
                    };
                    if let Err(e) = sent {
                        tracing::debug!("reply not sent, client gone: {e}");
                    }
                }
            });
        }
        let result = read_requests(&mut rd, &tx, export, &link);
        // Dropping the sender lets the workers finish what was read, then exit.
        drop(tx);
        link.inflight.wait_none();
        result
    })
}

/// Hands a read or write to a backend that starts requests (see
/// [`BlockBackend::starts`]); the thread that learns of its end sends the
/// reply. What the backend hands back unfinished runs again, blocking, on
/// a thread of its own (never on the backend's thread, which other
/// requests' answers wait on).
fn start(
    export: &Export,
    req: Request,
    data: Vec<u8>,
    hold: bool,
    link: &Link,
) -> Result<(), ServerError> {
    let (b, c) = (&export.backend, &export.counters);
    let len = u64::from(req.length);
    let write = req.kind == cmd::WRITE;
    let kind = if write {
        OpKind::Write(len)
    } else {
        OpKind::Read(len)
    };
    let started = c.begin();
    if let Err(e) = b.check_range(req.offset, len, write) {
        c.end(started, kind, false);
        link.reply(&[&proto::simple_reply(error_code(&e), req.handle)])?;
        return Ok(());
    }
    let payload = Bytes::from(data);
    let op = if write {
        Op::Write {
            offset: req.offset,
            data: payload.clone(),
            fua: req.flags & proto::CMD_FLAG_FUA != 0,
        }
    } else {
        Op::Read {
            offset: req.offset,
            len,
        }
    };
    let guard = link.inflight.enter();
    let (backend, counters, link) = (b.clone(), c.clone(), link.clone());
    let handle = req.handle;
    b.start(
        op,
        hold,
        Box::new(move |ended| {
            let head = |code| proto::simple_reply(code, handle);
            let sent = match ended {
                Ended::Read(parts) => {
                    counters.end(started, kind, true);
                    let ok = head(0);
                    let mut all: Vec<&[u8]> = vec![&ok];
                    all.extend(parts.iter().map(Vec::as_slice));
                    link.reply(&all)
                }
                Ended::Written => {
                    counters.end(started, kind, true);
                    link.reply(&[&head(0)])
                }
                Ended::Failed(e) => {
                    counters.end(started, kind, false);
                    link.reply(&[&head(error_code(&e))])
                }
                Ended::Again => {
                    counters.handed_on();
                    return rerun(Rerun {
                        backend,
                        counters,
                        req,
                        payload,
                        link,
                        guard,
                    });
                }
            };
            if let Err(e) = sent {
                tracing::debug!("reply not sent, client gone: {e}");
            }
            drop(guard);
        }),
    );
    Ok(())
}

/// A started request the backend handed back unfinished.
struct Rerun {
    backend: Arc<dyn BlockBackend>,
    counters: Arc<DiskCounters>,
    req: Request,
    payload: Bytes,
    link: Link,
    /// Released once it is answered.
    guard: InflightGuard,
}

/// Runs `r` again through the blocking call on a thread of its own (the
/// backend's thread that handed it back carries other requests' answers).
/// Without a thread, the client hears EIO.
fn rerun(r: Rerun) {
    let (link, handle) = (r.link.clone(), r.req.handle);
    // Held until the error reply below is sent, should the thread (and the
    // request's own guard with it) be gone.
    let _until_replied = link.inflight.enter();
    let spawned = std::thread::Builder::new()
        .name("nbd-rerun".into())
        .spawn(move || {
            let mut out = Vec::new();
            execute(&*r.backend, &r.counters, r.req, &r.payload, &mut out);
            if let Err(e) = r.link.reply(&[&out]) {
                tracing::debug!("reply not sent, client gone: {e}");
            }
            drop(r.guard);
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start a thread to run a request again: {e}");
        if let Err(e) = link.reply(&[&proto::simple_reply(errno::EIO, handle)]) {
            tracing::debug!("reply not sent, client gone: {e}");
        }
    }
}

/// True for requests that can block for long (they reach the disk, or any
/// request on a remote backend, which waits for the network): those go to
/// the workers. Everything else is served by the reader itself, which
/// saves a thread wake-up per request; the page cache answers in microseconds.
fn is_slow(export: &Export, req: &Request) -> bool {
    export.backend.remote()
        || req.kind == cmd::FLUSH
        || req.flags & proto::CMD_FLAG_FUA != 0
        || matches!(req.kind, cmd::TRIM | cmd::WRITE_ZEROES)
}

/// Replies the reader has produced but not yet sent: while more requests
/// are already buffered, their replies go out together in one write.
struct Pending<'a> {
    bytes: Vec<u8>,
    writer: &'a Mutex<UnixStream>,
}

impl Pending<'_> {
    fn flush(&mut self) -> Result<(), ServerError> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        let mut w = self
            .writer
            .lock()
            .map_err(|_| std::io::Error::other("reply writer poisoned"))?;
        let sent = w.write_all(&self.bytes);
        self.bytes.clear();
        Ok(sent?)
    }
}

fn read_requests(
    rd: &mut UnixStream,
    tx: &mpsc::SyncSender<Job>,
    export: &Export,
    link: &Link,
) -> Result<(), ServerError> {
    // One recv brings in as many pipelined requests, payloads included, as
    // the client has sent; two syscalls per small request become a fraction.
    let mut rd = BufReader::with_capacity(READ_BUFFER, &*rd);
    let mut pending = Pending {
        bytes: Vec::new(),
        writer: &link.writer,
    };
    let result = serve_requests(&mut rd, tx, export, &mut pending, link);
    // Whatever ended the stream, the replies already made still go out.
    let flushed = pending.flush();
    result.and(flushed)
}

fn serve_requests(
    rd: &mut BufReader<&UnixStream>,
    tx: &mpsc::SyncSender<Job>,
    export: &Export,
    pending: &mut Pending<'_>,
    link: &Link,
) -> Result<(), ServerError> {
    let starts = export.backend.starts();
    let mut held = Held {
        backend: &*export.backend,
        any: false,
    };
    let mut data = Vec::new();
    loop {
        if rd.buffer().is_empty() {
            // About to wait for the client: it must have every reply
            // first, and the backend every request.
            pending.flush()?;
            held.send();
        }
        let mut header = [0u8; proto::REQUEST_HEADER_LEN];
        match rd.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(ServerError::Io(e)),
        }
        let req = proto::parse_request(&header)?;
        if req.kind == cmd::DISC {
            return Ok(());
        }
        let len = if req.kind == cmd::WRITE {
            req.length as usize
        } else {
            0
        };
        let startable = starts && matches!(req.kind, cmd::READ | cmd::WRITE);
        if !startable || rd.buffer().len() < len {
            // Not joining the batch, or about to wait for its payload.
            held.send();
        }
        if startable {
            // Read into fresh capacity: no zero-filling of what the
            // socket overwrites anyway.
            let mut payload = Vec::with_capacity(len);
            (&mut *rd).take(len as u64).read_to_end(&mut payload)?;
            if payload.len() < len {
                return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            // Another request already here: hold this one to go with it.
            let hold = rd.buffer().len() >= proto::REQUEST_HEADER_LEN;
            start(export, req, payload, hold, link)?;
            held.any |= hold;
            continue;
        }
        let direct = export.backend.fd_transfer() && req.length as usize >= SPLICE_MIN;
        if direct && req.kind == cmd::WRITE && !is_slow(export, &req) {
            pending.flush()?;
            write_direct(export, &req, rd, pending.writer)?;
            continue;
        }
        if direct && req.kind == cmd::READ {
            pending.flush()?;
            read_direct(export, &req, pending.writer)?;
            continue;
        }
        if !is_slow(export, &req) {
            // Served here, with the reader's own reused buffers.
            data.resize(len, 0);
            rd.read_exact(&mut data)?;
            // Encoded straight into the batch: read data is copied once.
            execute(
                &*export.backend,
                &export.counters,
                req,
                &data,
                &mut pending.bytes,
            );
            if pending.bytes.len() >= REPLY_BATCH {
                pending.flush()?;
            }
            continue;
        }
        let mut job_data = vec![0u8; len];
        rd.read_exact(&mut job_data)?;
        if tx
            .send(Job {
                req,
                data: job_data,
            })
            .is_err()
        {
            return Ok(());
        }
    }
}

/// Whether started requests are held back by the backend, to go out with
/// the next ones; they are sent before the reader could wait, and when it
/// ends for whatever reason (dropped).
struct Held<'a> {
    backend: &'a dyn BlockBackend,
    any: bool,
}

impl Held<'_> {
    fn send(&mut self) {
        if std::mem::take(&mut self.any) {
            self.backend.send_held();
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.send();
    }
}

/// Serves a large write by splicing its payload from the socket into the
/// backend (after whatever part of it the reader had already buffered). A
/// refused range is answered after skipping the payload; a failure midway
/// leaves the stream unusable, so the connection ends and the client
/// reconnects and re-sends.
fn write_direct(
    export: &Export,
    req: &Request,
    rd: &mut BufReader<&UnixStream>,
    writer: &Mutex<UnixStream>,
) -> Result<(), ServerError> {
    let (b, c) = (&export.backend, &export.counters);
    let len = u64::from(req.length);
    let started = c.begin();
    let code = match b.check_range(req.offset, len, true) {
        Err(e) => {
            std::io::copy(&mut rd.take(len), &mut std::io::sink())?;
            c.end(started, OpKind::Write(len), false);
            error_code(&e)
        }
        Ok(()) => {
            let head = rd.buffer().len().min(req.length as usize);
            let mut result = Ok(());
            if head > 0 {
                result = b.write_at(&rd.buffer()[..head], req.offset, false);
                rd.consume(head);
            }
            if result.is_ok() && (head as u64) < len {
                result = b.write_from_fd(
                    rd.get_ref().as_raw_fd(),
                    req.offset + head as u64,
                    len - head as u64,
                );
            }
            c.end(started, OpKind::Write(len), result.is_ok());
            if let Err(e) = result {
                return Err(ServerError::Io(std::io::Error::other(format!(
                    "write payload lost midway: {e}"
                ))));
            }
            0
        }
    };
    let mut w = writer
        .lock()
        .map_err(|_| std::io::Error::other("reply writer poisoned"))?;
    w.write_all(&proto::simple_reply(code, req.handle))?;
    Ok(())
}

/// Serves a large read with sendfile: header, then the data straight from
/// the backend. A failure after the header leaves the stream short, so the
/// connection ends and the client reconnects and retries.
fn read_direct(
    export: &Export,
    req: &Request,
    writer: &Mutex<UnixStream>,
) -> Result<(), ServerError> {
    let (b, c) = (&export.backend, &export.counters);
    let len = u64::from(req.length);
    let started = c.begin();
    let mut w = writer
        .lock()
        .map_err(|_| std::io::Error::other("reply writer poisoned"))?;
    if let Err(e) = b.check_range(req.offset, len, false) {
        c.end(started, OpKind::Read(len), false);
        w.write_all(&proto::simple_reply(error_code(&e), req.handle))?;
        return Ok(());
    }
    w.write_all(&proto::simple_reply(0, req.handle))?;
    let result = b.read_to_fd(w.as_raw_fd(), req.offset, len);
    c.end(started, OpKind::Read(len), result.is_ok());
    result
        .map_err(|e| ServerError::Io(std::io::Error::other(format!("read data lost midway: {e}"))))
}

fn error_code(e: &BackendError) -> u32 {
    match e {
        BackendError::ReadOnly => errno::EPERM,
        BackendError::OutOfRange { .. } => errno::EINVAL,
        BackendError::Io { .. } | BackendError::Remote { .. } => {
            tracing::error!("{e}: {:?}", std::error::Error::source(e));
            errno::EIO
        }
        BackendError::Unsupported => errno::ENOTSUP,
    }
}

/// Runs one request against the backend and appends its reply to `out`
/// (for a read, header and data together, the data read straight into
/// place). Reusing `out` spares an allocation and zeroing per request.
fn execute(b: &dyn BlockBackend, c: &DiskCounters, req: Request, data: &[u8], out: &mut Vec<u8>) {
    let started = c.begin();
    let fua = req.flags & proto::CMD_FLAG_FUA != 0;
    let len = u64::from(req.length);
    let at = out.len();
    if req.kind == cmd::READ {
        out.resize(at + 16 + req.length as usize, 0);
        let result = b.read_at(&mut out[at + 16..], req.offset);
        c.end(started, OpKind::Read(len), result.is_ok());
        let code = match result {
            Ok(()) => 0,
            Err(e) => {
                out.truncate(at + 16);
                error_code(&e)
            }
        };
        out[at..at + 16].copy_from_slice(&proto::simple_reply(code, req.handle));
        return;
    }
    let (result, op) = match req.kind {
        cmd::WRITE => (b.write_at(data, req.offset, fua), OpKind::Write(len)),
        cmd::FLUSH => (b.flush(), OpKind::Flush),
        cmd::TRIM => (b.discard(req.offset, len), OpKind::Discard),
        cmd::WRITE_ZEROES => (b.write_zeroes(req.offset, len, fua), OpKind::Write(len)),
        _ => {
            c.end(started, OpKind::Flush, false);
            out.extend_from_slice(&proto::simple_reply(errno::EINVAL, req.handle));
            return;
        }
    };
    c.end(started, op, result.is_ok());
    let code = result.as_ref().map_or_else(error_code, |()| 0);
    out.extend_from_slice(&proto::simple_reply(code, req.handle));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::FileBackend;

    fn export(name: &str, read_only: bool) -> (Arc<Vec<Export>>, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("ferry-nbd-{name}-{}.img", std::process::id()));
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let backend = FileBackend::open(&path, read_only).unwrap();
        let e = Export {
            name: name.into(),
            backend: Arc::new(backend),
            counters: Arc::new(DiskCounters::default()),
        };
        (Arc::new(vec![e]), path)
    }

    /// Handshakes with GO for `name`; returns the option replies' types.
    fn go(c: &mut UnixStream, name: &str) -> Vec<u32> {
        go_replies(c, name).into_iter().map(|(k, _)| k).collect()
    }

    /// Handshakes with GO for `name`, asking for the block sizes; returns
    /// the option replies (type, payload).
    fn go_replies(c: &mut UnixStream, name: &str) -> Vec<(u32, Vec<u8>)> {
        let mut greeting = [0u8; 18];
        c.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        c.write_all(&3u32.to_be_bytes()).unwrap();
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&proto::info::BLOCK_SIZE.to_be_bytes());
        let mut o = proto::OPTS_MAGIC.to_be_bytes().to_vec();
        o.extend_from_slice(&opt::GO.to_be_bytes());
        o.extend_from_slice(&(data.len() as u32).to_be_bytes());
        o.extend_from_slice(&data);
        c.write_all(&o).unwrap();
        let mut kinds = Vec::new();
        loop {
            let mut h = [0u8; 20];
            c.read_exact(&mut h).unwrap();
            let kind = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
            let len = u32::from_be_bytes([h[16], h[17], h[18], h[19]]) as usize;
            let mut payload = vec![0u8; len];
            c.read_exact(&mut payload).unwrap();
            kinds.push((kind, payload));
            if kind == rep::ACK || kind & 0x8000_0000 != 0 {
                return kinds;
            }
        }
    }

    fn request(
        c: &mut UnixStream,
        kind: u16,
        flags: u16,
        handle: u64,
        offset: u64,
        data: &[u8],
        len: u32,
    ) -> (u32, Vec<u8>) {
        c.write_all(&encode(kind, flags, handle, offset, data, len))
            .unwrap();
        let mut h = [0u8; 16];
        c.read_exact(&mut h).unwrap();
        assert_eq!(u64::from_be_bytes(h[8..16].try_into().unwrap()), handle);
        let err = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let mut payload = vec![];
        if kind == cmd::READ && err == 0 {
            payload = vec![0u8; len as usize];
            c.read_exact(&mut payload).unwrap();
        }
        (err, payload)
    }

    #[test]
    fn go_advertises_the_disks_block_size_as_the_minimum() {
        // (backend block size, advertised minimum, advertised preferred)
        for (bs, min, preferred) in [
            (512, 512, 4096),
            (4096, 4096, 4096),
            (16384, 16384, 16384),
            (520, 512, 4096),
        ] {
            let (exports, path) = export(&format!("bs{bs}"), false);
            let e = Export {
                name: "disk".into(),
                backend: Arc::new(TestDisk::on(&path, bs, false)),
                counters: Arc::new(DiskCounters::default()),
            };
            drop(exports);
            let (mut c, s) = UnixStream::pair().unwrap();
            std::thread::spawn(move || serve_connection(s, Arc::new(vec![e])));
            let replies = go_replies(&mut c, "disk");
            let info = replies
                .iter()
                .find(|(k, p)| *k == rep::INFO && p[..2] == proto::info::BLOCK_SIZE.to_be_bytes())
                .map(|(_, p)| p.clone())
                .unwrap();
            let field = |at: usize| u32::from_be_bytes(info[at..at + 4].try_into().unwrap());
            assert_eq!((field(2), field(6)), (min, preferred), "block size {bs}");
            assert_eq!(field(10) % min, 0);
            let _ = std::fs::remove_file(&path);
        }
    }

    #[test]
    fn write_read_flush_and_errors() {
        let (exports, path) = export("rw", false);
        let (mut c, s) = UnixStream::pair().unwrap();
        let server = {
            let e = exports.clone();
            std::thread::spawn(move || serve_connection(s, e))
        };
        assert_eq!(go(&mut c, "rw"), [rep::INFO, rep::INFO, rep::ACK]);
        let data = vec![0x5a; 4096];
        assert_eq!(
            request(
                &mut c,
                cmd::WRITE,
                proto::CMD_FLAG_FUA,
                1,
                8192,
                &data,
                4096
            )
            .0,
            0
        );
        assert_eq!(request(&mut c, cmd::READ, 0, 2, 8192, &[], 4096), (0, data));
        assert_eq!(request(&mut c, cmd::FLUSH, 0, 3, 0, &[], 0).0, 0);
        assert_eq!(
            request(&mut c, cmd::READ, 0, 4, (1 << 20) - 100, &[], 4096).0,
            errno::EINVAL
        );
        assert_eq!(request(&mut c, 99, 0, 5, 0, &[], 0).0, errno::EINVAL);
        let mut disc = proto::REQUEST_MAGIC.to_be_bytes().to_vec();
        disc.extend_from_slice(&0u16.to_be_bytes());
        disc.extend_from_slice(&cmd::DISC.to_be_bytes());
        disc.extend_from_slice(&[0u8; 20]);
        c.write_all(&disc).unwrap();
        server.join().unwrap().unwrap();
        assert_eq!(
            exports[0]
                .counters
                .writes
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn large_writes_take_the_splice_path_and_stay_in_sync() {
        let (mut c, path) = connected("big");
        let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
        let len = data.len() as u32;
        assert_eq!(request(&mut c, cmd::WRITE, 0, 1, 65536, &data, len).0, 0);
        assert_eq!(
            request(&mut c, cmd::READ, 0, 2, 65536, &[], len),
            (0, data.clone())
        );
        // Out of range: refused, and its payload skipped so the next request parses.
        assert_eq!(
            request(&mut c, cmd::WRITE, 0, 3, (1 << 20) - 4096, &data, len).0,
            errno::EINVAL
        );
        assert_eq!(request(&mut c, cmd::FLUSH, 0, 4, 0, &[], 0).0, 0);
        assert_eq!(
            std::fs::read(&path).unwrap()[65536..65536 + data.len()],
            data[..]
        );
        std::fs::remove_file(path).unwrap();
    }

    /// A client connected to a fresh writable export `name`, past the handshake.
    fn connected(name: &str) -> (UnixStream, std::path::PathBuf) {
        let (exports, path) = export(name, false);
        let (mut c, s) = UnixStream::pair().unwrap();
        std::thread::spawn(move || serve_connection(s, exports));
        go(&mut c, name);
        (c, path)
    }

    /// One request on the wire.
    fn encode(kind: u16, flags: u16, handle: u64, offset: u64, data: &[u8], len: u32) -> Vec<u8> {
        let mut r = proto::REQUEST_MAGIC.to_be_bytes().to_vec();
        r.extend_from_slice(&flags.to_be_bytes());
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&handle.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(data);
        r
    }

    #[test]
    fn pipelined_requests_are_each_answered_once_and_land_where_they_should() {
        let (mut c, path) = connected("pipe");
        // Small writes, then a large one whose start sits in the reader's
        // buffer behind them, then a read: all sent before any reply is read.
        let small: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i + 1; 4096]).collect();
        let big: Vec<u8> = (0..128 * 1024).map(|i| (i % 241) as u8).collect();
        let mut burst = Vec::new();
        for (i, d) in small.iter().enumerate() {
            burst.extend(encode(cmd::WRITE, 0, i as u64, i as u64 * 4096, d, 4096));
        }
        burst.extend(encode(cmd::WRITE, 0, 100, 65536, &big, big.len() as u32));
        burst.extend(encode(cmd::READ, 0, 101, 0, &[], 4096));
        c.write_all(&burst).unwrap();
        let mut handles = Vec::new();
        for _ in 0..small.len() + 2 {
            let mut h = [0u8; 16];
            c.read_exact(&mut h).unwrap();
            assert_eq!(
                u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                0,
                "error reply"
            );
            let handle = u64::from_be_bytes(h[8..16].try_into().unwrap());
            if handle == 101 {
                let mut d = vec![0u8; 4096];
                c.read_exact(&mut d).unwrap();
                assert_eq!(d, small[0]);
            }
            handles.push(handle);
        }
        handles.sort_unstable();
        let mut want: Vec<u64> = (0..small.len() as u64).collect();
        want.extend([100, 101]);
        assert_eq!(handles, want, "every request answered exactly once");
        let image = std::fs::read(&path).unwrap();
        for (i, d) in small.iter().enumerate() {
            assert_eq!(&image[i * 4096..(i + 1) * 4096], &d[..]);
        }
        assert_eq!(&image[65536..65536 + big.len()], &big[..]);
        std::fs::remove_file(path).unwrap();
    }

    /// An image file posing as another kind of disk: a LUN with its own
    /// block size and, with `starting`, one whose reads and writes end on
    /// another thread, every third handed back unfinished. Held requests
    /// really wait for the next unheld one or `send_held`, so a server that
    /// forgot them would leave its client hanging.
    struct TestDisk {
        file: Arc<FileBackend>,
        block_size: u32,
        starting: bool,
        count: std::sync::atomic::AtomicUsize,
        held: Mutex<Vec<(Op, crate::backend::Done, usize)>>,
    }

    impl TestDisk {
        fn on(path: &std::path::Path, block_size: u32, starting: bool) -> TestDisk {
            TestDisk {
                file: Arc::new(FileBackend::open(path, false).unwrap()),
                block_size,
                starting,
                count: Default::default(),
                held: Default::default(),
            }
        }

        fn run(&self, op: Op, done: crate::backend::Done, n: usize) {
            let file = self.file.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis((n % 5) as u64));
                if n % 3 == 2 {
                    return done(Ended::Again);
                }
                done(match op {
                    Op::Read { offset, len } => {
                        let mut buf = vec![0u8; len as usize];
                        match file.read_at(&mut buf, offset) {
                            // In two pieces, as a read split into commands.
                            Ok(()) => {
                                let tail = buf.split_off(buf.len() / 2);
                                Ended::Read(vec![buf, tail])
                            }
                            Err(e) => Ended::Failed(e),
                        }
                    }
                    Op::Write { offset, data, fua } => match file.write_at(&data, offset, fua) {
                        Ok(()) => Ended::Written,
                        Err(e) => Ended::Failed(e),
                    },
                    // The NBD server never places reads in memory of its own.
                    Op::ReadInto { .. } => Ended::Again,
                })
            });
        }
    }

    impl BlockBackend for TestDisk {
        fn size(&self) -> u64 {
            self.file.size()
        }
        fn read_only(&self) -> bool {
            false
        }
        fn identity(&self) -> String {
            self.file.identity()
        }
        fn block_size(&self) -> u32 {
            self.block_size
        }
        fn remote(&self) -> bool {
            self.starting
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
            self.file.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), BackendError> {
            self.file.write_at(buf, offset, fua)
        }
        fn flush(&self) -> Result<(), BackendError> {
            self.file.flush()
        }
        fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
            self.file.discard(offset, len)
        }
        fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), BackendError> {
            self.file.write_zeroes(offset, len, fua)
        }
        fn check_range(&self, offset: u64, len: u64, write: bool) -> Result<(), BackendError> {
            self.file.check_range(offset, len, write)
        }
        fn starts(&self) -> bool {
            self.starting
        }
        fn start(&self, op: Op, hold: bool, done: crate::backend::Done) {
            let n = self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.held.lock().unwrap().push((op, done, n));
            if !hold {
                self.send_held();
            }
        }
        fn send_held(&self) {
            let held = std::mem::take(&mut *self.held.lock().unwrap());
            for (op, done, n) in held {
                self.run(op, done, n);
            }
        }
    }

    #[test]
    fn started_requests_are_each_answered_once_even_when_handed_back() {
        let (exports, path) = export("starting", false);
        drop(exports);
        let e = Export {
            name: "disk".into(),
            backend: Arc::new(TestDisk::on(&path, 512, true)),
            counters: Arc::new(DiskCounters::default()),
        };
        let counters = e.counters.clone();
        let (mut c, s) = UnixStream::pair().unwrap();
        // A request left held would hang the client: fail instead.
        c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let server = std::thread::spawn(move || serve_connection(s, Arc::new(vec![e])));
        go(&mut c, "disk");
        let blocks: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i + 1; 8192]).collect();
        let mut burst = Vec::new();
        for (i, d) in blocks.iter().enumerate() {
            burst.extend(encode(cmd::WRITE, 0, i as u64, i as u64 * 8192, d, 8192));
        }
        c.write_all(&burst).unwrap();
        let mut handles = Vec::new();
        for _ in 0..blocks.len() {
            let mut h = [0u8; 16];
            c.read_exact(&mut h).unwrap();
            assert_eq!(u32::from_be_bytes([h[4], h[5], h[6], h[7]]), 0);
            handles.push(u64::from_be_bytes(h[8..16].try_into().unwrap()));
        }
        handles.sort_unstable();
        assert_eq!(handles, (0..blocks.len() as u64).collect::<Vec<_>>());
        for (i, d) in blocks.iter().enumerate() {
            let h = 100 + i as u64;
            assert_eq!(
                request(&mut c, cmd::READ, 0, h, i as u64 * 8192, &[], 8192),
                (0, d.clone())
            );
        }
        // Out of range: refused before it is started.
        assert_eq!(
            request(&mut c, cmd::READ, 0, 999, 1 << 20, &[], 4096).0,
            errno::EINVAL
        );
        // Requests in flight when the client leaves are still answered
        // before the connection ends.
        let mut last = Vec::new();
        for i in 0..6u64 {
            last.extend(encode(cmd::WRITE, 0, 200 + i, i * 4096, &[9u8; 4096], 4096));
        }
        c.write_all(&last).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        server.join().unwrap().unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len(), 6 * 16, "every reply sent before the close");
        let image = std::fs::read(&path).unwrap();
        assert!(image[..6 * 4096].iter().all(|b| *b == 9));
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(counters.writes.load(Relaxed), 18, "each write counted once");
        assert_eq!(counters.reads.load(Relaxed), 12);
        assert_eq!(counters.in_flight.load(Relaxed), 0);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn read_only_export_refuses_writes_with_eperm() {
        let (exports, path) = export("ro", true);
        let (mut c, s) = UnixStream::pair().unwrap();
        std::thread::spawn(move || serve_connection(s, exports));
        go(&mut c, "ro");
        assert_eq!(
            request(&mut c, cmd::WRITE, 0, 1, 0, &[1u8; 512], 512).0,
            errno::EPERM
        );
        assert_eq!(
            request(&mut c, cmd::TRIM, 0, 2, 0, &[], 512).0,
            errno::EPERM
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unknown_export_and_garbage_are_refused_without_panic() {
        let (exports, path) = export("only", false);
        let (mut c, s) = UnixStream::pair().unwrap();
        {
            let e = exports.clone();
            std::thread::spawn(move || serve_connection(s, e))
        };
        assert_eq!(go(&mut c, "other"), [rep::ERR_UNKNOWN]);
        let (mut c, s) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || serve_connection(s, exports));
        let mut greeting = [0u8; 18];
        c.read_exact(&mut greeting).unwrap();
        c.write_all(&[0xde, 0xad, 0xbe, 0xef]).unwrap();
        assert!(matches!(
            server.join().unwrap(),
            Err(ServerError::Protocol(_))
        ));
        std::fs::remove_file(path).unwrap();
    }
}
