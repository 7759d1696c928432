//! The FIFO dispatcher, as pure bookkeeping: which task goes to which daemon, and when. It
//! performs no I/O; the host carries out the assignments it returns. Rules (from R's mirai):
//! strict FIFO by submission; one task per daemon; a daemon that connects or becomes idle takes
//! the head of the queue at once; an `everywhere` broadcast puts each copy on a distinct daemon
//! and holds everything behind it until every copy has been dispatched. For that, every copy
//! but the last is submitted with the `sync` marker (R's dispatcher's barrier rule).

use std::collections::{BTreeMap, HashMap, VecDeque};

/// A daemon's connection token, as the host numbers them.
pub type DaemonKey = usize;

/// A task to send to a daemon now.
#[derive(Debug, PartialEq, Eq)]
pub struct Assignment {
    pub daemon: DaemonKey,
    pub id: u64,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Queued {
    sync: bool,
    payload: Vec<u8>,
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
}

#[derive(Debug, Default)]
pub struct Dispatcher {
    /// Keyed by task id: ids grow with submission, so key order is FIFO order, and a cancelled
    /// task leaves from the middle in O(log n).
    queue: BTreeMap<u64, Queued>,
    queued_bytes: u64,
    peak_bytes: u64,
    slots: HashMap<DaemonKey, Slot>,
    /// Slots of daemons that are leaving.
    leaving: u64,
    /// Idle daemons, longest idle first.
    idle: VecDeque<DaemonKey>,
    syncing: bool,
    generation: u64,
    submitted: u64,
    executing: u64,
    cumulative: u64,
}

impl Dispatcher {
    pub fn new() -> Self {
        Dispatcher { generation: 1, ..Dispatcher::default() }
    }

    /// A new task. Returns its assignment when a daemon can take it now; otherwise it queues.
    pub fn submit(&mut self, id: u64, sync: bool, payload: Vec<u8>) -> Option<Assignment> {
        self.submitted += 1;
        if self.queue.is_empty()
            && let Some(daemon) = self.take_eligible()
        {
            return Some(self.assign(daemon, id, sync, payload));
        }
        self.queued_bytes += payload.len() as u64;
        self.peak_bytes = self.peak_bytes.max(self.queued_bytes);
        self.queue.insert(id, Queued { sync, payload });
        None
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
        }
    }

    /// The daemon turned out unable to take task `id` before anything of it was sent: the
    /// daemon leaves the pool and the task goes back to its place in the queue (ids are in
    /// submission order), to be dispatched again.
    pub fn bounce(&mut self, daemon: DaemonKey, id: u64, sync: bool, payload: Vec<u8>) -> Vec<Assignment> {
        if let Some(slot) = self.slots.get_mut(&daemon)
            && slot.busy == Some(id)
        {
            slot.busy = None;
            self.executing -= 1;
        }
        self.retire(daemon);
        self.queue_again(id, sync, payload)
    }

    /// Task `id`, lost with a daemon that left, runs again: back to its place in the queue.
    pub fn requeue(&mut self, id: u64, payload: Vec<u8>) -> Vec<Assignment> {
        self.queue_again(id, false, payload)
    }

    fn queue_again(&mut self, id: u64, sync: bool, payload: Vec<u8>) -> Vec<Assignment> {
        self.queued_bytes += payload.len() as u64;
        self.peak_bytes = self.peak_bytes.max(self.queued_bytes);
        self.queue.insert(id, Queued { sync, payload });
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
        slot.busy
    }

    /// Removes a queued task. Returns false when it is not in the queue.
    pub fn cancel_queued(&mut self, id: u64) -> bool {
        match self.queue.remove(&id) {
            Some(q) => {
                self.queued_bytes -= q.payload.len() as u64;
                true
            }
            None => false,
        }
    }

    /// Removes every queued task (the host is closing); returns their ids.
    pub fn clear_queue(&mut self) {
        self.queued_bytes = 0;
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
            let Some((id, q)) = self.queue.pop_first() else {
                break;
            };
            self.queued_bytes -= q.payload.len() as u64;
            out.push(self.assign(daemon, id, q.sync, q.payload));
        }
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
        } else if self.syncing {
            // The unmarked last copy closes the barrier.
            self.syncing = false;
            self.generation = self.generation.wrapping_add(1);
        }
        Assignment { daemon, id, payload }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(a: &[Assignment]) -> Vec<(DaemonKey, u64)> {
        a.iter().map(|a| (a.daemon, a.id)).collect()
    }

    #[test]
    fn fifo_one_task_per_daemon() {
        let mut d = Dispatcher::new();
        for id in 1..=4 {
            assert_eq!(d.submit(id, false, vec![0; 10]), None);
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
        assert_eq!(d.submit(5, false, vec![]).map(|a| a.daemon), Some(8));
        let c = d.counters();
        assert_eq!((c.connections, c.cumulative, c.awaiting, c.executing, c.completed), (2, 2, 0, 1, 4));
    }

    #[test]
    fn lost_daemon_loses_only_its_task() {
        let mut d = Dispatcher::new();
        d.connect(1);
        d.submit(1, false, vec![]);
        d.submit(2, false, vec![]);
        assert_eq!(d.disconnect(1), Some(1));
        assert_eq!(d.counters().awaiting, 1, "queued work waits for another daemon");
        assert_eq!(ids(&d.connect(2)), vec![(2, 2)]);
    }

    #[test]
    fn retiring_daemon_leaves_the_pool() {
        let mut d = Dispatcher::new();
        d.connect(1);
        d.submit(1, false, vec![]);
        d.submit(2, false, vec![]);
        let (done, next) = d.complete(1, true);
        assert_eq!(done, Some(1));
        assert!(next.is_empty());
        assert_eq!(d.counters().connections, 0);
        assert_eq!(d.counters().cumulative, 1);
    }

    #[test]
    fn cancel_queued_frees_memory() {
        let mut d = Dispatcher::new();
        d.submit(1, false, vec![0; 100]);
        d.submit(2, false, vec![0; 50]);
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
        assert_eq!(d.submit(100, false, vec![]).map(|a| a.daemon), Some(1));
        // Three copies (two marked), then an ordinary task.
        let a = d.submit(101, true, vec![]).unwrap();
        let b = d.submit(102, true, vec![]).unwrap();
        assert_eq!((a.daemon, b.daemon), (2, 3));
        assert!(d.submit(103, false, vec![]).is_none(), "last copy waits for an untagged daemon");
        assert!(d.submit(104, false, vec![]).is_none(), "later tasks wait behind the barrier");
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
        assert_eq!(d.submit(1, false, vec![]).map(|a| a.daemon), Some(1));
        d.retire(1);
        d.retire(2);
        d.retire(2);
        assert_eq!(d.counters().connections, 0);
        assert!(d.submit(2, false, vec![]).is_none(), "nobody takes work while leaving");
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
        let a = d.submit(1, false, vec![0; 8]).unwrap();
        d.submit(2, false, vec![0; 4]);
        // Daemon 1 turns out to be leaving before task 1 went out: task 1 waits again, ahead
        // of task 2, and the next daemon takes it first.
        assert!(d.bounce(a.daemon, a.id, false, a.payload).is_empty());
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
        d.submit(1, true, vec![]);
        assert!(d.submit(2, false, vec![]).is_none());
        assert_eq!(ids(&d.connect(2)), vec![(2, 2)]);
    }
}
