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
    use mio::{Events, Interest, Poll, Token};
    use mirai_core::auth;
    use mirai_core::handshake::DaemonHandshake;
    use mirai_core::link::Link;
    use mirai_core::transport::dial;
    use mirai_core::{Url, identity::local_identity};
    use mirai_proto::{Config, Conn, Message, Status};

    pub fn run(url: &str, n: usize) -> ! {
        mirai_benches::raise_fd_limit();
        let url = Url::parse(url).unwrap();
        let secret = std::env::var(auth::SECRET_ENV).ok().map(|h| auth::from_hex(&h).unwrap());
        let mut poll = Poll::new().unwrap();
        let mut links = Vec::with_capacity(n);
        for i in 0..n {
            let mut stream = dial(&url, std::time::Duration::from_secs(30), None).expect("dial");
            poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE).unwrap();
            let handshake = DaemonHandshake::new();
            let hello = handshake.hello(local_identity());
            let mut link = Link::new(stream, Conn::daemon(Config::default(), 0, hello).unwrap());
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
                if !matches!(link.read_available(&mut buf), Ok(mirai_core::link::ReadEnd::Open)) {
                    std::process::exit(0);
                }
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
                        Message::Exit { .. } => std::process::exit(0),
                        _ => continue,
                    };
                    link.proto.send(reply).unwrap();
                }
                if link.flush().is_err() {
                    std::process::exit(0);
                }
            }
        }
    }
}
