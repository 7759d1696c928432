//! `ws://` and `wss://` hosts and daemons: tasks and large payloads over real upgrades, the
//! reported URL, keepalive pings, and what daemons report when the other end is not a mirai
//! host (a wrong path, a proxy refusing a message as too big).

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;
use mirai_core::{Daemon, DaemonOptions, Host, HostOptions};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, accept};

#[test]
fn ws_and_wss_hosts_serve_daemons() {
    for url in ["ws://127.0.0.1:0/mirai/pool", "wss://127.0.0.1:0", "ws://:0"] {
        let host = Host::listen(url, HostOptions::default()).unwrap();
        let reported = host.url();
        assert_eq!(reported.split("://").next(), url.split("://").next(), "{reported}");
        assert_ne!(port_of_ws(&reported), 0, "the real port: {reported}");
        let path = if url.contains("/mirai") { "/mirai/pool" } else { "/" };
        assert!(reported.ends_with(path), "{reported}");
        let _d = launch(&host, 2, &[]);
        let tasks: Vec<_> = (0..200).map(|i| submit(&host, &format!("echo:{i}"))).collect();
        for (i, t) in tasks.iter().enumerate() {
            assert_eq!(value(t), i.to_string(), "{url}");
        }
        // Larger than one WebSocket message: split on the way, whole on arrival.
        let big = format!("echo:{}", "y".repeat(5 << 20));
        assert_eq!(value(&submit(&host, &big)).len(), 5 << 20, "{url}");
    }
}

fn port_of_ws(url: &str) -> u16 {
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    authority.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn a_daemon_reports_a_wrong_path_and_a_missing_tls() {
    let host = Host::listen("ws://127.0.0.1:0/right", HostOptions::default()).unwrap();
    let wrong = host.url().replace("/right", "/wrong");
    let options = || DaemonOptions { secret: host.secret().map(<[u8]>::to_vec), ..DaemonOptions::default() };
    let e = run_daemon(&wrong, options()).unwrap_err().to_string();
    assert!(e.contains("404") && e.contains("path"), "{e}");

    let tls_host = Host::listen("wss://127.0.0.1:0", HostOptions::default()).unwrap();
    let plain = tls_host.url().replace("wss://", "ws://");
    let e = run_daemon(&plain, options()).unwrap_err().to_string();
    assert!(e.contains("WebSocket"), "{e}");
    // The host is unaffected: a daemon on the right path still serves.
    let _d = launch(&host, 1, &[]);
    assert_eq!(value(&submit(&host, "echo:still")), "still");
}

/// A WebSocket server standing in for a proxy: upgrades one connection, then runs `serve`.
fn fake_server(
    serve: impl FnOnce(&mut tungstenite::WebSocket<std::net::TcpStream>) + Send + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://127.0.0.1:{}/", listener.local_addr().unwrap().port());
    std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let mut ws = accept(sock).unwrap();
        serve(&mut ws);
    });
    url
}

#[test]
fn a_proxy_refusing_a_message_as_too_big_is_reported_not_a_hang() {
    let url = fake_server(|ws| {
        // The daemon's Hello, then the refusal a size-limited proxy sends.
        assert!(matches!(ws.read().unwrap(), Message::Binary(_)));
        let frame = CloseFrame { code: CloseCode::Size, reason: "message too big".into() };
        ws.close(Some(frame)).unwrap();
        while ws.read().is_ok() {}
    });
    let started = Instant::now();
    let e = run_daemon(&url, DaemonOptions::default()).unwrap_err().to_string();
    assert!(e.contains("too big") && e.contains(&(1 << 20).to_string()), "{e}");
    assert!(started.elapsed() < PATIENCE);
}

#[test]
fn an_idle_daemon_pings_through_the_websocket() {
    let (tx, rx) = std::sync::mpsc::channel();
    let url = fake_server(move |ws| {
        let deadline = Instant::now() + Duration::from_millis(700);
        let mut pings = 0;
        while Instant::now() < deadline {
            match ws.read() {
                Ok(Message::Ping(_)) => pings += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        tx.send(pings).unwrap();
        let _ = ws.close(None);
    });
    let options = DaemonOptions { keepalive: Duration::from_millis(100), ..DaemonOptions::default() };
    std::thread::spawn(move || Daemon::run(&url, options, &mut Echo));
    let pings = rx.recv_timeout(PATIENCE).unwrap();
    assert!(pings >= 3, "{pings} pings in 700 ms at one per 100 ms of silence");
}
