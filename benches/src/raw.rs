//! The floor: a length-prefixed echo over a plain socket between two processes, with no
//! framework at all.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

use crate::{read_exact_into, write_frame};

/// Either kind of connected socket.
pub enum RawStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl RawStream {
    #[cfg(target_os = "linux")]
    pub fn unix(name: &str) -> Self {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        RawStream::Unix(UnixStream::connect_addr(&addr).expect("connect raw unix"))
    }

    pub fn tcp(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect raw tcp");
        s.set_nodelay(true).unwrap();
        RawStream::Tcp(s)
    }

    /// Sends `payload` and reads the echo back.
    pub fn roundtrip(&mut self, payload: &[u8], buf: &mut Vec<u8>) {
        self.send(payload);
        self.recv(buf);
    }

    pub fn send(&mut self, payload: &[u8]) {
        match self {
            RawStream::Unix(s) => write_frame(s, payload),
            RawStream::Tcp(s) => write_frame(s, payload),
        }
        .expect("raw send");
    }

    pub fn recv(&mut self, buf: &mut Vec<u8>) {
        match self {
            RawStream::Unix(s) => read_frame(s, buf),
            RawStream::Tcp(s) => read_frame(s, buf),
        }
        .expect("raw recv");
    }
}

fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    read_exact_into(r, buf, u64::from_le_bytes(len) as usize)
}

/// Serves one connection: echoes every frame until the peer closes.
pub fn serve(mut stream: impl Read + Write) {
    let mut buf = Vec::new();
    while read_frame(&mut stream, &mut buf).is_ok() {
        if write_frame(&mut stream, &buf).is_err() {
            return;
        }
    }
}
