//! The messages exchanged between a host and its daemons, and their encoding: a frame header,
//! a postcard control header, then the payload bytes appended raw.

use alloc::string::String;
use alloc::vec::Vec;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ProtoError;
use crate::frame::{FrameHeader, HEADER_LEN, Kind, flags};

/// The protocol version this crate speaks. Carried first in every `Hello`.
pub const PROTOCOL_VERSION: u16 = 2;

/// Which end of a connection a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Host,
    Daemon,
}

/// Who a peer is, for logs and status listings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub pid: u32,
    pub hostname: String,
    /// Free text naming the implementation, e.g. `mirai-daemon 0.1.0`.
    pub label: String,
}

/// The first message on a connection, in each direction. The daemon speaks first (so a daemon
/// speaking plain TCP to a TLS port, or the reverse, fails at once) with its nonce in `auth`; the
/// host answers with its own nonce and its proof of the secret, which the daemon checks before
/// it answers with its own proof in [`Message::Auth`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub role: Role,
    /// Daemon: who it is. Host: empty, since a host tells nothing to a peer it has not
    /// authenticated.
    pub identity: Identity,
    /// Daemon: a fresh nonce. Host: its nonce followed by its proof (empty when authentication
    /// is off).
    pub auth: Vec<u8>,
}

/// How an evaluation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The payload is the value.
    Value,
    /// Evaluation raised an error; the payload is the binding's error object.
    Error,
    /// Evaluation was interrupted (cancelled); the payload may be empty.
    Interrupted,
}

/// Why a peer is closing the connection. Only ever appended to, so that an `Exit` remains
/// readable by peers of other versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReason {
    /// Host to daemon: exit now (`daemons(NULL)`, or after the daemon's final result).
    Shutdown,
    /// The peer failed authentication: host to daemon, or daemon to a host that could not
    /// prove it holds the secret.
    AuthFailed,
    /// The peer speaks another protocol version.
    VersionMismatch,
    /// The peer broke the protocol.
    ProtocolViolation,
    /// Daemon to host: idle time limit reached.
    IdleTime,
    /// Daemon to host: wall time limit reached.
    WallTime,
    /// Daemon to host: task limit reached.
    MaxTasks,
    /// Daemon to host: leaving for another reason (e.g. a signal).
    Leaving,
    /// Host to daemon: the host is closing. Unlike `Shutdown`, daemons set to outlive their
    /// host stay and redial.
    Closing,
}

/// One protocol message with its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    /// Host to daemon, once, before any task: the daemon's id, its RNG stream (6 MRG32k3a state
    /// words) and the binding's opaque init blob.
    Init {
        daemon_id: u64,
        rng_stream: [u32; 6],
        blob: Vec<u8>,
    },
    /// Host to daemon: evaluate `payload`.
    Task {
        id: u64,
        everywhere: bool,
        payload: Vec<u8>,
    },
    /// Daemon to host: the outcome of task `id`. `last` marks the daemon's final reply.
    Result {
        id: u64,
        status: Status,
        last: bool,
        payload: Vec<u8>,
    },
    /// Host to daemon: interrupt task `id` if it is still running.
    Cancel {
        id: u64,
    },
    /// Either way: the sender is closing the connection.
    Exit {
        reason: ExitReason,
        detail: String,
    },
    /// Either way: keeps an otherwise idle connection alive.
    Heartbeat,
    /// Daemon to host: the proof answering the host's challenge.
    Auth {
        proof: Vec<u8>,
    },
}

#[derive(Serialize, Deserialize)]
struct InitCtrl {
    daemon_id: u64,
    rng_stream: [u32; 6],
}

#[derive(Serialize, Deserialize)]
struct ResultCtrl {
    id: u64,
    status: Status,
}

#[derive(Serialize, Deserialize)]
struct ExitCtrl {
    reason: ExitReason,
    detail: String,
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::Init { .. } => Kind::Init,
            Message::Task { .. } => Kind::Task,
            Message::Result { .. } => Kind::Result,
            Message::Cancel { .. } => Kind::Cancel,
            Message::Exit { .. } => Kind::Exit,
            Message::Heartbeat => Kind::Heartbeat,
            Message::Auth { .. } => Kind::Auth,
        }
    }

    /// Appends the frame header and control header to `head` and returns the payload, which
    /// the caller transmits right after without copying it.
    pub fn encode(self, head: &mut Vec<u8>) -> Result<Vec<u8>, ProtoError> {
        let kind = self.kind();
        let start = head.len();
        head.extend_from_slice(&[0u8; HEADER_LEN]);
        let (flag_bits, payload) = match self {
            Message::Hello(hello) => {
                put(head, &PROTOCOL_VERSION, kind)?;
                put(head, &hello, kind)?;
                (0, Vec::new())
            }
            Message::Init { daemon_id, rng_stream, blob } => {
                put(head, &InitCtrl { daemon_id, rng_stream }, kind)?;
                (0, blob)
            }
            Message::Task { id, everywhere, payload } => {
                put(head, &id, kind)?;
                (if everywhere { flags::EVERYWHERE } else { 0 }, payload)
            }
            Message::Result { id, status, last, payload } => {
                put(head, &ResultCtrl { id, status }, kind)?;
                (if last { flags::LAST } else { 0 }, payload)
            }
            Message::Cancel { id } => {
                put(head, &id, kind)?;
                (0, Vec::new())
            }
            Message::Exit { reason, detail } => {
                put(head, &ExitCtrl { reason, detail }, kind)?;
                (0, Vec::new())
            }
            Message::Heartbeat => (0, Vec::new()),
            Message::Auth { proof } => {
                put(head, &proof, kind)?;
                (0, Vec::new())
            }
        };
        let ctrl_len = head.len() - start - HEADER_LEN;
        let Ok(ctrl_len) = u16::try_from(ctrl_len) else {
            head.truncate(start);
            return Err(ProtoError::InvalidState {
                action: "encode a control header over 65535 bytes",
                state: "any",
            });
        };
        let header = FrameHeader {
            body_len: u64::from(ctrl_len) + payload.len() as u64,
            kind,
            flags: flag_bits,
            ctrl_len,
        };
        head[start..start + HEADER_LEN].copy_from_slice(&header.encode());
        Ok(payload)
    }

    /// Builds a message from a validated header, its control bytes and its payload.
    pub fn decode(header: FrameHeader, ctrl: &[u8], payload: Vec<u8>) -> Result<Self, ProtoError> {
        let kind = header.kind;
        Ok(match kind {
            Kind::Hello => {
                // The version comes first and is read alone, so that a peer of another version
                // gets a clear mismatch instead of a decode error on fields that changed.
                let (theirs, rest) =
                    postcard::take_from_bytes::<u16>(ctrl).map_err(|_| ProtoError::Malformed { kind })?;
                if theirs != PROTOCOL_VERSION {
                    return Err(ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs });
                }
                Message::Hello(take_all(rest, kind)?)
            }
            Kind::Init => {
                let c: InitCtrl = take_all(ctrl, kind)?;
                Message::Init { daemon_id: c.daemon_id, rng_stream: c.rng_stream, blob: payload }
            }
            Kind::Task => Message::Task {
                id: take_all(ctrl, kind)?,
                everywhere: header.flags & flags::EVERYWHERE != 0,
                payload,
            },
            Kind::Result => {
                let c: ResultCtrl = take_all(ctrl, kind)?;
                Message::Result { id: c.id, status: c.status, last: header.flags & flags::LAST != 0, payload }
            }
            Kind::Cancel => Message::Cancel { id: take_all(ctrl, kind)? },
            Kind::Exit => {
                let c: ExitCtrl = take_all(ctrl, kind)?;
                Message::Exit { reason: c.reason, detail: c.detail }
            }
            Kind::Heartbeat => {
                if !ctrl.is_empty() {
                    return Err(ProtoError::TrailingBytes { kind });
                }
                Message::Heartbeat
            }
            Kind::Auth => Message::Auth { proof: take_all(ctrl, kind)? },
        })
    }
}

fn put<T: Serialize>(head: &mut Vec<u8>, value: &T, kind: Kind) -> Result<(), ProtoError> {
    // Serializing our own plain structs into a Vec cannot fail; report it as malformed rather
    // than panic should a future type make it possible.
    postcard::to_extend(value, Appender(head)).map(|_| ()).map_err(|_| ProtoError::Malformed { kind })
}

/// Lets postcard append straight into the frame buffer, with no intermediate allocation.
struct Appender<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Appender<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

fn take_all<T: DeserializeOwned>(bytes: &[u8], kind: Kind) -> Result<T, ProtoError> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|_| ProtoError::Malformed { kind })?;
    if !rest.is_empty() {
        return Err(ProtoError::TrailingBytes { kind });
    }
    Ok(value)
}
