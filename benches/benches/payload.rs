//! Large payloads: 1 MB, 100 MB and 1 GB round trips over IPC to one daemon in another process,
//! next to the same bytes echoed through a raw Unix socket. Throughput counts payload bytes per
//! round trip (each crosses the socket twice).

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
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // The copy handed to `submit` is made outside the timed region.
                    let owned = p.clone();
                    let t = Instant::now();
                    let task = host.submit(owned, SubmitOptions::default()).unwrap();
                    task.wait(None);
                    let back = task.take_payload().unwrap();
                    total += t.elapsed();
                    assert_eq!(back.len(), p.len());
                }
                total
            })
        });
        let mut buf = Vec::new();
        g.bench_with_input(BenchmarkId::new("raw-ipc", label), &payload, |b, p| {
            b.iter(|| raw.roundtrip(p, &mut buf))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
