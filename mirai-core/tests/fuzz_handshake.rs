//! Fuzz harness for authentication, both roles: each end's state machine and handshake, driven
//! as the host's event loop and the daemon's session drive them, fed arbitrary bytes, and
//! recorded genuine conversations that were damaged or replayed, in arbitrary chunks. Nothing
//! may panic; a host never admits a daemon, and a daemon never proves itself or takes a task,
//! unless the very proof made for that connection arrived intact. `MIRAI_FUZZ_CASES` sets the
//! number of inputs per target.

#[path = "../../mirai-proto/tests/support/fuzz.rs"]
mod fuzz;

use fuzz::{cuts, damage, mutations, run};
use mirai_core::handshake::{DaemonHandshake, HostHandshake};
use mirai_proto::{Config, Conn, ExitReason, Hello, Identity, Message};
use proptest::prelude::*;

/// What every input must leave true.
const WHAT: &str = "no crash, no false admission";

const SECRET: &[u8] = b"the secret both ends of the fuzzed conversations hold";

fn config() -> Config {
    Config { max_frame: 1 << 16, ..Config::default() }
}

fn take(conn: &mut Conn) -> Vec<u8> {
    let mut out = [&[][..]; 16];
    let k = conn.transmit(&mut out);
    let bytes = out[..k].concat();
    conn.transmitted(0, bytes.len());
    bytes
}

/// `bytes` cut at `cuts` (sorted offsets, clamped to the input).
fn chunks<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut start = 0;
    let mut out = Vec::new();
    for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let end = end.clamp(start, bytes.len());
        out.push(&bytes[start..end]);
        start = end;
    }
    out
}

/// The host's end, answering as its event loop does.
struct HostEnd {
    conn: Conn,
    handshake: HostHandshake,
    admitted: bool,
}

impl HostEnd {
    fn new() -> Self {
        HostEnd { conn: Conn::host(config(), 0), handshake: HostHandshake::new(), admitted: false }
    }

    fn feed(&mut self, bytes: &[u8]) -> bool {
        if self.conn.feed(0, bytes).is_err() {
            return false;
        }
        while let Some(msg) = self.conn.poll_event() {
            let reply = match msg {
                Message::Hello(daemon) => match self.handshake.answer(Some(SECRET), &daemon, None) {
                    Ok(hello) => Message::Hello(hello),
                    Err(r) => Message::Exit { reason: ExitReason::AuthFailed, detail: r.to_string() },
                },
                Message::Auth { proof } => match self.handshake.check(Some(SECRET), &proof) {
                    Ok(()) => {
                        self.admitted = true;
                        Message::Init { daemon_id: 1, rng_stream: [1; 6], heartbeat_ms: 0, blob: vec![] }
                    }
                    Err(r) => Message::Exit { reason: ExitReason::AuthFailed, detail: r.to_string() },
                },
                _ => continue,
            };
            if self.conn.send(reply).is_err() {
                return false;
            }
        }
        true
    }
}

/// The daemon's end, answering as its session does.
struct DaemonEnd<'a> {
    conn: Conn,
    handshake: &'a DaemonHandshake,
    /// The host's `Hello` it proved itself to.
    proved_to: Option<Hello>,
    /// Init or tasks it took.
    took: usize,
}

impl<'a> DaemonEnd<'a> {
    fn new(handshake: &'a DaemonHandshake) -> Self {
        let conn = Conn::daemon(config(), 0, handshake.hello(Identity::default())).unwrap();
        DaemonEnd { conn, handshake, proved_to: None, took: 0 }
    }

    fn feed(&mut self, bytes: &[u8]) -> bool {
        if self.conn.feed(0, bytes).is_err() {
            return false;
        }
        while let Some(msg) = self.conn.poll_event() {
            match msg {
                Message::Hello(host) => {
                    let reply = match self.handshake.answer(Some(SECRET), &host, None) {
                        Ok(proof) => {
                            self.proved_to = Some(host);
                            Message::Auth { proof }
                        }
                        Err(r) => Message::Exit { reason: ExitReason::AuthFailed, detail: r.to_string() },
                    };
                    if self.conn.send(reply).is_err() {
                        return false;
                    }
                }
                Message::Init { .. } | Message::Task { .. } => self.took += 1,
                _ => {}
            }
        }
        true
    }
}

/// A genuine conversation: the daemon's handshake, what it sent, what the host sent (its
/// `Hello`, `Init` and a task), and the host's `Hello`.
fn conversation() -> (DaemonHandshake, Vec<u8>, Vec<u8>, Hello) {
    let dh = DaemonHandshake::new();
    let mut daemon = DaemonEnd::new(&dh);
    let mut host = HostEnd::new();
    let mut from_daemon = Vec::new();
    let mut from_host = Vec::new();
    for _ in 0..3 {
        let d = take(&mut daemon.conn);
        assert!(host.feed(&d));
        from_daemon.extend(d);
        let h = take(&mut host.conn);
        assert!(daemon.feed(&h));
        from_host.extend(h);
    }
    assert!(host.admitted && daemon.took == 1, "the genuine conversation authenticates");
    host.conn.send(Message::Task { id: 1, everywhere: false, payload: b"task".to_vec() }).unwrap();
    from_host.extend(take(&mut host.conn));
    let hello = daemon.proved_to.take().unwrap();
    (dh, from_daemon, from_host, hello)
}

#[test]
fn fuzz_arbitrary_bytes_at_both_ends() {
    run((proptest::collection::vec(any::<u8>(), 0..1024), cuts(512)), WHAT, |(bytes, cuts)| {
        let mut host = HostEnd::new();
        let dh = DaemonHandshake::new();
        let mut daemon = DaemonEnd::new(&dh);
        for chunk in chunks(&bytes, &cuts) {
            host.feed(chunk);
            daemon.feed(chunk);
        }
        assert!(!host.admitted, "a host admitted a stranger");
        assert!(daemon.proved_to.is_none() && daemon.took == 0, "a daemon served a stranger");
    });
}

#[test]
fn fuzz_replayed_daemon_conversations() {
    // A recorded daemon side, damaged or not, replayed to a fresh host: its nonce differs, so
    // no recorded proof can hold.
    run((mutations(0), cuts(512)), WHAT, |(mutations, cuts)| {
        let (_, from_daemon, _, _) = conversation();
        let bytes = damage(from_daemon, &mutations);
        let mut host = HostEnd::new();
        for chunk in chunks(&bytes, &cuts) {
            if !host.feed(chunk) {
                break;
            }
        }
        assert!(!host.admitted, "a replayed proof was accepted");
    });
}

#[test]
fn fuzz_damaged_host_conversations() {
    // A genuine host side, damaged, fed to the daemon it was made for: the daemon proves itself
    // only if the host's nonce and proof came through intact, and takes nothing otherwise.
    run((mutations(0), cuts(512)), WHAT, |(mutations, cuts)| {
        let (dh, _, from_host, genuine) = conversation();
        let bytes = damage(from_host, &mutations);
        let mut daemon = DaemonEnd::new(&dh);
        for chunk in chunks(&bytes, &cuts) {
            if !daemon.feed(chunk) {
                break;
            }
        }
        match &daemon.proved_to {
            Some(hello) => assert_eq!(hello.auth, genuine.auth, "proved to a host whose proof was damaged"),
            None => assert_eq!(daemon.took, 0, "took a task without proving itself"),
        }
    });
}
