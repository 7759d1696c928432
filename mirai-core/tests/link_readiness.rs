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
use mirai_core::transport::{Listener, Stream};
use mirai_core::url::Url;
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
    result_frame_of(id, 300)
}

/// The frame of the daemon's result for task `id`, `len` bytes of payload.
fn result_frame_of(id: u64, len: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    let msg = Message::Result { id, status: Status::Value, last: false, payload: vec![5; len] };
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

/// Reads what the link has (`Link::read_available`) and counts the read system calls it made.
fn counted_reader() -> impl FnMut(&mut Link, Readiness) -> (ReadEnd, u64) {
    let mut buf = vec![0u8; 64 << 10];
    // What finding out costs: reading the counter twice in a row.
    let cost = {
        let a = reads_so_far();
        reads_so_far() - a
    };
    move |link, ready| {
        let before = reads_so_far();
        let end = link.read_available(&mut buf, ready).unwrap();
        (end, reads_so_far() - before - cost)
    }
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
    let mut read = counted_reader();
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

/// A host-side stream accepted at `url` (TLS with `tls`), and the client's non-blocking socket.
fn accepted(url: &str, tls: Option<Arc<rustls::ServerConfig>>) -> (Stream, std::net::TcpStream) {
    let (listener, bound) = Listener::bind(&Url::parse(url).unwrap(), tls).unwrap();
    let client = std::net::TcpStream::connect(bound.socket_addrs().unwrap()[0]).unwrap();
    client.set_nonblocking(true).unwrap();
    for _ in 0..2000 {
        match listener.accept() {
            Ok(stream) => return (stream, client),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("nothing to accept");
}

/// What the client's end of the link speaks: TLS records, or masked WebSocket frames.
enum Client {
    Tls(Box<rustls::ClientConnection>, std::net::TcpStream),
    Ws(std::net::TcpStream),
}

impl Client {
    fn sock(&mut self) -> &mut std::net::TcpStream {
        match self {
            Client::Tls(_, s) | Client::Ws(s) => s,
        }
    }

    /// The bytes that carry `data` on the wire.
    fn wire(&mut self, data: &[u8]) -> Vec<u8> {
        match self {
            Client::Tls(conn, _) => {
                conn.writer().write_all(data).unwrap();
                let mut out = Vec::new();
                while conn.wants_write() {
                    conn.write_tls(&mut out).unwrap();
                }
                out
            }
            // A binary frame masked with a zero key, which leaves the payload as it is.
            Client::Ws(_) => {
                let mut frame = vec![0x82, 0x80 | 127];
                frame.extend_from_slice(&(data.len() as u64).to_be_bytes());
                frame.extend_from_slice(&[0; 4]);
                frame.extend_from_slice(data);
                frame
            }
        }
    }

    /// The bytes that close the session, leaving the socket open.
    fn close(&mut self) -> Vec<u8> {
        match self {
            Client::Tls(conn, _) => {
                conn.send_close_notify();
                let mut out = Vec::new();
                while conn.wants_write() {
                    conn.write_tls(&mut out).unwrap();
                }
                out
            }
            // A close frame without a body, masked with a zero key.
            Client::Ws(_) => vec![0x88, 0x80, 0, 0, 0, 0],
        }
    }

    /// Reads and drops what the host sent (for TLS, after the handshake: it is decrypted).
    fn discard(&mut self) {
        let mut buf = [0u8; 1 << 16];
        loop {
            match self {
                Client::Tls(conn, sock) => match conn.read_tls(sock) {
                    Ok(0) => return,
                    Ok(_) => {
                        conn.process_new_packets().unwrap();
                        let _ = conn.reader().read(&mut buf);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Err(e) => panic!("{e}"),
                },
                Client::Ws(sock) => match sock.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Err(e) => panic!("{e}"),
                },
            }
        }
    }
}

/// A link over a TLS or WebSocket stream, with its handshake or upgrade done, and the client.
fn buffered_link(kind: &str, poll: &mut Poll) -> (Link, Client) {
    let registry = Arc::new(poll.registry().try_clone().unwrap());
    let (stream, mut client) = if kind == "tls" {
        let url = Url::parse("tls+tcp://127.0.0.1:0").unwrap();
        let id = mirai_core::tls::generate(&url).unwrap();
        let server = mirai_core::tls::server_config(&id.cert_chain_pem, &id.key_pem, None).unwrap();
        let (stream, sock) = accepted("tls+tcp://127.0.0.1:0", Some(server));
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut conn =
            rustls::ClientConnection::new(mirai_core::tls::client_config(&id.ca_pem).unwrap(), name).unwrap();
        // The test writes messages larger than rustls buffers by default.
        conn.set_buffer_limit(None);
        (stream, Client::Tls(Box::new(conn), sock))
    } else {
        let (stream, mut sock) = accepted("ws://127.0.0.1:0/p", None);
        let request = "GET /p HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        sock.write_all(request.as_bytes()).unwrap();
        (stream, Client::Ws(sock))
    };
    let mut link = Link::watched(stream, ready_host_conn(), registry, LINK).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    // Both ends in turn until the handshake or upgrade is through: the host's first task then
    // reaches the client.
    assert!(link.send(Message::Task { id: 1, everywhere: false, payload: vec![7; 10] }).is_ok());
    let mut head = Vec::new();
    let mut through = false;
    for _ in 0..2000 {
        let _ = link.read_available(&mut buf, Readiness::Unknown);
        let _ = link.flush();
        match &mut client {
            Client::Tls(conn, s) => {
                while conn.wants_write() {
                    match conn.write_tls(s) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                match conn.read_tls(s) {
                    Ok(_) => {
                        conn.process_new_packets().unwrap();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
                let mut plain = [0u8; 256];
                if !conn.is_handshaking() && conn.reader().read(&mut plain).is_ok_and(|n| n > 0) {
                    through = true;
                    break;
                }
            }
            Client::Ws(s) => {
                let mut chunk = [0u8; 4096];
                if let Ok(n) = s.read(&mut chunk) {
                    head.extend_from_slice(&chunk[..n]);
                }
                // The 101 answer, then bytes of the task's frame after it.
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
                    if head.len() > end + 4 {
                        through = true;
                        break;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(through, "{kind}: the handshake or upgrade did not finish");
    client.discard();
    while ready_now(poll).is_some() {}
    (link, client)
}

#[test]
fn tls_and_websocket_reads_after_an_event_stop_at_a_short_socket_read() {
    for kind in ["tls", "ws"] {
        let mut poll = Poll::new().unwrap();
        let (mut link, mut client) = buffered_link(kind, &mut poll);
        let mut read = counted_reader();
        let result = |link: &mut Link, id| {
            let got = link.proto.poll_event();
            assert!(matches!(got, Some(Message::Result { id: got, .. }) if got == id), "{kind}: result {id}");
        };

        // A whole message: one read, which found the socket empty.
        let wire = client.wire(&result_frame(1));
        client.sock().write_all(&wire).unwrap();
        assert_eq!(read(&mut link, next_event(&mut poll)), (ReadEnd::Open, 1), "{kind}: one read");
        result(&mut link, 1);

        // Half a record or frame: a read that leaves it begun, then an event for the rest.
        assert!(link.send(Message::Task { id: 2, everywhere: false, payload: vec![7; 10] }).unwrap());
        std::thread::sleep(Duration::from_millis(5));
        client.discard();
        let wire = client.wire(&result_frame(2));
        client.sock().write_all(&wire[..wire.len() / 2]).unwrap();
        // A TLS read whose socket read gave no plaintext reads again for its `WouldBlock`: only
        // its caller knows whether a close may have come with the bytes.
        let (end, reads) = read(&mut link, next_event(&mut poll));
        assert_eq!(end, ReadEnd::Open);
        assert_eq!(reads, if kind == "tls" { 2 } else { 1 }, "{kind}: half");
        assert!(link.proto.poll_event().is_none(), "{kind}: half a message");
        client.sock().write_all(&wire[wire.len() / 2..]).unwrap();
        assert_eq!(read(&mut link, next_event(&mut poll)), (ReadEnd::Open, 1), "{kind}: the rest");
        result(&mut link, 2);

        // More than one read's worth: reads go on until one is short.
        assert!(link.send(Message::Task { id: 3, everywhere: false, payload: vec![7; 10] }).unwrap());
        std::thread::sleep(Duration::from_millis(5));
        client.discard();
        let wire = client.wire(&result_frame_of(3, 200_000));
        client.sock().set_nonblocking(false).unwrap();
        client.sock().write_all(&wire).unwrap();
        client.sock().set_nonblocking(true).unwrap();
        // What the socket's buffers could not take at once comes as they drain: each arrival
        // raises an event (a lost one would leave `next_event` waiting), until all is in.
        let mut reads = 0;
        let got = loop {
            let (end, n) = read(&mut link, next_event(&mut poll));
            assert_eq!(end, ReadEnd::Open);
            reads += n;
            if let Some(msg) = link.proto.poll_event() {
                break msg;
            }
        };
        assert!(matches!(got, Message::Result { id: 3, .. }), "{kind}: result 3");
        assert!(reads >= 2, "{kind}: {reads} reads for {} bytes", wire.len());

        // The peer's close (TLS close_notify, a WebSocket close frame) right behind its last
        // message, the socket left open: no event will follow, so that read goes on to the end.
        assert!(link.send(Message::Task { id: 4, everywhere: false, payload: vec![7; 10] }).unwrap());
        std::thread::sleep(Duration::from_millis(5));
        client.discard();
        let mut wire = client.wire(&result_frame(4));
        wire.extend_from_slice(&client.close());
        client.sock().write_all(&wire).unwrap();
        let ready = next_event(&mut poll);
        assert_eq!(ready, Readiness::Event, "{kind}: the socket itself stays open");
        assert_eq!(read(&mut link, ready).0, ReadEnd::Eof, "{kind}: the close is read");
        result(&mut link, 4);
    }
}
