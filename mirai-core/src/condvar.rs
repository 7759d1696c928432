//! A condition variable that makes no system call to notify when nobody waits. std's futex
//! `Condvar` calls `FUTEX_WAKE` on every `notify_all`, waiters or not, and the host's I/O thread
//! notifies on every completion, which nobody usually waits for (a binding collects results
//! later). For the host's waiters and the completion notifier; a task cell, notified once, keeps
//! a flag under its own lock instead (see `TaskCell`), which costs it no memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, MutexGuard};
use std::time::Duration;

/// Waiters wait, and notifiers notify, about state kept under one mutex: a waiter checks it and
/// registers under that mutex; a notifier changes it under the mutex and notifies after. The
/// mutex then orders the registration before the notifier's look at the count.
#[derive(Debug, Default)]
pub(crate) struct CountedCondvar {
    cv: Condvar,
    waiting: AtomicUsize,
}

impl CountedCondvar {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let guard = self.cv.wait(guard).unwrap_or_else(|e| e.into_inner());
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        guard
    }

    pub(crate) fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> MutexGuard<'a, T> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let (guard, _) = self.cv.wait_timeout(guard, timeout).unwrap_or_else(|e| e.into_inner());
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        guard
    }

    /// Wakes every waiter, if there is one. Call it after changing the state under the mutex.
    pub(crate) fn notify_all(&self) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_waiter_is_woken_and_no_count_is_left_behind() {
        let pair = Arc::new((Mutex::new(false), CountedCondvar::new()));
        let waiter = {
            let pair = pair.clone();
            std::thread::spawn(move || {
                let (lock, cv) = &*pair;
                let mut done = lock.lock().unwrap();
                while !*done {
                    done = cv.wait(done);
                }
            })
        };
        // Until the waiter has registered, a notify may find nobody; the flag is what counts.
        while pair.1.waiting.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        *pair.0.lock().unwrap() = true;
        pair.1.notify_all();
        waiter.join().unwrap();
        assert_eq!(pair.1.waiting.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_wait_that_times_out_unregisters() {
        let (lock, cv) = (Mutex::new(()), CountedCondvar::new());
        drop(cv.wait_timeout(lock.lock().unwrap(), Duration::from_millis(5)));
        assert_eq!(cv.waiting.load(Ordering::Relaxed), 0);
        // Nobody waits: nothing to wake, and nothing fails.
        cv.notify_all();
    }

    #[test]
    fn many_waiters_and_many_notifications_lose_no_wakeup() {
        let state = Arc::new((Mutex::new(0u32), CountedCondvar::new()));
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let state = state.clone();
                std::thread::spawn(move || {
                    let (lock, cv) = &*state;
                    let mut n = lock.lock().unwrap();
                    while *n < 1000 {
                        n = cv.wait(n);
                    }
                })
            })
            .collect();
        for _ in 0..1000 {
            *state.0.lock().unwrap() += 1;
            state.1.notify_all();
        }
        for w in waiters {
            w.join().unwrap();
        }
    }
}
