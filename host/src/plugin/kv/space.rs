//! One plugin's key-value entries in one virtual host: the map, its caps, expiry (lazily on
//! access plus a bounded sweep on every write) and the atomic operations of the WIT `kv`
//! interface. The caller holds the space's lock for the whole of an operation and passes the
//! time (`now`, unix ms) and a [`Sink`] that records every change (the journal, when the plugin
//! persists its store).

use std::collections::{BTreeMap, BTreeSet};

use super::KvSettings;

/// Bytes every entry is accounted beyond its key (twice: the map and the expiry index) and
/// value: the map node, the expiry index node and their allocations, roughly.
pub const ENTRY_OVERHEAD: usize = 96;

/// Most expired entries evicted by one write before it does its own work: keeps a write's cost
/// bounded while still draining expired entries faster than writes can add them.
const SWEEP_PER_WRITE: usize = 8;

/// Most keys one `keys` call returns, whatever the plugin asks for.
pub const MAX_KEYS_LISTED: u32 = 1000;

/// Why an operation was refused (the WIT `kv-error`, less what the space cannot know).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Empty or longer than `max_key_bytes`.
    KeyTooLong,
    /// Longer than `max_value_bytes`.
    ValueTooLarge,
    /// `max_entries` reached.
    TooManyEntries,
    /// `max_bytes` would be exceeded.
    TooManyBytes,
    /// `increment` on a value that is not a decimal `i64`.
    NotANumber,
    /// `increment` would overflow.
    Overflow,
}

/// Where changes go (the journal of a persisted store; nowhere otherwise).
pub trait Sink {
    /// `key` now holds `value`, expiring at `expires_at` (unix ms, 0 never).
    fn put(&mut self, key: &str, value: &[u8], expires_at: u64);
    /// `key` is gone.
    fn remove(&mut self, key: &str);
}

/// A sink for stores that are not persisted.
pub struct Nowhere;

impl Sink for Nowhere {
    fn put(&mut self, _: &str, _: &[u8], _: u64) {}
    fn remove(&mut self, _: &str) {}
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    value: Vec<u8>,
    /// Unix ms, 0 for never.
    expires_at: u64,
}

/// The entries of one plugin in one vhost.
#[derive(Debug, Default)]
pub struct Space {
    entries: BTreeMap<String, Entry>,
    /// (expires_at, key) of every entry that expires.
    expiry: BTreeSet<(u64, String)>,
    /// Accounted bytes of every entry ([`cost`]).
    bytes: usize,
    /// Those bytes charged to the broker's memory budget (see the `kv` module).
    pub charge: Option<std::sync::Arc<crate::budget::BufferCharge>>,
}

/// The accounted size of an entry.
pub fn cost(key: &str, value_len: usize) -> usize {
    2 * key.len() + value_len + ENTRY_OVERHEAD
}

/// The expiry time of a TTL from `now` (0: none).
fn expiry(now: u64, ttl_ms: Option<u64>) -> u64 {
    match ttl_ms {
        None => 0,
        // A TTL of 0 expires at once; `max(1)` keeps it from meaning "never".
        Some(ttl) => now.saturating_add(ttl).max(1),
    }
}

fn expired(entry: &Entry, now: u64) -> bool {
    entry.expires_at != 0 && entry.expires_at <= now
}

impl Space {
    /// Entries held (expired ones not evicted yet included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Accounted bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn check_key(settings: &KvSettings, key: &str) -> Result<(), Refusal> {
        if key.is_empty() || key.len() > settings.max_key_bytes {
            return Err(Refusal::KeyTooLong);
        }
        Ok(())
    }

    /// Removes `key` (accounting, expiry index, sink).
    fn remove_entry(&mut self, key: &str, sink: &mut dyn Sink) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        if entry.expires_at != 0 {
            self.expiry.remove(&(entry.expires_at, key.to_string()));
        }
        self.bytes -= cost(key, entry.value.len());
        sink.remove(key);
        Some(entry)
    }

    /// Evicts up to `budget` expired entries, soonest first; how many.
    pub fn sweep(&mut self, now: u64, budget: usize, sink: &mut dyn Sink) -> usize {
        let mut evicted = 0;
        while evicted < budget {
            let Some((at, key)) = self.expiry.first().cloned() else {
                break;
            };
            if at > now {
                break;
            }
            self.remove_entry(&key, sink);
            evicted += 1;
        }
        evicted
    }

    /// The live entry of `key`, evicting it when it expired.
    fn live(&mut self, key: &str, now: u64, sink: &mut dyn Sink) -> Option<&Entry> {
        if self.entries.get(key).is_some_and(|e| expired(e, now)) {
            self.remove_entry(key, sink);
        }
        self.entries.get(key)
    }

    /// Stores `key` = `value` after checking the caps (evicting every expired entry first when
    /// they would be exceeded).
    fn store(
        &mut self,
        settings: &KvSettings,
        key: &str,
        value: Vec<u8>,
        expires_at: u64,
        now: u64,
        sink: &mut dyn Sink,
    ) -> Result<(), Refusal> {
        if value.len() > settings.max_value_bytes {
            return Err(Refusal::ValueTooLarge);
        }
        let fits = |space: &Space| {
            let old = space.entries.get(key);
            let entries = space.entries.len() + usize::from(old.is_none());
            let bytes =
                space.bytes - old.map_or(0, |e| cost(key, e.value.len())) + cost(key, value.len());
            if entries > settings.max_entries {
                Err(Refusal::TooManyEntries)
            } else if bytes > settings.max_bytes {
                Err(Refusal::TooManyBytes)
            } else {
                Ok(())
            }
        };
        if fits(self).is_err() {
            // Expired entries do not hold room: evict them all (at most `max_entries`).
            self.sweep(now, usize::MAX, sink);
            if self.entries.get(key).is_some_and(|e| expired(e, now)) {
                self.remove_entry(key, sink);
            }
            fits(self)?;
        }
        sink.put(key, &value, expires_at);
        let added = cost(key, value.len());
        let entry = Entry { value, expires_at };
        if let Some(old) = self.entries.insert(key.to_string(), entry) {
            self.bytes -= cost(key, old.value.len());
            if old.expires_at != 0 {
                self.expiry.remove(&(old.expires_at, key.to_string()));
            }
        }
        self.bytes += added;
        if expires_at != 0 {
            self.expiry.insert((expires_at, key.to_string()));
        }
        Ok(())
    }

    /// `kv.get`.
    pub fn get(
        &mut self,
        settings: &KvSettings,
        key: &str,
        now: u64,
        sink: &mut dyn Sink,
    ) -> Result<Option<Vec<u8>>, Refusal> {
        Self::check_key(settings, key)?;
        Ok(self.live(key, now, sink).map(|e| e.value.clone()))
    }

    /// `kv.set`.
    pub fn set(
        &mut self,
        settings: &KvSettings,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        now: u64,
        sink: &mut dyn Sink,
    ) -> Result<(), Refusal> {
        Self::check_key(settings, key)?;
        self.sweep(now, SWEEP_PER_WRITE, sink);
        self.store(settings, key, value, expiry(now, ttl_ms), now, sink)
    }

    /// `kv.delete`.
    pub fn delete(
        &mut self,
        settings: &KvSettings,
        key: &str,
        now: u64,
        sink: &mut dyn Sink,
    ) -> Result<bool, Refusal> {
        Self::check_key(settings, key)?;
        self.sweep(now, SWEEP_PER_WRITE, sink);
        if self.live(key, now, sink).is_none() {
            return Ok(false);
        }
        Ok(self.remove_entry(key, sink).is_some())
    }

    /// `kv.increment`.
    pub fn increment(
        &mut self,
        settings: &KvSettings,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
        now: u64,
        sink: &mut dyn Sink,
    ) -> Result<i64, Refusal> {
        Self::check_key(settings, key)?;
        self.sweep(now, SWEEP_PER_WRITE, sink);
        let (current, expires_at) = match self.live(key, now, sink) {
            None => (0, expiry(now, ttl_ms)),
            Some(entry) => {
                let text = std::str::from_utf8(&entry.value).map_err(|_| Refusal::NotANumber)?;
                let n: i64 = text.parse().map_err(|_| Refusal::NotANumber)?;
                (n, entry.expires_at)
            }
        };
        let next = current.checked_add(delta).ok_or(Refusal::Overflow)?;
        self.store(
            settings,
            key,
            next.to_string().into_bytes(),
            expires_at,
            now,
            sink,
        )?;
        Ok(next)
    }

    /// `kv.compare-and-swap`.
    #[allow(clippy::too_many_arguments)]
    pub fn compare_and_swap(
        &mut self,
        settings: &KvSettings,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        now: u64,
        sink: &mut dyn Sink,
    ) -> Result<bool, Refusal> {
        Self::check_key(settings, key)?;
        if value.len() > settings.max_value_bytes {
            return Err(Refusal::ValueTooLarge);
        }
        self.sweep(now, SWEEP_PER_WRITE, sink);
        let current = self.live(key, now, sink).map(|e| e.value.as_slice());
        if current != expected {
            return Ok(false);
        }
        self.store(settings, key, value, expiry(now, ttl_ms), now, sink)?;
        Ok(true)
    }

    /// `kv.keys`: up to `limit` (at most [`MAX_KEYS_LISTED`]) live keys starting with
    /// `prefix`, in byte order.
    pub fn keys(&self, prefix: &str, limit: u32, now: u64) -> Vec<String> {
        let limit = limit.min(MAX_KEYS_LISTED) as usize;
        self.entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| !expired(e, now))
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Puts back an entry read from the journal (at start-up), within the caps; false when it
    /// expired or does not fit.
    pub fn restore(
        &mut self,
        settings: &KvSettings,
        key: &str,
        value: Vec<u8>,
        expires_at: u64,
        now: u64,
    ) -> bool {
        if expires_at != 0 && expires_at <= now || Self::check_key(settings, key).is_err() {
            return false;
        }
        self.store(settings, key, value, expires_at, now, &mut Nowhere)
            .is_ok()
    }

    /// Every live entry (key, value, expires_at), to journal them all.
    pub fn each_live(&self, now: u64, mut f: impl FnMut(&str, &[u8], u64)) {
        for (key, entry) in &self.entries {
            if !expired(entry, now) {
                f(key, &entry.value, entry.expires_at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> KvSettings {
        KvSettings {
            max_key_bytes: 16,
            max_value_bytes: 32,
            max_entries: 4,
            max_bytes: 4 * cost("kkkk", 8),
            persist: false,
        }
    }

    /// Records what a persisted store would journal.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Sink for Log {
        fn put(&mut self, key: &str, value: &[u8], expires_at: u64) {
            self.0.push(format!(
                "put {key}={} @{expires_at}",
                String::from_utf8_lossy(value)
            ));
        }
        fn remove(&mut self, key: &str) {
            self.0.push(format!("remove {key}"));
        }
    }

    #[test]
    fn set_get_delete() {
        let (s, mut space, mut log) = (settings(), Space::default(), Log::default());
        assert_eq!(space.get(&s, "a", 0, &mut log), Ok(None));
        space
            .set(&s, "a", b"1".to_vec(), None, 0, &mut log)
            .unwrap();
        assert_eq!(space.get(&s, "a", 0, &mut log), Ok(Some(b"1".to_vec())));
        assert_eq!(space.delete(&s, "a", 0, &mut log), Ok(true));
        assert_eq!(space.delete(&s, "a", 0, &mut log), Ok(false));
        assert_eq!((space.len(), space.bytes()), (0, 0));
        assert_eq!(log.0, ["put a=1 @0", "remove a"]);
    }

    #[test]
    fn keys_and_values_beyond_their_caps_are_refused() {
        let (s, mut space) = (settings(), Space::default());
        let long = "k".repeat(17);
        assert_eq!(
            space.set(&s, &long, vec![], None, 0, &mut Nowhere),
            Err(Refusal::KeyTooLong)
        );
        assert_eq!(space.get(&s, "", 0, &mut Nowhere), Err(Refusal::KeyTooLong));
        assert!(space
            .set(&s, &"k".repeat(16), vec![], None, 0, &mut Nowhere)
            .is_ok());
        assert_eq!(
            space.set(&s, "v", vec![0; 33], None, 0, &mut Nowhere),
            Err(Refusal::ValueTooLarge)
        );
        assert_eq!(
            space.compare_and_swap(&s, "v", None, vec![0; 33], None, 0, &mut Nowhere),
            Err(Refusal::ValueTooLarge)
        );
        assert!(space
            .set(&s, "v", vec![0; 32], None, 0, &mut Nowhere)
            .is_ok());
    }

    #[test]
    fn the_entry_and_byte_caps_hold_and_overwrites_fit() {
        let (s, mut space) = (settings(), Space::default());
        for k in ["a", "b", "c", "d"] {
            space.set(&s, k, vec![1; 8], None, 0, &mut Nowhere).unwrap();
        }
        assert_eq!(
            space.set(&s, "e", vec![], None, 0, &mut Nowhere),
            Err(Refusal::TooManyEntries)
        );
        // Replacing an entry needs no new room.
        space
            .set(&s, "a", vec![2; 8], None, 0, &mut Nowhere)
            .unwrap();
        let mut bigger = settings();
        bigger.max_entries = 100;
        assert_eq!(
            space.set(&bigger, "e", vec![0; 32], None, 0, &mut Nowhere),
            Err(Refusal::TooManyBytes)
        );
        assert!(space.bytes() <= s.max_bytes);
        assert_eq!(space.len(), 4);
    }

    #[test]
    fn expired_entries_are_gone_on_access_and_make_room() {
        let (s, mut space, mut log) = (settings(), Space::default(), Log::default());
        space
            .set(&s, "t", b"x".to_vec(), Some(100), 1000, &mut log)
            .unwrap();
        assert_eq!(space.get(&s, "t", 1099, &mut log), Ok(Some(b"x".to_vec())));
        assert_eq!(space.get(&s, "t", 1100, &mut log), Ok(None));
        assert_eq!((space.len(), space.bytes()), (0, 0), "evicted when read");
        for k in ["a", "b", "c", "d"] {
            space.set(&s, k, vec![], Some(10), 0, &mut log).unwrap();
        }
        assert_eq!(space.keys("", 10, 5), ["a", "b", "c", "d"]);
        assert!(space.keys("", 10, 10).is_empty(), "expired ones not listed");
        // Full of expired entries: a write evicts them instead of failing.
        space.set(&s, "e", vec![], None, 10, &mut log).unwrap();
        assert_eq!(space.len(), 1);
        assert_eq!(log.0.iter().filter(|l| l.starts_with("remove")).count(), 5);
    }

    #[test]
    fn every_write_sweeps_a_bounded_number_of_expired_entries() {
        let mut s = settings();
        s.max_entries = 100;
        s.max_bytes = usize::MAX;
        let mut space = Space::default();
        for i in 0..20 {
            space
                .set(&s, &format!("k{i}"), vec![], Some(1), 0, &mut Nowhere)
                .unwrap();
        }
        space.set(&s, "x", vec![], None, 5, &mut Nowhere).unwrap();
        assert_eq!(space.len(), 21 - SWEEP_PER_WRITE);
        space.set(&s, "y", vec![], None, 5, &mut Nowhere).unwrap();
        space.set(&s, "z", vec![], None, 5, &mut Nowhere).unwrap();
        assert_eq!(space.len(), 3, "drained by later writes");
    }

    #[test]
    fn increment_counts_keeps_its_window_and_refuses_non_numbers() {
        let (s, mut space) = (settings(), Space::default());
        assert_eq!(
            space.increment(&s, "n", 1, Some(1000), 0, &mut Nowhere),
            Ok(1)
        );
        assert_eq!(
            space.increment(&s, "n", 5, Some(99_999), 500, &mut Nowhere),
            Ok(6)
        );
        // The window began with the first increment: gone at 1000, not later.
        assert_eq!(
            space.increment(&s, "n", 1, Some(1000), 1000, &mut Nowhere),
            Ok(1)
        );
        assert_eq!(
            space.increment(&s, "n", -3, None, 1001, &mut Nowhere),
            Ok(-2)
        );
        space
            .set(&s, "t", b"ten".to_vec(), None, 0, &mut Nowhere)
            .unwrap();
        assert_eq!(
            space.increment(&s, "t", 1, None, 0, &mut Nowhere),
            Err(Refusal::NotANumber)
        );
        space
            .set(&s, "m", i64::MAX.to_string().into(), None, 0, &mut Nowhere)
            .unwrap();
        assert_eq!(
            space.increment(&s, "m", 1, None, 0, &mut Nowhere),
            Err(Refusal::Overflow)
        );
        assert_eq!(
            space.get(&s, "m", 0, &mut Nowhere),
            Ok(Some(i64::MAX.to_string().into()))
        );
    }

    #[test]
    fn compare_and_swap_sets_only_over_the_expected_value() {
        let (s, mut space) = (settings(), Space::default());
        assert_eq!(
            space.compare_and_swap(&s, "c", Some(b"x"), b"1".to_vec(), None, 0, &mut Nowhere),
            Ok(false)
        );
        assert_eq!(
            space.compare_and_swap(&s, "c", None, b"1".to_vec(), None, 0, &mut Nowhere),
            Ok(true)
        );
        assert_eq!(
            space.compare_and_swap(&s, "c", None, b"2".to_vec(), None, 0, &mut Nowhere),
            Ok(false)
        );
        assert_eq!(
            space.compare_and_swap(&s, "c", Some(b"1"), b"2".to_vec(), Some(5), 0, &mut Nowhere),
            Ok(true)
        );
        assert_eq!(space.get(&s, "c", 0, &mut Nowhere), Ok(Some(b"2".to_vec())));
        // Expired counts as absent.
        assert_eq!(
            space.compare_and_swap(&s, "c", None, b"3".to_vec(), None, 5, &mut Nowhere),
            Ok(true)
        );
    }

    #[test]
    fn keys_lists_a_prefix_in_order_within_the_limit() {
        let mut s = settings();
        s.max_entries = 10;
        s.max_bytes = usize::MAX;
        let mut space = Space::default();
        for k in ["a/2", "a/1", "b/1", "a/3", "a"] {
            space.set(&s, k, vec![], None, 0, &mut Nowhere).unwrap();
        }
        assert_eq!(space.keys("a/", 10, 0), ["a/1", "a/2", "a/3"]);
        assert_eq!(space.keys("a/", 2, 0), ["a/1", "a/2"]);
        assert_eq!(space.keys("c", 10, 0), Vec::<String>::new());
    }

    #[test]
    fn restore_skips_expired_and_oversized_entries() {
        let (s, mut space) = (settings(), Space::default());
        assert!(space.restore(&s, "a", b"1".to_vec(), 0, 100));
        assert!(space.restore(&s, "b", b"1".to_vec(), 200, 100));
        assert!(!space.restore(&s, "c", b"1".to_vec(), 100, 100), "expired");
        assert!(
            !space.restore(&s, "d", vec![0; 33], 0, 100),
            "too large now"
        );
        assert!(!space.restore(&s, &"k".repeat(17), vec![], 0, 100));
        assert_eq!(space.keys("", 10, 100), ["a", "b"]);
    }
}
