//! Host and daemon state machines wired together in memory, with a simulated clock.

mod common;

use common::{Pair, drain};
use mirai_proto::{Config, ExitReason, Message, ProtoError, State, Status};

fn task(id: u64, payload: &[u8]) -> Message {
    Message::Task { id, everywhere: false, payload: payload.to_vec() }
}

fn result(id: u64, last: bool, payload: &[u8]) -> Message {
    Message::Result { id, status: Status::Value, last, payload: payload.to_vec() }
}

#[test]
fn handshake_tasks_cancel_exit() {
    for chunk in [1, 3, 13, usize::MAX] {
        let mut p = Pair::new(Config::default());
        p.chunk = chunk;
        p.handshake();
        assert_eq!(p.host.state(), State::Ready);
        assert_eq!(p.daemon.state(), State::Ready);

        // Two tasks, one after the other.
        for id in 1..=2u64 {
            p.host.send(task(id, b"2+2")).unwrap();
            p.drive().unwrap();
            assert_eq!(p.daemon.poll_event(), Some(task(id, b"2+2")));
            p.daemon.send(result(id, false, b"4")).unwrap();
            p.drive().unwrap();
            assert_eq!(p.host.poll_event(), Some(result(id, false, b"4")));
        }

        // A cancel reaches the daemon while the task runs; the daemon answers Interrupted.
        p.host.send(task(3, b"sleep")).unwrap();
        p.drive().unwrap();
        assert!(matches!(p.daemon.poll_event(), Some(Message::Task { id: 3, .. })));
        p.host.send(Message::Cancel { id: 3 }).unwrap();
        p.drive().unwrap();
        assert_eq!(p.daemon.poll_event(), Some(Message::Cancel { id: 3 }));
        let interrupted =
            Message::Result { id: 3, status: Status::Interrupted, last: false, payload: vec![] };
        p.daemon.send(interrupted.clone()).unwrap();
        p.drive().unwrap();
        assert_eq!(p.host.poll_event(), Some(interrupted));

        // The host shuts the daemon down.
        p.host.send(Message::Exit { reason: ExitReason::Shutdown, detail: String::new() }).unwrap();
        p.drive().unwrap();
        assert_eq!(p.host.state(), State::Closed);
        assert_eq!(p.daemon.state(), State::Closed);
        assert!(matches!(p.daemon.poll_event(), Some(Message::Exit { reason: ExitReason::Shutdown, .. })));
    }
}

#[test]
fn late_cancel_is_dropped() {
    let mut p = Pair::new(Config::default());
    p.handshake();
    p.host.send(task(1, b"x")).unwrap();
    p.drive().unwrap();
    p.daemon.poll_event();
    // The result and the cancel cross on the wire.
    p.daemon.send(result(1, false, b"done")).unwrap();
    p.host.send(Message::Cancel { id: 1 }).unwrap();
    p.drive().unwrap();
    assert_eq!(p.host.poll_event(), Some(result(1, false, b"done")));
    assert_eq!(p.daemon.poll_event(), None, "stale cancel not surfaced");
    assert_eq!(p.daemon.state(), State::Ready);
}

#[test]
fn last_result_retires_the_daemon() {
    let mut p = Pair::new(Config::default());
    p.handshake();
    p.host.send(task(1, b"x")).unwrap();
    p.drive().unwrap();
    p.daemon.poll_event();
    p.daemon.send(result(1, true, b"bye")).unwrap();
    p.drive().unwrap();
    assert_eq!(p.host.poll_event(), Some(result(1, true, b"bye")));
    assert_eq!(p.host.state(), State::Retiring);
    assert_eq!(p.daemon.state(), State::Retiring);
    assert!(matches!(p.host.send(task(2, b"y")), Err(ProtoError::InvalidState { .. })));
}

#[test]
fn one_task_at_a_time() {
    let mut p = Pair::new(Config::default());
    p.handshake();
    p.host.send(task(1, b"x")).unwrap();
    assert!(matches!(p.host.send(task(2, b"y")), Err(ProtoError::InvalidState { .. })));
    assert!(matches!(p.host.send(Message::Cancel { id: 9 }), Err(ProtoError::InvalidState { .. })));
    p.drive().unwrap();
    p.daemon.poll_event();
    assert!(matches!(p.daemon.send(result(2, false, b"")), Err(ProtoError::InvalidState { .. })));
}

#[test]
fn host_rejects_a_daemon() {
    let mut p = Pair::new(Config::default());
    p.introduce();
    p.host.send(Message::Exit { reason: ExitReason::AuthFailed, detail: "bad proof".into() }).unwrap();
    p.drive().unwrap();
    assert!(matches!(p.daemon.poll_event(), Some(Message::Exit { reason: ExitReason::AuthFailed, .. })));
    assert_eq!(p.daemon.state(), State::Closed);
}

#[test]
fn handshake_steps_happen_in_order() {
    let mut p = Pair::new(Config::default());
    // The host may not send Init before it has the proof, nor its hello before the daemon's.
    let init = Message::Init { daemon_id: 1, rng_stream: [0; 6], heartbeat_ms: 0, blob: vec![] };
    assert!(matches!(p.host.send(init.clone()), Err(ProtoError::InvalidState { .. })));
    assert!(matches!(
        p.host.send(Message::Hello(common::host_hello(b"c"))),
        Err(ProtoError::InvalidState { .. })
    ));
    p.drive().unwrap();
    p.host.poll_event();
    assert!(matches!(p.host.send(init), Err(ProtoError::InvalidState { .. })));
    // The daemon may not send its proof before the challenge.
    assert!(matches!(p.daemon.send(Message::Auth { proof: vec![] }), Err(ProtoError::InvalidState { .. })));
}

#[test]
fn heartbeats_keep_an_idle_connection_alive() {
    let config = Config { heartbeat_interval: Some(1_000), peer_timeout: Some(3_000), ..Config::default() };
    let mut p = Pair::new(config);
    p.handshake();
    for _ in 0..20 {
        let next = [p.host.poll_timeout(), p.daemon.poll_timeout()].into_iter().flatten().min();
        p.now = next.expect("timers armed");
        p.host.handle_timeout(p.now).unwrap();
        p.daemon.handle_timeout(p.now).unwrap();
        p.drive().unwrap();
    }
    assert!(p.now >= 10_000, "simulated ten seconds");
    assert_eq!(p.host.state(), State::Ready);
    assert_eq!(p.daemon.state(), State::Ready);
    assert_eq!(p.host.poll_event(), None, "heartbeats are not surfaced");
}

#[test]
fn silent_peer_times_out() {
    let config = Config { peer_timeout: Some(3_000), ..Config::default() };
    let mut p = Pair::new(config);
    p.handshake();
    p.now = 2_999;
    p.host.handle_timeout(p.now).unwrap();
    p.now = 3_000;
    assert_eq!(p.host.poll_timeout(), Some(3_000));
    assert_eq!(p.host.handle_timeout(p.now), Err(ProtoError::PeerTimeout));
    assert_eq!(p.host.state(), State::Closed);
    // The host told the daemon why it is leaving.
    let bytes = drain(&mut p.host);
    p.daemon.feed(p.now, &bytes).unwrap();
    assert!(matches!(
        p.daemon.poll_event(),
        Some(Message::Exit { reason: ExitReason::ProtocolViolation, .. })
    ));
}

#[test]
fn handshake_must_finish_in_time() {
    let config = Config { handshake_timeout: Some(500), ..Config::default() };
    let mut p = Pair::new(config);
    p.drive().unwrap();
    p.host.poll_event();
    p.host.send(Message::Hello(common::host_hello(b"c"))).unwrap();
    p.drive().unwrap();
    // The daemon never answers the challenge.
    assert_eq!(p.host.poll_timeout(), Some(500));
    assert_eq!(p.host.handle_timeout(500), Err(ProtoError::HandshakeTimeout));
    // Once the handshake is done, the deadline no longer applies.
    let mut q = Pair::new(config);
    q.handshake();
    assert_eq!(q.host.poll_timeout(), None);
    q.host.handle_timeout(10_000).unwrap();
}

#[test]
fn clean_eof_between_frames() {
    let mut p = Pair::new(Config::default());
    p.handshake();
    p.host.handle_eof().unwrap();
    assert_eq!(p.host.state(), State::Closed);
    assert_eq!(p.host.send(task(1, b"")), Err(ProtoError::Closed));
}

#[test]
fn task_payloads_asked_back_return_once_transmitted() {
    for len in [0usize, 10, 4096, 4097, 1 << 20] {
        let mut p = Pair::new(Config::default());
        p.handshake();
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        p.host.send_task_returning(task(7, &payload)).unwrap();
        if len > 4096 {
            assert_eq!(p.host.take_returned(), None, "{len}: still needed until transmitted");
        }
        p.drive().unwrap();
        assert_eq!(p.daemon.poll_event(), Some(task(7, &payload)), "{len}");
        assert_eq!(p.host.take_returned(), Some((7, payload)), "{len}");
        assert_eq!(p.host.take_returned(), None);
        // Ordinary sends give nothing back.
        p.daemon.send(result(7, false, b"")).unwrap();
        p.drive().unwrap();
        p.host.send(task(8, &[1; 5000])).unwrap();
        p.drive().unwrap();
        assert_eq!(p.host.take_returned(), None);
    }
    let mut p = Pair::new(Config::default());
    p.handshake();
    assert!(p.host.send_task_returning(Message::Cancel { id: 1 }).is_err(), "only tasks");
}

#[test]
fn a_failed_connection_gives_back_the_task_payloads_it_did_not_finish_sending() {
    for len in [4097usize, 1 << 20] {
        let mut p = Pair::new(Config::default());
        p.handshake();
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        p.host.send_task_returning(task(3, &payload)).unwrap();
        // Part of it goes out, then the socket fails.
        p.host.transmitted(0, 100);
        assert_eq!(p.host.reclaim_unsent(), vec![(3, payload)], "{len}");
        assert_eq!(p.host.pending_out(), 0, "nothing more to transmit");
        assert_eq!(p.host.reclaim_unsent(), vec![]);
    }
    // Payloads sent without asking, and those copied next to their header (given back at
    // once), are not reclaimed.
    let mut p = Pair::new(Config::default());
    p.handshake();
    p.host.send(task(4, &[1; 5000])).unwrap();
    assert_eq!(p.host.reclaim_unsent(), vec![]);
}
