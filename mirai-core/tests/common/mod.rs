//! Helpers for tests that run real daemon processes against a real host.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mirai_core::auth::{Transcript, prove};
use mirai_core::handshake::DaemonHandshake;
use mirai_core::launch::{CommandTemplate, LocalDaemon};
use mirai_core::{
    Daemon, DaemonOptions, Error, Evaluation, Evaluator, ExitCode, Host, HostOptions, Interrupt,
    SubmitOptions, Task, TaskStatus,
};
use mirai_proto::{Config, Conn, Identity, Message, Role, Status};

/// Generous bound for anything that should happen "at once"; only hit when something hangs.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn daemon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mirai-test-daemon")
}

/// A fresh abstract-socket URL, unique per test process and call.
pub fn unique_url() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("abstract://mirai-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn template(args: &[&str]) -> CommandTemplate {
    let mut all = vec!["{url}"];
    all.extend_from_slice(args);
    CommandTemplate::new(daemon_bin(), &all)
}

/// Starts `n` test daemons with `args` against `host` and waits until all are connected.
pub fn launch(host: &Host, n: usize, args: &[&str]) -> Vec<LocalDaemon> {
    let before = host.counters().connections;
    let daemons = mirai_core::launch::launch_local(host, n, &template(args)).expect("spawn daemons");
    assert!(
        host.wait_connections(before + n as u64, Some(PATIENCE)),
        "daemons did not connect: {:?}",
        host.counters()
    );
    daemons
}

/// An evaluator that returns each task's payload as its value.
pub struct Echo;

impl Evaluator for Echo {
    fn evaluate(&mut self, payload: Vec<u8>, _: bool, _: &Interrupt) -> Evaluation {
        Evaluation { status: Status::Value, payload }
    }
}

/// Runs an echo daemon in this process against `url` (on a thread of its own); returns how it
/// ended.
pub fn run_daemon(url: &str, options: DaemonOptions) -> Result<ExitCode, Error> {
    let url = url.to_string();
    std::thread::spawn(move || Daemon::run(&url, options, &mut Echo)).join().unwrap()
}

/// This process's virtual size and resident set, in bytes.
pub fn statm() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap();
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().unwrap());
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    (fields.next().unwrap() * page, fields.next().unwrap() * page)
}

/// A launched daemon's exit code, waiting for it up to `PATIENCE`.
pub fn exit_code(d: &LocalDaemon) -> Option<i32> {
    d.wait(PATIENCE).and_then(|s| s.code())
}

/// The port of a `tcp://` or `tls+tcp://` host.
pub fn port_of(host: &Host) -> u16 {
    host.url().rsplit(':').next().unwrap().parse().unwrap()
}

pub fn host() -> Host {
    Host::listen(&unique_url(), HostOptions::default()).expect("listen")
}

pub fn submit(host: &Host, text: &str) -> Task {
    host.submit(text.as_bytes().to_vec(), SubmitOptions::default()).expect("submit")
}

/// Waits for a task and returns its status and payload as text.
pub fn outcome(task: &Task) -> (TaskStatus, String) {
    assert!(task.wait(Some(PATIENCE)), "task {} did not resolve", task.id());
    let payload = task.take_payload().unwrap_or_default();
    (task.status().unwrap(), String::from_utf8(payload).unwrap())
}

pub fn value(task: &Task) -> String {
    match outcome(task) {
        (TaskStatus::Value, text) => text,
        other => panic!("task {} ended {other:?}", task.id()),
    }
}

/// Runs a daemon's side of the handshake by hand over a blocking socket: sends a fresh nonce,
/// then answers the host's `Hello` with `answer(daemon_nonce, host_auth)`, where `host_auth` is
/// the host's nonce and proof. Returns the socket once accepted, or the host's `Exit`.
pub fn raw_handshake(port: u16, answer: impl Fn(&[u8], &[u8]) -> Vec<u8>) -> Result<TcpStream, Message> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let identity = Identity { pid: 1, hostname: "raw".into(), label: "raw".into() };
    let hello = DaemonHandshake::new().hello(identity);
    let nonce = hello.auth.clone();
    let mut conn = Conn::daemon(Config::default(), 0, hello).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let mut out = [&[][..]; 4];
        let k = conn.transmit(&mut out);
        let bytes: Vec<u8> = out[..k].concat();
        s.write_all(&bytes).unwrap();
        conn.transmitted(0, bytes.len());
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "host closed the connection without a word");
        conn.feed(0, &buf[..n]).unwrap();
        while let Some(msg) = conn.poll_event() {
            match msg {
                Message::Hello(host) => {
                    conn.send(Message::Auth { proof: answer(&nonce, &host.auth) }).unwrap()
                }
                Message::Init { .. } => return Ok(s),
                exit @ Message::Exit { .. } => return Err(exit),
                _ => {}
            }
        }
    }
}

/// The daemon's proof a genuine daemon with `secret` gives over a plain socket, for
/// [`raw_handshake`].
pub fn daemon_proof(secret: &[u8], daemon_nonce: &[u8], host_auth: &[u8]) -> Vec<u8> {
    let t = Transcript { daemon_nonce, host_nonce: &host_auth[..host_auth.len().min(32)], channel: None };
    prove(secret, Role::Daemon, &t)
}

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Collects this test process's log lines, so tests can check what the host logged.
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LOGS.lock().unwrap().push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

/// Starts collecting log lines (once per test process).
pub fn capture_logs() {
    static LOGGER: Capture = Capture;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// Whether a collected log line contains `needle`, waiting for it up to `PATIENCE`.
pub fn logged(needle: &str) -> bool {
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        if LOGS.lock().unwrap().iter().any(|l| l.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}
