//! The FIFO dispatcher, as pure bookkeeping: which task goes to which daemon, and when. It
//! performs no I/O; the host carries out the assignments it returns. Rules (from R's mirai):
//! strict FIFO by submission; one task per daemon; a daemon that connects or becomes idle takes
//! the head of the queue at once; an `everywhere` broadcast puts each copy on a distinct daemon
//! and holds everything behind it until every copy has been dispatched. For that, every copy
//! but the last is submitted with the `sync` marker (R's dispatcher's barrier rule). Beyond R's
//! mirai, a barrier never outlives the daemons it waits for: copies beyond what the daemons
//! still able to take one (or the broadcast's `min`) can use leave the queue, to be resolved by
//! the host, and the barrier lifts.

use std::collections::{HashMap, VecDeque};

use super::id_ring::IdRing;

/// A daemon's connection token, as the host numbers them.
pub type DaemonKey = usize;

/// A task to send to a daemon now.
#[derive(Debug, PartialEq, Eq)]
pub struct Assignment {
    pub daemon: DaemonKey,
    pub id: u64,
    pub payload: Vec<u8>,
}

/// What a queued task is: an ordinary task, or one copy of an `everywhere` broadcast that
/// asked for at least `min` copies (every copy but the last holds the barrier).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Single,
    Copy { last: bool, min: u32 },
}

impl Kind {
    fn sync(self) -> bool {
        matches!(self, Kind::Copy { last: false, .. })
    }
}

#[derive(Debug)]
struct Slot {
    busy: Option<u64>,
    /// The barrier generation this daemon took an `everywhere` copy in.
    sync_gen: u64,
    /// Told to exit, or seen leaving: it takes nothing more, and no longer counts as connected.
    leaving: bool,
}

/// The counters `info()` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Daemons connected and initialised now.
    pub connections: u64,
    /// Daemons ever initialised.
    pub cumulative: u64,
    /// Tasks waiting in the queue.
    pub awaiting: u64,
    /// Tasks at daemons (a cancelled one counts until its daemon replies).
    pub executing: u64,
    /// Submitted tasks neither awaiting nor executing.
    pub completed: u64,
    /// Copies of an `everywhere` broadcast still waiting for a daemon; later tasks wait behind
    /// them.
    pub barrier: u64,
}

#[derive(Debug, Default)]
pub struct Dispatcher {
    /// Payloads by task id. Boxed slices: 8 bytes less a task than a `Vec`, which adds up over a
    /// million queued tasks.
    queue: IdRing<Box<[u8]>>,
    /// The broadcast copies in the queue, with their kinds: every other queued task is
    /// `Single`. Copies are few (one per daemon), so the kind is kept here, not in every entry.
    copies: HashMap<u64, Kind>,
    queued_bytes: u64,
    peak_bytes: u64,
    slots: HashMap<DaemonKey, Slot>,
    /// Slots of daemons that are leaving.
    leaving: u64,
    /// Idle daemons, longest idle first.
    idle: VecDeque<DaemonKey>,
    syncing: bool,
    /// Copies of the broadcast under way that went to daemons.
    copies_sent: usize,
    generation: u64,
    submitted: u64,
    executing: u64,
    cumulative: u64,
    /// Broadcast copies that left the queue because no daemon remains to take them.
    surplus: Vec<u64>,
}

impl Dispatcher {
    pub fn new() -> Self {
        Dispatcher { generation: 1, ..Dispatcher::default() }
    }

    /// A new task. Returns its assignment when a daemon can take it now; otherwise it queues.
    pub fn submit(&mut self, id: u64, kind: Kind, payload: Vec<u8>) -> Option<Assignment> {
        self.submitted += 1;
        if self.queue.is_empty()
            && let Some(daemon) = self.take_eligible()
        {
            return Some(self.assign(daemon, id, kind.sync(), payload));
        }
        self.enqueue(id, kind, payload);
        None
    }

    fn enqueue(&mut self, id: u64, kind: Kind, payload: Vec<u8>) {
        self.queued_bytes += payload.len() as u64;
        self.peak_bytes = self.peak_bytes.max(self.queued_bytes);
        if matches!(kind, Kind::Copy { .. }) {
            self.copies.insert(id, kind);
        }
        self.queue.insert(id, payload.into_boxed_slice());
    }

    /// Drops task `id` from the queue; false when it is not there.
    fn dequeue(&mut self, id: u64) -> bool {
        let Some(payload) = self.queue.remove(id) else { return false };
        self.left_queue(id, payload);
        true
    }

    fn left_queue(&mut self, id: u64, payload: Box<[u8]>) -> (Kind, Vec<u8>) {
        self.queued_bytes -= payload.len() as u64;
        (self.copies.remove(&id).unwrap_or(Kind::Single), payload.into_vec())
    }

    fn kind(&self, id: u64) -> Kind {
        self.copies.get(&id).copied().unwrap_or(Kind::Single)
    }

    /// A daemon finished its handshake: it becomes idle and takes queued work.
    pub fn connect(&mut self, daemon: DaemonKey) -> Vec<Assignment> {
        // One generation behind, so a daemon joining mid-barrier is eligible for it.
        let slot = Slot { busy: None, sync_gen: self.generation.wrapping_sub(1), leaving: false };
        if self.slots.insert(daemon, slot).is_none() {
            self.cumulative += 1;
        }
        self.idle.push_back(daemon);
        self.drain()
    }

    /// A daemon replied. With `last` it retires and leaves the pool; otherwise it takes the
    /// next queued task. Returns the id of the task it had, if any.
    pub fn complete(&mut self, daemon: DaemonKey, last: bool) -> (Option<u64>, Vec<Assignment>) {
        let Some(slot) = self.slots.get_mut(&daemon) else {
            return (None, Vec::new());
        };
        let done = slot.busy.take();
        let leaving = slot.leaving;
        if done.is_some() {
            self.executing -= 1;
        }
        if last {
            self.retire(daemon);
        } else if done.is_some() && !leaving {
            self.idle.push_back(daemon);
        }
        (done, self.drain())
    }

    /// The daemon is leaving (told to exit, or it said so): it takes nothing more from now on,
    /// though the task it runs, if any, stays its own until it replies or disconnects.
    pub fn retire(&mut self, daemon: DaemonKey) {
        if let Some(slot) = self.slots.get_mut(&daemon)
            && !slot.leaving
        {
            slot.leaving = true;
            self.leaving += 1;
            self.idle.retain(|&d| d != daemon);
            self.prune_barrier();
        }
    }

    /// The broadcast at the head of the queue keeps as many copies as there are daemons still
    /// able to take one, or as its `min` still asks for (those wait for daemons to connect); the
    /// copies beyond leave the queue, the last copy (which closes the barrier) staying while
    /// any does. With none left the barrier lifts.
    fn prune_barrier(&mut self) {
        let Some(Kind::Copy { min, .. }) = self.queue.first().map(|(id, _)| self.kind(id)) else {
            return;
        };
        let min = min as usize;
        let copies: Vec<u64> = self
            .queue
            .iter()
            .map(|(id, _)| (id, self.kind(id)))
            .take_while(|(_, kind)| matches!(kind, Kind::Copy { .. }))
            .scan(false, |ended, (id, kind)| {
                // The run ends with the broadcast's last copy; another broadcast may follow.
                if *ended {
                    return None;
                }
                *ended = !kind.sync();
                Some(id)
            })
            .collect();
        let taken = if self.syncing { self.copies_sent } else { 0 };
        let able = self
            .slots
            .values()
            .filter(|s| !(s.leaving || self.syncing && s.sync_gen == self.generation))
            .count();
        let keep = able.max(min.saturating_sub(taken));
        let surplus = copies.len().saturating_sub(keep);
        for &id in &copies[..surplus] {
            if self.dequeue(id) {
                self.surplus.push(id);
            }
        }
        if surplus == copies.len() && self.syncing {
            self.close_barrier();
        }
    }

    fn close_barrier(&mut self) {
        self.syncing = false;
        self.copies_sent = 0;
        self.generation = self.generation.wrapping_add(1);
    }

    /// The daemon turned out unable to take task `id` before anything of it was sent: the
    /// daemon leaves the pool and the task goes back to its place in the queue (ids are in
    /// submission order), to be dispatched again.
    pub fn bounce(&mut self, daemon: DaemonKey, id: u64, payload: Vec<u8>) -> Vec<Assignment> {
        self.unassign(daemon, id);
        self.retire(daemon);
        self.requeue(id, payload)
    }

    /// Task `id` was not sent to `daemon` after all (it resolved first): the daemon takes the
    /// next task instead.
    pub fn release(&mut self, daemon: DaemonKey, id: u64) -> Vec<Assignment> {
        if self.unassign(daemon, id) && self.slots.get(&daemon).is_some_and(|s| !s.leaving) {
            self.idle.push_back(daemon);
        }
        self.drain()
    }

    fn unassign(&mut self, daemon: DaemonKey, id: u64) -> bool {
        match self.slots.get_mut(&daemon) {
            Some(slot) if slot.busy == Some(id) => {
                slot.busy = None;
                self.executing -= 1;
                true
            }
            _ => false,
        }
    }

    /// Task `id` goes back to its place in the queue (ids are in submission order): it was
    /// lost with a daemon and runs again, or its daemon could not take it.
    pub fn requeue(&mut self, id: u64, payload: Vec<u8>) -> Vec<Assignment> {
        self.enqueue(id, Kind::Single, payload);
        self.drain()
    }

    /// The task at `daemon`, if any.
    pub fn task_at(&self, daemon: DaemonKey) -> Option<u64> {
        self.slots.get(&daemon).and_then(|s| s.busy)
    }

    /// A daemon left. Returns the task it was running; that task is not requeued.
    pub fn disconnect(&mut self, daemon: DaemonKey) -> Option<u64> {
        let slot = self.slots.remove(&daemon)?;
        self.idle.retain(|&d| d != daemon);
        if slot.leaving {
            self.leaving -= 1;
        }
        if slot.busy.is_some() {
            self.executing -= 1;
        }
        // Queued copies may now outnumber the daemons left to take them.
        self.prune_barrier();
        slot.busy
    }

    /// Broadcast copies that left the queue since the last call, because no daemon remained to
    /// take them (the host resolves them), with the tasks that idle daemons take now that the
    /// barrier has lifted.
    pub fn take_surplus(&mut self) -> (Vec<u64>, Vec<Assignment>) {
        if self.surplus.is_empty() {
            return (Vec::new(), Vec::new());
        }
        (std::mem::take(&mut self.surplus), self.drain())
    }

    /// Removes a queued task. Returns false when it is not in the queue.
    pub fn cancel_queued(&mut self, id: u64) -> bool {
        self.dequeue(id)
    }

    /// Removes every queued task (the host is closing); returns their ids.
    pub fn clear_queue(&mut self) {
        self.queued_bytes = 0;
        self.copies.clear();
        self.queue.clear();
    }

    pub fn counters(&self) -> Counters {
        let awaiting = self.queue.len() as u64;
        Counters {
            connections: self.slots.len() as u64 - self.leaving,
            cumulative: self.cumulative,
            awaiting,
            executing: self.executing,
            completed: self.submitted - awaiting - self.executing,
            barrier: self.copies.len() as u64,
        }
    }

    /// Payload bytes waiting in the queue, and the most there ever were.
    pub fn queued_bytes(&self) -> (u64, u64) {
        (self.queued_bytes, self.peak_bytes)
    }

    fn drain(&mut self) -> Vec<Assignment> {
        let mut out = Vec::new();
        while !self.queue.is_empty() {
            let Some(daemon) = self.take_eligible() else {
                break;
            };
            let Some((id, payload)) = self.queue.pop_first() else {
                break;
            };
            let (kind, payload) = self.left_queue(id, payload);
            out.push(self.assign(daemon, id, kind.sync(), payload));
        }
        // A broadcast that reached the head after daemons left may have copies to spare.
        self.prune_barrier();
        out
    }

    /// The longest-idle daemon that may take a task now: during a barrier, daemons that already
    /// took a copy of the broadcast take nothing.
    fn take_eligible(&mut self) -> Option<DaemonKey> {
        let pos = self.idle.iter().position(|d| {
            !(self.syncing && self.slots.get(d).is_some_and(|s| s.sync_gen == self.generation))
        })?;
        self.idle.remove(pos)
    }

    fn assign(&mut self, daemon: DaemonKey, id: u64, sync: bool, payload: Vec<u8>) -> Assignment {
        if let Some(slot) = self.slots.get_mut(&daemon) {
            slot.busy = Some(id);
            if sync {
                slot.sync_gen = self.generation;
            }
        }
        self.executing += 1;
        if sync {
            self.syncing = true;
            self.copies_sent += 1;
        } else if self.syncing {
            // The unmarked last copy closes the barrier.
            self.close_barrier();
        }
        Assignment { daemon, id, payload }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COPY: Kind = Kind::Copy { last: false, min: 0 };
    const LAST: Kind = Kind::Copy { last: true, min: 0 };

    #[test]
    fn a_queued_task_takes_24_bytes_in_the_queue() {
        let entry = Dispatcher::new().queue.entry_bytes();
        assert!(entry <= 24, "a queue entry is {entry} bytes");
    }

    fn ids(a: &[Assignment]) -> Vec<(DaemonKey, u64)> {
        a.iter().map(|a| (a.daemon, a.id)).collect()
    }

    #[test]
    fn fifo_one_task_per_daemon() {
        let mut d = Dispatcher::new();
        for id in 1..=4 {
            assert_eq!(d.submit(id, Kind::Single, vec![0; 10]), None);
        }
        assert_eq!(d.queued_bytes(), (40, 40));
        assert_eq!(ids(&d.connect(7)), vec![(7, 1)]);
        assert_eq!(ids(&d.connect(8)), vec![(8, 2)]);
        assert_eq!(d.counters().executing, 2);
        assert_eq!(d.counters().awaiting, 2);
        let (done, next) = d.complete(8, false);
        assert_eq!(done, Some(2));
        assert_eq!(ids(&next), vec![(8, 3)]);
        let (_, next) = d.complete(7, false);
        assert_eq!(ids(&next), vec![(7, 4)]);
        d.complete(8, false);
        d.complete(7, false);
        // An idle daemon takes a new task at once.
        assert_eq!(d.submit(5, Kind::Single, vec![]).map(|a| a.daemon), Some(8));
        let c = d.counters();
        assert_eq!((c.connections, c.cumulative, c.awaiting, c.executing, c.completed), (2, 2, 0, 1, 4));
    }

    #[test]
    fn lost_daemon_loses_only_its_task() {
        let mut d = Dispatcher::new();
        d.connect(1);
        d.submit(1, Kind::Single, vec![]);
        d.submit(2, Kind::Single, vec![]);
        assert_eq!(d.disconnect(1), Some(1));
        assert_eq!(d.counters().awaiting, 1, "queued work waits for another daemon");
        assert_eq!(ids(&d.connect(2)), vec![(2, 2)]);
    }

    #[test]
    fn retiring_daemon_leaves_the_pool() {
        let mut d = Dispatcher::new();
        d.connect(1);
        d.submit(1, Kind::Single, vec![]);
        d.submit(2, Kind::Single, vec![]);
        let (done, next) = d.complete(1, true);
        assert_eq!(done, Some(1));
        assert!(next.is_empty());
        assert_eq!(d.counters().connections, 0);
        assert_eq!(d.counters().cumulative, 1);
    }

    #[test]
    fn cancel_queued_frees_memory() {
        let mut d = Dispatcher::new();
        d.submit(1, Kind::Single, vec![0; 100]);
        d.submit(2, Kind::Single, vec![0; 50]);
        assert!(d.cancel_queued(1));
        assert!(!d.cancel_queued(1));
        assert_eq!(d.queued_bytes(), (50, 150));
        assert_eq!(d.counters().completed, 1);
    }

    #[test]
    fn everywhere_barrier_uses_distinct_daemons() {
        let mut d = Dispatcher::new();
        for k in 1..=3 {
            d.connect(k);
        }
        // Keep daemon 3 busy so the broadcast must wait for it.
        assert_eq!(d.submit(100, Kind::Single, vec![]).map(|a| a.daemon), Some(1));
        // Three copies (two marked), then an ordinary task.
        let a = d.submit(101, COPY, vec![]).unwrap();
        let b = d.submit(102, COPY, vec![]).unwrap();
        assert_eq!((a.daemon, b.daemon), (2, 3));
        assert!(d.submit(103, LAST, vec![]).is_none(), "last copy waits for an untagged daemon");
        assert!(d.submit(104, Kind::Single, vec![]).is_none(), "later tasks wait behind the barrier");
        // Daemon 2 finishes its copy, but it is tagged: nothing moves.
        let (_, next) = d.complete(2, false);
        assert!(next.is_empty());
        // Daemon 1 finishes the ordinary task: it takes the last copy, which closes the barrier,
        // and then daemon 2 is free for the next task.
        let (_, next) = d.complete(1, false);
        assert_eq!(ids(&next), vec![(1, 103), (2, 104)]);
    }

    #[test]
    fn a_leaving_daemon_takes_nothing_more_and_stops_counting() {
        let mut d = Dispatcher::new();
        d.connect(1);
        d.connect(2);
        assert_eq!(d.submit(1, Kind::Single, vec![]).map(|a| a.daemon), Some(1));
        d.retire(1);
        d.retire(2);
        d.retire(2);
        assert_eq!(d.counters().connections, 0);
        assert!(d.submit(2, Kind::Single, vec![]).is_none(), "nobody takes work while leaving");
        // Daemon 1's reply still counts, but it does not return to the pool.
        let (done, next) = d.complete(1, false);
        assert_eq!((done, next.len()), (Some(1), 0));
        assert_eq!(d.disconnect(1), None);
        assert_eq!(d.disconnect(2), None);
        assert_eq!(ids(&d.connect(3)), vec![(3, 2)]);
        assert_eq!(d.counters().connections, 1);
    }

    #[test]
    fn a_bounced_task_goes_back_to_its_place_in_the_queue() {
        let mut d = Dispatcher::new();
        d.connect(1);
        let a = d.submit(1, Kind::Single, vec![0; 8]).unwrap();
        d.submit(2, Kind::Single, vec![0; 4]);
        // Daemon 1 turns out to be leaving before task 1 went out: task 1 waits again, ahead
        // of task 2, and the next daemon takes it first.
        assert!(d.bounce(a.daemon, a.id, a.payload).is_empty());
        let c = d.counters();
        assert_eq!((c.connections, c.awaiting, c.executing, c.completed), (0, 2, 0, 0));
        assert_eq!(d.queued_bytes().0, 12);
        assert_eq!(ids(&d.connect(2)), vec![(2, 1)]);
        assert_eq!(d.disconnect(1), None);
        let (done, next) = d.complete(2, false);
        assert_eq!((done, ids(&next)), (Some(1), vec![(2, 2)]));
    }

    #[test]
    fn daemon_joining_mid_barrier_takes_a_copy() {
        let mut d = Dispatcher::new();
        d.connect(1);
        d.submit(1, COPY, vec![]);
        assert!(d.submit(2, LAST, vec![]).is_none());
        assert_eq!(ids(&d.connect(2)), vec![(2, 2)]);
    }

    #[test]
    fn a_barrier_lifts_when_the_daemons_it_waits_for_leave() {
        let mut d = Dispatcher::new();
        for k in 1..=3 {
            d.connect(k);
        }
        assert!(d.submit(100, Kind::Single, vec![]).is_some());
        // Three copies for three daemons; daemon 1 is busy, so one copy waits.
        let copy = |last| Kind::Copy { last, min: 0 };
        assert!(d.submit(101, copy(false), vec![]).is_some());
        assert!(d.submit(102, copy(false), vec![]).is_some());
        assert!(d.submit(103, copy(true), vec![0; 5]).is_none());
        assert!(d.submit(104, Kind::Single, vec![]).is_none());
        assert_eq!(d.counters().barrier, 1);
        // Daemon 1 dies with its task: no daemon is left to take the last copy.
        assert_eq!(d.disconnect(1), Some(100));
        let (surplus, next) = d.take_surplus();
        assert_eq!(surplus, vec![103]);
        assert!(next.is_empty(), "daemons 2 and 3 are busy with their copies");
        assert_eq!(d.counters().barrier, 0);
        assert_eq!(d.queued_bytes().0, 0);
        // The barrier is gone: the next daemon to finish takes the ordinary task.
        let (_, next) = d.complete(2, false);
        assert_eq!(ids(&next), vec![(2, 104)]);
        d.complete(2, false);
        // A broadcast not yet started keeps the copies the daemons left can take, the last
        // (unmarked) one among them.
        assert!(d.submit(105, Kind::Single, vec![]).is_some());
        for (id, kind) in [(106, copy(false)), (107, copy(true)), (108, Kind::Single)] {
            assert!(d.submit(id, kind, vec![]).is_none());
        }
        assert_eq!(d.disconnect(3), Some(102));
        let (surplus, next) = d.take_surplus();
        assert_eq!((surplus, ids(&next)), (vec![106], vec![]));
        let (_, next) = d.complete(2, false);
        assert_eq!(ids(&next), vec![(2, 107)]);
        let (_, next) = d.complete(2, false);
        assert_eq!(ids(&next), vec![(2, 108)]);
    }

    #[test]
    fn copies_for_min_wait_for_daemons_while_the_rest_go() {
        let mut d = Dispatcher::new();
        d.connect(1);
        d.connect(2);
        d.submit(1, Kind::Single, vec![]);
        d.submit(2, Kind::Single, vec![]);
        // A broadcast with min 3 while both daemons are busy: three copies wait.
        let copy = |last| Kind::Copy { last, min: 3 };
        for id in 10..12 {
            assert!(d.submit(id, copy(false), vec![]).is_none());
        }
        assert!(d.submit(12, copy(true), vec![]).is_none());
        // One daemon leaving does not drop any: the min asks for three daemons.
        d.retire(2);
        assert!(d.take_surplus().0.is_empty());
        assert_eq!(d.counters().barrier, 3);
        let (_, next) = d.complete(1, false);
        assert_eq!(ids(&next), vec![(1, 10)]);
        assert_eq!(ids(&d.connect(3)), vec![(3, 11)]);
        assert_eq!(ids(&d.connect(4)), vec![(4, 12)]);
    }

    #[test]
    fn a_broadcast_reaching_the_head_after_daemons_left_keeps_what_they_can_take() {
        let mut d = Dispatcher::new();
        d.connect(1);
        d.connect(2);
        d.submit(1, Kind::Single, vec![]);
        d.submit(2, Kind::Single, vec![]);
        d.submit(3, Kind::Single, vec![]);
        let copy = |last| Kind::Copy { last, min: 0 };
        d.submit(4, copy(false), vec![]);
        d.submit(5, copy(true), vec![]);
        // Daemon 2 dies while task 3 is still ahead of the broadcast.
        assert_eq!(d.disconnect(2), Some(2));
        assert!(d.take_surplus().0.is_empty());
        let (_, next) = d.complete(1, false);
        assert_eq!(ids(&next), vec![(1, 3)]);
        // The broadcast is at the head now with one daemon left: one copy goes.
        assert_eq!(d.take_surplus().0, vec![4]);
        let (_, next) = d.complete(1, false);
        assert_eq!(ids(&next), vec![(1, 5)]);
        assert_eq!(d.counters().barrier, 0);
    }
}
