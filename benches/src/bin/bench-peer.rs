//! The other process in the benchmarks. Modes:
//! - `mirai-echo URL`: a mirai daemon whose evaluator returns the payload;
//! - `many-daemons URL N`: N protocol-level daemons in one process (for connection scale);
//! - `raw-unix NAME` / `raw-tcp`: a length-prefixed echo server on a plain socket;
//! - `nng-rep URL`: an NNG REP echo server (with the `nng` feature).
//!
//! Servers print `ready [port]` once they accept connections.

use std::io::Write;
use std::time::Duration;

use mirai_core::{Daemon, DaemonOptions, Evaluation, Evaluator, Interrupt};
use mirai_proto::Status;

struct Echo;

impl Evaluator for Echo {
    fn evaluate(&mut self, payload: Vec<u8>, _: bool, _: &Interrupt) -> Evaluation {
        Evaluation { status: Status::Value, payload }
    }
}

fn ready(detail: &str) {
    println!("ready {detail}");
    std::io::stdout().flush().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| panic!("missing argument {i}"));
    match arg(0) {
        "mirai-echo" => {
            let code = Daemon::run(arg(1), DaemonOptions::default(), &mut Echo).expect("daemon");
            std::process::exit(code as i32);
        }
        "many-daemons" => many::run(arg(1), arg(2).parse().expect("count")),
        "raw-unix" => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(arg(1).as_bytes()).unwrap();
            let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
            ready("");
            for s in listener.incoming() {
                let s = s.unwrap();
                std::thread::spawn(move || mirai_benches::raw::serve(s));
            }
        }
        "raw-tcp" => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            ready(&listener.local_addr().unwrap().port().to_string());
            for s in listener.incoming() {
                let s = s.unwrap();
                s.set_nodelay(true).unwrap();
                std::thread::spawn(move || mirai_benches::raw::serve(s));
            }
        }
        #[cfg(feature = "nng")]
        "nng-rep" => mirai_benches::nng::serve_rep(arg(1), || ready("")),
        other => panic!("unknown mode {other}"),
    }
    std::thread::sleep(Duration::MAX);
}

/// Many daemons in one process: each connection runs the real protocol (handshake with the
/// host's secret from `MIRAI_SECRET`, then echo), all driven by one mio loop.
mod many {
    use mio::{Events, Poll, Token};
    use mirai_core::auth;
    use mirai_core::handshake::DaemonHandshake;
    use mirai_core::link::{Link, ReadEnd, Readiness};
    use mirai_core::transport::dial;
    use mirai_core::{Url, identity::local_identity};
    use mirai_proto::{Config, Conn, ExitReason, Message, Status};

    /// Ends the peer, saying why: the host sees only connections that close.
    fn quit(why: &str) -> ! {
        eprintln!("bench-peer many-daemons: {why}");
        std::process::exit(1)
    }

    pub fn run(url: &str, n: usize) -> ! {
        mirai_benches::raise_fd_limit();
        let url = Url::parse(url).unwrap();
        let secret = std::env::var(auth::SECRET_ENV).ok().map(|h| auth::from_hex(&h).unwrap());
        let mut poll = Poll::new().unwrap();
        let registry = std::sync::Arc::new(poll.registry().try_clone().unwrap());
        let mut links = Vec::with_capacity(n);
        for i in 0..n {
            let stream = dial(&url, std::time::Duration::from_secs(30), None).expect("dial");
            let handshake = DaemonHandshake::new();
            let hello = handshake.hello(local_identity());
            let proto = Conn::daemon(Config::default(), 0, hello).unwrap();
            let mut link = Link::watched(stream, proto, registry.clone(), Token(i)).unwrap();
            link.flush().unwrap();
            links.push((link, handshake));
        }
        super::ready("");
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            poll.poll(&mut events, None).unwrap();
            for e in events.iter() {
                let (link, handshake) = &mut links[e.token().0];
                // Messages read before the end come first: the host's Exit says why it closes.
                let end = match Readiness::after(e) {
                    Some(ready) => link.read_available(&mut buf, ready),
                    None => Ok(ReadEnd::Open),
                };
                while let Some(msg) = link.proto.poll_event() {
                    let reply = match msg {
                        Message::Hello(host) => Message::Auth {
                            proof: handshake
                                .answer(secret.as_deref(), &host, None)
                                .expect("the host's proof"),
                        },
                        Message::Task { id, payload, .. } => {
                            Message::Result { id, status: Status::Value, last: false, payload }
                        }
                        Message::Exit { reason: ExitReason::Closing, .. } => std::process::exit(0),
                        Message::Exit { reason, detail } => {
                            quit(&format!("connection {} told to exit: {reason:?}: {detail}", e.token().0))
                        }
                        _ => continue,
                    };
                    link.proto.send(reply).unwrap();
                }
                if !matches!(end, Ok(ReadEnd::Open)) {
                    quit(&format!("connection {} ended: {end:?}", e.token().0));
                }
                if let Err(err) = link.flush() {
                    quit(&format!("connection {}: {err}", e.token().0));
                }
            }
        }
    }
}
