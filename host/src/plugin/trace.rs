//! Plugin decision traces: per plugin, a sampled record of what it decided and why.
//!
//! A plugin's [`PluginTrace`] holds its sampling rate (`trace_sample` in its `[[plugins]]`
//! entry, or set live through the admin surface), a call counter and a bounded ring of the last
//! [`Decision`]s. Sampling is one call in `k` (`k` = 1 / rate, rounded): while tracing is off a
//! chain pays one relaxed atomic load per plugin and batch, and while it is on, calls that are
//! not sampled pay one relaxed `fetch_add` per plugin and batch (no lock, no allocation). Only a
//! sampled call is timed, gets its notes collected (the WIT `context.note` import) and is
//! recorded: in the ring and as an `info` event with target `plugboard::trace`.
//!
//! The traces live in a [`Traces`] registry keyed by plugin name that a reloaded plugin set
//! inherits: a rate switched live and the recorded decisions survive a hot reload, unless the
//! reload changes that plugin's `trace_sample` or `trace_keep` (the file then wins).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::Serialize;

use super::pool::{Failure, FailureKind};

/// Decisions kept per plugin unless `trace_keep` says otherwise.
pub const DEFAULT_TRACE_KEEP: usize = 256;
/// Most decisions `trace_keep` may keep per plugin.
pub const MAX_TRACE_KEEP: usize = 10_000;
/// Most notes one call may attach to its decision (more are counted, not kept).
pub const MAX_NOTES: usize = 8;
/// Longest note kept, in bytes (a longer one is cut at a character boundary).
pub const MAX_NOTE_BYTES: usize = 256;
/// Longest verdict summary or field value kept in a decision, in bytes.
const MAX_FIELD_BYTES: usize = 512;

/// Checks a sampling rate: a number from 0 (off) to 1 (every call).
pub fn check_rate(rate: f64) -> Result<f64, String> {
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "trace sample rate {rate} is not between 0 (off) and 1 (every call)"
        ))
    }
}

/// Checks a ring size: 1 to [`MAX_TRACE_KEEP`].
pub fn check_keep(keep: usize) -> Result<usize, String> {
    if (1..=MAX_TRACE_KEEP).contains(&keep) {
        Ok(keep)
    } else {
        Err(format!(
            "trace_keep {keep} is not between 1 and {MAX_TRACE_KEEP}"
        ))
    }
}

/// One call in `every` for a rate (0 = off).
fn every_for(rate: f64) -> u64 {
    if rate <= 0.0 {
        0
    } else {
        (1.0 / rate).round().clamp(1.0, u64::MAX as f64) as u64
    }
}

/// One recorded decision of one plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// When the call ended, in milliseconds since the unix epoch.
    pub at_ms: u64,
    /// The plugin's `name`.
    pub plugin: String,
    /// `authenticate`, `send`, `prepare-subscription` or `filter`.
    pub hook: &'static str,
    /// The virtual host of the connection.
    pub vhost: String,
    /// The session (connection) the call was for.
    pub session: String,
    /// The message's `message-id` (send: the id its first copy is published under, when it is
    /// published; filter: the delivered message's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The principal (authenticate: the one admitted; subscribe: the subscriber).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The subscription id (prepare-subscription and filter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// The destination the message was sent to (or subscribed to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// What the plugin decided, summarised: `keep`, `rewrite → /queue/x`, `fan-out 2: /a, /b`,
    /// `reject: reason`, `deliver`, `skip`, `authenticated alice`, `refused: reason`, or how
    /// the call failed (`failed (timeout): ...`).
    pub verdict: String,
    /// The plugin's notes (WIT `context.note`), in the order written.
    pub notes: Vec<String>,
    /// How long the call took, checkout included, in microseconds.
    pub latency_us: u64,
}

impl Decision {
    /// Emits the decision as an `info` event with target `plugboard::trace`.
    fn emit(&self) {
        tracing::info!(
            target: "plugboard::trace",
            plugin = %self.plugin,
            hook = self.hook,
            vhost = %self.vhost,
            session = %self.session,
            message_id = self.message_id.as_deref(),
            principal = self.principal.as_deref(),
            subscription = self.subscription.as_deref(),
            destination = self.destination.as_deref(),
            verdict = %self.verdict,
            notes = ?self.notes,
            latency_us = self.latency_us,
            "plugin decision"
        );
    }
}

/// What [`Decision`] fields a call site knows besides the verdict.
#[derive(Debug, Default)]
pub struct Subject {
    /// See [`Decision::message_id`].
    pub message_id: Option<String>,
    /// See [`Decision::principal`].
    pub principal: Option<String>,
    /// See [`Decision::subscription`].
    pub subscription: Option<String>,
    /// See [`Decision::destination`].
    pub destination: Option<String>,
}

/// The sampling state and recent decisions of one plugin.
pub struct PluginTrace {
    name: Arc<str>,
    /// One call in `every` is sampled; 0 = off.
    every: AtomicU64,
    /// The rate as set (f64 bits), for display.
    rate: AtomicU64,
    /// Calls counted while tracing is on (the sampling counter).
    calls: AtomicU64,
    /// Decisions kept.
    keep: AtomicUsize,
    ring: Mutex<VecDeque<Decision>>,
}

impl PluginTrace {
    fn new(name: &str, rate: f64, keep: usize) -> PluginTrace {
        let trace = PluginTrace {
            name: name.into(),
            every: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            keep: AtomicUsize::new(keep),
            ring: Mutex::new(VecDeque::new()),
        };
        trace.set_rate(rate);
        trace
    }

    /// A trace that is off and keeps nothing yet (a placeholder until a set is loaded whole).
    pub fn off(name: &str) -> PluginTrace {
        PluginTrace::new(name, 0.0, 1)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the sampling rate (checked by [`check_rate`]; 0 switches tracing off).
    pub fn set_rate(&self, rate: f64) {
        self.rate.store(rate.to_bits(), Relaxed);
        self.every.store(every_for(rate), Relaxed);
    }

    /// The sampling rate in force.
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Relaxed))
    }

    /// How many decisions are kept.
    pub fn keep(&self) -> usize {
        self.keep.load(Relaxed)
    }

    fn set_keep(&self, keep: usize) {
        self.keep.store(keep, Relaxed);
        let mut ring = self.ring();
        while ring.len() > keep {
            ring.pop_front();
        }
    }

    /// Counts `n` calls (or messages of a batch) and says which of them are sampled. While
    /// tracing is off: one relaxed load, nothing else.
    #[inline]
    pub fn sample(&self, n: usize) -> Sample {
        let every = self.every.load(Relaxed);
        if every == 0 {
            return Sample::OFF;
        }
        let base = self.calls.fetch_add(n as u64, Relaxed);
        Sample { every, base }
    }

    fn ring(&self) -> MutexGuard<'_, VecDeque<Decision>> {
        // A poisoned ring still holds whole decisions.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a decision: logged, and kept in the ring (the oldest dropped when it is full).
    pub fn record(&self, decision: Decision) {
        decision.emit();
        let keep = self.keep();
        let mut ring = self.ring();
        while ring.len() >= keep {
            ring.pop_front();
        }
        ring.push_back(decision);
    }

    /// The most recent decisions, oldest first, at most `limit`.
    pub fn recent(&self, limit: usize) -> Vec<Decision> {
        let ring = self.ring();
        let skip = ring.len().saturating_sub(limit);
        ring.iter().skip(skip).cloned().collect()
    }
}

/// Which calls of a batch are sampled (see [`PluginTrace::sample`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    every: u64,
    base: u64,
}

impl Sample {
    /// Nothing sampled.
    pub const OFF: Sample = Sample { every: 0, base: 0 };

    /// One call in `every`, the batch starting at call `base` (tests).
    #[cfg(test)]
    pub fn for_test(every: u64, base: u64) -> Sample {
        Sample { every, base }
    }

    /// Whether any call may be sampled.
    #[inline]
    pub fn on(&self) -> bool {
        self.every != 0
    }

    /// Whether the call (or message) at index `i` of the batch is sampled.
    #[inline]
    pub fn is(&self, i: usize) -> bool {
        self.every != 0 && (self.base.wrapping_add(i as u64)).is_multiple_of(self.every)
    }

    /// The first sampled index in `from..to`, if any.
    pub fn next_in(&self, from: usize, to: usize) -> Option<usize> {
        if self.every == 0 {
            return None;
        }
        (from..to).find(|&i| self.is(i))
    }
}

/// The notes of one traced call, as the `context.note` import collects them.
#[derive(Debug, Default)]
pub struct Notes {
    /// The notes kept, in the order written.
    pub kept: Vec<String>,
    /// How many more were written than kept.
    pub dropped: usize,
}

impl Notes {
    /// Adds a note, cut to [`MAX_NOTE_BYTES`]; beyond [`MAX_NOTES`] it is only counted.
    pub fn push(&mut self, mut text: String) {
        if self.kept.len() >= MAX_NOTES {
            self.dropped += 1;
            return;
        }
        cut(&mut text, MAX_NOTE_BYTES);
        self.kept.push(text);
    }

    /// The notes, with a last one saying how many were dropped.
    pub fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.kept
                .push(format!("({} more notes dropped)", self.dropped));
        }
        self.kept
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary (with `…` when cut).
pub fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut at = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    text.push('…');
}

/// A traced call in progress: when it started and the notes it collected.
#[derive(Debug)]
pub struct TracedCall {
    /// When the call started (before its instance was checked out).
    pub started: Instant,
    /// The notes it wrote.
    pub notes: Notes,
}

impl TracedCall {
    /// A traced call starting now.
    pub fn start() -> TracedCall {
        TracedCall {
            started: Instant::now(),
            notes: Notes::default(),
        }
    }
}

/// Summarises a failed call and what the plugin's failure policy made of it.
pub fn failure_summary(failure: &Failure, outcome: &str) -> String {
    let kind = match failure.kind {
        FailureKind::Trap => "trap",
        FailureKind::Timeout => "timeout",
        FailureKind::Memory => "memory cap",
        FailureKind::Invalid => "invalid output",
        FailureKind::Oversize => "oversize input",
        FailureKind::Busy => "busy",
        FailureKind::Backoff => "back-off",
    };
    let mut text = format!("failed ({kind}): {}; {outcome}", failure.detail);
    cut(&mut text, MAX_FIELD_BYTES);
    text
}

/// Builds a decision of `trace`'s plugin for a call that ends now.
pub fn decision(
    trace: &PluginTrace,
    hook: &'static str,
    context: &super::CallContext,
    subject: Subject,
    mut verdict: String,
    call: TracedCall,
) -> Decision {
    cut(&mut verdict, MAX_FIELD_BYTES);
    let field = |value: Option<String>| {
        value.map(|mut v| {
            cut(&mut v, MAX_FIELD_BYTES);
            v
        })
    };
    Decision {
        at_ms: crate::router::message::now_ms(),
        plugin: trace.name.to_string(),
        hook,
        vhost: context.vhost.to_string(),
        session: context.session.to_string(),
        message_id: field(subject.message_id),
        principal: field(subject.principal),
        subscription: field(subject.subscription),
        destination: field(subject.destination),
        verdict,
        latency_us: call.started.elapsed().as_micros() as u64,
        notes: call.notes.finish(),
    }
}

/// Every plugin's trace by name, shared by the plugin sets a broker loads one after another.
#[derive(Default)]
pub struct Traces {
    plugins: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    trace: Arc<PluginTrace>,
    /// The `trace_sample` and `trace_keep` of the file when last loaded.
    configured: (f64, usize),
}

impl Traces {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.plugins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The trace of plugin `name` for a set being loaded with `rate` and `keep` from its
    /// config: the existing one, its live rate kept unless the configured values changed since
    /// the last load (then they apply), or a new one.
    pub fn for_plugin(&self, name: &str, rate: f64, keep: usize) -> Arc<PluginTrace> {
        let mut plugins = self.lock();
        match plugins.get_mut(name) {
            Some(entry) => {
                let (old_rate, old_keep) = entry.configured;
                if old_rate.to_bits() != rate.to_bits() {
                    entry.trace.set_rate(rate);
                }
                if old_keep != keep {
                    entry.trace.set_keep(keep);
                }
                entry.configured = (rate, keep);
                entry.trace.clone()
            }
            None => {
                let trace = Arc::new(PluginTrace::new(name, rate, keep));
                plugins.insert(
                    name.to_string(),
                    Entry {
                        trace: trace.clone(),
                        configured: (rate, keep),
                    },
                );
                trace
            }
        }
    }

    /// Forgets the traces of plugins no longer configured (after a set loaded).
    pub fn retain(&self, names: &[&str]) {
        self.lock().retain(|name, _| names.contains(&name.as_str()));
    }

    /// The trace of plugin `name`, when it is loaded.
    pub fn get(&self, name: &str) -> Option<Arc<PluginTrace>> {
        self.lock().get(name).map(|entry| entry.trace.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> super::super::CallContext {
        super::super::CallContext::new(super::super::default_vhost(), "s-1".into())
    }

    fn decision_of(trace: &PluginTrace, verdict: &str) -> Decision {
        decision(
            trace,
            "send",
            &context(),
            Subject::default(),
            verdict.into(),
            TracedCall::start(),
        )
    }

    #[test]
    fn rates_become_one_call_in_k_and_off_samples_nothing() {
        assert_eq!(every_for(0.0), 0);
        assert_eq!(every_for(1.0), 1);
        assert_eq!(every_for(0.25), 4);
        assert_eq!(every_for(0.3), 3);
        assert_eq!(every_for(1e-9), 1_000_000_000);
        let trace = PluginTrace::new("p", 0.0, 4);
        assert_eq!(trace.sample(10), Sample::OFF);
        assert_eq!(
            trace.calls.load(Relaxed),
            0,
            "off: the counter is not touched"
        );
        trace.set_rate(0.25);
        let sampled: usize = (0..100).filter(|_| trace.sample(1).is(0)).count();
        assert_eq!(sampled, 25);
        // A batch reserves its calls at once; its sampled messages are every fourth.
        let batch = trace.sample(10);
        let hits: Vec<usize> = (0..10).filter(|&i| batch.is(i)).collect();
        assert_eq!(hits.len(), 3, "{hits:?}");
        assert!(hits.windows(2).all(|w| w[1] - w[0] == 4));
        assert_eq!(batch.next_in(0, 10), hits.first().copied());
        assert_eq!(batch.next_in(hits[2] + 1, 10), None);
        trace.set_rate(0.0);
        assert!(!trace.sample(1).on());
    }

    #[test]
    fn rates_and_sizes_are_checked() {
        for good in [0.0, 0.5, 1.0] {
            assert_eq!(check_rate(good), Ok(good));
        }
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(check_rate(bad).is_err(), "{bad}");
        }
        assert!(check_keep(0).is_err());
        assert!(check_keep(MAX_TRACE_KEEP + 1).is_err());
        assert_eq!(check_keep(1), Ok(1));
    }

    #[test]
    fn the_ring_keeps_the_last_n_decisions() {
        let trace = PluginTrace::new("p", 1.0, 3);
        for i in 0..5 {
            trace.record(decision_of(&trace, &format!("keep {i}")));
        }
        let verdicts: Vec<String> = trace.recent(10).into_iter().map(|d| d.verdict).collect();
        assert_eq!(verdicts, ["keep 2", "keep 3", "keep 4"]);
        let last: Vec<String> = trace.recent(1).into_iter().map(|d| d.verdict).collect();
        assert_eq!(last, ["keep 4"]);
        trace.set_keep(1);
        assert_eq!(trace.recent(10).len(), 1);
    }

    #[test]
    fn notes_are_capped_in_count_and_length() {
        let mut notes = Notes::default();
        notes.push("é".repeat(MAX_NOTE_BYTES));
        for i in 0..MAX_NOTES + 2 {
            notes.push(format!("note {i}"));
        }
        let kept = notes.finish();
        assert_eq!(kept.len(), MAX_NOTES + 1);
        assert!(kept[0].len() <= MAX_NOTE_BYTES && kept[0].ends_with('…'));
        assert_eq!(kept[MAX_NOTES], "(3 more notes dropped)");
    }

    #[test]
    fn a_live_rate_survives_a_reload_unless_the_file_changes_it() {
        let traces = Traces::default();
        let first = traces.for_plugin("router", 0.0, 16);
        first.set_rate(1.0); // switched live
        first.record(decision_of(&first, "keep"));
        let reloaded = traces.for_plugin("router", 0.0, 16);
        assert!(Arc::ptr_eq(&first, &reloaded));
        assert_eq!(reloaded.rate(), 1.0, "the live switch stays");
        assert_eq!(reloaded.recent(10).len(), 1, "so do its decisions");
        let edited = traces.for_plugin("router", 0.5, 16);
        assert_eq!(edited.rate(), 0.5, "a changed trace_sample wins");
        traces.retain(&["other"]);
        assert!(traces.get("router").is_none());
    }

    #[test]
    fn failures_and_long_verdicts_are_summarised_within_bounds() {
        let failure = Failure::new(FailureKind::Timeout, "deadline exceeded");
        assert_eq!(
            failure_summary(&failure, "rejected (failure = closed)"),
            "failed (timeout): deadline exceeded; rejected (failure = closed)"
        );
        let trace = PluginTrace::new("p", 1.0, 3);
        let long = decision_of(&trace, &"x".repeat(10_000));
        assert!(long.verdict.len() <= MAX_FIELD_BYTES);
    }
}
