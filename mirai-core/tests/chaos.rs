//! Chaos: many short tasks through four local daemons while one of them, at random, is killed
//! (SIGKILL) or frozen (SIGSTOP) every 200 ms and replaced. Every task resolves, with its value
//! or with 19 (connection reset) for the ones at a daemon that died, and with retry every one
//! with its value; none hangs; and the host's memory afterwards is back where it started.
//! `MIRAI_CHAOS_TASKS` sets the number of tasks. Long, so ignored by default: run with
//! `cargo test --release -p mirai-core --test chaos -- --ignored --nocapture`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mirai_core::launch::LocalDaemon;
use mirai_core::{ErrorCode, Host, HostOptions, SubmitOptions, TaskStatus};

fn tasks() -> usize {
    std::env::var("MIRAI_CHAOS_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Freeze,
}

#[derive(Debug, Default)]
struct Tally {
    values: usize,
    resets: usize,
    faults: usize,
}

/// A small deterministic generator, so a failing run can be told apart from another.
fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 33
}

fn run(fault: Fault, retry: u32) -> Tally {
    let options = HostOptions {
        // Frozen daemons are noticed by their silence.
        heartbeat: Some(Duration::from_millis(100)),
        peer_timeout: Some(Duration::from_millis(500)),
        retry,
        ..HostOptions::default()
    };
    let host = Arc::new(Host::listen(&unique_url(), options).unwrap());
    let daemons = Arc::new(Mutex::new(launch(&host, 4, &[])));
    let baseline = statm().1;
    let stop = Arc::new(AtomicBool::new(false));
    let faults = Arc::new(AtomicUsize::new(0));
    let chaos = {
        let (host, daemons, stop, faults) = (host.clone(), daemons.clone(), stop.clone(), faults.clone());
        std::thread::spawn(move || {
            let mut seed = 0x5eed_u64;
            let mut frozen: Vec<LocalDaemon> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let mut pool = daemons.lock().unwrap();
                let pick = next(&mut seed) as usize % pool.len();
                let victim = pool.remove(pick);
                match fault {
                    Fault::Kill => victim.signal(libc::SIGKILL),
                    Fault::Freeze => {
                        victim.signal(libc::SIGSTOP);
                        frozen.push(victim);
                    }
                }
                faults.fetch_add(1, Ordering::Relaxed);
                pool.extend(mirai_core::launch::launch_local(&host, 1, &template(&[])).unwrap());
            }
            for d in frozen {
                d.signal(libc::SIGKILL);
            }
        })
    };

    let n = tasks();
    let mut tally = Tally::default();
    let started = Instant::now();
    // In waves, so the queue stays full without holding every handle at once.
    let wave = 2_000;
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + wave).min(n))
            .map(|k| (k, host.submit(format!("echo:{k}").into_bytes(), SubmitOptions::default()).unwrap()))
            .collect();
        for (k, task) in batch {
            assert!(task.wait(Some(PATIENCE)), "task {k} hangs ({fault:?}); {:?}", host.counters());
            match outcome(&task) {
                (TaskStatus::Value, text) => {
                    assert_eq!(text, k.to_string());
                    tally.values += 1;
                }
                (TaskStatus::Failed(ErrorCode::ConnectionReset), _) => tally.resets += 1,
                other => panic!("task {k} ended {other:?} ({fault:?})"),
            }
        }
        i += wave;
    }
    stop.store(true, Ordering::Relaxed);
    chaos.join().unwrap();
    tally.faults = faults.load(Ordering::Relaxed);
    let c = host.counters();
    assert_eq!((c.awaiting, c.executing), (0, 0), "{c:?}");
    let grown = statm().1.saturating_sub(baseline);
    eprintln!(
        "chaos {fault:?}, retry {retry}: {n} tasks in {:.1?} with {} faults: {} values, {} x 19; host RSS {:+} KiB",
        started.elapsed(),
        tally.faults,
        tally.values,
        tally.resets,
        grown / 1024
    );
    assert!(grown < 16 << 20, "host memory grew by {grown} bytes");
    host.exit_daemons();
    tally
}

#[test]
#[ignore = "long: scripts/test.sh runs it in a release build with --ignored"]
fn chaos_kill() {
    let t = run(Fault::Kill, 0);
    assert!(t.faults >= 5, "too few faults to mean anything: {t:?}");
    assert_eq!(t.values + t.resets, tasks());
}

#[test]
#[ignore = "long: scripts/test.sh runs it in a release build with --ignored"]
fn chaos_kill_with_retry() {
    let t = run(Fault::Kill, 3);
    assert!(t.faults >= 5, "too few faults to mean anything: {t:?}");
    assert_eq!((t.values, t.resets), (tasks(), 0), "with retry every task returns its value");
}

#[test]
#[ignore = "long: scripts/test.sh runs it in a release build with --ignored"]
fn chaos_freeze() {
    let t = run(Fault::Freeze, 0);
    assert!(t.faults >= 5, "too few faults to mean anything: {t:?}");
    assert_eq!(t.values + t.resets, tasks());
}
