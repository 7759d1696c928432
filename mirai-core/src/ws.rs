//! The WebSocket transport (`ws://`, `wss://`): the same byte stream as TCP, carried in binary
//! WebSocket messages over a TCP or TLS stream, so it passes HTTP reverse proxies. tungstenite
//! does the handshake and the framing; this module drives it non-blocking. The daemon is the
//! WebSocket client (it dials, and finishes the upgrade before mirai's `Hello`); the host is the
//! server, and runs the upgrade on its I/O thread one readiness event at a time.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use mio::event::Source;
use mio::{Interest, Registry, Token};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use crate::error::Error;
use crate::transport::Stream;
use crate::url::Url;

/// The largest WebSocket message (and frame) either end sends or accepts. Sending the byte
/// stream in bounded messages keeps every buffer small and cache-warm whatever the task size,
/// and fits under the message limits of proxies, which mirai's own frames (up to the host's
/// `max_frame`) would not.
pub const MESSAGE_MAX: usize = 1 << 20;

/// How often a daemon pings an idle connection by default: well inside the 60 s that nginx
/// (`proxy_read_timeout`) and common load balancers allow an idle connection.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(20);

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MESSAGE_MAX))
        .max_frame_size(Some(MESSAGE_MAX))
        // Written at once: `Write` below flushes after each message anyway.
        .write_buffer_size(0)
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
    Open(WebSocket<Stream>),
    /// The upgrade failed; tungstenite dropped (and so closed) the socket.
    Failed(Gone),
}

/// A WebSocket connection: one end of the mirai byte stream.
pub struct WsStream {
    state: State,
    /// The path the host serves, for the log line refusing another.
    path: String,
    /// What is left of the last binary message received.
    rx: Bytes,
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

/// The error a refused or broken WebSocket becomes, for logs and for the daemon's report.
fn ws_error(e: tungstenite::Error) -> io::Error {
    use tungstenite::Error as E;
    match e {
        E::Io(e) => e,
        E::ConnectionClosed | E::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        E::Capacity(c) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket message refused: {c} (mirai sends messages of at most {MESSAGE_MAX} bytes)"),
        ),
        other => io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {other}")),
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
        let mut step = tungstenite::client::client_with_config(request, inner, Some(config()));
        loop {
            match step {
                Ok((open, _)) => return Ok(WsStream::new(State::Open(open), path, None)),
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
        WsStream { state, path: path.to_string(), rx: Bytes::new(), keepalive, last_sent: Instant::now() }
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
    fn open(&mut self) -> io::Result<&mut WebSocket<Stream>> {
        if matches!(self.state, State::Accepting(_)) {
            let State::Accepting(mid) = std::mem::replace(&mut self.state, State::Failed(Gone)) else {
                return Err(io::ErrorKind::NotConnected.into());
            };
            match mid.handshake() {
                Ok(open) => self.state = State::Open(open),
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

    /// Closes the WebSocket with `code`, telling the peer why (best effort), and returns the
    /// error for our own report.
    fn fail(&mut self, code: CloseCode, e: io::Error) -> io::Error {
        if let State::Open(ws) = &mut self.state {
            let reason = e.to_string().chars().take(120).collect::<String>();
            let _ = ws.close(Some(CloseFrame { code, reason: reason.into() }));
        }
        e
    }

    pub fn shutdown(&mut self) {
        if let State::Open(ws) = &mut self.state {
            let _ = ws.close(None);
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
        let ws = self.open()?;
        match ws.write(Message::Ping(Bytes::new())).and_then(|()| ws.flush()) {
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other.map_err(ws_error),
        }
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
        loop {
            if !self.rx.is_empty() {
                let n = buf.len().min(self.rx.len());
                buf[..n].copy_from_slice(&self.rx[..n]);
                self.rx.advance(n);
                return Ok(n);
            }
            let ws = self.open()?;
            let got = ws.read();
            match got {
                Ok(Message::Binary(data)) => self.rx = data,
                // tungstenite answers pings itself, on this or the next call.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Text(_)) => {
                    let e = io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text message refused: mirai speaks binary messages only",
                    );
                    return Err(self.fail(CloseCode::Unsupported, e));
                }
                Ok(Message::Close(frame)) => {
                    // Our answer to the close, if the socket takes it.
                    let _ = ws.flush();
                    return closed_by_peer(frame);
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(0);
                }
                // A peer (or a restarted proxy) that just closed the socket: the end of the stream.
                Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )) => return Ok(0),
                Err(e @ tungstenite::Error::Capacity(_)) => {
                    return Err(self.fail(CloseCode::Size, ws_error(e)));
                }
                Err(e @ tungstenite::Error::Protocol(_)) => {
                    return Err(self.fail(CloseCode::Protocol, ws_error(e)));
                }
                Err(e) => return Err(ws_error(e)),
            }
        }
    }
}

impl WsStream {
    /// Sends what the socket takes: older messages first, then the next stretch of `bufs` as
    /// one binary message. `WouldBlock` only when the socket is full, as for TCP.
    fn send(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let ws = self.open()?;
        ws.flush().map_err(ws_error)?;
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(MESSAGE_MAX);
        if total == 0 {
            return Ok(0);
        }
        let mut message = Vec::with_capacity(total);
        for b in bufs {
            let take = b.len().min(total - message.len());
            message.extend_from_slice(&b[..take]);
        }
        // Queued even when the socket is full; the writable event finishes it through `flush`.
        match ws.write(Message::Binary(message.into())).and_then(|()| ws.flush()) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(ws_error(e)),
        }
        self.last_sent = Instant::now();
        Ok(total)
    }
}

impl Write for WsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send(bufs)
    }

    /// Writes queued messages (`WouldBlock` while the socket is full); on the host, also moves
    /// the upgrade on when its answer did not fit in the socket at once.
    fn flush(&mut self) -> io::Result<()> {
        self.open()?.flush().map_err(ws_error)
    }
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
