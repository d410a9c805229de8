//! What the router holds, listed for `/metrics` and status pages: every queue and topic of the
//! name table, and the dead-letter counts by reason that queues keep.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::{Queue, Router, Topic};

/// The reasons a queue dead-letters a message for, as its `dlq-reason` header says them
/// (`plugin`: a redeliver plugin's verdict, whose `dlq-reason` is the plugin's own text).
pub const DEAD_LETTER_REASONS: [&str; 5] = [
    "max-deliveries",
    "expired",
    "filter-failed",
    "maxlen",
    "plugin",
];

/// Messages a queue dead-lettered, by reason (a reason not in [`DEAD_LETTER_REASONS`] counts
/// as `other`).
#[derive(Debug, Default)]
pub struct DeadLetterReasons {
    counts: [AtomicU64; DEAD_LETTER_REASONS.len() + 1],
}

impl DeadLetterReasons {
    /// Counts one message dead-lettered for `reason`.
    pub fn count(&self, reason: &str) {
        let index = DEAD_LETTER_REASONS
            .iter()
            .position(|&known| known == reason)
            .unwrap_or(DEAD_LETTER_REASONS.len());
        self.counts[index].fetch_add(1, Relaxed);
    }

    /// `(reason, count)` for every reason, `other` last.
    pub fn read(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DEAD_LETTER_REASONS
            .iter()
            .copied()
            .chain(["other"])
            .zip(self.counts.iter().map(|count| count.load(Relaxed)))
    }
}

impl Router {
    /// Every queue in the name table now (temporary and durable subscriptions' queues
    /// included), in no particular order.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        let mut queues = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            queues.extend(shard.queues.values().cloned());
        }
        queues
    }

    /// Every topic in the name table now, in no particular order.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut topics = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            topics.extend(shard.topics.values().cloned());
        }
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_counted_apart_and_unknown_ones_as_other() {
        let reasons = DeadLetterReasons::default();
        reasons.count("expired");
        reasons.count("expired");
        reasons.count("max-deliveries");
        reasons.count("maxlen");
        reasons.count("plugin");
        reasons.count("something-new");
        let read: Vec<_> = reasons.read().collect();
        assert_eq!(
            read,
            vec![
                ("max-deliveries", 1),
                ("expired", 2),
                ("filter-failed", 0),
                ("maxlen", 1),
                ("plugin", 1),
                ("other", 1)
            ]
        );
    }
}
