//! A small blocking iSCSI initiator: one connection, one command at a
//! time, no digests. Ferry's tests use it to drive a target directly (raw
//! CDBs such as PERSISTENT RESERVE, FUA writes); the data path uses
//! [`super::Session`].

use crate::login::chap;
use crate::pdu::bhs::{self, Header};
use crate::pdu::frame::frame_len;
use crate::pdu::{text, Digests, Pdu, BHS_LEN};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Why an initiator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InitiatorError {
    /// Socket error (connection refused, timed out, reset...).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The target sent a PDU that does not decode.
    #[error("bad PDU from target")]
    Frame(#[from] crate::pdu::FrameError),
    /// The login was refused.
    #[error("login refused with status {0:#04x}/{1:#04x} ({text})", text = login_status_text(*.0, *.1))]
    Login(u8, u8),
    /// The target answered something unexpected.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// What a login status class/detail means (RFC 7143 11.13.5).
pub fn login_status_text(class: u8, detail: u8) -> &'static str {
    match (class, detail) {
        (1, _) => "redirected",
        (2, 0x01) => "authentication failed: wrong CHAP name or secret",
        (2, 0x02) => "not authorized: this initiator is not in the target's ACL",
        (2, 0x03) => "no such target",
        (2, 0x04) => "the target was removed",
        (2, 0x05) => "unsupported version",
        (2, 0x06) => "too many connections",
        (2, 0x07) => "missing parameter",
        (2, 0x08) => "this connection cannot be added to the session",
        (2, 0x09) => "the target refuses this session type",
        (2, 0x0a) => "no such session to add a connection to",
        (2, 0x0b) => "a request that is invalid during login",
        (2, _) => "initiator error",
        (3, 0x01) => "target error",
        (3, 0x02) => "the target's service is unavailable",
        (3, 0x03) => "the target is out of resources",
        _ => "unknown status",
    }
}

/// The result of one SCSI command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    /// SCSI status byte.
    pub status: u8,
    /// Data-In bytes.
    pub data: Vec<u8>,
    /// Sense data, if any.
    pub sense: Vec<u8>,
}

/// A logged-in normal session on one connection (or one connection of a
/// session that has several: see [`Session::join`]).
pub struct Session {
    stream: TcpStream,
    cmd_sn: u32,
    exp_stat_sn: u32,
    itt: u32,
    max_send: usize,
    tsih: u16,
    cid: u16,
    max_connections: u32,
}

/// Who logs in where: what [`Session::login_to`] needs.
#[derive(Debug, Clone, Copy)]
pub struct LoginTo<'a> {
    /// Portal, `host:port`.
    pub addr: &'a str,
    /// InitiatorName.
    pub initiator: &'a str,
    /// TargetName.
    pub target: &'a str,
    /// The initiator's session ID.
    pub isid: [u8; 6],
    /// One-way CHAP (user, secret).
    pub chap: Option<(&'a str, &'a str)>,
    /// MaxConnections to offer (a leading login; 1 is the default).
    pub max_connections: u32,
    /// Non-zero: add a connection to this live session.
    pub tsih: u16,
    /// The connection's ID.
    pub cid: u16,
    /// CmdSN of the login (the session's next one when adding).
    pub cmd_sn: u32,
}

fn read_pdu(s: &mut TcpStream) -> Result<Pdu, InitiatorError> {
    let mut bhs = [0u8; BHS_LEN];
    s.read_exact(&mut bhs)?;
    let n = frame_len(&bhs, Digests::default(), crate::pdu::MAX_DATA_SEGMENT)?;
    let mut buf = vec![0u8; n];
    buf[..BHS_LEN].copy_from_slice(&bhs);
    s.read_exact(&mut buf[BHS_LEN..])?;
    Ok(Pdu::parse(&buf, Digests::default(), crate::pdu::MAX_DATA_SEGMENT)?.0)
}

impl Session {
    /// Connects to `addr` and logs in to `target` as `initiator`, with
    /// one-way CHAP when `chap` (user, secret) is given.
    pub fn login(
        addr: &str,
        initiator: &str,
        target: &str,
        isid: [u8; 6],
        chap: Option<(&str, &str)>,
    ) -> Result<Session, InitiatorError> {
        Session::login_to(LoginTo {
            addr,
            initiator,
            target,
            isid,
            chap,
            max_connections: 1,
            tsih: 0,
            cid: 0,
            cmd_sn: 1,
        })
    }

    /// Adds connection `cid` to this session (a login naming its TSIH);
    /// the new connection's commands go on from `cmd_sn`.
    pub fn join(&self, to: LoginTo<'_>, cid: u16, cmd_sn: u32) -> Result<Session, InitiatorError> {
        Session::login_to(LoginTo {
            tsih: self.tsih,
            cid,
            cmd_sn,
            max_connections: 1,
            ..to
        })
    }

    /// Logs in as `to` says.
    pub fn login_to(to: LoginTo<'_>) -> Result<Session, InitiatorError> {
        let LoginTo {
            addr,
            initiator,
            target,
            isid,
            chap,
            ..
        } = to;
        // Bounded: a portal behind a dead link must not hang the caller
        // for the kernel's two minutes of SYN retries.
        let resolved = std::net::ToSocketAddrs::to_socket_addrs(addr)?
            .next()
            .ok_or_else(|| InitiatorError::Unexpected(format!("{addr} resolves to nothing")))?;
        let stream = TcpStream::connect_timeout(&resolved, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        let mut s = Session {
            stream,
            cmd_sn: to.cmd_sn,
            exp_stat_sn: 0,
            itt: 1,
            max_send: 8192,
            tsih: to.tsih,
            cid: to.cid,
            max_connections: 1,
        };
        let mut keys: text::Pairs = vec![
            ("InitiatorName".into(), initiator.into()),
            ("TargetName".into(), target.into()),
            ("SessionType".into(), "Normal".into()),
        ];
        if let Some((user, secret)) = chap {
            keys.push(("AuthMethod".into(), "CHAP".into()));
            s.login_step(isid, 0, 1, false, &keys)?;
            let r = s.login_step(isid, 0, 1, false, &[("CHAP_A".into(), "5".into())])?;
            let get = |k: &str| r.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
            let id: u8 = get("CHAP_I")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| InitiatorError::Unexpected("no CHAP_I".into()))?;
            let c = get("CHAP_C").ok_or_else(|| InitiatorError::Unexpected("no CHAP_C".into()))?;
            let c =
                chap::decode_binary(&c).map_err(|e| InitiatorError::Unexpected(e.to_string()))?;
            let resp = chap::hex(&chap::response(id, secret.as_bytes(), &c));
            s.login_step(
                isid,
                0,
                1,
                true,
                &[("CHAP_N".into(), user.into()), ("CHAP_R".into(), resp)],
            )?;
            keys = Vec::new();
        }
        keys.push(("MaxRecvDataSegmentLength".into(), "262144".into()));
        if to.tsih == 0 {
            // Session-wide keys: the leading login alone offers them.
            keys.push(("ImmediateData".into(), "Yes".into()));
            keys.push(("InitialR2T".into(), "Yes".into()));
            keys.push(("MaxConnections".into(), to.max_connections.to_string()));
        }
        let r = s.login_step(isid, 1, 3, true, &keys)?;
        let num = |key: &str| {
            r.iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.parse::<usize>().ok())
        };
        if let Some(v) = num("MaxRecvDataSegmentLength") {
            s.max_send = v;
        }
        s.max_connections = num("MaxConnections").map_or(1, |v| v as u32);
        Ok(s)
    }

    fn login_step(
        &mut self,
        isid: [u8; 6],
        csg: u8,
        nsg: u8,
        transit: bool,
        keys: &[(String, String)],
    ) -> Result<text::Pairs, InitiatorError> {
        let h = bhs::LoginReq {
            transit,
            cont: false,
            csg,
            nsg,
            version_max: 0,
            version_min: 0,
            isid,
            tsih: self.tsih,
            itt: 0,
            cid: self.cid,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.stream.write_all(
            &Pdu::new(Header::LoginReq(h), text::encode(keys)).encode(Digests::default()),
        )?;
        let p = read_pdu(&mut self.stream)?;
        let Header::LoginResp(r) = p.header else {
            return Err(InitiatorError::Unexpected(format!(
                "{:?} during login",
                p.header.opcode()
            )));
        };
        if r.status_class != 0 {
            return Err(InitiatorError::Login(r.status_class, r.status_detail));
        }
        self.exp_stat_sn = r.stat_sn.wrapping_add(1);
        if r.transit && r.nsg == 3 {
            self.tsih = r.tsih;
        }
        text::parse(&p.data).map_err(|e| InitiatorError::Unexpected(e.to_string()))
    }

    /// Runs one command on `lun`: `data_out` is sent (immediate data, then
    /// R2T by R2T), up to `read_len` bytes are read back.
    pub fn command(
        &mut self,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        read_len: u32,
    ) -> Result<CommandResult, InitiatorError> {
        let mut c = [0u8; 16];
        let n = cdb.len().min(16);
        c[..n].copy_from_slice(&cdb[..n]);
        let itt = self.itt;
        self.itt = self.itt.wrapping_add(1);
        let lun_field = u64::from_be_bytes(crate::scsi::encode_lun(lun));
        let immediate = data_out.len().min(self.max_send).min(65536);
        let h = bhs::ScsiCommand {
            immediate: false,
            final_: true,
            read: read_len > 0,
            write: !data_out.is_empty(),
            attr: 1,
            lun: lun_field,
            itt,
            edtl: if data_out.is_empty() {
                read_len
            } else {
                data_out.len() as u32
            },
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: c,
        };
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.stream.write_all(
            &Pdu::new(Header::ScsiCommand(h), data_out[..immediate].to_vec())
                .encode(Digests::default()),
        )?;
        let mut data = Vec::new();
        loop {
            let p = read_pdu(&mut self.stream)?;
            match p.header {
                Header::R2t(r) => {
                    let mut off = r.buffer_offset as usize;
                    let end = (off + r.desired_len as usize).min(data_out.len());
                    let mut sn = 0;
                    while off < end {
                        let m = (end - off).min(self.max_send);
                        let d = bhs::DataOut {
                            final_: off + m == end,
                            lun: lun_field,
                            itt,
                            ttt: r.ttt,
                            exp_stat_sn: self.exp_stat_sn,
                            data_sn: sn,
                            buffer_offset: off as u32,
                        };
                        self.stream.write_all(
                            &Pdu::new(Header::DataOut(d), data_out[off..off + m].to_vec())
                                .encode(Digests::default()),
                        )?;
                        sn += 1;
                        off += m;
                    }
                }
                Header::DataIn(d) => {
                    data.extend_from_slice(&p.data);
                    if d.has_status {
                        self.exp_stat_sn = d.stat_sn.wrapping_add(1);
                        return Ok(CommandResult {
                            status: d.status,
                            data,
                            sense: Vec::new(),
                        });
                    }
                }
                Header::ScsiResponse(r) => {
                    self.exp_stat_sn = r.stat_sn.wrapping_add(1);
                    let sense = p.data.get(2..).map(<[u8]>::to_vec).unwrap_or_default();
                    return Ok(CommandResult {
                        status: r.status,
                        data,
                        sense,
                    });
                }
                Header::NopIn(n) if n.ttt != u32::MAX => {
                    // The target's keepalive ping: answer it, then go on
                    // waiting for the command.
                    let pong = bhs::NopOut {
                        immediate: true,
                        lun: n.lun,
                        itt: u32::MAX,
                        ttt: n.ttt,
                        cmd_sn: self.cmd_sn,
                        exp_stat_sn: self.exp_stat_sn,
                    };
                    self.stream.write_all(
                        &Pdu::new(Header::NopOut(pong), Vec::new()).encode(Digests::default()),
                    )?;
                }
                Header::NopIn(_) | Header::AsyncMsg(_) => {}
                other => {
                    return Err(InitiatorError::Unexpected(format!(
                        "{:?} during a command",
                        other.opcode()
                    )))
                }
            }
        }
    }

    /// Runs a command and retries once past a UNIT ATTENTION.
    pub fn command_past_ua(
        &mut self,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        read_len: u32,
    ) -> Result<CommandResult, InitiatorError> {
        let r = self.command(lun, cdb, data_out, read_len)?;
        if r.status == 2
            && r.sense.get(2).map(|k| k & 0x0f) == Some(crate::scsi::sense::key::UNIT_ATTENTION)
        {
            return self.command(lun, cdb, data_out, read_len);
        }
        Ok(r)
    }

    /// The session's handle, as the target assigned it.
    pub fn tsih(&self) -> u16 {
        self.tsih
    }

    /// MaxConnections as negotiated.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The CmdSN the next command carries.
    pub fn cmd_sn(&self) -> u32 {
        self.cmd_sn
    }

    /// Numbers the next command `cmd_sn` (commands of a session with
    /// several connections share one numbering the caller keeps).
    pub fn set_cmd_sn(&mut self, cmd_sn: u32) {
        self.cmd_sn = cmd_sn;
    }

    /// Logs out (close the session).
    pub fn logout(mut self) -> Result<(), InitiatorError> {
        self.logout_with(0, self.cid).map(|_| ())
    }

    /// Sends a Logout Request with `reason` (0 close the session, 1 close
    /// connection `cid`, 2 remove it for recovery) and returns the
    /// target's response code (0 done, 1 no such CID, 2 recovery not
    /// supported).
    pub fn logout_with(&mut self, reason: u8, cid: u16) -> Result<u8, InitiatorError> {
        let h = bhs::LogoutReq {
            immediate: true,
            reason,
            itt: self.itt,
            cid,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.itt = self.itt.wrapping_add(1);
        self.stream
            .write_all(&Pdu::new(Header::LogoutReq(h), Vec::new()).encode(Digests::default()))?;
        let p = read_pdu(&mut self.stream)?;
        match p.header {
            Header::LogoutResp(r) => Ok(r.response),
            other => Err(InitiatorError::Unexpected(format!(
                "{:?} to a logout",
                other.opcode()
            ))),
        }
    }
}
