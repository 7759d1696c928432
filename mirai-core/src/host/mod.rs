//! The host: one per compute profile. It listens at a URL, accepts daemons, queues tasks FIFO
//! and hands each to an idle daemon.
//!
//! Threads: an I/O thread per host runs the mio event loop (accepts, reads, timers). Every
//! decision is the core's (`core.rs`, a state machine behind one mutex that performs no I/O);
//! the thread that fed it an event carries out the actions it returned once that lock is
//! released. So a `submit` that finds an idle daemon writes the task to that daemon's socket
//! itself (non-blocking), with no thread hop, and a socket that is full is finished by the I/O
//! thread on its next writable event. Lock order: a connection's mutex, then the core's; the
//! core's lock is never held while taking a connection's.

mod admission;
mod core;
pub mod dispatcher;
mod event_loop;
mod id_ring;
mod recv_budget;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};
use mirai_proto::{ErrorCode, Message};

use self::core::{Action, Core, Sent, Settings, TaskOptions};
pub use self::core::{DaemonInfo, Recoveries};
pub use dispatcher::Counters;
use dispatcher::{DaemonKey, Kind};
use recv_budget::RecvGauge;

use crate::auth::Auth;
use crate::clock::{deadline_after, instant_after, now_ms};
use crate::condvar::CountedCondvar;
use crate::error::Error;
use crate::link::Link;
use crate::notify::Notifier;
use crate::rng::Stream;
use crate::task::{Callback, Task, TaskCell, TaskHost, TaskStatus};
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
    /// A task cancelled (or timed out) at a daemon must have stopped within this time; a daemon
    /// whose evaluator ignores the interrupt is then dropped (and ended, if this host launched
    /// it), so it does not stay wedged. `None` leaves such a daemon be.
    pub cancel_grace: Option<Duration>,
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
            cancel_grace: Some(Duration::from_secs(30)),
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

/// A host. Dropping it closes it.
pub struct Host {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the host shares between its I/O thread and the threads calling it. The core holds
/// every decision; its actions are carried out with its lock released.
pub(crate) struct Shared {
    core: Mutex<Core<LinkRef>>,
    /// Signalled when connections change, queue memory frees up, or the host closes.
    cv: CountedCondvar,
    waker: Waker,
    /// When the I/O thread will next wake by itself (ms; `u64::MAX`: not by itself), so
    /// submitters know whether a new deadline needs it woken.
    wake_at: AtomicU64,
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
    /// Set, under the core's lock, once the I/O thread serves no more: the listener is closed,
    /// the daemons are forgotten and no callback runs again (`close` waits for this, not for
    /// the daemons' connections to be closed).
    served: AtomicBool,
    /// Processes started for this host, by pid (`launch_local`): a daemon among them that
    /// ignores a cancel is ended, not only disconnected.
    launched: Mutex<Adopted>,
    /// Connections whose next deadline a write on another thread brought forward (the memory
    /// of a large payload it finished, kept for a while): the I/O thread takes up their timers.
    rearm: Mutex<Vec<DaemonKey>>,
}

/// A process a launcher started for a host (see [`Host::adopt_process`]).
pub trait Process: Send {
    fn pid(&self) -> u32;
    fn has_exited(&self) -> bool;
    /// Ends it (SIGKILL), if it still runs.
    fn end(&self);
}

/// The processes a host adopted, by pid. Those that have exited are let go as more come, so the
/// map stays the size of what runs, however many daemons an autoscaling session starts.
#[derive(Default)]
struct Adopted {
    processes: std::collections::HashMap<u32, Box<dyn Process>>,
    /// The size at which exited processes are next swept out.
    sweep_at: usize,
}

impl Adopted {
    fn adopt(&mut self, process: Box<dyn Process>) {
        if self.processes.len() >= self.sweep_at {
            self.processes.retain(|_, p| !p.has_exited());
            self.sweep_at = (self.processes.len() * 2).max(64);
        }
        self.processes.insert(process.pid(), process);
    }
}

/// A daemon's connection, as the core names it in its actions. Two are equal when they are the
/// same connection (a key is reused by the next connection; the link is not).
#[derive(Clone)]
pub(crate) struct LinkRef(pub Arc<Mutex<Link>>);

impl PartialEq for LinkRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

pub(crate) const WAKER: Token = Token(1);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Host {
    /// Starts a host listening at `url` (`ipc://`, `abstract://`, `tcp://`, `tls+tcp://`,
    /// `ws://`, `wss://`); port 0 picks a free port, reported by [`Host::url`].
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
        if options.cancel_grace.is_some_and(|g| g.is_zero()) {
            return Err(Error::InvalidArgument("cancel_grace must be positive (None turns it off)".into()));
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
        let core = Core::new(Settings {
            memory_limit: options.memory_limit.unwrap_or(0),
            stream: options.stream.unwrap_or_else(crate::rng::random_stream),
            init_blob: options.init_blob,
            heartbeat_ms: proto.heartbeat_interval.unwrap_or(0),
            retry: options.retry,
            quarantine: options.quarantine,
            cancel_grace: options.cancel_grace.map(ms),
        });
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            cv: CountedCondvar::new(),
            waker,
            wake_at: AtomicU64::new(u64::MAX),
            notifier,
            url,
            proto,
            secret,
            max_handshakes: options.max_handshakes,
            io_thread: std::sync::OnceLock::new(),
            tls_ca,
            recv: RecvGauge::new(options.recv_budget),
            served: AtomicBool::new(false),
            launched: Mutex::new(Adopted::default()),
            rearm: Mutex::new(Vec::new()),
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
                // However the loop ended (it may not have started), a closer is not kept waiting.
                shared.stop_serving();
            })
            .map_err(|e| Error::io("cannot start host thread", e))?;
        Ok(Host { shared, thread: Some(thread) })
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

    /// Marks a process as started for this host (the launchers do): should a daemon saying it
    /// runs as that process not stop a task it was told to within
    /// [`HostOptions::cancel_grace`], the process is ended, not only disconnected. Only
    /// processes adopted here are ever ended, and only through their handle, which knows
    /// whether its process still runs: a pid reused since (or a remote daemon's pid that
    /// happens to match) never is.
    pub fn adopt_process(&self, process: Box<dyn Process>) {
        self.shared.launched.lock().unwrap_or_else(|e| e.into_inner()).adopt(process);
    }

    /// Submits a task and returns its handle at once. Blocks only while the queue is at its
    /// memory cap.
    pub fn submit(&self, payload: Vec<u8>, options: SubmitOptions) -> Result<Task, Error> {
        let mut core = self.shared.lock();
        while core.is_full() {
            if self.shared.on_io_thread() {
                return Err(Error::InvalidArgument(
                    "the queue is at its memory cap, and waiting for room from a completion callback would \
                     stop the host: use try_submit there"
                        .into(),
                ));
            }
            core = self.shared.cv.wait(core);
        }
        self.shared.submit(core, payload, Kind::Single, options)
    }

    /// Like [`Host::submit`], but refuses with [`Error::Full`] instead of blocking.
    pub fn try_submit(&self, payload: Vec<u8>, options: SubmitOptions) -> Result<Task, Error> {
        let core = self.shared.lock();
        if core.is_full() {
            return Err(Error::Full);
        }
        self.shared.submit(core, payload, Kind::Single, options)
    }

    /// Blocks until the queue is below its memory cap or `timeout` passes (`None`: no limit);
    /// returns whether it is below (bindings wait in slices to stay interruptible, then
    /// `try_submit`).
    pub fn wait_capacity(&self, timeout: Option<Duration>) -> bool {
        let deadline = instant_after(timeout);
        let mut core = self.shared.lock();
        loop {
            if !core.is_full() {
                return true;
            }
            if self.shared.on_io_thread() {
                return false;
            }
            core = match self.shared.wait(core, deadline) {
                Some(core) => core,
                None => return false,
            };
        }
    }

    /// Sends one copy of `payload` to every connected daemon, and at least `min` copies (extra
    /// copies wait for daemons to connect). Each copy runs on a different daemon, and tasks
    /// submitted later are dispatched only after every copy has been. Copies beyond `min`
    /// whose daemons leave before taking them resolve with 19, so the barrier never outlives
    /// the daemons it waits for.
    pub fn everywhere(&self, payload: &[u8], min: usize) -> Result<Vec<Task>, Error> {
        let mut core = self.shared.lock();
        let n = core.broadcast_size(min);
        let mut tasks = Vec::with_capacity(n);
        // `n` ≥ `min` copies are queued below: a `min` past 32 bits could never be met anyway.
        let min = u32::try_from(min).unwrap_or(u32::MAX);
        for i in 0..n {
            let kind = Kind::Copy { last: i + 1 == n, min };
            let options = TaskOptions { notify: false, callback: None, deadline: None, retry: None };
            match core.submit(payload.to_vec(), kind, options) {
                Ok(cell) => tasks.push(Task::new(cell, &self.shared)),
                Err(e) => {
                    self.shared.release(core);
                    return Err(e);
                }
            }
        }
        self.shared.release(core);
        Ok(tasks)
    }

    /// Whether the host has been closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().is_closing()
    }

    /// The dispatcher's counters.
    pub fn counters(&self) -> Counters {
        self.shared.lock().counters()
    }

    /// What requeueing, retry, quarantine, escalation and barrier lifting did so far.
    pub fn recoveries(&self) -> Recoveries {
        self.shared.lock().recoveries()
    }

    /// Queue memory use.
    pub fn memory(&self) -> Memory {
        let core = self.shared.lock();
        let (used, peak) = core.queued_bytes();
        Memory { used, peak, limit: core.memory_limit() }
    }

    /// Memory held by frames still arriving (those over 64 KiB), against
    /// [`HostOptions::recv_budget`]; it leaves the count when a frame completes or its
    /// connection closes.
    pub fn recv_memory(&self) -> Memory {
        self.shared.recv.memory()
    }

    /// The daemons connected now, in order of connection.
    pub fn daemons(&self) -> Vec<DaemonInfo> {
        self.shared.lock().daemons()
    }

    /// Like `wait_connections`, but also gives up when `stop()` holds; `stop` is re-checked
    /// whenever the host's waiters are woken (see [`Host::waker`]).
    pub fn wait_connections_unless(
        &self,
        n: u64,
        timeout: Option<Duration>,
        stop: impl Fn() -> bool,
    ) -> bool {
        let deadline = instant_after(timeout);
        let mut core = self.shared.lock();
        while core.counters().connections < n {
            if core.is_closing() || stop() || self.shared.on_io_thread() {
                return false;
            }
            core = match self.shared.wait(core, deadline) {
                Some(core) => core,
                None => return false,
            };
        }
        true
    }

    /// A function that wakes this host's waiters, for events the host does not see itself (a
    /// launched process failing, for [`Host::wait_connections_unless`]).
    pub fn waker(&self) -> Arc<dyn Fn() + Send + Sync> {
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
            found.is_some() || self.shared.lock().is_closing()
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
        let mut core = self.shared.lock();
        core.exit_daemons();
        self.shared.release(core);
    }

    /// Closes the host: every unresolved task resolves as connection reset (19), and the
    /// listener closes. Returns once the I/O thread serves no more: no callback runs after, and
    /// the URL is free to listen at again. The daemons are then told to exit and their
    /// connections closed by the I/O thread, which dropping the host waits for.
    pub fn close(&self) {
        self.shared.shut(ErrorCode::ConnectionReset);
        let _ = self.shared.waker.wake();
        // From the I/O thread itself (a callback) there is nothing to wait for.
        if !self.shared.on_io_thread() {
            let mut core = self.shared.lock();
            while !self.shared.served.load(Ordering::Acquire) {
                core = self.shared.cv.wait(core);
            }
        }
    }
}

impl Drop for Host {
    /// Closes the host and waits for its I/O thread to end, so no thread outlives the handle.
    fn drop(&mut self) {
        self.close();
        if let Some(t) = self.thread.take().filter(|t| t.thread().id() != std::thread::current().id()) {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core<LinkRef>> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Releases the core's lock, then carries out the actions it queued.
    fn release(&self, mut core: MutexGuard<'_, Core<LinkRef>>) {
        let actions = core.take_actions();
        let wake_at = core.poll_timeout();
        drop(core);
        self.wake_for(wake_at);
        self.execute(actions);
    }

    /// Feeds the core an event and carries out what it decided.
    pub(crate) fn with_core(&self, event: impl FnOnce(&mut Core<LinkRef>)) {
        let mut core = self.lock();
        event(&mut core);
        self.release(core);
    }

    /// Wakes the I/O thread when the core's next deadline comes before the one it sleeps to.
    fn wake_for(&self, deadline: Option<u64>) {
        if let Some(d) = deadline
            && d < self.wake_at.load(Ordering::Acquire)
        {
            // Recorded, so a burst of timed submissions wakes the loop once, not each time.
            self.wake_at.store(d, Ordering::Release);
            let _ = self.waker.wake();
        }
    }

    /// Carries out the core's actions, in order, with no lock held but a connection's.
    fn execute(&self, actions: Vec<Action<LinkRef>>) {
        for action in actions {
            match action {
                Action::Send { key, link, msg, task: Some(task) } => self.send_task(key, &link, msg, task),
                Action::Send { key, link, msg, task: None } => self.send_control(key, &link, msg),
                Action::Resolve { cell, status, payload } => self.finish(&cell, status, payload),
                Action::EndProcess { pid } => self.end_process(pid),
                // Waiters check under the core's lock, which the change was made under.
                Action::Wake => self.cv.notify_all(),
            }
        }
    }

    /// Sends a task the core assigned to a daemon, and tells the core how it went (with the
    /// payload, when the link gave it back or the daemon never had it whole).
    fn send_task(&self, key: DaemonKey, link: &LinkRef, msg: Message, task: core::SentTask) {
        let Message::Task { id, everywhere, payload } = msg else { return };
        let mut guard = link.0.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = guard.proto.poll_timeout();
        let mut outcome = if task.cell.is_resolved() {
            Sent::Skipped
        } else if guard.proto.state() != mirai_proto::State::Ready {
            Sent::NotReady(payload)
        } else {
            let msg = Message::Task { id, everywhere, payload };
            let written = if task.keep {
                guard
                    .proto
                    .send_task_returning(msg)
                    .map_err(Error::from)
                    .and_then(|()| guard.flush().map(|_| ()))
            } else {
                guard.send(msg).map(|_| ())
            };
            match written {
                Ok(()) => Sent::Written(None),
                Err(e) => {
                    log::debug!("host {}: cannot send task {id} to daemon connection {key}: {e}", self.url);
                    Sent::Failed(None)
                }
            }
        };
        let failed = matches!(outcome, Sent::Failed(_));
        // Whatever was not wholly written never reached the daemon.
        let unsent = if failed { guard.proto.reclaim_unsent() } else { Vec::new() };
        // Under the connection's lock still (the order the locks are taken in allows it), so
        // the I/O thread cannot end this connection before the core knows how the send went.
        // The payloads the link gives back go straight to the core: no list per task.
        let mut core = self.lock();
        for (returned, payload) in std::iter::from_fn(|| guard.proto.take_returned()).chain(unsent) {
            if returned != id {
                // An earlier task's, whose writing this call finished.
                core.returned(returned, payload);
                continue;
            }
            outcome = match outcome {
                Sent::Written(_) => Sent::Written(Some(payload)),
                _ => Sent::Failed(Some(payload)),
            };
        }
        core.task_sent(key, link, id, outcome);
        let rearm = self.brought_forward(key, deadline, &guard);
        drop(guard);
        self.release(core);
        if failed || rearm {
            // The I/O thread closes it, or takes up its timer.
            let _ = self.waker.wake();
        }
    }

    /// Whether the write just made on the connection at `key`, whose deadline was `before`,
    /// brought that deadline forward; if so, the I/O thread is told to take it up.
    fn brought_forward(&self, key: DaemonKey, before: Option<u64>, link: &Link) -> bool {
        let earlier = link.deadline_earlier_than(before);
        if earlier {
            self.rearm.lock().unwrap_or_else(|e| e.into_inner()).push(key);
        }
        earlier
    }

    /// The connections [`Self::brought_forward`] named since the last call.
    pub(super) fn take_rearmed(&self) -> Vec<DaemonKey> {
        std::mem::take(&mut *self.rearm.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sends a control message (init, cancel, exit) on a daemon's connection.
    fn send_control(&self, key: DaemonKey, link: &LinkRef, msg: Message) {
        let mut guard = link.0.lock().unwrap_or_else(|e| e.into_inner());
        // Only the task the daemon runs can be cancelled: a cancel that finds another (its task
        // resolved before it went out) has nothing to do.
        if let Message::Cancel { id } = msg
            && guard.proto.in_flight() != Some(id)
        {
            return;
        }
        let deadline = guard.proto.poll_timeout();
        let sent = guard.send(msg);
        if self.brought_forward(key, deadline, &guard) {
            let _ = self.waker.wake();
        }
        // This write may have finished an earlier task's payload.
        let first = guard.proto.take_returned();
        if first.is_none() && sent.is_ok() {
            return;
        }
        let mut core = self.lock();
        for (id, payload) in first.into_iter().chain(std::iter::from_fn(|| guard.proto.take_returned())) {
            core.returned(id, payload);
        }
        if let Err(e) = &sent {
            log::debug!("host {}: cannot write to daemon connection {key}: {e}", self.url);
            core.broke(key, link);
        }
        drop(guard);
        self.release(core);
        if sent.is_err() {
            let _ = self.waker.wake();
        }
    }

    /// Ends a daemon process this host started, which did not stop a task it was told to.
    fn end_process(&self, pid: u32) {
        let process = self.launched.lock().unwrap_or_else(|e| e.into_inner()).processes.remove(&pid);
        if let Some(p) = process.filter(|p| !p.has_exited()) {
            log::warn!("host {}: ending daemon process {pid}", self.url);
            p.end();
        }
    }

    /// Submits under the lock the caller holds, then carries out what the core decided.
    fn submit(
        self: &Arc<Self>,
        mut core: MutexGuard<'_, Core<LinkRef>>,
        payload: Vec<u8>,
        kind: Kind,
        options: SubmitOptions,
    ) -> Result<Task, Error> {
        let options = TaskOptions {
            notify: options.notify,
            callback: options.callback,
            deadline: options.timeout.map(deadline_after),
            retry: options.retry,
        };
        let cell = core.submit(payload, kind, options);
        self.release(core);
        Ok(Task::new(cell?, self))
    }

    /// Marks the host closed and resolves every task left with `code`; the first call only.
    fn shut(&self, code: ErrorCode) {
        self.with_core(|c| {
            c.close(code);
        });
        self.notifier.wake_all();
    }

    /// The I/O thread serves no more (see `served`).
    fn stop_serving(&self) {
        let core = self.lock();
        self.served.store(true, Ordering::Release);
        drop(core);
        self.cv.notify_all();
    }

    /// The I/O thread panicked: the host is closed, and its tasks resolve with 7 (object closed).
    fn abandon(&self) {
        log::error!("host {}: the I/O thread panicked; the host is closed", self.url);
        self.shut(ErrorCode::ObjectClosed);
    }

    /// Whether this is the host's I/O thread (a completion callback is running): waiting there
    /// for something the I/O thread must do would wait forever.
    fn on_io_thread(&self) -> bool {
        self.io_thread.get().is_some_and(|&id| id == std::thread::current().id())
    }

    /// Waits on the host's condition variable until woken or `deadline` (`None`: no deadline);
    /// `None` once the deadline has passed.
    fn wait<'a>(
        &self,
        core: MutexGuard<'a, Core<LinkRef>>,
        deadline: Option<Instant>,
    ) -> Option<MutexGuard<'a, Core<LinkRef>>> {
        match deadline {
            None => Some(self.cv.wait(core)),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                Some(self.cv.wait_timeout(core, left))
            }
        }
    }

    /// Resolves a cell and runs its callback; called with no lock held.
    fn finish(&self, cell: &TaskCell, status: TaskStatus, payload: Vec<u8>) {
        let Ok(callback) = cell.resolve(status, payload) else {
            return;
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

impl TaskHost for Shared {
    fn cancel(&self, id: u64, code: ErrorCode) -> bool {
        let mut core = self.lock();
        let cancelled = core.cancel(now_ms(), id, code);
        self.release(core);
        cancelled
    }

    fn on_io_thread(&self) -> bool {
        Shared::on_io_thread(self)
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

    /// A process that has exited or not, and counts the times it was ended.
    struct Fake(u32, bool, Arc<std::sync::atomic::AtomicU32>);

    impl Process for Fake {
        fn pid(&self) -> u32 {
            self.0
        }
        fn has_exited(&self) -> bool {
            self.1
        }
        fn end(&self) {
            self.2.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn only_adopted_processes_that_still_run_are_ended_and_exited_ones_are_let_go() {
        let url = format!("abstract://mirai-adopt-{}", std::process::id());
        let host = Host::listen(&url, HostOptions::default()).unwrap();
        let ended = Arc::new(std::sync::atomic::AtomicU32::new(0));
        host.adopt_process(Box::new(Fake(7, false, ended.clone())));
        host.adopt_process(Box::new(Fake(8, true, ended.clone())));
        // A daemon saying it is pid 9 (another machine's, say) is nothing of ours; 8 has exited
        // (its pid may be another process's by now).
        host.shared.end_process(9);
        host.shared.end_process(8);
        assert_eq!(ended.load(Ordering::Relaxed), 0);
        host.shared.end_process(7);
        assert_eq!(ended.load(Ordering::Relaxed), 1);
        // Exited processes are swept out as more are adopted.
        for pid in 100..300 {
            host.adopt_process(Box::new(Fake(pid, true, ended.clone())));
        }
        let kept = host.shared.launched.lock().unwrap().processes.len();
        assert!(kept < 130, "{kept} adopted processes kept");
        host.close();
    }
}
