//! Closing a host, then dropping it: `close` returns with every task resolved and the listener
//! closed; dropping returns once every daemon has been told and the I/O thread has ended. One
//! test in this binary, so the threads it counts are its host's.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use mirai_core::auth::Auth;
use mirai_core::transport::dial;
use mirai_core::{Host, HostOptions, TaskStatus, Url};
use mirai_proto::decoder::Decoder;
use mirai_proto::{ErrorCode, ExitReason, Message};

/// This process's threads named as a host's I/O thread.
fn host_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "mirai-host")
        .count()
}

/// The host threads left once those that have ended are gone from `/proc`. A joined thread
/// can still be listed for a moment: the kernel wakes the joiner as the thread lets go of its
/// memory, before it takes the thread out of `/proc/self/task`; on a loaded machine, that
/// moment can last past the next line. A thread that outlived its join stays listed.
fn host_threads_after_exit() -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let n = host_threads();
        if n == 0 || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Everything a raw daemon has received, up to the end of its connection, which must already
/// have come (over loopback, bytes written are there to read as the write returns).
fn received_to_end(mut s: std::net::TcpStream) -> Vec<Message> {
    s.set_nonblocking(true).unwrap();
    let mut d = Decoder::new(u64::MAX);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("the connection had ended");
        if n == 0 {
            return got;
        }
        let mut input = &buf[..n];
        while let Some(msg) = d.decode(&mut input).unwrap() {
            got.push(msg);
        }
    }
}

#[test]
fn close_resolves_and_stops_listening_and_dropping_ends_every_connection() {
    const PEERS: usize = 50;
    let options = HostOptions { auth: Auth::Disabled, ..HostOptions::default() };
    let host = Host::listen("tcp://127.0.0.1:0", options).unwrap();
    let url = Url::parse(&host.url()).unwrap();
    let peers: Vec<_> =
        (0..PEERS).map(|_| raw_handshake(port_of(&host), |_, _| Vec::new()).expect("accepted")).collect();
    assert!(host.wait_connections(PEERS as u64, Some(PATIENCE)));
    let tasks = [submit(&host, "echo:a"), submit(&host, "echo:b")];
    host.close();
    // Resolved by the time close returns, without waiting.
    for t in &tasks {
        assert!(t.wait(Some(Duration::ZERO)), "a task was unresolved after close");
        assert_eq!(t.status(), Some(TaskStatus::Failed(ErrorCode::ConnectionReset)));
    }
    assert!(dial(&url, Duration::from_secs(1), None).is_err(), "the host still listened");
    drop(host);
    assert_eq!(host_threads_after_exit(), 0, "the host's I/O thread outlived it");
    // Once the host is dropped, each daemon has been told the host is closing, last, and its
    // connection has ended.
    let mut tasks_sent = 0;
    // The last to connect first: the host would tell it last.
    for peer in peers.into_iter().rev() {
        let got = received_to_end(peer);
        assert!(
            matches!(got.last(), Some(Message::Exit { reason: ExitReason::Closing, .. })),
            "a daemon was not told: {got:?}"
        );
        tasks_sent += got.iter().filter(|m| matches!(m, Message::Task { .. })).count();
    }
    assert_eq!(tasks_sent, 2, "each task went to an idle daemon");
}
