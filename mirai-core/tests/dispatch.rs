//! The dispatcher with real daemon processes over real sockets.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mirai_core::{ErrorCode, Host, HostOptions, SubmitOptions, TaskStatus};

#[test]
fn fifo_order_with_one_daemon() {
    let host = host();
    let _d = launch(&host, 1, &[]);
    let order = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let order = order.clone();
            let callback = Box::new(move |id, _| order.lock().unwrap().push(id));
            host.submit(
                format!("echo:{i}").into_bytes(),
                SubmitOptions { callback: Some(callback), ..Default::default() },
            )
            .unwrap()
        })
        .collect();
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(value(t), i.to_string());
    }
    let ids: Vec<u64> = tasks.iter().map(|t| t.id()).collect();
    // Callbacks run on the host's I/O thread after the task resolves; closing joins it.
    host.close();
    assert_eq!(*order.lock().unwrap(), ids, "completed in submission order");
}

#[test]
fn callback_set_after_submission() {
    let host = host();
    let _d = launch(&host, 1, &[]);
    let (tx, rx) = std::sync::mpsc::channel();
    let pending = submit(&host, "sleep:200");
    let late = tx.clone();
    pending.on_resolved(Box::new(move |id, status| late.send((id, status)).unwrap()));
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), (pending.id(), TaskStatus::Value));
    // Already resolved: the callback has run by the time `on_resolved` returns.
    pending.on_resolved(Box::new(move |id, status| tx.send((id, status)).unwrap()));
    assert_eq!(rx.try_recv().unwrap(), (pending.id(), TaskStatus::Value));
}

#[test]
fn ten_thousand_tasks_over_two_daemons() {
    let host = host();
    let _d = launch(&host, 2, &[]);
    let tasks: Vec<_> = (0..10_000).map(|i| submit(&host, &format!("echo:{i}"))).collect();
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(value(t), i.to_string());
    }
    let c = host.counters();
    assert_eq!((c.connections, c.awaiting, c.executing, c.completed), (2, 0, 0, 10_000));
}

#[test]
fn cancel_queued_and_running() {
    let host = host();
    let _d = launch(&host, 1, &[]);
    let running = submit(&host, "sleep:30000");
    let queued = submit(&host, "echo:never");
    while host.counters().executing == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(queued.cancel());
    assert_eq!(queued.status(), Some(TaskStatus::Failed(ErrorCode::Canceled)));
    assert_eq!(host.counters().awaiting, 0);
    let started = Instant::now();
    assert!(running.cancel());
    assert_eq!(running.status(), Some(TaskStatus::Failed(ErrorCode::Canceled)));
    assert!(!running.cancel(), "a resolved task cannot be cancelled again");
    // The daemon was interrupted, not killed: it takes the next task at once.
    assert_eq!(value(&submit(&host, "echo:after")), "after");
    assert!(started.elapsed() < Duration::from_secs(10), "the sleep was interrupted");
    assert_eq!(host.counters().connections, 1);
    assert_eq!(host.counters().completed, 3);
}

#[test]
fn timeout_resolves_five_and_interrupts() {
    let host = host();
    let _d = launch(&host, 1, &[]);
    let opts = SubmitOptions { timeout: Some(Duration::from_millis(100)), ..Default::default() };
    let t = host.submit(b"sleep:30000".to_vec(), opts).unwrap();
    assert_eq!(outcome(&t).0, TaskStatus::Failed(ErrorCode::TimedOut));
    // A queued task times out too, and leaves the queue.
    let busy = submit(&host, "sleep:30000");
    let opts = SubmitOptions { timeout: Some(Duration::from_millis(50)), ..Default::default() };
    let waiting = host.submit(b"echo:x".to_vec(), opts).unwrap();
    assert_eq!(outcome(&waiting).0, TaskStatus::Failed(ErrorCode::TimedOut));
    assert_eq!(host.counters().awaiting, 0);
    busy.cancel();
    assert_eq!(value(&submit(&host, "echo:ok")), "ok");
}

#[test]
fn killed_daemon_resolves_nineteen_and_the_queue_moves_on() {
    let host = host();
    let daemons = launch(&host, 2, &[]);
    let doomed = submit(&host, "sleep:60000");
    assert_eq!(value(&submit(&host, "echo:b")), "b");
    // Only the other daemon is idle now, so this runs there.
    let survivor: u32 = value(&submit(&host, "pid")).parse().unwrap();
    let victim = daemons.iter().find(|d| d.pid() != survivor).unwrap();
    let queued: Vec<_> = (0..5).map(|i| submit(&host, &format!("echo:{i}"))).collect();
    victim.signal(libc::SIGKILL);
    assert_eq!(outcome(&doomed).0, TaskStatus::Failed(ErrorCode::ConnectionReset));
    for (i, t) in queued.iter().enumerate() {
        assert_eq!(value(t), i.to_string());
    }
    assert!(host.wait_connections(1, Some(PATIENCE)));
    assert_eq!(host.counters().connections, 1);
}

#[test]
fn everywhere_reaches_each_daemon_once() {
    let host = host();
    let _d = launch(&host, 3, &[]);
    // Every copy, the last included, tells its evaluator it is a broadcast copy.
    let flags: Vec<String> = host.everywhere(b"everywhere", 1).unwrap().iter().map(value).collect();
    assert_eq!(flags, ["true", "true", "true"]);
    assert_eq!(value(&submit(&host, "everywhere")), "false");
    let copies = host.everywhere(b"pid", 1).unwrap();
    assert_eq!(copies.len(), 3);
    let mut pids: Vec<String> = copies.iter().map(value).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 3, "three distinct daemons");

    // With .min above the connections, the extra copy waits for a daemon to connect, and
    // later tasks wait behind the barrier.
    let copies = host.everywhere(b"pid", 4).unwrap();
    let later = submit(&host, "echo:later");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!copies[3].is_resolved() && !later.is_resolved());
    let _more = launch(&host, 1, &[]);
    let mut pids: Vec<String> = copies.iter().map(value).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 4);
    assert_eq!(value(&later), "later");
}

#[test]
fn late_daemon_gets_queued_work_and_counters_follow() {
    let host = host();
    let tasks: Vec<_> = (0..3).map(|i| submit(&host, &format!("echo:{i}"))).collect();
    let c = host.counters();
    assert_eq!((c.connections, c.cumulative, c.awaiting, c.executing, c.completed), (0, 0, 3, 0, 0));
    let _d = launch(&host, 1, &[]);
    for t in &tasks {
        value(t);
    }
    let c = host.counters();
    assert_eq!((c.connections, c.cumulative, c.awaiting, c.executing, c.completed), (1, 1, 0, 0, 3));
}

#[test]
fn race_returns_the_first_resolved() {
    let host = host();
    let _d = launch(&host, 2, &[]);
    let slow = submit(&host, "sleep:5000");
    let fast = submit(&host, "sleep:50");
    assert_eq!(host.race(&[slow.clone(), fast.clone()], Some(PATIENCE)), Some(1));
    slow.cancel();
    assert_eq!(host.race(&[slow, fast], None), Some(0), "already resolved: returns at once");
}

#[test]
fn completion_fd_becomes_readable() {
    let host = host();
    let _d = launch(&host, 1, &[]);
    let fd = host.completion_fd();
    let readable = |ms| {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    };
    assert!(!readable(0));
    let opts = || SubmitOptions { notify: true, ..Default::default() };
    let a = host.submit(b"echo:a".to_vec(), opts()).unwrap();
    let b = host.submit(b"echo:b".to_vec(), opts()).unwrap();
    let mut done = Vec::new();
    while done.len() < 2 {
        assert!(readable(20_000), "completions arrive");
        done.extend(host.take_completions(1));
    }
    assert_eq!(done, vec![a.id(), b.id()]);
    assert!(a.is_resolved() && b.is_resolved(), "queued only once resolved");
    assert!(!readable(0), "drained queue clears the fd");
}

#[test]
fn memory_cap_refuses_and_frees() {
    let options = HostOptions { memory_limit: Some(100), ..HostOptions::default() };
    let host = Host::listen(&unique_url(), options).unwrap();
    let first = host.try_submit(vec![b'x'; 150], SubmitOptions::default()).unwrap();
    assert!(matches!(host.try_submit(vec![1], SubmitOptions::default()), Err(mirai_core::Error::Full)));
    assert_eq!(host.memory().used, 150);
    assert!(!host.wait_capacity(Some(Duration::from_millis(10))));
    first.cancel();
    assert_eq!(host.memory().used, 0);
    assert_eq!(host.memory().peak, 150);
    let second = host.try_submit(b"echo:y".to_vec(), SubmitOptions::default()).unwrap();
    // "Wait as long as it takes" is representable and does not overflow.
    assert!(host.wait_capacity(Some(Duration::MAX)));
    let _d = launch(&host, 1, &[]);
    assert_eq!(value(&second), "y");
    assert!(second.wait(Some(Duration::MAX)));
}

#[test]
fn a_submission_blocked_at_the_cap_wakes_when_daemons_drain_the_queue() {
    let options = HostOptions { memory_limit: Some(100), ..HostOptions::default() };
    let host = Arc::new(Host::listen(&unique_url(), options).unwrap());
    let _d = launch(&host, 1, &[]);
    assert!(host.wait_connections(1, Some(Duration::from_secs(30))));
    // The daemon is busy; the next task queues and fills the cap.
    let busy = submit(&host, "sleep:300");
    let queued =
        host.submit(format!("echo:{}", "q".repeat(120)).into_bytes(), SubmitOptions::default()).unwrap();
    assert!(host.memory().used >= 100);
    // Blocked until the queued task goes to the daemon: only that can wake it.
    let (tx, rx) = std::sync::mpsc::channel();
    let h = host.clone();
    std::thread::spawn(move || tx.send(h.submit(b"echo:late".to_vec(), SubmitOptions::default())).unwrap());
    let late =
        rx.recv_timeout(Duration::from_secs(20)).expect("the blocked submission was never woken").unwrap();
    assert_eq!(value(&late), "late");
    assert!(busy.wait(Some(Duration::from_secs(10))) && queued.wait(Some(Duration::from_secs(10))));
}

#[test]
fn errors_and_crashes_come_back_as_such() {
    let host = host();
    let _d = launch(&host, 1, &[]);
    assert_eq!(outcome(&submit(&host, "fail:boom")), (TaskStatus::Error, "boom".to_string()));
    // A daemon that dies on its own mid-task loses that task only.
    assert_eq!(outcome(&submit(&host, "crash")).0, TaskStatus::Failed(ErrorCode::ConnectionReset));
    let queued = submit(&host, "echo:next");
    let _d2 = launch(&host, 1, &[]);
    assert_eq!(value(&queued), "next");
}
