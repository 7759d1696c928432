//! Entries keyed by task id, in a ring sorted by id: the dispatcher's queue (ids grow with
//! submission, so id order is FIFO order, and a task coming back goes back to its place) and the
//! host's table of the tasks it knows.
//!
//! Both can hold a million tasks, so the ring takes one entry's size per task: a B-tree takes
//! about twice that in half-full nodes, and a hash map up to twice its buckets. New ids go at
//! the back. An entry leaving from the middle leaves a hole, reclaimed once it reaches either
//! end or holes outnumber entries, so removing many entries neither shifts the rest each time
//! nor keeps their memory. An id is found where it would be if no id were missing, which it is
//! in the task table until holes are compacted; otherwise by binary search up to there.

use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct IdRing<T> {
    /// Sorted by id; `None` is a hole. Neither end is ever a hole.
    ring: VecDeque<(u64, Option<T>)>,
    live: usize,
}

impl<T> Default for IdRing<T> {
    fn default() -> Self {
        IdRing { ring: VecDeque::new(), live: 0 }
    }
}

/// A ring emptied below a quarter of its capacity gives memory back (a burst of a million
/// tasks must not hold tens of MB for the host's lifetime); below this it keeps it. It is also
/// the slack of holes allowed beyond the entries' number. Small under test, so the property test
/// reaches compaction and shrinking.
const KEEP_CAPACITY: usize = if cfg!(test) { 16 } else { 1024 };

impl<T> IdRing<T> {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Puts `item` at the place of `id`: the back for a new task, further in for one that comes
    /// back. An id already there has its item replaced.
    pub fn insert(&mut self, id: u64, item: T) {
        if self.ring.back().is_none_or(|&(last, _)| id > last) {
            self.ring.push_back((id, Some(item)));
            self.live += 1;
            return;
        }
        match self.find(id) {
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

    /// Where `id` is (`Ok`), or would go (`Err`).
    fn find(&self, id: u64) -> Result<usize, usize> {
        let Some(&(head, _)) = self.ring.front() else { return Err(0) };
        let Some(guess) = id.checked_sub(head).and_then(|d| usize::try_from(d).ok()) else {
            return Err(if id < head { 0 } else { self.ring.len() });
        };
        if self.ring.get(guess).is_some_and(|&(k, _)| k == id) {
            return Ok(guess);
        }
        // Ids are distinct and sorted, so `id` is no further in than where it was guessed.
        let (mut lo, mut hi) = (0, guess.saturating_add(1).min(self.ring.len()));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.ring[mid].0 < id {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        match self.ring.get(lo) {
            Some(&(k, _)) if k == id => Ok(lo),
            _ => Err(lo),
        }
    }

    pub fn get(&self, id: u64) -> Option<&T> {
        self.ring[self.find(id).ok()?].1.as_ref()
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        let i = self.find(id).ok()?;
        self.ring[i].1.as_mut()
    }

    /// Takes task `id` out, wherever it is.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let i = self.find(id).ok()?;
        let item = self.ring[i].1.take()?;
        self.live -= 1;
        self.trim();
        Some(item)
    }

    /// The lowest id, with its entry.
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

    /// The entries, lowest id first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.ring.iter().filter_map(|(id, item)| Some((*id, item.as_ref()?)))
    }

    pub fn clear(&mut self) {
        self.ring = VecDeque::new();
        self.live = 0;
    }

    /// Takes every entry out, lowest id first.
    pub fn take_all(&mut self) -> impl Iterator<Item = T> {
        self.live = 0;
        std::mem::take(&mut self.ring).into_iter().filter_map(|(_, item)| item)
    }

    /// The bytes each entry takes in the ring.
    #[cfg(test)]
    pub fn entry_bytes(&self) -> usize {
        size_of::<(u64, Option<T>)>()
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

    fn ids(q: &IdRing<&'static str>) -> Vec<u64> {
        q.iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn tasks_leave_in_id_order_whatever_order_they_came_in() {
        let mut q = IdRing::default();
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
        let mut q = IdRing::default();
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
    fn every_id_is_found_with_ids_missing_or_not() {
        let mut q = IdRing::default();
        // Dense, as the task table is: each lookup is the first guess.
        for id in 10..20 {
            q.insert(id, id);
        }
        for id in 10..20 {
            assert_eq!(q.get(id), Some(&id));
        }
        *q.get_mut(15).unwrap() = 0;
        assert_eq!(q.get(15), Some(&0));
        // Sparse, as the queue is: found by the search below the guess.
        let mut sparse = IdRing::default();
        for id in (0..1000).step_by(3) {
            sparse.insert(id, id);
        }
        for id in 0..1000 {
            assert_eq!(sparse.get(id), (id % 3 == 0).then_some(&id), "id {id}");
        }
        for id in [u64::MAX, 1000, 5000] {
            assert_eq!(sparse.get(id), None);
        }
        assert_eq!(sparse.take_all().count(), 334);
        assert!(sparse.is_empty() && sparse.get(0).is_none());
    }

    #[test]
    fn an_id_queued_twice_keeps_one_entry() {
        let mut q = IdRing::default();
        q.insert(1, "a");
        q.insert(2, "b");
        q.insert(1, "again");
        assert_eq!(q.len(), 2);
        assert_eq!(q.first(), Some((1, &"again")));
    }

    #[test]
    fn cancelling_most_of_a_large_queue_in_any_order_keeps_the_rest_in_order() {
        let mut q = IdRing::default();
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

    #[derive(Clone, Debug)]
    enum Op {
        /// A new id, at the back.
        Push,
        /// An id coming back (or, if present, replaced), anywhere up to the last one given:
        /// the number modulo the ids given so far.
        Insert(u64),
        /// Likewise, an id given so far, present or not.
        Remove(u64),
        PopFirst,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        // Mostly removals, so holes pile up between the ends.
        prop_oneof![
            1 => Just(Op::Push),
            1 => any::<u64>().prop_map(Op::Insert),
            8 => any::<u64>().prop_map(Op::Remove),
            1 => Just(Op::PopFirst),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any sequence of operations leaves the ring holding what a sorted map would, with
        /// neither end a hole and holes never outnumbering entries by more than the slack.
        #[test]
        fn the_ring_behaves_as_a_sorted_map(
            start in 0..3000u64,
            ops in proptest::collection::vec(op(), 0..3000),
        ) {
            let mut ring = IdRing::default();
            let mut model = std::collections::BTreeMap::new();
            for id in 0..start {
                ring.insert(id, id);
                model.insert(id, id);
            }
            let mut next = start;
            for op in ops {
                match op {
                    Op::Push => {
                        ring.insert(next, next);
                        model.insert(next, next);
                        next += 1;
                    }
                    Op::Insert(n) => {
                        let id = n % next.max(1);
                        ring.insert(id, id + 1);
                        model.insert(id, id + 1);
                    }
                    Op::Remove(n) => {
                        let id = n % next.max(1);
                        proptest::prop_assert_eq!(ring.remove(id), model.remove(&id));
                    }
                    Op::PopFirst => proptest::prop_assert_eq!(ring.pop_first(), model.pop_first()),
                }
                proptest::prop_assert_eq!(ring.len(), model.len());
                proptest::prop_assert_eq!(ring.first(), model.first_key_value().map(|(k, v)| (*k, v)));
                proptest::prop_assert!(ring.ring.front().is_none_or(|e| e.1.is_some()));
                proptest::prop_assert!(ring.ring.back().is_none_or(|e| e.1.is_some()));
                proptest::prop_assert!(ring.ring.len() <= 2 * ring.len() + KEEP_CAPACITY);
            }
            let got: Vec<(u64, u64)> = ring.iter().map(|(k, v)| (k, *v)).collect();
            let want: Vec<(u64, u64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            proptest::prop_assert_eq!(got, want);
            for id in 0..next + 2 {
                proptest::prop_assert_eq!(ring.get(id), model.get(&id));
            }
        }
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let mut q = IdRing::default();
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
