//! Scale: submission rate into the queue and host memory per queued task (1,000,000 tasks);
//! dispatch across 1,000 daemon processes and across 10,000 connections; start-up and teardown.
//! `-- --test` runs every part once at small sizes; a name filter (`-- connections`) picks the
//! parts that run, criterion's and the others alike.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use mirai_benches::{mirai_pool, raise_fd_limit, rss_bytes, spawn_peer, unique};
use mirai_core::{Host, HostOptions, SubmitOptions};

const PEER: &str = env!("CARGO_BIN_EXE_bench-peer");

fn ipc() -> String {
    format!("abstract://{}", unique("bench-scale"))
}

fn criterion_part(c: &mut Criterion) {
    let mut g = c.benchmark_group("scale");
    g.sample_size(20).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_millis(500));

    // One submission into the queue of a host with no daemons (the queue grows as it runs).
    let host = Host::listen(&ipc(), HostOptions::default()).unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("submit-into-queue", |b| {
        b.iter(|| host.submit(Vec::new(), SubmitOptions::default()).unwrap())
    });
    drop(host);

    g.throughput(Throughput::Elements(2));
    g.bench_function("startup-2-daemons", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let (host, _d) = mirai_pool(PEER, &ipc(), 2);
                total += t.elapsed();
                drop(host);
            }
            total
        })
    });
    g.bench_function("teardown-2-daemons", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (host, _d) = mirai_pool(PEER, &ipc(), 2);
                let t = Instant::now();
                host.close();
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// Host memory per queued empty task, with and without the caller keeping the handles.
fn memory_per_task(n: usize) {
    let host = Host::listen(&ipc(), HostOptions::default()).unwrap();
    let before = rss_bytes();
    let t = Instant::now();
    let handles: Vec<_> =
        (0..n).map(|_| host.submit(Vec::new(), SubmitOptions::default()).unwrap()).collect();
    let elapsed = t.elapsed();
    let with_handles = rss_bytes().saturating_sub(before);
    drop(handles);
    let queue_only = rss_bytes().saturating_sub(before);
    println!(
        "scale/queue-{n}: submitted in {elapsed:.2?} ({:.0} tasks/s); host memory {:.0} B/task with handles kept, {:.0} B/task queue only",
        n as f64 / elapsed.as_secs_f64(),
        with_handles as f64 / n as f64,
        queue_only as f64 / n as f64
    );
}

/// Runs `n` trivial tasks through the host and reports tasks per second.
fn run_tasks(host: &Host, n: usize) -> f64 {
    let t = Instant::now();
    let tasks: Vec<_> =
        (0..n).map(|_| host.submit(b"1".to_vec(), SubmitOptions::default()).unwrap()).collect();
    for task in &tasks {
        assert!(task.wait(Some(Duration::from_secs(600))));
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// How long `close` took (the caller is free again), and how long until dropping the host
/// returned (every daemon told, every connection closed).
fn teardown(host: Host) -> (Duration, Duration) {
    let t = Instant::now();
    host.close();
    let closed = t.elapsed();
    drop(host);
    (closed, t.elapsed())
}

/// Dispatch across `n` daemon processes.
fn many_processes(n: usize, tasks: usize) {
    let t = Instant::now();
    let (host, _d) = mirai_pool(PEER, &ipc(), n);
    let startup = t.elapsed();
    let rate = run_tasks(&host, tasks);
    let (closed, ended) = teardown(host);
    println!(
        "scale/{n}-daemon-processes: all connected in {startup:.2?}; {tasks} tasks at {rate:.0} tasks/s; teardown {closed:.2?} (connections all closed after {ended:.2?})"
    );
}

/// Dispatch across `n` connections (protocol-level daemons, all in one peer process).
fn many_connections(n: usize, tasks: usize) {
    // The peer opens every connection before it answers any handshake.
    let options = HostOptions { max_handshakes: n, ..HostOptions::default() };
    let host = Host::listen(&ipc(), options).unwrap();
    let count = n.to_string();
    let t = Instant::now();
    let url = host.url();
    let (_peer, _) =
        spawn_peer(PEER, &["many-daemons", &url, &count], &mirai_core::launch::daemon_env(&host));
    assert!(
        host.wait_connections(n as u64, Some(Duration::from_secs(600))),
        "connections: {:?}",
        host.counters()
    );
    let startup = t.elapsed();
    let rate = run_tasks(&host, tasks);
    let (closed, ended) = teardown(host);
    println!(
        "scale/{n}-connections: all connected in {startup:.2?}; {tasks} tasks at {rate:.0} tasks/s; teardown {closed:.2?} (connections all closed after {ended:.2?})"
    );
}

fn main() {
    let test_mode = std::env::args().any(|a| a == "--test");
    // A name filter, as criterion takes one, also picks which of the parts below run.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let runs = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    // The host's warnings (a connection it closes, an accept that fails) belong in the report.
    mirai_core::stderr_log::install("scale host", log::LevelFilter::Warn);
    let limit = raise_fd_limit();
    // First, while this process's heap is fresh, so the growth measured is the queue's.
    if runs("scale/queue") {
        memory_per_task(if test_mode { 10_000 } else { 1_000_000 });
    }
    let mut c = Criterion::default().configure_from_args();
    criterion_part(&mut c);
    c.final_summary();
    let (processes, conns, tasks) = if test_mode {
        (4, 100, 1_000)
    } else {
        (1_000, 10_000.min(limit.saturating_sub(100) as usize), 20_000)
    };
    if runs(&format!("scale/{processes}-daemon-processes")) {
        many_processes(processes, tasks);
    }
    if runs(&format!("scale/{conns}-connections")) {
        many_connections(conns, tasks);
    }
}
