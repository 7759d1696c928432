//! A task that will not stop, and a barrier whose daemons leave: a daemon that ignores a cancel
//! is dropped after the grace period (and its process ended, since this host started it), one
//! that stops in time is kept, and an `everywhere` whose waiting copy lost its daemon lifts.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mirai_core::{ErrorCode, Host, HostOptions, SubmitOptions, TaskStatus};

const GRACE: Duration = Duration::from_millis(300);

fn host() -> Host {
    Host::listen(&unique_url(), HostOptions { cancel_grace: Some(GRACE), ..HostOptions::default() }).unwrap()
}

/// Waits until `cond` holds, for at most `limit`; returns how long it took.
fn within(limit: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn a_daemon_that_ignores_a_cancel_is_dropped_and_ended() {
    let host = host();
    let daemons = launch(&host, 2, &[]);
    let stuck = submit(&host, "spin:60000");
    let other = submit(&host, "sleep:100");
    assert!(within(PATIENCE, || host.counters().executing == 2).is_some());
    let cancelled_at = Instant::now();
    assert!(stuck.cancel());
    assert_eq!(stuck.status(), Some(TaskStatus::Failed(ErrorCode::Canceled)), "resolved at once");
    let took =
        within(PATIENCE, || host.counters().connections == 1).expect("the spinning daemon was dropped");
    assert!(cancelled_at.elapsed() >= GRACE, "not before its grace period: {took:?}");
    assert_eq!(value(&other), "slept");
    assert_eq!(host.recoveries().escalated, 1);
    // Its process was ended (SIGKILL), the other daemon's was not.
    let ended: Vec<_> = daemons.iter().filter_map(|d| d.wait(Duration::from_millis(500))).collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(ended[0].signal(), Some(libc::SIGKILL));
    // Work goes on with the daemon left.
    assert_eq!(value(&submit(&host, "echo:after")), "after");
}

#[test]
fn a_timed_out_task_that_will_not_stop_costs_its_daemon_too() {
    let host = host();
    let _d = launch(&host, 1, &[]);
    let options = SubmitOptions { timeout: Some(Duration::from_millis(100)), ..SubmitOptions::default() };
    let task = host.submit(b"spin:60000".to_vec(), options).unwrap();
    assert_eq!(outcome(&task).0, TaskStatus::Failed(ErrorCode::TimedOut));
    assert!(within(PATIENCE, || host.counters().connections == 0).is_some());
    assert_eq!(host.recoveries().escalated, 1);
}

#[test]
fn a_daemon_that_stops_in_time_is_kept() {
    let host = host();
    let _d = launch(&host, 1, &[]);
    let task = submit(&host, "sleep:60000");
    assert!(within(PATIENCE, || host.counters().executing == 1).is_some());
    assert!(task.cancel());
    // Well past the grace period, the daemon is still there and serving.
    std::thread::sleep(GRACE * 3);
    assert_eq!(host.counters().connections, 1);
    assert_eq!(host.recoveries().escalated, 0);
    assert_eq!(value(&submit(&host, "echo:still here")), "still here");
}

#[test]
fn an_everywhere_whose_daemon_dies_before_its_copy_lifts_the_barrier() {
    let host = host();
    let daemons = launch(&host, 2, &[]);
    let busy = submit(&host, "spin:60000");
    assert!(within(PATIENCE, || host.counters().executing == 1).is_some());
    // The free daemon answers while the other spins.
    let free = value(&submit(&host, "pid"));
    // Two copies: one runs on the idle daemon, the last waits for the busy one.
    let copies = host.everywhere(b"everywhere", 0).unwrap();
    assert_eq!(copies.len(), 2);
    let after = submit(&host, "echo:after the barrier");
    assert_eq!(value(&copies[0]), "true");
    assert_eq!(host.counters().barrier, 1);
    // The busy daemon dies: its task is lost, and no daemon is left for the waiting copy.
    for d in &daemons {
        if d.pid().to_string() != free {
            d.signal(libc::SIGKILL);
        }
    }
    assert_eq!(outcome(&busy).0, TaskStatus::Failed(ErrorCode::ConnectionReset));
    assert_eq!(outcome(&copies[1]).0, TaskStatus::Failed(ErrorCode::ConnectionReset));
    assert_eq!(value(&after), "after the barrier");
    assert_eq!(host.counters().barrier, 0);
    assert_eq!(host.recoveries().surplus_copies, 1);
}
