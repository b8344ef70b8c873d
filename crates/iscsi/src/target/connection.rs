//! One TCP connection: the login phase, then the full feature phase, with
//! bytes read and written here and every decision made by [`Login`] and
//! [`Ffp`].

use super::ffp::{reject, Event, Ffp, Replies};
use super::registry::{Registry, SessionInfo};
use super::session::{Member, SessionCore};
use crate::login::{status, Login, Progress, SessionType};
use crate::pdu::bhs::{self, Header};
use crate::pdu::frame::{decode_head, finish_data, FrameError, Layout};
use crate::pdu::outgoing::Frames;
use crate::pdu::{Digests, Pdu, BHS_LEN};
use bytes::Bytes;
use std::io::IoSlice;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

/// How long a login may sit idle between PDUs.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write may wait for an initiator that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest data segment accepted during login.
const LOGIN_MAX_DATA: usize = 65536;

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Socket error.
    #[error("socket error")]
    Io(#[from] std::io::Error),
    /// A frame could not be read.
    #[error("bad frame")]
    Frame(#[from] FrameError),
    /// The peer was idle too long or did not read.
    #[error("timed out")]
    Timeout,
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

type Reader = BufReader<tokio::net::tcp::OwnedReadHalf>;
type Writer = BufWriter<tokio::net::tcp::OwnedWriteHalf>;

/// One PDU as read from the initiator.
enum Frame {
    /// A valid PDU.
    Pdu(Pdu),
    /// A PDU read whole (so the stream stays in step) that fails a check
    /// the connection survives: why, and its raw BHS for the Reject.
    Bad(FrameError, [u8; BHS_LEN]),
}

/// Reads one PDU, its data segment straight into the buffer the PDU keeps
/// (exactly sized, not zero-filled, never copied again); `None` at a clean
/// end of stream. A frame whose header cannot be trusted (bad header
/// digest, oversized data segment) is an error: its lengths cannot be
/// trusted either, so the stream is lost.
async fn read_frame(
    r: &mut Reader,
    digests: Digests,
    max_data: usize,
) -> Result<Option<Frame>, ConnError> {
    let mut bhs = [0u8; BHS_LEN];
    match r.read_exact(&mut bhs).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let layout = Layout::of(&bhs, digests, max_data)?;
    let mut head = vec![0u8; layout.head_len()];
    r.read_exact(&mut head).await?;
    let head = match decode_head(&bhs, &layout, head) {
        Err(e @ FrameError::HeaderDigest { .. }) => return Err(e.into()),
        other => other,
    };
    let want = layout.data_len();
    let mut data = Vec::with_capacity(want);
    (&mut *r).take(want as u64).read_to_end(&mut data).await?;
    if data.len() < want {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    let (header, ahs) = match head {
        Ok(h) => h,
        Err(e) => return Ok(Some(Frame::Bad(e, bhs))),
    };
    Ok(Some(match finish_data(&layout, &mut data) {
        Ok(()) => Frame::Pdu(Pdu { header, ahs, data }),
        Err(e) => Frame::Bad(e, bhs),
    }))
}

async fn write_all(w: &mut Writer, bytes: &[u8]) -> Result<(), ConnError> {
    let fut = async {
        w.write_all(bytes).await?;
        w.flush().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, fut)
        .await
        .map_err(|_| ConnError::Timeout)??;
    Ok(())
}

/// Slices handed to one `writev`: well under IOV_MAX.
const IOV_BATCH: usize = 64;

/// The replies queued for the socket. Small PDUs are encoded whole; the
/// data of a read stays in the buffer it was read into and goes out by
/// vectored writes between its Data-In headers, so a read costs no copy in
/// user space on its way to the socket.
struct Outbox {
    digests: Digests,
    frames: Frames,
}

impl Outbox {
    fn new(digests: Digests) -> Outbox {
        Outbox {
            digests,
            frames: Frames::default(),
        }
    }

    /// Sends everything queued, then empties the box.
    async fn send(&mut self, w: &mut Writer) -> Result<(), ConnError> {
        let mut iov = self.frames.slices();
        let fut = async {
            let mut rest = &mut iov[..];
            while !rest.is_empty() {
                let k = rest.len().min(IOV_BATCH);
                let n = w.write_vectored(&rest[..k]).await?;
                if n == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
                }
                IoSlice::advance_slices(&mut rest, n);
            }
            w.flush().await
        };
        tokio::time::timeout(WRITE_TIMEOUT, fut)
            .await
            .map_err(|_| ConnError::Timeout)??;
        self.frames.clear();
        Ok(())
    }
}

impl Replies for Outbox {
    fn push(&mut self, pdu: Pdu) {
        self.frames.push_pdu(&pdu, self.digests);
    }

    fn push_data_in(&mut self, data: Vec<u8>, pieces: Vec<(bhs::DataIn, Range<usize>)>) {
        let data = Bytes::from(data);
        for (h, r) in pieces {
            if r.end <= data.len() && r.start <= r.end {
                self.frames.push(self.digests, &Header::DataIn(h), &data, r);
            }
        }
    }
}

async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs a connection to its end, logging why it ended.
pub async fn run(stream: TcpStream, registry: Arc<Registry>) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut reader = BufReader::with_capacity(256 * 1024, r);
    let mut writer = BufWriter::with_capacity(256 * 1024, w);
    match session(&mut reader, &mut writer, registry, &peer, &local).await {
        Ok(()) => debug!(%peer, "connection closed"),
        Err(e) => {
            info!(%peer, error = %e, source = ?std::error::Error::source(&e).map(|s| s.to_string()), "connection dropped")
        }
    }
    let _ = writer.shutdown().await;
}

/// Runs disk work: inline on a connection's own thread (see `server`), off
/// the worker's queue on a shared runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

async fn session(
    reader: &mut Reader,
    writer: &mut Writer,
    registry: Arc<Registry>,
    peer: &str,
    local: &str,
) -> Result<(), ConnError> {
    // Login phase.
    let mut login = Login::new(registry.portal_group);
    let mut stat_sn: u32 = 1;
    let mut first: Option<bhs::LoginReq> = None;
    let (core, mut member) = loop {
        let frame = tokio::time::timeout(
            LOGIN_TIMEOUT,
            read_frame(reader, Digests::default(), LOGIN_MAX_DATA),
        )
        .await
        .map_err(|_| ConnError::Timeout)??;
        let pdu = match frame {
            None => return Ok(()),
            Some(Frame::Pdu(pdu)) => pdu,
            Some(Frame::Bad(e, _)) => return Err(e.into()),
        };
        let Header::LoginReq(req) = pdu.header else {
            return Err(ConnError::Protocol("first PDU is not a Login Request"));
        };
        let start = first.get_or_insert_with(|| req.clone()).clone();
        if req.isid != start.isid || req.itt != start.itt && req.cid != start.cid {
            return Err(ConnError::Protocol("login changed ISID or CID"));
        }
        let (mut reply, mut progress) = login.step(&req, &pdu.data, registry.as_ref());
        let mut joined = None;
        if progress == Progress::Complete {
            match enter_session(&registry, &login, &req, peer) {
                Ok(j) => joined = Some(j),
                Err(refusal) => {
                    reply.status = refusal;
                    reply.transit = false;
                    progress = Progress::Failed;
                }
            }
        }
        if progress == Progress::Failed && reply.status == status::SUCCESS {
            reply.status = status::INITIATOR_ERROR;
        }
        // An added connection's login speaks for the session it joins.
        let numbering = joined.as_ref().map(|(core, _)| core.numbering.clone());
        let exp_cmd_sn = numbering.map_or(req.cmd_sn, |n| n.exp_cmd_sn());
        let resp = bhs::LoginResp {
            transit: reply.transit,
            cont: false,
            csg: reply.csg,
            nsg: reply.nsg,
            version_max: 0,
            version_active: 0,
            isid: req.isid,
            tsih: joined.as_ref().map_or(req.tsih, |(core, _)| core.tsih),
            itt: req.itt,
            stat_sn,
            exp_cmd_sn,
            max_cmd_sn: super::window::max_cmd_sn(exp_cmd_sn),
            status_class: reply.status.0,
            status_detail: reply.status.1,
        };
        stat_sn = stat_sn.wrapping_add(1);
        let bytes = Pdu::new(Header::LoginResp(resp), reply.data).encode(Digests::default());
        if let Err(e) = write_all(writer, &bytes).await {
            // A session or connection entered but never told of is left.
            if let Some((core, member)) = &joined {
                registry.leave_session(core, member);
            }
            return Err(e);
        }
        match progress {
            Progress::Continue => continue,
            Progress::Failed => {
                info!(%peer, initiator = ?login.initiator, target = ?login.target, status = ?reply.status, "login refused");
                return Ok(());
            }
            Progress::Complete => {
                let Some(j) = joined else { return Ok(()) };
                info!(%peer, initiator = ?login.initiator, target = ?login.target, tsih = j.0.tsih, cid = req.cid, "login complete");
                break j;
            }
        }
    };
    let params = core.params.for_connection(&login.params);
    let mut ffp = Ffp::new(
        core.clone(),
        member.cid,
        params,
        stat_sn,
        registry.clone(),
        local.to_string(),
    );
    let result = full_feature(
        reader,
        writer,
        &mut ffp,
        &mut member.stop,
        registry.keepalive,
    )
    .await;
    let last = registry.leave_session(&core, &member);
    ffp.end(last);
    result
}

/// Puts a connection whose login completed into its session: a new one
/// for a leading login (TSIH 0), the live one it names otherwise. Refused
/// with a login status when there is no such session or no room in it.
fn enter_session(
    registry: &Arc<Registry>,
    login: &Login,
    req: &bhs::LoginReq,
    peer: &str,
) -> Result<(Arc<SessionCore>, Member), (u8, u8)> {
    let initiator = login.initiator.clone().unwrap_or_default();
    let target = match login.session_type {
        SessionType::Normal => login.target.clone(),
        SessionType::Discovery => None,
    };
    if req.tsih != 0 {
        return registry.join_session(req.tsih, &initiator, req.isid, target.as_deref(), req.cid);
    }
    let info = SessionInfo {
        tsih: 0,
        initiator: initiator.clone(),
        isid: req.isid.iter().map(|b| format!("{b:02x}")).collect(),
        target: login.target.clone().unwrap_or_default(),
        peer: peer.to_string(),
        connections: 1,
    };
    let make = |tsih| {
        SessionCore::new(
            tsih,
            initiator,
            req.isid,
            target,
            login.params.clone(),
            req.cmd_sn,
            registry.portal_group,
        )
    };
    Ok(registry.open_session(info, make, req.cid))
}

/// What an idle connection is waiting for.
enum Idle {
    /// Nothing: the next deadline sends a ping.
    Quiet,
    /// A ping went out at this deadline's start: the next one drops the
    /// connection.
    Pinged,
}

async fn full_feature(
    reader: &mut Reader,
    writer: &mut Writer,
    ffp: &mut Ffp,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    keepalive: Option<Duration>,
) -> Result<(), ConnError> {
    let digests = ffp.params().digests;
    let max_data = ffp.params().target_mrdsl as usize;
    let mut out = Outbox::new(digests);
    let interval = keepalive.unwrap_or(Duration::MAX);
    let mut deadline = tokio::time::Instant::now().checked_add(interval);
    let mut idle = Idle::Quiet;
    let mut pings = 0u32;
    let mut advances = ffp.numbering().watch();
    loop {
        if reader.buffer().is_empty() {
            // Wait for bytes (cancel-safe: they stay in the buffer), for the
            // session to be taken over, or for the keepalive deadline.
            tokio::select! {
                got = reader.fill_buf() => {
                    if got?.is_empty() {
                        return Ok(());
                    }
                }
                _ = stop.changed() => {
                    info!("the session or this connection was logged out or reinstated elsewhere: closing this connection");
                    return Ok(());
                }
                // Another connection of the session took the CmdSN that
                // commands held here were waiting for.
                _ = advances.changed(), if ffp.holds_commands() => {
                    let event = blocking(|| ffp.run_released(&mut out));
                    out.send(writer).await?;
                    if event == Event::Close {
                        return Ok(());
                    }
                    continue;
                }
                () = sleep_until_or_never(deadline) => {
                    match idle {
                        Idle::Quiet => {
                            pings = pings.wrapping_add(1);
                            let mut ping = Vec::new();
                            ffp.ping(pings).encode_into(digests, &mut ping);
                            write_all(writer, &ping).await?;
                            idle = Idle::Pinged;
                        }
                        Idle::Pinged => {
                            warn!(secs = interval.as_secs(), "the initiator did not answer a NOP-In ping: dropping the connection");
                            return Err(ConnError::Timeout);
                        }
                    }
                    deadline = tokio::time::Instant::now().checked_add(interval);
                    continue;
                }
            }
        }
        // Anything from the initiator shows it is alive.
        idle = Idle::Quiet;
        deadline = tokio::time::Instant::now().checked_add(interval);
        let frame = read_frame(reader, digests, max_data).await;
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(ConnError::Frame(e)) => {
                warn!(error = %e, "unreadable PDU: closing the connection");
                return Err(ConnError::Frame(e));
            }
            Err(e) => return Err(e),
        };
        let event = match frame {
            Frame::Pdu(pdu) => blocking(|| ffp.handle(pdu, &mut out)),
            Frame::Bad(e, raw) => {
                let reason = match e {
                    FrameError::Bhs(_) => reject::PROTOCOL,
                    FrameError::AhsOverrun { .. } => reject::INVALID_FIELD,
                    FrameError::DataDigest { .. } => reject::DATA_DIGEST,
                    e => return Err(e.into()),
                };
                warn!(reason, error = %e, "rejecting a PDU");
                let mut r = ffp.reject(reason, &Header::NopIn(bhs::NopIn::default()));
                r.data = raw.to_vec();
                out.push(r);
                Event::Continue
            }
        };
        if event == Event::Close || reader.buffer().is_empty() || out.frames.len() > (1 << 20) {
            out.send(writer).await?;
        }
        if event == Event::Close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A reader fed with `bytes` over a real socket.
    async fn reader_of(bytes: Vec<u8>) -> Reader {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok(mut s) = TcpStream::connect(addr).await {
                let _ = s.write_all(&bytes).await;
            }
        });
        let (s, _) = l.accept().await.expect("accept");
        BufReader::with_capacity(4096, s.into_split().0)
    }

    fn data_out(len: usize) -> Pdu {
        Pdu::new(
            Header::DataOut(bhs::DataOut {
                final_: true,
                itt: 7,
                ..Default::default()
            }),
            (0..len).map(|i| i as u8).collect(),
        )
    }

    #[tokio::test]
    async fn frames_read_whole_and_bad_ones_keep_the_stream_in_step() {
        let d = Digests {
            header: true,
            data: true,
        };
        // Larger than the read buffer, so part of it bypasses the buffer.
        let good = data_out(10_001);
        let mut bad = data_out(5).encode(d);
        let n = bad.len();
        bad[n - 1] ^= 1;
        let mut bytes = good.encode(d);
        bytes.extend_from_slice(&bad);
        bytes.extend_from_slice(&good.encode(d));
        let mut r = reader_of(bytes).await;
        assert!(matches!(read_frame(&mut r, d, 65536).await, Ok(Some(Frame::Pdu(p))) if p == good));
        assert!(matches!(
            read_frame(&mut r, d, 65536).await,
            Ok(Some(Frame::Bad(FrameError::DataDigest { .. }, raw))) if raw[..] == bad[..BHS_LEN]
        ));
        assert!(matches!(read_frame(&mut r, d, 65536).await, Ok(Some(Frame::Pdu(p))) if p == good));
        assert!(matches!(read_frame(&mut r, d, 65536).await, Ok(None)));
    }

    #[tokio::test]
    async fn a_bad_header_digest_or_a_short_frame_ends_the_connection() {
        let d = Digests {
            header: true,
            data: true,
        };
        let mut bytes = data_out(8).encode(d);
        bytes[BHS_LEN] ^= 1;
        let mut r = reader_of(bytes).await;
        assert!(matches!(
            read_frame(&mut r, d, 65536).await,
            Err(ConnError::Frame(FrameError::HeaderDigest { .. }))
        ));
        let mut bytes = data_out(8).encode(d);
        bytes.truncate(bytes.len() - 2);
        let mut r = reader_of(bytes).await;
        assert!(matches!(
            read_frame(&mut r, d, 65536).await,
            Err(ConnError::Io(_))
        ));
    }

    #[tokio::test]
    async fn outbox_sends_split_reads_as_the_per_pdu_encoding_would() {
        let d = Digests {
            header: true,
            data: true,
        };
        // Odd lengths, so padding follows each piece.
        let data: Vec<u8> = (0..10_003).map(|i| (i * 7) as u8).collect();
        let pieces: Vec<(bhs::DataIn, Range<usize>)> = [0..4001, 4001..8002, 8002..10_003]
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let h = bhs::DataIn {
                    itt: 9,
                    data_sn: i as u32,
                    buffer_offset: r.start as u32,
                    final_: r.end == 10_003,
                    ..Default::default()
                };
                (h, r)
            })
            .collect();
        let nop = Pdu::new(Header::NopIn(bhs::NopIn::default()), vec![1, 2, 3]);
        let mut want = Vec::new();
        want.push(nop.clone());
        want.push_data_in(data.clone(), pieces.clone());
        want.push(nop.clone());
        let mut box_ = Outbox::new(d);
        box_.push(nop.clone());
        box_.push_data_in(data, pieces);
        box_.push(nop);

        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            got
        });
        let (s, _) = l.accept().await.expect("accept");
        let mut w = BufWriter::with_capacity(4096, s.into_split().1);
        box_.send(&mut w).await.expect("send");
        assert_eq!(box_.frames.len(), 0);
        w.shutdown().await.expect("shutdown");
        let got = client.await.expect("client");
        let wire: Vec<u8> = want.iter().flat_map(|p| p.encode(d)).collect();
        assert_eq!(want.len(), 5);
        assert!(
            got == wire,
            "the vectored send differs from the PDUs' encoding"
        );
    }
}
