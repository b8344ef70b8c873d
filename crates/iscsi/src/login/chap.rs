//! CHAP with MD5 (RFC 1994 as RFC 7143 section 12.1.3 uses it): the
//! target's challenge, the check of the initiator's response, and the
//! answer to an initiator's challenge for mutual CHAP.

use md5::{Digest, Md5};

/// Why a CHAP exchange failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChapError {
    /// A binary value is not 0x-hex or 0b-base64.
    #[error("{0} is not a valid CHAP binary value")]
    Encoding(String),
    /// Wrong user name or response.
    #[error("CHAP response does not match for user {0:?}")]
    Mismatch(String),
    /// The initiator sent back our own challenge.
    #[error("initiator reused the target's challenge")]
    Reflection,
}

/// The CHAP response: MD5(identifier || secret || challenge).
pub fn response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// Encodes bytes as `0x` hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn b64_val(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    })
}

/// Decodes a `0x`-hex or `0b`-base64 binary value.
pub fn decode_binary(v: &str) -> Result<Vec<u8>, ChapError> {
    let err = || ChapError::Encoding(v.chars().take(40).collect());
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        let h = h.as_bytes();
        let odd = h.len() % 2;
        let mut out = Vec::with_capacity(h.len() / 2 + 1);
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if odd == 1 {
            out.push(digit(h[0]).ok_or_else(err)?);
        }
        for pair in h[odd..].chunks(2) {
            out.push((digit(pair[0]).ok_or_else(err)? << 4) | digit(pair[1]).ok_or_else(err)?);
        }
        if out.is_empty() {
            return Err(err());
        }
        Ok(out)
    } else if let Some(b) = v.strip_prefix("0b").or_else(|| v.strip_prefix("0B")) {
        let b = b.trim_end_matches('=').as_bytes();
        let mut out = Vec::new();
        let mut acc = 0u32;
        let mut bits = 0;
        for c in b {
            acc = (acc << 6) | u32::from(b64_val(*c).ok_or_else(err)?);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if out.is_empty() {
            return Err(err());
        }
        Ok(out)
    } else {
        Err(err())
    }
}

/// Random bytes from the kernel for challenges and identifiers.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        // Fall back to the clock: weak, but never a panic.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
        }
    }
    buf
}

/// Checks an initiator's CHAP_N and CHAP_R against the expected user and
/// secret for the challenge the target sent.
pub fn verify(
    user: &str,
    secret: &str,
    id: u8,
    challenge: &[u8],
    name: &str,
    resp: &str,
) -> Result<(), ChapError> {
    let got = decode_binary(resp)?;
    if name == user && got == response(id, secret.as_bytes(), challenge) {
        Ok(())
    } else {
        Err(ChapError::Mismatch(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_encodings() {
        assert_eq!(decode_binary("0x0102ff"), Ok(vec![1, 2, 255]));
        assert_eq!(decode_binary("0xf"), Ok(vec![15]));
        assert_eq!(decode_binary("0bAQL/"), Ok(vec![1, 2, 255]));
        assert!(decode_binary("0xzz").is_err());
        assert!(decode_binary("12").is_err());
        assert_eq!(hex(&[1, 0xab]), "0x01ab");
    }

    #[test]
    fn verify_round_trip() {
        let c = [7u8; 16];
        let r = hex(&response(3, b"secret", &c));
        assert_eq!(verify("u", "secret", 3, &c, "u", &r), Ok(()));
        assert!(verify("u", "secret", 4, &c, "u", &r).is_err());
        assert!(verify("u", "secret", 3, &c, "v", &r).is_err());
    }
}
