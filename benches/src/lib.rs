//! Fixtures shared by the benchmarks: peer processes (mirai daemons, raw echo servers, NNG REP
//! servers) started from the `bench-peer` binary, and the clients that talk to them.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mirai_core::launch::{CommandTemplate, LocalDaemon};
use mirai_core::{Host, HostOptions, SubmitOptions};

pub mod raw;

#[cfg(feature = "nng")]
pub mod nng;

/// A peer process, killed when dropped.
pub struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bench-peer ARGS`, waits for it to print `ready [detail]`, and returns the detail
/// (a TCP port, say).
pub fn spawn_peer(bin: &str, args: &[&str], env: &[(String, String)]) -> (Peer, String) {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start bench-peer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let detail =
        line.trim().strip_prefix("ready").unwrap_or_else(|| panic!("bench-peer {args:?} did not start"));
    (Peer(child), detail.trim().to_string())
}

/// A name no other run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A host at `url` with `n` echo daemons (separate `bench-peer mirai-echo` processes) connected.
pub fn mirai_pool(bin: &str, url: &str, n: usize) -> (Host, Vec<LocalDaemon>) {
    let host = Host::listen(url, HostOptions::default()).expect("listen");
    let daemons =
        mirai_core::launch::launch_local(&host, n, &CommandTemplate::new(bin, &["mirai-echo", "{url}"]))
            .expect("launch");
    assert!(host.wait_connections(n as u64, Some(Duration::from_secs(120))), "daemons did not connect");
    (host, daemons)
}

/// One round trip: submit, wait, take the result.
pub fn mirai_roundtrip(host: &Host, payload: &[u8]) -> Vec<u8> {
    let task = host.submit(payload.to_vec(), SubmitOptions::default()).expect("submit");
    task.wait(None);
    task.take_payload().expect("result")
}

/// Resident set size of this process, in bytes (from /proc).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Raises the open-files limit to the hard limit (for benches with thousands of sockets).
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

/// Reads exactly `n` bytes into `buf` (resized), for the raw comparators.
pub fn read_exact_into(r: &mut impl Read, buf: &mut Vec<u8>, n: usize) -> std::io::Result<()> {
    buf.resize(n, 0);
    r.read_exact(buf)
}

/// Writes a length-prefixed message, for the raw comparators: one vectored write, as mirai
/// writes a frame, more only when the socket takes part of it.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    let header = (payload.len() as u64).to_le_bytes();
    let mut written = 0;
    let total = header.len() + payload.len();
    while written < total {
        let slices = if written < header.len() {
            [std::io::IoSlice::new(&header[written..]), std::io::IoSlice::new(payload)]
        } else {
            [std::io::IoSlice::new(&payload[written - header.len()..]), std::io::IoSlice::new(&[])]
        };
        match w.write_vectored(&slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
