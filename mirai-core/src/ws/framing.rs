//! RFC 6455 framing of an open WebSocket. tungstenite's message API would copy every payload
//! into a message and again into its output buffer, and zero-fill a 128 KiB read buffer on each
//! read; for a byte stream none of that is needed. Here the host (server) writes a frame's
//! header and the caller's own buffers in one `writev`, a daemon (client) copies and masks each
//! stretch once, and both ends read a large frame's payload straight into the caller's buffer.
//! tungstenite still parses and encodes the headers.
//!
//! Frame boundaries carry no meaning: the payloads of binary frames, in order, are the byte
//! stream. So a server may begin a frame for bytes the caller has not handed over yet: the
//! stream's next bytes are the frame's, whichever write brings them. Control frames (pong,
//! close) wait until the data frame being written has ended, never landing inside it.

use std::io::{self, Cursor, IoSlice, Read, Write};
use std::mem::MaybeUninit;

use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, FrameHeader};

use super::MESSAGE_MAX;
use crate::uninit::as_uninit;

/// Which end of the connection this is: a client masks every frame it sends (RFC 6455 §5.3),
/// a server never does, and each refuses frames masked the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Bytes read ahead of the caller, to find headers and to serve small reads: more than a
/// header with a whole control frame (139 bytes) needs.
const READ_AHEAD: usize = 16 << 10;

/// The payload a client puts in one frame. It is copied and masked into a buffer of this size,
/// which stays in cache.
const CLIENT_FRAME: usize = 256 << 10;

/// A read of a frame's payload at least this large goes straight into the caller's buffer.
const DIRECT_MIN: usize = 4 << 10;

/// The largest payload of a control frame (RFC 6455 §5.5).
const CONTROL_MAX: usize = 125;

/// A stream that also reads into uninitialised memory: then a large payload reaches its
/// buffer without being copied or zero-filled first.
pub trait ReadUninit: Read {
    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize>;

    /// Whether a read that gave `n` of the `asked` bytes found the socket empty, with nothing
    /// it read still held in this stream.
    fn drained_after(&self, n: usize, asked: usize) -> bool;
}

/// An open WebSocket over `S`, read and written as a byte stream.
pub struct Framed<S> {
    inner: S,
    side: Side,
    /// Read ahead: `ahead[start..end]` is not yet consumed. Allocated on the first read.
    ahead: Box<[u8]>,
    start: usize,
    end: usize,
    /// The data frame being read: payload bytes left, its mask and how far into it we are.
    frame_left: u64,
    frame_mask: Option<[u8; 4]>,
    frame_pos: usize,
    /// A fragmented binary message is open, and the bytes it has brought so far.
    in_message: bool,
    message_len: u64,
    /// The peer closed the WebSocket (or broke its rules): reads give the end of the stream.
    read_closed: bool,
    /// The last read of `inner` found the socket empty (`ReadUninit::drained_after`).
    inner_drained: bool,
    /// Frames begun and not yet written: whole frames on a client; on a server, control frames
    /// and the header of the data frame being written.
    out: Vec<u8>,
    out_pos: usize,
    /// Server: payload of the current data frame still to come from the caller's buffers.
    payload_left: usize,
    /// Server: control frames waiting for the current data frame to end.
    control: Vec<u8>,
    /// Our close frame is queued: nothing may follow it.
    closing: bool,
    masks: Masks,
}

impl<S: ReadUninit + Write> Framed<S> {
    /// `tail`: bytes already read past the upgrade's HTTP head, the start of the frames.
    pub fn new(inner: S, side: Side, tail: &[u8]) -> Self {
        let mut framed = Framed {
            inner,
            side,
            ahead: Box::default(),
            start: 0,
            end: 0,
            frame_left: 0,
            frame_mask: None,
            frame_pos: 0,
            in_message: false,
            message_len: 0,
            read_closed: false,
            inner_drained: false,
            out: Vec::new(),
            out_pos: 0,
            payload_left: 0,
            control: Vec::new(),
            closing: false,
            masks: Masks::default(),
        };
        if !tail.is_empty() {
            framed.ahead = vec![0; READ_AHEAD.max(tail.len())].into_boxed_slice();
            framed.ahead[..tail.len()].copy_from_slice(tail);
            framed.end = tail.len();
        }
        framed
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Whether the socket was empty at the last read of it and nothing read since is left
    /// ahead here: then bytes still to come (of a frame begun or the next one) raise an event.
    /// A close frame is never in question: a read that gives bytes stops before the next
    /// frame's header, so a close read with them is still ahead.
    pub fn drained(&self) -> bool {
        self.inner_drained && self.start == self.end
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Reads the byte stream: binary frames' payloads, in order. Control frames are dealt with
    /// on the way (a ping answered, a close answered and ending the stream). A frame breaking
    /// the rules is refused with a close frame saying why, and an error.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_uninit(as_uninit(buf))
    }

    /// [`Self::read`] into uninitialised memory.
    pub fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.read_closed {
                return Ok(0);
            }
            if self.frame_left > 0 {
                return self.read_payload(buf);
            }
            // At the end of the stream (a peer, or a restarted proxy, that just closed the
            // socket), between frames or inside one: the protocol above judges what it lacks.
            if !self.next_header()? && self.fill()? == 0 {
                return Ok(0);
            }
        }
    }

    /// Reads what there is of the current data frame's payload, up to `buf`'s size.
    fn read_payload(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        // A frame holds at most MESSAGE_MAX bytes, so this fits a usize.
        let want = buf.len().min(self.frame_left as usize);
        let n = if self.end > self.start {
            let n = want.min(self.end - self.start);
            // SAFETY: `n` bytes, within both buffers, which are distinct.
            unsafe {
                std::ptr::copy_nonoverlapping(self.ahead[self.start..].as_ptr(), buf.as_mut_ptr().cast(), n)
            };
            self.start += n;
            n
        } else if want >= DIRECT_MIN {
            let n = self.inner.read_uninit(&mut buf[..want])?;
            self.inner_drained = self.inner.drained_after(n, want);
            n
        } else {
            if self.fill()? == 0 {
                return Ok(0);
            }
            return self.read_payload(buf);
        };
        // SAFETY: the first `n` bytes were written just now.
        let filled = unsafe { &mut *(&mut buf[..n] as *mut [MaybeUninit<u8>] as *mut [u8]) };
        if let Some(mask) = self.frame_mask {
            apply_mask(filled, mask, self.frame_pos);
        }
        self.frame_pos += n;
        self.frame_left -= n as u64;
        Ok(n)
    }

    /// Reads more into the read-ahead buffer; `Ok(0)` at the end of the stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.ahead.is_empty() {
            self.ahead = vec![0; READ_AHEAD].into_boxed_slice();
        }
        if self.start > 0 {
            self.ahead.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // Never full here: what must be held at once (a header, a control frame) is small.
        let asked = self.ahead.len() - self.end;
        let n = self.inner.read(&mut self.ahead[self.end..])?;
        self.inner_drained = self.inner.drained_after(n, asked);
        self.end += n;
        Ok(n)
    }

    /// Takes the next frame's header from the bytes read ahead. A data frame's payload then
    /// belongs to the caller; a control frame is dealt with here, whole. `false` when more
    /// bytes are needed first.
    fn next_header(&mut self) -> io::Result<bool> {
        let mut cursor = Cursor::new(&self.ahead[self.start..self.end]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(false),
            Err(e) => return Err(self.refuse(CloseCode::Protocol, format!("WebSocket: {e}"))),
        };
        let header_len = cursor.position() as usize;
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(self.refuse(CloseCode::Protocol, "WebSocket frame with reserved bits set".into()));
        }
        if header.mask.is_some() != (self.side == Side::Server) {
            let why = match self.side {
                Side::Server => "WebSocket: an unmasked frame from a client",
                Side::Client => "WebSocket: a masked frame from a server",
            };
            return Err(self.refuse(CloseCode::Protocol, why.into()));
        }
        match header.opcode {
            OpCode::Control(control) => {
                if !header.is_final || len > CONTROL_MAX as u64 {
                    let why = "WebSocket: a fragmented or oversized control frame".into();
                    return Err(self.refuse(CloseCode::Protocol, why));
                }
                let len = len as usize;
                if self.end - self.start < header_len + len {
                    return Ok(false);
                }
                let mut payload = [0u8; CONTROL_MAX];
                let at = self.start + header_len;
                payload[..len].copy_from_slice(&self.ahead[at..at + len]);
                self.start = at + len;
                if let Some(mask) = header.mask {
                    apply_mask(&mut payload[..len], mask, 0);
                }
                self.on_control(control, &payload[..len])?;
            }
            OpCode::Data(data) => {
                match data {
                    Data::Binary if !self.in_message => self.message_len = 0,
                    Data::Continue if self.in_message => {}
                    Data::Text => {
                        let why = "WebSocket text message refused: mirai speaks binary messages only";
                        return Err(self.refuse(CloseCode::Unsupported, why.into()));
                    }
                    Data::Binary => {
                        let why = "WebSocket: a new message inside a fragmented one".into();
                        return Err(self.refuse(CloseCode::Protocol, why));
                    }
                    Data::Continue => {
                        let why = "WebSocket: a continuation frame with no message to continue".into();
                        return Err(self.refuse(CloseCode::Protocol, why));
                    }
                    Data::Reserved(op) => {
                        return Err(
                            self.refuse(CloseCode::Protocol, format!("WebSocket: reserved opcode {op}"))
                        );
                    }
                }
                self.message_len += len;
                if self.message_len > MESSAGE_MAX as u64 {
                    let why = format!(
                        "WebSocket message refused: {} bytes or more, over the limit (mirai sends \
                         messages of at most {MESSAGE_MAX} bytes)",
                        self.message_len
                    );
                    return Err(self.refuse(CloseCode::Size, why));
                }
                self.in_message = !header.is_final;
                self.start += header_len;
                self.frame_left = len;
                self.frame_mask = header.mask;
                self.frame_pos = 0;
            }
        }
        Ok(true)
    }

    fn on_control(&mut self, control: Control, payload: &[u8]) -> io::Result<()> {
        match control {
            // Nothing may follow our close frame, a pong included.
            Control::Ping if self.closing => Ok(()),
            Control::Ping => {
                self.queue_control(Control::Pong, payload);
                self.push_out()
            }
            Control::Pong => Ok(()),
            Control::Close => {
                self.read_closed = true;
                let frame = match payload {
                    [] => None,
                    [_] => {
                        return Err(
                            self.refuse(CloseCode::Protocol, "WebSocket: a one-byte close frame".into())
                        );
                    }
                    [hi, lo, reason @ ..] => Some(CloseFrame {
                        code: CloseCode::from(u16::from_be_bytes([*hi, *lo])),
                        reason: String::from_utf8_lossy(reason).into_owned().into(),
                    }),
                };
                // The answer echoes the code (RFC 6455 §5.5.1) unless it is one no endpoint may
                // send, if the socket takes it.
                let code = frame.as_ref().map(|f| f.code).filter(|c| c.is_allowed());
                self.close(code, "");
                let _ = self.push_out();
                super::closed_by_peer(frame).map(drop)
            }
            Control::Reserved(op) => {
                Err(self.refuse(CloseCode::Protocol, format!("WebSocket: reserved opcode {op}")))
            }
        }
    }

    /// Closes the WebSocket with `code`, telling the peer why (best effort), and returns the
    /// error for our own report.
    fn refuse(&mut self, code: CloseCode, why: String) -> io::Error {
        self.read_closed = true;
        // Whole characters within the 123 bytes a close frame has for a reason.
        let mut cut = why.len().min(CONTROL_MAX - 2);
        while !why.is_char_boundary(cut) {
            cut -= 1;
        }
        self.close(Some(code), &why[..cut]);
        let _ = self.push_out();
        io::Error::new(io::ErrorKind::InvalidData, why)
    }

    /// Queues our close frame (once), with `code` and `reason` (at most 123 bytes).
    pub fn close(&mut self, code: Option<CloseCode>, reason: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        let mut payload = Vec::with_capacity(2 + reason.len());
        if let Some(code) = code {
            payload.extend(u16::from(code).to_be_bytes());
            payload.extend(reason.as_bytes());
        }
        self.queue_control(Control::Close, &payload);
    }

    /// Sends a ping (nothing once closing); `WouldBlock` is not an error, the frame waits.
    pub fn ping(&mut self) -> io::Result<()> {
        if !self.closing {
            self.queue_control(Control::Ping, &[]);
        }
        self.push_out()
    }

    /// Queues a control frame: after the data frame being written, if there is one.
    fn queue_control(&mut self, control: Control, payload: &[u8]) {
        let mask = (self.side == Side::Client).then(|| self.masks.next());
        let header = FrameHeader { opcode: OpCode::Control(control), mask, ..FrameHeader::default() };
        let queue = if self.payload_left > 0 { &mut self.control } else { &mut self.out };
        let at = queue.len();
        encode(&header, payload.len(), queue);
        queue.extend_from_slice(payload);
        if let Some(mask) = mask {
            let body = at + header.len(payload.len() as u64);
            apply_mask(&mut queue[body..], mask, 0);
        }
    }

    /// Writes what the socket takes of the frames begun, not minding a full socket.
    fn push_out(&mut self) -> io::Result<()> {
        match self.write_out() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    /// Writes the frames begun; `WouldBlock` while the socket cannot take them all.
    fn write_out(&mut self) -> io::Result<()> {
        if self.payload_left == 0 && !self.control.is_empty() {
            self.out.append(&mut self.control);
        }
        while self.out_pos < self.out.len() {
            match self.inner.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Writes the next stretch of the byte stream, as a client or a server does.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.side {
            Side::Client => self.write_masked(bufs),
            Side::Server => self.write_direct(bufs),
        }
    }

    /// Between data frames: writes the frames begun, then encodes the header of a binary frame
    /// for the next stretch of `bufs`, at most `max` bytes. Returns its length (0: nothing to
    /// send) and, on a client, its mask.
    fn begin_frame(&mut self, bufs: &[IoSlice<'_>], max: usize) -> io::Result<(usize, Option<[u8; 4]>)> {
        self.write_out()?;
        if self.closing {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(max);
        if total == 0 {
            return Ok((0, None));
        }
        let mask = (self.side == Side::Client).then(|| self.masks.next());
        // (FrameHeader's default is a close frame.)
        let header = FrameHeader { opcode: OpCode::Data(Data::Binary), mask, ..FrameHeader::default() };
        encode(&header, total, &mut self.out);
        Ok((total, mask))
    }

    /// Client: frames older ones first, then copies the next stretch of `bufs` into one masked
    /// frame, and reports it taken even if the socket is full (`flush` finishes it).
    fn write_masked(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let (total, Some(mask)) = self.begin_frame(bufs, CLIENT_FRAME)? else { return Ok(0) };
        let body = self.out.len();
        let mut left = total;
        for b in bufs {
            let take = b.len().min(left);
            self.out.extend_from_slice(&b[..take]);
            left -= take;
        }
        apply_mask(&mut self.out[body..], mask, 0);
        self.push_out()?;
        Ok(total)
    }

    /// Server: writes a frame's header and the caller's buffers in one `writev`, beginning a
    /// new frame for as many bytes as `bufs` holds when the last one has ended.
    fn write_direct(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            if self.payload_left == 0 {
                let (total, _) = self.begin_frame(bufs, MESSAGE_MAX)?;
                if total == 0 {
                    return Ok(0);
                }
                self.payload_left = total;
            }
            let head = &self.out[self.out_pos..];
            let mut iov = [IoSlice::new(&[]); 65];
            let mut k = 0;
            if !head.is_empty() {
                iov[0] = IoSlice::new(head);
                k = 1;
            }
            let mut room = self.payload_left;
            for b in bufs {
                if room == 0 || k == iov.len() {
                    break;
                }
                let take = b.len().min(room);
                iov[k] = IoSlice::new(&b[..take]);
                room -= take;
                k += 1;
            }
            let n = match self.inner.write_vectored(&iov[..k]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let of_head = n.min(head.len());
            self.out_pos += of_head;
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
            }
            let payload = n - of_head;
            self.payload_left -= payload;
            if payload > 0 {
                return Ok(payload);
            }
        }
    }

    /// Writes the frames begun (a header, control frames, a client's buffered frame), then
    /// whatever the stream under holds; `WouldBlock` while the socket is full.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.inner.flush()
    }
}

/// Appends `header` for a payload of `len` bytes.
fn encode(header: &FrameHeader, len: usize, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = header.format(len as u64, out);
}

/// XORs `buf` with `mask`, `buf` starting `offset` bytes into the masked payload.
fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let key: [u8; 8] = std::array::from_fn(|i| mask[(offset + i) % 4]);
    let word = u64::from_ne_bytes(key);
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(w);
        w.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (b, k) in words.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// Masking keys from the operating system's CSPRNG, 16 at a time, so a small frame does not
/// cost a system call.
struct Masks {
    pool: [u8; 64],
    used: usize,
}

impl Default for Masks {
    fn default() -> Self {
        Masks { pool: [0; 64], used: 64 }
    }
}

impl Masks {
    fn next(&mut self) -> [u8; 4] {
        if self.used == self.pool.len() {
            // Without a CSPRNG the keys would be guessable, which masking exists to prevent.
            getrandom::getrandom(&mut self.pool)
                .expect("the operating system's random number generator failed");
            self.used = 0;
        }
        let key = [
            self.pool[self.used],
            self.pool[self.used + 1],
            self.pool[self.used + 2],
            self.pool[self.used + 3],
        ];
        self.used += 4;
        key
    }
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
