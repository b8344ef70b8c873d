//! One TCP connection's framing: whole PDUs in and out of a socket with the
//! digests the login negotiated. Blocking; the session gives the reading
//! half to its reader thread and guards the writing half with a lock.

use super::IscsiError;
use crate::pdu::frame::{read_rest, ReadError};
use crate::pdu::{Digests, Pdu, BHS_LEN};
use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

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
    /// first byte (nothing consumed, the stream still in step).
    pub fn recv_idle(&mut self) -> Result<Option<Pdu>, IscsiError> {
        loop {
            match self.reader.fill_buf() {
                Ok([]) => {
                    return Err(self.io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "target closed the connection",
                    )))
                }
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(e)),
            }
        }
        self.recv().map(Some)
    }

    fn recv_rest(&mut self, bhs: [u8; BHS_LEN]) -> Result<Pdu, IscsiError> {
        read_rest(&mut self.reader, bhs, self.digests, self.max_recv).map_err(|e| match e {
            ReadError::Io(source) => IscsiError::Io {
                portal: self.portal.clone(),
                source,
            },
            ReadError::Frame(source) => IscsiError::Frame {
                portal: self.portal.clone(),
                source,
            },
        })
    }
}
