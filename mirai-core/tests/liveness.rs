//! Dead peers are noticed without waiting for TCP: hosts and daemons heartbeat, the host drops a
//! daemon that fell silent (its task fails with 19 at once), a daemon gives up on a silent host,
//! and TCP keepalive is tuned on every TCP connection.

mod common;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;
use mirai_core::auth::Auth;
use mirai_core::handshake::HostHandshake;
use mirai_core::transport::dial;
use mirai_core::{Daemon, DaemonOptions, ErrorCode, ExitCode, Host, HostOptions, TaskStatus, Url};
use mirai_proto::{Config, Conn, Message};

fn brisk() -> HostOptions {
    HostOptions {
        heartbeat: Some(Duration::from_millis(100)),
        peer_timeout: Some(Duration::from_millis(600)),
        ..HostOptions::default()
    }
}

#[test]
fn heartbeats_keep_idle_daemons_and_a_stopped_one_is_dropped() {
    let host = Host::listen(&unique_url(), brisk()).unwrap();
    let d = launch(&host, 1, &[]);
    // Idle for many timeouts' worth: heartbeats both ways keep the connection.
    std::thread::sleep(Duration::from_millis(2_000));
    assert_eq!(host.counters().connections, 1, "an idle daemon was dropped");
    assert_eq!(value(&submit(&host, "echo:alive")), "alive");

    let task = submit(&host, "spin:10000");
    std::thread::sleep(Duration::from_millis(100));
    d[0].signal(libc::SIGSTOP);
    let stopped = Instant::now();
    assert_eq!(outcome(&task).0, TaskStatus::Failed(ErrorCode::ConnectionReset));
    let noticed = stopped.elapsed();
    assert!(noticed < Duration::from_secs(3), "noticed after {noticed:?}");
    assert_eq!(host.counters().connections, 0);
    eprintln!("a stopped daemon was dropped {noticed:.0?} after it stopped (peer timeout 600 ms)");
    d[0].signal(libc::SIGCONT);
    d[0].signal(libc::SIGKILL);
}

#[test]
fn liveness_settings_are_checked() {
    let bad = |heartbeat, peer_timeout| {
        let options = HostOptions { heartbeat, peer_timeout, ..HostOptions::default() };
        Host::listen(&unique_url(), options).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert!(bad(None, Some(Duration::from_secs(1))).contains("needs heartbeat"));
    assert!(bad(Some(Duration::from_secs(1)), Some(Duration::from_secs(2))).contains("three heartbeats"));
    assert!(bad(Some(Duration::ZERO), None).contains("positive"));
    assert_eq!(bad(None, None), "", "liveness may be turned off");
}

#[test]
fn a_daemon_gives_up_on_a_host_that_falls_silent() {
    // A host that completes the handshake, asks for heartbeats every 100 ms, then says nothing
    // more while keeping its socket open (as a stopped or partitioned host would).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    let silent = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut conn = Conn::host(Config::default(), 0);
        let mut hs = HostHandshake::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            conn.feed(0, &buf[..n]).unwrap();
            while let Some(msg) = conn.poll_event() {
                match msg {
                    Message::Hello(d) => {
                        conn.send(Message::Hello(hs.answer(None, &d, None).unwrap())).unwrap()
                    }
                    Message::Auth { .. } => {
                        let init = Message::Init {
                            daemon_id: 1,
                            rng_stream: [1; 6],
                            heartbeat_ms: 100,
                            blob: vec![],
                        };
                        conn.send(init).unwrap();
                    }
                    _ => {}
                }
            }
            let mut out = [&[][..]; 4];
            let k = conn.transmit(&mut out);
            let bytes = out[..k].concat();
            s.write_all(&bytes).unwrap();
            conn.transmitted(0, bytes.len());
            if conn.state() == mirai_proto::State::Ready {
                // Silence, reading (the daemon's heartbeats) until the daemon leaves.
                while s.read(&mut buf).is_ok_and(|n| n > 0) {}
                return;
            }
        }
    });
    let options =
        DaemonOptions { host_timeout: Some(Duration::from_millis(300)), ..DaemonOptions::default() };
    let started = Instant::now();
    let code = Daemon::run(&url, options, &mut Echo).unwrap();
    let took = started.elapsed();
    assert_eq!(code, ExitCode::ConnectionEnded);
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "gave up after {took:?}");
    silent.join().unwrap();
}

#[test]
fn tcp_keepalive_is_tuned() {
    let host =
        Host::listen("tcp://127.0.0.1:0", HostOptions { auth: Auth::Disabled, ..HostOptions::default() })
            .unwrap();
    let stream = dial(&Url::parse(&host.url()).unwrap(), Duration::from_secs(5), None).unwrap();
    let get = |level, name| {
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a live socket and an int-sized buffer with its length.
        let rc = unsafe {
            libc::getsockopt(stream.as_raw_fd(), level, name, (&mut v as *mut libc::c_int).cast(), &mut len)
        };
        assert_eq!(rc, 0);
        v
    };
    assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 60);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 10);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 6);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 120_000);
}
