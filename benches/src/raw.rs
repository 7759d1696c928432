//! The floor: a length-prefixed echo over a plain socket between two processes, with no
//! framework at all.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

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

    /// Sends `payload` and reads the echo back, blocking in `read`.
    pub fn roundtrip(&mut self, payload: &[u8], buf: &mut Vec<u8>) {
        self.send(payload);
        self.recv(buf);
    }

    /// Like [`Self::roundtrip`], but waiting the way a mirai caller does (`Task::wait`): polling,
    /// with `yield_now` between looks, for up to 200 µs, then blocking. So `mirai ÷ this` is
    /// mirai's own overhead, not the difference between spinning and sleeping.
    pub fn roundtrip_spinning(&mut self, payload: &[u8], buf: &mut Vec<u8>) {
        self.send(payload);
        let start = Instant::now();
        while start.elapsed() < SPIN && !readable(self.fd()) {
            std::thread::yield_now();
        }
        self.recv(buf);
    }

    fn fd(&self) -> RawFd {
        match self {
            RawStream::Unix(s) => s.as_raw_fd(),
            RawStream::Tcp(s) => s.as_raw_fd(),
        }
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

/// As long as `Task::wait` polls before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// Whether a read on `fd` would not block (data, end of stream or an error waits there).
fn readable(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: peeks at most one byte into `byte`, without consuming it or blocking.
    let n = unsafe { libc::recv(fd, (&raw mut byte).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
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
