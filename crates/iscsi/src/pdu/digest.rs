//! CRC32C (Castagnoli) digests for header and data segments.

/// The CRC32C of `bytes` as iSCSI sends it (little-endian on the wire).
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// The CRC32C of several slices taken as one stream (a data segment and its
/// padding).
pub fn crc32c_parts(parts: &[&[u8]]) -> u32 {
    parts.iter().fold(0, |crc, p| crc32c::crc32c_append(crc, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        assert_eq!(crc32c_parts(&[&[0u8; 10], &[0u8; 22]]), 0x8a91_36aa);
    }
}
