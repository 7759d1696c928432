//! How many connections may sit in their handshake at once, and which one gives way when a
//! stranger floods the listener: the cap bounds the descriptors and memory that peers without
//! the secret can hold, and the oldest unfinished handshake is dropped for a newcomer once it has
//! had time enough to finish (a real daemon needs a few round trips), so a flood drains fast.

use std::collections::VecDeque;

/// What to do with the next connection waiting at the listener.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Accept it.
    Yes,
    /// Accept, and if a connection was waiting, close this unfinished handshake for it.
    Evict(usize),
    /// Leave it queued in the kernel until this time (ms), or until a handshake ends.
    Wait(u64),
}

#[derive(Debug)]
pub(super) struct Admission {
    cap: usize,
    /// An unfinished handshake is dropped for a newcomer only after this long (ms).
    grace: u64,
    /// Connections in their handshake, oldest first, with when each was accepted.
    pending: VecDeque<(usize, u64)>,
}

impl Admission {
    pub(super) fn new(cap: usize, grace: u64) -> Self {
        Admission { cap, grace, pending: VecDeque::new() }
    }

    pub(super) fn admit(&self, now: u64) -> Admit {
        match self.pending.front() {
            _ if self.pending.len() < self.cap => Admit::Yes,
            Some(&(key, opened)) if now >= opened.saturating_add(self.grace) => Admit::Evict(key),
            Some(&(_, opened)) => Admit::Wait(opened.saturating_add(self.grace)),
            None => Admit::Yes,
        }
    }

    /// The oldest unfinished handshake, if it has had its grace: the one to drop when the
    /// process runs out of descriptors.
    pub(super) fn evictable(&self, now: u64) -> Option<usize> {
        self.pending.front().filter(|&&(_, opened)| now >= opened.saturating_add(self.grace)).map(|&(k, _)| k)
    }

    /// A connection was accepted and starts its handshake.
    pub(super) fn opened(&mut self, key: usize, now: u64) {
        self.pending.push_back((key, now));
    }

    /// The connection finished its handshake or closed. Returns whether it was pending.
    pub(super) fn ended(&mut self, key: usize) -> bool {
        let before = self.pending.len();
        self.pending.retain(|&(k, _)| k != key);
        self.pending.len() < before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_up_to_the_cap_then_waits_for_the_oldest_to_have_had_its_grace() {
        let mut a = Admission::new(2, 1_000);
        assert_eq!(a.admit(0), Admit::Yes);
        a.opened(10, 0);
        a.opened(11, 400);
        assert_eq!(a.admit(500), Admit::Wait(1_000));
        assert_eq!(a.admit(1_000), Admit::Evict(10));
        assert!(a.ended(10));
        a.opened(12, 1_000);
        // The next oldest is 11, accepted at 400.
        assert_eq!(a.admit(1_100), Admit::Wait(1_400));
        assert_eq!(a.admit(1_400), Admit::Evict(11));
        assert_eq!(a.evictable(1_399), None);
        assert_eq!(a.evictable(1_400), Some(11));
    }

    #[test]
    fn a_finished_handshake_frees_its_place_at_once() {
        let mut a = Admission::new(1, 1_000);
        a.opened(3, 0);
        assert_eq!(a.admit(10), Admit::Wait(1_000));
        assert!(a.ended(3));
        assert!(!a.ended(3), "ended once");
        assert_eq!(a.admit(10), Admit::Yes);
    }
}
