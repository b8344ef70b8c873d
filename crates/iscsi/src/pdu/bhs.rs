//! The basic header segment: one typed struct per opcode, decoded from and
//! encoded to 48 bytes. Bytes 4..8 (AHS and data segment lengths) belong to
//! the frame layer and are left alone here.

use super::BHS_LEN;

/// Why a basic header segment was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BhsError {
    /// The opcode is not one RFC 7143 defines.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
}

/// Every opcode of RFC 7143 section 11.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Opcode {
    NopOut = 0x00,
    ScsiCommand = 0x01,
    TaskMgmtReq = 0x02,
    LoginReq = 0x03,
    TextReq = 0x04,
    DataOut = 0x05,
    LogoutReq = 0x06,
    Snack = 0x10,
    NopIn = 0x20,
    ScsiResponse = 0x21,
    TaskMgmtResp = 0x22,
    LoginResp = 0x23,
    TextResp = 0x24,
    DataIn = 0x25,
    LogoutResp = 0x26,
    R2t = 0x31,
    AsyncMsg = 0x32,
    Reject = 0x3f,
}

impl Opcode {
    /// The opcode for the low six bits of byte 0.
    pub fn from_u8(v: u8) -> Result<Self, BhsError> {
        use Opcode::*;
        Ok(match v & 0x3f {
            0x00 => NopOut,
            0x01 => ScsiCommand,
            0x02 => TaskMgmtReq,
            0x03 => LoginReq,
            0x04 => TextReq,
            0x05 => DataOut,
            0x06 => LogoutReq,
            0x10 => Snack,
            0x20 => NopIn,
            0x21 => ScsiResponse,
            0x22 => TaskMgmtResp,
            0x23 => LoginResp,
            0x24 => TextResp,
            0x25 => DataIn,
            0x26 => LogoutResp,
            0x31 => R2t,
            0x32 => AsyncMsg,
            0x3f => Reject,
            other => return Err(BhsError::UnknownOpcode(other)),
        })
    }
}

/// Reads a big-endian u32 at `off`.
fn g32(b: &[u8; BHS_LEN], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn g16(b: &[u8; BHS_LEN], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}
fn g64(b: &[u8; BHS_LEN], off: usize) -> u64 {
    (u64::from(g32(b, off)) << 32) | u64::from(g32(b, off + 4))
}
fn p32(b: &mut [u8; BHS_LEN], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
fn p16(b: &mut [u8; BHS_LEN], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}
fn p64(b: &mut [u8; BHS_LEN], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// NOP-Out (initiator ping or answer to a NOP-In).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SCSI Command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ScsiCommand {
    pub immediate: bool,
    /// F: no unsolicited Data-Out follows.
    pub final_: bool,
    pub read: bool,
    pub write: bool,
    pub attr: u8,
    pub lun: u64,
    pub itt: u32,
    pub edtl: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub cdb: [u8; 16],
}

/// Task Management Function request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TaskMgmtReq {
    pub immediate: bool,
    pub function: u8,
    pub lun: u64,
    pub itt: u32,
    pub ref_task_tag: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

/// Login Request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LoginReq {
    pub transit: bool,
    pub cont: bool,
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// Text Request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TextReq {
    pub immediate: bool,
    pub final_: bool,
    pub cont: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SCSI Data-Out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DataOut {
    pub final_: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
}

/// Logout Request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LogoutReq {
    pub immediate: bool,
    pub reason: u8,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SNACK Request (only meaningful at ErrorRecoveryLevel > 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Snack {
    pub kind: u8,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

/// NOP-In (target ping or answer to a NOP-Out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NopIn {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// SCSI Response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ScsiResponse {
    pub bidi_overflow: bool,
    pub bidi_underflow: bool,
    pub overflow: bool,
    pub underflow: bool,
    pub response: u8,
    pub status: u8,
    pub itt: u32,
    pub snack_tag: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_data_sn: u32,
    pub bidi_residual: u32,
    pub residual: u32,
}

/// Task Management Function response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TaskMgmtResp {
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// Login Response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LoginResp {
    pub transit: bool,
    pub cont: bool,
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub status_class: u8,
    pub status_detail: u8,
}

/// Text Response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TextResp {
    pub final_: bool,
    pub cont: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// SCSI Data-In.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DataIn {
    pub final_: bool,
    pub ack: bool,
    pub overflow: bool,
    pub underflow: bool,
    /// S: the status byte is valid and ends the command.
    pub has_status: bool,
    pub status: u8,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub residual: u32,
}

/// Logout Response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LogoutResp {
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub time2wait: u16,
    pub time2retain: u16,
}

/// Ready To Transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct R2t {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_len: u32,
}

/// Asynchronous Message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct AsyncMsg {
    pub lun: u64,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub event: u8,
    pub vcode: u8,
    pub param1: u16,
    pub param2: u16,
    pub param3: u16,
}

/// Reject (the rejected header travels in the data segment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Reject {
    pub reason: u8,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
}

/// A decoded basic header segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Header {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmtReq(TaskMgmtReq),
    LoginReq(LoginReq),
    TextReq(TextReq),
    DataOut(DataOut),
    LogoutReq(LogoutReq),
    Snack(Snack),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResp(TaskMgmtResp),
    LoginResp(LoginResp),
    TextResp(TextResp),
    DataIn(DataIn),
    LogoutResp(LogoutResp),
    R2t(R2t),
    AsyncMsg(AsyncMsg),
    Reject(Reject),
}

impl Header {
    /// The opcode of this header.
    pub fn opcode(&self) -> Opcode {
        match self {
            Header::NopOut(_) => Opcode::NopOut,
            Header::ScsiCommand(_) => Opcode::ScsiCommand,
            Header::TaskMgmtReq(_) => Opcode::TaskMgmtReq,
            Header::LoginReq(_) => Opcode::LoginReq,
            Header::TextReq(_) => Opcode::TextReq,
            Header::DataOut(_) => Opcode::DataOut,
            Header::LogoutReq(_) => Opcode::LogoutReq,
            Header::Snack(_) => Opcode::Snack,
            Header::NopIn(_) => Opcode::NopIn,
            Header::ScsiResponse(_) => Opcode::ScsiResponse,
            Header::TaskMgmtResp(_) => Opcode::TaskMgmtResp,
            Header::LoginResp(_) => Opcode::LoginResp,
            Header::TextResp(_) => Opcode::TextResp,
            Header::DataIn(_) => Opcode::DataIn,
            Header::LogoutResp(_) => Opcode::LogoutResp,
            Header::R2t(_) => Opcode::R2t,
            Header::AsyncMsg(_) => Opcode::AsyncMsg,
            Header::Reject(_) => Opcode::Reject,
        }
    }

    /// Decodes the typed fields of a 48-byte header.
    pub fn decode(b: &[u8; BHS_LEN]) -> Result<Header, BhsError> {
        let op = Opcode::from_u8(b[0])?;
        let imm = b[0] & 0x40 != 0;
        let f = b[1] & 0x80 != 0;
        let c = b[1] & 0x40 != 0;
        Ok(match op {
            Opcode::NopOut => Header::NopOut(NopOut {
                immediate: imm,
                lun: g64(b, 8),
                itt: g32(b, 16),
                ttt: g32(b, 20),
                cmd_sn: g32(b, 24),
                exp_stat_sn: g32(b, 28),
            }),
            Opcode::ScsiCommand => {
                let mut cdb = [0u8; 16];
                cdb.copy_from_slice(&b[32..48]);
                Header::ScsiCommand(ScsiCommand {
                    immediate: imm,
                    final_: f,
                    read: b[1] & 0x40 != 0,
                    write: b[1] & 0x20 != 0,
                    attr: b[1] & 0x07,
                    lun: g64(b, 8),
                    itt: g32(b, 16),
                    edtl: g32(b, 20),
                    cmd_sn: g32(b, 24),
                    exp_stat_sn: g32(b, 28),
                    cdb,
                })
            }
            Opcode::TaskMgmtReq => Header::TaskMgmtReq(TaskMgmtReq {
                immediate: imm,
                function: b[1] & 0x7f,
                lun: g64(b, 8),
                itt: g32(b, 16),
                ref_task_tag: g32(b, 20),
                cmd_sn: g32(b, 24),
                exp_stat_sn: g32(b, 28),
                ref_cmd_sn: g32(b, 32),
                exp_data_sn: g32(b, 36),
            }),
            Opcode::LoginReq => {
                let mut isid = [0u8; 6];
                isid.copy_from_slice(&b[8..14]);
                Header::LoginReq(LoginReq {
                    transit: f,
                    cont: c,
                    csg: (b[1] >> 2) & 3,
                    nsg: b[1] & 3,
                    version_max: b[2],
                    version_min: b[3],
                    isid,
                    tsih: g16(b, 14),
                    itt: g32(b, 16),
                    cid: g16(b, 20),
                    cmd_sn: g32(b, 24),
                    exp_stat_sn: g32(b, 28),
                })
            }
            Opcode::TextReq => Header::TextReq(TextReq {
                immediate: imm,
                final_: f,
                cont: c,
                lun: g64(b, 8),
                itt: g32(b, 16),
                ttt: g32(b, 20),
                cmd_sn: g32(b, 24),
                exp_stat_sn: g32(b, 28),
            }),
            Opcode::DataOut => Header::DataOut(DataOut {
                final_: f,
                lun: g64(b, 8),
                itt: g32(b, 16),
                ttt: g32(b, 20),
                exp_stat_sn: g32(b, 28),
                data_sn: g32(b, 36),
                buffer_offset: g32(b, 40),
            }),
            Opcode::LogoutReq => Header::LogoutReq(LogoutReq {
                immediate: imm,
                reason: b[1] & 0x7f,
                itt: g32(b, 16),
                cid: g16(b, 20),
                cmd_sn: g32(b, 24),
                exp_stat_sn: g32(b, 28),
            }),
            Opcode::Snack => Header::Snack(Snack {
                kind: b[1] & 0x0f,
                lun: g64(b, 8),
                itt: g32(b, 16),
                ttt: g32(b, 20),
                exp_stat_sn: g32(b, 28),
                beg_run: g32(b, 40),
                run_length: g32(b, 44),
            }),
            Opcode::NopIn => Header::NopIn(NopIn {
                lun: g64(b, 8),
                itt: g32(b, 16),
                ttt: g32(b, 20),
                stat_sn: g32(b, 24),
                exp_cmd_sn: g32(b, 28),
                max_cmd_sn: g32(b, 32),
            }),
            Opcode::ScsiResponse => Header::ScsiResponse(ScsiResponse {
                bidi_overflow: b[1] & 0x10 != 0,
                bidi_underflow: b[1] & 0x08 != 0,
                overflow: b[1] & 0x04 != 0,
                underflow: b[1] & 0x02 != 0,
                response: b[2],
                status: b[3],
                itt: g32(b, 16),
                snack_tag: g32(b, 20),
                stat_sn: g32(b, 24),
                exp_cmd_sn: g32(b, 28),
                max_cmd_sn: g32(b, 32),
                exp_data_sn: g32(b, 36),
                bidi_residual: g32(b, 40),
                residual: g32(b, 44),
            }),
            Opcode::TaskMgmtResp => Header::TaskMgmtResp(TaskMgmtResp {
                response: b[2],
                itt: g32(b, 16),
                stat_sn: g32(b, 24),
                exp_cmd_sn: g32(b, 28),
                max_cmd_sn: g32(b, 32),
            }),
            Opcode::LoginResp => {
                let mut isid = [0u8; 6];
                isid.copy_from_slice(&b[8..14]);
                Header::LoginResp(LoginResp {
                    transit: f,
                    cont: c,
                    csg: (b[1] >> 2) & 3,
                    nsg: b[1] & 3,
                    version_max: b[2],
                    version_active: b[3],
                    isid,
                    tsih: g16(b, 14),
                    itt: g32(b, 16),
                    stat_sn: g32(b, 24),
                    exp_cmd_sn: g32(b, 28),
                    max_cmd_sn: g32(b, 32),
                    status_class: b[36],
                    status_detail: b[37],
                })
            }
            Opcode::TextResp => Header::TextResp(TextResp {
                final_: f,
                cont: c,
                lun: g64(b, 8),
                itt: g32(b, 16),
                ttt: g32(b, 20),
                stat_sn: g32(b, 24),
                exp_cmd_sn: g32(b, 28),
                max_cmd_sn: g32(b, 32),
            }),
            Opcode::DataIn => Header::DataIn(DataIn {
                final_: f,
                ack: b[1] & 0x40 != 0,
                overflow: b[1] & 0x04 != 0,
                underflow: b[1] & 0x02 != 0,
                has_status: b[1] & 0x01 != 0,
                status: b[3],
                lun: g64(b, 8),
                itt: g32(b, 16),
                ttt: g32(b, 20),
                stat_sn: g32(b, 24),
                exp_cmd_sn: g32(b, 28),
                max_cmd_sn: g32(b, 32),
                data_sn: g32(b, 36),
                buffer_offset: g32(b, 40),
                residual: g32(b, 44),
            }),
            Opcode::LogoutResp => Header::LogoutResp(LogoutResp {
                response: b[2],
                itt: g32(b, 16),
                stat_sn: g32(b, 24),
                exp_cmd_sn: g32(b, 28),
                max_cmd_sn: g32(b, 32),
                time2wait: g16(b, 40),
                time2retain: g16(b, 42),
            }),
            Opcode::R2t => Header::R2t(R2t {
                lun: g64(b, 8),
                itt: g32(b, 16),
                ttt: g32(b, 20),
                stat_sn: g32(b, 24),
                exp_cmd_sn: g32(b, 28),
                max_cmd_sn: g32(b, 32),
                r2t_sn: g32(b, 36),
                buffer_offset: g32(b, 40),
                desired_len: g32(b, 44),
            }),
            Opcode::AsyncMsg => Header::AsyncMsg(AsyncMsg {
                lun: g64(b, 8),
                stat_sn: g32(b, 24),
                exp_cmd_sn: g32(b, 28),
                max_cmd_sn: g32(b, 32),
                event: b[36],
                vcode: b[37],
                param1: g16(b, 38),
                param2: g16(b, 40),
                param3: g16(b, 42),
            }),
            Opcode::Reject => Header::Reject(Reject {
                reason: b[2],
                stat_sn: g32(b, 24),
                exp_cmd_sn: g32(b, 28),
                max_cmd_sn: g32(b, 32),
                data_sn: g32(b, 36),
            }),
        })
    }

    /// Encodes the typed fields into a 48-byte header (lengths left zero).
    pub fn encode(&self) -> [u8; BHS_LEN] {
        let mut b = [0u8; BHS_LEN];
        b[0] = self.opcode() as u8;
        let imm = |b: &mut [u8; BHS_LEN], on: bool| {
            if on {
                b[0] |= 0x40
            }
        };
        let bit = |on: bool, v: u8| if on { v } else { 0 };
        match self {
            Header::NopOut(h) => {
                imm(&mut b, h.immediate);
                b[1] = 0x80;
                p64(&mut b, 8, h.lun);
                p32(&mut b, 16, h.itt);
                p32(&mut b, 20, h.ttt);
                p32(&mut b, 24, h.cmd_sn);
                p32(&mut b, 28, h.exp_stat_sn);
            }
            Header::ScsiCommand(h) => {
                imm(&mut b, h.immediate);
                b[1] = bit(h.final_, 0x80) | bit(h.read, 0x40) | bit(h.write, 0x20) | (h.attr & 7);
                p64(&mut b, 8, h.lun);
                p32(&mut b, 16, h.itt);
                p32(&mut b, 20, h.edtl);
                p32(&mut b, 24, h.cmd_sn);
                p32(&mut b, 28, h.exp_stat_sn);
                b[32..48].copy_from_slice(&h.cdb);
            }
            Header::TaskMgmtReq(h) => {
                imm(&mut b, h.immediate);
                b[1] = 0x80 | (h.function & 0x7f);
                p64(&mut b, 8, h.lun);
                p32(&mut b, 16, h.itt);
                p32(&mut b, 20, h.ref_task_tag);
                p32(&mut b, 24, h.cmd_sn);
                p32(&mut b, 28, h.exp_stat_sn);
                p32(&mut b, 32, h.ref_cmd_sn);
                p32(&mut b, 36, h.exp_data_sn);
            }
            Header::LoginReq(h) => {
                b[0] |= 0x40;
                b[1] = bit(h.transit, 0x80) | bit(h.cont, 0x40) | ((h.csg & 3) << 2) | (h.nsg & 3);
                b[2] = h.version_max;
                b[3] = h.version_min;
                b[8..14].copy_from_slice(&h.isid);
                p16(&mut b, 14, h.tsih);
                p32(&mut b, 16, h.itt);
                p16(&mut b, 20, h.cid);
                p32(&mut b, 24, h.cmd_sn);
                p32(&mut b, 28, h.exp_stat_sn);
            }
            Header::TextReq(h) => {
                imm(&mut b, h.immediate);
                b[1] = bit(h.final_, 0x80) | bit(h.cont, 0x40);
                p64(&mut b, 8, h.lun);
                p32(&mut b, 16, h.itt);
                p32(&mut b, 20, h.ttt);
                p32(&mut b, 24, h.cmd_sn);
                p32(&mut b, 28, h.exp_stat_sn);
            }
            Header::DataOut(h) => {
                b[1] = bit(h.final_, 0x80);
                p64(&mut b, 8, h.lun);
                p32(&mut b, 16, h.itt);
                p32(&mut b, 20, h.ttt);
                p32(&mut b, 28, h.exp_stat_sn);
                p32(&mut b, 36, h.data_sn);
                p32(&mut b, 40, h.buffer_offset);
            }
            Header::LogoutReq(h) => {
                imm(&mut b, h.immediate);
                b[1] = 0x80 | (h.reason & 0x7f);
                p32(&mut b, 16, h.itt);
                p16(&mut b, 20, h.cid);
                p32(&mut b, 24, h.cmd_sn);
                p32(&mut b, 28, h.exp_stat_sn);
            }
            Header::Snack(h) => {
                b[1] = 0x80 | (h.kind & 0x0f);
                p64(&mut b, 8, h.lun);
                p32(&mut b, 16, h.itt);
                p32(&mut b, 20, h.ttt);
                p32(&mut b, 28, h.exp_stat_sn);
                p32(&mut b, 40, h.beg_run);
                p32(&mut b, 44, h.run_length);
            }
            Header::NopIn(h) => {
                b[1] = 0x80;
                p64(&mut b, 8, h.lun);
                p32(&mut b, 16, h.itt);
                p32(&mut b, 20, h.ttt);
                p32(&mut b, 24, h.stat_sn);
                p32(&mut b, 28, h.exp_cmd_sn);
                p32(&mut b, 32, h.max_cmd_sn);
            }
            Header::ScsiResponse(h) => {
                b[1] = 0x80
                    | bit(h.bidi_overflow, 0x10)
                    | bit(h.bidi_underflow, 0x08)
                    | bit(h.overflow, 0x04)
                    | bit(h.underflow, 0x02);
                b[2] = h.response;
                b[3] = h.status;
                p32(&mut b, 16, h.itt);
                p32(&mut b, 20, h.snack_tag);
                p32(&mut b, 24, h.stat_sn);
                p32(&mut b, 28, h.exp_cmd_sn);
                p32(&mut b, 32, h.max_cmd_sn);
                p32(&mut b, 36, h.exp_data_sn);
                p32(&mut b, 40, h.bidi_residual);
                p32(&mut b, 44, h.residual);
            }
            Header::TaskMgmtResp(h) => {
                b[1] = 0x80;
                b[2] = h.response;
                p32(&mut b, 16, h.itt);
                p32(&mut b, 24, h.stat_sn);
                p32(&mut b, 28, h.exp_cmd_sn);
                p32(&mut b, 32, h.max_cmd_sn);
            }
            Header::LoginResp(h) => {
                b[1] = bit(h.transit, 0x80) | bit(h.cont, 0x40) | ((h.csg & 3) << 2) | (h.nsg & 3);
                b[2] = h.version_max;
                b[3] = h.version_active;
                b[8..14].copy_from_slice(&h.isid);
                p16(&mut b, 14, h.tsih);
                p32(&mut b, 16, h.itt);
                p32(&mut b, 24, h.stat_sn);
                p32(&mut b, 28, h.exp_cmd_sn);
                p32(&mut b, 32, h.max_cmd_sn);
                b[36] = h.status_class;
                b[37] = h.status_detail;
            }
            Header::TextResp(h) => {
                b[1] = bit(h.final_, 0x80) | bit(h.cont, 0x40);
                p64(&mut b, 8, h.lun);
                p32(&mut b, 16, h.itt);
                p32(&mut b, 20, h.ttt);
                p32(&mut b, 24, h.stat_sn);
                p32(&mut b, 28, h.exp_cmd_sn);
                p32(&mut b, 32, h.max_cmd_sn);
            }
            Header::DataIn(h) => {
                b[1] = bit(h.final_, 0x80)
                    | bit(h.ack, 0x40)
                    | bit(h.overflow, 0x04)
                    | bit(h.underflow, 0x02)
                    | bit(h.has_status, 0x01);
                b[3] = h.status;
                p64(&mut b, 8, h.lun);
                p32(&mut b, 16, h.itt);
                p32(&mut b, 20, h.ttt);
                p32(&mut b, 24, h.stat_sn);
                p32(&mut b, 28, h.exp_cmd_sn);
                p32(&mut b, 32, h.max_cmd_sn);
                p32(&mut b, 36, h.data_sn);
                p32(&mut b, 40, h.buffer_offset);
                p32(&mut b, 44, h.residual);
            }
            Header::LogoutResp(h) => {
                b[1] = 0x80;
                b[2] = h.response;
                p32(&mut b, 16, h.itt);
                p32(&mut b, 24, h.stat_sn);
                p32(&mut b, 28, h.exp_cmd_sn);
                p32(&mut b, 32, h.max_cmd_sn);
                p16(&mut b, 40, h.time2wait);
                p16(&mut b, 42, h.time2retain);
            }
            Header::R2t(h) => {
                b[1] = 0x80;
                p64(&mut b, 8, h.lun);
                p32(&mut b, 16, h.itt);
                p32(&mut b, 20, h.ttt);
                p32(&mut b, 24, h.stat_sn);
                p32(&mut b, 28, h.exp_cmd_sn);
                p32(&mut b, 32, h.max_cmd_sn);
                p32(&mut b, 36, h.r2t_sn);
                p32(&mut b, 40, h.buffer_offset);
                p32(&mut b, 44, h.desired_len);
            }
            Header::AsyncMsg(h) => {
                b[1] = 0x80;
                p64(&mut b, 8, h.lun);
                p32(&mut b, 16, 0xffff_ffff);
                p32(&mut b, 24, h.stat_sn);
                p32(&mut b, 28, h.exp_cmd_sn);
                p32(&mut b, 32, h.max_cmd_sn);
                b[36] = h.event;
                b[37] = h.vcode;
                p16(&mut b, 38, h.param1);
                p16(&mut b, 40, h.param2);
                p16(&mut b, 42, h.param3);
            }
            Header::Reject(h) => {
                b[1] = 0x80;
                b[2] = h.reason;
                p32(&mut b, 16, 0xffff_ffff);
                p32(&mut b, 24, h.stat_sn);
                p32(&mut b, 28, h.exp_cmd_sn);
                p32(&mut b, 32, h.max_cmd_sn);
                p32(&mut b, 36, h.data_sn);
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(h: Header) {
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Ok(h));
    }

    #[test]
    fn every_opcode_round_trips() {
        round_trip(Header::NopOut(NopOut {
            immediate: true,
            lun: 1 << 48,
            itt: 7,
            ttt: 0xffff_ffff,
            cmd_sn: 3,
            exp_stat_sn: 4,
        }));
        round_trip(Header::ScsiCommand(ScsiCommand {
            immediate: false,
            final_: true,
            read: true,
            write: false,
            attr: 1,
            lun: 0,
            itt: 9,
            edtl: 4096,
            cmd_sn: 11,
            exp_stat_sn: 2,
            cdb: [0x28, 0, 0, 0, 0, 1, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0],
        }));
        round_trip(Header::TaskMgmtReq(TaskMgmtReq {
            immediate: true,
            function: 1,
            lun: 0,
            itt: 1,
            ref_task_tag: 2,
            cmd_sn: 3,
            exp_stat_sn: 4,
            ref_cmd_sn: 5,
            exp_data_sn: 6,
        }));
        round_trip(Header::LoginReq(LoginReq {
            transit: true,
            cont: false,
            csg: 1,
            nsg: 3,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 1, 2, 3, 4, 5],
            tsih: 0,
            itt: 1,
            cid: 2,
            cmd_sn: 3,
            exp_stat_sn: 4,
        }));
        round_trip(Header::TextReq(TextReq {
            immediate: true,
            final_: true,
            cont: false,
            lun: 0,
            itt: 1,
            ttt: 0xffff_ffff,
            cmd_sn: 1,
            exp_stat_sn: 1,
        }));
        round_trip(Header::DataOut(DataOut {
            final_: true,
            lun: 0,
            itt: 1,
            ttt: 2,
            exp_stat_sn: 3,
            data_sn: 4,
            buffer_offset: 8192,
        }));
        round_trip(Header::LogoutReq(LogoutReq {
            immediate: true,
            reason: 0,
            itt: 1,
            cid: 0,
            cmd_sn: 5,
            exp_stat_sn: 6,
        }));
        round_trip(Header::Snack(Snack {
            kind: 1,
            lun: 0,
            itt: 1,
            ttt: 2,
            exp_stat_sn: 3,
            beg_run: 4,
            run_length: 5,
        }));
        round_trip(Header::NopIn(NopIn {
            lun: 0,
            itt: 1,
            ttt: 2,
            stat_sn: 3,
            exp_cmd_sn: 4,
            max_cmd_sn: 5,
        }));
        round_trip(Header::ScsiResponse(ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: true,
            overflow: false,
            underflow: true,
            response: 0,
            status: 2,
            itt: 1,
            snack_tag: 0,
            stat_sn: 2,
            exp_cmd_sn: 3,
            max_cmd_sn: 4,
            exp_data_sn: 5,
            bidi_residual: 6,
            residual: 7,
        }));
        round_trip(Header::TaskMgmtResp(TaskMgmtResp {
            response: 0,
            itt: 1,
            stat_sn: 2,
            exp_cmd_sn: 3,
            max_cmd_sn: 4,
        }));
        round_trip(Header::LoginResp(LoginResp {
            transit: true,
            cont: false,
            csg: 0,
            nsg: 1,
            version_max: 0,
            version_active: 0,
            isid: [1; 6],
            tsih: 9,
            itt: 1,
            stat_sn: 2,
            exp_cmd_sn: 3,
            max_cmd_sn: 4,
            status_class: 2,
            status_detail: 1,
        }));
        round_trip(Header::TextResp(TextResp {
            final_: true,
            cont: false,
            lun: 0,
            itt: 1,
            ttt: 0xffff_ffff,
            stat_sn: 2,
            exp_cmd_sn: 3,
            max_cmd_sn: 4,
        }));
        round_trip(Header::DataIn(DataIn {
            final_: true,
            ack: false,
            overflow: false,
            underflow: true,
            has_status: true,
            status: 0,
            lun: 0,
            itt: 1,
            ttt: 0xffff_ffff,
            stat_sn: 2,
            exp_cmd_sn: 3,
            max_cmd_sn: 4,
            data_sn: 5,
            buffer_offset: 6,
            residual: 7,
        }));
        round_trip(Header::LogoutResp(LogoutResp {
            response: 0,
            itt: 1,
            stat_sn: 2,
            exp_cmd_sn: 3,
            max_cmd_sn: 4,
            time2wait: 2,
            time2retain: 20,
        }));
        round_trip(Header::R2t(R2t {
            lun: 0,
            itt: 1,
            ttt: 2,
            stat_sn: 3,
            exp_cmd_sn: 4,
            max_cmd_sn: 5,
            r2t_sn: 6,
            buffer_offset: 7,
            desired_len: 8,
        }));
        round_trip(Header::AsyncMsg(AsyncMsg {
            lun: 0,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            event: 1,
            vcode: 0,
            param1: 1,
            param2: 2,
            param3: 3,
        }));
        round_trip(Header::Reject(Reject {
            reason: 4,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            data_sn: 0,
        }));
    }

    #[test]
    fn unknown_opcode_is_named() {
        let mut b = [0u8; BHS_LEN];
        b[0] = 0x1e;
        assert_eq!(Header::decode(&b), Err(BhsError::UnknownOpcode(0x1e)));
    }
}
