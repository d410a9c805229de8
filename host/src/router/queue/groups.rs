//! A queue's message groups (`JMSXGroupID`): which consumer each live group is pinned to.
//!
//! Bounded: at most `max` groups per queue, each id at most
//! [`MAX_GROUP_ID_BYTES`](crate::router::props::MAX_GROUP_ID_BYTES) and copied out of the
//! message (so an entry never keeps a frame's read buffer alive). A new group in a full table
//! evicts the least recently used one, as ActiveMQ's group cache does: that group's next
//! message is assigned afresh. A group ends when its consumer goes away, or with a message
//! carrying `JMSXGroupSeq:-1`. Each entry holds a [`Charge`] on the memory budget for what it
//! takes ([`entry_bytes`]), so many queues full of groups pause producers like messages do.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::budget::Charge;

/// About what one group takes besides its id: the id's copy and the two map entries.
const ENTRY_OVERHEAD: u64 = 128;

/// What an entry for group `id` is charged to the memory budget.
pub(super) fn entry_bytes(id: &[u8]) -> u64 {
    ENTRY_OVERHEAD + id.len() as u64
}

#[derive(Debug)]
struct Entry {
    consumer: u64,
    /// When it was last used (a tick of `Groups::tick`): its key in `by_use`.
    used: u64,
    /// Its share of the memory budget, released with it.
    _charge: Charge,
}

/// Live groups and their consumers.
#[derive(Debug)]
pub(super) struct Groups {
    owners: HashMap<Bytes, Entry>,
    /// The groups by last use, least recent first.
    by_use: BTreeMap<u64, Bytes>,
    tick: u64,
    max: usize,
}

impl Groups {
    /// An empty table of at most `max` groups (at least one).
    pub(super) fn new(max: usize) -> Groups {
        Groups {
            owners: HashMap::new(),
            by_use: BTreeMap::new(),
            tick: 0,
            max: max.max(1),
        }
    }

    /// Whether no group is live.
    pub(super) fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Live groups.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.owners.len()
    }

    /// The consumer group `id` is pinned to.
    pub(super) fn owner(&self, id: &[u8]) -> Option<u64> {
        self.owners.get(id).map(|entry| entry.consumer)
    }

    /// Pins group `id` to `consumer` (moving it if it was elsewhere); a new entry holds
    /// `charge`. Returns true when a full table evicted its least recently used group to make
    /// room.
    pub(super) fn assign(&mut self, id: &[u8], consumer: u64, charge: Charge) -> bool {
        if self.bump(id, Some(consumer)) {
            return false;
        }
        let mut evicted = false;
        if self.owners.len() >= self.max {
            if let Some((_, oldest)) = self.by_use.pop_first() {
                self.owners.remove(&oldest);
                evicted = true;
            }
        }
        let key = Bytes::copy_from_slice(id);
        self.owners.insert(
            key.clone(),
            Entry {
                consumer,
                used: self.tick,
                _charge: charge,
            },
        );
        self.by_use.insert(self.tick, key);
        evicted
    }

    /// Marks group `id` as used now (it is less likely to be evicted).
    pub(super) fn touch(&mut self, id: &[u8]) {
        self.bump(id, None);
    }

    /// Advances the clock and marks a live group `id` as used now, pinned to `consumer` when
    /// given; false when no such group is live.
    fn bump(&mut self, id: &[u8], consumer: Option<u64>) -> bool {
        self.tick += 1;
        let used = self.tick;
        let Some((key, entry)) = self.owners.get_key_value(id) else {
            return false;
        };
        let (key, old) = (key.clone(), entry.used);
        self.by_use.remove(&old);
        self.by_use.insert(used, key);
        if let Some(entry) = self.owners.get_mut(id) {
            entry.used = used;
            if let Some(consumer) = consumer {
                entry.consumer = consumer;
            }
        }
        true
    }

    /// Ends group `id` (`JMSXGroupSeq:-1`).
    pub(super) fn close(&mut self, id: &[u8]) {
        if let Some(entry) = self.owners.remove(id) {
            self.by_use.remove(&entry.used);
        }
    }

    /// Ends every group pinned to `consumer` (it went away); returns how many.
    pub(super) fn release(&mut self, consumer: u64) -> usize {
        if self.owners.is_empty() {
            return 0;
        }
        let before = self.owners.len();
        let by_use = &mut self.by_use;
        self.owners.retain(|_, entry| {
            let keep = entry.consumer != consumer;
            if !keep {
                by_use.remove(&entry.used);
            }
            keep
        });
        before - self.owners.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assign_move_close_release() {
        let mut groups = Groups::new(10);
        assert!(groups.is_empty());
        assert!(!groups.assign(b"a", 1, Charge::default()));
        assert!(!groups.assign(b"b", 1, Charge::default()));
        assert!(!groups.assign(b"c", 2, Charge::default()));
        assert_eq!(groups.owner(b"a"), Some(1));
        assert!(!groups.assign(b"a", 2, Charge::default()));
        assert_eq!(groups.owner(b"a"), Some(2));
        groups.close(b"c");
        assert_eq!(groups.owner(b"c"), None);
        assert_eq!(groups.release(2), 1);
        assert_eq!(groups.owner(b"a"), None);
        assert_eq!(groups.owner(b"b"), Some(1));
        assert_eq!((groups.len(), groups.by_use.len()), (1, 1));
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used_group() {
        let mut groups = Groups::new(3);
        for id in [b"a", b"b", b"c"] {
            assert!(!groups.assign(id, 1, Charge::default()));
        }
        groups.touch(b"a");
        assert!(
            groups.assign(b"d", 2, Charge::default()),
            "b was used least recently"
        );
        assert_eq!(groups.owner(b"b"), None);
        assert_eq!(groups.len(), 3);
        assert!(groups.assign(b"e", 2, Charge::default()));
        assert_eq!(groups.owner(b"c"), None);
        assert_eq!(groups.owner(b"a"), Some(1));
        assert_eq!(groups.by_use.len(), groups.len());
    }

    #[test]
    fn ids_are_copied_out_of_the_message() {
        let mut groups = Groups::new(4);
        let frame = Bytes::from(vec![b'x'; 4096]);
        groups.assign(&frame[..3], 1, Charge::default());
        let (key, _) = groups.owners.iter().next().unwrap();
        assert_eq!(key.len(), 3);
        assert!(!std::ptr::eq(key.as_ptr(), frame.as_ptr()));
    }

    #[test]
    fn entries_hold_their_charge_until_they_go() {
        let budget = crate::budget::MemoryBudget::unlimited();
        let charge = |id: &[u8]| budget.charge(entry_bytes(id));
        let mut groups = Groups::new(2);
        groups.assign(b"a", 1, charge(b"a"));
        groups.assign(b"b", 2, charge(b"b"));
        assert_eq!(budget.used(), 2 * entry_bytes(b"a"));
        // A move keeps the entry's charge (the new one is dropped); an eviction frees one.
        groups.assign(b"b", 1, charge(b"b"));
        assert!(groups.assign(b"c", 1, charge(b"c")));
        assert_eq!(budget.used(), 2 * entry_bytes(b"a"));
        groups.close(b"c");
        assert_eq!(groups.release(1), 1);
        assert_eq!(budget.used(), 0);
    }
}
