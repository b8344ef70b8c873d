//! One TCP connection's framing: whole PDUs in and out of a socket with the
//! digests the login negotiated. Blocking; the session gives the reading
//! half to its reader thread and guards the writing half with a lock.

use super::{IscsiError, Sink};
use crate::pdu::frame::{read_head, read_rest, read_tail, ReadError};
use crate::pdu::{Digests, Pdu, BHS_LEN};
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// The opcode of a SCSI Data-In PDU.
const DATA_IN_OPCODE: u8 = 0x25;

/// Size of the read buffer.
const READ_BUFFER: usize = 64 * 1024;

/// A socket plus what is needed to frame PDUs on it.
pub struct Wire {
    stream: TcpStream,
    /// Reads go through a buffer: one syscall brings in many small PDUs.
    reader: BufReader<TcpStream>,
    /// Digests in force (none during login).
    pub digests: Digests,
    /// Largest data segment we accept (our MaxRecvDataSegmentLength).
    pub max_recv: usize,
    /// host:port, for error messages.
    pub portal: String,
}

impl Wire {
    /// Connects to `portal` within `timeout`.
    pub fn connect(portal: &str, timeout: Duration) -> Result<Wire, IscsiError> {
        let err = |source| IscsiError::Connect {
            portal: portal.to_string(),
            source,
        };
        let mut last = None;
        for addr in portal.to_socket_addrs().map_err(err)? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(err)?;
                    // Login answers come quickly; a silent target is dead.
                    stream.set_read_timeout(Some(timeout)).map_err(err)?;
                    // A writer blocked on a dead peer gives up in time.
                    stream
                        .set_write_timeout(Some(timeout.max(Duration::from_secs(10))))
                        .map_err(err)?;
                    let reader =
                        BufReader::with_capacity(READ_BUFFER, stream.try_clone().map_err(err)?);
                    return Ok(Wire {
                        stream,
                        reader,
                        digests: Digests::default(),
                        max_recv: 8192,
                        portal: portal.to_string(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
        })))
    }

    fn io(&self, source: std::io::Error) -> IscsiError {
        IscsiError::Io {
            portal: self.portal.clone(),
            source,
        }
    }

    /// A second handle on the same socket (for the reader thread).
    pub fn try_clone(&self) -> Result<Wire, IscsiError> {
        let stream = self.stream.try_clone().map_err(|e| self.io(e))?;
        let reader =
            BufReader::with_capacity(READ_BUFFER, stream.try_clone().map_err(|e| self.io(e))?);
        Ok(Wire {
            stream,
            reader,
            digests: self.digests,
            max_recv: self.max_recv,
            portal: self.portal.clone(),
        })
    }

    /// Sets (or clears) the read timeout.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<(), IscsiError> {
        self.stream.set_read_timeout(t).map_err(|e| self.io(e))
    }

    /// Closes both directions, waking a reader blocked on this socket.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Sends one PDU.
    pub fn send(&mut self, pdu: &Pdu) -> Result<(), IscsiError> {
        let bytes = pdu.encode(self.digests);
        self.stream.write_all(&bytes).map_err(|e| self.io(e))
    }

    /// Sends frames already encoded with [`Wire::digests`], as they lie in
    /// several buffers (headers apart from borrowed write data), with as few
    /// vectored writes as the socket takes.
    pub fn send_vectored(&mut self, mut bufs: &mut [IoSlice<'_>]) -> Result<(), IscsiError> {
        // Skips leading empty slices, which would otherwise look like a
        // zero-length write.
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            match self.stream.write_vectored(bufs) {
                Ok(0) => {
                    return Err(self.io(std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "the connection took no more bytes",
                    )))
                }
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(())
    }

    /// Reads one PDU.
    pub fn recv(&mut self) -> Result<Pdu, IscsiError> {
        let mut bhs = [0u8; BHS_LEN];
        self.reader.read_exact(&mut bhs).map_err(|e| self.io(e))?;
        self.recv_rest(bhs)
    }

    /// True when bytes already read from the socket wait in the buffer.
    pub fn buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Reads one PDU, or `None` when the read timeout passes before its
    /// first byte (nothing consumed, the stream still in step). The data of
    /// a Data-In PDU whose ITT `route` names a sink for goes straight into
    /// that sink, at the PDU's buffer offset: `Some((pdu, bytes placed))`,
    /// the PDU's own data then empty. (Data that does not fit, or a closed sink, comes back as
    /// usual, with 0 placed.)
    pub fn recv_idle_routed(
        &mut self,
        route: impl FnOnce(u32) -> Option<Arc<Sink>>,
    ) -> Result<Option<(Pdu, usize)>, IscsiError> {
        if !self.wait_readable()? {
            return Ok(None);
        }
        let mut bhs = [0u8; BHS_LEN];
        self.reader.read_exact(&mut bhs).map_err(|e| self.io(e))?;
        if bhs[0] & 0x3f == DATA_IN_OPCODE {
            let itt = u32::from_be_bytes([bhs[16], bhs[17], bhs[18], bhs[19]]);
            if let Some(sink) = route(itt) {
                let at = u32::from_be_bytes([bhs[40], bhs[41], bhs[42], bhs[43]]) as usize;
                return self.recv_placed(bhs, &sink, at).map(Some);
            }
        }
        self.recv_rest(bhs).map(|p| Some((p, 0)))
    }

    /// The rest of a Data-In PDU, its data segment read into `sink` at `at`.
    fn recv_placed(
        &mut self,
        bhs: [u8; BHS_LEN],
        sink: &Sink,
        at: usize,
    ) -> Result<(Pdu, usize), IscsiError> {
        let (layout, header, ahs) = read_head(&mut self.reader, bhs, self.digests, self.max_recv)
            .map_err(|e| self.read_error(e))?;
        let (n, digest) = (layout.data_segment(), layout.data_digest());
        let mut crc = digest.then_some(0u32);
        let mut take = |reader: &mut BufReader<TcpStream>, pieces: &mut [IoSliceMut<'_>]| {
            read_exact_vectored(reader, pieces, &mut crc)
        };
        let reader = &mut self.reader;
        let placed = sink
            .fill(at, n, |pieces| take(reader, pieces))
            .map_err(|e| self.io(e))?;
        let mut data = Vec::new();
        if !placed {
            data = vec![0u8; n];
            take(&mut self.reader, &mut [IoSliceMut::new(&mut data)]).map_err(|e| self.io(e))?;
        }
        read_tail(&mut self.reader, &layout, crc.unwrap_or(0)).map_err(|e| self.read_error(e))?;
        Ok((Pdu { header, ahs, data }, if placed { n } else { 0 }))
    }

    /// Waits for the first byte of a PDU: false when the read timeout
    /// passes first (nothing consumed, the stream still in step).
    fn wait_readable(&mut self) -> Result<bool, IscsiError> {
        loop {
            match self.reader.fill_buf() {
                Ok([]) => {
                    return Err(self.io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "target closed the connection",
                    )))
                }
                Ok(_) => return Ok(true),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(false)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    fn recv_rest(&mut self, bhs: [u8; BHS_LEN]) -> Result<Pdu, IscsiError> {
        read_rest(&mut self.reader, bhs, self.digests, self.max_recv)
            .map_err(|e| self.read_error(e))
    }

    fn read_error(&self, e: ReadError) -> IscsiError {
        match e {
            ReadError::Io(source) => IscsiError::Io {
                portal: self.portal.clone(),
                source,
            },
            ReadError::Frame(source) => IscsiError::Frame {
                portal: self.portal.clone(),
                source,
            },
        }
    }
}

/// Vectors handed to one `readv`: well under IOV_MAX.
const READ_IOV_BATCH: usize = 512;

/// Fills `bufs` exactly: first from what `reader` has buffered, then
/// straight from its socket with vectored reads; `crc`, when kept, takes
/// in every byte in order (the data digest). A Data-In's data lands in
/// guest memory in pieces as small as a page; read piece by piece through
/// the buffer, every byte was copied twice.
fn read_exact_vectored(
    reader: &mut BufReader<TcpStream>,
    mut bufs: &mut [IoSliceMut<'_>],
    crc: &mut Option<u32>,
) -> std::io::Result<()> {
    let held = reader.buffer();
    if !held.is_empty() {
        let n = (&mut &held[..]).read_vectored(bufs)?;
        reader.consume(n);
        took(&mut bufs, n, crc);
    }
    let stream = reader.get_mut();
    while !bufs.is_empty() {
        let k = bufs.len().min(READ_IOV_BATCH);
        match stream.read_vectored(&mut bufs[..k]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => took(&mut bufs, n, crc),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `n` bytes were read into the front of `bufs`: digest them, move past.
fn took(bufs: &mut &mut [IoSliceMut<'_>], n: usize, crc: &mut Option<u32>) {
    if let Some(c) = crc {
        let mut left = n;
        for b in bufs.iter() {
            let k = b.len().min(left);
            *c = crc32c::crc32c_append(*c, &b[..k]);
            left -= k;
            if left == 0 {
                break;
            }
        }
    }
    IoSliceMut::advance_slices(bufs, n);
}
