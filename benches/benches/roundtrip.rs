//! Round-trip latency, one daemon in another process: mirai over abstract IPC, TCP, TLS and
//! WebSocket (ws, wss), next to a raw-socket echo (the floor; blocking in `read`, and waiting as
//! mirai's caller does) and NNG req/rep over the same transports, in the same run.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mirai_benches::raw::RawStream;
use mirai_benches::{mirai_pool, mirai_roundtrip, spawn_peer, unique};

const PEER: &str = env!("CARGO_BIN_EXE_bench-peer");

fn payloads() -> [(&'static str, Vec<u8>); 2] {
    [("empty", Vec::new()), ("1KiB", vec![7u8; 1024])]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("roundtrip");
    g.sample_size(50).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));

    let transports = [
        ("ipc", format!("abstract://{}", unique("bench-rt"))),
        ("tcp", "tcp://127.0.0.1:0".to_string()),
        ("tls", "tls+tcp://127.0.0.1:0".to_string()),
        ("ws", "ws://127.0.0.1:0".to_string()),
        ("wss", "wss://127.0.0.1:0".to_string()),
    ];
    for (name, url) in transports {
        let (host, _daemons) = mirai_pool(PEER, &url, 1);
        for (size, payload) in payloads() {
            g.bench_with_input(BenchmarkId::new(format!("mirai-{name}"), size), &payload, |b, p| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        mirai_roundtrip(&host, p);
                    }
                    t.elapsed()
                })
            });
        }
    }

    let name = unique("bench-raw");
    let (_unix, _) = spawn_peer(PEER, &["raw-unix", &name], &[]);
    let (_tcp, port) = spawn_peer(PEER, &["raw-tcp"], &[]);
    let mut raws = [("ipc", RawStream::unix(&name)), ("tcp", RawStream::tcp(port.parse().unwrap()))];
    for (transport, stream) in raws.iter_mut() {
        for (size, payload) in payloads() {
            let mut buf = Vec::new();
            g.bench_with_input(BenchmarkId::new(format!("raw-{transport}"), size), &payload, |b, p| {
                b.iter(|| stream.roundtrip(p, &mut buf))
            });
            // Waiting as mirai's caller waits: the comparator for mirai's own overhead.
            g.bench_with_input(BenchmarkId::new(format!("raw-spin-{transport}"), size), &payload, |b, p| {
                b.iter(|| stream.roundtrip_spinning(p, &mut buf))
            });
        }
    }

    #[cfg(feature = "nng")]
    {
        let ipc = format!("abstract://{}", unique("bench-nng"));
        let (_p1, _) = spawn_peer(PEER, &["nng-rep", &ipc], &[]);
        let tcp = {
            // NNG cannot report a port-0 listener's port through this API: pick a free one.
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("tcp://127.0.0.1:{}", l.local_addr().unwrap().port())
        };
        let (_p2, _) = spawn_peer(PEER, &["nng-rep", &tcp], &[]);
        for (transport, url) in [("ipc", ipc), ("tcp", tcp)] {
            let req = mirai_benches::nng::Req::dial(&url);
            for (size, payload) in payloads() {
                let mut buf = Vec::new();
                g.bench_with_input(BenchmarkId::new(format!("nng-{transport}"), size), &payload, |b, p| {
                    b.iter(|| req.roundtrip(p, &mut buf))
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
