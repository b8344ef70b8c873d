//! A UDP echo responder: every datagram goes back to its sender unchanged.

use std::net::UdpSocket;

/// Tag that starts every line this workload prints.
pub const TAG: &str = "FERRY-ECHO";

/// Answers datagrams on `port` forever; returns only if the socket fails.
pub fn run(port: u16) -> std::io::Result<()> {
    let sock = UdpSocket::bind(("0.0.0.0", port))?;
    println!("{TAG} listening port={port}");
    let mut buf = [0u8; 2048];
    loop {
        let (len, from) = sock.recv_from(&mut buf)?;
        // A reply that cannot be sent (peer gone) is the prober's loss to count.
        let _ = sock.send_to(&buf[..len], from);
    }
}
