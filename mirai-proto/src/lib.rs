//! The wire protocol of mirai, sans-IO.
//!
//! A host and its daemons exchange length-prefixed frames ([`frame`]) carrying [`Message`]s;
//! each end of a connection runs a [`Conn`] state machine that is fed received bytes and the
//! current time, and yields decoded messages and bytes to transmit. No sockets, no clock, no
//! threads: the runtime in `mirai-core` drives it, and the tests drive it with in-memory pairs.
//!
//! `PROTOCOL.md` at the repository root describes the wire format for other implementations.
#![no_std]
// One audited `unsafe fn` lets a runtime read payloads into uninitialised memory (see
// `Decoder::assume_filled`); nothing else in this crate uses unsafe code.
#![deny(unsafe_code)]

extern crate alloc;

pub mod codes;
pub mod conn;
pub mod decoder;
pub mod error;
pub mod frame;
pub mod msg;
pub mod outbox;

pub use codes::ErrorCode;
pub use conn::{Config, Conn, State};
pub use error::ProtoError;
pub use frame::{FrameHeader, HEADER_LEN, Kind};
pub use msg::{ExitReason, Hello, Identity, Message, PROTOCOL_VERSION, Role, Status};
