//! Per-hook counters of a plugin's calls, read by `/metrics`: calls, failures by kind, and a
//! sampled call-latency histogram. The call path adds one relaxed add per call (in place of the
//! per-plugin total it replaced); one call in [`LATENCY_SAMPLE_EVERY`] per instance also reads
//! the clock twice and fills a bucket.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::pool::FailureKind;
use super::{Hook, PluginHost};
use crate::histogram::{self, Histogram, Snapshot};

/// Every hook, in the order of [`Hook`]'s variants (the index of a hook's counters).
pub const HOOKS: [Hook; 4] = [
    Hook::Authenticate,
    Hook::Send,
    Hook::Message,
    Hook::Redeliver,
];

/// Every failure kind, in the order of [`FailureKind`]'s variants.
pub const FAILURE_KINDS: [FailureKind; 7] = [
    FailureKind::Trap,
    FailureKind::Timeout,
    FailureKind::Memory,
    FailureKind::Invalid,
    FailureKind::Oversize,
    FailureKind::Busy,
    FailureKind::Backoff,
];

/// One call in this many (per instance) is timed.
pub const LATENCY_SAMPLE_EVERY: u64 = 16;

impl FailureKind {
    /// The kind's name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Invalid => "invalid_output",
            FailureKind::Oversize => "oversize",
            FailureKind::Busy => "busy",
            FailureKind::Backoff => "backoff",
        }
    }
}

/// Counters of one plugin's calls of one hook.
#[derive(Debug)]
pub struct HookCounters {
    /// Calls made (failed ones included).
    pub calls: AtomicU64,
    /// Failed calls, by [`FailureKind`] (as indexed in [`FAILURE_KINDS`]).
    pub failures: [AtomicU64; FAILURE_KINDS.len()],
    /// Durations of sampled calls, ns (from checkout to the call's end).
    pub latency_ns: Histogram,
}

impl Default for HookCounters {
    fn default() -> HookCounters {
        HookCounters {
            calls: AtomicU64::new(0),
            failures: Default::default(),
            latency_ns: Histogram::new(histogram::DURATION_BOUNDS_NS),
        }
    }
}

/// What one plugin's calls of one hook amount to, read at one moment.
#[derive(Debug, Clone)]
pub struct HookStats {
    /// The plugin's name.
    pub plugin: String,
    /// The hook.
    pub hook: Hook,
    /// Calls made.
    pub calls: u64,
    /// Failed calls by kind (every kind, zeros included).
    pub failures: Vec<(FailureKind, u64)>,
    /// Durations of sampled calls, ns.
    pub latency_ns: Snapshot,
}

impl PluginHost {
    /// The per-hook counters of every plugin, for each hook it serves.
    pub fn hook_stats(&self) -> Vec<HookStats> {
        let mut all = Vec::new();
        for plugin in &self.plugins {
            for hook in plugin.hooks.iter().copied() {
                let counters = &plugin.pool.counters.hooks[hook as usize];
                all.push(HookStats {
                    plugin: plugin.name.to_string(),
                    hook,
                    calls: counters.calls.load(Relaxed),
                    failures: FAILURE_KINDS
                        .iter()
                        .map(|&kind| (kind, counters.failures[kind as usize].load(Relaxed)))
                        .collect(),
                    latency_ns: counters.latency_ns.snapshot(),
                });
            }
        }
        all
    }

    /// Instances of each plugin now (made and not yet discarded).
    pub fn instances(&self) -> Vec<(String, u64)> {
        self.plugins
            .iter()
            .map(|plugin| {
                let counters = &plugin.pool.counters;
                let made = counters.instances_created.load(Relaxed);
                let gone = counters.recycled.load(Relaxed);
                (plugin.name.to_string(), made.saturating_sub(gone))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_follow_the_variants_order() {
        for (index, hook) in HOOKS.iter().enumerate() {
            assert_eq!(*hook as usize, index);
        }
        for (index, kind) in FAILURE_KINDS.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
    }
}
