//! Byte-stream transports behind one type each for listening and connected sockets, so the
//! host and daemon never care which one they use: Unix-domain (path or abstract), TCP, TLS
//! over TCP (rustls, driven non-blocking: ciphertext moves only when the socket is ready), and
//! WebSocket over either of the last two (`crate::ws`).

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::SocketAddr as UnixAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use crate::error::Error;
use crate::nosigpipe::{Sender, forbid_sigpipe, send_vectored};
use crate::tls::server_name;
use crate::uninit::as_uninit;
use crate::url::Url;
use crate::ws::WsStream;

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// With a TLS configuration for `tls+tcp://`.
    Tcp(TcpListener, Option<Arc<ServerConfig>>),
    /// The path is removed when the listener is dropped (None for abstract sockets).
    Unix(UnixListener, Option<PathBuf>),
    /// `ws://` or `wss://`: TCP (TLS with a configuration), upgraded at this HTTP path.
    Ws(TcpListener, Option<Arc<ServerConfig>>, String),
}

/// A connected, non-blocking socket.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream>),
    Ws(Box<WsStream>),
}

/// TLS over a non-blocking TCP socket.
#[derive(Debug)]
pub struct TlsStream {
    sock: TcpStream,
    conn: Connection,
    ahead: Ciphertext,
    /// An error met after plaintext was read in the same call: reported by the next read.
    deferred: Option<io::Error>,
    /// The peer's close_notify has been read: the next read gives the end of the stream.
    peer_closed: bool,
}

/// The most ciphertext read from the socket at once.
const CIPHERTEXT_AHEAD: usize = 64 << 10;

/// Ciphertext read ahead of rustls, which asks for at most 4 KiB per read: one `read(2)` of up
/// to 64 KiB serves many of its reads, so a large payload costs a system call per 64 KiB, not
/// per 4 KiB. The buffer is freed whenever the socket is drained, so an idle connection holds
/// none; and a read only reports `WouldBlock` once nothing is left in it, which is what
/// edge-triggered readiness needs.
#[derive(Debug, Default)]
struct Ciphertext {
    buf: Vec<u8>,
    pos: usize,
    /// The last read from the socket gave less than it asked for: the socket was empty then.
    short: bool,
}

impl Ciphertext {
    fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Gives what was read ahead, reading more from `sock` when nothing is left.
    fn read(&mut self, sock: &TcpStream, out: &mut [u8]) -> io::Result<usize> {
        if self.is_empty() {
            self.buf.clear();
            self.pos = 0;
            self.buf.reserve(CIPHERTEXT_AHEAD);
            match read_fd(sock.as_raw_fd(), &mut self.buf.spare_capacity_mut()[..CIPHERTEXT_AHEAD]) {
                Ok(n) => {
                    self.short = n < CIPHERTEXT_AHEAD;
                    // SAFETY: read(2) initialised these `n` bytes of the spare capacity.
                    unsafe { self.buf.set_len(n) }
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        self.buf = Vec::new();
                    }
                    return Err(e);
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What rustls reads ciphertext from: the read-ahead, then the socket.
struct CiphertextReader<'a> {
    ahead: &'a mut Ciphertext,
    sock: &'a TcpStream,
}

impl Read for CiphertextReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.ahead.read(self.sock, out)
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> io::Result<UnixAddr> {
    use std::os::linux::net::SocketAddrExt;
    UnixAddr::from_abstract_name(name.as_bytes())
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &str) -> io::Result<UnixAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract sockets exist only on Linux"))
}

impl Listener {
    /// Binds `url` and returns the listener with the URL daemons should dial (the actual port
    /// when port 0 was asked for). A `tls+tcp://` URL needs `tls`.
    pub fn bind(url: &Url, tls: Option<Arc<ServerConfig>>) -> Result<(Listener, Url), Error> {
        match url {
            Url::Ws { path, .. } => {
                let (l, tls, url) = bind_tcp(url, tls)?;
                Ok((Listener::Ws(l, tls, path.clone()), url))
            }
            Url::Tcp { .. } => {
                let (l, tls, url) = bind_tcp(url, tls)?;
                Ok((Listener::Tcp(l, tls), url))
            }
            Url::Ipc(path) => {
                remove_stale_socket(path);
                let l =
                    UnixListener::bind(path).map_err(|e| Error::io(format!("cannot listen at {url}"), e))?;
                Ok((Listener::Unix(l, Some(path.clone())), url.clone()))
            }
            Url::Abstract(name) => {
                let addr =
                    abstract_addr(name).map_err(|e| Error::io(format!("cannot listen at {url}"), e))?;
                let l = UnixListener::bind_addr(&addr)
                    .map_err(|e| Error::io(format!("cannot listen at {url}"), e))?;
                Ok((Listener::Unix(l, None), url.clone()))
            }
        }
    }

    /// Accepts one pending connection (`WouldBlock` when there is none).
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l, tls) => accept_tcp(l, tls),
            Listener::Ws(l, tls, path) => {
                Ok(Stream::Ws(Box::new(WsStream::accept(accept_tcp(l, tls)?, path))))
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept()?;
                forbid_sigpipe(s.as_fd())?;
                Ok(Stream::Unix(s))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, Some(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds a TCP-based URL (with its TLS configuration, which TLS URLs need), returning the URL
/// with the port actually bound.
fn bind_tcp(
    url: &Url,
    tls: Option<Arc<ServerConfig>>,
) -> Result<(TcpListener, Option<Arc<ServerConfig>>, Url), Error> {
    let wants_tls = url.is_tls();
    if wants_tls && tls.is_none() {
        return Err(Error::Tls(format!("{url}: no server certificate configured")));
    }
    let tls = if wants_tls { tls } else { None };
    let mut last = None;
    for addr in url.socket_addrs()? {
        match TcpListener::bind(addr) {
            Ok(l) => {
                let port = l.local_addr().map_err(|e| Error::io(format!("{url}: local address"), e))?.port();
                return Ok((l, tls, url.with_port(port)));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Error::io(format!("cannot listen at {url}"), last.unwrap_or_else(|| io::Error::other("no address"))))
}

/// Accepts a TCP connection, starting TLS on it when configured.
fn accept_tcp(l: &TcpListener, tls: &Option<Arc<ServerConfig>>) -> io::Result<Stream> {
    let (s, _) = l.accept()?;
    forbid_sigpipe(s.as_fd())?;
    tune_tcp(&s);
    match tls {
        None => Ok(Stream::Tcp(s)),
        Some(config) => {
            let conn = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
            Ok(Stream::Tls(Box::new(TlsStream::new(s, conn.into()))))
        }
    }
}

/// Removes a socket file left by a process that died, but never a live one's.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket
        && let Err(e) = std::os::unix::net::UnixStream::connect(path)
        && e.kind() == io::ErrorKind::ConnectionRefused
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Low latency over throughput for small messages; keepalive to notice vanished peers.
fn tune_tcp(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    set_int(s, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    tune_keepalive(s);
}

/// Probes after a minute of silence, every 10 s, six unanswered ones end the connection; and
/// data unacknowledged for two minutes ends it too (instead of Linux's defaults of over two
/// hours and about fifteen minutes).
#[cfg(target_os = "linux")]
fn tune_keepalive(s: &TcpStream) {
    set_int(s, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60);
    set_int(s, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10);
    set_int(s, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6);
    set_int(s, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 120_000);
}

#[cfg(not(target_os = "linux"))]
fn tune_keepalive(_s: &TcpStream) {}

/// Best effort: a socket option the kernel refuses leaves its default in place.
fn set_int(s: &TcpStream, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: a valid socket fd and a pointer to a live c_int of the stated size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Connects to `url`, failing fast (no retry) when nobody listens there. A `tls+tcp://` URL
/// needs `tls`, the configuration trusting the host's CA.
pub fn dial(url: &Url, timeout: Duration, tls: Option<Arc<ClientConfig>>) -> Result<Stream, Error> {
    let fail = |e| Error::io(format!("cannot connect to {url}"), e);
    match url {
        Url::Ws { .. } => {
            let deadline = Instant::now() + timeout;
            let inner = dial_tcp(url, timeout, tls)?;
            Ok(Stream::Ws(Box::new(WsStream::connect(inner, url, deadline)?)))
        }
        Url::Tcp { .. } => dial_tcp(url, timeout, tls),
        Url::Ipc(path) => {
            let s = std::os::unix::net::UnixStream::connect(path).map_err(fail)?;
            forbid_sigpipe(s.as_fd()).map_err(fail)?;
            s.set_nonblocking(true).map_err(fail)?;
            Ok(Stream::Unix(UnixStream::from_std(s)))
        }
        Url::Abstract(name) => {
            let addr = abstract_addr(name).map_err(fail)?;
            let s = std::os::unix::net::UnixStream::connect_addr(&addr).map_err(fail)?;
            forbid_sigpipe(s.as_fd()).map_err(fail)?;
            s.set_nonblocking(true).map_err(fail)?;
            Ok(Stream::Unix(UnixStream::from_std(s)))
        }
    }
}

/// Connects over TCP, wrapped in TLS for a TLS URL.
fn dial_tcp(url: &Url, timeout: Duration, tls: Option<Arc<ClientConfig>>) -> Result<Stream, Error> {
    let fail = |e| Error::io(format!("cannot connect to {url}"), e);
    let client = match (url.is_tls(), tls) {
        (true, None) => {
            return Err(Error::Tls(format!("{url}: no CA certificate to verify the host with")));
        }
        (true, Some(config)) => {
            Some(ClientConnection::new(config, server_name(url)?).map_err(|e| Error::Tls(e.to_string()))?)
        }
        (false, _) => None,
    };
    let mut last = None;
    for addr in url.socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                forbid_sigpipe(s.as_fd()).map_err(fail)?;
                s.set_nonblocking(true).map_err(fail)?;
                let s = TcpStream::from_std(s);
                tune_tcp(&s);
                return Ok(match client {
                    None => Stream::Tcp(s),
                    Some(conn) => Stream::Tls(Box::new(TlsStream::new(s, conn.into()))),
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(fail(last.unwrap_or_else(|| io::Error::other("no address"))))
}

impl Stream {
    pub fn shutdown(&mut self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tls(t) => {
                t.conn.send_close_notify();
                let _ = t.write_pending();
                t.sock.shutdown(Shutdown::Both)
            }
            Stream::Ws(w) => {
                w.shutdown();
                Ok(())
            }
        };
    }

    /// Whether a read that gave `n` of the `asked` bytes left the socket empty, with nothing it
    /// read still held here: a plain socket's read is short; a TLS or WebSocket stream's last
    /// socket read was short and it holds nothing read ahead. Then bytes that come later raise
    /// a new edge-triggered event, so the read that would only say `WouldBlock` can be skipped.
    pub fn drained_after(&self, n: usize, asked: usize) -> bool {
        n < asked
            && match self {
                Stream::Tcp(_) | Stream::Unix(_) => true,
                Stream::Tls(t) => t.drained(),
                Stream::Ws(w) => w.drained(),
            }
    }

    /// Reads into uninitialised memory, so a large payload is neither copied nor zero-filled
    /// first: with `read(2)` on plain sockets, and from rustls' buffer for TLS.
    pub fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => read_fd(s.as_raw_fd(), buf),
            Stream::Unix(s) => read_fd(s.as_raw_fd(), buf),
            Stream::Tls(t) => t.read_plain(buf),
            Stream::Ws(w) => w.read_uninit(buf),
        }
    }

    /// Keying material exported from the TLS session, which both ends of that one session
    /// (and nobody relaying between two sessions) share; `None` for plain sockets.
    pub fn channel_binding(&self) -> Result<Option<[u8; crate::auth::LEN]>, Error> {
        match self {
            Stream::Tls(t) => t
                .conn
                .export_keying_material([0; crate::auth::LEN], b"EXPORTER-mirai-auth-v2", None)
                .map(Some)
                .map_err(|e| Error::Tls(format!("cannot bind authentication to the session: {e}"))),
            // wss://: the TLS session under the WebSocket.
            Stream::Ws(w) => w.inner().map_or(Ok(None), Stream::channel_binding),
            _ => Ok(None),
        }
    }

    /// Daemon side of a WebSocket: how long the connection may stay silent before a ping.
    pub fn set_keepalive(&mut self, every: Duration) {
        if let Stream::Ws(w) = self {
            w.set_keepalive(every);
        }
    }

    /// How long until a WebSocket ping is due (`None`: this stream does not ping).
    pub fn keepalive_due(&self) -> Option<Duration> {
        match self {
            Stream::Ws(w) => w.keepalive_due(),
            _ => None,
        }
    }

    /// Sends the WebSocket ping if it is due.
    pub fn keepalive(&mut self) -> io::Result<()> {
        match self {
            Stream::Ws(w) => w.keepalive(),
            _ => Ok(()),
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
            Stream::Tls(t) => &mut t.sock,
            Stream::Ws(w) => w.source(),
        }
    }
}

/// `read(2)` into uninitialised memory.
fn read_fd(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    // SAFETY: reads at most `buf.len()` bytes into memory `buf` owns; read(2) does not read it.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

impl TlsStream {
    fn new(sock: TcpStream, conn: Connection) -> Self {
        TlsStream { sock, conn, ahead: Ciphertext::default(), deferred: None, peer_closed: false }
    }

    /// After a read shorter than asked for: whether the socket was empty at this stream's last
    /// read of it, with no ciphertext left ahead, no error or close waiting to be reported. A
    /// read that did not fill its buffer took all the plaintext rustls had; a record it holds
    /// only in part needs bytes still to come, which raise an event.
    fn drained(&self) -> bool {
        self.ahead.is_empty() && self.ahead.short && self.deferred.is_none() && !self.peer_closed
    }

    /// Writes buffered TLS records until none are left or the socket is full.
    fn write_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut Sender(self.sock.as_fd()))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Moves decrypted plaintext into `out` (uninitialised memory: nothing is zero-filled
    /// first), straight from rustls' buffer; as `Read::read` when none is there (`Ok(0)` after
    /// the peer's close, `WouldBlock` while open).
    fn take_plain(&mut self, out: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let mut reader = self.conn.reader();
        let mut n = 0;
        while n < out.len() {
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(_) if n > 0 => break,
                Err(e) => return Err(e),
            };
            let k = chunk.len().min(out.len() - n);
            if k == 0 {
                break;
            }
            // SAFETY: `k` bytes fit both the chunk and `out[n..]`; the two do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), out[n..].as_mut_ptr().cast(), k) };
            reader.consume(k);
            n += k;
        }
        Ok(n)
    }

    /// Reads plaintext into uninitialised memory, pulling and decrypting records as needed.
    /// Handshake and alert records that this produces are written on the way.
    fn read_plain(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        // Plaintext decrypted before the failure still comes first.
        if let Some(e) = self.deferred.take() {
            return match self.take_plain(buf) {
                Ok(n) if n > 0 => {
                    self.deferred = Some(e);
                    Ok(n)
                }
                _ => Err(e),
            };
        }
        // Plaintext given so far: it keeps coming while ciphertext read ahead is left, so one
        // call can give a large payload many records' worth rather than one 4 KiB read's.
        let mut filled = 0;
        let result = loop {
            match self.take_plain(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => break Err(e),
            }
            if filled == buf.len() || (filled > 0 && self.ahead.is_empty()) {
                break Ok(());
            }
            let mut ciphertext = CiphertextReader { ahead: &mut self.ahead, sock: &self.sock };
            match self.conn.read_tls(&mut ciphertext) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            let processed = self.conn.process_new_packets();
            self.peer_closed = processed.as_ref().is_ok_and(|state| state.peer_has_closed());
            // Handshake replies, or the alert that explains a failure.
            match self.write_pending() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if processed.is_ok() => break Err(e),
                Err(_) => {}
            }
            if let Err(e) = processed {
                // Records before the broken one were decrypted: those bytes are given first.
                if let Ok(n) = self.take_plain(&mut buf[filled..]) {
                    filled += n;
                }
                break Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        };
        match result {
            Ok(()) => Ok(filled),
            // Nothing more for now: what was read is all there is.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => Ok(filled),
            Err(e) if filled > 0 => {
                self.deferred = Some(e);
                Ok(filled)
            }
            Err(e) => Err(e),
        }
    }

    /// Encrypts plaintext and writes what the socket takes. When rustls' buffer is full, its
    /// records are pushed out first; `WouldBlock` only once the socket itself is full, so the
    /// caller can rely on a writable event to resume.
    fn write_plain(
        &mut self,
        mut write: impl FnMut(&mut rustls::Writer<'_>) -> io::Result<usize>,
    ) -> io::Result<usize> {
        loop {
            let n = write(&mut self.conn.writer())?;
            if n > 0 {
                match self.write_pending() {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    _ => return Ok(n),
                }
            }
            self.write_pending()?;
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_plain(as_uninit(buf))
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(t) => t.sock.as_raw_fd(),
            // -1 (no descriptor) once a failed upgrade has closed the socket.
            Stream::Ws(w) => w.inner().map_or(-1, |s| s.as_raw_fd()),
        }
    }
}

/// Plain sockets are read with `read(2)`, as their payloads are (`Stream::read_uninit`), so
/// `/proc/<pid>/io` counts every read.
impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(_) | Stream::Unix(_) => self.read_uninit(as_uninit(buf)),
            Stream::Tls(t) => t.read(buf),
            Stream::Ws(w) => w.read(buf),
        }
    }
}

/// Plain sockets are written with `send_vectored`, never std's `writev` (it raises SIGPIPE).
impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => send_vectored(s.as_fd(), bufs),
            Stream::Unix(s) => send_vectored(s.as_fd(), bufs),
            Stream::Tls(t) => t.write_plain(|w| w.write_vectored(bufs)),
            Stream::Ws(w) => w.write_vectored(bufs),
        }
    }

    /// For TLS: writes records still buffered (`WouldBlock` while the socket is full).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(t) => t.write_pending(),
            Stream::Ws(w) => w.flush(),
            _ => Ok(()),
        }
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.source().register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.source().reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.source().deregister(r)
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _) => l.register(r, t, i),
            Listener::Unix(l, _) => l.register(r, t, i),
            Listener::Ws(l, ..) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _) => l.reregister(r, t, i),
            Listener::Unix(l, _) => l.reregister(r, t, i),
            Listener::Ws(l, ..) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _) => l.deregister(r),
            Listener::Unix(l, _) => l.deregister(r),
            Listener::Ws(l, ..) => l.deregister(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair of non-blocking loopback TCP sockets.
    fn pair() -> (std::net::TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        (a, TcpStream::from_std(b))
    }

    /// A TLS server stream on one end of a loopback pair, and a client (blocking) on the other,
    /// with the handshake done.
    fn tls_pair() -> (TlsStream, rustls::StreamOwned<ClientConnection, std::net::TcpStream>) {
        let url = Url::parse("tls+tcp://127.0.0.1:0").unwrap();
        let id = crate::tls::generate(&url).unwrap();
        let server = crate::tls::server_config(&id.cert_chain_pem, &id.key_pem, None).unwrap();
        let client = crate::tls::client_config(&id.ca_pem).unwrap();
        let (a, b) = pair();
        let mut host = TlsStream::new(b, ServerConnection::new(server).unwrap().into());
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        // Non-blocking while both ends handshake on this one thread.
        a.set_nonblocking(true).unwrap();
        let mut daemon = rustls::StreamOwned::new(ClientConnection::new(client, name).unwrap(), a);
        let mut buf = [0u8; 16];
        for _ in 0..1000 {
            if !daemon.conn.is_handshaking() && !host.conn.is_handshaking() {
                break;
            }
            let _ = daemon.conn.complete_io(&mut daemon.sock);
            let _ = host.read(&mut buf);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!daemon.conn.is_handshaking() && !host.conn.is_handshaking(), "handshake done");
        daemon.sock.set_nonblocking(false).unwrap();
        (host, daemon)
    }

    #[test]
    fn plaintext_read_before_a_broken_record_is_given_first_and_the_error_next() {
        let (mut host, mut daemon) = tls_pair();
        daemon.write_all(b"all of this arrives").unwrap();
        daemon.flush().unwrap();
        // A record of an unknown content type, right behind: a fatal error once reached.
        daemon.sock.write_all(&[0x42, 0x03, 0x03, 0x00, 0x01, 0x00]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // Reads smaller than the plaintext: some of it is still to give once the error is met.
        let mut buf = [0u8; 4];
        let mut got = Vec::new();
        let e = loop {
            match host.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => break e,
            }
        };
        assert_eq!(got, b"all of this arrives", "what came before the broken record");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn ciphertext_is_read_ahead_in_large_reads_and_the_buffer_freed_when_drained() {
        let (mut tx, rx) = pair();
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        tx.write_all(&sent).unwrap();
        let mut ahead = Ciphertext::default();
        let mut got = Vec::new();
        let mut out = [0u8; 4096];
        let mut socket_reads = 0;
        while got.len() < sent.len() {
            let fresh = ahead.pos == ahead.buf.len();
            match ahead.read(&rx, &mut out) {
                Ok(n) => {
                    socket_reads += usize::from(fresh);
                    got.extend_from_slice(&out[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert_eq!(ahead.buf.capacity(), 0, "drained: the buffer is freed");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(got == sent);
        assert!(socket_reads < sent.len() / 4096, "{socket_reads} socket reads for {} B", sent.len());
        assert_eq!(ahead.read(&rx, &mut out).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(ahead.buf.capacity(), 0);
        drop(tx);
        assert_eq!(ahead.read(&rx, &mut out).unwrap(), 0, "the end of the stream");
    }
}
