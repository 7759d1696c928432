//! The seed's quick start, on the Rust engine: five daemons, one task that sleeps a second and
//! returns 142, then a map of nine one-second squares that completes in about two seconds.
//! Daemons here are threads of this process speaking to the host over a real socket; in
//! production they are separate processes, possibly on other machines.
//!
//! Run with `cargo run --release -p mirai-core --example quickstart`.

use std::time::{Duration, Instant};

use mirai_core::{Daemon, DaemonOptions, Evaluation, Evaluator, Host, HostOptions, Interrupt, SubmitOptions};
use mirai_proto::Status;

/// Evaluates "sleep, then compute": payload `x` → sleeps one second, returns x² (or 142 for "m").
struct Square;

impl Evaluator for Square {
    fn evaluate(&mut self, payload: Vec<u8>, _everywhere: bool, interrupt: &Interrupt) -> Evaluation {
        if interrupt.sleep(Duration::from_secs(1)) {
            return Evaluation { status: Status::Interrupted, payload: Vec::new() };
        }
        let text = String::from_utf8_lossy(&payload);
        let value = match text.parse::<u64>() {
            Ok(x) => x * x,
            Err(_) => 100 + 42,
        };
        Evaluation { status: Status::Value, payload: value.to_string().into_bytes() }
    }
}

fn text(task: &mirai_core::Task) -> String {
    task.wait(None);
    String::from_utf8(task.take_payload().unwrap_or_default()).unwrap()
}

fn main() -> Result<(), mirai_core::Error> {
    let url = format!("abstract://mirai-quickstart-{}", std::process::id());
    let host = Host::listen(&url, HostOptions::default())?;
    let started = Instant::now();
    let daemons: Vec<_> = (0..5)
        .map(|_| {
            let url = host.url();
            std::thread::spawn(move || Daemon::run(&url, DaemonOptions::default(), &mut Square))
        })
        .collect();
    host.wait_connections(5, None);
    println!("daemons(5)            {:?} until all connected", started.elapsed());

    let t0 = Instant::now();
    let m = host.submit(b"m".to_vec(), SubmitOptions::default())?;
    println!("m                     resolved: {}", m.is_resolved());
    println!("m[]                   {}  ({:.2?})", text(&m), t0.elapsed());

    let t0 = Instant::now();
    let map: Vec<_> = (1..=9)
        .map(|x| host.submit(x.to_string().into_bytes(), SubmitOptions::default()))
        .collect::<Result<_, _>>()?;
    let values: Vec<String> = map.iter().map(text).collect();
    println!("mp[.flat]             {}  ({:.2?})", values.join(" "), t0.elapsed());
    println!("info                  {:?}", host.counters());

    let t0 = Instant::now();
    host.close();
    for d in daemons {
        let _ = d.join();
    }
    println!("daemons(0)            {:?}", t0.elapsed());
    Ok(())
}
