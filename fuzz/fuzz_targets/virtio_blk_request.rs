//! virtio-blk requests as a guest may lay them out (no guest memory): the
//! chain's ranges cut into header, data and status; headers; discard ranges.
#![no_main]
use ferry_block::vhost_user::layout::{self, Header, Segment, HEADER_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // 13 bytes per descriptor: address, length, device-writable flag.
    let chain: Vec<Segment> = data
        .chunks_exact(13)
        .take(300)
        .map(|c| Segment {
            addr: u64::from_le_bytes(c[..8].try_into().unwrap_or_default()),
            len: u32::from_le_bytes(c[8..12].try_into().unwrap_or_default()),
            writable: c[12] & 1 != 0,
        })
        .collect();
    if let Ok(l) = layout::carve(&chain) {
        let total: u64 = chain.iter().map(|s| u64::from(s.len)).sum();
        let header: u64 = l.header.iter().map(|s| u64::from(s.len)).sum();
        assert_eq!(header, u64::from(HEADER_LEN));
        assert_eq!(header + l.data_len() + 1, total);
    }
    if let Ok(h) = <[u8; 16]>::try_from(data.get(..16).unwrap_or(&[])) {
        let _ = Header::parse(&h);
    }
    let _ = layout::ranges(data);
});
