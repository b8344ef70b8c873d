//! NBD decoders (no I/O): request headers, option headers, INFO/GO payloads.
#![no_main]
use ferry_block::nbd::proto;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(h) = <[u8; proto::REQUEST_HEADER_LEN]>::try_from(data.get(..proto::REQUEST_HEADER_LEN).unwrap_or(&[])) {
        let _ = proto::parse_request(&h);
    }
    if let Ok(h) = <[u8; 16]>::try_from(data.get(..16).unwrap_or(&[])) {
        let _ = proto::parse_option_header(&h);
    }
    if let Ok(h) = <[u8; 4]>::try_from(data.get(..4).unwrap_or(&[])) {
        let _ = proto::parse_client_flags(h);
    }
    let _ = proto::parse_info_request(data);
});
