//! Incremental frame decoder: accepts bytes in any chunking and yields whole messages.
//!
//! The header's length is checked against the limit before anything is allocated. The payload
//! buffer grows as bytes arrive, never past the declared size, so a peer that declares a huge
//! frame and sends little costs little. Large payloads can bypass the caller's read buffer
//! entirely through [`Decoder::window`] or [`Decoder::spare`].

use alloc::vec::Vec;
use core::mem::MaybeUninit;

use crate::error::ProtoError;
use crate::frame::{FrameHeader, HEADER_LEN};
use crate::msg::Message;

/// Bounds of the slice [`Decoder::window`] hands out. Its bytes are zero-filled each time, and a
/// reader may fill only part (rustls returns one 16 KiB record per read): the window follows
/// twice what the last read filled, so the zero-fill stays near the bytes actually read.
const WINDOW_MIN: usize = 16 << 10;
const WINDOW_MAX: usize = 1 << 20;

/// The payload buffer's first size; it doubles from there each time it fills, up to the declared
/// size. Doubling keeps the number of reallocations logarithmic, and large blocks are moved by
/// `mremap` rather than copied (glibc), so growing costs little over one exact allocation.
const GROW_FIRST: usize = 1 << 20;

/// Control buffer capacity kept between frames; a larger one, left by an unusual frame, is freed.
const CTRL_KEEP: usize = 1 << 10;

/// Buffers at least this large are worth keeping for the next payload (see
/// [`Decoder::keep_spare`]): a fresh one of that size is memory the kernel must fault in and
/// clear, while smaller ones the allocator reuses by itself.
pub const SPARE_MIN: usize = 1 << 20;

/// Where the frame being received stands, for a runtime that budgets its receive memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Frames completed so far, which numbers the frame being received.
    pub frame: u64,
    /// Its body length, once its header has arrived.
    pub body_len: Option<u64>,
    /// Bytes of it held in memory: its control part and payload received so far.
    pub held: usize,
    /// Bytes still to come before its header is complete (while in the header, a whole one
    /// between frames) or, after the header, before the frame is.
    pub missing: u64,
}

#[derive(Debug)]
enum Phase {
    Header { have: usize },
    Ctrl(FrameHeader),
    Payload { header: FrameHeader, need: usize },
}

#[derive(Debug)]
pub struct Decoder {
    max_body: u64,
    phase: Phase,
    header: [u8; HEADER_LEN],
    ctrl: Vec<u8>,
    payload: Vec<u8>,
    /// Start of the zero-filled region handed out by `window`, if one is outstanding.
    window_start: Option<usize>,
    /// Size of the next window, from the last read.
    window_len: usize,
    /// Frames completed.
    frames: u64,
    /// An empty buffer to receive the next large payload into, and when to free it if none
    /// takes it (see [`Self::keep_spare`]).
    spare: Option<(Vec<u8>, u64)>,
}

impl Decoder {
    pub fn new(max_body: u64) -> Self {
        Decoder {
            max_body,
            phase: Phase::Header { have: 0 },
            header: [0; HEADER_LEN],
            ctrl: Vec::new(),
            payload: Vec::new(),
            window_start: None,
            window_len: WINDOW_MIN,
            frames: 0,
            spare: None,
        }
    }

    /// Changes the limit for frames whose header has not been read yet.
    pub fn set_max_body(&mut self, max_body: u64) {
        self.max_body = max_body;
    }

    /// Consumes bytes from the front of `input` until one message is complete (returned) or the
    /// input is used up (`None`). Call again with the rest of the input for further messages.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Message>, ProtoError> {
        self.close_window(0);
        loop {
            match self.phase {
                Phase::Header { have } => {
                    let n = (HEADER_LEN - have).min(input.len());
                    self.header[have..have + n].copy_from_slice(&input[..n]);
                    *input = &input[n..];
                    if have + n < HEADER_LEN {
                        self.phase = Phase::Header { have: have + n };
                        return Ok(None);
                    }
                    self.start_frame()?;
                }
                Phase::Ctrl(header) => {
                    let want = usize::from(header.ctrl_len) - self.ctrl.len();
                    let n = want.min(input.len());
                    self.ctrl.extend_from_slice(&input[..n]);
                    *input = &input[n..];
                    if n < want {
                        return Ok(None);
                    }
                    // The header check guarantees the payload length fits in usize.
                    let need = header.payload_len() as usize;
                    self.phase = Phase::Payload { header, need };
                    self.adopt_spare(need);
                    self.grow_if_full()?;
                }
                Phase::Payload { need, .. } => {
                    let room = self.payload.capacity() - self.payload.len();
                    let n = (need - self.payload.len()).min(input.len()).min(room);
                    self.payload.extend_from_slice(&input[..n]);
                    *input = &input[n..];
                    if self.payload.len() == need {
                        return self.finish_frame().map(Some);
                    }
                    self.grow_if_full()?;
                    if input.is_empty() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Payload bytes still expected by the frame being read (0 outside a payload).
    pub fn payload_remaining(&self) -> usize {
        match self.phase {
            Phase::Payload { need, .. } => need - self.payload.len(),
            _ => 0,
        }
    }

    /// A slice of the payload buffer itself to read into, so large payloads skip the caller's
    /// read buffer. Only offered while a payload is being received. Follow with [`Self::commit`].
    pub fn window(&mut self) -> Option<&mut [u8]> {
        let remaining = self.payload_remaining();
        if remaining == 0 {
            return None;
        }
        self.close_window(0);
        let start = self.payload.len();
        let room = self.payload.capacity() - start;
        self.payload.resize(start + remaining.min(self.window_len).min(room), 0);
        self.window_start = Some(start);
        Some(&mut self.payload[start..])
    }

    /// Records that `n` bytes of the last [`Self::window`] were filled; returns the message if
    /// that completed it.
    pub fn commit(&mut self, n: usize) -> Result<Option<Message>, ProtoError> {
        if self.window_start.is_none() {
            return Err(ProtoError::InvalidState { action: "commit", state: "no open window" });
        }
        self.close_window(n);
        self.window_len = n.saturating_mul(2).clamp(WINDOW_MIN, WINDOW_MAX);
        if matches!(self.phase, Phase::Payload { need, .. } if need == self.payload.len()) {
            return self.finish_frame().map(Some);
        }
        self.grow_if_full()?;
        Ok(None)
    }

    /// Payload bytes of the current frame received so far.
    pub fn payload_received(&self) -> usize {
        match self.phase {
            Phase::Payload { .. } => self.window_start.unwrap_or(self.payload.len()),
            _ => 0,
        }
    }

    /// The free part of the payload buffer, uninitialised, for a runtime that can read into such
    /// memory directly (saving [`Self::window`]'s zero-fill); follow with [`Self::assume_filled`].
    /// It is never empty while payload is expected: the buffer grows when it fills.
    pub fn spare(&mut self) -> Option<&mut [MaybeUninit<u8>]> {
        let remaining = self.payload_remaining();
        if remaining == 0 {
            return None;
        }
        self.close_window(0);
        let spare = self.payload.spare_capacity_mut();
        let len = spare.len().min(remaining);
        Some(&mut spare[..len])
    }

    /// Records that the first `n` bytes of the last [`Self::spare`] slice were written; returns
    /// the message if that completed it.
    ///
    /// # Safety
    /// Those `n` bytes must have been initialised (for instance by a successful `read(2)`), and
    /// `n` must not exceed the slice's length.
    #[allow(unsafe_code)]
    pub unsafe fn assume_filled(&mut self, n: usize) -> Result<Option<Message>, ProtoError> {
        self.close_window(0);
        let remaining = self.payload_remaining();
        if n > remaining.min(self.payload.capacity() - self.payload.len()) {
            return Err(ProtoError::InvalidState { action: "fill more than the payload", state: "Payload" });
        }
        // SAFETY: the caller initialised these `n` bytes of the spare capacity, and the check
        // above keeps them within it.
        unsafe { self.payload.set_len(self.payload.len() + n) };
        if n == remaining {
            return self.finish_frame().map(Some);
        }
        self.grow_if_full()?;
        Ok(None)
    }

    /// Bytes still missing from a frame that has started, or 0 between frames.
    pub fn missing(&self) -> u64 {
        match self.phase {
            Phase::Header { have: 0 } => 0,
            Phase::Header { have } => (HEADER_LEN - have) as u64,
            Phase::Ctrl(h) => h.body_len - self.ctrl.len() as u64,
            Phase::Payload { header, .. } => {
                let filled = self.window_start.unwrap_or(self.payload.len());
                header.payload_len() - filled as u64
            }
        }
    }

    /// Where the frame being received stands.
    pub fn progress(&self) -> Progress {
        let (body_len, held, missing) = match self.phase {
            Phase::Header { have } => (None, 0, (HEADER_LEN - have) as u64),
            Phase::Ctrl(h) => (Some(h.body_len), self.ctrl.len(), self.missing()),
            Phase::Payload { header, .. } => {
                (Some(header.body_len), self.ctrl.len() + self.payload_received(), self.missing())
            }
        };
        Progress { frame: self.frames, body_len, held, missing }
    }

    /// Keeps `buf` (emptied) until `until` (the owner's clock) to receive a later payload of
    /// between half its capacity and all of it, so that payload lands in memory already mapped.
    /// One buffer is kept, the larger; one under [`SPARE_MIN`] is dropped.
    pub fn keep_spare(&mut self, mut buf: Vec<u8>, until: u64) {
        let cap = buf.capacity();
        if cap < SPARE_MIN || self.spare.as_ref().is_some_and(|(s, _)| s.capacity() >= cap) {
            return;
        }
        buf.clear();
        self.spare = Some((buf, until));
    }

    /// When the spare buffer is to be freed, if one is kept.
    pub fn spare_deadline(&self) -> Option<u64> {
        self.spare.as_ref().map(|&(_, until)| until)
    }

    /// Frees the spare buffer if its time is up at `now`.
    pub fn expire_spare(&mut self, now: u64) {
        if self.spare_deadline().is_some_and(|until| now >= until) {
            self.spare = None;
        }
    }

    /// A payload of `need` bytes starts: it takes the spare if that fits it, so it needs no
    /// growing either. The declared size can be trusted with memory already held.
    fn adopt_spare(&mut self, need: usize) {
        if need < SPARE_MIN || self.payload.capacity() >= need {
            return;
        }
        if let Some((spare, _)) =
            self.spare.take_if(|(s, _)| s.capacity() >= need && s.capacity() / 2 <= need)
        {
            self.payload = spare;
        }
    }

    /// Makes room once the payload buffer is full and more is expected: doubles it, from
    /// [`GROW_FIRST`], but never past the declared size.
    fn grow_if_full(&mut self) -> Result<(), ProtoError> {
        let Phase::Payload { need, .. } = self.phase else { return Ok(()) };
        let (len, cap) = (self.payload.len(), self.payload.capacity());
        if len < cap || len == need {
            return Ok(());
        }
        let target = cap.saturating_mul(2).max(GROW_FIRST).min(need);
        self.payload
            .try_reserve_exact(target - len)
            .map_err(|_| ProtoError::OutOfMemory { len: target as u64 })
    }

    fn close_window(&mut self, filled: usize) {
        if let Some(start) = self.window_start.take() {
            let len = (start + filled).min(self.payload.len());
            self.payload.truncate(len);
        }
    }

    fn start_frame(&mut self) -> Result<(), ProtoError> {
        let header = FrameHeader::decode(&self.header, self.max_body)?;
        self.phase = Phase::Ctrl(header);
        Ok(())
    }

    fn finish_frame(&mut self) -> Result<Message, ProtoError> {
        let Phase::Payload { header, .. } = self.phase else {
            return Err(ProtoError::InvalidState { action: "finish a frame", state: "no payload" });
        };
        self.phase = Phase::Header { have: 0 };
        self.frames += 1;
        let payload = core::mem::take(&mut self.payload);
        let msg = Message::decode(header, &self.ctrl, payload);
        self.ctrl.clear();
        self.ctrl.shrink_to(CTRL_KEEP);
        msg
    }
}
