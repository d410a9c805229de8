//! A queue's waiting messages in delivery order: higher message priority first, arrival order
//! within a priority.
//!
//! One FIFO per priority level (0–9) and a bitmap of the levels that hold anything. A queue
//! whose messages all have the default priority touches one level: a push is a `push_back`
//! on it, taking the head a `pop_front`, as with a single `VecDeque` (the levels allocate
//! nothing until used). A message handed back (NACK, a consumer leaving) returns to its
//! arrival place within its level, so a redelivered high-priority message still goes before
//! every lower-priority one.

use std::collections::VecDeque;

/// Message priority levels: JMS's 0 (lowest) to 9 (highest).
pub const LEVELS: usize = 10;

/// What the waiting structure needs to know of what it holds.
pub trait Waiting {
    /// The priority level, `0..LEVELS` (larger values are taken as the highest level).
    fn priority(&self) -> u8;
    /// Arrival order in the queue (unique, increasing): the place a handed-back item returns to.
    fn order(&self) -> u64;
    /// Bytes it counts for.
    fn size(&self) -> u64;
}

/// Where an item sits: its level and its index within the level. Valid until the structure
/// changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    level: u8,
    index: usize,
}

/// The waiting items, by priority then arrival.
#[derive(Debug)]
pub struct Ready<T> {
    levels: [VecDeque<T>; LEVELS],
    /// Bit `p` set when level `p` is not empty.
    occupied: u16,
    len: usize,
    bytes: u64,
}

impl<T> Default for Ready<T> {
    fn default() -> Self {
        Ready {
            levels: Default::default(),
            occupied: 0,
            len: 0,
            bytes: 0,
        }
    }
}

fn level_of<T: Waiting>(item: &T) -> usize {
    usize::from(item.priority()).min(LEVELS - 1)
}

impl<T: Waiting> Ready<T> {
    /// Items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the waiting items count for.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds a newly arrived item behind the others of its priority.
    pub fn push(&mut self, item: T) {
        let level = level_of(&item);
        self.bytes += item.size();
        self.len += 1;
        self.occupied |= 1 << level;
        self.levels[level].push_back(item);
    }

    /// Puts a handed-back item back at its arrival place among those of its priority.
    pub fn requeue(&mut self, item: T) {
        let level = level_of(&item);
        let queue = &mut self.levels[level];
        let at = queue.partition_point(|waiting| waiting.order() < item.order());
        self.bytes += item.size();
        self.len += 1;
        self.occupied |= 1 << level;
        queue.insert(at, item);
    }

    /// The highest non-empty level.
    fn top(&self) -> Option<usize> {
        (self.occupied != 0).then(|| 15 - self.occupied.leading_zeros() as usize)
    }

    /// The next item to deliver.
    pub fn front(&self) -> Option<&T> {
        self.levels[self.top()?].front()
    }

    /// Takes the next item to deliver.
    pub fn pop(&mut self) -> Option<T> {
        let top = self.top()?;
        self.take(top, 0)
    }

    /// Takes the item at `slot` (from [`Ready::iter`]).
    pub fn remove(&mut self, slot: Slot) -> Option<T> {
        self.take(usize::from(slot.level), slot.index)
    }

    fn take(&mut self, level: usize, index: usize) -> Option<T> {
        let queue = &mut self.levels[level];
        let item = queue.remove(index)?;
        if queue.is_empty() {
            self.occupied &= !(1 << level);
        }
        self.len -= 1;
        self.bytes -= item.size();
        Some(item)
    }

    /// The items in delivery order, each with its slot.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &T)> + '_ {
        (0..LEVELS)
            .rev()
            .filter(move |&level| self.occupied & (1 << level) != 0)
            .flat_map(move |level| {
                self.levels[level]
                    .iter()
                    .enumerate()
                    .map(move |(index, item)| {
                        let slot = Slot {
                            level: level as u8,
                            index,
                        };
                        (slot, item)
                    })
            })
    }

    /// The items, for changes that keep their priority, order and size.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.levels.iter_mut().flat_map(|level| level.iter_mut())
    }

    /// Takes every item out, in delivery order.
    pub fn take_all(&mut self) -> Vec<T> {
        let mut all = Vec::with_capacity(self.len);
        for level in (0..LEVELS).rev() {
            all.extend(std::mem::take(&mut self.levels[level]));
        }
        *self = Ready::default();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(u8, u64);

    impl Waiting for Item {
        fn priority(&self) -> u8 {
            self.0
        }
        fn order(&self) -> u64 {
            self.1
        }
        fn size(&self) -> u64 {
            10
        }
    }

    fn drain(ready: &mut Ready<Item>) -> Vec<u64> {
        std::iter::from_fn(|| ready.pop())
            .map(|item| item.1)
            .collect()
    }

    #[test]
    fn default_priority_is_one_fifo() {
        let mut ready = Ready::default();
        for order in 0..5 {
            ready.push(Item(4, order));
        }
        assert_eq!(ready.occupied, 1 << 4);
        assert_eq!((ready.len(), ready.bytes()), (5, 50));
        assert_eq!(drain(&mut ready), vec![0, 1, 2, 3, 4]);
        assert!(ready.is_empty());
        assert_eq!((ready.occupied, ready.bytes()), (0, 0));
    }

    #[test]
    fn higher_priority_first_then_arrival_order() {
        let mut ready = Ready::default();
        for (order, priority) in [4, 9, 0, 9, 4, 7].into_iter().enumerate() {
            ready.push(Item(priority, order as u64));
        }
        let seen: Vec<u64> = ready.iter().map(|(_, item)| item.1).collect();
        assert_eq!(seen, vec![1, 3, 5, 0, 4, 2]);
        assert_eq!(drain(&mut ready), vec![1, 3, 5, 0, 4, 2]);
    }

    #[test]
    fn requeued_items_return_to_their_place_in_their_level() {
        let mut ready = Ready::default();
        for order in 0..4 {
            ready.push(Item(if order % 2 == 0 { 8 } else { 2 }, order));
        }
        let first = ready.pop().unwrap();
        let second = ready.pop().unwrap();
        assert_eq!((first.1, second.1), (0, 2));
        ready.push(Item(8, 10));
        ready.requeue(second);
        ready.requeue(first);
        assert_eq!(drain(&mut ready), vec![0, 2, 10, 1, 3]);
    }

    #[test]
    fn remove_by_slot_and_take_all() {
        let mut ready = Ready::default();
        for (order, priority) in [1, 5, 5, 1].into_iter().enumerate() {
            ready.push(Item(priority, order as u64));
        }
        let (slot, _) = ready.iter().find(|(_, item)| item.1 == 2).unwrap();
        assert_eq!(ready.remove(slot), Some(Item(5, 2)));
        assert_eq!(ready.front(), Some(&Item(5, 1)));
        let all: Vec<u64> = ready.take_all().into_iter().map(|item| item.1).collect();
        assert_eq!(all, vec![1, 0, 3]);
        assert!(ready.is_empty() && ready.iter().next().is_none());
    }

    #[test]
    fn out_of_range_priorities_are_the_top_level() {
        let mut ready = Ready::default();
        ready.push(Item(9, 0));
        ready.push(Item(200, 1));
        assert_eq!(drain(&mut ready), vec![0, 1]);
    }
}
