//! Text key=value lists (RFC 7143 section 6): NUL-terminated `key=value`
//! entries in Login and Text data segments.

/// Why a text data segment was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TextError {
    /// An entry has no `=`.
    #[error("text entry {0:?} has no '='")]
    NoEquals(String),
    /// A key is empty or longer than 63 bytes.
    #[error("text key {0:?} is empty or longer than 63 bytes")]
    BadKey(String),
    /// A value is longer than 8192 bytes.
    #[error("value of {0} is longer than 8192 bytes")]
    ValueTooLong(String),
    /// An entry is not valid UTF-8.
    #[error("text entry is not UTF-8")]
    NotUtf8,
    /// The same key appears twice.
    #[error("key {0} appears twice")]
    Duplicate(String),
}

/// An ordered list of key=value pairs.
pub type Pairs = Vec<(String, String)>;

/// Parses a data segment; a trailing entry without NUL is accepted.
pub fn parse(data: &[u8]) -> Result<Pairs, TextError> {
    let mut out: Pairs = Vec::new();
    for raw in data.split(|b| *b == 0) {
        if raw.is_empty() {
            continue;
        }
        let entry = std::str::from_utf8(raw).map_err(|_| TextError::NotUtf8)?;
        let (k, v) = entry
            .split_once('=')
            .ok_or_else(|| TextError::NoEquals(entry.chars().take(80).collect()))?;
        if k.is_empty() || k.len() > 63 {
            return Err(TextError::BadKey(k.chars().take(80).collect()));
        }
        if v.len() > 8192 {
            return Err(TextError::ValueTooLong(k.to_string()));
        }
        if out.iter().any(|(ek, _)| ek == k) {
            return Err(TextError::Duplicate(k.to_string()));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Encodes pairs as NUL-terminated entries.
pub fn encode(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_encode() {
        let pairs = parse(b"InitiatorName=iqn.x\0SessionType=Normal\0").expect("parse");
        assert_eq!(pairs[1], ("SessionType".into(), "Normal".into()));
        assert_eq!(parse(&encode(&pairs)).expect("again"), pairs);
        assert_eq!(parse(b"A=1\0B=").expect("no trailing NUL").len(), 2);
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            parse(b"novalue\0"),
            Err(TextError::NoEquals("novalue".into()))
        );
        assert_eq!(parse(b"=x\0"), Err(TextError::BadKey(String::new())));
        assert_eq!(parse(b"A=1\0A=2\0"), Err(TextError::Duplicate("A".into())));
        assert_eq!(parse(&[0xff, b'=', b'1']), Err(TextError::NotUtf8));
    }
}
