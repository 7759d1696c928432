//! A link and its poller's readiness events.
//!
//! Writability is asked for only while a write is left waiting. On a Unix socket registered for
//! it for good, each message the peer reads wakes the writer's poller; here the peer reads and
//! the poller stays quiet, and a socket that was full reports writability once the peer drains it.
//!
//! Reading after an event ends with a read shorter than asked for, without the read that would
//! only say `WouldBlock`; bytes arriving later raise a new event, and a close reported with the
//! last bytes is read to the end.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream as StdUnix;
use std::sync::Arc;
use std::time::Duration;

use mio::net::UnixStream;
use mio::{Events, Poll, Token};
use mirai_core::handshake::{DaemonHandshake, HostHandshake};
use mirai_core::identity::local_identity;
use mirai_core::link::{Link, ReadEnd, Readiness};
use mirai_core::transport::Stream;
use mirai_proto::{Config, Conn, Message, Status};

const LINK: Token = Token(3);

/// A host's connection state past the handshake with a daemon, run in memory.
fn ready_host_conn() -> Conn {
    let config = Config { handshake_timeout: None, ..Config::default() };
    let mut daemon = Conn::daemon(config, 0, DaemonHandshake::new().hello(local_identity())).unwrap();
    let mut host = Conn::host(config, 0);
    let shuttle = |from: &mut Conn, to: &mut Conn| loop {
        let mut out = [&[][..]; 8];
        let k = from.transmit(&mut out);
        let bytes: Vec<u8> = out[..k].concat();
        if bytes.is_empty() {
            return;
        }
        from.transmitted(0, bytes.len());
        to.feed(0, &bytes).unwrap();
    };
    shuttle(&mut daemon, &mut host);
    let Some(Message::Hello(hello)) = host.poll_event() else { panic!("no Hello") };
    host.send(Message::Hello(HostHandshake::new().answer(None, &hello, None).unwrap())).unwrap();
    shuttle(&mut host, &mut daemon);
    assert!(matches!(daemon.poll_event(), Some(Message::Hello(_))));
    daemon.send(Message::Auth { proof: Vec::new() }).unwrap();
    shuttle(&mut daemon, &mut host);
    assert!(matches!(host.poll_event(), Some(Message::Auth { .. })));
    host.send(Message::Init { daemon_id: 1, rng_stream: [1; 6], heartbeat_ms: 0, blob: Vec::new() }).unwrap();
    let mut out = [&[][..]; 8];
    let k = host.transmit(&mut out);
    let n = out[..k].iter().map(|s| s.len()).sum();
    host.transmitted(0, n);
    host
}

/// The events the poller has for the link right now: (readable, writable), or None.
fn ready_now(poll: &mut Poll) -> Option<(bool, bool)> {
    let mut events = Events::with_capacity(8);
    poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
    events.iter().find(|e| e.token() == LINK).map(|e| (e.is_readable(), e.is_writable()))
}

/// The frame of the daemon's result for task `id`.
fn result_frame(id: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    let msg = Message::Result { id, status: Status::Value, last: false, payload: vec![5; 300] };
    let payload = msg.encode(&mut bytes).unwrap();
    bytes.extend_from_slice(&payload);
    bytes
}

/// The daemon's result for task `id`, fed to the host's side as if read, so it may send another.
fn answer(link: &mut Link, id: u64) {
    link.proto.feed(0, &result_frame(id)).unwrap();
    assert!(matches!(link.proto.poll_event(), Some(Message::Result { .. })));
}

/// Read system calls this thread has made (`syscr`). Reading the file makes some of its own,
/// which callers measure once and subtract.
fn reads_so_far() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    let line = io.lines().find_map(|l| l.strip_prefix("syscr: ")).unwrap();
    line.parse().unwrap()
}

/// Waits for the link's next event and says how to read after it.
fn next_event(poll: &mut Poll) -> Readiness {
    let mut events = Events::with_capacity(8);
    poll.poll(&mut events, Some(Duration::from_secs(20))).unwrap();
    let event = events.iter().find(|e| e.token() == LINK).expect("an event for the link");
    Readiness::after(event).expect("an event for reading")
}

/// Reads everything the peer has been sent so far.
fn drain(peer: &mut StdUnix) -> usize {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        match peer.read(&mut buf) {
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn the_poller_reports_writability_only_while_a_write_waits() {
    let (ours, mut peer) = StdUnix::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    peer.set_nonblocking(true).unwrap();
    let mut poll = Poll::new().unwrap();
    let registry = Arc::new(poll.registry().try_clone().unwrap());
    let stream = Stream::Unix(UnixStream::from_std(ours));
    let mut link = Link::watched(stream, ready_host_conn(), registry, LINK).unwrap();

    // At first the link is watched for writability, so what a stream starts with goes out.
    assert_eq!(ready_now(&mut poll), Some((false, true)));
    assert!(link.flush().unwrap());

    // Small tasks the peer reads one by one: nothing for the poller, each time.
    for id in 1..=5 {
        let task = Message::Task { id, everywhere: false, payload: vec![7; 100] };
        assert!(link.send(task).unwrap(), "a small task went out whole");
        assert!(drain(&mut peer) > 100);
        assert_eq!(ready_now(&mut poll), None, "the peer's read of task {id} woke the poller");
        answer(&mut link, id);
    }

    // A task larger than the socket holds: the rest waits, and writability is reported as the
    // peer drains, until all of it is through.
    let big = 16 << 20;
    assert!(!link.send(Message::Task { id: 6, everywhere: false, payload: vec![1; big] }).unwrap());
    let mut received = 0;
    let mut rounds = 0;
    loop {
        received += drain(&mut peer);
        if link.proto.pending_out() == 0 {
            break;
        }
        assert_eq!(ready_now(&mut poll), Some((false, true)), "no writability after the peer drained");
        link.flush().unwrap();
        rounds += 1;
        assert!(rounds < 100_000);
    }
    received += drain(&mut peer);
    assert!(received > big);
    answer(&mut link, 6);
    // Whole again: the peer's reads no longer wake the poller.
    let _ = ready_now(&mut poll);
    assert!(link.send(Message::Task { id: 7, everywhere: false, payload: vec![7; 100] }).unwrap());
    assert!(drain(&mut peer) > 100);
    assert_eq!(ready_now(&mut poll), None, "still watched for writability once whole");
}

#[test]
fn a_read_after_an_event_stops_at_a_short_read_and_loses_nothing() {
    let (ours, mut peer) = StdUnix::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut poll = Poll::new().unwrap();
    let registry = Arc::new(poll.registry().try_clone().unwrap());
    let mut link =
        Link::watched(Stream::Unix(UnixStream::from_std(ours)), ready_host_conn(), registry, LINK).unwrap();
    assert!(link.flush().unwrap());
    let _ = ready_now(&mut poll);
    let mut buf = vec![0u8; 64 << 10];
    // What finding out costs: reading the counter twice in a row.
    let cost = {
        let a = reads_so_far();
        reads_so_far() - a
    };
    let mut read = |link: &mut Link, ready| {
        let before = reads_so_far();
        let end = link.read_available(&mut buf, ready).unwrap();
        (end, reads_so_far() - before - cost)
    };
    let task = |link: &mut Link, peer: &mut StdUnix, id| {
        assert!(link.send(Message::Task { id, everywhere: false, payload: vec![7; 10] }).unwrap());
        peer.set_nonblocking(true).unwrap();
        assert!(drain(peer) > 10);
        peer.set_nonblocking(false).unwrap();
    };
    let result = |link: &mut Link, id| {
        assert!(matches!(link.proto.poll_event(), Some(Message::Result { id: got, .. }) if got == id));
    };

    // After an event: one read, shorter than the buffer, and the result is in.
    task(&mut link, &mut peer, 1);
    peer.write_all(&result_frame(1)).unwrap();
    assert_eq!(next_event(&mut poll), Readiness::Event);
    assert_eq!(read(&mut link, Readiness::Event), (ReadEnd::Open, 1), "one read system call");
    result(&mut link, 1);

    // Readiness unknown: read until the socket says it has nothing.
    task(&mut link, &mut peer, 2);
    peer.write_all(&result_frame(2)).unwrap();
    assert_eq!(read(&mut link, Readiness::Unknown), (ReadEnd::Open, 2), "read to WouldBlock");
    result(&mut link, 2);
    let _ = ready_now(&mut poll);

    // Bytes that come after a short read raise an event of their own.
    task(&mut link, &mut peer, 3);
    let frame = result_frame(3);
    peer.write_all(&frame[..100]).unwrap();
    assert_eq!(read(&mut link, next_event(&mut poll)), (ReadEnd::Open, 1));
    assert!(link.proto.poll_event().is_none(), "half a frame");
    peer.write_all(&frame[100..]).unwrap();
    assert_eq!(read(&mut link, next_event(&mut poll)), (ReadEnd::Open, 1));
    result(&mut link, 3);

    // A close that came with the last bytes raises no event after them: read to the end.
    task(&mut link, &mut peer, 4);
    peer.write_all(&result_frame(4)).unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    let ready = next_event(&mut poll);
    assert_eq!(ready, Readiness::Unknown, "the event reports the close");
    assert_eq!(read(&mut link, ready).0, ReadEnd::Eof);
    result(&mut link, 4);
}
