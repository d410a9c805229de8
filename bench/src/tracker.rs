//! Delivery bookkeeping shared by every task of a run.
//!
//! Each message is identified by (producer, sequence). A *group* is a set of consumers that
//! together must see every message exactly once: the competing consumers of a queue form one
//! group, each topic subscriber is its own group. Per group there is one counter per message,
//! so loss (counter 0) and duplication (counter > 1) are exact. Reordering is judged per
//! consumer, per producer, by the consumer itself (see [`Tracker::record`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Shared counters of one run.
pub struct Tracker {
    /// Tags this run's messages (`run` header) so leftovers from earlier runs are ignored.
    pub run_id: String,
    /// Body size every message must have.
    pub size: usize,
    /// Messages each producer is to send.
    pub per_producer: Vec<u64>,
    /// Index of producer p's first message in a group's counter array.
    offsets: Vec<usize>,
    groups: Vec<Vec<AtomicU32>>,
    /// Messages each producer has actually handed to its socket buffer.
    pub sent: Vec<AtomicU64>,
    /// Messages of each producer covered by a RECEIPT (the broker has taken them).
    pub confirmed: Vec<AtomicU64>,
    /// First deliveries, summed over groups.
    pub unique: AtomicU64,
    /// First deliveries per group.
    pub group_unique: Vec<AtomicU64>,
    pub duplicates: AtomicU64,
    pub reordered: AtomicU64,
    /// MESSAGE frames from another run (other `run` header or none).
    pub stale: AtomicU64,
    /// MESSAGE frames of this run with a bad `p`/`s` header or a body of the wrong size.
    pub corrupt: AtomicU64,
    /// When the last first delivery happened, in nanoseconds since `start`.
    pub last_new_nanos: AtomicU64,
    /// Reference point of `last_new_nanos`; set just before producers start.
    pub start: OnceLock<Instant>,
    pub errors: Mutex<Vec<String>>,
    /// End-to-end latencies (ns) of messages carrying a `t` header (latency scenario).
    pub latencies: Mutex<Vec<u64>>,
}

/// Per-consumer state for the reorder check: last sequence seen from each producer.
pub struct ConsumerView {
    pub group: usize,
    last_seen: Vec<Option<u64>>,
}

impl Tracker {
    pub fn new(
        run_id: String,
        producers: usize,
        messages: u64,
        groups: usize,
        size: usize,
    ) -> Self {
        let base = messages / producers as u64;
        let extra = messages % producers as u64;
        let per_producer: Vec<u64> = (0..producers as u64)
            .map(|p| base + u64::from(p < extra))
            .collect();
        let mut offsets = Vec::with_capacity(producers);
        let mut total = 0usize;
        for n in &per_producer {
            offsets.push(total);
            total += *n as usize;
        }
        Tracker {
            run_id,
            size,
            offsets,
            groups: (0..groups)
                .map(|_| (0..total).map(|_| AtomicU32::new(0)).collect())
                .collect(),
            sent: per_producer.iter().map(|_| AtomicU64::new(0)).collect(),
            confirmed: per_producer.iter().map(|_| AtomicU64::new(0)).collect(),
            per_producer,
            unique: AtomicU64::new(0),
            group_unique: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            duplicates: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            last_new_nanos: AtomicU64::new(0),
            start: OnceLock::new(),
            errors: Mutex::new(Vec::new()),
            latencies: Mutex::new(Vec::new()),
        }
    }

    /// Deliveries a complete run produces: every message once per group.
    pub fn expected(&self) -> u64 {
        self.per_producer.iter().sum::<u64>() * self.groups.len() as u64
    }

    /// Whether group `g` has received every message once.
    pub fn group_complete(&self, g: usize) -> bool {
        self.group_unique[g].load(Ordering::Relaxed) >= self.per_producer.iter().sum::<u64>()
    }

    pub fn view(&self, group: usize) -> ConsumerView {
        ConsumerView {
            group,
            last_seen: vec![None; self.per_producer.len()],
        }
    }

    /// One end-to-end latency sample, in ns (duplicates included: they are counted apart).
    pub fn record_latency(&self, nanos: u64) {
        self.latencies.lock().unwrap().push(nanos);
    }

    pub fn error(&self, what: String) {
        self.errors.lock().unwrap().push(what);
    }

    /// Checks one MESSAGE's `run`, `p`, `s` headers and body length, and counts it.
    pub fn record(
        &self,
        view: &mut ConsumerView,
        run: Option<&str>,
        p: Option<&str>,
        s: Option<&str>,
        body_len: usize,
    ) {
        if run != Some(self.run_id.as_str()) {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let parsed = p
            .and_then(|p| p.parse::<usize>().ok())
            .zip(s.and_then(|s| s.parse::<u64>().ok()));
        let Some((p, s)) = parsed.filter(|&(p, s)| {
            p < self.per_producer.len() && s < self.per_producer[p] && body_len == self.size
        }) else {
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Some(last) = view.last_seen[p] {
            if s < last {
                self.reordered.fetch_add(1, Ordering::Relaxed);
            }
        }
        view.last_seen[p] = Some(view.last_seen[p].map_or(s, |l| l.max(s)));
        let slot = &self.groups[view.group][self.offsets[p] + s as usize];
        if slot.fetch_add(1, Ordering::Relaxed) == 0 {
            self.unique.fetch_add(1, Ordering::Relaxed);
            self.group_unique[view.group].fetch_add(1, Ordering::Relaxed);
            if let Some(start) = self.start.get() {
                let nanos = start.elapsed().as_nanos() as u64;
                self.last_new_nanos.fetch_max(nanos, Ordering::Relaxed);
            }
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Messages never delivered, summed over groups: `(lost, unconfirmed, examples)`. Lost
    /// ones were confirmed by a receipt; unconfirmed ones were sent without a receipt covering
    /// them yet (the broker may legitimately have dropped those when a connection failed). The
    /// first few lost ones are listed as `(group, producer, sequence)`.
    pub fn undelivered(&self) -> (u64, u64, Vec<(usize, usize, u64)>) {
        let (mut lost, mut unconfirmed) = (0, 0);
        let mut examples = Vec::new();
        for (g, counters) in self.groups.iter().enumerate() {
            for (p, &offset) in self.offsets.iter().enumerate() {
                let sent = self.sent[p].load(Ordering::Relaxed) as usize;
                let confirmed = self.confirmed[p].load(Ordering::Relaxed) as usize;
                for s in 0..sent {
                    if counters[offset + s].load(Ordering::Relaxed) != 0 {
                        continue;
                    }
                    if s >= confirmed {
                        unconfirmed += 1;
                        continue;
                    }
                    lost += 1;
                    if examples.len() < 5 {
                        examples.push((g, p, s as u64));
                    }
                }
            }
        }
        (lost, unconfirmed, examples)
    }

    /// Messages the producers did not get to send (a producer failed or the run timed out).
    pub fn unsent(&self) -> u64 {
        self.per_producer
            .iter()
            .zip(&self.sent)
            .map(|(want, sent)| want - sent.load(Ordering::Relaxed))
            .sum()
    }
}
