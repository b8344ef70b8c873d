//! The NBD server side: negotiation, then concurrent request handling.
//!
//! Requests on one connection are served concurrently (QEMU keeps many in
//! flight) on the blocking pool; replies go through one writer task so each
//! reply leaves whole. On `DISC` or end of stream every request already read
//! is completed before the connection closes, so no acknowledged write is
//! lost and none is applied after the client left.

use super::proto::{self, cmd, errno, opt, rep, tflag, ProtoError, Request};
use crate::backend::{BackendError, BlockBackend};
use crate::stats::{DiskCounters, OpKind};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// Requests served at once per connection; more wait for a slot.
pub const MAX_IN_FLIGHT: usize = 64;
/// Preferred and minimum block sizes advertised to clients.
const PREFERRED_BLOCK: u32 = 4096;
const MIN_BLOCK: u32 = 512;

/// One disk offered over NBD.
pub struct Export {
    /// Export name clients ask for.
    pub name: String,
    /// The storage.
    pub backend: Arc<dyn BlockBackend>,
    /// Its counters.
    pub counters: Arc<DiskCounters>,
}

impl Export {
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

/// Serves one client connection from negotiation to disconnect.
pub async fn serve_connection<S>(stream: S, exports: Arc<Vec<Export>>) -> Result<(), ServerError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    wr.write_all(&proto::server_greeting()).await?;
    let mut flags = [0u8; 4];
    rd.read_exact(&mut flags).await?;
    let no_zeroes = proto::parse_client_flags(flags)?;
    let index = loop {
        let mut header = [0u8; 16];
        rd.read_exact(&mut header).await?;
        let (option, len) = proto::parse_option_header(&header)?;
        let mut data = vec![0u8; len as usize];
        rd.read_exact(&mut data).await?;
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
                wr.write_all(&reply).await?;
                break i;
            }
            opt::ABORT => {
                wr.write_all(&proto::option_reply(option, rep::ACK, &[]))
                    .await?;
                return Ok(());
            }
            opt::LIST => {
                for e in exports.iter() {
                    let mut d = (e.name.len() as u32).to_be_bytes().to_vec();
                    d.extend_from_slice(e.name.as_bytes());
                    wr.write_all(&proto::option_reply(option, rep::SERVER, &d))
                        .await?;
                }
                wr.write_all(&proto::option_reply(option, rep::ACK, &[]))
                    .await?;
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
                        ))
                        .await?;
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
                    ))
                    .await?;
                    continue;
                };
                let e = &exports[i];
                let info = proto::info_export(e.backend.size(), e.flags());
                wr.write_all(&proto::option_reply(option, rep::INFO, &info))
                    .await?;
                let bs =
                    proto::info_block_size(MIN_BLOCK, PREFERRED_BLOCK, proto::MAX_REQUEST_BYTES);
                wr.write_all(&proto::option_reply(option, rep::INFO, &bs))
                    .await?;
                wr.write_all(&proto::option_reply(option, rep::ACK, &[]))
                    .await?;
                if option == opt::GO {
                    break i;
                }
            }
            other => {
                // STARTTLS, STRUCTURED_REPLY, meta contexts, extended headers:
                // refusing them makes clients fall back to simple replies.
                wr.write_all(&proto::option_reply(other, rep::ERR_UNSUP, &[]))
                    .await?;
            }
        }
    };
    transmission(rd, wr, exports, index).await
}

async fn transmission<R, W>(
    mut rd: R,
    mut wr: W,
    exports: Arc<Vec<Export>>,
    index: usize,
) -> Result<(), ServerError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(MAX_IN_FLIGHT * 2);
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            wr.write_all(&msg).await?;
        }
        wr.flush().await
    });
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let result = loop {
        let mut header = [0u8; proto::REQUEST_HEADER_LEN];
        match rd.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(ServerError::Io(e)),
        }
        let req = match proto::parse_request(&header) {
            Ok(r) => r,
            Err(e) => break Err(e.into()),
        };
        if req.kind == cmd::DISC {
            break Ok(());
        }
        let data = if req.kind == cmd::WRITE {
            let mut d = vec![0u8; req.length as usize];
            if let Err(e) = rd.read_exact(&mut d).await {
                break Err(ServerError::Io(e));
            }
            d
        } else {
            Vec::new()
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break Ok(());
        };
        let exports = exports.clone();
        let tx = tx.clone();
        tasks.spawn(async move {
            let reply = tokio::task::spawn_blocking(move || execute(&exports[index], req, data))
                .await
                .unwrap_or_else(|_| proto::simple_reply(errno::EIO, req.handle).to_vec());
            let _ = tx.send(reply).await;
            drop(permit);
        });
        // Reap finished tasks so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    };
    // Complete every request already read before closing.
    while tasks.join_next().await.is_some() {}
    drop(tx);
    let _ = writer.await;
    result
}

fn error_code(e: &BackendError) -> u32 {
    match e {
        BackendError::ReadOnly => errno::EPERM,
        BackendError::OutOfRange { .. } => errno::EINVAL,
        BackendError::Io { .. } => {
            tracing::error!("{e}: {:?}", std::error::Error::source(e));
            errno::EIO
        }
    }
}

/// Runs one request against the backend and returns the encoded reply.
fn execute(export: &Export, req: Request, data: Vec<u8>) -> Vec<u8> {
    let b = &export.backend;
    let c = &export.counters;
    let started = c.begin();
    let fua = req.flags & proto::CMD_FLAG_FUA != 0;
    let len = u64::from(req.length);
    let (result, op, payload) = match req.kind {
        cmd::READ => {
            let mut buf = vec![0u8; req.length as usize];
            let r = b.read_at(&mut buf, req.offset);
            (r, OpKind::Read(len), Some(buf))
        }
        cmd::WRITE => (b.write_at(&data, req.offset, fua), OpKind::Write(len), None),
        cmd::FLUSH => (b.flush(), OpKind::Flush, None),
        cmd::TRIM => (b.discard(req.offset, len), OpKind::Discard, None),
        cmd::WRITE_ZEROES => (
            b.write_zeroes(req.offset, len, fua),
            OpKind::Write(len),
            None,
        ),
        _ => {
            c.end(started, OpKind::Flush, false);
            return proto::simple_reply(errno::EINVAL, req.handle).to_vec();
        }
    };
    c.end(started, op, result.is_ok());
    match result {
        Ok(()) => {
            let mut reply = proto::simple_reply(0, req.handle).to_vec();
            if let Some(buf) = payload {
                reply.extend_from_slice(&buf);
            }
            reply
        }
        Err(e) => proto::simple_reply(error_code(&e), req.handle).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::FileBackend;
    use tokio::io::DuplexStream;

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
    async fn go(c: &mut DuplexStream, name: &str) -> Vec<u32> {
        let mut greeting = [0u8; 18];
        c.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        c.write_all(&3u32.to_be_bytes()).await.unwrap();
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        let mut o = proto::OPTS_MAGIC.to_be_bytes().to_vec();
        o.extend_from_slice(&opt::GO.to_be_bytes());
        o.extend_from_slice(&(data.len() as u32).to_be_bytes());
        o.extend_from_slice(&data);
        c.write_all(&o).await.unwrap();
        let mut kinds = Vec::new();
        loop {
            let mut h = [0u8; 20];
            c.read_exact(&mut h).await.unwrap();
            let kind = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
            let len = u32::from_be_bytes([h[16], h[17], h[18], h[19]]) as usize;
            let mut payload = vec![0u8; len];
            c.read_exact(&mut payload).await.unwrap();
            kinds.push(kind);
            if kind == rep::ACK || kind & 0x8000_0000 != 0 {
                return kinds;
            }
        }
    }

    async fn request(
        c: &mut DuplexStream,
        kind: u16,
        flags: u16,
        handle: u64,
        offset: u64,
        data: &[u8],
        len: u32,
    ) -> (u32, Vec<u8>) {
        let mut r = proto::REQUEST_MAGIC.to_be_bytes().to_vec();
        r.extend_from_slice(&flags.to_be_bytes());
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&handle.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(data);
        c.write_all(&r).await.unwrap();
        let mut h = [0u8; 16];
        c.read_exact(&mut h).await.unwrap();
        assert_eq!(u64::from_be_bytes(h[8..16].try_into().unwrap()), handle);
        let err = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let mut payload = vec![];
        if kind == cmd::READ && err == 0 {
            payload = vec![0u8; len as usize];
            c.read_exact(&mut payload).await.unwrap();
        }
        (err, payload)
    }

    #[tokio::test]
    async fn write_read_flush_and_errors() {
        let (exports, path) = export("rw", false);
        let (mut c, s) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(serve_connection(s, exports.clone()));
        assert_eq!(go(&mut c, "rw").await, [rep::INFO, rep::INFO, rep::ACK]);
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
            .await
            .0,
            0
        );
        assert_eq!(
            request(&mut c, cmd::READ, 0, 2, 8192, &[], 4096).await,
            (0, data)
        );
        assert_eq!(request(&mut c, cmd::FLUSH, 0, 3, 0, &[], 0).await.0, 0);
        assert_eq!(
            request(&mut c, cmd::READ, 0, 4, (1 << 20) - 100, &[], 4096)
                .await
                .0,
            errno::EINVAL
        );
        assert_eq!(request(&mut c, 99, 0, 5, 0, &[], 0).await.0, errno::EINVAL);
        let mut disc = proto::REQUEST_MAGIC.to_be_bytes().to_vec();
        disc.extend_from_slice(&0u16.to_be_bytes());
        disc.extend_from_slice(&cmd::DISC.to_be_bytes());
        disc.extend_from_slice(&[0u8; 20]);
        c.write_all(&disc).await.unwrap();
        server.await.unwrap().unwrap();
        assert_eq!(
            exports[0]
                .counters
                .writes
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn read_only_export_refuses_writes_with_eperm() {
        let (exports, path) = export("ro", true);
        let (mut c, s) = tokio::io::duplex(1 << 16);
        tokio::spawn(serve_connection(s, exports));
        go(&mut c, "ro").await;
        assert_eq!(
            request(&mut c, cmd::WRITE, 0, 1, 0, &[1u8; 512], 512)
                .await
                .0,
            errno::EPERM
        );
        assert_eq!(
            request(&mut c, cmd::TRIM, 0, 2, 0, &[], 512).await.0,
            errno::EPERM
        );
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn unknown_export_and_garbage_are_refused_without_panic() {
        let (exports, path) = export("only", false);
        let (mut c, s) = tokio::io::duplex(1 << 16);
        tokio::spawn(serve_connection(s, exports.clone()));
        assert_eq!(go(&mut c, "other").await, [rep::ERR_UNKNOWN]);
        let (mut c, s) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(serve_connection(s, exports));
        let mut greeting = [0u8; 18];
        c.read_exact(&mut greeting).await.unwrap();
        c.write_all(&[0xde, 0xad, 0xbe, 0xef]).await.unwrap();
        assert!(matches!(
            server.await.unwrap(),
            Err(ServerError::Protocol(_))
        ));
        std::fs::remove_file(path).unwrap();
    }
}
