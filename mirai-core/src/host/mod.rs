//! The host: one per compute profile. It listens at a URL, accepts daemons, queues tasks FIFO
//! and hands each to an idle daemon.
//!
//! Threads: an I/O thread per host runs the mio event loop (accepts, reads, timers). All state
//! sits behind one mutex, and calling threads act on it directly: a `submit` that finds an idle
//! daemon writes the task to that daemon's socket itself (non-blocking), so the submit path has
//! no thread hop. A socket that is full is finished by the I/O thread on its next writable
//! event. Lock order: the state mutex, then a connection's mutex; the I/O thread reads a socket
//! holding only that connection's mutex.

mod admission;
pub mod dispatcher;
mod event_loop;
mod recv_budget;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};
use mirai_proto::{ErrorCode, ExitReason, Identity, Message};

pub use dispatcher::Counters;
use dispatcher::{Assignment, DaemonKey, Dispatcher};
use recv_budget::RecvGauge;

use crate::auth::Auth;
use crate::clock::{deadline_after, instant_after};
use crate::error::Error;
use crate::link::Link;
use crate::notify::Notifier;
use crate::rng::{self, Stream};
use crate::task::{Callback, Task, TaskCell, TaskStatus};
use crate::tls::{self, ServerIdentity};
use crate::transport::Listener;
use crate::url::Url;

/// The default [`HostOptions::recv_budget`], 1 GiB. Generous, since it costs little throughput:
/// one I/O thread reads every connection, so reading more frames at once does not read faster;
/// the budget only bounds what many daemons sending large results together (or misbehaving)
/// can make the host hold beyond the frame it finishes first.
pub const DEFAULT_RECV_BUDGET: u64 = 1 << 30;

/// Settings fixed when the host starts.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Largest frame accepted from a daemon, in bytes.
    pub max_frame: u64,
    /// Cap on the payload bytes waiting in the queue; `None` for no cap. `submit` blocks and
    /// `try_submit` refuses while the queue holds this much.
    pub memory_limit: Option<u64>,
    /// Bytes that frames still arriving (those over 64 KiB) may hold across all daemons. The
    /// frame that started first may always finish, whatever its size; other connections stop
    /// reading while the rest are over budget, and their daemons wait. 0 reads one such frame
    /// at a time. See [`Host::recv_memory`].
    pub recv_budget: u64,
    /// The L'Ecuyer-CMRG stream daemons' streams derive from (the k-th daemon gets this stream
    /// jumped k times); `None` draws one at random.
    pub stream: Option<Stream>,
    /// Opaque bytes every daemon receives in its init bundle (bindings put serialization hooks
    /// here).
    pub init_blob: Vec<u8>,
    /// A daemon must finish its handshake within this time.
    pub handshake_timeout: Duration,
    /// Send a heartbeat to a daemon that was sent nothing for this long, and ask daemons to do
    /// the same (they heartbeat from their I/O thread, also while a task runs). `None`: no
    /// heartbeats either way, and daemons never give up on a silent host.
    pub heartbeat: Option<Duration>,
    /// Drop a daemon that sent nothing (heartbeats included) for this long: a daemon killed
    /// without its socket closing, stopped, or behind a vanished network. At least three
    /// heartbeats long; needs `heartbeat`.
    pub peer_timeout: Option<Duration>,
    /// Certificate, key (with its password if encrypted) and the CA daemons should trust, for
    /// `tls+tcp://`; `None` generates a short-lived CA and a certificate for the URL's host at
    /// start.
    pub tls: Option<ServerIdentity>,
    /// How daemons prove they may connect.
    pub auth: Auth,
    /// Run a task lost with a daemon that died (connection reset) again on another daemon, up
    /// to this many times (0: never, as R's mirai; it then resolves with 19). A retried task's
    /// payload is kept until its result arrives.
    pub retry: u32,
    /// A task that was at this many daemons when they died is quarantined: it resolves with 18
    /// (connection aborted) and is never run again, whatever its retries left.
    pub quarantine: u32,
    /// Connections allowed in their handshake at once. Beyond it, the oldest unfinished one
    /// (once it has had a quarter of a second) gives way to a newcomer, so a flood of strangers
    /// holds few descriptors and cannot lock real daemons out.
    pub max_handshakes: usize,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            max_frame: mirai_proto::conn::DEFAULT_MAX_FRAME,
            memory_limit: None,
            recv_budget: DEFAULT_RECV_BUDGET,
            stream: None,
            init_blob: Vec::new(),
            handshake_timeout: Duration::from_secs(30),
            heartbeat: Some(Duration::from_secs(10)),
            peer_timeout: Some(Duration::from_secs(120)),
            tls: None,
            auth: Auth::Random,
            max_handshakes: 1024,
            retry: 0,
            quarantine: 3,
        }
    }
}

/// Per-task settings.
#[derive(Default)]
pub struct SubmitOptions {
    /// Resolve the task as timed out (5) after this long, cancelling it where it is.
    pub timeout: Option<Duration>,
    /// Put the task's id on the host's completion queue (see [`Host::completion_fd`]).
    pub notify: bool,
    /// Called once when the task resolves; see [`Callback`] for the thread.
    pub callback: Option<Callback>,
    /// Overrides [`HostOptions::retry`] for this task.
    pub retry: Option<u32>,
}

/// Memory in use against a limit, in bytes: the queue's ([`Host::memory`]) or frames still
/// arriving ([`Host::recv_memory`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    pub used: u64,
    pub peak: u64,
    pub limit: Option<u64>,
}

/// A connected daemon, as it introduced itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonInfo {
    /// Numbered from 1 in order of connection.
    pub daemon_id: u64,
    pub identity: Identity,
}

pub(crate) type Completions = Vec<(Arc<TaskCell>, TaskStatus, Vec<u8>)>;

/// What a submission is: an ordinary task, or one copy of an `everywhere` broadcast (every copy
/// but the last holds the dispatcher's barrier).
#[derive(Clone, Copy)]
enum Submission {
    Single,
    Broadcast { last: bool },
}

struct TaskEntry {
    cell: Arc<TaskCell>,
    daemon: Option<DaemonKey>,
    /// A copy of an `everywhere` broadcast (told to the daemon's evaluator).
    everywhere: bool,
    /// Runs left after a daemon dies with it.
    retries: u32,
    /// Daemons that died with it.
    losses: u32,
    /// Its payload, given back by the connection once sent, while it is at a daemon: so it can
    /// run elsewhere if that daemon leaves without evaluating it, or dies and it has retries.
    kept: Option<Vec<u8>>,
}

/// Payloads up to this size are kept while their task runs even without retries (no copy is
/// made), so a task a daemon never evaluated (it left on its idle time as the task crossed) runs
/// elsewhere instead of failing.
const KEEP_SMALL: usize = 1 << 20;

/// What the host's reliability measures did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recoveries {
    /// Tasks given to another daemon because theirs left without evaluating them.
    pub requeued: u64,
    /// Tasks run again after their daemon died.
    pub retried: u64,
    /// Tasks given up after killing `quarantine` daemons.
    pub quarantined: u64,
}

struct DaemonEntry {
    link: Arc<Mutex<Link>>,
    info: DaemonInfo,
}

pub(crate) struct State {
    dispatcher: Dispatcher,
    tasks: HashMap<u64, TaskEntry>,
    daemons: HashMap<DaemonKey, DaemonEntry>,
    /// Task deadlines; entries of tasks that resolved otherwise are skipped when reached.
    timers: BinaryHeap<Reverse<(u64, u64)>>,
    next_task: u64,
    next_daemon: u64,
    stream: Stream,
    memory_limit: u64,
    init_blob: Vec<u8>,
    closing: bool,
    /// When the I/O thread will next wake by itself, so callers know whether to wake it.
    wake_at: Option<u64>,
    /// Connections whose socket failed on a calling thread, for the I/O thread to reap.
    dead: Vec<DaemonKey>,
    retry: u32,
    quarantine: u32,
    recoveries: Recoveries,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Signalled when connections change, queue memory frees up, or the host closes.
    cv: Condvar,
    waker: Waker,
    notifier: Notifier,
    url: Url,
    proto: mirai_proto::Config,
    /// Daemons must prove knowledge of this (None: authentication disabled).
    secret: Option<Vec<u8>>,
    max_handshakes: usize,
    /// The I/O thread, where completion callbacks run: calls that wait for it must not block there.
    io_thread: std::sync::OnceLock<std::thread::ThreadId>,
    /// The CA certificate daemons verify a TLS host with.
    tls_ca: Option<String>,
    /// Memory held by frames still arriving.
    recv: RecvGauge,
}

/// A host. Dropping it closes it.
pub struct Host {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) const WAKER: Token = Token(1);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Host {
    /// Starts a host listening at `url` (`ipc://`, `abstract://`, `tcp://`); port 0 picks a
    /// free port, reported by [`Host::url`].
    pub fn listen(url: &str, options: HostOptions) -> Result<Host, Error> {
        let url = Url::parse(url)?;
        let secret = options.auth.resolve()?;
        match (options.heartbeat, options.peer_timeout) {
            (Some(h), _) if h.is_zero() => {
                return Err(Error::InvalidArgument("heartbeat must be positive (None turns it off)".into()));
            }
            (None, Some(_)) => {
                return Err(Error::InvalidArgument(
                    "peer_timeout needs heartbeat: without heartbeats every idle daemon would time out"
                        .into(),
                ));
            }
            (Some(h), Some(t)) if t < h * 3 => {
                return Err(Error::InvalidArgument("peer_timeout must be at least three heartbeats".into()));
            }
            _ => {}
        }
        if options.quarantine == 0 {
            return Err(Error::InvalidArgument("quarantine must be at least 1".into()));
        }
        if options.max_handshakes == 0 {
            return Err(Error::InvalidArgument("max_handshakes must be at least 1".into()));
        }
        crate::fd_limit::raise();
        let (server_tls, tls_ca) = if url.is_tls() {
            let identity = match options.tls {
                Some(identity) => identity,
                None => tls::generate(&url)?,
            };
            let config = tls::server_config(
                &identity.cert_chain_pem,
                &identity.key_pem,
                identity.key_password.as_deref(),
            )?;
            (Some(config), Some(identity.ca_pem))
        } else {
            (None, None)
        };
        let (listener, url) = Listener::bind(&url, server_tls)?;
        let poll = Poll::new().map_err(|e| Error::io("cannot create poller", e))?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(|e| Error::io("cannot create waker", e))?;
        let notifier = Notifier::new().map_err(|e| Error::io("cannot create completion fd", e))?;
        let proto = mirai_proto::Config {
            max_frame: options.max_frame,
            handshake_timeout: Some(ms(options.handshake_timeout)),
            heartbeat_interval: options.heartbeat.map(ms),
            peer_timeout: options.peer_timeout.map(ms),
        };
        let state = State {
            dispatcher: Dispatcher::new(),
            tasks: HashMap::new(),
            daemons: HashMap::new(),
            timers: BinaryHeap::new(),
            next_task: 0,
            next_daemon: 0,
            stream: options.stream.unwrap_or_else(rng::random_stream),
            memory_limit: options.memory_limit.unwrap_or(0),
            init_blob: options.init_blob,
            closing: false,
            wake_at: None,
            dead: Vec::new(),
            retry: options.retry,
            quarantine: options.quarantine,
            recoveries: Recoveries::default(),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            cv: Condvar::new(),
            waker,
            notifier,
            url,
            proto,
            secret,
            max_handshakes: options.max_handshakes,
            io_thread: std::sync::OnceLock::new(),
            tls_ca,
            recv: RecvGauge::new(options.recv_budget),
        });
        let loop_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("mirai-host".into())
            .spawn(move || {
                let _ = loop_shared.io_thread.set(std::thread::current().id());
                let shared = loop_shared.clone();
                if catch_unwind(AssertUnwindSafe(|| event_loop::run(loop_shared, poll, listener))).is_err() {
                    // The connections went with the loop: nothing else would resolve the tasks.
                    shared.abandon();
                }
            })
            .map_err(|e| Error::io("cannot start host thread", e))?;
        Ok(Host { shared, thread: Mutex::new(Some(thread)) })
    }

    /// The URL daemons dial, with the actual port when port 0 was asked for.
    pub fn url(&self) -> String {
        self.shared.url.to_string()
    }

    /// The secret daemons must prove they know (None when authentication is disabled).
    /// Launchers hand it to daemons in the `MIRAI_SECRET` environment variable, hex-encoded.
    pub fn secret(&self) -> Option<&[u8]> {
        self.shared.secret.as_deref()
    }

    /// The CA certificate (PEM) daemons need to verify this host, for `tls+tcp://` hosts.
    pub fn tls_ca_pem(&self) -> Option<&str> {
        self.shared.tls_ca.as_deref()
    }

    /// Environment variables a daemon of this host needs: the secret and the TLS CA.
    pub fn daemon_env(&self) -> Vec<(String, String)> {
        crate::launch::Target::of(self).env()
    }

    /// Starts `n` local daemon processes from `template`, with this host's URL filled in and
    /// the secret and TLS CA passed in their environment.
    pub fn launch_local(
        &self,
        n: usize,
        template: &crate::launch::CommandTemplate,
    ) -> Result<Vec<crate::launch::LocalDaemon>, Error> {
        let mut t = template.clone();
        t.env.extend(self.daemon_env());
        crate::launch::spawn_local(&self.url(), &t, n)
    }

    /// Submits a task and returns its handle at once. Blocks only while the queue is at its
    /// memory cap.
    pub fn submit(&self, payload: Vec<u8>, options: SubmitOptions) -> Result<Task, Error> {
        let mut st = self.shared.lock();
        while !st.closing && st.memory_limit > 0 && st.dispatcher.queued_bytes().0 >= st.memory_limit {
            if self.shared.on_io_thread() {
                return Err(Error::InvalidArgument(
                    "the queue is at its memory cap, and waiting for room from a completion callback would \
                     stop the host: use try_submit there"
                        .into(),
                ));
            }
            st = self.shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        self.shared.submit_locked(&mut st, payload, Submission::Single, options)
    }

    /// Like [`Host::submit`], but refuses with [`Error::Full`] instead of blocking.
    pub fn try_submit(&self, payload: Vec<u8>, options: SubmitOptions) -> Result<Task, Error> {
        let mut st = self.shared.lock();
        if st.memory_limit > 0 && st.dispatcher.queued_bytes().0 >= st.memory_limit && !st.closing {
            return Err(Error::Full);
        }
        self.shared.submit_locked(&mut st, payload, Submission::Single, options)
    }

    /// Blocks until the queue is below its memory cap or `timeout` passes (`None`: no limit);
    /// returns whether it is below (bindings wait in slices to stay interruptible, then
    /// `try_submit`).
    pub fn wait_capacity(&self, timeout: Option<Duration>) -> bool {
        let deadline = instant_after(timeout);
        let mut st = self.shared.lock();
        loop {
            if st.closing || st.memory_limit == 0 || st.dispatcher.queued_bytes().0 < st.memory_limit {
                return true;
            }
            if self.shared.on_io_thread() {
                return false;
            }
            st = match self.shared.wait(st, deadline) {
                Some(st) => st,
                None => return false,
            };
        }
    }

    /// Sends one copy of `payload` to every connected daemon, and at least `min` copies (extra
    /// copies wait for daemons to connect). Each copy runs on a different daemon, and tasks
    /// submitted later are dispatched only after every copy has been.
    pub fn everywhere(&self, payload: &[u8], min: usize) -> Result<Vec<Task>, Error> {
        let mut st = self.shared.lock();
        let n = (st.dispatcher.counters().connections as usize).max(min).max(1);
        (0..n)
            .map(|i| {
                let marked = i + 1 < n;
                let kind = Submission::Broadcast { last: !marked };
                self.shared.submit_locked(&mut st, payload.to_vec(), kind, SubmitOptions::default())
            })
            .collect()
    }

    /// Whether the host has been closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closing
    }

    /// The dispatcher's counters.
    pub fn counters(&self) -> Counters {
        self.shared.lock().dispatcher.counters()
    }

    /// What requeueing, retry and quarantine did so far.
    pub fn recoveries(&self) -> Recoveries {
        self.shared.lock().recoveries
    }

    /// Queue memory use.
    pub fn memory(&self) -> Memory {
        let st = self.shared.lock();
        let (used, peak) = st.dispatcher.queued_bytes();
        Memory { used, peak, limit: (st.memory_limit > 0).then_some(st.memory_limit) }
    }

    /// Memory held by frames still arriving (those over 64 KiB), against
    /// [`HostOptions::recv_budget`]; it leaves the count when a frame completes or its
    /// connection closes.
    pub fn recv_memory(&self) -> Memory {
        self.shared.recv.memory()
    }

    /// The daemons connected now, in order of connection.
    pub fn daemons(&self) -> Vec<DaemonInfo> {
        let st = self.shared.lock();
        let mut list: Vec<DaemonInfo> = st.daemons.values().map(|d| d.info.clone()).collect();
        list.sort_by_key(|d| d.daemon_id);
        list
    }

    /// Like `wait_connections`, but also gives up when `stop()` holds; `stop` is re-checked
    /// whenever the host's waiters are woken (see [`Host::waker`]).
    pub(crate) fn wait_connections_unless(
        &self,
        n: u64,
        timeout: Option<Duration>,
        stop: impl Fn() -> bool,
    ) -> bool {
        let deadline = instant_after(timeout);
        let mut st = self.shared.lock();
        while st.dispatcher.counters().connections < n {
            if st.closing || stop() || self.shared.on_io_thread() {
                return false;
            }
            st = match self.shared.wait(st, deadline) {
                Some(st) => st,
                None => return false,
            };
        }
        true
    }

    /// A function that wakes this host's waiters, for events the host does not see itself.
    pub(crate) fn waker(&self) -> Arc<dyn Fn() + Send + Sync> {
        let shared = Arc::downgrade(&self.shared);
        Arc::new(move || {
            if let Some(s) = shared.upgrade() {
                let _guard = s.lock();
                s.cv.notify_all();
            }
        })
    }

    /// Blocks until at least `n` daemons are connected, or `timeout` passes, or the host closes.
    /// Returns whether `n` were reached.
    pub fn wait_connections(&self, n: u64, timeout: Option<Duration>) -> bool {
        self.wait_connections_unless(n, timeout, || false)
    }

    /// Blocks until one of `tasks` is resolved or `timeout` passes; returns the index of the
    /// first resolved task in list order.
    pub fn race(&self, tasks: &[Task], timeout: Option<Duration>) -> Option<usize> {
        if self.shared.on_io_thread() {
            // Nothing resolves while a callback runs on the I/O thread: look, but do not wait.
            return tasks.iter().position(Task::is_resolved);
        }
        let mut found = None;
        self.shared.notifier.wait_until(timeout, || {
            found = tasks.iter().position(Task::is_resolved);
            found.is_some() || self.shared.lock().closing
        });
        found
    }

    /// A file descriptor that is readable while completions of tasks submitted with `notify`
    /// are waiting in the queue; [`Host::take_completions`] empties the queue. Valid until the
    /// host is dropped.
    pub fn completion_fd(&self) -> std::os::fd::RawFd {
        self.shared.notifier.fd()
    }

    /// The ids of `notify` tasks that resolved since the last call, in order of resolution, at
    /// most `max` of them (the fd stays readable while more wait).
    pub fn take_completions(&self, max: usize) -> Vec<u64> {
        self.shared.notifier.take(max)
    }

    /// Tells every connected daemon to exit, even those that would stay for a new host
    /// (`daemons(NULL)`). Tasks they are running resolve as connection reset (19).
    pub fn exit_daemons(&self) {
        let mut st = self.shared.lock();
        let keys: Vec<DaemonKey> = st.daemons.keys().copied().collect();
        for key in keys {
            st.dispatcher.retire(key);
        }
        for d in st.daemons.values() {
            let mut link = d.link.lock().unwrap_or_else(|e| e.into_inner());
            let _ = link.send(Message::Exit { reason: ExitReason::Shutdown, detail: String::new() });
        }
    }

    /// Closes the host: every unresolved task resolves as connection reset (19), daemons are
    /// told to exit, and the listener closes. Returns once the I/O thread has stopped.
    pub fn close(&self) {
        self.shared.shut(ErrorCode::ConnectionReset);
        let _ = self.shared.waker.wake();
        // The lock is held while joining, so a concurrent close returns only once the I/O thread
        // has stopped too. From the I/O thread itself (a callback) there is nothing to wait for:
        // the handle stays for another closer.
        let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if thread.as_ref().is_some_and(|t| t.thread().id() != std::thread::current().id())
            && let Some(t) = thread.take()
        {
            let _ = t.join();
        }
    }
}

/// Task payloads a connection gave back once sent, kept with their tasks while these wait for
/// their result (a task resolved meanwhile lets its payload go).
pub(super) fn keep_returned(st: &mut State, returned: impl IntoIterator<Item = (u64, Vec<u8>)>) {
    for (id, payload) in returned {
        if let Some(e) = st.tasks.get_mut(&id) {
            e.kept = Some(payload);
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the host closed and resolves every task left with `code`; the first call only.
    fn shut(&self, code: ErrorCode) {
        let completions = {
            let mut st = self.lock();
            if st.closing {
                Vec::new()
            } else {
                st.closing = true;
                st.dispatcher.clear_queue();
                st.tasks.drain().map(|(_, e)| (e.cell, TaskStatus::Failed(code), Vec::new())).collect()
            }
        };
        self.cv.notify_all();
        self.finish(completions);
        self.notifier.wake_all();
    }

    /// The I/O thread panicked: the host is closed, and its tasks resolve with 7 (object closed).
    fn abandon(&self) {
        log::error!("host {}: the I/O thread panicked; the host is closed", self.url);
        self.shut(ErrorCode::ObjectClosed);
    }

    /// Whether this is the host's I/O thread (a completion callback is running): waiting there
    /// for something the I/O thread must do would wait forever.
    pub(crate) fn on_io_thread(&self) -> bool {
        self.io_thread.get().is_some_and(|&id| id == std::thread::current().id())
    }

    /// Waits on the host's condition variable until woken or `deadline` (`None`: no deadline);
    /// `None` once the deadline has passed.
    fn wait<'a>(
        &self,
        st: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> Option<MutexGuard<'a, State>> {
        match deadline {
            None => Some(self.cv.wait(st).unwrap_or_else(|e| e.into_inner())),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                Some(self.cv.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0)
            }
        }
    }

    fn submit_locked(
        self: &Arc<Self>,
        st: &mut State,
        payload: Vec<u8>,
        kind: Submission,
        options: SubmitOptions,
    ) -> Result<Task, Error> {
        if st.closing {
            return Err(Error::Closed);
        }
        st.next_task += 1;
        let id = st.next_task;
        let cell = TaskCell::new(id, options.notify, options.callback);
        let everywhere = matches!(kind, Submission::Broadcast { .. });
        let retries = if everywhere { 0 } else { options.retry.unwrap_or(st.retry) };
        st.tasks.insert(
            id,
            TaskEntry { cell: cell.clone(), daemon: None, everywhere, retries, losses: 0, kept: None },
        );
        if let Some(timeout) = options.timeout {
            let deadline = deadline_after(timeout);
            st.timers.push(Reverse((deadline, id)));
            if st.wake_at.is_none_or(|w| deadline < w) {
                // Recorded, so a burst of timed submissions wakes the loop once, not each time.
                st.wake_at = Some(deadline);
                let _ = self.waker.wake();
            }
        }
        let sync = matches!(kind, Submission::Broadcast { last: false });
        if let Some(a) = st.dispatcher.submit(id, sync, payload) {
            self.assign(st, a);
        }
        Ok(Task { cell, host: Arc::downgrade(self) })
    }

    /// Sends an assigned task to its daemon. A daemon found leaving before anything was sent
    /// hands the task back to the queue, to go to the next daemon in its place.
    fn assign(&self, st: &mut State, a: Assignment) {
        let mut everywhere = false;
        let mut keep = false;
        if let Some(t) = st.tasks.get_mut(&a.id) {
            t.daemon = Some(a.daemon);
            everywhere = t.everywhere;
            keep = !everywhere && (t.retries > 0 || a.payload.len() <= KEEP_SMALL);
        }
        let entry = st.daemons.get(&a.daemon).map(|d| (d.link.clone(), d.info.daemon_id));
        let mut guard = entry.as_ref().map(|(l, _)| l.lock().unwrap_or_else(|e| e.into_inner()));
        let ready = guard.as_ref().is_some_and(|g| g.proto.state() == mirai_proto::State::Ready);
        // Copies of a broadcast are not moved: each must reach a daemon of its own.
        if !ready && !everywhere {
            drop(guard);
            for next in st.dispatcher.bounce(a.daemon, a.id, false, a.payload) {
                self.assign(st, next);
            }
            return;
        }
        let (Some(g), Some((_, daemon_id))) = (guard.as_mut(), entry.as_ref()) else { return };
        let msg = Message::Task { id: a.id, everywhere, payload: a.payload };
        let sent = if keep {
            g.proto.send_task_returning(msg).map_err(Error::from).and_then(|()| g.flush().map(|_| ()))
        } else {
            g.send(msg).map(|_| ())
        };
        keep_returned(st, std::iter::from_fn(|| g.proto.take_returned()));
        drop(guard);
        if let Err(e) = sent {
            log::warn!("daemon {daemon_id}: cannot send task {}: {e}", a.id);
            st.dead.push(a.daemon);
            let _ = self.waker.wake();
        }
    }

    /// Resolves a task without a result (cancel: 20, timeout: 5), interrupting it on its daemon
    /// if it runs. Returns false when it had already resolved.
    pub(crate) fn cancel(&self, id: u64, code: ErrorCode) -> bool {
        let mut st = self.lock();
        let Some(entry) = st.tasks.remove(&id) else {
            return false;
        };
        match entry.daemon {
            Some(key) => {
                if let Some(d) = st.daemons.get(&key) {
                    let mut link = d.link.lock().unwrap_or_else(|e| e.into_inner());
                    if link.proto.in_flight() == Some(id) && link.send(Message::Cancel { id }).is_err() {
                        drop(link);
                        st.dead.push(key);
                        let _ = self.waker.wake();
                    }
                }
            }
            None => {
                st.dispatcher.cancel_queued(id);
                self.cv.notify_all();
            }
        }
        drop(st);
        self.finish(vec![(entry.cell, TaskStatus::Failed(code), Vec::new())]);
        true
    }

    /// Accepts a daemon that completed its handshake: sends its init bundle and gives it work.
    fn accept(
        &self,
        st: &mut State,
        key: DaemonKey,
        link: &Arc<Mutex<Link>>,
        identity: Identity,
    ) -> Result<(), Error> {
        st.next_daemon += 1;
        st.stream = rng::next_stream(st.stream);
        let daemon_id = st.next_daemon;
        link.lock().unwrap_or_else(|e| e.into_inner()).send(Message::Init {
            daemon_id,
            rng_stream: st.stream,
            heartbeat_ms: self.proto.heartbeat_interval.unwrap_or(0),
            blob: st.init_blob.clone(),
        })?;
        log::debug!(
            "daemon {daemon_id} connected: {} pid {}",
            crate::peer_text::for_log(&identity.hostname),
            identity.pid
        );
        st.daemons.insert(key, DaemonEntry { link: link.clone(), info: DaemonInfo { daemon_id, identity } });
        for a in st.dispatcher.connect(key) {
            self.assign(st, a);
        }
        self.cv.notify_all();
        Ok(())
    }

    /// A daemon replied to the task it had (the protocol guarantees the reply's id is that
    /// task's).
    fn on_result(
        &self,
        st: &mut State,
        key: DaemonKey,
        status: TaskStatus,
        last: bool,
        payload: Vec<u8>,
        out: &mut Completions,
    ) {
        let (done, next) = st.dispatcher.complete(key, last);
        // A task cancelled or timed out meanwhile is gone from `tasks`: its late result is dropped.
        if let Some(e) = done.and_then(|id| st.tasks.remove(&id)) {
            out.push((e.cell, status, payload));
        }
        if last && let Some(d) = st.daemons.remove(&key) {
            let mut link = d.link.lock().unwrap_or_else(|e| e.into_inner());
            let _ = link.send(Message::Exit { reason: ExitReason::Shutdown, detail: String::new() });
        }
        // A connection ending changes the counts waiters watch; tasks leaving the queue free
        // room under a memory cap, for submissions blocked there.
        if last || (st.memory_limit > 0 && !next.is_empty()) {
            self.cv.notify_all();
        }
        for a in next {
            self.assign(st, a);
        }
    }

    /// A daemon's connection ended: its running task (if any) resolves as connection reset.
    fn disconnect(&self, st: &mut State, key: DaemonKey, out: &mut Completions) {
        let known = st.daemons.remove(&key).is_some();
        // A submitter may have marked it dead meanwhile; the key is about to be reused by the next
        // connection, which that mark must not close.
        st.dead.retain(|&k| k != key);
        if let Some(id) = st.dispatcher.disconnect(key) {
            self.lost(st, id, out);
        }
        if known {
            self.cv.notify_all();
        }
    }

    /// Task `id` was at a daemon that died: it runs again if it has retries left and its payload
    /// came back, is quarantined once it has been at `quarantine` dead daemons, and otherwise
    /// resolves with 19.
    fn lost(&self, st: &mut State, id: u64, out: &mut Completions) {
        let quarantine = st.quarantine;
        let Some(e) = st.tasks.get_mut(&id) else { return };
        e.daemon = None;
        let payload = if e.retries > 0 { e.kept.take() } else { None };
        let code = match payload {
            Some(_) if e.losses + 1 >= quarantine => ErrorCode::ConnectionAborted,
            Some(payload) => {
                e.losses += 1;
                e.retries -= 1;
                st.recoveries.retried += 1;
                for a in st.dispatcher.requeue(id, payload) {
                    self.assign(st, a);
                }
                return;
            }
            None => ErrorCode::ConnectionReset,
        };
        if code == ErrorCode::ConnectionAborted {
            st.recoveries.quarantined += 1;
            log::warn!("host {}: task {id} quarantined: it was at {quarantine} daemons that died", self.url);
        }
        if let Some(e) = st.tasks.remove(&id) {
            out.push((e.cell, TaskStatus::Failed(code), Vec::new()));
        }
    }

    /// The daemon at `key` left on its own between tasks (idle or wall time) as its task crossed
    /// on the wire: that task was never evaluated and goes to the next daemon, if its payload
    /// came back.
    pub(super) fn left_unevaluated(&self, st: &mut State, key: DaemonKey) {
        let Some(id) = st.dispatcher.task_at(key) else { return };
        let Some(payload) = st.tasks.get_mut(&id).and_then(|e| e.kept.take()) else { return };
        st.recoveries.requeued += 1;
        for a in st.dispatcher.bounce(key, id, false, payload) {
            self.assign(st, a);
        }
    }

    /// Expired task deadlines, removed from the timer heap.
    fn expired(&self, st: &mut State, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(Reverse((deadline, id))) = st.timers.peek().copied() {
            if deadline > now {
                break;
            }
            st.timers.pop();
            if st.tasks.contains_key(&id) {
                out.push(id);
            }
        }
        out
    }

    /// The next task deadline, skipping those of tasks already resolved.
    fn next_deadline(&self, st: &mut State) -> Option<u64> {
        while let Some(Reverse((deadline, id))) = st.timers.peek().copied() {
            if st.tasks.contains_key(&id) {
                return Some(deadline);
            }
            st.timers.pop();
        }
        None
    }

    /// Resolves cells and runs callbacks; call with no lock held.
    pub(crate) fn finish(&self, completions: Completions) {
        for (cell, status, payload) in completions {
            let Ok(callback) = cell.resolve(status, payload) else {
                continue;
            };
            self.notifier.completed(cell.id, cell.notify);
            if let Some(cb) = callback {
                let id = cell.id;
                if catch_unwind(AssertUnwindSafe(|| cb(id, status))).is_err() {
                    log::error!("completion callback of task {id} panicked");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_whose_io_thread_died_is_closed_and_resolves_its_tasks() {
        let url = format!("abstract://mirai-abandon-{}", std::process::id());
        let host = Host::listen(&url, HostOptions::default()).unwrap();
        let queued = host.submit(b"never sent".to_vec(), SubmitOptions::default()).unwrap();
        host.shared.abandon();
        assert!(queued.wait(Some(Duration::from_secs(5))));
        assert_eq!(queued.status(), Some(TaskStatus::Failed(ErrorCode::ObjectClosed)));
        assert!(host.is_closed());
        assert!(matches!(host.submit(Vec::new(), SubmitOptions::default()), Err(Error::Closed)));
        host.close();
    }
}
