//! NBD from the network: any byte stream a client sends (negotiation and
//! requests) is answered or refused by the real server, never a panic.
#![no_main]
use ferry_block::nbd::server::{serve_connection, Export};
use ferry_block::stats::DiskCounters;
use ferry_block::FileBackend;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};

fn exports() -> Arc<Vec<Export>> {
    static EXPORTS: OnceLock<Arc<Vec<Export>>> = OnceLock::new();
    EXPORTS
        .get_or_init(|| {
            let path = std::env::temp_dir().join(format!("ferry-fuzz-nbd-{}.img", std::process::id()));
            std::fs::write(&path, vec![0u8; 1 << 20]).expect("fuzz image");
            let backend = FileBackend::open(&path, false).expect("open fuzz image");
            Arc::new(vec![Export {
                name: "disk0".into(),
                backend: Arc::new(backend),
                counters: Arc::new(DiskCounters::default()),
            }])
        })
        .clone()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (mut client, server) = UnixStream::pair().expect("socketpair");
    let exports = exports();
    let handle = std::thread::spawn(move || serve_connection(server, exports));
    // Drain replies so the server never blocks on a full socket.
    let mut reader = client.try_clone().expect("clone");
    let drain = std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let _ = client.write_all(data);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let _ = handle.join().expect("server thread must not panic");
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = drain.join();
});
