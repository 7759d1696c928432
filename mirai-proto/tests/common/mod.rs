//! In-memory test harness: two `Conn`s wired back to back with a simulated clock.
#![allow(dead_code)]

use mirai_proto::{Config, Conn, Hello, Identity, Message, ProtoError, Role};

pub fn identity(label: &str) -> Identity {
    Identity { pid: 42, hostname: "node".into(), label: label.into() }
}

pub fn host_hello(challenge: &[u8]) -> Hello {
    Hello { role: Role::Host, identity: identity("host"), auth: challenge.to_vec() }
}

pub fn daemon_hello(proof: &[u8]) -> Hello {
    Hello { role: Role::Daemon, identity: identity("daemon"), auth: proof.to_vec() }
}

/// Everything a conn has queued for transmission, taken out as one byte vector.
pub fn drain(conn: &mut Conn) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut slices = [&[][..]; 8];
        let n = conn.transmit(&mut slices);
        if n == 0 {
            break;
        }
        let mut written = 0;
        for s in &slices[..n] {
            out.extend_from_slice(s);
            written += s.len();
        }
        conn.transmitted(0, written);
    }
    out
}

/// One example of every message, payloads included.
pub fn every_message() -> Vec<Message> {
    use mirai_proto::{ExitReason, Status};
    vec![
        Message::Hello(host_hello(b"challenge-bytes")),
        Message::Hello(daemon_hello(&[7u8; 32])),
        Message::Init {
            daemon_id: 3,
            rng_stream: [1, 2, 3, 4, 5, u32::MAX],
            heartbeat_ms: 10_000,
            blob: b"init".to_vec(),
        },
        Message::Init { daemon_id: 0, rng_stream: [0; 6], heartbeat_ms: 0, blob: Vec::new() },
        Message::Task { id: 1, everywhere: false, payload: b"task payload".to_vec() },
        Message::Task { id: u64::MAX, everywhere: true, payload: vec![0xAB; 10_000] },
        Message::Task { id: 9, everywhere: false, payload: Vec::new() },
        Message::Result { id: 1, status: Status::Value, last: false, payload: b"42".to_vec() },
        Message::Result { id: 2, status: Status::Error, last: true, payload: b"boom".to_vec() },
        Message::Result { id: 3, status: Status::Interrupted, last: false, payload: Vec::new() },
        Message::Cancel { id: 77 },
        Message::Exit { reason: ExitReason::Shutdown, detail: String::new() },
        Message::Exit { reason: ExitReason::MaxTasks, detail: "after 3 tasks".into() },
        Message::Exit { reason: ExitReason::AuthFailed, detail: "bad proof".into() },
        Message::Heartbeat,
        Message::Auth { proof: vec![9; 32] },
        Message::Auth { proof: Vec::new() },
    ]
}

/// Encodes messages back to back into one stream.
pub fn encode_all(msgs: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        let payload = m.clone().encode(&mut out).expect("encode");
        out.extend_from_slice(&payload);
    }
    out
}

/// A host and a daemon connected through in-memory byte queues.
pub struct Pair {
    pub host: Conn,
    pub daemon: Conn,
    pub now: u64,
    /// Largest chunk moved per step, to exercise partial reads.
    pub chunk: usize,
}

impl Pair {
    pub fn new(config: Config) -> Self {
        let host = Conn::host(config, 0);
        let daemon = Conn::daemon(config, 0, daemon_hello(b"")).expect("daemon");
        Pair { host, daemon, now: 0, chunk: usize::MAX }
    }

    /// Moves bytes both ways until neither side has anything to send.
    pub fn drive(&mut self) -> Result<(), ProtoError> {
        loop {
            let to_daemon = drain(&mut self.host);
            let to_host = drain(&mut self.daemon);
            if to_daemon.is_empty() && to_host.is_empty() {
                return Ok(());
            }
            for c in to_daemon.chunks(self.chunk.max(1)) {
                self.daemon.feed(self.now, c)?;
            }
            for c in to_host.chunks(self.chunk.max(1)) {
                self.host.feed(self.now, c)?;
            }
        }
    }

    /// The handshake up to the host holding the daemon's proof: daemon hello, host hello with
    /// the challenge, daemon proof.
    pub fn introduce(&mut self) {
        self.drive().unwrap();
        assert!(matches!(self.host.poll_event(), Some(Message::Hello(h)) if h.role == Role::Daemon));
        self.host.send(Message::Hello(host_hello(b"nonce"))).unwrap();
        self.drive().unwrap();
        match self.daemon.poll_event() {
            Some(Message::Hello(h)) => assert_eq!(h.auth, b"nonce"),
            other => panic!("daemon expected Hello, got {other:?}"),
        }
        self.daemon.send(Message::Auth { proof: b"proof".to_vec() }).unwrap();
        self.drive().unwrap();
        assert_eq!(self.host.poll_event(), Some(Message::Auth { proof: b"proof".to_vec() }));
    }

    /// The whole handshake: introductions, then the host's Init.
    pub fn handshake(&mut self) {
        self.introduce();
        self.host
            .send(Message::Init { daemon_id: 1, rng_stream: [1; 6], heartbeat_ms: 0, blob: b"blob".to_vec() })
            .unwrap();
        self.drive().unwrap();
        assert!(matches!(self.daemon.poll_event(), Some(Message::Init { daemon_id: 1, .. })));
    }
}
