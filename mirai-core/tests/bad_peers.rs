//! Malformed or hostile peers are cut off with a log line, while the host and its other
//! daemons carry on.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use mirai_core::{ErrorCode, Host, HostOptions, TaskStatus};
use mirai_proto::decoder::Decoder;
use mirai_proto::{ExitReason, Kind, Message};

/// A TCP host with one real daemon, so we can check it keeps working.
fn tcp_host(options: HostOptions) -> (Host, Vec<mirai_core::launch::LocalDaemon>, u16) {
    capture_logs();
    let host = Host::listen("tcp://127.0.0.1:0", options).unwrap();
    let port = host.url().rsplit(':').next().unwrap().parse().unwrap();
    let d = launch(&host, 1, &[]);
    (host, d, port)
}

/// Reads until the host closes the connection; returns every message it sent.
fn read_to_close(mut s: TcpStream) -> Vec<Message> {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).expect("host closes the connection");
    let mut d = Decoder::new(u64::MAX);
    let mut input = &bytes[..];
    let mut out = Vec::new();
    while let Ok(Some(m)) = d.decode(&mut input) {
        out.push(m);
    }
    out
}

fn still_serves(host: &Host) {
    assert_eq!(value(&submit(host, "echo:alive")), "alive");
    assert_eq!(host.counters().connections, 1, "only the real daemon counts");
}

#[test]
fn garbage_is_refused() {
    let (host, _d, port) = tcp_host(HostOptions::default());
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let msgs = read_to_close(s);
    assert!(matches!(msgs.last(), Some(Message::Exit { reason: ExitReason::ProtocolViolation, .. })));
    assert!(logged("closing connection"), "a log line names the closed connection");
    still_serves(&host);
}

#[test]
fn oversized_frame_is_refused() {
    let (host, _d, port) = tcp_host(HostOptions::default());
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut header = (1u64 << 40).to_le_bytes().to_vec();
    header.extend_from_slice(&[Kind::Hello as u8, 0, 4, 0]);
    s.write_all(&header).unwrap();
    let msgs = read_to_close(s);
    match msgs.last() {
        Some(Message::Exit { detail, .. }) => {
            assert!(detail.contains("exceeds the maximum"), "{detail}")
        }
        other => panic!("expected Exit, got {other:?}"),
    }
    still_serves(&host);
}

#[test]
fn wrong_protocol_version_is_refused() {
    let (host, _d, port) = tcp_host(HostOptions::default());
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let ctrl = [99u8, 1, 0, 0, 0, 0];
    let mut frame = (ctrl.len() as u64).to_le_bytes().to_vec();
    frame.extend_from_slice(&[Kind::Hello as u8, 0, ctrl.len() as u8, 0]);
    frame.extend_from_slice(&ctrl);
    s.write_all(&frame).unwrap();
    let msgs = read_to_close(s);
    assert!(matches!(msgs.last(), Some(Message::Exit { reason: ExitReason::VersionMismatch, .. })));
    assert!(logged("protocol version mismatch"));
    still_serves(&host);
}

#[test]
fn silent_connection_times_out() {
    let options = HostOptions { handshake_timeout: Duration::from_millis(300), ..HostOptions::default() };
    let (host, _d, port) = tcp_host(options);
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    let msgs = read_to_close(s);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(matches!(msgs.last(), Some(Message::Exit { .. })));
    assert!(logged("handshake did not complete"));
    still_serves(&host);
}

#[test]
fn daemon_that_stops_reading_does_not_stall_the_host() {
    let (host, _d, port) = tcp_host(HostOptions::default());
    let secret = host.secret().unwrap().to_vec();
    let staller = raw_handshake(port, |d, h| daemon_proof(&secret, d, h)).expect("accepted");
    assert!(host.wait_connections(2, Some(PATIENCE)));
    // Large tasks: whichever goes to the staller cannot fit in its socket buffers.
    let big = |i: usize| {
        let mut p = format!("echo:{i}:").into_bytes();
        p.resize(8 << 20, b'.');
        host.submit(p, Default::default()).unwrap()
    };
    let tasks: Vec<_> = (0..6).map(big).collect();
    // Everything but the staller's task completes on the real daemon.
    let mut stuck = Vec::new();
    for t in &tasks {
        if !t.wait(Some(Duration::from_secs(5))) {
            stuck.push(t.clone());
        }
    }
    assert_eq!(stuck.len(), 1, "exactly one task sits at the staller");
    assert_eq!(value(&submit(&host, "echo:alive")), "alive");
    drop(staller);
    assert_eq!(outcome(&stuck[0]).0, TaskStatus::Failed(ErrorCode::ConnectionReset));
}
