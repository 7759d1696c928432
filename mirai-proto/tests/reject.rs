//! Malformed input is refused with a precise error, never a panic, and an oversized length is
//! refused before anything is allocated.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{Pair, daemon_hello, encode_all, host_hello};
use mirai_proto::conn::HANDSHAKE_MAX_FRAME;
use mirai_proto::decoder::Decoder;
use mirai_proto::{
    Config, Conn, ExitReason, FrameHeader, HEADER_LEN, Kind, Message, PROTOCOL_VERSION, ProtoError, State,
    Status,
};

/// Records the largest single allocation made by the current thread, to prove that a huge
/// announced length allocates nothing.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn header(body_len: u64, kind: u8, flags: u8, ctrl_len: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&body_len.to_le_bytes());
    h.push(kind);
    h.push(flags);
    h.extend_from_slice(&ctrl_len.to_le_bytes());
    h
}

fn decode_one(bytes: &[u8], max: u64) -> Result<Option<Message>, ProtoError> {
    let mut d = Decoder::new(max);
    let mut input = bytes;
    d.decode(&mut input)
}

#[test]
fn oversized_length_is_refused_without_allocating() {
    let mut d = Decoder::new(1 << 20);
    let huge = header(1 << 40, Kind::Task as u8, 0, 1);
    LARGEST.with(|l| l.set(0));
    let mut input = &huge[..];
    let err = d.decode(&mut input).unwrap_err();
    let largest = LARGEST.with(|l| l.get());
    assert_eq!(err, ProtoError::FrameTooLarge { len: 1 << 40, max: 1 << 20 });
    assert!(largest < 4096, "largest allocation while refusing was {largest} bytes");
}

#[test]
fn strangers_are_held_to_the_handshake_limit() {
    // Before the peer's Hello, even a modest frame is too large.
    let mut host = Conn::host(Config::default(), 0);
    let frame = header(HANDSHAKE_MAX_FRAME + 1, Kind::Hello as u8, 0, 10);
    let err = host.feed(0, &frame).unwrap_err();
    assert!(matches!(err, ProtoError::FrameTooLarge { max: HANDSHAKE_MAX_FRAME, .. }));
    assert_eq!(host.state(), State::Closed);
}

#[test]
fn the_limit_applies_after_the_handshake() {
    let config = Config { max_frame: 1000, ..Config::default() };
    let mut p = Pair::new(config);
    p.handshake();
    p.host.send(Message::Task { id: 1, everywhere: false, payload: vec![0; 10] }).unwrap();
    p.drive().unwrap();
    p.daemon.poll_event();
    p.daemon
        .send(Message::Result { id: 1, status: Status::Value, last: false, payload: vec![0; 1001] })
        .unwrap();
    assert!(matches!(p.drive(), Err(ProtoError::FrameTooLarge { len: 1003, max: 1000 })));
}

#[test]
fn unknown_kind() {
    for kind in [0u8, 9, 200, 255] {
        assert_eq!(decode_one(&header(0, kind, 0, 0), u64::MAX), Err(ProtoError::UnknownKind(kind)));
    }
}

#[test]
fn undefined_flags() {
    assert_eq!(
        decode_one(&header(1, Kind::Task as u8, 0x02, 1), u64::MAX),
        Err(ProtoError::BadFlags { kind: Kind::Task, flags: 0x02 })
    );
    assert_eq!(
        decode_one(&header(1, Kind::Cancel as u8, 0x01, 1), u64::MAX),
        Err(ProtoError::BadFlags { kind: Kind::Cancel, flags: 0x01 })
    );
}

#[test]
fn control_longer_than_body() {
    assert!(matches!(
        decode_one(&header(2, Kind::Task as u8, 0, 3), u64::MAX),
        Err(ProtoError::BadLength { .. })
    ));
}

#[test]
fn payload_on_a_kind_without_one() {
    assert_eq!(
        decode_one(&header(5, Kind::Cancel as u8, 0, 1), u64::MAX),
        Err(ProtoError::UnexpectedPayload { kind: Kind::Cancel })
    );
}

#[test]
fn trailing_bytes_in_the_control_header() {
    // Cancel { id: 1 } is one varint byte; send two.
    let mut frame = header(2, Kind::Cancel as u8, 0, 2);
    frame.extend_from_slice(&[1, 1]);
    assert_eq!(decode_one(&frame, u64::MAX), Err(ProtoError::TrailingBytes { kind: Kind::Cancel }));
    let mut hb = header(1, Kind::Heartbeat as u8, 0, 1);
    hb.push(0);
    assert_eq!(decode_one(&hb, u64::MAX), Err(ProtoError::TrailingBytes { kind: Kind::Heartbeat }));
}

#[test]
fn malformed_control_header() {
    // A varint that never ends.
    let mut frame = header(3, Kind::Cancel as u8, 0, 3);
    frame.extend_from_slice(&[0xFF, 0xFF, 0xFF]);
    assert_eq!(decode_one(&frame, u64::MAX), Err(ProtoError::Malformed { kind: Kind::Cancel }));
    // Status discriminant out of range.
    let mut frame = header(2, Kind::Result as u8, 0, 2);
    frame.extend_from_slice(&[1, 9]);
    assert_eq!(decode_one(&frame, u64::MAX), Err(ProtoError::Malformed { kind: Kind::Result }));
}

#[test]
fn trailing_garbage_after_valid_frames() {
    let mut p = Pair::new(Config::default());
    p.handshake();
    let mut bytes = encode_all(&[Message::Heartbeat]);
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    let err = p.host.feed(0, &bytes).unwrap_err();
    assert!(matches!(err, ProtoError::UnknownKind(_) | ProtoError::FrameTooLarge { .. }), "{err}");
    assert_eq!(p.host.state(), State::Closed);
    assert_eq!(p.host.feed(0, b"more"), Err(err), "the error sticks");
}

#[test]
fn a_version_1_peer_is_told_the_versions() {
    // A version 1 daemon's Hello: version, role Daemon, empty identity, empty auth.
    let ctrl = [1u8, 1, 0, 0, 0, 0, 0];
    let mut frame = header(ctrl.len() as u64, Kind::Hello as u8, 0, ctrl.len() as u16).to_vec();
    frame.extend_from_slice(&ctrl);
    let mut host = Conn::host(Config::default(), 0);
    let err = host.feed(0, &frame).unwrap_err();
    assert_eq!(err, ProtoError::VersionMismatch { ours: 2, theirs: 1 });
    assert!(err.to_string().contains("peer speaks version 1, this side speaks 2"), "{err}");
}

#[test]
fn wrong_protocol_version() {
    let theirs = PROTOCOL_VERSION + 1;
    let mut frame = Vec::new();
    let ctrl = [theirs as u8, 0, 0, 0];
    frame.extend_from_slice(&header(ctrl.len() as u64, Kind::Hello as u8, 0, ctrl.len() as u16));
    frame.extend_from_slice(&ctrl);
    // Either end refuses a peer of another version...
    let mut daemon = Conn::daemon(Config::default(), 0, daemon_hello(b"")).unwrap();
    common::drain(&mut daemon);
    assert_eq!(daemon.feed(0, &frame), Err(ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs }));
    let mut host = Conn::host(Config::default(), 0);
    let err = host.feed(0, &frame).unwrap_err();
    assert_eq!(err, ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs });
    assert!(err.to_string().contains(&format!("peer speaks version {theirs}")), "{err}");
    // ...and tells it why, in an Exit any version can read.
    let out = common::drain(&mut host);
    let mut daemon = Conn::daemon(Config::default(), 0, daemon_hello(b"")).unwrap();
    daemon.feed(0, &out).unwrap();
    match daemon.poll_event() {
        Some(Message::Exit { reason: ExitReason::VersionMismatch, detail }) => {
            assert!(detail.contains("version"))
        }
        other => panic!("expected Exit, got {other:?}"),
    }
}

#[test]
fn truncated_frames() {
    let stream = encode_all(&[Message::Task { id: 1, everywhere: false, payload: vec![1; 100] }]);
    for cut in 1..stream.len() {
        let mut p = Pair::new(Config::default());
        p.handshake();
        // Host gets a Result cut short, then EOF.
        let mut daemon_bytes = encode_all(&[Message::Result {
            id: 0,
            status: Status::Value,
            last: false,
            payload: vec![1; 100],
        }]);
        daemon_bytes.truncate(cut.min(daemon_bytes.len() - 1));
        p.host.send(Message::Task { id: 0, everywhere: false, payload: vec![] }).unwrap();
        p.host.feed(0, &daemon_bytes).unwrap();
        assert!(matches!(p.host.handle_eof(), Err(ProtoError::Truncated { missing }) if missing > 0));
    }
}

#[test]
fn messages_out_of_order() {
    // A Task before the handshake.
    let mut daemon = Conn::daemon(Config::default(), 0, daemon_hello(b"")).unwrap();
    let bytes = encode_all(&[Message::Task { id: 1, everywhere: false, payload: vec![] }]);
    assert_eq!(daemon.feed(0, &bytes), Err(ProtoError::Unexpected { kind: Kind::Task, state: "AwaitHello" }));
    // A daemon sending a Task to the host.
    let mut p = Pair::new(Config::default());
    p.handshake();
    assert!(matches!(p.host.feed(0, &bytes), Err(ProtoError::Unexpected { kind: Kind::Task, .. })));
    // A result for a task that was never sent.
    let mut p = Pair::new(Config::default());
    p.handshake();
    let bytes = encode_all(&[Message::Result { id: 5, status: Status::Value, last: false, payload: vec![] }]);
    assert!(matches!(p.host.feed(0, &bytes), Err(ProtoError::Unexpected { kind: Kind::Result, .. })));
    // A Hello claiming the wrong role.
    let mut host = Conn::host(Config::default(), 0);
    let bytes = encode_all(&[Message::Hello(host_hello(b"me too"))]);
    assert!(matches!(host.feed(0, &bytes), Err(ProtoError::Unexpected { kind: Kind::Hello, .. })));
    // A proof before the challenge.
    let mut host = Conn::host(Config::default(), 0);
    let bytes = encode_all(&[Message::Auth { proof: vec![1; 32] }]);
    assert_eq!(host.feed(0, &bytes), Err(ProtoError::Unexpected { kind: Kind::Auth, state: "AwaitHello" }));
    // Heartbeats, on the other hand, are fine once both sides are introduced.
    let mut p = Pair::new(Config::default());
    p.handshake();
    let header = FrameHeader { body_len: 0, kind: Kind::Heartbeat, flags: 0, ctrl_len: 0 };
    p.host.feed(0, &header.encode()).unwrap();
    assert_eq!(p.host.state(), State::Ready, "heartbeats are fine once introduced");
}
