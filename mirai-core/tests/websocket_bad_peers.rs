//! Peers that are not mirai daemons at a `ws://` host: each is refused with a log line, and the
//! host goes on serving real daemons.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use mirai_core::{Host, HostOptions};
use tungstenite::Message;

fn ws_host() -> Host {
    capture_logs();
    Host::listen("ws://127.0.0.1:0/mirai", HostOptions::default()).unwrap()
}

fn port(host: &Host) -> u16 {
    host.url().split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap()
}

/// Sends `bytes` on a fresh connection and returns what the host answers before it closes.
fn exchange(host: &Host, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port(host))).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

/// A WebSocket client frame: masked (with a zero key, so the payload reads as is).
fn frame(opcode: u8, fin: bool, payload: &[u8], claimed_len: Option<u64>) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    let len = claimed_len.unwrap_or(payload.len() as u64);
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= u16::MAX as u64 {
        f.push(0x80 | 126);
        f.extend((len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend(len.to_be_bytes());
    }
    f.extend([0; 4]);
    f.extend(payload);
    f
}

/// Opens a WebSocket to the host's path, then sends `bytes` raw on it; returns the close
/// frame's code when the host sends one.
fn after_upgrade(host: &Host, bytes: &[u8]) -> Option<u16> {
    let url = format!("ws://127.0.0.1:{}/mirai", port(host));
    let sock = TcpStream::connect(("127.0.0.1", port(host))).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    let (mut ws, _) = tungstenite::client(url, sock).unwrap();
    // A host that refuses the start of a long write closes before the rest is sent, so the
    // write may fail with a broken pipe or a reset; what the host answered is still to be read.
    let _ = ws.get_mut().write_all(bytes);
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

fn still_serves(host: &Host) {
    let _d = launch(host, 1, &[]);
    assert_eq!(value(&submit(host, "echo:ok")), "ok");
}

#[test]
fn a_plain_http_request_is_refused() {
    let host = ws_host();
    exchange(&host, b"GET /mirai HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(logged("WebSocket upgrade refused"), "a log line");
    still_serves(&host);
}

#[test]
fn a_wrong_path_gets_404() {
    let host = ws_host();
    let request = "GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let answer = String::from_utf8_lossy(&exchange(&host, request.as_bytes())).into_owned();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(logged("another path than /mirai"));
    still_serves(&host);
}

#[test]
fn a_tls_client_on_ws_is_refused() {
    let host = ws_host();
    // The start of a TLS ClientHello record.
    exchange(
        &host,
        &[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, b'\r', b'\n', b'\r', b'\n'],
    );
    assert!(logged("WebSocket upgrade refused"));
    still_serves(&host);
}

#[test]
fn a_websocket_client_speaking_something_else_is_refused() {
    let host = ws_host();
    assert_eq!(after_upgrade(&host, &frame(0x1, true, b"hello", None)), Some(1003), "text: unsupported");
    assert!(logged("text message refused"));
    // Binary, but not mirai's protocol.
    after_upgrade(&host, &frame(0x2, true, b"GET / HTTP/1.1\r\n\r\n", None));
    assert!(logged("closing connection"));
    still_serves(&host);
}

#[test]
fn oversized_and_fragmented_messages_are_refused() {
    let host = ws_host();
    // One frame claiming more than a message may hold: refused from its header.
    assert_eq!(after_upgrade(&host, &frame(0x2, true, &[], Some(64 << 20))), Some(1009));
    assert!(logged("WebSocket message refused"));
    // The same size in small fragments. Fragments are the byte stream as they come, so mirai's
    // protocol refuses what they carry before their total reaches the limit (which the framing's
    // unit tests check on its own).
    let mut fragments = frame(0x2, false, &[0; 60_000], None);
    for _ in 0..20 {
        fragments.extend(frame(0x0, false, &[0; 60_000], None));
    }
    after_upgrade(&host, &fragments);
    assert!(logged("unknown frame kind 0"), "refused, with a log line");
    // A continuation with nothing to continue: a protocol error.
    assert_eq!(after_upgrade(&host, &frame(0x0, true, b"x", None)), Some(1002));
    std::thread::sleep(Duration::from_millis(50));
    still_serves(&host);
}
