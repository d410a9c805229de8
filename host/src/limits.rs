//! Caps on what one source of connections can take, in one place: connections per source
//! address, and the back-off after failed logins from an address. (The broker-wide memory
//! budget is [`crate::budget::MemoryBudget`]; per-connection caps are checked where the connection
//! asks for the resource, against `[limits]`.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most addresses whose failed logins are remembered; past it the stalest entries go first.
const FAILURE_TABLE: usize = 65_536;
/// Failed logins older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(600);
/// The first failure's delay for the next attempt; it doubles with each failure up to the
/// configured maximum (`limits.failed_login_delay_max_ms`).
const FIRST_DELAY: Duration = Duration::from_millis(100);

/// Per source address: open connections and recent failed logins.
#[derive(Debug)]
pub struct AddressTable {
    max_connections: usize,
    max_delay: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    connections: HashMap<IpAddr, usize>,
    failures: HashMap<IpAddr, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// One connection counted against its address, released on drop.
#[derive(Debug)]
pub struct AddressSlot {
    table: Arc<AddressTable>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut state = self.table.lock();
        if let Some(count) = state.connections.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                state.connections.remove(&self.address);
            }
        }
    }
}

impl AddressTable {
    /// A table allowing `max_connections` connections per address, delaying logins after
    /// failures by up to `max_delay`.
    pub fn new(max_connections: usize, max_delay: Duration) -> AddressTable {
        AddressTable {
            max_connections,
            max_delay,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `address`; `None` when the address is at its cap.
    pub fn connect(self: &Arc<Self>, address: IpAddr) -> Option<AddressSlot> {
        let mut state = self.lock();
        let count = state.connections.entry(address).or_insert(0);
        if *count >= self.max_connections {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            address,
        })
    }

    /// Open connections from `address`.
    pub fn connections(&self, address: IpAddr) -> usize {
        self.lock().connections.get(&address).copied().unwrap_or(0)
    }

    /// How long a login attempt from `address` waits before it is checked: nothing after no
    /// recent failure, then 100 ms doubling per failure up to the maximum.
    pub fn login_delay(&self, address: IpAddr) -> Duration {
        let state = self.lock();
        match state.failures.get(&address) {
            Some(f) if f.last.elapsed() < FAILURE_MEMORY => {
                let doublings = f.count.saturating_sub(1).min(16);
                FIRST_DELAY
                    .saturating_mul(1 << doublings)
                    .min(self.max_delay)
            }
            _ => Duration::ZERO,
        }
    }

    /// Notes a failed login from `address`.
    pub fn login_failed(&self, address: IpAddr) {
        let mut state = self.lock();
        let now = Instant::now();
        if state.failures.len() >= FAILURE_TABLE && !state.failures.contains_key(&address) {
            state
                .failures
                .retain(|_, f| now.duration_since(f.last) < FAILURE_MEMORY);
            if state.failures.len() >= FAILURE_TABLE {
                // Still full of recent failures: forget the stalest.
                if let Some(stalest) = state
                    .failures
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(a, _)| *a)
                {
                    state.failures.remove(&stalest);
                }
            }
        }
        let entry = state.failures.entry(address).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(entry.last) >= FAILURE_MEMORY {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }

    /// Forgets the failures of `address` after a successful login.
    pub fn login_succeeded(&self, address: IpAddr) {
        let mut state = self.lock();
        if !state.failures.is_empty() {
            state.failures.remove(&address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_DELAY: Duration = Duration::from_secs(5);

    #[test]
    fn connections_per_address_are_capped_and_released() {
        let table = Arc::new(AddressTable::new(2, MAX_DELAY));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = table.connect(a).unwrap();
        let _second = table.connect(a).unwrap();
        assert!(table.connect(a).is_none());
        assert!(
            table.connect(b).is_some(),
            "another address is not affected"
        );
        drop(first);
        assert!(table.connect(a).is_some());
    }

    #[test]
    fn failed_logins_slow_the_next_attempts_until_one_succeeds() {
        let table = AddressTable::new(10, MAX_DELAY);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(table.login_delay(a), Duration::ZERO);
        table.login_failed(a);
        assert_eq!(table.login_delay(a), FIRST_DELAY);
        table.login_failed(a);
        assert_eq!(table.login_delay(a), FIRST_DELAY * 2);
        for _ in 0..40 {
            table.login_failed(a);
        }
        assert_eq!(table.login_delay(a), MAX_DELAY);
        table.login_succeeded(a);
        assert_eq!(table.login_delay(a), Duration::ZERO);
    }
}
