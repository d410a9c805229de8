//! The broker-wide memory budget, in bytes (`[limits] max_memory_bytes`).
//!
//! What clients make the broker hold is charged to one [`MemoryBudget`]: every byte a
//! connection reads is charged as it arrives; when a frame is complete its charge moves to the
//! frame, and from a SEND's frame to the message it becomes, which may then sit in queues,
//! outboxes, transactions and dead-letter queues: the charge lives as long as the message and
//! is released when its last copy is gone. A [`Charge`] releases its bytes when dropped.
//!
//! Producers are paused before the budget is exceeded, with nothing dropped: a SEND that
//! arrives while the broker is over its limit waits (its connection stops being read: TCP
//! backpressure on the producer) until the broker is back below the resume mark, and so does a
//! connection in the middle of a large frame. Consumers are never paused, so the ACKs that free
//! memory keep flowing. RabbitMQ's memory high watermark and ActiveMQ's `memoryUsage` are the
//! peers' equivalents.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Producers paused at the limit resume once usage is below this fraction of it (hysteresis,
/// so a broker at its limit does not pause and resume producers on every message).
const RESUME_PERCENT: u64 = 95;
/// The default budget, as a share of the machine's memory (or of the cgroup's limit when it is
/// lower): RabbitMQ's default high watermark has been 0.4 and 0.6 of RAM.
const DEFAULT_PERCENT: u64 = 40;
/// When the machine's memory cannot be read.
const FALLBACK_BYTES: u64 = 1 << 30;

/// The broker-wide memory budget.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    resume: u64,
    used: AtomicU64,
    /// Set when usage reached the limit; cleared below the resume mark.
    over: AtomicBool,
    /// Wakes paused producers.
    room: Notify,
    /// Producers waiting now (a gauge) and pauses so far.
    pub paused: AtomicU64,
    pub pauses: AtomicU64,
}

/// Bytes charged to a budget, released when dropped (or merged into another charge).
#[derive(Debug, Default)]
pub struct Charge {
    budget: Option<Arc<MemoryBudget>>,
    bytes: u64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        let limit = limit.max(1);
        Arc::new(MemoryBudget {
            limit,
            resume: limit / 100 * RESUME_PERCENT,
            used: AtomicU64::new(0),
            over: AtomicBool::new(false),
            room: Notify::new(),
            paused: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
        })
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether producers are to be paused now.
    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// Charges `bytes` whatever the usage (the caller has already been admitted, or cannot
    /// wait: bytes read from a socket, a message read back from the journal).
    pub fn charge(self: &Arc<Self>, bytes: u64) -> Charge {
        if bytes == 0 {
            return Charge::default();
        }
        let used = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if used >= self.limit && !self.over.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                used,
                limit = self.limit,
                "memory budget reached: producers are paused until consumers catch up"
            );
        }
        Charge {
            budget: Some(self.clone()),
            bytes,
        }
    }

    fn release(&self, bytes: u64) {
        let used = self.used.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        if used < self.resume
            && self.over.load(Ordering::Relaxed)
            && self.over.swap(false, Ordering::AcqRel)
        {
            tracing::info!(
                used,
                limit = self.limit,
                "memory below the resume mark: producers resume"
            );
            self.room.notify_waiters();
        }
    }

    /// Waits while the budget is over its limit (a producer paused by backpressure).
    pub async fn wait_for_room(&self) {
        if !self.is_over() {
            return;
        }
        self.paused.fetch_add(1, Ordering::Relaxed);
        self.pauses.fetch_add(1, Ordering::Relaxed);
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_over() {
                break;
            }
            notified.await;
        }
        self.paused.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Charge {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Takes `bytes` (at most all it holds) off this charge into a charge of its own.
    pub fn split(&mut self, bytes: u64) -> Charge {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Charge {
            budget: self.budget.clone(),
            bytes,
        }
    }

    /// Adds another charge of the same budget to this one.
    pub fn merge(&mut self, mut other: Charge) {
        if self.budget.is_none() {
            self.budget = other.budget.take();
        } else {
            other.budget = None;
        }
        self.bytes += std::mem::take(&mut other.bytes);
        // `other` was emptied: dropping it releases nothing.
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            if let Some(budget) = &self.budget {
                budget.release(self.bytes);
            }
        }
    }
}

/// The default `max_memory_bytes`: 40 % of the machine's memory, or of the cgroup limit when
/// that is lower.
pub fn default_limit() -> u64 {
    let machine = meminfo_total().unwrap_or(FALLBACK_BYTES);
    let available = cgroup_limit().map_or(machine, |cgroup| cgroup.min(machine));
    available / 100 * DEFAULT_PERCENT
}

fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn cgroup_limit() -> Option<u64> {
    // cgroup v2, then v1; "max" or a huge number mean no limit.
    for path in [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(bytes) = text.trim().parse::<u64>() {
                if bytes < (1 << 60) {
                    return Some(bytes);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn charges_are_released_when_dropped_split_or_merged() {
        let budget = MemoryBudget::new(1000);
        let mut a = budget.charge(300);
        let b = a.split(100);
        assert_eq!((a.bytes(), b.bytes(), budget.used()), (200, 100, 300));
        drop(b);
        assert_eq!(budget.used(), 200);
        let mut c = Charge::default();
        c.merge(a);
        assert_eq!((c.bytes(), budget.used()), (200, 200));
        drop(c);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn producers_pause_at_the_limit_and_resume_below_the_mark() {
        let budget = MemoryBudget::new(1000);
        let held = budget.charge(990);
        budget.wait_for_room().await; // under the limit: no wait
        let more = budget.charge(20);
        assert!(budget.is_over());
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.wait_for_room().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert_eq!(budget.paused.load(Ordering::Relaxed), 1);
        drop(more); // 990: above the resume mark (950)
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("resumed")
            .unwrap();
        assert_eq!(budget.paused.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_default_is_a_share_of_the_machine() {
        let limit = default_limit();
        assert!(limit >= 1 << 20, "{limit}");
        assert!(limit <= meminfo_total().unwrap_or(FALLBACK_BYTES));
    }
}
