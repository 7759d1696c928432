//! The host's state machine: the task table, the queue and dispatcher, task deadlines, and a
//! record per connected daemon. It is fed events with the time (a submission, a cancel, a
//! message from a daemon, a connection ending, the clock) and queues actions (send a message,
//! resolve a task, drop a connection, wake waiters) that its caller carries out once it has
//! released the core's lock: no socket write, encryption or system call happens in here, so
//! it is tested without sockets and with a simulated clock.
//!
//! A connection is generic (`L`): the host gives each daemon's link handle, the tests a unit.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use mirai_proto::{ErrorCode, ExitReason, Identity, Message};

use super::dispatcher::{Assignment, Counters, DaemonKey, Dispatcher, Kind};
use super::id_ring::IdRing;
use crate::error::Error;
use crate::rng::{self, Stream};
use crate::task::{Callback, TaskCell, TaskStatus};

/// Payloads up to this size are kept while their task runs even without retries (the link
/// gives them back once sent, no copy is made), so a task a daemon never evaluated (it left on
/// its idle time as the task crossed) runs elsewhere instead of failing.
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
    /// Daemons dropped because a task cancelled there (or timed out) had not stopped within
    /// the grace period.
    pub escalated: u64,
    /// Copies of `everywhere` broadcasts resolved with 19 because the daemons they waited for
    /// left.
    pub surplus_copies: u64,
}

/// The settings the core works by.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub memory_limit: u64,
    pub stream: Stream,
    pub init_blob: Vec<u8>,
    pub heartbeat_ms: u64,
    pub retry: u32,
    pub quarantine: u32,
    /// How long a cancelled or timed-out task's daemon has to stop it before it is dropped
    /// (ms); `None` never drops it.
    pub cancel_grace: Option<u64>,
}

/// A task's own settings.
pub(crate) struct TaskOptions {
    pub notify: bool,
    pub callback: Option<Callback>,
    /// Deadline (ms), resolving it as timed out (5).
    pub deadline: Option<u64>,
    pub retry: Option<u32>,
}

/// Something the caller does for the core, in the order given.
pub(crate) enum Action<L> {
    /// Send a message to a daemon. For a task, `cell` is checked first (a task that resolved
    /// meanwhile is not sent), and `keep` asks the link to give the payload back once written;
    /// how it went is reported with [`Core::task_sent`].
    Send { key: DaemonKey, link: L, msg: Message, task: Option<SentTask> },
    /// Resolve a task (callbacks run here: no lock may be held).
    Resolve { cell: Arc<TaskCell>, status: TaskStatus, payload: Vec<u8> },
    /// End the process of a daemon whose connection is being dropped because it did not stop a
    /// task it was told to (`pid`, as the daemon said), if this host started it.
    EndProcess { pid: u32 },
    /// Connections, queue room or the host's state changed: wake the threads waiting on them.
    Wake,
}

/// How sending a task went, as [`Core::task_sent`] is told.
pub(crate) enum Sent {
    /// Written, or queued on the link to be; the payload if it came back already.
    Written(Option<Vec<u8>>),
    /// The link no longer took messages (its daemon is leaving): the task was not sent.
    NotReady(Vec<u8>),
    /// The write failed; the payload if it came back (the daemon never had the task whole).
    Failed(Option<Vec<u8>>),
    /// The task had resolved (cancelled, timed out) before it went out: not sent.
    Skipped,
}

/// How to send a task.
pub(crate) struct SentTask {
    pub cell: Arc<TaskCell>,
    pub keep: bool,
}

/// A task the host knows of, queued or at a daemon. Most tasks are queued, often a great many,
/// and with the default settings: what the others need is in `extra`, allocated when needed.
struct TaskEntry {
    cell: Arc<TaskCell>,
    extra: Option<Box<Extra>>,
}

/// What only some tasks need: settings other than the defaults (from submission), and where a
/// task is once it has been sent to a daemon (kept when it goes back to the queue).
#[derive(Default)]
struct Extra {
    /// Runs left after a daemon dies with it.
    retries: u32,
    /// A copy of an `everywhere` broadcast (told to the daemon's evaluator, never moved).
    everywhere: bool,
    daemon: Option<DaemonKey>,
    /// Its payload, given back by the link once sent, while it is at a daemon: so it can run
    /// elsewhere if that daemon leaves without evaluating it, or dies and it has retries.
    kept: Option<Vec<u8>>,
    /// Daemons that died with it.
    losses: u32,
    /// Its daemon left between tasks (idle or wall time) as it crossed on the wire, before its
    /// payload came back: it runs elsewhere once the payload does.
    crossed: bool,
    /// Handed out to be sent, and not yet reported on (see [`Core::task_sent`]).
    in_transit: bool,
    /// Its connection ended while it was in transit: what happens to it is decided when the
    /// sending is reported.
    detached: bool,
}

impl TaskEntry {
    fn new(cell: Arc<TaskCell>, retries: u32, everywhere: bool) -> Self {
        let extra =
            (retries > 0 || everywhere).then(|| Box::new(Extra { retries, everywhere, ..Extra::default() }));
        TaskEntry { cell, extra }
    }

    fn retries(&self) -> u32 {
        self.extra.as_ref().map_or(0, |x| x.retries)
    }

    fn everywhere(&self) -> bool {
        self.extra.as_ref().is_some_and(|x| x.everywhere)
    }

    fn daemon(&self) -> Option<DaemonKey> {
        self.extra.as_ref().and_then(|x| x.daemon)
    }

    fn in_transit(&self) -> bool {
        self.extra.as_ref().is_some_and(|x| x.in_transit)
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Back in the queue: at no daemon, and no longer crossing one's exit.
    fn unplace(&mut self) {
        if let Some(x) = self.extra.as_deref_mut() {
            x.daemon = None;
            x.crossed = false;
        }
    }
}

/// A connected daemon.
struct Peer<L> {
    link: L,
    info: DaemonInfo,
}

/// A connected daemon, as it introduced itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonInfo {
    /// Numbered from 1 in order of connection.
    pub daemon_id: u64,
    pub identity: Identity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A task's deadline.
    Deadline(u64),
    /// The daemon at the key was told to stop this task: it must have by now.
    Stop(DaemonKey, u64),
}

pub(crate) struct Core<L> {
    settings: Settings,
    dispatcher: Dispatcher,
    tasks: IdRing<TaskEntry>,
    peers: HashMap<DaemonKey, Peer<L>>,
    /// Entries whose task resolved otherwise are skipped when reached.
    timers: BinaryHeap<Reverse<(u64, Timer)>>,
    next_task: u64,
    next_daemon: u64,
    closing: bool,
    /// Connections to close (a write to them failed, or their daemon ignored a cancel), for the
    /// I/O thread, which owns them.
    broken: Vec<DaemonKey>,
    recoveries: Recoveries,
    actions: Vec<Action<L>>,
}

impl<L: Clone + PartialEq> Core<L> {
    pub fn new(settings: Settings) -> Self {
        Core {
            settings,
            dispatcher: Dispatcher::new(),
            tasks: IdRing::default(),
            peers: HashMap::new(),
            timers: BinaryHeap::new(),
            next_task: 0,
            next_daemon: 0,
            closing: false,
            broken: Vec::new(),
            recoveries: Recoveries::default(),
            actions: Vec::new(),
        }
    }

    /// The actions queued so far, to carry out once the lock is released.
    pub fn take_actions(&mut self) -> Vec<Action<L>> {
        std::mem::take(&mut self.actions)
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Whether the queue holds its memory cap (submitters wait, or are refused).
    pub fn is_full(&self) -> bool {
        !self.closing
            && self.settings.memory_limit > 0
            && self.dispatcher.queued_bytes().0 >= self.settings.memory_limit
    }

    pub fn memory_limit(&self) -> Option<u64> {
        (self.settings.memory_limit > 0).then_some(self.settings.memory_limit)
    }

    pub fn queued_bytes(&self) -> (u64, u64) {
        self.dispatcher.queued_bytes()
    }

    pub fn counters(&self) -> Counters {
        self.dispatcher.counters()
    }

    pub fn recoveries(&self) -> Recoveries {
        self.recoveries
    }

    /// The daemons connected now, in order of connection.
    pub fn daemons(&self) -> Vec<DaemonInfo> {
        let mut list: Vec<DaemonInfo> = self.peers.values().map(|p| p.info.clone()).collect();
        list.sort_by_key(|d| d.daemon_id);
        list
    }

    /// The next deadline, skipping those of tasks already resolved.
    pub fn poll_timeout(&mut self) -> Option<u64> {
        while let Some(&Reverse((due, timer))) = self.timers.peek() {
            if self.timer_live(timer) {
                return Some(due);
            }
            self.timers.pop();
        }
        None
    }

    fn timer_live(&self, timer: Timer) -> bool {
        match timer {
            Timer::Deadline(id) => self.tasks.get(id).is_some(),
            Timer::Stop(key, id) => self.dispatcher.task_at(key) == Some(id),
        }
    }

    /// A new task, ordinary or one copy of an `everywhere` broadcast. Returns its cell.
    pub fn submit(
        &mut self,
        payload: Vec<u8>,
        kind: Kind,
        options: TaskOptions,
    ) -> Result<Arc<TaskCell>, Error> {
        if self.closing {
            return Err(Error::Closed);
        }
        self.next_task += 1;
        let id = self.next_task;
        let cell = TaskCell::new(id, options.notify, options.callback);
        let everywhere = matches!(kind, Kind::Copy { .. });
        let retries = if everywhere { 0 } else { options.retry.unwrap_or(self.settings.retry) };
        self.tasks.insert(id, TaskEntry::new(cell.clone(), retries, everywhere));
        if let Some(deadline) = options.deadline {
            self.timers.push(Reverse((deadline, Timer::Deadline(id))));
        }
        if let Some(a) = self.dispatcher.submit(id, kind, payload) {
            self.assign(a);
        }
        Ok(cell)
    }

    /// Copies of a broadcast to send: one per connected daemon, and at least `min`.
    pub fn broadcast_size(&self, min: usize) -> usize {
        (self.dispatcher.counters().connections as usize).max(min).max(1)
    }

    /// Resolves a task without a result (cancel: 20, timeout: 5), telling its daemon to stop it
    /// if it runs. Returns false when it had already resolved.
    pub fn cancel(&mut self, now: u64, id: u64, code: ErrorCode) -> bool {
        let Some(entry) = self.tasks.remove(id) else {
            return false;
        };
        // A task handed back to the queue may still name the daemon it was meant for.
        let at = entry.daemon().filter(|&key| self.dispatcher.task_at(key) == Some(id));
        match at.and_then(|key| self.peers.get(&key).map(|p| (key, p.link.clone()))) {
            Some((key, link)) => {
                self.actions.push(Action::Send { key, link, msg: Message::Cancel { id }, task: None });
                if let Some(grace) = self.settings.cancel_grace {
                    self.timers.push(Reverse((now.saturating_add(grace), Timer::Stop(key, id))));
                }
            }
            None => {
                if self.dispatcher.cancel_queued(id) {
                    self.actions.push(Action::Wake);
                }
            }
        }
        self.resolve(entry.cell, TaskStatus::Failed(code), Vec::new());
        true
    }

    /// Tasks whose deadline passed resolve as timed out; daemons that did not stop a task
    /// they were told to within the grace period are dropped.
    pub fn handle_timeout(&mut self, now: u64) {
        while let Some(&Reverse((due, timer))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Deadline(id) => {
                    self.cancel(now, id, ErrorCode::TimedOut);
                }
                Timer::Stop(key, id) if self.dispatcher.task_at(key) == Some(id) => {
                    self.escalate(key, id);
                }
                Timer::Stop(..) => {}
            }
        }
    }

    /// The daemon at `key` still runs task `id`, long after it was told to stop: it leaves the
    /// pool, and its connection (and process, where the host started it) goes.
    fn escalate(&mut self, key: DaemonKey, id: u64) {
        let Some(peer) = self.peers.get(&key) else { return };
        log::warn!(
            "daemon {}: task {id} did not stop when told to; dropping the daemon",
            peer.info.daemon_id
        );
        self.recoveries.escalated += 1;
        self.actions.push(Action::EndProcess { pid: peer.info.identity.pid });
        self.retire(key);
        self.broken.push(key);
    }

    /// A daemon proved it holds the secret: it is sent its init bundle and takes work.
    pub fn connected(&mut self, key: DaemonKey, link: L, identity: Identity) {
        self.next_daemon += 1;
        self.settings.stream = rng::next_stream(self.settings.stream);
        let daemon_id = self.next_daemon;
        log::debug!(
            "daemon {daemon_id} connected: {} pid {}",
            crate::peer_text::for_log(&identity.hostname),
            identity.pid
        );
        let init = Message::Init {
            daemon_id,
            rng_stream: self.settings.stream,
            heartbeat_ms: self.settings.heartbeat_ms,
            blob: self.settings.init_blob.clone(),
        };
        self.actions.push(Action::Send { key, link: link.clone(), msg: init, task: None });
        self.peers.insert(key, Peer { link, info: DaemonInfo { daemon_id, identity } });
        for a in self.dispatcher.connect(key) {
            self.assign(a);
        }
        self.actions.push(Action::Wake);
    }

    /// A daemon replied to the task it had (the protocol guarantees the reply's id is that
    /// task's); with `last` it leaves.
    pub fn result(&mut self, key: DaemonKey, status: TaskStatus, last: bool, payload: Vec<u8>) {
        let (done, next) = self.dispatcher.complete(key, last);
        // A task cancelled or timed out meanwhile is gone: its late result is dropped.
        if let Some(e) = done.and_then(|id| self.tasks.remove(id)) {
            self.resolve(e.cell, status, payload);
        }
        if last && let Some(p) = self.peers.remove(&key) {
            let msg = Message::Exit { reason: ExitReason::Shutdown, detail: String::new() };
            self.actions.push(Action::Send { key, link: p.link, msg, task: None });
        }
        // A connection ending changes the counts waiters watch; tasks leaving the queue free
        // room under a memory cap.
        if last || (self.settings.memory_limit > 0 && !next.is_empty()) {
            self.actions.push(Action::Wake);
        }
        for a in next {
            self.assign(a);
        }
        self.resolve_surplus();
    }

    /// A daemon said it is leaving. Between tasks (idle or wall time) a task that crossed its
    /// `Exit` on the wire was never evaluated: it goes to the next daemon, now if its payload
    /// came back, or once the thread sending it reports.
    pub fn exiting(&mut self, key: DaemonKey, reason: ExitReason) {
        if matches!(reason, ExitReason::IdleTime | ExitReason::WallTime)
            && let Some(id) = self.dispatcher.task_at(key)
            && let Some(e) = self.tasks.get_mut(id)
        {
            let f = e.extra();
            match f.kept.take() {
                Some(payload) => self.requeue_from(key, id, payload),
                None => f.crossed = true,
            }
        }
        self.retire(key);
    }

    /// How the sending of task `id` to the daemon at `key` over `link` went: every task the
    /// core hands out to send is reported, by the thread that carried the send out.
    pub fn task_sent(&mut self, key: DaemonKey, link: &L, id: u64, outcome: Sent) {
        let Some(e) = self.tasks.get_mut(id) else {
            // It resolved meanwhile (cancelled, timed out). Written, its daemon replies to it
            // in time; otherwise that daemon takes the next task instead.
            match outcome {
                Sent::Written(_) => {}
                Sent::Failed(_) => self.broke(key, link),
                Sent::NotReady(_) | Sent::Skipped => {
                    for a in self.dispatcher.release(key, id) {
                        self.assign(a);
                    }
                }
            }
            return;
        };
        let f = e.extra();
        f.in_transit = false;
        let detached = std::mem::take(&mut f.detached);
        match outcome {
            Sent::Written(Some(payload)) if f.crossed => self.requeue_unevaluated(key, id, payload, detached),
            Sent::Written(Some(payload)) => {
                f.kept = Some(payload);
                if detached {
                    self.lost(id);
                }
            }
            Sent::Written(None) if detached => self.lost(id),
            Sent::Written(None) => {}
            // Neither reached the daemon whole.
            Sent::NotReady(payload) => self.requeue_unevaluated(key, id, payload, detached),
            Sent::Failed(payload) => {
                match payload.or_else(|| f.kept.take()) {
                    Some(payload) => self.requeue_unevaluated(key, id, payload, detached),
                    None if detached => self.lost(id),
                    None => {}
                }
                self.broke(key, link);
            }
            // The cell resolves before its entry goes; should the entry remain, it waits.
            Sent::Skipped => {}
        }
        self.resolve_surplus();
    }

    /// Task `id` was never evaluated by the daemon at `key` (`detached`: whose connection has
    /// ended since): it goes to the next daemon, in its place in the queue, and that daemon
    /// leaves the pool. A broadcast copy is not moved (each must reach a daemon of its own): it
    /// is lost with that daemon.
    fn requeue_unevaluated(&mut self, key: DaemonKey, id: u64, payload: Vec<u8>, detached: bool) {
        if !detached {
            return self.requeue_from(key, id, payload);
        }
        let Some(e) = self.tasks.get_mut(id) else { return };
        if e.everywhere() {
            return self.lost(id);
        }
        e.unplace();
        self.recoveries.requeued += 1;
        for a in self.dispatcher.requeue(id, payload) {
            self.assign(a);
        }
    }

    /// [`Self::requeue_unevaluated`] while the daemon at `key` still holds the task.
    fn requeue_from(&mut self, key: DaemonKey, id: u64, payload: Vec<u8>) {
        if self.dispatcher.task_at(key) != Some(id) {
            return;
        }
        let Some(e) = self.tasks.get_mut(id) else { return };
        if e.everywhere() {
            // Lost when the connection ends.
            return self.retire(key);
        }
        e.unplace();
        self.recoveries.requeued += 1;
        for a in self.dispatcher.bounce(key, id, payload) {
            self.assign(a);
        }
    }

    /// The daemon takes nothing more from now on (it is leaving, or its connection failed).
    pub fn retire(&mut self, key: DaemonKey) {
        self.dispatcher.retire(key);
        self.resolve_surplus();
    }

    /// A connection ended: its daemon's task (if any) is lost with it, unless it is among
    /// `unsent`, the task payloads the link had not wholly transmitted (so the daemon never had
    /// it): that one goes back to the queue. A task whose sending is still to be reported is
    /// decided when it is.
    pub fn disconnected(&mut self, key: DaemonKey, unsent: Vec<(u64, Vec<u8>)>) {
        for (id, payload) in unsent {
            self.requeue_from(key, id, payload);
        }
        let known = self.peers.remove(&key).is_some();
        // The key is about to be reused by the next connection, which a mark must not close.
        self.broken.retain(|&k| k != key);
        if let Some(id) = self.dispatcher.disconnect(key) {
            match self.tasks.get_mut(id) {
                Some(e) if e.in_transit() => {
                    let f = e.extra();
                    f.detached = true;
                    f.daemon = None;
                }
                _ => {
                    log::debug!("task {id} was at daemon connection {key} when it ended");
                    self.lost(id);
                }
            }
        }
        self.resolve_surplus();
        if known {
            self.actions.push(Action::Wake);
        }
    }

    /// Task `id` was at a daemon that died: it runs again if it has retries left and its payload
    /// came back, is quarantined once it has been at `quarantine` dead daemons, and otherwise
    /// resolves with 19.
    fn lost(&mut self, id: u64) {
        let quarantine = self.settings.quarantine;
        let Some(e) = self.tasks.get_mut(id) else { return };
        e.unplace();
        let f = e.extra();
        let payload = if f.retries > 0 { f.kept.take() } else { None };
        let code = match payload {
            Some(_) if f.losses + 1 >= quarantine => ErrorCode::ConnectionAborted,
            Some(payload) => {
                f.losses += 1;
                f.retries -= 1;
                self.recoveries.retried += 1;
                for a in self.dispatcher.requeue(id, payload) {
                    self.assign(a);
                }
                return;
            }
            None => ErrorCode::ConnectionReset,
        };
        if code == ErrorCode::ConnectionAborted {
            self.recoveries.quarantined += 1;
            log::warn!("task {id} quarantined: it was at {quarantine} daemons that died");
        }
        if let Some(e) = self.tasks.remove(id) {
            self.resolve(e.cell, TaskStatus::Failed(code), Vec::new());
        }
    }

    /// A task's payload, given back by its link once the I/O thread finished writing it.
    pub fn returned(&mut self, id: u64, payload: Vec<u8>) {
        let Some(e) = self.tasks.get_mut(id) else { return };
        let f = e.extra();
        match (f.crossed, f.daemon) {
            (true, Some(key)) => self.requeue_from(key, id, payload),
            _ => f.kept = Some(payload),
        }
    }

    /// Writing to the daemon at `key` over `link` failed on a submitting thread: it takes nothing
    /// more, and the I/O thread closes its connection (see [`Core::take_broken`]). A connection
    /// that ended meanwhile (its key may be another's by now) is left alone.
    pub fn broke(&mut self, key: DaemonKey, link: &L) {
        if self.peers.get(&key).is_some_and(|p| &p.link == link) {
            self.retire(key);
            self.broken.push(key);
        }
    }

    pub fn take_broken(&mut self) -> Vec<DaemonKey> {
        std::mem::take(&mut self.broken)
    }

    /// Every daemon is told to exit and takes nothing more; the tasks they run resolve as
    /// connection reset when their connections end.
    pub fn exit_daemons(&mut self) {
        let keys: Vec<DaemonKey> = self.peers.keys().copied().collect();
        for key in keys {
            self.retire(key);
            let link = self.peers[&key].link.clone();
            let msg = Message::Exit { reason: ExitReason::Shutdown, detail: String::new() };
            self.actions.push(Action::Send { key, link, msg, task: None });
        }
    }

    /// The host closes: every task left resolves with `code`. Returns false if it had already.
    pub fn close(&mut self, code: ErrorCode) -> bool {
        if self.closing {
            return false;
        }
        self.closing = true;
        self.dispatcher.clear_queue();
        let tasks: Vec<TaskEntry> = self.tasks.take_all().collect();
        for e in tasks {
            self.resolve(e.cell, TaskStatus::Failed(code), Vec::new());
        }
        self.actions.push(Action::Wake);
        true
    }

    /// Forgets every daemon (the I/O thread has closed their connections at shutdown).
    pub fn forget_daemons(&mut self) {
        self.peers.clear();
    }

    fn resolve(&mut self, cell: Arc<TaskCell>, status: TaskStatus, payload: Vec<u8>) {
        self.actions.push(Action::Resolve { cell, status, payload });
    }

    /// Broadcast copies no daemon is left to take resolve with 19.
    fn resolve_surplus(&mut self) {
        let (surplus, next) = self.dispatcher.take_surplus();
        for id in surplus {
            self.recoveries.surplus_copies += 1;
            if let Some(e) = self.tasks.remove(id) {
                self.resolve(e.cell, TaskStatus::Failed(ErrorCode::ConnectionReset), Vec::new());
            }
            self.actions.push(Action::Wake);
        }
        for a in next {
            self.assign(a);
        }
    }

    /// Queues the sending of an assigned task to its daemon.
    fn assign(&mut self, a: Assignment) {
        let (Some(peer), Some(t)) = (self.peers.get(&a.daemon), self.tasks.get_mut(a.id)) else {
            // Every queued task and every slot has its record; should one be missing, the
            // daemon must not stay busy with a task that will never be sent.
            debug_assert!(false, "task {} assigned without its records", a.id);
            for next in self.dispatcher.release(a.daemon, a.id) {
                self.assign(next);
            }
            return;
        };
        let f = t.extra();
        f.daemon = Some(a.daemon);
        f.in_transit = true;
        let everywhere = t.everywhere();
        let keep = !everywhere && (t.retries() > 0 || a.payload.len() <= KEEP_SMALL);
        let msg = Message::Task { id: a.id, everywhere, payload: a.payload };
        let task = Some(SentTask { cell: t.cell.clone(), keep });
        self.actions.push(Action::Send { key: a.daemon, link: peer.link.clone(), msg, task });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: u64 = 1_000;

    #[test]
    fn a_queued_task_takes_24_bytes_in_the_task_table() {
        // With its id. A hash map's bucket was 72 bytes, with everything in `Extra` inline.
        let entry = core(0).tasks.entry_bytes();
        assert!(entry <= 24, "a task table entry is {entry} bytes");
    }

    fn core(retry: u32) -> Core<()> {
        Core::new(settings(retry))
    }

    fn settings(retry: u32) -> Settings {
        Settings {
            memory_limit: 0,
            stream: [1; 6],
            init_blob: Vec::new(),
            heartbeat_ms: 0,
            retry,
            quarantine: 3,
            cancel_grace: Some(GRACE),
        }
    }

    fn options() -> TaskOptions {
        TaskOptions { notify: false, callback: None, deadline: None, retry: None }
    }

    fn identity(pid: u32) -> Identity {
        Identity { pid, ..Identity::default() }
    }

    /// What the actions say, as text, with task sends reported the way the host reports a
    /// write that went through: the payload comes back when `keep` asks for it.
    fn run(c: &mut Core<()>) -> Vec<String> {
        let mut out = Vec::new();
        for a in c.take_actions() {
            out.push(match a {
                Action::Send { key, msg: Message::Task { id, payload, .. }, task: Some(t), .. } => {
                    c.task_sent(key, &(), id, Sent::Written(t.keep.then_some(payload)));
                    format!("task {id} to {key}")
                }
                Action::Send { key, msg, .. } => format!("{} to {key}", msg_name(&msg)),
                Action::Resolve { cell, status, .. } => {
                    let _ = cell.resolve(status, Vec::new());
                    format!("resolve {} {status:?}", cell.id)
                }
                Action::EndProcess { pid } => format!("end pid {pid}"),
                Action::Wake => continue,
            });
        }
        out
    }

    fn msg_name(m: &Message) -> &'static str {
        match m {
            Message::Init { .. } => "init",
            Message::Cancel { .. } => "cancel",
            Message::Exit { .. } => "exit",
            _ => "other",
        }
    }

    #[test]
    fn a_connecting_daemon_is_initialised_then_takes_the_head_of_the_queue() {
        let mut c = core(0);
        let t1 = c.submit(b"a".to_vec(), Kind::Single, options()).unwrap();
        c.submit(b"b".to_vec(), Kind::Single, options()).unwrap();
        assert!(run(&mut c).is_empty());
        c.connected(7, (), identity(70));
        assert_eq!(run(&mut c), ["init to 7", "task 1 to 7"]);
        c.result(7, TaskStatus::Value, false, b"A".to_vec());
        assert_eq!(run(&mut c), ["resolve 1 Value", "task 2 to 7"]);
        assert_eq!(t1.status(), Some(TaskStatus::Value));
    }

    #[test]
    fn a_task_crossing_an_idle_exit_goes_to_the_next_daemon() {
        let mut c = core(0);
        c.connected(1, (), identity(10));
        c.submit(b"x".to_vec(), Kind::Single, options()).unwrap();
        assert_eq!(run(&mut c), ["init to 1", "task 1 to 1"]);
        c.exiting(1, ExitReason::IdleTime);
        c.disconnected(1, Vec::new());
        assert!(run(&mut c).is_empty(), "nothing resolves: the task waits");
        c.connected(2, (), identity(20));
        assert_eq!(run(&mut c), ["init to 2", "task 1 to 2"]);
        assert_eq!(c.recoveries().requeued, 1);
    }

    /// A core with one daemon at key 1 and task 1 handed out to it, its sending not reported.
    fn in_transit(retry: u32) -> Core<()> {
        let mut c = core(retry);
        c.connected(1, (), identity(10));
        c.submit(b"x".to_vec(), Kind::Single, options()).unwrap();
        let _ = c.take_actions();
        c
    }

    /// The task is at the next daemon (and has not resolved).
    fn runs_at_the_next_daemon(mut c: Core<()>) {
        assert!(run(&mut c).is_empty(), "not resolved");
        c.connected(2, (), identity(20));
        assert_eq!(run(&mut c), ["init to 2", "task 1 to 2"]);
    }

    #[test]
    fn a_daemon_leaving_while_its_task_is_in_transit_never_loses_it() {
        // The daemon's idle Exit is applied before the sending thread reports, with the
        // connection still open, or closed too.
        for close_first in [false, true] {
            let mut c = in_transit(0);
            c.exiting(1, ExitReason::IdleTime);
            if close_first {
                c.disconnected(1, Vec::new());
            }
            c.task_sent(1, &(), 1, Sent::Written(Some(b"x".to_vec())));
            c.disconnected(1, Vec::new());
            assert_eq!(c.recoveries().requeued, 1);
            runs_at_the_next_daemon(c);
        }
        // The connection ended (no Exit) and the link had closed before the write.
        let mut c = in_transit(0);
        c.disconnected(1, Vec::new());
        c.task_sent(1, &(), 1, Sent::NotReady(b"x".to_vec()));
        runs_at_the_next_daemon(c);
        // The connection ended and the write failed.
        let mut c = in_transit(0);
        c.disconnected(1, Vec::new());
        c.task_sent(1, &(), 1, Sent::Failed(Some(b"x".to_vec())));
        runs_at_the_next_daemon(c);
    }

    #[test]
    fn a_task_written_to_a_daemon_that_then_died_is_lost_or_retried() {
        let mut c = in_transit(0);
        c.disconnected(1, Vec::new());
        assert!(run(&mut c).is_empty(), "decided once the sending is reported");
        c.task_sent(1, &(), 1, Sent::Written(Some(b"x".to_vec())));
        assert_eq!(run(&mut c), ["resolve 1 Failed(ConnectionReset)"]);
        let mut c = in_transit(1);
        c.disconnected(1, Vec::new());
        c.task_sent(1, &(), 1, Sent::Written(Some(b"x".to_vec())));
        assert_eq!(c.recoveries().retried, 1);
        runs_at_the_next_daemon(c);
    }

    #[test]
    fn a_task_lost_with_its_daemon_resolves_19_without_retry() {
        let mut c = core(0);
        c.connected(1, (), identity(10));
        c.submit(b"x".to_vec(), Kind::Single, options()).unwrap();
        run(&mut c);
        c.disconnected(1, Vec::new());
        assert_eq!(run(&mut c), ["resolve 1 Failed(ConnectionReset)"]);
    }

    #[test]
    fn retried_tasks_run_elsewhere_and_are_quarantined_after_three_deaths() {
        let mut c = core(5);
        c.submit(b"x".to_vec(), Kind::Single, options()).unwrap();
        for key in 1..=2 {
            c.connected(key, (), identity(key as u32));
            assert_eq!(run(&mut c), [format!("init to {key}"), format!("task 1 to {key}")]);
            c.disconnected(key, Vec::new());
            assert!(run(&mut c).is_empty(), "retried, not resolved");
        }
        c.connected(3, (), identity(3));
        run(&mut c);
        c.disconnected(3, Vec::new());
        assert_eq!(run(&mut c), ["resolve 1 Failed(ConnectionAborted)"]);
        let r = c.recoveries();
        assert_eq!((r.retried, r.quarantined), (2, 1));
    }

    #[test]
    fn a_daemon_leaving_before_its_task_went_out_hands_it_back() {
        let mut c = core(0);
        c.connected(1, (), identity(1));
        c.submit(b"x".to_vec(), Kind::Single, options()).unwrap();
        c.submit(b"y".to_vec(), Kind::Single, options()).unwrap();
        let said: Vec<_> =
            c.take_actions().into_iter().filter(|a| matches!(a, Action::Send { .. })).collect();
        assert_eq!(said.len(), 2, "init and task 1");
        // The link had closed: task 1 keeps its place ahead of task 2.
        c.task_sent(1, &(), 1, Sent::NotReady(b"x".to_vec()));
        c.connected(2, (), identity(2));
        assert_eq!(run(&mut c), ["init to 2", "task 1 to 2"]);
        assert_eq!(c.counters().connections, 1);
    }

    #[test]
    fn a_task_whose_write_failed_goes_to_the_next_daemon() {
        let mut c = core(0);
        c.connected(1, (), identity(1));
        c.submit(b"x".to_vec(), Kind::Single, options()).unwrap();
        c.submit(b"y".to_vec(), Kind::Single, options()).unwrap();
        let _ = c.take_actions();
        c.task_sent(1, &(), 1, Sent::Failed(Some(b"x".to_vec())));
        assert_eq!(c.take_broken(), [1]);
        c.disconnected(1, Vec::new());
        assert!(run(&mut c).is_empty(), "not lost: it never reached the daemon");
        c.connected(2, (), identity(2));
        assert_eq!(run(&mut c), ["init to 2", "task 1 to 2"]);
        // A large payload the link had not finished sending when its connection ended.
        c.disconnected(2, vec![(1, vec![0; 8192])]);
        assert!(run(&mut c).is_empty());
        c.connected(3, (), identity(3));
        assert_eq!(run(&mut c), ["init to 3", "task 1 to 3"]);
        assert_eq!(c.recoveries().requeued, 2);
    }

    #[test]
    fn a_task_resolved_before_it_went_out_frees_its_daemon() {
        let mut c = core(0);
        c.connected(1, (), identity(1));
        let t = c.submit(b"x".to_vec(), Kind::Single, options()).unwrap();
        c.submit(b"y".to_vec(), Kind::Single, options()).unwrap();
        // Cancelled between being assigned and being written.
        let _ = c.take_actions();
        assert!(c.cancel(0, t.id, ErrorCode::Canceled));
        assert_eq!(run(&mut c), ["cancel to 1", "resolve 1 Failed(Canceled)"]);
        c.task_sent(1, &(), 1, Sent::Skipped);
        assert_eq!(run(&mut c), ["task 2 to 1"]);
        // Its stop timer finds the daemon on another task: nothing is dropped.
        c.handle_timeout(GRACE);
        assert!(run(&mut c).is_empty());
    }

    #[test]
    fn a_daemon_that_ignores_a_cancel_is_dropped_after_the_grace_period() {
        let mut c = core(0);
        c.connected(4, (), identity(44));
        let t = c.submit(b"loop".to_vec(), Kind::Single, options()).unwrap();
        let queued = c.submit(b"next".to_vec(), Kind::Single, options()).unwrap();
        run(&mut c);
        assert!(c.cancel(100, t.id, ErrorCode::Canceled));
        assert_eq!(run(&mut c), ["cancel to 4", "resolve 1 Failed(Canceled)"]);
        c.handle_timeout(100 + GRACE - 1);
        assert!(run(&mut c).is_empty(), "still within its grace");
        assert_eq!(c.poll_timeout(), Some(100 + GRACE));
        c.handle_timeout(100 + GRACE);
        assert_eq!(run(&mut c), ["end pid 44"]);
        assert_eq!(c.take_broken(), [4], "its connection is closed");
        assert_eq!(c.counters().connections, 0, "out of the pool at once");
        c.disconnected(4, Vec::new());
        assert!(run(&mut c).is_empty(), "the cancelled task had resolved; the queued one waits");
        assert_eq!(queued.status(), None);
        assert_eq!(c.recoveries().escalated, 1);
    }

    #[test]
    fn a_daemon_that_stops_in_time_is_kept() {
        let mut c = core(0);
        c.connected(4, (), identity(44));
        let deadline = TaskOptions { deadline: Some(50), ..options() };
        c.submit(b"slow".to_vec(), Kind::Single, deadline).unwrap();
        run(&mut c);
        c.handle_timeout(50);
        assert_eq!(run(&mut c), ["cancel to 4", "resolve 1 Failed(TimedOut)"]);
        // It answers the cancel (interrupted), late result dropped, and is idle again.
        c.result(4, TaskStatus::Interrupted, false, Vec::new());
        assert!(run(&mut c).is_empty());
        c.handle_timeout(50 + GRACE);
        assert!(run(&mut c).is_empty());
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.counters().connections, 1);
    }

    #[test]
    fn an_everywhere_barrier_lifts_when_a_daemon_leaves_mid_barrier() {
        let mut c = core(0);
        for key in 1..=3 {
            c.connected(key, (), identity(key as u32));
        }
        c.submit(b"busy".to_vec(), Kind::Single, options()).unwrap();
        let n = c.broadcast_size(0);
        assert_eq!(n, 3);
        let copies: Vec<_> = (0..n)
            .map(|i| c.submit(b"e".to_vec(), Kind::Copy { last: i + 1 == n, min: 0 }, options()).unwrap())
            .collect();
        let after = c.submit(b"after".to_vec(), Kind::Single, options()).unwrap();
        let sent: Vec<String> = run(&mut c).into_iter().filter(|s| s.starts_with("task")).collect();
        assert_eq!(sent, ["task 1 to 1", "task 2 to 2", "task 3 to 3"]);
        assert_eq!(c.counters().barrier, 1);
        // Daemon 1, the only one without a copy, dies with its task.
        c.disconnected(1, Vec::new());
        assert_eq!(run(&mut c), ["resolve 1 Failed(ConnectionReset)", "resolve 4 Failed(ConnectionReset)"]);
        assert_eq!(copies[2].status(), Some(TaskStatus::Failed(ErrorCode::ConnectionReset)));
        assert_eq!(c.counters().barrier, 0);
        c.result(2, TaskStatus::Value, false, Vec::new());
        assert_eq!(run(&mut c), ["resolve 2 Value", format!("task {} to 2", after.id).as_str()]);
        assert_eq!(c.recoveries().surplus_copies, 1);
    }

    #[test]
    fn exit_daemons_retires_all_and_closing_resolves_everything() {
        let mut c = core(0);
        c.connected(1, (), identity(1));
        c.connected(2, (), identity(2));
        c.submit(b"x".to_vec(), Kind::Single, options()).unwrap();
        run(&mut c);
        c.exit_daemons();
        let mut said = run(&mut c);
        said.sort();
        assert_eq!(said, ["exit to 1", "exit to 2"]);
        let queued = c.submit(b"y".to_vec(), Kind::Single, options()).unwrap();
        assert!(run(&mut c).is_empty(), "nobody takes work while leaving");
        assert!(c.close(ErrorCode::ConnectionReset));
        let mut said = run(&mut c);
        said.sort();
        assert_eq!(said, ["resolve 1 Failed(ConnectionReset)", "resolve 2 Failed(ConnectionReset)"]);
        assert_eq!(queued.status(), Some(TaskStatus::Failed(ErrorCode::ConnectionReset)));
        assert!(!c.close(ErrorCode::ConnectionReset));
        assert!(matches!(c.submit(Vec::new(), Kind::Single, options()), Err(Error::Closed)));
    }

    #[test]
    fn a_late_report_about_a_key_now_another_connections_leaves_that_one_alone() {
        // Links told apart by number: connection 10 had key 1, then connection 11 got it.
        let mut c: Core<u32> = Core::new(settings(0));
        c.connected(1, 10, identity(1));
        let t = c.submit(b"x".to_vec(), Kind::Single, options()).unwrap();
        let _ = c.take_actions();
        c.disconnected(1, Vec::new());
        c.connected(1, 11, identity(2));
        let _ = c.take_actions();
        // The write to connection 10 failed: connection 11 is neither closed nor retired, and
        // the task (never delivered) runs there.
        c.task_sent(1, &10, t.id, Sent::Failed(Some(b"x".to_vec())));
        assert!(c.take_broken().is_empty());
        assert_eq!(c.counters().connections, 1);
        let sent: Vec<u64> = c
            .take_actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Send { key: 1, link: 11, msg: Message::Task { id, .. }, .. } => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(sent, [t.id]);
        // A failed control write to the old connection is ignored too.
        c.broke(1, &10);
        assert!(c.take_broken().is_empty());
        c.broke(1, &11);
        assert_eq!(c.take_broken(), [1]);
    }
}
