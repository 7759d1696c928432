//! Large payloads: 1 MB, 100 MB and 1 GB round trips over IPC to one daemon in another process,
//! next to the same bytes echoed through a raw Unix socket. Throughput counts payload bytes per
//! round trip (each crosses the socket twice). 100 MB also over TCP and WebSocket (`ws://`,
//! `wss://`), whose ratios to TCP are the WebSocket targets.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mirai_benches::raw::RawStream;
use mirai_benches::{mirai_pool, spawn_peer, unique};
use mirai_core::SubmitOptions;

const PEER: &str = env!("CARGO_BIN_EXE_bench-peer");

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("payload");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(5));
    let (host, _daemons) = mirai_pool(PEER, &format!("abstract://{}", unique("bench-pl")), 1);
    let name = unique("bench-pl-raw");
    let (_peer, _) = spawn_peer(PEER, &["raw-unix", &name], &[]);
    let mut raw = RawStream::unix(&name);

    for (label, size) in [("1MB", 1_000_000usize), ("100MB", 100_000_000), ("1GB", 1_000_000_000)] {
        let payload = vec![0x5Au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("mirai-ipc", label), &payload, |b, p| {
            b.iter_custom(|iters| timed_roundtrips(&host, p, iters))
        });
        let mut buf = Vec::new();
        g.bench_with_input(BenchmarkId::new("raw-ipc", label), &payload, |b, p| {
            b.iter(|| raw.roundtrip(p, &mut buf))
        });
    }
    let payload = vec![0x5Au8; 100_000_000];
    g.throughput(Throughput::Bytes(payload.len() as u64));
    for (name, url) in [
        ("tcp", "tcp://127.0.0.1:0"),
        ("tls", "tls+tcp://127.0.0.1:0"),
        ("ws", "ws://127.0.0.1:0"),
        ("wss", "wss://127.0.0.1:0"),
    ] {
        let (host, _daemons) = mirai_pool(PEER, url, 1);
        g.bench_with_input(BenchmarkId::new(format!("mirai-{name}"), "100MB"), &payload, |b, p| {
            b.iter_custom(|iters| timed_roundtrips(&host, p, iters))
        });
    }
    g.finish();
}

/// `iters` round trips of `payload`; the copy handed to `submit` is made outside the timed region.
fn timed_roundtrips(host: &mirai_core::Host, payload: &[u8], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let owned = payload.to_vec();
        let t = Instant::now();
        let task = host.submit(owned, SubmitOptions::default()).unwrap();
        task.wait(None);
        let back = task.take_payload().unwrap();
        total += t.elapsed();
        assert_eq!(back.len(), payload.len());
    }
    total
}

criterion_group!(benches, bench);
criterion_main!(benches);
