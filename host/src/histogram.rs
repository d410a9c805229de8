//! A histogram of fixed buckets kept in plain atomics, for the few places that measure a
//! distribution (the store writer's fsyncs, sampled plugin calls). Observing is a bucket search
//! and three relaxed adds, with no lock and no allocation; `/metrics` reads it at scrape time.
//!
//! Values are integers in the unit the bounds are written in (nanoseconds, records): the sum
//! stays exact and the bounds are compared without floating point.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of fsync and plugin-call durations, nanoseconds: 50 µs to 5 s.
pub const DURATION_BOUNDS_NS: &[u64] = &[
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// Upper bounds of counts (records per fsync).
pub const COUNT_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/// Counts of observations per bucket, their sum and number.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One per bound, then one for the values above the last bound.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// What a histogram held when it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `(upper bound, observations in this bucket alone)`, the last bound `u64::MAX` (+Inf).
    pub buckets: Vec<(u64, u64)>,
    /// Sum of the observed values.
    pub sum: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (ascending).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Counts one observation of `value`.
    pub fn observe(&self, value: u64) {
        let index = self.bounds.partition_point(|&bound| bound < value);
        self.buckets[index].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    /// The counts now (each read on its own: a scrape during an observation may see it in the
    /// bucket and not yet in the sum).
    pub fn snapshot(&self) -> Snapshot {
        let bounds = self.bounds.iter().copied().chain([u64::MAX]);
        let buckets: Vec<(u64, u64)> = bounds
            .zip(self.buckets.iter())
            .map(|(bound, count)| (bound, count.load(Relaxed)))
            .collect();
        Snapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
            sum: self.sum.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_is_not_below_them() {
        let histogram = Histogram::new(&[10, 100]);
        for value in [0, 10, 11, 100, 101, 5000] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets, vec![(10, 2), (100, 2), (u64::MAX, 2)]);
        assert_eq!(snapshot.count, 6);
        assert_eq!(snapshot.sum, 10 + 11 + 100 + 101 + 5000);
    }
}
