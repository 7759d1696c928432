//! Tasks lost with a daemon, and what the host does about them: one that crossed a daemon's idle
//! exit runs elsewhere (never 19), opt-in retry runs a task again after its daemon died, and a task
//! that keeps killing daemons is quarantined (18).

mod common;

use std::time::Duration;

use common::*;
use mirai_core::{ErrorCode, Host, HostOptions, SubmitOptions, TaskStatus};
use mirai_proto::{ExitReason, Kind, Message};

#[test]
fn bursts_across_idle_exits_lose_nothing() {
    // Daemons leave after 50 ms idle; bursts come after spells of about that long, so tasks
    // cross daemons' Exits on the wire.
    let host = Host::listen(&unique_url(), HostOptions::default()).unwrap();
    let mut daemons = Vec::new();
    let mut resets = 0;
    let mut seed = 7u64;
    for burst in 0..20 {
        // Fresh daemons for every burst (those of the last one may be leaving as it starts: the
        // race under test), and more on demand: should this thread be kept off the CPU for
        // longer than the idle time mid-burst, every daemon may have left.
        let launch = || mirai_core::launch::launch_local(&host, 4, &template(&["--idletime=50"])).unwrap();
        daemons.extend(launch());
        let tasks: Vec<_> = (0..500).map(|i| submit(&host, &format!("echo:{burst}-{i}"))).collect();
        for (i, t) in tasks.iter().enumerate() {
            while !t.wait(Some(Duration::from_millis(200))) {
                if host.counters().connections == 0 {
                    daemons.extend(launch());
                }
            }
            match outcome(t) {
                (TaskStatus::Value, text) => assert_eq!(text, format!("{burst}-{i}")),
                (TaskStatus::Failed(ErrorCode::ConnectionReset), _) => resets += 1,
                other => panic!("{other:?}"),
            }
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        std::thread::sleep(Duration::from_millis(40 + (seed >> 33) % 25));
    }
    let r = host.recoveries();
    eprintln!(
        "10,000 tasks in bursts across idle exits: {resets} x 19, {} handed to another daemon",
        r.requeued
    );
    assert_eq!(resets, 0);
}

/// An `Exit` frame, as a daemon leaving on its own sends it.
fn exit_frame(reason: ExitReason) -> Vec<u8> {
    let mut frame = Vec::new();
    let payload = Message::Exit { reason, detail: String::new() }.encode(&mut frame).unwrap();
    frame.extend(payload);
    frame
}

#[test]
fn a_task_crossing_a_daemons_idle_exit_runs_elsewhere() {
    // A daemon that, as a task arrives, says it is leaving on its idle time: exactly the race
    // of a daemon whose idle timer fired as the task was on its way.
    let host = Host::listen("tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    let secret = host.secret().unwrap().to_vec();
    let mut leaver = raw_handshake(port_of(&host), |d, h| daemon_proof(&secret, d, h)).expect("accepted");
    assert!(host.wait_connections(1, Some(PATIENCE)));
    let task = submit(&host, "echo:not lost");
    let mut header = [0u8; 12];
    std::io::Read::read_exact(&mut leaver, &mut header).unwrap();
    assert_eq!(header[8], Kind::Task as u8, "the task came to the leaver");
    std::io::Write::write_all(&mut leaver, &exit_frame(ExitReason::IdleTime)).unwrap();
    let _other = mirai_core::launch::launch_local(&host, 1, &template(&[])).unwrap();
    assert_eq!(value(&task), "not lost");
    assert_eq!(host.recoveries().requeued, 1);
}

#[test]
fn retry_runs_a_task_again_after_its_daemon_died() {
    let host = Host::listen(&unique_url(), HostOptions { retry: 2, ..HostOptions::default() }).unwrap();
    let first = launch(&host, 1, &[]);
    let task = submit(&host, "sleep:300");
    std::thread::sleep(Duration::from_millis(100));
    first[0].signal(libc::SIGKILL);
    assert!(first[0].wait(PATIENCE).is_some());
    let _second = mirai_core::launch::launch_local(&host, 1, &template(&[])).unwrap();
    assert_eq!(value(&task), "slept");
    assert_eq!(host.recoveries().retried, 1);
    // Retry 0 for one task: it fails with 19 as R's mirai does.
    let no_retry = SubmitOptions { retry: Some(0), ..SubmitOptions::default() };
    let task = host.submit(b"crash".to_vec(), no_retry).unwrap();
    assert_eq!(outcome(&task).0, TaskStatus::Failed(ErrorCode::ConnectionReset));
}

#[test]
fn a_task_that_kills_its_daemons_is_quarantined() {
    let options = HostOptions { retry: 5, quarantine: 3, ..HostOptions::default() };
    let host = Host::listen(&unique_url(), options).unwrap();
    let _d = launch(&host, 4, &[]);
    let task = submit(&host, "crash");
    assert_eq!(outcome(&task).0, TaskStatus::Failed(ErrorCode::ConnectionAborted));
    let r = host.recoveries();
    assert_eq!((r.retried, r.quarantined), (2, 1));
    // The daemon left standing still serves.
    assert_eq!(value(&submit(&host, "echo:still")), "still");
}
