//! The per-connection state machine, one for each end. It owns no socket and reads no clock:
//! the owner feeds received bytes and the current time in milliseconds, pulls decoded messages
//! and bytes to transmit, and calls [`Conn::handle_timeout`] at [`Conn::poll_timeout`].
//!
//! ```text
//!  host                                         daemon
//!  AwaitHello      ◀──── Hello ─────────────── (sent on connect)        AwaitHello
//!  Introduced      (owner answers with its nonce and proof)
//!  AwaitAuth       ───── Hello{nonce,proof} ─▶                          Introduced
//!                  ◀──── Auth{proof} ──────── (owner checks the host's proof, AwaitInit
//!                                              then proves its own)
//!  Authenticating  (owner checks the proof)
//!  Ready           ───── Init ──────────────▶                           Ready
//!                  ───── Task ──────────────▶  (one task in flight at a time)
//!                  ───── Cancel ────────────▶  (late cancels are ignored)
//!                  ◀──── Result ────────────   (`last` → Retiring)
//!  either side     ───── Exit ──────────────▶                           Closed
//! ```

use alloc::collections::VecDeque;
use alloc::string::ToString;
use alloc::vec::Vec;

use crate::decoder::{Decoder, Progress};
use crate::error::ProtoError;
use crate::frame::Kind;
use crate::msg::{ExitReason, Hello, Message, Role};
use crate::outbox::Outbox;

/// Frame size limit before the peer has introduced itself: a stranger cannot make us allocate.
pub const HANDSHAKE_MAX_FRAME: u64 = 64 * 1024;

/// Default frame size limit once the handshake is done.
pub const DEFAULT_MAX_FRAME: u64 = 16 << 30;

/// How long (ms) a large payload's memory is kept after it was transmitted, for the next one
/// received: long enough for a daemon between back-to-back tasks or a host waiting on a result,
/// short enough that an idle connection soon holds nothing.
pub const SPARE_KEEP: u64 = 1000;

/// Limits and timers, in milliseconds of the owner's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Largest frame body accepted after the handshake.
    pub max_frame: u64,
    /// The handshake must finish within this time of the connection's creation.
    pub handshake_timeout: Option<u64>,
    /// Send a heartbeat when nothing else was sent for this long.
    pub heartbeat_interval: Option<u64>,
    /// Fail the connection when nothing was received for this long.
    pub peer_timeout: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame: DEFAULT_MAX_FRAME,
            handshake_timeout: Some(30_000),
            heartbeat_interval: None,
            peer_timeout: None,
        }
    }
}

/// Where the connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for the peer's `Hello`.
    AwaitHello,
    /// The peer's `Hello` arrived. Host: answer with its `Hello` (the challenge).
    /// Daemon: answer with `Auth` (the proof).
    Introduced,
    /// Host: challenge sent; waiting for the daemon's `Auth`.
    AwaitAuth,
    /// Host: the proof arrived. Accept with `Init`, or refuse with `Exit`.
    Authenticating,
    /// Daemon: proof sent; waiting for `Init`.
    AwaitInit,
    /// Tasks may flow.
    Ready,
    /// The daemon sent its final (`last`) result; no more tasks.
    Retiring,
    /// An `Exit` was sent or received, or the connection failed.
    Closed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::AwaitHello => "AwaitHello",
            State::Introduced => "Introduced",
            State::AwaitAuth => "AwaitAuth",
            State::Authenticating => "Authenticating",
            State::AwaitInit => "AwaitInit",
            State::Ready => "Ready",
            State::Retiring => "Retiring",
            State::Closed => "Closed",
        }
    }
}

#[derive(Debug)]
pub struct Conn {
    role: Role,
    config: Config,
    state: State,
    decoder: Decoder,
    outbox: Outbox,
    events: VecDeque<Message>,
    /// The task currently at the daemon.
    in_flight: Option<u64>,
    error: Option<ProtoError>,
    hello_sent: bool,
    last_recv: u64,
    handshake_deadline: Option<u64>,
    next_heartbeat: Option<u64>,
    sent_since_heartbeat: bool,
}

impl Conn {
    /// The host end of a freshly accepted connection. It waits for the daemon's `Hello`.
    pub fn host(config: Config, now: u64) -> Self {
        Conn::new(Role::Host, config, now)
    }

    /// The daemon end of a freshly dialled connection; its `Hello` is queued at once, since the
    /// daemon speaks first.
    pub fn daemon(config: Config, now: u64, hello: Hello) -> Result<Self, ProtoError> {
        let mut conn = Conn::new(Role::Daemon, config, now);
        conn.outbox.push(Message::Hello(Hello { role: Role::Daemon, ..hello }))?;
        conn.hello_sent = true;
        Ok(conn)
    }

    fn new(role: Role, config: Config, now: u64) -> Self {
        Conn {
            role,
            config,
            state: State::AwaitHello,
            decoder: Decoder::new(HANDSHAKE_MAX_FRAME.min(config.max_frame)),
            outbox: Outbox::default(),
            events: VecDeque::new(),
            in_flight: None,
            error: None,
            hello_sent: false,
            last_recv: now,
            handshake_deadline: config.handshake_timeout.map(|t| now.saturating_add(t)),
            next_heartbeat: config.heartbeat_interval.map(|t| now.saturating_add(t)),
            sent_since_heartbeat: false,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The error that closed the connection, if one did.
    pub fn error(&self) -> Option<&ProtoError> {
        self.error.as_ref()
    }

    /// Changes the heartbeat interval and peer timeout from `now` on (a daemon adopts the
    /// interval its host asks for in `Init`).
    pub fn set_liveness(&mut self, heartbeat_interval: Option<u64>, peer_timeout: Option<u64>, now: u64) {
        self.config.heartbeat_interval = heartbeat_interval;
        self.config.peer_timeout = peer_timeout;
        self.next_heartbeat = heartbeat_interval.map(|t| now.saturating_add(t));
        self.last_recv = now;
    }

    /// The id of the task at the daemon, if any.
    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight
    }

    /// Feeds received bytes. On `Err` the connection is closed; an `Exit` telling the peer why
    /// may be waiting to be transmitted. Bytes arriving after an `Exit` are discarded.
    pub fn feed(&mut self, now: u64, mut bytes: &[u8]) -> Result<(), ProtoError> {
        if self.check_open()? {
            return Ok(());
        }
        if !bytes.is_empty() {
            self.last_recv = now;
        }
        while !bytes.is_empty() && self.error.is_none() {
            match self.decoder.decode(&mut bytes) {
                Ok(Some(msg)) => self.receive(msg)?,
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
            }
            if self.state == State::Closed {
                // Nothing is read after an Exit.
                break;
            }
        }
        Ok(())
    }

    /// Payload bytes still expected by the frame being received. When large, read straight
    /// into [`Self::recv_window`] instead of a buffer of your own.
    pub fn recv_payload_remaining(&self) -> usize {
        if self.is_readable() { self.decoder.payload_remaining() } else { 0 }
    }

    /// A slice of the payload being received, to read into directly; see [`Self::recv_commit`].
    pub fn recv_window(&mut self) -> Option<&mut [u8]> {
        if !self.is_readable() {
            return None;
        }
        self.decoder.window()
    }

    /// Payload bytes of the frame being received that have arrived so far.
    pub fn recv_payload_received(&self) -> usize {
        self.decoder.payload_received()
    }

    /// The uninitialised rest of the payload being received, to read into directly; see
    /// [`Self::recv_assume_filled`].
    pub fn recv_spare(&mut self) -> Option<&mut [core::mem::MaybeUninit<u8>]> {
        if !self.is_readable() {
            return None;
        }
        self.decoder.spare()
    }

    /// Records that `n` bytes were read into the last [`Self::recv_spare`] slice.
    ///
    /// # Safety
    /// As [`Decoder::assume_filled`]: those bytes were initialised and `n` is within the slice.
    #[allow(unsafe_code)]
    pub unsafe fn recv_assume_filled(&mut self, now: u64, n: usize) -> Result<(), ProtoError> {
        if self.check_open()? {
            return Ok(());
        }
        if n > 0 {
            self.last_recv = now;
        }
        // SAFETY: forwarded from the caller.
        match unsafe { self.decoder.assume_filled(n) } {
            Ok(Some(msg)) => self.receive(msg),
            Ok(None) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Records that `n` bytes were read into the last [`Self::recv_window`].
    pub fn recv_commit(&mut self, now: u64, n: usize) -> Result<(), ProtoError> {
        if self.check_open()? {
            return Ok(());
        }
        if n > 0 {
            self.last_recv = now;
        }
        match self.decoder.commit(n) {
            Ok(Some(msg)) => self.receive(msg),
            Ok(None) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Where the frame being received stands (for budgeting receive memory).
    pub fn recv_progress(&self) -> Progress {
        self.decoder.progress()
    }

    /// The owner leaves bytes unread in its socket for now (its receive budget is spent): the
    /// peer is not silent, so its timeout starts over.
    pub fn recv_held_back(&mut self, now: u64) {
        self.last_recv = now;
    }

    /// The peer closed its end. A frame cut short is an error; otherwise the connection just
    /// closes (also after an `Exit`).
    pub fn handle_eof(&mut self) -> Result<(), ProtoError> {
        if self.check_open()? {
            return Ok(());
        }
        let missing = self.decoder.missing();
        if missing > 0 && self.state != State::Closed {
            return Err(self.fail(ProtoError::Truncated { missing }));
        }
        self.state = State::Closed;
        Ok(())
    }

    /// The next decoded message.
    pub fn poll_event(&mut self) -> Option<Message> {
        self.events.pop_front()
    }

    /// Queues a message, checking that this end may send it now.
    pub fn send(&mut self, msg: Message) -> Result<(), ProtoError> {
        self.queue(msg, false)
    }

    fn queue(&mut self, msg: Message, return_payload: bool) -> Result<(), ProtoError> {
        if self.state == State::Closed {
            return Err(ProtoError::Closed);
        }
        let next = self.check_send(&msg)?;
        let kind = msg.kind();
        let task_id = match &msg {
            Message::Task { id, .. } => Some(*id),
            _ => None,
        };
        self.outbox.push_returning(msg, task_id.filter(|_| return_payload))?;
        self.after_send(kind, task_id);
        self.sent_since_heartbeat = true;
        self.state = next;
        Ok(())
    }

    /// Like [`Self::send`] for a `Task`, but its payload comes back from
    /// [`Self::take_returned`] once transmitted, so the host can hand the task to another daemon
    /// if this one leaves without evaluating it.
    pub fn send_task_returning(&mut self, msg: Message) -> Result<(), ProtoError> {
        if !matches!(msg, Message::Task { .. }) {
            return Err(ProtoError::InvalidState { action: "ask back a payload", state: "not a task" });
        }
        self.queue(msg, true)
    }

    /// A task payload sent with [`Self::send_task_returning`] that is no longer needed for
    /// transmission, with its task id, oldest first.
    pub fn take_returned(&mut self) -> Option<(u64, Vec<u8>)> {
        self.outbox.take_returned()
    }

    /// The connection failed while sending: the payloads of tasks sent with
    /// [`Self::send_task_returning`] that had not been wholly transmitted (so their daemon never
    /// had them), with their task ids. Nothing more is transmitted.
    pub fn reclaim_unsent(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.outbox.reclaim()
    }

    /// Fills `out` with the bytes to transmit, in order; returns how many slices were filled.
    pub fn transmit<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        self.outbox.slices(out)
    }

    /// Records that `n` bytes from [`Self::transmit`] were written at `now`. A large payload
    /// they finished is kept for [`SPARE_KEEP`] ms to receive the next one into (a daemon's task
    /// after its result, a host's result after its task), and freed then if none came.
    pub fn transmitted(&mut self, now: u64, n: usize) {
        let until = now.saturating_add(SPARE_KEEP);
        let decoder = &mut self.decoder;
        self.outbox.consume(n, |spent| decoder.keep_spare(spent, until));
    }

    /// Bytes waiting to be transmitted.
    pub fn pending_out(&self) -> usize {
        self.outbox.pending()
    }

    /// The next moment [`Self::handle_timeout`] must be called, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.state == State::Closed {
            return None;
        }
        let peer = self.config.peer_timeout.map(|t| self.last_recv.saturating_add(t));
        let spare = self.decoder.spare_deadline();
        [self.handshake_deadline, self.next_heartbeat, peer, spare].into_iter().flatten().min()
    }

    /// Runs the timers due at `now`: handshake and peer timeouts fail the connection; the
    /// heartbeat timer queues a `Heartbeat` when nothing else was sent in its interval.
    pub fn handle_timeout(&mut self, now: u64) -> Result<(), ProtoError> {
        self.decoder.expire_spare(now);
        if self.state == State::Closed {
            return Ok(());
        }
        if self.handshake_deadline.is_some_and(|d| now >= d) {
            return Err(self.fail(ProtoError::HandshakeTimeout));
        }
        if self.config.peer_timeout.is_some_and(|t| now >= self.last_recv.saturating_add(t)) {
            return Err(self.fail(ProtoError::PeerTimeout));
        }
        if let (Some(due), Some(interval)) = (self.next_heartbeat, self.config.heartbeat_interval)
            && now >= due
        {
            if !self.sent_since_heartbeat && self.hello_sent {
                self.outbox.push(Message::Heartbeat)?;
            }
            self.sent_since_heartbeat = false;
            self.next_heartbeat = Some(now.saturating_add(interval));
        }
        Ok(())
    }

    fn is_readable(&self) -> bool {
        self.state != State::Closed && self.error.is_none()
    }

    /// `Err` once the connection failed; `Ok(true)` when it closed cleanly by an `Exit` (input
    /// after that is discarded); `Ok(false)` while open.
    fn check_open(&self) -> Result<bool, ProtoError> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(self.state == State::Closed),
        }
    }

    /// Closes the connection with `e`, queuing an `Exit` so the peer learns why.
    fn fail(&mut self, e: ProtoError) -> ProtoError {
        if self.error.is_none() {
            self.error = Some(e.clone());
            let reason = match e {
                ProtoError::VersionMismatch { .. } => ExitReason::VersionMismatch,
                _ => ExitReason::ProtocolViolation,
            };
            // Best effort: a full outbox or encoding failure must not hide the original error.
            let _ = self.outbox.push(Message::Exit { reason, detail: e.to_string() });
            self.state = State::Closed;
        }
        e
    }

    /// Applies a message from the peer.
    fn receive(&mut self, msg: Message) -> Result<(), ProtoError> {
        let kind = msg.kind();
        let deliver = match (&msg, self.role, self.state) {
            (Message::Exit { .. }, _, _) => {
                self.state = State::Closed;
                true
            }
            (Message::Heartbeat, _, s) if s != State::AwaitHello => false,
            (Message::Hello(hello), _, State::AwaitHello) if hello.role != self.role => {
                self.state = State::Introduced;
                true
            }
            (Message::Auth { .. }, Role::Host, State::AwaitAuth) => {
                self.state = State::Authenticating;
                true
            }
            (Message::Init { .. }, Role::Daemon, State::AwaitInit) => {
                self.state = State::Ready;
                self.handshake_deadline = None;
                true
            }
            (Message::Task { id, .. }, Role::Daemon, State::Ready) if self.in_flight.is_none() => {
                self.in_flight = Some(*id);
                true
            }
            (Message::Cancel { id }, Role::Daemon, State::Ready | State::Retiring) => {
                // A cancel that crossed the result on the wire is stale: drop it.
                self.in_flight == Some(*id)
            }
            (Message::Result { id, last, .. }, Role::Host, State::Ready) if self.in_flight == Some(*id) => {
                self.in_flight = None;
                if *last {
                    self.state = State::Retiring;
                }
                true
            }
            (_, _, state) => {
                return Err(self.fail(ProtoError::Unexpected { kind, state: state.name() }));
            }
        };
        if deliver {
            self.events.push_back(msg);
        }
        Ok(())
    }

    /// The state after sending `msg`, or why it may not be sent.
    fn check_send(&self, msg: &Message) -> Result<State, ProtoError> {
        let refuse = |action| Err(ProtoError::InvalidState { action, state: self.state.name() });
        match (msg, self.role, self.state) {
            (Message::Exit { .. }, _, _) => Ok(State::Closed),
            (Message::Heartbeat, _, s) if self.hello_sent => Ok(s),
            (Message::Hello(h), Role::Host, State::Introduced) if h.role == Role::Host => {
                Ok(State::AwaitAuth)
            }
            (Message::Auth { .. }, Role::Daemon, State::Introduced) => Ok(State::AwaitInit),
            (Message::Init { .. }, Role::Host, State::Authenticating) => Ok(State::Ready),
            (Message::Task { .. }, Role::Host, State::Ready) if self.in_flight.is_none() => Ok(State::Ready),
            (Message::Cancel { id }, Role::Host, State::Ready) if self.in_flight == Some(*id) => {
                Ok(State::Ready)
            }
            (Message::Result { id, last, .. }, Role::Daemon, State::Ready) if self.in_flight == Some(*id) => {
                Ok(if *last { State::Retiring } else { State::Ready })
            }
            (m, _, _) => refuse(send_action(m.kind())),
        }
    }

    /// Applies the effects of a send that `check_send` allowed.
    fn after_send(&mut self, kind: Kind, msg_id: Option<u64>) {
        match kind {
            Kind::Hello => self.hello_sent = true,
            // A daemon answers only a host that proved itself (or one it chose to trust): from
            // then on the host's frames may be as large as configured.
            Kind::Auth => self.decoder.set_max_body(self.config.max_frame),
            Kind::Init => {
                self.decoder.set_max_body(self.config.max_frame);
                self.handshake_deadline = None;
            }
            Kind::Task => self.in_flight = msg_id,
            Kind::Result => self.in_flight = None,
            _ => {}
        }
    }
}

fn send_action(kind: Kind) -> &'static str {
    match kind {
        Kind::Hello => "send Hello",
        Kind::Init => "send Init",
        Kind::Task => "send Task",
        Kind::Result => "send Result",
        Kind::Cancel => "send Cancel",
        Kind::Exit => "send Exit",
        Kind::Heartbeat => "send Heartbeat",
        Kind::Auth => "send Auth",
    }
}
