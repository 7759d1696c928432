//! Task throughput through two daemons in other processes: 20,000 trivial tasks submitted then
//! collected, and a map of 10,000 collected in order; next to the floor of pushing the same
//! number of echo messages through two raw sockets.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mirai_benches::raw::RawStream;
use mirai_benches::{mirai_pool, spawn_peer, unique};
use mirai_core::SubmitOptions;

const PEER: &str = env!("CARGO_BIN_EXE_bench-peer");

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("throughput");
    g.sample_size(10).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(1));
    let (host, _daemons) = mirai_pool(PEER, &format!("abstract://{}", unique("bench-tp")), 2);

    g.throughput(Throughput::Elements(20_000));
    g.bench_function("mirai-20000-tasks-2-daemons", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let tasks: Vec<_> = (0..20_000)
                    .map(|_| host.submit(b"1".to_vec(), SubmitOptions::default()).unwrap())
                    .collect();
                for task in &tasks {
                    task.wait(None);
                }
            }
            t.elapsed()
        })
    });

    g.throughput(Throughput::Elements(10_000));
    g.bench_function("mirai-map-10000-2-daemons", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let tasks: Vec<_> = (0..10_000u32)
                    .map(|i| host.submit(i.to_le_bytes().to_vec(), SubmitOptions::default()).unwrap())
                    .collect();
                // Collected in index order, as mirai_map does.
                let values: Vec<Vec<u8>> = tasks
                    .iter()
                    .map(|t| {
                        t.wait(None);
                        t.take_payload().unwrap()
                    })
                    .collect();
                assert_eq!(values.len(), 10_000);
            }
            t.elapsed()
        })
    });

    let name = unique("bench-tp-raw");
    let (_peer, _) = spawn_peer(PEER, &["raw-unix", &name], &[]);
    g.throughput(Throughput::Elements(20_000));
    g.bench_function("raw-ipc-20000-messages-2-sockets", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut conns = [RawStream::unix(&name), RawStream::unix(&name)];
                let t = Instant::now();
                std::thread::scope(|s| {
                    for conn in conns.iter_mut() {
                        s.spawn(move || {
                            // Pipelined in windows of 64, so socket buffers never fill.
                            let mut buf = Vec::new();
                            for _ in 0..10_000 / 64 + 1 {
                                for _ in 0..64 {
                                    conn.send(b"1");
                                }
                                for _ in 0..64 {
                                    conn.recv(&mut buf);
                                }
                            }
                        });
                    }
                });
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
