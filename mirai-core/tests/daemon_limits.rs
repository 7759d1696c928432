//! Daemon limits, exit codes, autoexit and reconnection, with real daemon processes.

mod common;

use std::time::Duration;

use common::*;
use mirai_core::auth::Auth;
use mirai_core::launch::spawn_local;
use mirai_core::{ErrorCode, Host, HostOptions, TaskStatus};

#[test]
fn maxtasks_exits_three_and_leaves_work_for_others() {
    let host = host();
    let d = launch(&host, 1, &["--maxtasks=2"]);
    let tasks: Vec<_> = (0..3).map(|i| submit(&host, &format!("echo:{i}"))).collect();
    assert_eq!(value(&tasks[0]), "0");
    assert_eq!(value(&tasks[1]), "1");
    assert_eq!(exit_code(&d[0]), Some(3));
    let c = host.counters();
    assert_eq!((c.connections, c.awaiting, c.cumulative), (0, 1, 1));
    let _late = launch(&host, 1, &[]);
    assert_eq!(value(&tasks[2]), "2");
    assert_eq!(host.counters().cumulative, 2);
}

#[test]
fn idletime_exits_one() {
    let host = host();
    let d = launch(&host, 1, &["--idletime=200"]);
    assert_eq!(value(&submit(&host, "echo:x")), "x");
    assert_eq!(exit_code(&d[0]), Some(1));
    assert!(host.wait_connections(0, Some(PATIENCE)));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(host.counters().connections, 0);
}

#[test]
fn walltime_marks_the_last_task_and_exits_two() {
    let host = host();
    // Margins of seconds, so a loaded machine cannot reorder arrival and wall time.
    let d = launch(&host, 1, &["--walltime=3000"]);
    // Arrives before the wall time: an ordinary task, though it runs past it.
    assert_eq!(value(&submit(&host, "sleep:3100")), "slept");
    assert_eq!(host.counters().connections, 1);
    // Arrives after: it still runs (the limit is soft), and the daemon retires with it.
    assert_eq!(value(&submit(&host, "echo:last")), "last");
    assert_eq!(exit_code(&d[0]), Some(2));
    assert_eq!(host.counters().connections, 0);
}

#[test]
fn host_closing_ends_daemons_and_pending_tasks() {
    let host = host();
    let d = launch(&host, 2, &[]);
    let running = submit(&host, "sleep:60000");
    let queued: Vec<_> = (0..3).map(|_| submit(&host, "sleep:60000")).collect();
    let started = std::time::Instant::now();
    host.close();
    assert!(started.elapsed() < Duration::from_secs(2), "close took {:?}", started.elapsed());
    assert_eq!(running.status(), Some(TaskStatus::Failed(ErrorCode::ConnectionReset)));
    for t in &queued {
        assert_eq!(t.status(), Some(TaskStatus::Failed(ErrorCode::ConnectionReset)));
    }
    assert!(matches!(host.submit(vec![], Default::default()), Err(mirai_core::Error::Closed)));
    for daemon in &d {
        assert_eq!(exit_code(daemon), Some(0));
    }
}

#[test]
fn autoexit_true_interrupts_a_running_task_when_the_host_goes() {
    let host = host();
    let d = launch(&host, 1, &["--autoexit=true"]);
    // `spin` ignores interrupts, so only the termination after the grace period stops it.
    let _t = submit(&host, "spin:60000");
    std::thread::sleep(Duration::from_millis(100));
    drop(host);
    let status = d[0].wait(PATIENCE).expect("daemon ended");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGTERM));
}

#[test]
fn autoexit_na_finishes_the_task_then_exits() {
    let host = host();
    let d = launch(&host, 1, &["--autoexit=na"]);
    let _t = submit(&host, "spin:300");
    std::thread::sleep(Duration::from_millis(50));
    drop(host);
    assert_eq!(exit_code(&d[0]), Some(0));
}

/// Hosts sharing one secret, so a daemon can move from one to the next.
fn shared_secret() -> HostOptions {
    HostOptions { auth: Auth::Secret(b"a secret both hosts share".to_vec()), ..HostOptions::default() }
}

#[test]
fn autoexit_false_redials_a_new_host_at_the_same_url() {
    let url = unique_url();
    let host = Host::listen(&url, shared_secret()).unwrap();
    let d = mirai_core::launch::launch_local(&host, 1, &template(&["--autoexit=false"])).unwrap();
    assert!(host.wait_connections(1, Some(PATIENCE)));
    drop(host);
    assert!(d[0].wait(Duration::from_millis(300)).is_none(), "daemon stays");
    let host = Host::listen(&url, shared_secret()).unwrap();
    assert!(host.wait_connections(1, Some(PATIENCE)), "daemon came back");
    assert_eq!(value(&submit(&host, "echo:again")), "again");
    // An explicit exit still ends it.
    host.exit_daemons();
    assert_eq!(exit_code(&d[0]), Some(0));
}

#[test]
fn retry_dials_until_a_host_appears() {
    let url = unique_url();
    let mut t = template(&["--retry"]);
    t.env.push(("MIRAI_SECRET".into(), mirai_core::auth::to_hex(b"a secret both hosts share")));
    let d = spawn_local(&url, &t, 1).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let host = Host::listen(&url, shared_secret()).unwrap();
    assert!(host.wait_connections(1, Some(PATIENCE)));
    assert_eq!(value(&submit(&host, "echo:hi")), "hi");
    drop(host);
    assert_eq!(exit_code(&d[0]), Some(0));
}

#[test]
fn without_retry_a_failed_dial_is_an_error() {
    let d = spawn_local(&unique_url(), &template(&[]), 1).unwrap();
    assert_eq!(exit_code(&d[0]), Some(69));
}
