//! Host-wide completion signals, for callers that wait on many tasks at once: a generation
//! counter with a condition variable (race), and a queue of completed task ids with a file
//! descriptor that is readable while the queue is not empty (event loops of R, Julia, Python).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::condvar::CountedCondvar;

struct State {
    generation: u64,
    queue: VecDeque<u64>,
}

pub(crate) struct Notifier {
    state: Mutex<State>,
    cv: CountedCondvar,
    fd: EventFd,
}

impl Notifier {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Notifier {
            state: Mutex::new(State { generation: 0, queue: VecDeque::new() }),
            cv: CountedCondvar::new(),
            fd: EventFd::new()?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a completion; `queued` puts its id on the fd-backed queue.
    pub(crate) fn completed(&self, id: u64, queued: bool) {
        let mut st = self.lock();
        st.generation = st.generation.wrapping_add(1);
        if queued {
            if st.queue.is_empty() {
                self.fd.raise();
            }
            st.queue.push_back(id);
        }
        drop(st);
        self.cv.notify_all();
    }

    /// Takes up to `max` queued completions, in order; the fd stays readable while any remain.
    pub(crate) fn take(&self, max: usize) -> Vec<u64> {
        let mut st = self.lock();
        self.fd.clear();
        let n = max.min(st.queue.len());
        let out = st.queue.drain(..n).collect();
        if !st.queue.is_empty() {
            self.fd.raise();
        }
        out
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Blocks until `ready()` holds, re-checking after every completion, or until the timeout.
    /// Returns whether `ready()` held.
    pub(crate) fn wait_until(&self, timeout: Option<Duration>, mut ready: impl FnMut() -> bool) -> bool {
        let deadline = crate::clock::instant_after(timeout);
        let mut st = self.lock();
        loop {
            // Checked under the lock: a completion after this check bumps the generation only
            // after we wait, so it cannot be missed.
            if ready() {
                return true;
            }
            let seen = st.generation;
            while st.generation == seen {
                st = match deadline {
                    None => self.cv.wait(st),
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            drop(st);
                            return ready();
                        }
                        self.cv.wait_timeout(st, left)
                    }
                };
            }
        }
    }

    /// Wakes every waiter (the host is closing).
    pub(crate) fn wake_all(&self) {
        let mut st = self.lock();
        st.generation = st.generation.wrapping_add(1);
        drop(st);
        self.cv.notify_all();
    }
}

/// A non-blocking eventfd (Linux) or self-pipe (elsewhere) used as a level signal.
struct EventFd {
    read: OwnedFd,
    #[cfg(not(target_os = "linux"))]
    write: OwnedFd,
}

impl EventFd {
    #[cfg(target_os = "linux")]
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(EventFd { read: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    #[cfg(not(target_os = "linux"))]
    fn new() -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in fds {
            // SAFETY: fcntl on descriptors we just created.
            unsafe {
                libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        // SAFETY: fresh descriptors owned by nothing else.
        unsafe { Ok(EventFd { read: OwnedFd::from_raw_fd(fds[0]), write: OwnedFd::from_raw_fd(fds[1]) }) }
    }

    fn write_fd(&self) -> RawFd {
        #[cfg(target_os = "linux")]
        return self.read.as_raw_fd();
        #[cfg(not(target_os = "linux"))]
        return self.write.as_raw_fd();
    }

    fn raise(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer. A full pipe or counter is already readable.
        unsafe { libc::write(self.write_fd(), one.as_ptr().cast(), one.len()) };
    }

    fn clear(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a live buffer; non-blocking, so it stops at EAGAIN.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}
