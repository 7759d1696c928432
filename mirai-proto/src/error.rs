//! Protocol errors. Every violation by a peer, and every misuse of the state machine by its
//! owner, is one of these values; nothing in this crate panics on input.

use core::fmt;

use crate::codes::ErrorCode;
use crate::frame::Kind;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// A header announced a body larger than the configured maximum. Nothing was allocated.
    FrameTooLarge { len: u64, max: u64 },
    /// The kind byte names no known message.
    UnknownKind(u8),
    /// Flag bits that this kind does not define.
    BadFlags { kind: Kind, flags: u8 },
    /// The control length exceeds the body length.
    BadLength { kind: Kind, body_len: u64, ctrl_len: u16 },
    /// A kind that never carries a payload arrived with one.
    UnexpectedPayload { kind: Kind },
    /// The control header did not decode.
    Malformed { kind: Kind },
    /// The control header decoded but left bytes over.
    TrailingBytes { kind: Kind },
    /// The peer speaks another protocol version.
    VersionMismatch { ours: u16, theirs: u16 },
    /// A message that the peer may not send in the connection's current state.
    Unexpected { kind: Kind, state: &'static str },
    /// The stream ended inside a frame.
    Truncated { missing: u64 },
    /// A frame's buffer could not be allocated.
    OutOfMemory { len: u64 },
    /// Nothing arrived from the peer within the configured timeout.
    PeerTimeout,
    /// The handshake did not complete within the configured timeout.
    HandshakeTimeout,
    /// The owner asked for something the state machine cannot do now.
    InvalidState { action: &'static str, state: &'static str },
    /// The connection is closed.
    Closed,
}

impl ProtoError {
    /// The NNG-numbered code that best describes this error to a binding.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::FrameTooLarge { .. } => ErrorCode::MessageTooLarge,
            ProtoError::OutOfMemory { .. } => ErrorCode::OutOfMemory,
            ProtoError::PeerTimeout | ProtoError::HandshakeTimeout => ErrorCode::TimedOut,
            ProtoError::Truncated { .. } => ErrorCode::ConnectionReset,
            ProtoError::InvalidState { .. } => ErrorCode::IncorrectState,
            ProtoError::Closed => ErrorCode::ObjectClosed,
            _ => ErrorCode::ProtocolError,
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max} bytes")
            }
            ProtoError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            ProtoError::BadFlags { kind, flags } => {
                write!(f, "flags {flags:#04x} are not defined for {kind:?} frames")
            }
            ProtoError::BadLength { kind, body_len, ctrl_len } => {
                write!(f, "{kind:?} frame: control length {ctrl_len} exceeds body length {body_len}")
            }
            ProtoError::UnexpectedPayload { kind } => {
                write!(f, "{kind:?} frames carry no payload, but one was sent")
            }
            ProtoError::Malformed { kind } => write!(f, "malformed {kind:?} control header"),
            ProtoError::TrailingBytes { kind } => {
                write!(f, "trailing bytes after the {kind:?} control header")
            }
            ProtoError::VersionMismatch { ours, theirs } => {
                write!(f, "protocol version mismatch: peer speaks version {theirs}, this side speaks {ours}")
            }
            ProtoError::Unexpected { kind, state } => {
                write!(f, "unexpected {kind:?} message in state {state}")
            }
            ProtoError::Truncated { missing } => {
                write!(f, "stream ended inside a frame ({missing} bytes missing)")
            }
            ProtoError::OutOfMemory { len } => {
                write!(f, "could not allocate {len} bytes for a frame")
            }
            ProtoError::PeerTimeout => f.write_str("peer sent nothing within the timeout"),
            ProtoError::HandshakeTimeout => f.write_str("handshake did not complete in time"),
            ProtoError::InvalidState { action, state } => {
                write!(f, "cannot {action} in state {state}")
            }
            ProtoError::Closed => f.write_str("connection is closed"),
        }
    }
}

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
impl std::error::Error for ProtoError {}
