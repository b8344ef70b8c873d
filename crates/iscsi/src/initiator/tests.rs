//! The session's state handling against a scripted target on loopback:
//! the CmdSN window, re-issue in order after a lost connection, and the
//! I/O timeout. The real targets (tgt, `ferry san`) are exercised by the
//! end-to-end tests in `tests/initiator.rs`; these cover what a
//! well-behaved target never makes happen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::pdu::bhs::{self, Header};
use crate::pdu::frame::frame_len;
use crate::pdu::{text, Digests, Pdu, BHS_LEN};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn read_pdu(s: &mut TcpStream) -> Option<Pdu> {
    let mut bhs = [0u8; BHS_LEN];
    s.read_exact(&mut bhs).ok()?;
    let n = frame_len(&bhs, Digests::default(), 1 << 20).ok()?;
    let mut buf = vec![0u8; n];
    buf[..BHS_LEN].copy_from_slice(&bhs);
    s.read_exact(&mut buf[BHS_LEN..]).ok()?;
    Pdu::parse(&buf, Digests::default(), 1 << 20)
        .ok()
        .map(|p| p.0)
}

fn send(s: &mut TcpStream, h: Header, data: Vec<u8>) {
    let _ = s.write_all(&Pdu::new(h, data).encode(Digests::default()));
}

/// Answers a login without authentication; the window opens to `max_cmd_sn`.
fn accept_login(s: &mut TcpStream, max_cmd_sn: u32) {
    loop {
        let Some(p) = read_pdu(s) else { return };
        let Header::LoginReq(r) = p.header else {
            return;
        };
        let keys: &[(&str, &str)] = if r.csg == 0 {
            &[("AuthMethod", "None")]
        } else {
            &[
                ("HeaderDigest", "None"),
                ("DataDigest", "None"),
                ("MaxRecvDataSegmentLength", "65536"),
                ("MaxBurstLength", "262144"),
                ("FirstBurstLength", "65536"),
                ("ImmediateData", "Yes"),
                ("InitialR2T", "Yes"),
            ]
        };
        let pairs: text::Pairs = keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let h = bhs::LoginResp {
            transit: true,
            csg: r.csg,
            nsg: r.nsg,
            isid: r.isid,
            tsih: 1,
            itt: r.itt,
            stat_sn: 0,
            exp_cmd_sn: r.cmd_sn,
            max_cmd_sn,
            ..Default::default()
        };
        send(s, Header::LoginResp(h), text::encode(&pairs));
        if r.nsg == 3 {
            return;
        }
    }
}

fn good(s: &mut TcpStream, itt: u32, stat_sn: u32, exp_cmd_sn: u32, max_cmd_sn: u32) {
    let h = bhs::ScsiResponse {
        itt,
        stat_sn,
        exp_cmd_sn,
        max_cmd_sn,
        ..Default::default()
    };
    send(s, Header::ScsiResponse(h), Vec::new());
}

fn config(port: u16, io_timeout: Duration) -> SessionConfig {
    let mut c = SessionConfig::new(LoginConfig {
        portal: format!("127.0.0.1:{port}"),
        target: "iqn.2026-01.dev.ferry.test:scripted".into(),
        initiator: "iqn.2026-01.dev.ferry.test:unit".into(),
        isid: random_isid(),
        chap: None,
        mutual: None,
        digests: false,
        timeout: Duration::from_secs(2),
    });
    c.io_timeout = io_timeout;
    c
}

/// A target on loopback that answers every command GOOD, its window
/// `window` commands wide, until the initiator hangs up.
fn answering_target(window: u32) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        accept_login(&mut s, window);
        let mut stat_sn = 1;
        while let Some(p) = read_pdu(&mut s) {
            if let Header::ScsiCommand(c) = p.header {
                good(&mut s, c.itt, stat_sn, c.cmd_sn + 1, c.cmd_sn + window);
                stat_sn += 1;
            }
        }
    });
    (port, target)
}

fn tur(tag: u8) -> Request {
    Request {
        lun: 0,
        cdb: vec![0, 0, 0, 0, tag, 0],
        data: bytes::Bytes::new(),
        read_len: 0,
        sink: None,
    }
}

#[test]
fn commands_never_pass_max_cmd_sn() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let violated = Arc::new(AtomicBool::new(false));
    let v2 = violated.clone();
    let target = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // A window of one command at a time.
        accept_login(&mut s, 1);
        let mut max = 1u32;
        let mut stat_sn = 1;
        let mut seen = 0;
        while seen < 40 {
            let Some(p) = read_pdu(&mut s) else { break };
            if let Header::ScsiCommand(c) = p.header {
                if task::sn_lt(max, c.cmd_sn) {
                    v2.store(true, Ordering::SeqCst);
                }
                // Nothing more may arrive before this one is answered.
                std::thread::sleep(Duration::from_millis(5));
                s.set_nonblocking(true).unwrap();
                if s.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0) {
                    v2.store(true, Ordering::SeqCst);
                }
                s.set_nonblocking(false).unwrap();
                max = c.cmd_sn.wrapping_add(1);
                good(&mut s, c.itt, stat_sn, max, max);
                stat_sn += 1;
                seen += 1;
            }
        }
    });
    let session = Arc::new(Session::open(config(port, Duration::from_secs(10))).unwrap());
    let callers: Vec<_> = (0..8u8)
        .map(|i| {
            let s = session.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    assert_eq!(s.command(tur(i)).unwrap().status, 0);
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    target.join().unwrap();
    assert!(
        !violated.load(Ordering::SeqCst),
        "a command went past MaxCmdSN"
    );
}

#[test]
fn outstanding_commands_are_resent_in_order_after_a_lost_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = std::thread::spawn(move || {
        let read_cmds = |s: &mut TcpStream, n: usize| {
            let mut out = Vec::new();
            while out.len() < n {
                let Some(p) = read_pdu(s) else { break };
                if let Header::ScsiCommand(c) = p.header {
                    out.push(c);
                }
            }
            out
        };
        let (mut s, _) = listener.accept().unwrap();
        accept_login(&mut s, 100);
        // Take eight commands, answer none, drop the connection.
        let first = read_cmds(&mut s, 8);
        drop(s);
        let (mut s, _) = listener.accept().unwrap();
        accept_login(&mut s, 1000);
        let again = read_cmds(&mut s, 8);
        for (i, c) in again.iter().enumerate() {
            good(&mut s, c.itt, i as u32 + 1, c.cmd_sn + 1, c.cmd_sn + 100);
        }
        let tags = |v: &[bhs::ScsiCommand]| v.iter().map(|c| c.cdb[4]).collect::<Vec<_>>();
        let sns: Vec<u32> = again.iter().map(|c| c.cmd_sn).collect();
        (tags(&first), tags(&again), sns)
    });
    let session = Session::open(config(port, Duration::from_secs(10))).unwrap();
    let tickets: Vec<_> = (0..8u8).map(|i| session.submit(tur(i)).unwrap()).collect();
    for t in tickets {
        assert_eq!(session.wait(t).unwrap().status, 0);
    }
    let (first, again, sns) = target.join().unwrap();
    assert_eq!(first, (0..8).collect::<Vec<u8>>());
    assert_eq!(again, first, "re-sent out of order");
    assert!(sns.windows(2).all(|w| w[1] == w[0] + 1), "CmdSNs {sns:?}");
    assert_eq!(session.reconnects(), 1);
}

#[test]
fn a_silent_target_gives_a_timeout_not_a_hang() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        accept_login(&mut s, 100);
        // Read and never answer.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && read_pdu(&mut s).is_some() {}
    });
    let session = Session::open(config(port, Duration::from_millis(400))).unwrap();
    let started = Instant::now();
    let e = session.command(tur(1)).err().unwrap();
    assert!(matches!(e, IscsiError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("did not complete within"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(session);
    target.join().unwrap();
}

#[test]
fn callers_holding_answered_tickets_do_not_starve_each_other_of_slots() {
    let (port, target) = answering_target(1000);
    let mut cfg = config(port, Duration::from_secs(5));
    cfg.queue_depth = 4;
    let session = Arc::new(Session::open(cfg).unwrap());
    // Each caller queues more commands than the depth before collecting any.
    let callers: Vec<_> = (0..3u8)
        .map(|i| {
            let s = session.clone();
            std::thread::spawn(move || {
                let tickets: Vec<_> = (0..6).map(|_| s.submit(tur(i)).unwrap()).collect();
                for t in tickets {
                    s.wait(t).unwrap();
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    drop(session);
    target.join().unwrap();
}

/// Reads until a SCSI command arrives, then until a task management
/// request; returns the command's (ITT, CmdSN) and the request.
fn command_then_tmf(s: &mut TcpStream) -> ((u32, u32), bhs::TaskMgmtReq) {
    let mut cmd = None;
    loop {
        let p = read_pdu(s).expect("the connection closed before an ABORT TASK");
        match p.header {
            Header::ScsiCommand(c) => cmd = Some((c.itt, c.cmd_sn)),
            Header::TaskMgmtReq(t) => return (cmd.expect("a command first"), t),
            _ => {}
        }
    }
}

#[test]
fn a_timed_out_command_is_aborted_before_its_caller_hears_of_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        accept_login(&mut s, 100);
        let ((itt, cmd_sn), tmf) = command_then_tmf(&mut s);
        let answer = bhs::TaskMgmtResp {
            response: 0,
            itt: tmf.itt,
            stat_sn: 1,
            exp_cmd_sn: cmd_sn + 1,
            max_cmd_sn: cmd_sn + 100,
        };
        send(&mut s, Header::TaskMgmtResp(answer), Vec::new());
        while read_pdu(&mut s).is_some() {}
        (itt, cmd_sn, tmf)
    });
    let session = Session::open(config(port, Duration::from_millis(400))).unwrap();
    let e = session.command(tur(1)).err().unwrap();
    assert!(matches!(e, IscsiError::Timeout { .. }), "{e}");
    assert_eq!(
        session.reconnects(),
        0,
        "an answered abort keeps the connection"
    );
    drop(session);
    let (itt, cmd_sn, tmf) = target.join().unwrap();
    assert!(tmf.immediate, "{tmf:?}");
    assert_eq!(tmf.function, 1, "ABORT TASK: {tmf:?}");
    assert_eq!((tmf.ref_task_tag, tmf.ref_cmd_sn), (itt, cmd_sn), "{tmf:?}");
    assert_ne!(tmf.itt, itt, "the request has a tag of its own");
}

#[test]
fn a_target_that_does_not_answer_the_abort_loses_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        accept_login(&mut s, 100);
        command_then_tmf(&mut s);
        // No answer: the initiator hangs up, so the task ends with the
        // connection, and logs in again.
        let started = Instant::now();
        while read_pdu(&mut s).is_some() {}
        let closed_after = started.elapsed();
        let (mut again, _) = listener.accept().unwrap();
        accept_login(&mut again, 100);
        while read_pdu(&mut again).is_some() {}
        closed_after
    });
    let session = Session::open(config(port, Duration::from_millis(400))).unwrap();
    let started = Instant::now();
    let e = session.command(tur(1)).err().unwrap();
    assert!(matches!(e, IscsiError::Timeout { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while session.reconnects() == 0 {
        assert!(
            Instant::now() < deadline,
            "no new login after the dropped connection"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(session);
    let closed_after = target.join().unwrap();
    assert!(closed_after < Duration::from_secs(2), "{closed_after:?}");
}

/// A completion that sends its result down a channel.
fn completion() -> (
    Completion,
    std::sync::mpsc::Receiver<Result<ScsiResult, IscsiError>>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    (
        Completion::new(move |r| {
            let _ = tx.send(r);
        }),
        rx,
    )
}

#[test]
fn started_commands_end_on_their_completions_and_their_r2ts_are_served() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let written: Vec<u8> = (0..128 * 1024).map(|i| (i % 253) as u8).collect();
    let expect = written.clone();
    let target = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        accept_login(&mut s, 100);
        let mut got = vec![0u8; expect.len()];
        let mut stat_sn = 1;
        let mut answered = 0;
        while answered < 2 {
            let Some(p) = read_pdu(&mut s) else { break };
            match p.header {
                Header::ScsiCommand(c) if c.write => {
                    // 64 KiB came as immediate data; ask for the rest.
                    got[..p.data.len()].copy_from_slice(&p.data);
                    let r2t = bhs::R2t {
                        itt: c.itt,
                        ttt: 7,
                        exp_cmd_sn: c.cmd_sn + 1,
                        max_cmd_sn: c.cmd_sn + 100,
                        buffer_offset: p.data.len() as u32,
                        desired_len: (expect.len() - p.data.len()) as u32,
                        ..Default::default()
                    };
                    send(&mut s, Header::R2t(r2t), Vec::new());
                }
                Header::DataOut(d) => {
                    let at = d.buffer_offset as usize;
                    got[at..at + p.data.len()].copy_from_slice(&p.data);
                    if d.final_ {
                        good(&mut s, d.itt, stat_sn, 3, 100);
                        stat_sn += 1;
                        answered += 1;
                    }
                }
                Header::ScsiCommand(c) => {
                    let h = bhs::DataIn {
                        final_: true,
                        has_status: true,
                        itt: c.itt,
                        stat_sn,
                        exp_cmd_sn: c.cmd_sn + 1,
                        max_cmd_sn: c.cmd_sn + 100,
                        ..Default::default()
                    };
                    send(&mut s, Header::DataIn(h), vec![0xab; 4096]);
                    stat_sn += 1;
                    answered += 1;
                }
                _ => {}
            }
        }
        got == expect
    });
    let session = Session::open(config(port, Duration::from_secs(10))).unwrap();
    let (write_done, write_rx) = completion();
    session.start(
        Request {
            lun: 0,
            cdb: vec![0x8a; 16],
            data: bytes::Bytes::from(written),
            read_len: 0,
            sink: None,
        },
        write_done,
        true,
    );
    let (read_done, read_rx) = completion();
    session.start(
        Request {
            lun: 0,
            cdb: vec![0x88; 16],
            data: bytes::Bytes::new(),
            read_len: 4096,
            sink: None,
        },
        read_done,
        false,
    );
    let wait = Duration::from_secs(10);
    let w = write_rx.recv_timeout(wait).unwrap().unwrap();
    assert_eq!(w.status, task::GOOD);
    let r = read_rx.recv_timeout(wait).unwrap().unwrap();
    assert_eq!(r.data, vec![0xab; 4096]);
    assert!(
        session.shared_tasks_empty(),
        "ended commands leave the table"
    );
    drop(session);
    assert!(target.join().unwrap(), "the target got every byte in place");
}

#[test]
fn a_started_command_that_times_out_is_aborted_then_completed() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        accept_login(&mut s, 100);
        let ((itt, _), tmf) = command_then_tmf(&mut s);
        let answer = bhs::TaskMgmtResp {
            response: 0,
            itt: tmf.itt,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 100,
        };
        send(&mut s, Header::TaskMgmtResp(answer), Vec::new());
        // A second command is left unanswered for the close below.
        let _ = read_pdu(&mut s);
        while read_pdu(&mut s).is_some() {}
        (itt, tmf)
    });
    let session = Session::open(config(port, Duration::from_millis(400))).unwrap();
    let (done, rx) = completion();
    let started = Instant::now();
    session.start(tur(1), done, false);
    let e = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .err()
        .unwrap();
    assert!(matches!(e, IscsiError::Timeout { .. }), "{e}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Closing the session ends what is still in flight.
    let (done, rx) = completion();
    session.start(tur(2), done, false);
    drop(session);
    let e = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .err()
        .unwrap();
    assert!(matches!(e, IscsiError::Closed { .. }), "{e}");
    let (itt, tmf) = target.join().unwrap();
    assert_eq!(tmf.function, 1, "ABORT TASK: {tmf:?}");
    assert_eq!(tmf.ref_task_tag, itt);
}

#[test]
fn held_commands_go_out_when_the_queue_is_full_instead_of_blocking_it() {
    let (port, target) = answering_target(100);
    let mut cfg = config(port, Duration::from_secs(5));
    cfg.queue_depth = 2;
    let session = Session::open(cfg).unwrap();
    let started = Instant::now();
    let mut rxs = Vec::new();
    // All held: the third finds the queue full of commands nobody sent.
    for tag in 0..3 {
        let (done, rx) = completion();
        session.start(tur(tag), done, true);
        rxs.push(rx);
    }
    session.send_held();
    for rx in rxs {
        let r = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(r.status, task::GOOD);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "held commands waited for the timeout: {:?}",
        started.elapsed()
    );
    drop(session);
    target.join().unwrap();
}
