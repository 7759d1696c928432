//! The WebSocket transport (`ws://`, `wss://`): the same byte stream as TCP, carried in binary
//! WebSocket frames over a TCP or TLS stream, so it passes HTTP reverse proxies. tungstenite
//! does the upgrade, driven non-blocking here; the frames are written and read by `framing`.
//! The daemon is the WebSocket client (it dials, and finishes the upgrade before mirai's
//! `Hello`); the host is the server, and runs the upgrade on its I/O thread one readiness event
//! at a time.

pub mod framing;

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::{Interest, Registry, Token};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use framing::{Framed, ReadUninit, Side};

use crate::error::Error;
use crate::transport::Stream;
use crate::url::Url;

/// The largest WebSocket message (and frame) either end sends or accepts. Sending the byte
/// stream in bounded messages fits under the message limits of proxies, which mirai's own
/// frames (up to the host's `max_frame`) would not.
pub const MESSAGE_MAX: usize = 1 << 20;

/// How often a daemon pings an idle connection by default: well inside the 60 s that nginx
/// (`proxy_read_timeout`) and common load balancers allow an idle connection.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(20);

/// For the upgrade only: the frames after it are `framing`'s.
fn config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(MESSAGE_MAX)).max_frame_size(Some(MESSAGE_MAX))
}

/// Accepts only the host's own path; anything else gets `404` before the connection closes.
struct PathCheck(String);

impl Callback for PathCheck {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        if request.uri().path() == self.0 {
            return Ok(response);
        }
        let mut refusal = ErrorResponse::new(Some(format!("no mirai host at {}\n", request.uri().path())));
        *refusal.status_mut() = tungstenite::http::StatusCode::NOT_FOUND;
        Err(refusal)
    }
}

enum State {
    /// Host side, in the upgrade: the client's request is being read or the answer written.
    Accepting(MidHandshake<ServerHandshake<Stream, PathCheck>>),
    Open(Framed<Stream>),
    /// The upgrade failed; tungstenite dropped (and so closed) the socket.
    Failed(Gone),
}

/// A WebSocket connection: one end of the mirai byte stream.
pub struct WsStream {
    state: State,
    /// The path the host serves, for the log line refusing another.
    path: String,
    /// Daemon side: ping after this long without sending anything.
    keepalive: Option<Duration>,
    last_sent: Instant,
}

impl fmt::Debug for WsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Accepting(_) => "accepting",
            State::Open(_) => "open",
            State::Failed(_) => "failed",
        };
        f.debug_struct("WsStream").field("state", &state).field("path", &self.path).finish_non_exhaustive()
    }
}

/// How a close frame from the peer ends the stream: a normal close is the end of the stream,
/// anything else (a proxy refusing a message as too big, say) an error that says why.
fn closed_by_peer(frame: Option<CloseFrame>) -> io::Result<usize> {
    match frame {
        None => Ok(0),
        Some(f) if matches!(f.code, CloseCode::Normal | CloseCode::Away) => Ok(0),
        Some(f) if f.code == CloseCode::Size => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the peer or a proxy closed the WebSocket, refusing a message as too big ({}); \
                 allow WebSocket messages of {MESSAGE_MAX} bytes",
                f.reason
            ),
        )),
        Some(f) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the peer closed the WebSocket: code {} {}", u16::from(f.code), f.reason),
        )),
    }
}

impl WsStream {
    /// Host side: starts the upgrade on a freshly accepted connection serving `path`.
    /// Nothing is read yet: the first readiness event does, so a refusal is reported like any
    /// other read error.
    pub fn accept(inner: Stream, path: &str) -> WsStream {
        let handshake = ServerHandshake::start(inner, PathCheck(path.to_string()), Some(config()));
        WsStream::new(State::Accepting(handshake), path, None)
    }

    /// Daemon side: upgrades a dialled connection to `url`, waiting for the host's answer until
    /// `deadline`.
    pub fn connect(inner: Stream, url: &Url, deadline: Instant) -> Result<WsStream, Error> {
        let Url::Ws { host, port, path, tls } = url else {
            return Err(Error::InvalidUrl(format!("{url} is not a WebSocket URL")));
        };
        // An empty host means this machine, as for tcp://.
        let authority = if host.is_empty() { format!("127.0.0.1:{port}") } else { format!("{host}:{port}") };
        let scheme = if *tls { "wss" } else { "ws" };
        let request = format!("{scheme}://{authority}{path}")
            .into_client_request()
            .map_err(|e| Error::InvalidUrl(format!("{url}: {e}")))?;
        let fd = inner.as_raw_fd();
        let recording = Recording { inner, seen: Vec::new() };
        let mut step = tungstenite::client::client_with_config(request, recording, Some(config()));
        loop {
            match step {
                Ok((open, _)) => {
                    let Recording { inner, seen } = open.into_inner();
                    let framed = Framed::new(inner, Side::Client, after_head(&seen));
                    return Ok(WsStream::new(State::Open(framed), path, None));
                }
                Err(HandshakeError::Interrupted(mid)) => {
                    wait_readable(fd, deadline)
                        .map_err(|e| Error::io(format!("{url}: WebSocket upgrade"), e))?;
                    step = mid.handshake();
                }
                Err(HandshakeError::Failure(e)) => return Err(upgrade_refused(url, e)),
            }
        }
    }

    /// Daemon side: sets how long the connection may stay silent before a ping.
    pub fn set_keepalive(&mut self, every: Duration) {
        self.keepalive = Some(every);
    }

    fn new(state: State, path: &str, keepalive: Option<Duration>) -> WsStream {
        WsStream { state, path: path.to_string(), keepalive, last_sent: Instant::now() }
    }

    /// The stream under the WebSocket (TCP or TLS), while there is one.
    pub fn inner(&self) -> Option<&Stream> {
        match &self.state {
            State::Accepting(mid) => Some(mid.get_ref().get_ref()),
            State::Open(ws) => Some(ws.get_ref()),
            State::Failed(_) => None,
        }
    }

    fn inner_mut(&mut self) -> Option<&mut Stream> {
        match &mut self.state {
            State::Accepting(mid) => Some(mid.get_mut().get_mut()),
            State::Open(ws) => Some(ws.get_mut()),
            State::Failed(_) => None,
        }
    }

    pub fn source(&mut self) -> &mut dyn Source {
        match &mut self.state {
            State::Accepting(mid) => mid.get_mut().get_mut(),
            State::Open(ws) => ws.get_mut(),
            State::Failed(gone) => gone,
        }
    }

    /// The open WebSocket, finishing the host's side of the upgrade first (`WouldBlock` while
    /// the client's request or our answer is still on its way).
    fn open(&mut self) -> io::Result<&mut Framed<Stream>> {
        if matches!(self.state, State::Accepting(_)) {
            let State::Accepting(mid) = std::mem::replace(&mut self.state, State::Failed(Gone)) else {
                return Err(io::ErrorKind::NotConnected.into());
            };
            match mid.handshake() {
                // tungstenite refuses bytes after the client's request, so none are left over.
                Ok(open) => self.state = State::Open(Framed::new(open.into_inner(), Side::Server, &[])),
                Err(HandshakeError::Interrupted(mid)) => {
                    self.state = State::Accepting(mid);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Err(HandshakeError::Failure(e)) => return Err(self.refusal(e)),
            }
        }
        match &mut self.state {
            State::Open(ws) => Ok(ws),
            _ => Err(io::Error::new(io::ErrorKind::NotConnected, "the WebSocket upgrade failed")),
        }
    }

    /// Why the host refused a client's upgrade, in words for the log.
    fn refusal(&self, e: tungstenite::Error) -> io::Error {
        let why = match e {
            tungstenite::Error::Http(r) if r.status() == 404 => {
                format!("the request was for another path than {}", self.path)
            }
            tungstenite::Error::Io(e) => return e,
            other => other.to_string(),
        };
        io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket upgrade refused: {why}"))
    }

    pub fn shutdown(&mut self) {
        if let State::Open(ws) = &mut self.state {
            ws.close(None, "");
            let _ = ws.flush();
        }
        if let Some(inner) = self.inner_mut() {
            inner.shutdown();
        }
    }

    /// How long until the daemon should next ping, if it pings at all.
    pub fn keepalive_due(&self) -> Option<Duration> {
        self.keepalive.map(|k| k.saturating_sub(self.last_sent.elapsed()))
    }

    /// Pings the peer if nothing was sent for the keepalive interval, so proxies see traffic.
    pub fn keepalive(&mut self) -> io::Result<()> {
        if self.keepalive_due() != Some(Duration::ZERO) {
            return Ok(());
        }
        self.last_sent = Instant::now();
        self.open()?.ping()
    }
}

/// Waits until `fd` is readable or `deadline` passes (a short slice at a time, so writes the
/// handshake left pending are retried too).
fn wait_readable(fd: i32, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to the WebSocket upgrade"));
    }
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = left.min(Duration::from_millis(20)).as_millis() as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    if unsafe { libc::poll(&mut pfd, 1, ms) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// A failed upgrade, from the daemon's side, with the likely cause.
fn upgrade_refused(url: &Url, e: tungstenite::Error) -> Error {
    match e {
        tungstenite::Error::Http(r) => {
            let status = r.status();
            let hint = match status.as_u16() {
                404 => " (is the path right?)",
                400 | 426 => " (does the proxy forward the Upgrade and Connection headers?)",
                502..=504 => " (the proxy cannot reach the host)",
                _ => "",
            };
            Error::Refused(format!("WebSocket upgrade at {url} refused: HTTP {status}{hint}"))
        }
        tungstenite::Error::Io(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(tls) => Error::Tls(format!("{url}: {tls}")),
            None => Error::io(format!("{url}: WebSocket upgrade"), e),
        },
        tungstenite::Error::Tls(e) => Error::Tls(format!("{url}: {e}")),
        other => Error::Refused(format!("WebSocket upgrade at {url} failed: {other}")),
    }
}

impl Read for WsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.open()?.read(buf)
    }
}

impl WsStream {
    /// Reads the byte stream into uninitialised memory (see [`Stream::read_uninit`]).
    pub fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        self.open()?.read_uninit(buf)
    }

    /// Whether the socket was empty at the last read of it, with nothing read ahead here (see
    /// [`Stream::drained_after`]); never during the upgrade.
    pub fn drained(&self) -> bool {
        matches!(&self.state, State::Open(ws) if ws.drained())
    }
}

impl ReadUninit for Stream {
    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        Stream::read_uninit(self, buf)
    }

    fn drained_after(&self, n: usize, asked: usize) -> bool {
        Stream::drained_after(self, n, asked)
    }
}

impl Write for WsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Sends what the socket takes; `WouldBlock` only when it is full, as for TCP.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = self.open()?.write_vectored(bufs)?;
        if self.keepalive.is_some() {
            self.last_sent = Instant::now();
        }
        Ok(n)
    }

    /// Writes frames still queued (`WouldBlock` while the socket is full); on the host, also
    /// moves the upgrade on when its answer did not fit in the socket at once.
    fn flush(&mut self) -> io::Result<()> {
        self.open()?.flush()
    }
}

/// The daemon's stream during the upgrade, keeping what it reads: tungstenite may read past the
/// host's answer, and those bytes are the first frames.
struct Recording {
    inner: Stream,
    seen: Vec<u8>,
}

impl Read for Recording {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Write for Recording {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What follows the HTTP head in `seen` (which holds a whole head, the upgrade having worked).
fn after_head(seen: &[u8]) -> &[u8] {
    seen.windows(4).position(|w| w == b"\r\n\r\n").map_or(&[], |at| &seen[at + 4..])
}

/// Stands in for the socket of a failed upgrade, which is already closed: nothing to watch.
pub struct Gone;

impl Source for Gone {
    fn register(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Err(io::ErrorKind::NotConnected.into())
    }
    fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Err(io::ErrorKind::NotConnected.into())
    }
    fn deregister(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::after_head;

    #[test]
    fn bytes_after_the_upgrade_answer_are_kept_and_a_head_alone_leaves_none() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(after_head(head), b"");
        assert_eq!(after_head(&[&head[..], &[0x82, 1, b'x']].concat()), [0x82, 1, b'x']);
        assert_eq!(after_head(b"HTTP/1.1 101\r\n"), b"", "no whole head: nothing taken as frames");
    }
}
