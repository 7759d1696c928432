//! The framing without sockets: a pipe that takes only so many bytes per write and gives only
//! so many per read, byte streams across every frame-size boundary, tungstenite as the peer
//! that checks our frames, and the frames a peer must not send.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::mem::MaybeUninit;

use tungstenite::protocol::{Message, Role, WebSocket};

use super::*;

/// Both directions of a connection. Writes go to `outgoing`, at most `room` bytes until the
/// test raises it again (then `WouldBlock`); reads take from `incoming`, at most `chunk` bytes
/// at a time, `WouldBlock` when it is empty, or the end of the stream once `eof` is set.
#[derive(Default)]
struct Pipe {
    incoming: VecDeque<u8>,
    eof: bool,
    chunk: usize,
    outgoing: Vec<u8>,
    room: usize,
}

impl Pipe {
    fn sending(room: usize) -> Self {
        Pipe { room, chunk: usize::MAX, ..Pipe::default() }
    }
    /// Gives `wire` and then the end of the stream; takes whatever is written back.
    fn receiving(wire: &[u8], chunk: usize) -> Self {
        Pipe {
            incoming: wire.iter().copied().collect(),
            eof: true,
            chunk,
            room: usize::MAX,
            ..Pipe::default()
        }
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.incoming.is_empty() {
            return if self.eof { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(self.chunk).min(self.incoming.len());
        for (b, x) in buf.iter_mut().zip(self.incoming.drain(..n)) {
            *b = x;
        }
        Ok(n)
    }
}

impl ReadUninit for Pipe {
    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let mut scratch = vec![0; buf.len()];
        let n = self.read(&mut scratch)?;
        for (b, x) in buf.iter_mut().zip(&scratch[..n]) {
            b.write(*x);
        }
        Ok(n)
    }

    fn drained_after(&self, n: usize, asked: usize) -> bool {
        n < asked && self.incoming.is_empty()
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(self.room - n);
            self.outgoing.extend_from_slice(&b[..take]);
            n += take;
        }
        self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn stream_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Writes `data` through `side`'s framing the way `Link::flush` does (the unconsumed rest,
/// in slices of at most `slice` bytes), the socket taking `room` bytes between stalls.
fn send_all(side: Side, data: &[u8], slice: usize, room: usize) -> Vec<u8> {
    let mut w = Framed::new(Pipe::sending(room), side, &[]);
    let mut sent = 0;
    let mut stalls = 0;
    while sent < data.len() || w.flush().is_err() {
        let slices: Vec<IoSlice<'_>> = data[sent..].chunks(slice).take(64).map(IoSlice::new).collect();
        match w.write_vectored(&slices) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stalls += 1;
                w.get_mut().room = room;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(stalls < 1_000_000);
    }
    std::mem::take(&mut w.get_mut().outgoing)
}

/// Reads the whole stream out of `wire` at `side`, in reads of at most `buf` bytes: once into
/// initialised memory, once into the spare capacity of the result (as a payload buffer is read
/// into), which must agree.
fn receive_all(side: Side, wire: Vec<u8>, buf: usize, chunk: usize) -> Vec<u8> {
    let mut r = Framed::new(Pipe::receiving(&wire, chunk), side, &[]);
    let mut got = Vec::new();
    let mut b = vec![0; buf];
    loop {
        match r.read(&mut b).unwrap() {
            0 => break,
            n => got.extend_from_slice(&b[..n]),
        }
    }
    let mut r = Framed::new(Pipe::receiving(&wire, chunk), side, &[]);
    let mut direct: Vec<u8> = Vec::with_capacity(buf);
    loop {
        direct.reserve(buf);
        let spare = &mut direct.spare_capacity_mut()[..buf];
        match r.read_uninit(spare).unwrap() {
            0 => break,
            // SAFETY: read_uninit initialised these `n` bytes of the spare capacity.
            n => unsafe { direct.set_len(direct.len() + n) },
        }
    }
    assert!(direct == got, "reads into uninitialised memory agree");
    got
}

fn peer_of(side: Side) -> Side {
    match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

#[test]
fn byte_streams_cross_every_frame_boundary_unchanged() {
    let sizes =
        [1, 125, 126, 65_535, 65_536, CLIENT_FRAME - 1, CLIENT_FRAME + 1, MESSAGE_MAX, MESSAGE_MAX + 3];
    for side in [Side::Client, Side::Server] {
        for &len in &sizes {
            let data = stream_of(len);
            for (slice, room, buf, chunk) in
                [(len, usize::MAX, 1 << 20, usize::MAX), (1000, 777, 100, 313), (4096, 3, 8192, 5000)]
            {
                if room < 10 && len > 70_000 {
                    continue; // Too slow a byte at a time; the small sizes cover it.
                }
                let wire = send_all(side, &data, slice.max(1), room);
                let got = receive_all(peer_of(side), wire, buf, chunk);
                assert!(got == data, "{side:?} {len} B, slices {slice}, room {room}, reads {buf}/{chunk}");
            }
        }
    }
}

#[test]
fn a_partly_written_header_resumes_before_its_payload() {
    // Room for 1 byte at a time: the server's 4-byte header goes out over four stalls.
    let data = stream_of(300);
    let wire = send_all(Side::Server, &data, 300, 1);
    assert_eq!(&wire[..4], &[0x82, 126, 1, 44]);
    assert_eq!(receive_all(Side::Client, wire, 64, 7), data);
}

#[test]
fn tungstenite_reads_our_frames_and_we_read_its_frames() {
    for (ours, theirs) in [(Side::Client, Role::Server), (Side::Server, Role::Client)] {
        let data = stream_of(3 * CLIENT_FRAME + 17);
        let wire = send_all(ours, &data, 5000, 100_000);
        let mut peer = WebSocket::from_raw_socket(io::Cursor::new(wire), theirs, None);
        let mut got = Vec::new();
        while got.len() < data.len() {
            match peer.read().unwrap() {
                Message::Binary(b) => got.extend_from_slice(&b),
                other => panic!("{other:?}"),
            }
        }
        assert!(got == data);

        // The other way: tungstenite's messages (masked if it is the client), then a close.
        let mut peer = WebSocket::from_raw_socket(io::Cursor::new(Vec::new()), theirs, None);
        for piece in data.chunks(70_000) {
            peer.send(Message::Binary(piece.to_vec().into())).unwrap();
        }
        peer.close(None).unwrap();
        let _ = peer.flush();
        let wire = peer.get_ref().get_ref().clone();
        assert!(receive_all(ours, wire, 10_000, 9_000) == data);
    }
}

#[test]
fn a_ping_inside_a_frame_is_answered_after_it() {
    let mut server = Framed::new(Pipe::sending(1000), Side::Server, &[]);
    let data = stream_of(5000);
    let mut sent = server.write_vectored(&[IoSlice::new(&data)]).unwrap();
    assert!(sent < data.len(), "the frame is only begun");
    // A client's masked ping arrives while the frame is half written.
    server.get_mut().incoming.extend([0x89, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    let mut buf = [0u8; 16];
    assert_eq!(server.read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    server.get_mut().room = usize::MAX;
    while sent < data.len() {
        sent += server.write_vectored(&[IoSlice::new(&data[sent..])]).unwrap();
    }
    server.flush().unwrap();
    let wire = &server.get_ref().outgoing;
    assert_eq!(&wire[..4], &[0x82, 126, 0x13, 0x88], "one frame of 5000 bytes");
    assert!(wire[4..4 + data.len()] == data[..], "nothing inside the frame's payload");
    assert_eq!(&wire[4 + data.len()..], &[0x8a, 2, b'h', b'i'], "the pong, whole, after the frame");
}

/// Feeds `wire` to a server and returns its error and the close code it sent back.
fn refused(wire: &[u8]) -> (String, Option<u16>) {
    let mut server = Framed::new(Pipe::receiving(wire, usize::MAX), Side::Server, &[]);
    let mut buf = [0u8; 4096];
    let e = loop {
        match server.read(&mut buf) {
            Ok(0) => panic!("not refused"),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    let back = &server.get_ref().outgoing;
    let code = (back.len() >= 4 && back[0] == 0x88).then(|| u16::from_be_bytes([back[2], back[3]]));
    (e.to_string(), code)
}

/// A client's frame, masked with a zero key so the payload reads as is.
fn client_frame(first: u8, payload: &[u8], claimed: Option<u64>) -> Vec<u8> {
    let len = claimed.unwrap_or(payload.len() as u64);
    let mut f = vec![first];
    if len < 126 {
        f.push(0x80 | len as u8);
    } else {
        f.push(0x80 | 127);
        f.extend(len.to_be_bytes());
    }
    f.extend([0; 4]);
    f.extend(payload);
    f
}

#[test]
fn frames_a_peer_must_not_send_are_refused_with_the_right_close_code() {
    let text = refused(&client_frame(0x81, b"hi", None));
    assert!(text.0.contains("text message refused") && text.1 == Some(1003), "{text:?}");
    let huge = refused(&client_frame(0x82, &[], Some(64 << 20)));
    assert!(huge.0.contains("WebSocket message refused") && huge.1 == Some(1009), "{huge:?}");
    let mut fragments = client_frame(0x02, &[0; 60_000], None);
    for _ in 0..20 {
        fragments.extend(client_frame(0x00, &[0; 60_000], None));
    }
    assert_eq!(refused(&fragments).1, Some(1009), "a fragmented message over the limit");
    assert_eq!(refused(&client_frame(0x80, b"x", None)).1, Some(1002), "a continuation of nothing");
    assert_eq!(refused(&client_frame(0xc2, b"x", None)).1, Some(1002), "reserved bit");
    assert_eq!(refused(&client_frame(0x83, b"x", None)).1, Some(1002), "reserved opcode");
    assert_eq!(refused(&[0x82, 0x01, b'x']).1, Some(1002), "unmasked from a client");
    assert_eq!(refused(&client_frame(0x09, b"", None)).1, Some(1002), "fragmented ping");
    assert_eq!(refused(&client_frame(0x89, &[0; 126], None)).1, Some(1002), "oversized ping");
    assert_eq!(refused(&client_frame(0x88, b"x", None)).1, Some(1002), "one-byte close");
}

#[test]
fn a_fragmented_message_within_the_limit_is_the_stream() {
    let mut wire = client_frame(0x02, b"ab", None);
    wire.extend(client_frame(0x89, b"p", None)); // a ping between fragments
    wire.extend(client_frame(0x00, b"cd", None));
    wire.extend(client_frame(0x80, b"e", None));
    wire.extend(client_frame(0x82, b"f", None));
    assert_eq!(receive_all(Side::Server, wire, 100, usize::MAX), b"abcdef");
}

#[test]
fn a_close_from_the_peer_is_answered_and_ends_the_stream_or_says_why() {
    let normal = [client_frame(0x82, b"xy", None), client_frame(0x88, &1000u16.to_be_bytes(), None)].concat();
    let mut server = Framed::new(Pipe::receiving(&normal, usize::MAX), Side::Server, &[]);
    let mut buf = [0u8; 10];
    assert_eq!(server.read(&mut buf).unwrap(), 2);
    assert_eq!(server.read(&mut buf).unwrap(), 0, "the end of the stream");
    assert_eq!(server.get_ref().outgoing, [0x88, 2, 0x03, 0xe8], "the code echoed");
    assert_eq!(
        server.write_vectored(&[IoSlice::new(b"late")]).unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );

    // A close with a code no endpoint may send (1005) gets an empty close back.
    let odd = client_frame(0x88, &1005u16.to_be_bytes(), None);
    let mut server = Framed::new(Pipe::receiving(&odd, usize::MAX), Side::Server, &[]);
    assert!(server.read(&mut buf).unwrap_err().to_string().contains("code 1005"));
    assert_eq!(server.get_ref().outgoing, [0x88, 0]);

    // A ping arriving after our own close gets no pong: nothing may follow a close frame.
    let ping = [client_frame(0x89, b"p", None), client_frame(0x82, b"z", None)].concat();
    let mut server = Framed::new(Pipe::receiving(&ping, usize::MAX), Side::Server, &[]);
    server.close(Some(CloseCode::Normal), "");
    assert_eq!(server.read(&mut buf).unwrap(), 1);
    server.flush().unwrap();
    assert_eq!(server.get_ref().outgoing, [0x88, 2, 0x03, 0xe8]);

    let mut too_big = 1009u16.to_be_bytes().to_vec();
    too_big.extend(b"message too big");
    let (e, _) = refused(&client_frame(0x88, &too_big, None));
    assert!(e.contains("too big") && e.contains(&MESSAGE_MAX.to_string()), "{e}");
}

#[test]
fn bytes_read_past_the_upgrade_are_the_first_frames() {
    let tail = [0x82, 3, b'a', b'b'];
    let mut client = Framed::new(Pipe::receiving(&[b'c', 0x82, 1, b'd'], usize::MAX), Side::Client, &tail);
    let mut got = Vec::new();
    let mut buf = [0u8; 8];
    loop {
        match client.read(&mut buf).unwrap() {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(got, b"abcd");
}

#[test]
fn masks_are_applied_at_any_offset() {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let data = stream_of(1000);
    let mut whole = data.clone();
    apply_mask(&mut whole, mask, 0);
    for split in [0, 1, 3, 7, 8, 9, 500] {
        let mut parts = data.clone();
        let (a, b) = parts.split_at_mut(split);
        apply_mask(a, mask, 0);
        apply_mask(b, mask, split);
        assert_eq!(parts, whole, "split at {split}");
    }
    let by_byte: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
    assert_eq!(whole, by_byte);
}

#[test]
fn a_client_refuses_a_masked_frame_from_a_server() {
    let mut client =
        Framed::new(Pipe::receiving(&client_frame(0x82, b"x", None), usize::MAX), Side::Client, &[]);
    let mut buf = [0u8; 16];
    let e = client.read(&mut buf).unwrap_err();
    assert!(e.to_string().contains("masked frame from a server"), "{e}");
    let back = &client.get_ref().outgoing;
    // The client's close frame is masked: code 1002 under its key.
    assert_eq!(back[0], 0x88);
    let key = [back[2], back[3], back[4], back[5]];
    assert_eq!([back[6] ^ key[0], back[7] ^ key[1]], 1002u16.to_be_bytes());
}
