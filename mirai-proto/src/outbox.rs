//! Bytes waiting to be transmitted, kept as a list of segments for vectored writes.
//!
//! Frame headers and small payloads are packed into one shared buffer, so a burst of small
//! messages goes out in one write; large payloads stay in their own buffers and are never copied.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::error::ProtoError;
use crate::msg::Message;

/// Payloads up to this size are copied next to their header instead of taking their own
/// segment: the copy is cheaper than another iovec and another allocation kept alive.
const INLINE_MAX: usize = 4096;

/// Shared-buffer capacity kept once everything is transmitted: a message inlined with its header
/// fits without reallocating, and what a burst grew beyond that is returned.
const HEAD_KEEP: usize = 2 * INLINE_MAX;

#[derive(Debug)]
enum Seg {
    /// `head[start..end]`.
    Head { start: usize, end: usize },
    /// A payload of its own, with the task id to hand it back under once transmitted.
    Payload(Vec<u8>, Option<u64>),
}

#[derive(Debug, Default)]
pub struct Outbox {
    head: Vec<u8>,
    segs: VecDeque<Seg>,
    /// Bytes of the front segment already transmitted.
    offset: usize,
    /// Bytes queued and not yet transmitted.
    pending: usize,
    /// Task payloads asked back, by task id, once the outbox no longer needs them.
    returned: VecDeque<(u64, Vec<u8>)>,
}

impl Outbox {
    pub fn push(&mut self, msg: Message) -> Result<(), ProtoError> {
        self.push_returning(msg, None)
    }

    /// Queues `msg`; with `task` set, its payload is handed back once transmitted (see
    /// [`Self::take_returned`]).
    pub fn push_returning(&mut self, msg: Message, task: Option<u64>) -> Result<(), ProtoError> {
        let start = self.head.len();
        let mut payload = msg.encode(&mut self.head)?;
        if payload.len() <= INLINE_MAX {
            self.head.extend_from_slice(&payload);
            if let Some(id) = task {
                // Copied next to its header already: the original is free to go back.
                self.returned.push_back((id, core::mem::take(&mut payload)));
            }
        }
        let end = self.head.len();
        self.pending += end - start;
        match self.segs.back_mut() {
            Some(Seg::Head { end: last_end, .. }) if *last_end == start => *last_end = end,
            _ => self.segs.push_back(Seg::Head { start, end }),
        }
        if payload.len() > INLINE_MAX {
            self.pending += payload.len();
            self.segs.push_back(Seg::Payload(payload, task));
        }
        Ok(())
    }

    /// A payload asked back with [`Self::push_returning`], with its task id, oldest first.
    pub fn take_returned(&mut self) -> Option<(u64, Vec<u8>)> {
        self.returned.pop_front()
    }

    /// Empties the outbox, giving back the payloads asked back that were not wholly
    /// transmitted (the front one may have been in part).
    pub fn reclaim(&mut self) -> Vec<(u64, Vec<u8>)> {
        let unsent = self
            .segs
            .drain(..)
            .filter_map(|seg| match seg {
                Seg::Payload(p, Some(id)) => Some((id, p)),
                _ => None,
            })
            .collect();
        self.head.clear();
        self.offset = 0;
        self.pending = 0;
        unsent
    }

    /// Bytes queued and not yet transmitted.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Fills `out` with the untransmitted bytes in order; returns how many slices were written.
    pub fn slices<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        let mut n = 0;
        for (i, seg) in self.segs.iter().enumerate() {
            if n == out.len() {
                break;
            }
            let bytes = match seg {
                Seg::Head { start, end } => &self.head[*start..*end],
                Seg::Payload(p, _) => &p[..],
            };
            out[n] = if i == 0 { &bytes[self.offset..] } else { bytes };
            n += 1;
        }
        n
    }

    /// Marks `n` bytes as transmitted. Each payload of its own segment that this finishes and
    /// nothing asked back goes to `spent`, whose memory may receive a later payload.
    pub fn consume(&mut self, mut n: usize, mut spent: impl FnMut(Vec<u8>)) {
        n = n.min(self.pending);
        self.pending -= n;
        while n > 0 {
            let Some(front) = self.segs.front() else {
                break;
            };
            let len = match front {
                Seg::Head { start, end } => end - start,
                Seg::Payload(p, _) => p.len(),
            } - self.offset;
            if n < len {
                self.offset += n;
                break;
            }
            n -= len;
            self.offset = 0;
            match self.segs.pop_front() {
                Some(Seg::Payload(p, Some(id))) => self.returned.push_back((id, p)),
                Some(Seg::Payload(p, None)) => spent(p),
                _ => {}
            }
        }
        if self.segs.is_empty() {
            self.head.clear();
            self.head.shrink_to(HEAD_KEEP);
            self.offset = 0;
        } else {
            self.compact();
        }
    }

    /// Reclaims the transmitted front of the shared buffer when it dominates, so a connection
    /// that never fully drains does not grow without bound.
    fn compact(&mut self) {
        let Some(first) = self.segs.iter().find_map(|s| match s {
            Seg::Head { start, .. } => Some(*start),
            Seg::Payload(..) => None,
        }) else {
            self.head.clear();
            return;
        };
        if first < (1 << 16) || first < self.head.len() / 2 {
            return;
        }
        self.head.drain(..first);
        for seg in self.segs.iter_mut() {
            if let Seg::Head { start, end } = seg {
                *start -= first;
                *end -= first;
            }
        }
    }
}
