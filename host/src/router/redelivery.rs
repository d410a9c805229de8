//! The queue side of the redeliver hook: a vhost's outlet for messages that need a plugin's
//! decision, and the verdicts as a queue applies them.
//!
//! A queue whose message comes back (NACK, its consumer gone, expired) asks [`Redelivery`]
//! whether a plugin serves the hook for it (a cheap, lock-free look at the plugin set in
//! force). When one does, the message leaves the queue's delivery order into the queue's
//! *deciding* set (still counted against the queue's limits and still journaled) and a
//! [`Decision`] goes, without waiting, into the vhost's bounded channel
//! ([`MAX_PENDING_DECISIONS`]); a full channel means the built-in `[dead_letter]` behaviour
//! applies at once. The vhost's redelivery task (`crate::redelivery`) calls the plugin, never
//! under a queue lock, and hands the verdict back with [`Queue::resolve`](super::Queue::resolve). A delayed
//! redelivery waits in the scheduler's heap ([`super::schedule::Scheduler::schedule_return`])
//! while the message stays in the deciding set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::plugin::RedeliverCause;

use super::message::Message;
use std::sync::Arc;

/// Most messages waiting for a redelivery decision per vhost (more get the built-in
/// behaviour at once).
pub const MAX_PENDING_DECISIONS: usize = 1024;

/// A message that waits in its queue's deciding set for the redeliver hook's verdict.
#[derive(Debug)]
pub struct Decision {
    /// Its queue's name.
    pub queue: Bytes,
    /// Its key in the queue's deciding set.
    pub token: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Why it came back.
    pub cause: RedeliverCause,
    /// Deliveries so far.
    pub deliveries: u32,
    /// The NACK's headers (at most [`crate::plugin::MAX_NACK_HEADERS`]).
    pub nack_headers: Vec<(Bytes, Bytes)>,
}

/// A verdict as a queue applies it to a message of its deciding set.
#[derive(Debug)]
pub enum Resolution {
    /// Back to its place among the waiting messages.
    Redeliver,
    /// Cluster queues only: back to the queue, delivered again after this delay (JetStream's
    /// `nak` with delay). A local queue's delay waits in the scheduler before it resolves, so
    /// it never gets this (and would treat it as [`Resolution::Redeliver`]).
    RedeliverAfter(std::time::Duration),
    /// To this dead-letter queue, with this `dlq-reason`.
    DeadLetter(Arc<super::Queue>, String),
    /// Discarded.
    Drop,
    /// The built-in `[dead_letter]` behaviour for why it came back.
    Builtin(RedeliverCause),
}

/// Verdicts applied, for `/metrics` (one label per field).
#[derive(Debug, Default)]
pub struct RedeliveryStats {
    /// Redelivered now.
    pub redeliver: AtomicU64,
    /// Redelivered after a delay.
    pub redeliver_after: AtomicU64,
    /// Dead-lettered to the plugin's destination.
    pub dead_letter: AtomicU64,
    /// Dropped.
    pub drop: AtomicU64,
    /// Built-in behaviour because the call failed (trap, timeout, busy, invalid answer), its
    /// dead-letter destination was refused, or no plugin served the queue any more.
    pub fallback: AtomicU64,
    /// Built-in behaviour because [`MAX_PENDING_DECISIONS`] were pending.
    pub overflow: AtomicU64,
}

impl RedeliveryStats {
    /// Every counter with its label.
    pub fn labelled(&self) -> [(&'static str, u64); 6] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("redeliver", get(&self.redeliver)),
            ("redeliver_after", get(&self.redeliver_after)),
            ("dead_letter", get(&self.dead_letter)),
            ("drop", get(&self.drop)),
            ("fallback", get(&self.fallback)),
            ("overflow", get(&self.overflow)),
        ]
    }
}

/// Whether a plugin serves the redeliver hook for a queue name, in the plugin set in force.
pub type Serves = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// One vhost's outlet for redelivery decisions.
pub struct Redelivery {
    serves: OnceLock<Serves>,
    tx: mpsc::Sender<Decision>,
    rx: Mutex<Option<mpsc::Receiver<Decision>>>,
    /// Verdicts applied.
    pub stats: RedeliveryStats,
}

impl std::fmt::Debug for Redelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redelivery")
            .field("attached", &self.serves.get().is_some())
            .finish()
    }
}

impl Default for Redelivery {
    fn default() -> Redelivery {
        let (tx, rx) = mpsc::channel(MAX_PENDING_DECISIONS);
        Redelivery {
            serves: OnceLock::new(),
            tx,
            rx: Mutex::new(Some(rx)),
            stats: RedeliveryStats::default(),
        }
    }
}

impl Redelivery {
    /// Connects the outlet to the plugin set (once; later calls are ignored). Until then no
    /// message waits for a decision.
    pub fn attach(&self, serves: Serves) {
        let _ = self.serves.set(serves);
    }

    /// The receiving end of the decisions, for the one task that makes them (`None` after the
    /// first call).
    pub fn take_decisions(&self) -> Option<mpsc::Receiver<Decision>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Whether a plugin serves the hook for queue `queue` now.
    pub(crate) fn serves(&self, queue: &[u8]) -> bool {
        self.serves.get().is_some_and(|serves| serves(queue))
    }

    /// Queues a decision without waiting; false (counted) when too many are pending.
    pub(crate) fn submit(&self, decision: Decision) -> bool {
        match self.tx.try_send(decision) {
            Ok(()) => true,
            Err(_) => {
                self.stats.overflow.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
