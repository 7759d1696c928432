//! A host and a daemon talking through in-memory buffers: the whole protocol in one screen.
//! Run with `cargo run -p mirai-proto --example conversation`.

use mirai_proto::{Config, Conn, Hello, Identity, Message, Role, Status};

fn pump(from: &mut Conn, to: &mut Conn) -> usize {
    let mut slices = [&[][..]; 16];
    let n = from.transmit(&mut slices);
    let bytes: Vec<u8> = slices[..n].concat();
    from.transmitted(0, bytes.len());
    to.feed(0, &bytes).expect("valid stream");
    bytes.len()
}

fn hello(role: Role, auth: &[u8]) -> Hello {
    let identity =
        Identity { pid: std::process::id(), hostname: "localhost".into(), label: "example".into() };
    Hello { role, identity, auth: auth.to_vec() }
}

fn main() {
    let mut host = Conn::host(Config::default(), 0);
    let mut daemon = Conn::daemon(Config::default(), 0, hello(Role::Daemon, b"")).unwrap();

    let n = pump(&mut daemon, &mut host);
    println!("daemon -> host   {n:>3} bytes  {:?}", host.poll_event().unwrap());
    host.send(Message::Hello(hello(Role::Host, b"challenge"))).unwrap();
    let n = pump(&mut host, &mut daemon);
    println!("host   -> daemon {n:>3} bytes  {:?}", daemon.poll_event().unwrap());
    daemon.send(Message::Auth { proof: b"proof".to_vec() }).unwrap();
    let n = pump(&mut daemon, &mut host);
    println!("daemon -> host   {n:>3} bytes  {:?}", host.poll_event().unwrap());
    host.send(Message::Init { daemon_id: 1, rng_stream: [1, 2, 3, 4, 5, 6], heartbeat_ms: 0, blob: vec![] })
        .unwrap();
    let n = pump(&mut host, &mut daemon);
    println!("host   -> daemon {n:>3} bytes  {:?}", daemon.poll_event().unwrap());

    host.send(Message::Task { id: 1, everywhere: false, payload: b"100 + 42".to_vec() }).unwrap();
    let n = pump(&mut host, &mut daemon);
    println!("host   -> daemon {n:>3} bytes  {:?}", daemon.poll_event().unwrap());
    daemon
        .send(Message::Result { id: 1, status: Status::Value, last: false, payload: b"142".to_vec() })
        .unwrap();
    let n = pump(&mut daemon, &mut host);
    match host.poll_event().unwrap() {
        Message::Result { payload, .. } => {
            println!("daemon -> host   {n:>3} bytes  result: {}", String::from_utf8_lossy(&payload))
        }
        other => panic!("unexpected {other:?}"),
    }
}
