//! The tasks waiting for a daemon, in id order: since ids grow with submission, that is FIFO
//! order, and a task coming back (its daemon died or could not take it) goes back to its place.
//!
//! A ring of `(id, entry)` pairs sorted by id rather than a B-tree: a queue of a million tasks
//! takes one entry's size per task instead of about twice that in half-full nodes. A task that
//! leaves from the middle (cancelled, or a broadcast copy no daemon is left for) leaves a hole,
//! found by binary search in O(log n) and reclaimed once it reaches either end or holes
//! outnumber tasks, so cancelling many queued tasks neither shifts the rest each time nor
//! keeps their memory.

use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct Queue<T> {
    /// Sorted by id; `None` is a hole. Neither end is ever a hole.
    ring: VecDeque<(u64, Option<T>)>,
    live: usize,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue { ring: VecDeque::new(), live: 0 }
    }
}

/// A ring emptied below a quarter of its capacity gives memory back (a burst of a million
/// queued tasks must not hold tens of MB for the host's lifetime); below this it keeps it.
const KEEP_CAPACITY: usize = 1024;

impl<T> Queue<T> {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Queues `item` at the place of `id`: the back for a new task, further in for one that
    /// comes back. An id already queued has its item replaced.
    pub fn insert(&mut self, id: u64, item: T) {
        if self.ring.back().is_none_or(|&(last, _)| id > last) {
            self.ring.push_back((id, Some(item)));
            self.live += 1;
            return;
        }
        match self.ring.binary_search_by_key(&id, |&(k, _)| k) {
            Ok(i) => {
                if self.ring[i].1.replace(item).is_none() {
                    self.live += 1;
                }
            }
            Err(i) => {
                self.ring.insert(i, (id, Some(item)));
                self.live += 1;
            }
        }
    }

    /// Takes task `id` out of the queue, wherever it is.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let i = self.ring.binary_search_by_key(&id, |&(k, _)| k).ok()?;
        let item = self.ring[i].1.take()?;
        self.live -= 1;
        self.trim();
        Some(item)
    }

    /// The head of the queue.
    pub fn first(&self) -> Option<(u64, &T)> {
        self.ring.front().and_then(|(id, item)| Some((*id, item.as_ref()?)))
    }

    pub fn pop_first(&mut self) -> Option<(u64, T)> {
        let (id, item) = self.ring.pop_front()?;
        self.live -= 1;
        self.trim();
        // Ends are never holes.
        item.map(|item| (id, item))
    }

    /// The queued tasks, head first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.ring.iter().filter_map(|(id, item)| Some((*id, item.as_ref()?)))
    }

    pub fn clear(&mut self) {
        self.ring = VecDeque::new();
        self.live = 0;
    }

    /// Drops the holes that reached an end or outnumber the tasks, and memory the ring no longer
    /// needs.
    fn trim(&mut self) {
        while self.ring.front().is_some_and(|(_, item)| item.is_none()) {
            self.ring.pop_front();
        }
        while self.ring.back().is_some_and(|(_, item)| item.is_none()) {
            self.ring.pop_back();
        }
        // Holes kept in by tasks at both ends: once they outnumber the tasks, they go, which
        // costs O(n) after at least n/2 removals.
        if self.ring.len() > 2 * self.live + KEEP_CAPACITY {
            self.ring.retain(|(_, item)| item.is_some());
        }
        let capacity = self.ring.capacity();
        if capacity > KEEP_CAPACITY && self.ring.len() < capacity / 4 {
            self.ring.shrink_to(self.ring.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(q: &Queue<&'static str>) -> Vec<u64> {
        q.iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn tasks_leave_in_id_order_whatever_order_they_came_in() {
        let mut q = Queue::default();
        for id in [1, 2, 5, 6] {
            q.insert(id, "new");
        }
        // Coming back: to their places, not the back.
        q.insert(4, "back");
        q.insert(0, "back");
        assert_eq!(ids(&q), [0, 1, 2, 4, 5, 6]);
        assert_eq!(q.first(), Some((0, &"back")));
        let order: Vec<u64> = std::iter::from_fn(|| q.pop_first().map(|(id, _)| id)).collect();
        assert_eq!(order, [0, 1, 2, 4, 5, 6]);
        assert!(q.is_empty() && q.first().is_none() && q.pop_first().is_none());
    }

    #[test]
    fn a_task_removed_from_the_middle_leaves_a_hole_that_is_skipped_then_reclaimed() {
        let mut q = Queue::default();
        for id in 1..=5 {
            q.insert(id, "t");
        }
        assert_eq!(q.remove(3), Some("t"));
        assert_eq!(q.remove(3), None, "gone already");
        assert_eq!(q.remove(9), None, "never queued");
        assert_eq!((q.len(), ids(&q)), (4, vec![1, 2, 4, 5]));
        assert_eq!(q.ring.len(), 5, "the hole stays while tasks surround it");
        // A task coming back fills its own hole.
        q.insert(3, "back");
        assert_eq!((q.len(), ids(&q)), (5, vec![1, 2, 3, 4, 5]));
        q.remove(3);
        q.pop_first();
        q.pop_first();
        // The hole reached the head: reclaimed, so the head is a task.
        assert_eq!(q.first(), Some((4, &"t")));
        assert_eq!(q.ring.len(), 2);
        q.remove(5);
        q.remove(4);
        assert!(q.is_empty() && q.ring.is_empty());
    }

    #[test]
    fn an_id_queued_twice_keeps_one_entry() {
        let mut q = Queue::default();
        q.insert(1, "a");
        q.insert(2, "b");
        q.insert(1, "again");
        assert_eq!(q.len(), 2);
        assert_eq!(q.first(), Some((1, &"again")));
    }

    #[test]
    fn cancelling_most_of_a_large_queue_in_any_order_keeps_the_rest_in_order() {
        let mut q = Queue::default();
        let n = 100_000u64;
        for id in 0..n {
            q.insert(id, "t");
        }
        // Every id but multiples of 7, in a scrambled order (a stride coprime to n).
        let mut id = 0u64;
        for _ in 0..n {
            id = (id + 7_919) % n;
            if !id.is_multiple_of(7) {
                assert_eq!(q.remove(id), Some("t"));
            }
        }
        let left: Vec<u64> = q.iter().map(|(id, _)| id).collect();
        assert_eq!(left, (0..n).filter(|i| i.is_multiple_of(7)).collect::<Vec<_>>());
        assert_eq!(q.len(), left.len());
        // The head stayed queued, so only compaction can have dropped the holes behind it.
        assert!(q.ring.len() <= 2 * q.len() + KEEP_CAPACITY, "{} slots for {} tasks", q.ring.len(), q.len());
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let mut q = Queue::default();
        for id in 0..100_000 {
            q.insert(id, "t");
        }
        assert!(q.ring.capacity() >= 100_000);
        while q.len() > 10 {
            q.pop_first();
        }
        assert!(q.ring.capacity() <= 4 * KEEP_CAPACITY, "capacity {}", q.ring.capacity());
        q.clear();
        assert_eq!(q.ring.capacity(), 0);
    }
}
