//! One connection of a daemon to its host, with the background I/O thread that keeps it: the
//! handshake, receiving tasks and cancels while the evaluator runs on the caller's thread, and
//! noticing the host going away.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use mirai_proto::{Conn, ExitReason, Message};

use super::interrupt::Interrupt;
use crate::clock::{now_ms, until};
use crate::error::Error;
use crate::handshake::{DaemonHandshake, Refusal};
use crate::identity::local_identity;
use crate::link::{Link, ReadEnd, Readiness};
use crate::transport::dial;
use crate::url::Url;

const STREAM: Token = Token(0);
const WAKER: Token = Token(1);

/// How long the evaluator polls for its next event before it sleeps. A busy daemon's next task
/// comes one round trip after its last result, well within this; waking a thread asleep in a
/// futex costs a halted vCPU's wake-up on a virtual machine. The value of `Task::wait`'s poll:
/// over ipc it took the round trip from 38 and 53 µs to 31 and 27 µs (benches/README.md).
const POLL: Duration = Duration::from_micros(200);

/// What the I/O thread hands to the evaluating thread.
#[derive(Debug)]
pub(crate) enum Event {
    Init { daemon_id: u64, rng_stream: [u32; 6], blob: Vec<u8> },
    Task { id: u64, everywhere: bool, payload: Vec<u8> },
    Closed(Closed),
}

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum Closed {
    /// The host sent `Exit`.
    Exit(ExitReason, String),
    /// The host closed the connection without a word.
    Eof,
    /// The connection failed.
    Failed(Error),
    /// This daemon refused the host: it could not prove it holds the secret.
    HostRefused(Refusal),
}

/// What the I/O thread needs to know about the daemon it serves.
#[derive(Clone)]
pub(crate) struct Context {
    pub interrupt: Interrupt,
    /// Set while the evaluator runs.
    pub evaluating: Arc<AtomicBool>,
    /// When the host vanishes mid-evaluation: interrupt it, and terminate the process if it has
    /// not returned within this grace period (R's mirai `autoexit = TRUE`).
    pub terminate_grace: Option<Duration>,
    pub label: String,
    /// The host's secret: the host must prove it holds it, and so must this daemon.
    pub secret: Option<Arc<Vec<u8>>>,
    /// For `tls+tcp://`: the configuration trusting the host's CA.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Give up on a host that heartbeats but from which nothing arrived for this long.
    pub host_timeout: Option<Duration>,
    /// The WebSocket ping interval.
    pub keepalive: Duration,
}

pub(crate) struct Session {
    link: Arc<Mutex<Link>>,
    rx: Receiver<Event>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Session {
    /// Dials `url` once and starts the I/O thread, which runs the handshake.
    pub(crate) fn open(url: &Url, config: mirai_proto::Config, ctx: Context) -> Result<Session, Error> {
        let mut stream = dial(url, Duration::from_secs(10), ctx.tls.clone())?;
        stream.set_keepalive(ctx.keepalive);
        let poll = Poll::new().map_err(|e| Error::io("cannot create poller", e))?;
        let registry =
            Arc::new(poll.registry().try_clone().map_err(|e| Error::io("cannot share the poller", e))?);
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| Error::io("cannot create waker", e))?);
        let mut identity = local_identity();
        identity.label = ctx.label.clone();
        let handshake = DaemonHandshake::new();
        let hello = handshake.hello(identity);
        let proto = Conn::daemon(config, now_ms(), hello)?;
        let link = Link::watched(stream, proto, registry, STREAM)
            .map_err(|e| Error::io("cannot watch the connection", e))?;
        let link = Arc::new(Mutex::new(link));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let io = IoThread { poll, link: link.clone(), stop: stop.clone(), tx, ctx, handshake };
        let thread = std::thread::Builder::new()
            .name("mirai-daemon-io".into())
            .spawn(move || io.run())
            .map_err(|e| Error::io("cannot start daemon I/O thread", e))?;
        Ok(Session { link, rx, stop, waker, thread: Some(thread) })
    }

    /// Queues a message and writes what the socket takes now; the I/O thread writes the rest.
    pub(crate) fn send(&self, msg: Message) -> Result<(), Error> {
        let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
        let before = link.proto.poll_timeout();
        link.send(msg)?;
        // A result sent whole here leaves its memory kept for the next task.
        if link.deadline_earlier_than(before) {
            drop(link);
            let _ = self.waker.wake();
        }
        Ok(())
    }

    /// The next event, polled for up to [`POLL`] before blocking: the next task of a busy
    /// daemon then arrives without a sleeping thread to wake.
    pub(crate) fn recv(&self, timeout: Option<Duration>) -> Result<Event, RecvTimeoutError> {
        let start = Instant::now();
        let poll = timeout.map_or(POLL, |t| t.min(POLL));
        while start.elapsed() < poll {
            match self.rx.try_recv() {
                Ok(ev) => return Ok(ev),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => std::thread::yield_now(),
            }
        }
        match timeout {
            Some(t) => self.rx.recv_timeout(t.saturating_sub(start.elapsed())),
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        }
    }

    /// Sends `Exit` (best effort) and closes the connection.
    pub(crate) fn close(mut self, reason: Option<ExitReason>) {
        if let Some(reason) = reason {
            let _ = self.send(Message::Exit { reason, detail: String::new() });
        }
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct IoThread {
    poll: Poll,
    link: Arc<Mutex<Link>>,
    stop: Arc<AtomicBool>,
    tx: Sender<Event>,
    ctx: Context,
    handshake: DaemonHandshake,
}

impl IoThread {
    fn run(mut self) {
        let closed = self.serve();
        let stopped = self.stop.load(Ordering::Acquire);
        // A task handed to the evaluator (running, or about to start) has no result to send.
        let task_pending = self.link.lock().unwrap_or_else(|e| e.into_inner()).proto.in_flight().is_some();
        if !stopped
            && task_pending
            && let Some(grace) = self.ctx.terminate_grace
        {
            // The host is gone or told us to exit: nobody wants this result.
            self.ctx.interrupt.trigger();
            let evaluating = self.ctx.evaluating.clone();
            std::thread::spawn(move || {
                std::thread::sleep(grace);
                if evaluating.load(Ordering::Acquire) {
                    log::warn!("host gone and the evaluation did not stop: terminating");
                    // SAFETY: raising a signal in our own process.
                    unsafe { libc::raise(libc::SIGTERM) };
                }
            });
        }
        let _ = self.tx.send(Event::Closed(closed));
    }

    /// Runs until the connection ends or the session is stopped.
    fn serve(&mut self) -> Closed {
        let mut events = Events::with_capacity(16);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let timeout = {
                let link = self.link.lock().unwrap_or_else(|e| e.into_inner());
                [link.proto.poll_timeout().map(until), link.stream.keepalive_due()]
                    .into_iter()
                    .flatten()
                    .min()
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Closed::Failed(Error::io("poll", e));
            }
            if self.stop.load(Ordering::Acquire) {
                return Closed::Eof;
            }
            let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
            // Why the stream ended, if it did; a message read before the end (an Exit saying
            // why) takes precedence.
            let mut io_end = None;
            for event in events.iter().filter(|e| e.token() == STREAM) {
                if let Some(ready) = Readiness::after(event) {
                    match link.read_available(&mut buf, ready) {
                        Ok(ReadEnd::Open) => {}
                        Ok(ReadEnd::Eof) => io_end = Some(Closed::Eof),
                        Err(e) => io_end = Some(Closed::Failed(e)),
                    }
                }
            }
            if let Err(e) = link.proto.handle_timeout(now_ms()) {
                io_end.get_or_insert(Closed::Failed(e.into()));
            }
            if let Err(e) = link.stream.keepalive() {
                io_end.get_or_insert(Closed::Failed(Error::io("WebSocket ping", e)));
            }
            let mut msg_end = None;
            while let Some(msg) = link.proto.poll_event() {
                if let Some(closed) = self.handle(&mut link, msg) {
                    msg_end.get_or_insert(closed);
                }
            }
            if let Err(e) = link.flush() {
                io_end.get_or_insert(Closed::Failed(e));
            }
            let ended = msg_end.or(io_end);
            if let Some(closed) = ended {
                return closed;
            }
        }
    }

    fn handle(&self, link: &mut Link, msg: Message) -> Option<Closed> {
        match msg {
            Message::Hello(host) => {
                let channel = match link.stream.channel_binding() {
                    Ok(c) => c,
                    Err(e) => return Some(Closed::Failed(e)),
                };
                match self.handshake.answer(self.ctx.secret.as_ref().map(|s| &s[..]), &host, channel) {
                    Ok(proof) => {
                        link.proto.send(Message::Auth { proof }).err().map(|e| Closed::Failed(e.into()))
                    }
                    Err(refusal) => {
                        // Tell the host why; nothing it sends afterwards is read.
                        let detail = refusal.to_string();
                        let _ = link.proto.send(Message::Exit { reason: ExitReason::AuthFailed, detail });
                        Some(Closed::HostRefused(refusal))
                    }
                }
            }
            Message::Init { daemon_id, rng_stream, heartbeat_ms, blob } => {
                let (beat, silence) = liveness(heartbeat_ms, self.ctx.host_timeout);
                link.proto.set_liveness(beat, silence, now_ms());
                let _ = self.tx.send(Event::Init { daemon_id, rng_stream, blob });
                None
            }
            Message::Task { id, everywhere, payload } => {
                self.ctx.interrupt.reset();
                let _ = self.tx.send(Event::Task { id, everywhere, payload });
                None
            }
            Message::Cancel { .. } => {
                // The state machine passes only a cancel of the running task.
                self.ctx.interrupt.trigger();
                None
            }
            Message::Exit { reason, detail } => Some(Closed::Exit(reason, detail)),
            Message::Result { .. } | Message::Heartbeat | Message::Auth { .. } => None,
        }
    }
}

/// The daemon's heartbeat interval and host timeout (ms) for a host that asked for heartbeats
/// every `heartbeat_ms` (0: none, and then a quiet host is just idle). The timeout is at least
/// three of the host's heartbeats, whatever the daemon was configured with.
fn liveness(heartbeat_ms: u64, host_timeout: Option<Duration>) -> (Option<u64>, Option<u64>) {
    if heartbeat_ms == 0 {
        return (None, None);
    }
    let floor = heartbeat_ms.saturating_mul(3);
    let timeout = host_timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(floor));
    (Some(heartbeat_ms), timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_sets_the_beat_and_bounds_the_timeout_from_below() {
        let two_min = Some(Duration::from_secs(120));
        assert_eq!(liveness(0, two_min), (None, None));
        assert_eq!(liveness(10_000, two_min), (Some(10_000), Some(120_000)));
        assert_eq!(liveness(60_000, two_min), (Some(60_000), Some(180_000)));
        assert_eq!(liveness(10_000, None), (Some(10_000), None));
    }
}
