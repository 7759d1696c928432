//! The host's receive memory is bounded against its peers: a declared frame size costs only the
//! bytes actually sent, and partial frames across connections stay within the receive budget
//! without deadlock. The memory of a large payload sent is let go when no payload comes to reuse
//! it. Raw peers speak the protocol by hand; authentication is disabled (but for the echo pair).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use mirai_core::auth::Auth;
use mirai_core::{Host, HostOptions, TaskStatus};
use mirai_proto::decoder::Decoder;
use mirai_proto::{HEADER_LEN, Message, Status};

/// The tests measure this process's memory, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn tcp_host(recv_budget: u64) -> (Host, u16) {
    tcp_host_with(HostOptions { recv_budget, ..HostOptions::default() })
}

fn tcp_host_with(options: HostOptions) -> (Host, u16) {
    let options = HostOptions { auth: Auth::Disabled, ..options };
    let host = Host::listen("tcp://127.0.0.1:0", options).unwrap();
    let port = host.url().rsplit(':').next().unwrap().parse().unwrap();
    (host, port)
}

/// A raw daemon that completed the handshake (no secret: the proof is empty).
fn raw_peer(port: u16) -> TcpStream {
    let s = raw_handshake(port, |_, _| Vec::new()).expect("accepted");
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

/// A host with the default receive budget, and one raw daemon connected to it.
fn host_with_one_peer() -> (Host, TcpStream) {
    let (host, port) = tcp_host(mirai_core::host::DEFAULT_RECV_BUDGET);
    let peer = raw_peer(port);
    assert!(host.wait_connections(1, Some(PATIENCE)));
    (host, peer)
}

/// The header and control part of a `Result` for task `id` whose frame declares
/// `payload_len` payload bytes.
fn result_head(id: u64, payload_len: u64) -> Vec<u8> {
    let mut head = Vec::new();
    let msg = Message::Result { id, status: Status::Value, last: false, payload: Vec::new() };
    msg.encode(&mut head).unwrap();
    let body_len = (head.len() - HEADER_LEN) as u64 + payload_len;
    head[..8].copy_from_slice(&body_len.to_le_bytes());
    head
}

/// Reads until the host sends a task; returns its id.
fn next_task(s: &mut TcpStream) -> u64 {
    let mut d = Decoder::new(u64::MAX);
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the host closed the connection");
        let mut input = &buf[..n];
        while let Some(msg) = d.decode(&mut input).unwrap() {
            if let Message::Task { id, .. } = msg {
                return id;
            }
        }
    }
}

/// Waits until `cond` holds, failing the test after `PATIENCE`.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_declared_16_gib_frame_costs_the_bytes_sent() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (host, mut peer) = host_with_one_peer();
    let head = result_head(1, (16 << 30) - 64);
    let mut bytes = head.clone();
    bytes.resize(HEADER_LEN + 10, 0xAB);
    let (size_before, rss_before) = statm();
    peer.write_all(&bytes).unwrap();
    eventually("the host holds the 10 bytes", || host.recv_memory().used == 10);
    let (size_after, rss_after) = statm();
    let grown = (size_after.saturating_sub(size_before), rss_after.saturating_sub(rss_before));
    // A 16 GiB reservation would show in the virtual size (the margin is for malloc, which may
    // reserve a 64 MiB arena heap at any time); the payload buffer's first step is 1 MiB, and
    // untouched beyond the bytes written.
    assert!(grown.0 < 1 << 30, "virtual size grew {} bytes", grown.0);
    assert!(grown.1 < 2 << 20, "resident set grew {} bytes", grown.1);
    drop(peer);
    eventually("the closed connection's frame leaves the count", || host.recv_memory().used == 0);
    assert_eq!(host.counters().connections, 0);
}

#[test]
fn partial_frames_over_the_budget_all_arrive() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const BUDGET: u64 = 4 << 20;
    // The second frame is over what the first leaves of the budget by a little, so that its
    // unread rest fits in the kernel's socket buffers and its writer can finish: then no new
    // readiness edge comes, and only an explicit read by the host can resume it.
    const SIZES: [usize; 2] = [8 << 20, (2 << 20) + (32 << 10)];
    let (host, port) = tcp_host(BUDGET);
    let mut first = raw_peer(port);
    let mut second = raw_peer(port);
    assert!(host.wait_connections(2, Some(PATIENCE)));
    let tasks = [submit(&host, "one"), submit(&host, "two")];
    let ids = [next_task(&mut first), next_task(&mut second)];
    let payload = |i: usize| (0..SIZES[i]).map(|b| (b as u8).wrapping_mul(3 + i as u8)).collect::<Vec<u8>>();
    let frame = |i: usize| {
        let mut f = result_head(ids[i], SIZES[i] as u64);
        f.extend(payload(i));
        f
    };
    let (one, two) = (frame(0), frame(1));

    // The first peer sends a quarter of its frame and stalls: its frame started first.
    let quarter = one.len() / 4;
    first.write_all(&one[..quarter]).unwrap();
    eventually("the first frame's quarter is held", || host.recv_memory().used >= SIZES[0] as u64 / 4 - 64);
    // The second sends all of its frame; the host reads it until the two hold the budget.
    let writer = std::thread::spawn(move || {
        second.write_all(&two).unwrap();
        second
    });
    eventually("the two frames hold the budget", || host.recv_memory().used >= BUDGET - 64);
    let _second = writer.join().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let stalled = host.recv_memory();
    assert!(stalled.used <= BUDGET, "partial frames hold {} bytes over a budget of {BUDGET}", stalled.used);
    assert!(!tasks.iter().any(|t| t.is_resolved()), "no result is complete yet");

    // The first frame finishes, which frees the budget for the paused connection.
    first.write_all(&one[quarter..]).unwrap();
    for (i, task) in tasks.iter().enumerate() {
        assert!(task.wait(Some(PATIENCE)), "task {} never completed", task.id());
        assert_eq!(task.status(), Some(TaskStatus::Value));
        assert!(task.take_payload().unwrap() == payload(i), "task {} payload differs", task.id());
    }
    let done = host.recv_memory();
    assert_eq!(done.used, 0, "finished frames leave the count");
    // The first frame may finish whatever it holds; the others stay within the budget.
    assert!(done.peak <= BUDGET + SIZES[0] as u64, "peak {} bytes", done.peak);
    assert_eq!(done.limit, Some(BUDGET));
}

#[test]
fn a_paused_peer_does_not_time_out() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const TIMEOUT: Duration = Duration::from_secs(1);
    let options = HostOptions {
        recv_budget: 1 << 20,
        heartbeat: Some(TIMEOUT / 3),
        peer_timeout: Some(TIMEOUT),
        ..HostOptions::default()
    };
    let (host, port) = tcp_host_with(options);
    let mut first = raw_peer(port);
    let mut second = raw_peer(port);
    assert!(host.wait_connections(2, Some(PATIENCE)));
    let tasks = [submit(&host, "one"), submit(&host, "two")];
    let ids = [next_task(&mut first), next_task(&mut second)];
    let frame = |i: usize, len: usize| {
        let mut f = result_head(ids[i], len as u64);
        f.resize(f.len() + len, i as u8);
        f
    };
    let (one, two) = (frame(0, 2 << 20), frame(1, 2 << 20));

    // The first frame holds the budget, so the second connection is paused at its header.
    let half = one.len() / 2 + 4096;
    first.write_all(&one[..half]).unwrap();
    eventually("the first frame holds the budget", || host.recv_memory().used >= 1 << 20);
    let writer = std::thread::spawn(move || {
        second.write_all(&two).unwrap();
        second
    });
    // The first peer trickles for more than the peer timeout: it is heard from, and the
    // paused second peer, which the host is not reading, must not count as silent.
    let trickle_end = half + 25;
    for byte in one[half..trickle_end].chunks(1) {
        first.write_all(byte).unwrap();
        std::thread::sleep(TIMEOUT / 10);
    }
    assert_eq!(host.counters().connections, 2, "both peers are still connected");
    first.write_all(&one[trickle_end..]).unwrap();
    for task in &tasks {
        assert!(task.wait(Some(PATIENCE)), "task {} never completed", task.id());
        assert_eq!(task.status(), Some(TaskStatus::Value), "task {}", task.id());
    }
    let _second = writer.join().unwrap();
}

const SPARE_TEST_LEN: usize = 64 << 20;

/// This process's resident set is back within 16 MB of `base`.
fn resident_near(base: u64) -> bool {
    statm().1 <= base + (16 << 20)
}

#[test]
fn a_sent_payload_s_memory_is_let_go_while_its_task_runs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (host, mut peer) = host_with_one_peer();
    let base = statm().1;
    let task = host.submit(vec![7; SPARE_TEST_LEN], mirai_core::SubmitOptions::default()).unwrap();
    // The peer takes the whole task and sits on it; the host keeps the payload's memory for a
    // result that does not come, then frees it.
    assert_eq!(next_task(&mut peer), task.id());
    eventually("the host, its task out, lets go of the payload's memory", || resident_near(base));
    assert!(!task.is_resolved(), "still at the peer");
    let mut reply = result_head(task.id(), 2);
    reply.extend_from_slice(b"ok");
    peer.write_all(&reply).unwrap();
    assert!(task.wait(Some(PATIENCE)));
    assert_eq!(task.take_payload().unwrap(), b"ok");
}

#[test]
fn an_idle_echo_pair_lets_go_of_a_large_payload_s_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let url = unique_url();
    let host = Host::listen(&url, HostOptions::default()).unwrap();
    let daemon_url = host.url().to_string();
    let options =
        mirai_core::DaemonOptions { secret: host.secret().map(<[u8]>::to_vec), ..Default::default() };
    std::thread::spawn(move || mirai_core::Daemon::run(&daemon_url, options, &mut Echo));
    assert!(host.wait_connections(1, Some(PATIENCE)));
    let base = statm().1;
    for round in 0..3u8 {
        let task = host.submit(vec![round; SPARE_TEST_LEN], mirai_core::SubmitOptions::default()).unwrap();
        assert!(task.wait(Some(PATIENCE)));
        let back = task.take_payload().unwrap();
        assert!(back.len() == SPARE_TEST_LEN && back.iter().all(|&b| b == round), "round {round} intact");
    }
    // The daemon keeps its last result's memory for a next task, the host nothing (the result
    // landed in its task's memory, and is dropped).
    eventually("host and daemon, idle, let go of the payloads' memory", || resident_near(base));
    host.close();
}
