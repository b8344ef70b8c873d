//! One TCP connection's framing: whole PDUs in and out of a socket with the
//! digests the login negotiated. Blocking; the session gives the reading
//! half to its reader thread and guards the writing half with a lock.

use super::IscsiError;
use crate::pdu::frame::frame_len;
use crate::pdu::{Digests, Pdu, BHS_LEN};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A socket plus what is needed to frame PDUs on it.
pub struct Wire {
    stream: TcpStream,
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
                    return Ok(Wire {
                        stream,
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
        Ok(Wire {
            stream: self.stream.try_clone().map_err(|e| self.io(e))?,
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

    /// Sends frames already encoded with [`Wire::digests`].
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), IscsiError> {
        self.stream.write_all(bytes).map_err(|e| self.io(e))
    }

    /// Reads one PDU.
    pub fn recv(&mut self) -> Result<Pdu, IscsiError> {
        let mut bhs = [0u8; BHS_LEN];
        self.stream.read_exact(&mut bhs).map_err(|e| self.io(e))?;
        self.recv_rest(bhs)
    }

    /// Reads one PDU, or `None` when the read timeout passes before its
    /// first byte (nothing consumed, the stream still in step).
    pub fn recv_idle(&mut self) -> Result<Option<Pdu>, IscsiError> {
        let mut bhs = [0u8; BHS_LEN];
        let n = loop {
            match self.stream.read(&mut bhs[..1]) {
                Ok(0) => {
                    return Err(self.io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "target closed the connection",
                    )))
                }
                Ok(n) => break n,
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
        };
        self.stream
            .read_exact(&mut bhs[n..])
            .map_err(|e| self.io(e))?;
        self.recv_rest(bhs).map(Some)
    }

    fn recv_rest(&mut self, bhs: [u8; BHS_LEN]) -> Result<Pdu, IscsiError> {
        let frame = |source| IscsiError::Frame {
            portal: self.portal.clone(),
            source,
        };
        let n = frame_len(&bhs, self.digests, self.max_recv).map_err(frame)?;
        let mut buf = vec![0u8; n];
        buf[..BHS_LEN].copy_from_slice(&bhs);
        self.stream
            .read_exact(&mut buf[BHS_LEN..])
            .map_err(|e| self.io(e))?;
        Pdu::parse(&buf, self.digests, self.max_recv)
            .map(|(p, _)| p)
            .map_err(frame)
    }
}
