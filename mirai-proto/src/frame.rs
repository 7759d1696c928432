//! The fixed frame header. Its layout never changes between protocol versions, so a peer of any
//! version can always find frame boundaries and read a `Hello`'s version field.
//!
//! ```text
//! offset size field
//! 0      8    body length, u64 LE (= control length + payload length)
//! 8      1    kind
//! 9      1    flags (meaning depends on kind; unknown bits are an error)
//! 10     2    control length, u16 LE (postcard-encoded control header)
//! 12     ..   control header, then payload bytes (raw, never through postcard)
//! ```

use crate::error::ProtoError;

/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 12;

/// What a frame carries. Values are stable on the wire; new kinds are only ever appended.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Hello = 1,
    Init = 2,
    Task = 3,
    Result = 4,
    Cancel = 5,
    Exit = 6,
    Heartbeat = 7,
    Auth = 8,
}

impl Kind {
    /// The kind for a wire byte.
    pub fn from_u8(byte: u8) -> Result<Self, ProtoError> {
        Ok(match byte {
            1 => Kind::Hello,
            2 => Kind::Init,
            3 => Kind::Task,
            4 => Kind::Result,
            5 => Kind::Cancel,
            6 => Kind::Exit,
            7 => Kind::Heartbeat,
            8 => Kind::Auth,
            other => return Err(ProtoError::UnknownKind(other)),
        })
    }

    /// Flag bits this kind may carry.
    fn allowed_flags(self) -> u8 {
        match self {
            Kind::Task => flags::EVERYWHERE,
            Kind::Result => flags::LAST,
            _ => 0,
        }
    }

    /// Whether frames of this kind may carry payload bytes after the control header.
    pub fn has_payload(self) -> bool {
        matches!(self, Kind::Init | Kind::Task | Kind::Result)
    }
}

/// Flag bits, per kind.
pub mod flags {
    /// On `Task`: one copy of an `everywhere` broadcast (every copy carries it).
    pub const EVERYWHERE: u8 = 0x01;
    /// On `Result`: the daemon is retiring (maxtasks or walltime reached) after this reply.
    pub const LAST: u8 = 0x01;
}

/// A decoded, validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub body_len: u64,
    pub kind: Kind,
    pub flags: u8,
    pub ctrl_len: u16,
}

impl FrameHeader {
    /// Payload length implied by the header.
    pub fn payload_len(&self) -> u64 {
        self.body_len - u64::from(self.ctrl_len)
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&self.body_len.to_le_bytes());
        out[8] = self.kind as u8;
        out[9] = self.flags;
        out[10..12].copy_from_slice(&self.ctrl_len.to_le_bytes());
        out
    }

    /// Parses and validates a header. `max_body` is checked here, before the caller allocates.
    pub fn decode(bytes: &[u8; HEADER_LEN], max_body: u64) -> Result<Self, ProtoError> {
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[..8]);
        let body_len = u64::from_le_bytes(len);
        let kind = Kind::from_u8(bytes[8])?;
        let flags = bytes[9];
        let ctrl_len = u16::from_le_bytes([bytes[10], bytes[11]]);
        if body_len > max_body {
            return Err(ProtoError::FrameTooLarge { len: body_len, max: max_body });
        }
        if usize::try_from(body_len).is_err() {
            return Err(ProtoError::FrameTooLarge { len: body_len, max: usize::MAX as u64 });
        }
        if flags & !kind.allowed_flags() != 0 {
            return Err(ProtoError::BadFlags { kind, flags });
        }
        if u64::from(ctrl_len) > body_len {
            return Err(ProtoError::BadLength { kind, body_len, ctrl_len });
        }
        if !kind.has_payload() && u64::from(ctrl_len) != body_len {
            return Err(ProtoError::UnexpectedPayload { kind });
        }
        Ok(FrameHeader { body_len, kind, flags, ctrl_len })
    }
}
