//! MODE SENSE and MODE SELECT (6 and 10): read-write error recovery,
//! caching (WCE changeable), control and informational exceptions pages.

use super::cdb::{self, op};
use super::{truncate, LogicalUnit, Response, Sense};

/// Page control values.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pc {
    Current,
    Changeable,
    Default,
}

const PAGES: [u8; 4] = [0x01, 0x08, 0x0a, 0x1c];

fn page(code: u8, pc: Pc, wce: bool) -> Vec<u8> {
    let mut p = match code {
        0x01 => vec![0u8; 12],
        0x08 => vec![0u8; 20],
        0x0a => vec![0u8; 12],
        _ => vec![0u8; 12],
    };
    p[0] = code;
    p[1] = (p.len() - 2) as u8;
    match (code, pc) {
        (0x08, Pc::Changeable) => p[2] = 0x04,
        (0x08, Pc::Current) if wce => p[2] = 0x04,
        (0x08, Pc::Default) => p[2] = 0x04,
        (0x0a, Pc::Current | Pc::Default) => {
            // QERR 0, TAS set, busy timeout unlimited.
            p[5] = 0x40;
            p[8] = 0xff;
            p[9] = 0xff;
        }
        _ => {}
    }
    p
}

/// MODE SENSE (6) and (10).
pub fn sense(lu: &LogicalUnit, c: &[u8]) -> Response {
    let ten = c[0] == op::MODE_SENSE_10;
    let dbd = c[1] & 0x08 != 0;
    let llbaa = ten && c[1] & 0x10 != 0;
    let pc = match c[2] >> 6 {
        0 => Pc::Current,
        1 => Pc::Changeable,
        2 => Pc::Default,
        _ => return Response::check(Sense::saving_not_supported()),
    };
    let code = c[2] & 0x3f;
    let sub = c[3];
    let alloc = if ten {
        usize::from(cdb::be16(&c[7..]))
    } else {
        usize::from(c[4])
    };
    if sub != 0 && sub != 0xff {
        return Response::check(Sense::invalid_field_in_cdb(3));
    }
    let wce = lu.lock().wce;
    let mut pages = Vec::new();
    if code == 0x3f {
        for p in PAGES {
            pages.extend_from_slice(&page(p, pc, wce));
        }
    } else if PAGES.contains(&code) && sub == 0 {
        pages = page(code, pc, wce);
    } else {
        return Response::check(Sense::invalid_field_in_cdb(2));
    }
    let mut bd = Vec::new();
    if !dbd {
        let bs = lu.backend.block_size();
        let n = lu.backend.num_blocks();
        if llbaa {
            bd.extend_from_slice(&n.to_be_bytes());
            bd.extend_from_slice(&[0, 0, 0, 0]);
            bd.extend_from_slice(&bs.to_be_bytes());
        } else {
            bd.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
            bd.push(0);
            bd.extend_from_slice(&bs.to_be_bytes()[1..]);
        }
    }
    // Device-specific parameter: WP, DPOFUA.
    let dsp = 0x10 | if lu.backend.read_only() { 0x80 } else { 0 };
    let mut out = if ten {
        let mut h = vec![0u8; 8];
        h[3] = dsp;
        h[4] = u8::from(llbaa && !bd.is_empty());
        h[6..8].copy_from_slice(&(bd.len() as u16).to_be_bytes());
        h
    } else {
        vec![0, 0, dsp, bd.len() as u8]
    };
    out.extend_from_slice(&bd);
    out.extend_from_slice(&pages);
    if ten {
        let len = (out.len() - 2) as u16;
        out[..2].copy_from_slice(&len.to_be_bytes());
    } else {
        out[0] = (out.len() - 1).min(255) as u8;
    }
    Response::good(truncate(out, alloc))
}

/// MODE SELECT (6) and (10): only the caching page's WCE may change.
pub fn select(lu: &LogicalUnit, c: &[u8], data: &[u8]) -> Response {
    let ten = c[0] == op::MODE_SELECT_10;
    if c[1] & 0x01 != 0 {
        return Response::check(Sense::invalid_field_in_cdb(1));
    }
    let len = if ten {
        usize::from(cdb::be16(&c[7..]))
    } else {
        usize::from(c[4])
    };
    let n = len.min(data.len());
    let data = &data[..n];
    if n == 0 {
        return Response::good(Vec::new()).with_data_out_len(len);
    }
    let (hdr, bdl) = if ten {
        if n < 8 {
            return Response::check(Sense::param_list_length()).with_data_out_len(len);
        }
        (8, usize::from(cdb::be16(&data[6..])))
    } else {
        if n < 4 {
            return Response::check(Sense::param_list_length()).with_data_out_len(len);
        }
        (4, usize::from(data[3]))
    };
    let mut at = hdr + bdl;
    let mut wce = None;
    while at < n {
        let Some(p) = data.get(at..at + 2) else {
            return Response::check(Sense::param_list_length()).with_data_out_len(len);
        };
        let code = p[0] & 0x3f;
        let plen = usize::from(p[1]) + 2;
        let Some(body) = data.get(at..at + plen) else {
            return Response::check(Sense::param_list_length()).with_data_out_len(len);
        };
        if !PAGES.contains(&code) || p[0] & 0x40 != 0 {
            return Response::check(Sense::invalid_field_in_param(at as u16))
                .with_data_out_len(len);
        }
        let cur = page(code, Pc::Current, false);
        let chg = page(code, Pc::Changeable, false);
        if body.len() != cur.len() {
            return Response::check(Sense::invalid_field_in_param(at as u16 + 1))
                .with_data_out_len(len);
        }
        for i in 2..cur.len() {
            if (body[i] ^ cur[i]) & !chg[i] != 0 {
                return Response::check(Sense::invalid_field_in_param((at + i) as u16))
                    .with_data_out_len(len);
            }
        }
        if code == 0x08 {
            wce = Some(body[2] & 0x04 != 0);
        }
        at += plen;
    }
    if let Some(w) = wce {
        lu.lock().wce = w;
    }
    Response::good(Vec::new()).with_data_out_len(len)
}
