//! Strangers who never finish their handshake, and a flood of TLS handshakes, cost the host a
//! bounded number of descriptors and leave real daemons able to join and results flowing.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use mirai_core::handshake::DaemonHandshake;
use mirai_core::{Host, HostOptions};
use mirai_proto::{Config, Conn, Identity};

/// Descriptors this process may still open, leaving room for the test's own needs.
fn spare_fds(wanted: usize) -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct passed by reference.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    wanted.min((lim.rlim_cur as usize).saturating_sub(2_000))
}

/// The tests here count this process's descriptors: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Runs `n` tasks on `host` and checks every one came back.
fn results_flow(host: &Host, n: usize) {
    let tasks: Vec<_> = (0..n).map(|i| submit(host, &format!("echo:{i}"))).collect();
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(value(t), i.to_string());
    }
}

#[test]
fn ten_thousand_unfinished_handshakes() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let host = Host::listen("tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    let _first = launch(&host, 1, &[]);
    let addr = format!("127.0.0.1:{}", port_of(&host)).parse().unwrap();
    let n = spare_fds(10_000);
    assert!(n >= 2_000, "too few descriptors for a meaningful flood: {n}");
    let fds_before = open_fds();
    let started = Instant::now();

    // Every one connects without waiting for the host to accept it; once all are under way,
    // one in twenty says Hello and stalls mid-handshake, and the rest say nothing.
    let strangers: Vec<_> = (0..n).map(|_| mio::net::TcpStream::connect(addr).unwrap()).collect();
    let hello = {
        let conn =
            Conn::daemon(Config::default(), 0, DaemonHandshake::new().hello(Identity::default())).unwrap();
        let mut out = [&[][..]; 2];
        let k = conn.transmit(&mut out);
        out[..k].concat()
    };
    let mut talking = 0;
    for mut s in strangers.iter().step_by(20) {
        if s.write(&hello).is_ok_and(|k| k == hello.len()) {
            talking += 1;
        }
    }
    let connected = started.elapsed();
    // Results keep flowing meanwhile, and a new daemon joins.
    results_flow(&host, 200);
    let _second = launch(&host, 1, &[]);
    results_flow(&host, 200);
    let c = host.counters();
    assert_eq!((c.connections, c.cumulative), (2, 2), "no stranger counted as a daemon");
    // The host holds at most its handshake cap of the strangers' connections (the test's own
    // `n` client ends are the rest).
    let host_side = open_fds().saturating_sub(fds_before + n);
    assert!(host_side <= HostOptions::default().max_handshakes + 16, "host holds {host_side} descriptors");
    eprintln!(
        "flood: {n} unfinished handshakes ({talking} stalled after Hello) opened in {connected:.1?}; \
         daemons joined and 400 tasks ran by {:.1?}; host held {host_side} descriptors",
        started.elapsed()
    );
}

/// Whether the host still holds the connection open: a read waits, rather than seeing the end.
fn held_open(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    matches!(s.read(&mut [0; 64]), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

#[test]
fn a_full_handshake_cap_drops_nobody_until_a_newcomer_comes() {
    let options = HostOptions { max_handshakes: 2, ..HostOptions::default() };
    let host = Host::listen("tcp://127.0.0.1:0", options).unwrap();
    let connect = || TcpStream::connect(("127.0.0.1", port_of(&host))).unwrap();
    let (mut first, mut second) = (connect(), connect());
    // Well past the grace an unfinished handshake has before a newcomer may take its place, and
    // nobody else waiting: both are kept (10,000 daemons dialling in before any handshake lost
    // their first connection this way).
    std::thread::sleep(Duration::from_millis(600));
    assert!(held_open(&mut first) && held_open(&mut second));
    // A newcomer: the oldest gives way, and the newcomer is served.
    let _third = connect();
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    assert!(!matches!(first.read(&mut [0; 64]), Err(e) if e.kind() == ErrorKind::WouldBlock), "closed");
    assert!(held_open(&mut second));
    let _daemon = launch(&host, 1, &[]);
    results_flow(&host, 10);
}

/// A ClientHello from a real TLS client: the host does its expensive half of the handshake
/// (key exchange, signature) on receiving it.
fn client_hello(host: &Host) -> Vec<u8> {
    let url = mirai_core::Url::parse(&host.url()).unwrap();
    let ca = mirai_core::launch::daemon_env(host)
        .into_iter()
        .find(|(k, _)| k == mirai_core::tls::CA_ENV)
        .unwrap()
        .1;
    let config = mirai_core::tls::client_config(&ca).unwrap();
    let mut conn =
        rustls::ClientConnection::new(config, mirai_core::tls::server_name(&url).unwrap()).unwrap();
    let mut bytes = Vec::new();
    conn.write_tls(&mut bytes).unwrap();
    bytes
}

#[test]
fn tls_handshake_flood() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let host = Host::listen("tls+tcp://127.0.0.1:0", HostOptions::default()).unwrap();
    let _first = launch(&host, 1, &[]);
    let hello = Arc::new(client_hello(&host));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", port_of(&host)).parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let (hello, stop, sent) = (hello.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut s) = TcpStream::connect(addr)
                        && s.write_all(&hello).is_ok()
                    {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    results_flow(&host, 200);
    let _second = launch(&host, 1, &[]);
    results_flow(&host, 200);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    assert_eq!(host.counters().cumulative, 2);
    eprintln!(
        "TLS flood: {} ClientHellos; a daemon joined and 400 tasks ran in {elapsed:.1?} meanwhile",
        sent.load(Ordering::Relaxed)
    );
}
