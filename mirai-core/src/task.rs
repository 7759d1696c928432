//! Task handles and their completion cells. A cell is resolved exactly once, by whichever comes
//! first: the daemon's result, a timeout, a cancel, a lost daemon, or the host closing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use mirai_proto::{ErrorCode, Status};

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    /// The payload is the value.
    Value,
    /// Evaluation raised an error; the payload is the binding's error object.
    Error,
    /// Evaluation was interrupted on the daemon (the payload is the binding's interrupt object).
    Interrupted,
    /// The host resolved the task without a result: 5 timed out, 19 connection reset (daemon
    /// lost, host closed), 20 cancelled. There is no payload.
    Failed(ErrorCode),
}

impl From<Status> for TaskStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Value => TaskStatus::Value,
            Status::Error => TaskStatus::Error,
            Status::Interrupted => TaskStatus::Interrupted,
        }
    }
}

/// Runs once when the task resolves, on the thread that resolved it: the host's I/O thread for
/// results, timeouts and lost daemons; the calling thread for `cancel` and `close`. It must not
/// block, and it is called with no lock held. On the I/O thread, calls that would wait for the
/// host return at once instead: `Task::wait` (false unless resolved), `Host::race` (only what has
/// resolved), `wait_connections` and `wait_capacity` (false), and `submit` at the memory cap (an
/// error; `try_submit` is the call for there).
pub type Callback = Box<dyn FnOnce(u64, TaskStatus) + Send>;

struct CellState {
    status: Option<TaskStatus>,
    held: Held,
    /// Whether a thread has slept on `cv` for this cell: only then does resolving wake anyone.
    slept: bool,
}

/// The callback until the cell resolves, the result's payload from then on: the two never
/// coexist, so they share their memory (a queued task's cell is 16 bytes smaller for it).
enum Held {
    Pending(Option<Callback>),
    Resolved(Option<Vec<u8>>),
}

pub(crate) struct TaskCell {
    pub(crate) id: u64,
    /// Whether the completion goes to the host's completion queue (and fd).
    pub(crate) notify: bool,
    /// Set once resolved, readable without the lock (for the brief spin in `wait`).
    resolved: AtomicBool,
    state: Mutex<CellState>,
    /// Notified once, on resolving, and only if someone slept on it (`slept`): std's futex
    /// condvar would make a system call even with nobody waiting. A flag under the cell's lock
    /// rather than `CountedCondvar`, whose count would add 8 bytes to every task.
    cv: Condvar,
}

/// How long `wait` polls before sleeping. A result that arrives within a few tens of
/// microseconds is then picked up without the cost of waking a sleeping thread (and, on a VM,
/// a halted vCPU), which otherwise dominates a round trip. It polls with `yield_now`, so the
/// threads that produce the result (the host's I/O thread, daemons on the same machine) get the
/// CPU first when they need it: spinning outright costs 10-20% of throughput on two cores.
const SPIN: Duration = Duration::from_micros(200);

impl TaskCell {
    pub(crate) fn new(id: u64, notify: bool, callback: Option<Callback>) -> Arc<Self> {
        Arc::new(TaskCell {
            id,
            notify,
            resolved: AtomicBool::new(false),
            state: Mutex::new(CellState { status: None, held: Held::Pending(callback), slept: false }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, CellState> {
        // A panic in user code never runs under this lock, so poisoning carries no meaning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves the cell; returns the callback to run, or `Err` if it was already resolved.
    pub(crate) fn resolve(&self, status: TaskStatus, payload: Vec<u8>) -> Result<Option<Callback>, ()> {
        let mut st = self.lock();
        if st.status.is_some() {
            return Err(());
        }
        st.status = Some(status);
        let cb = match std::mem::replace(&mut st.held, Held::Resolved(Some(payload))) {
            Held::Pending(cb) => cb,
            Held::Resolved(_) => None,
        };
        self.resolved.store(true, Ordering::Release);
        let slept = st.slept;
        drop(st);
        if slept {
            self.cv.notify_all();
        }
        Ok(cb)
    }

    pub(crate) fn is_resolved(&self) -> bool {
        self.resolved.load(Ordering::Acquire)
    }

    pub(crate) fn status(&self) -> Option<TaskStatus> {
        self.lock().status
    }

    /// Installs `callback` (replacing any), or hands it back with the outcome when the cell has
    /// already resolved.
    fn set_callback(&self, callback: Callback) -> Option<(Callback, TaskStatus)> {
        let mut st = self.lock();
        match st.status {
            Some(status) => Some((callback, status)),
            None => {
                st.held = Held::Pending(Some(callback));
                None
            }
        }
    }
}

/// What a task needs of the host it belongs to.
pub(crate) trait TaskHost: Send + Sync {
    /// Resolves task `id` with `code` (cancelled, timed out), stopping it where it runs;
    /// false when it had already resolved.
    fn cancel(&self, id: u64, code: ErrorCode) -> bool;
    /// Whether this thread is the one that resolves tasks (waiting there would never end).
    fn on_io_thread(&self) -> bool;
}

/// A submitted task. Cheap to clone; every clone refers to the same task.
#[derive(Clone)]
pub struct Task {
    pub(crate) cell: Arc<TaskCell>,
    host: Weak<dyn TaskHost>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("id", &self.cell.id).field("status", &self.status()).finish()
    }
}

impl Task {
    pub(crate) fn new<H: TaskHost + 'static>(cell: Arc<TaskCell>, host: &Arc<H>) -> Task {
        let host: Arc<dyn TaskHost> = host.clone();
        Task { cell, host: Arc::downgrade(&host) }
    }

    /// The id, unique and increasing within its host.
    pub fn id(&self) -> u64 {
        self.cell.id
    }

    /// Whether the task has resolved. Never blocks.
    pub fn is_resolved(&self) -> bool {
        // The flag, not the lock: races and `unresolved()` poll many tasks at a time.
        self.cell.resolved.load(Ordering::Acquire)
    }

    /// The outcome, once resolved.
    pub fn status(&self) -> Option<TaskStatus> {
        self.cell.status()
    }

    /// Blocks until the task resolves or `timeout` passes; returns whether it resolved. From a
    /// completion callback (on the host's I/O thread, which resolves tasks) it does not wait.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let started = Instant::now();
        let spin = timeout.map_or(SPIN, |t| t.min(SPIN));
        while started.elapsed() < spin {
            if self.cell.resolved.load(Ordering::Acquire) {
                return true;
            }
            std::thread::yield_now();
        }
        // Checked only before sleeping, off the fast path: from the I/O thread nothing would wake us.
        if self.host.upgrade().is_some_and(|h| h.on_io_thread()) {
            return self.cell.resolved.load(Ordering::Acquire);
        }
        let deadline = timeout.and_then(|t| started.checked_add(t));
        let mut st = self.cell.lock();
        while st.status.is_none() {
            st.slept = true;
            st = match deadline {
                None => self.cell.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.cell.cv.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
        true
    }

    /// Sets the callback run when the task resolves, replacing one given at submission: for
    /// callers that only learn later that they want one (R's promises). When the task has
    /// already resolved, the callback runs at once, on this thread.
    pub fn on_resolved(&self, callback: Callback) {
        if let Some((callback, status)) = self.cell.set_callback(callback) {
            callback(self.cell.id, status);
        }
    }

    /// Moves the result's payload out (the bytes the daemon sent, not copied). Returns `None`
    /// before resolution or when already taken.
    pub fn take_payload(&self) -> Option<Vec<u8>> {
        match &mut self.cell.lock().held {
            Held::Resolved(payload) => payload.take(),
            Held::Pending(_) => None,
        }
    }

    /// Cancels the task: a queued one leaves the queue, a running one is interrupted on its
    /// daemon (whose late result is dropped). Either way it resolves at once as cancelled (20).
    /// Returns false when it had already resolved.
    pub fn cancel(&self) -> bool {
        match self.host.upgrade() {
            Some(host) => host.cancel(self.cell.id, ErrorCode::Canceled),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_with_its_arc_fits_a_72_byte_allocation() {
        // glibc's malloc hands out chunks of 16-byte steps with an 8-byte header: 72 bytes of
        // `ArcInner` (two counts and the cell) take an 80-byte chunk, 88 would take 96.
        assert!(size_of::<TaskCell>() + 16 <= 72, "TaskCell is {} bytes", size_of::<TaskCell>());
    }

    #[test]
    fn the_callback_gives_way_to_the_payload_on_resolving() {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let cell = TaskCell::new(7, false, None);
        assert!(cell.set_callback(Box::new(move |id, _| flag.store(id == 7, Ordering::SeqCst))).is_none());
        let cb = cell.resolve(TaskStatus::Value, b"result".to_vec()).unwrap().expect("the callback");
        cb(cell.id, TaskStatus::Value);
        assert!(ran.load(Ordering::SeqCst));
        assert!(cell.resolve(TaskStatus::Error, Vec::new()).is_err(), "resolves once");
        {
            let mut st = cell.lock();
            let Held::Resolved(payload) = &mut st.held else { panic!("resolved") };
            assert_eq!(payload.take().as_deref(), Some(&b"result"[..]));
        }
        // A callback set after resolving is handed back to run at once.
        assert!(cell.set_callback(Box::new(|_, _| {})).is_some());
    }
}
