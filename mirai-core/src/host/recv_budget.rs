//! The host-wide budget for receive memory: bytes held in partly received frames larger than
//! [`EXEMPT_FRAME`], across all connections.
//!
//! The connection whose frame started first may always finish it, so the budget cannot
//! deadlock: the others read while the total stays within the budget, and otherwise pause,
//! leaving their bytes in the kernel's socket buffer (which stops their peers by TCP or Unix
//! flow control). Readiness is edge-triggered and no new edge comes for bytes already waiting,
//! so paused connections are read again explicitly once memory frees up or the oldest frame
//! changes hands.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use mirai_proto::decoder::Progress;

use super::Memory;
use crate::link::{EXEMPT_FRAME, ReadLimit};

/// What the budget holds now, for callers on other threads.
#[derive(Debug)]
pub(crate) struct RecvGauge {
    limit: u64,
    used: AtomicU64,
    peak: AtomicU64,
}

impl RecvGauge {
    pub(crate) fn new(limit: u64) -> Self {
        RecvGauge { limit, used: AtomicU64::new(0), peak: AtomicU64::new(0) }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn memory(&self) -> Memory {
        Memory {
            used: self.used.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
            limit: Some(self.limit),
        }
    }

    fn record(&self, used: usize) {
        let used = used as u64;
        self.used.store(used, Ordering::Relaxed);
        self.peak.fetch_max(used, Ordering::Relaxed);
    }
}

/// A large frame partly received on one connection.
#[derive(Debug)]
struct Partial {
    /// When it started, in the order frames start across connections.
    seq: u64,
    /// Its number on its connection ([`Progress::frame`]).
    frame: u64,
    held: usize,
}

#[derive(Debug)]
pub(super) struct RecvBudget {
    limit: usize,
    partial: HashMap<usize, Partial>,
    /// Connections with a partial frame, by when it started.
    order: BTreeMap<u64, usize>,
    next_seq: u64,
    total: usize,
    paused: BTreeSet<usize>,
    /// Memory freed, or the oldest frame passed to a paused connection, since paused
    /// connections were last resumed.
    changed: bool,
}

impl RecvBudget {
    pub(super) fn new(limit: u64) -> Self {
        RecvBudget {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            partial: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            total: 0,
            paused: BTreeSet::new(),
            changed: false,
        }
    }

    /// What connection `key` may hold in the frame it receives next: what the others leave of
    /// the budget, and, if its frame started first, that frame whatever its size.
    pub(super) fn limit_for(&self, key: usize) -> ReadLimit {
        let own = self.partial.get(&key);
        let others = self.total - own.map_or(0, |p| p.held);
        let oldest = self.order.first_key_value().map(|(_, &k)| k);
        let finish = own.filter(|_| oldest == Some(key)).map(|p| p.frame);
        ReadLimit { held: self.limit.saturating_sub(others), finish }
    }

    /// Records where connection `key`'s frame stands after a read.
    pub(super) fn update(&mut self, key: usize, progress: Progress, gauge: &RecvGauge) {
        let before = self.mark();
        let large = progress.body_len.is_some_and(|len| len > EXEMPT_FRAME);
        match self.partial.get_mut(&key) {
            Some(p) if large && p.frame == progress.frame => {
                self.total = self.total - p.held + progress.held;
                p.held = progress.held;
            }
            _ => {
                self.forget(key);
                if large {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.order.insert(seq, key);
                    self.partial.insert(key, Partial { seq, frame: progress.frame, held: progress.held });
                    self.total += progress.held;
                }
            }
        }
        self.note(before, gauge);
    }

    /// Connection `key` stopped reading for want of budget (call before [`Self::update`] for
    /// the same read, which sees whether its frame became the oldest).
    pub(super) fn pause(&mut self, key: usize) {
        self.paused.insert(key);
    }

    /// Whether connection `key` is paused.
    pub(super) fn is_paused(&self, key: usize) -> bool {
        self.paused.contains(&key)
    }

    /// Connection `key` closed: its frame's memory leaves the budget.
    pub(super) fn remove(&mut self, key: usize, gauge: &RecvGauge) {
        let before = self.mark();
        self.forget(key);
        self.paused.remove(&key);
        self.note(before, gauge);
    }

    /// Whether paused connections should be read again now.
    pub(super) fn wants_resume(&self) -> bool {
        self.changed && !self.paused.is_empty()
    }

    /// The paused connections to read again, if memory freed up or the oldest frame changed;
    /// those still short of budget pause again.
    pub(super) fn take_resumable(&mut self) -> Vec<usize> {
        if !self.wants_resume() {
            return Vec::new();
        }
        self.changed = false;
        std::mem::take(&mut self.paused).into_iter().collect()
    }

    fn forget(&mut self, key: usize) {
        if let Some(p) = self.partial.remove(&key) {
            self.order.remove(&p.seq);
            self.total -= p.held;
        }
    }

    fn mark(&self) -> (usize, Option<u64>) {
        (self.total, self.order.first_key_value().map(|(&seq, _)| seq))
    }

    fn note(&mut self, (total, oldest): (usize, Option<u64>), gauge: &RecvGauge) {
        let now = self.mark();
        let handed_over =
            now.1 != oldest && self.order.first_key_value().is_some_and(|(_, key)| self.paused.contains(key));
        if now.0 < total || handed_over {
            self.changed = true;
        }
        if now.0 != total {
            gauge.record(now.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn large(frame: u64, held: usize) -> Progress {
        Progress { frame, body_len: Some(1 << 30), held, missing: (1 << 30) - held as u64 }
    }

    const BETWEEN: Progress = Progress { frame: 1, body_len: None, held: 0, missing: 12 };

    #[test]
    fn the_oldest_frame_may_finish_and_the_others_share_what_is_left() {
        let gauge = RecvGauge::new(100);
        let mut b = RecvBudget::new(100);
        b.update(1, large(0, 70), &gauge);
        b.update(2, large(0, 20), &gauge);
        assert_eq!(b.limit_for(1), ReadLimit { held: 80, finish: Some(0) });
        assert_eq!(b.limit_for(2), ReadLimit { held: 30, finish: None });
        assert_eq!(b.limit_for(3), ReadLimit { held: 10, finish: None });
        assert_eq!(gauge.memory(), Memory { used: 90, peak: 90, limit: Some(100) });

        b.pause(2);
        assert!(!b.wants_resume(), "nothing freed yet");
        b.update(1, BETWEEN, &gauge);
        assert!(b.wants_resume(), "the first frame finished");
        assert_eq!(b.take_resumable(), vec![2]);
        assert_eq!(b.limit_for(2), ReadLimit { held: 100, finish: Some(0) });
        assert_eq!(gauge.memory().used, 20);
    }

    #[test]
    fn a_new_frame_on_the_same_connection_starts_last() {
        let gauge = RecvGauge::new(100);
        let mut b = RecvBudget::new(100);
        b.update(1, large(0, 10), &gauge);
        b.update(2, large(0, 10), &gauge);
        // Connection 1 finished frame 0 and began frame 1 within one read.
        b.update(1, large(1, 5), &gauge);
        assert_eq!(b.limit_for(2).finish, Some(0));
        assert_eq!(b.limit_for(1).finish, None);
        assert_eq!(gauge.memory().used, 15);
    }

    #[test]
    fn a_zero_budget_reads_one_large_frame_at_a_time() {
        let gauge = RecvGauge::new(0);
        let mut b = RecvBudget::new(0);
        // Connection 1 read a large header and could hold nothing of it, so it paused.
        b.pause(1);
        b.update(1, large(0, 0), &gauge);
        assert!(b.wants_resume(), "its frame is the oldest: it must be read again");
        assert_eq!(b.take_resumable(), vec![1]);
        assert_eq!(b.limit_for(1), ReadLimit { held: 0, finish: Some(0) });
    }

    #[test]
    fn closing_returns_the_memory_and_resumes_the_others() {
        let gauge = RecvGauge::new(100);
        let mut b = RecvBudget::new(100);
        b.update(1, large(0, 100), &gauge);
        b.update(2, large(0, 0), &gauge);
        b.pause(2);
        b.remove(1, &gauge);
        assert_eq!(gauge.memory(), Memory { used: 0, peak: 100, limit: Some(100) });
        assert_eq!(b.take_resumable(), vec![2]);
        b.remove(2, &gauge);
        assert!(!b.is_paused(2));
    }
}
