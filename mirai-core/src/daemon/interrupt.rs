//! The interrupt a cancel raises in a running evaluation. The daemon's I/O thread triggers it
//! the moment a `Cancel` arrives; the evaluator sees it through the flag, a cancellable sleep,
//! or the binding's hook (which can, say, raise an interrupt in R's main loop).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::clock::instant_after;

/// A hook run on the daemon's I/O thread when the running task is cancelled. It must be quick
/// and thread-safe: it typically sets a flag the evaluator's language runtime polls.
pub type InterruptHook = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Inner {
    set: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

/// Shared between the I/O thread (which triggers it) and the evaluator (which observes it).
#[derive(Clone, Default)]
pub struct Interrupt {
    inner: Arc<Inner>,
    hook: Option<InterruptHook>,
}

impl Interrupt {
    pub(crate) fn new(hook: Option<InterruptHook>) -> Self {
        Interrupt { inner: Arc::default(), hook }
    }

    /// Whether the running task has been cancelled.
    pub fn is_set(&self) -> bool {
        self.inner.set.load(Ordering::Acquire)
    }

    /// Sleeps for `d` unless interrupted first; returns true if interrupted.
    pub fn sleep(&self, d: Duration) -> bool {
        // A sleep too long to have a deadline (u64::MAX ms from C) waits for the interrupt only.
        let deadline = instant_after(Some(d));
        let mut guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.is_set() {
                return true;
            }
            guard = match deadline {
                None => self.inner.cv.wait(guard).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.inner.cv.wait_timeout(guard, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }

    /// Clears the flag for a new task (done by the I/O thread before handing the task over, so
    /// a cancel that follows at once is never lost).
    pub(crate) fn reset(&self) {
        self.inner.set.store(false, Ordering::Release);
    }

    pub(crate) fn trigger(&self) {
        {
            let _guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.inner.set.store(true, Ordering::Release);
        }
        self.inner.cv.notify_all();
        if let Some(hook) = &self.hook {
            hook();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleep_too_long_for_a_deadline_ends_on_the_interrupt() {
        let intr = Interrupt::new(None);
        let other = intr.clone();
        let t = std::thread::spawn(move || other.sleep(Duration::MAX));
        std::thread::sleep(Duration::from_millis(50));
        intr.trigger();
        assert!(t.join().unwrap(), "interrupted, not a panic or a timeout");
    }
}
