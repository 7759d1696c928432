//! A connection: a socket and the protocol state machine that speaks over it. Reads drain the
//! socket (edge-triggered readiness), or stop early at a limit on the memory the frame being
//! received may hold; writes are vectored and go out until everything queued is written or the
//! socket is full. A link its poller watches asks for writability only while the socket is full.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use mio::{Interest, Registry, Token};

use mirai_proto::conn::HANDSHAKE_MAX_FRAME;
use mirai_proto::decoder::Progress;
use mirai_proto::{Conn, Message};

use crate::clock::now_ms;
use crate::error::Error;
use crate::huge_pages::advise_huge_pages;
use crate::transport::Stream;

/// Payload remainders at least this large are read straight into the payload buffer.
const DIRECT_READ_MIN: usize = 64 * 1024;

/// Frames up to this size are read whatever the limit: a connection holds at most one partly
/// received, and handshakes and heartbeats must never wait behind other peers' large frames.
pub const EXEMPT_FRAME: u64 = HANDSHAKE_MAX_FRAME;

/// How much memory the frame a connection is receiving may hold; see [`Link::read_within`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimit {
    /// Bytes a frame larger than [`EXEMPT_FRAME`] may hold.
    pub held: usize,
    /// The frame (numbered as in [`Progress::frame`]) that may be finished whatever it holds.
    pub finish: Option<u64>,
}

impl ReadLimit {
    pub const NONE: ReadLimit = ReadLimit { held: usize::MAX, finish: None };

    /// Bytes that may be read next. Header bytes and exempt frames cost nothing against the
    /// limit, and a frame allowed to finish is read up to its end but not beyond.
    fn room(&self, p: &Progress) -> usize {
        let free = self.held.saturating_sub(p.held);
        let unlimited = match p.body_len {
            None => p.missing,
            Some(len) if len <= EXEMPT_FRAME || self.finish == Some(p.frame) => p.missing,
            Some(_) => 0,
        };
        free.max(usize::try_from(unlimited).unwrap_or(usize::MAX))
    }
}

/// What the caller knows of the socket it reads; it decides how a read knows it has drained it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// A readiness event that reported neither the peer's close nor an error. A read that found
    /// the socket empty (`Stream::drained_after`: for TLS and WebSocket streams, a short socket
    /// read with nothing left read ahead) ends the reading, since bytes arriving later raise a
    /// new event: the read that would only say `WouldBlock` (one system call a message) is
    /// skipped.
    Event,
    /// A close or an error already reported (which raises no new event), or no event at all
    /// (reading resumed after a limit): read until `WouldBlock` or the end.
    Unknown,
}

impl Readiness {
    /// How to read after `event`; `None` when it says nothing about reading (writability alone).
    pub fn after(event: &mio::event::Event) -> Option<Self> {
        if event.is_read_closed() || event.is_error() {
            Some(Readiness::Unknown)
        } else {
            event.is_readable().then_some(Readiness::Event)
        }
    }
}

/// What one read did.
enum Step {
    More,
    Drained,
    Eof,
}

/// The step for a read error: `WouldBlock` means drained, `Interrupted` means try again.
fn step_for(e: io::Error) -> Result<Step, Error> {
    match e.kind() {
        io::ErrorKind::WouldBlock => Ok(Step::Drained),
        io::ErrorKind::Interrupted => Ok(Step::More),
        _ => Err(io_error("read", e)),
    }
}

/// What a read found at the end of the available bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The socket is drained and still open.
    Open,
    /// The peer closed its end.
    Eof,
}

#[derive(Debug)]
pub struct Link {
    pub stream: Stream,
    pub proto: Conn,
    /// Start and end of the payload buffer last given huge-page advice: the buffer grows as the
    /// payload arrives, and may move when it does, so each new extent is advised.
    advised: (usize, usize),
    watch: Option<Watch>,
}

/// The poller a link is registered with. Writability is asked for only while a write is left
/// waiting: a Unix socket registered for it for good reports it each time the peer reads a
/// message (the review measured one wake-up per message at each end).
#[derive(Debug)]
struct Watch {
    registry: Arc<Registry>,
    token: Token,
    writable: bool,
}

impl Link {
    /// A link no poller watches (blocking use, tests).
    pub fn new(stream: Stream, proto: Conn) -> Self {
        Link { stream, proto, advised: (0, 0), watch: None }
    }

    /// A link registered with `registry` under `token`: readable always, writable while the
    /// socket is full, and at first, so the poller's first event writes what the stream starts
    /// with (a TLS ClientHello, a WebSocket upgrade request, the protocol's Hello).
    pub fn watched(
        mut stream: Stream,
        proto: Conn,
        registry: Arc<Registry>,
        token: Token,
    ) -> io::Result<Self> {
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let watch = Some(Watch { registry, token, writable: true });
        Ok(Link { stream, proto, advised: (0, 0), watch })
    }

    /// Reads everything available into the state machine. Decoded messages wait in
    /// `proto.poll_event()`.
    pub fn read_available(&mut self, buf: &mut [u8], ready: Readiness) -> Result<ReadEnd, Error> {
        // Without a limit there is always room to read: it never stops early.
        Ok(self.read_within(buf, ReadLimit::NONE, ready)?.unwrap_or(ReadEnd::Open))
    }

    /// Like [`Self::read_available`], but stops early (`None`) when the frame being received
    /// reaches what `limit` lets it hold, leaving the rest in the socket.
    pub fn read_within(
        &mut self,
        buf: &mut [u8],
        limit: ReadLimit,
        ready: Readiness,
    ) -> Result<Option<ReadEnd>, Error> {
        let after_event = ready == Readiness::Event;
        loop {
            let room = limit.room(&self.proto.recv_progress());
            if room == 0 {
                return Ok(None);
            }
            let large = self.proto.recv_payload_remaining() >= DIRECT_READ_MIN;
            let small = room.min(buf.len());
            let step = if large {
                self.read_into_payload(room, after_event)?
            } else {
                match self.stream.read(&mut buf[..small]) {
                    Ok(0) => Step::Eof,
                    Ok(n) => {
                        self.proto.feed(now_ms(), &buf[..n])?;
                        if after_event && self.stream.drained_after(n, small) {
                            Step::Drained
                        } else {
                            Step::More
                        }
                    }
                    Err(e) => step_for(e)?,
                }
            };
            match step {
                Step::More => {}
                Step::Drained => return Ok(Some(ReadEnd::Open)),
                Step::Eof => {
                    self.proto.handle_eof()?;
                    return Ok(Some(ReadEnd::Eof));
                }
            }
        }
    }

    /// Reads at most `room` bytes straight into the uninitialised payload buffer: no
    /// intermediate copy, no zero-fill. The buffer gets huge-page advice once per extent (the
    /// extent changes as it grows, and it may move).
    fn read_into_payload(&mut self, room: usize, after_event: bool) -> Result<Step, Error> {
        let received = self.proto.recv_payload_received();
        let Some(spare) = self.proto.recv_spare() else { return Ok(Step::More) };
        let extent = (spare.as_ptr() as usize - received, spare.as_ptr() as usize + spare.len());
        if self.advised != extent {
            self.advised = extent;
            advise_huge_pages(extent.0, extent.1);
        }
        let len = spare.len().min(room);
        let n = match self.stream.read_uninit(&mut spare[..len]) {
            Ok(0) => return Ok(Step::Eof),
            Ok(n) => n,
            Err(e) => return step_for(e),
        };
        // SAFETY: the stream initialised these `n` bytes, within the slice.
        unsafe { self.proto.recv_assume_filled(now_ms(), n)? };
        Ok(if after_event && self.stream.drained_after(n, len) { Step::Drained } else { Step::More })
    }

    /// Writes queued bytes until none are left (`Ok(true)`) or the socket is full (`Ok(false)`),
    /// and has the poller report writability in the second case only.
    pub fn flush(&mut self) -> Result<bool, Error> {
        let done = self.write_out()?;
        if let Some(w) = self.watch.as_mut().filter(|w| w.writable == done) {
            let interest = if done { Interest::READABLE } else { Interest::READABLE | Interest::WRITABLE };
            // Edge-triggered: re-registering reports writability that came meanwhile, so none is lost.
            w.registry
                .reregister(&mut self.stream, w.token, interest)
                .map_err(|e| Error::io("cannot watch the connection", e))?;
            w.writable = !done;
        }
        Ok(done)
    }

    fn write_out(&mut self) -> Result<bool, Error> {
        while self.proto.pending_out() > 0 {
            let mut slices = [&[][..]; 64];
            let n = self.proto.transmit(&mut slices);
            let iov: [IoSlice<'_>; 64] = std::array::from_fn(|i| IoSlice::new(slices[i]));
            match self.stream.write_vectored(&iov[..n]) {
                Ok(0) => return Err(Error::io("write", io::ErrorKind::WriteZero.into())),
                Ok(n) => self.proto.transmitted(now_ms(), n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("write", e)),
            }
        }
        // TLS may still hold records of its own (handshake, or data it could not write yet).
        match self.stream.flush() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(io_error("write", e)),
        }
    }

    /// Whether the connection's next deadline is earlier than `before`, what it was before a
    /// write: one made on a thread other than the I/O thread (finishing a large payload, whose
    /// memory is then kept for a while) must tell the I/O thread, asleep on the later one.
    pub fn deadline_earlier_than(&self, before: Option<u64>) -> bool {
        self.proto.poll_timeout().is_some_and(|t| before.is_none_or(|b| t < b))
    }

    /// Queues a message and writes what the socket takes now.
    pub fn send(&mut self, msg: Message) -> Result<bool, Error> {
        self.proto.send(msg)?;
        self.flush()
    }
}

/// A socket error, naming TLS failures (bad certificate, alert from the peer) as such.
fn io_error(context: &str, e: io::Error) -> Error {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => Error::Tls(tls.to_string()),
        None => Error::io(context, e),
    }
}
