//! Exclusive consumers on a cluster queue (`activemq.exclusive:true`,
//! `x-single-active-consumer:true`): one subscription, on whichever edge, receives the queue's
//! messages; the others wait and one of them takes over when it goes.
//!
//! The active one is the holder of the queue's lease `x.TOKEN` in the vhost's lease bucket
//! ([`super::lease`]): an exclusive subscription pulls only while it holds the lease, and tries
//! to take it every [`STANDBY_POLL`] meanwhile. A subscription that is not exclusive pulls only
//! while no edge holds the lease, as the vhost's lease watch tells ([`super::lease_watch`]:
//! a released lease counts as held for [`CHECK_EVERY`] more, so that a waiting exclusive
//! subscription takes over before the others start again; a take makes their waiting pulls
//! leave). While the watch cannot answer, the lease is read (at most every [`CHECK_EVERY`]; a
//! pull started before lasts up to its 5 s), and once a reading saw it held, two readings
//! [`CHECK_EVERY`] apart must find it free. The lease goes with the subscription
//! (UNSUBSCRIBE, disconnect) or, when its edge dies, after [`super::lease::LEASE_TTL`]; a
//! holder whose renewals stopped reaching JetStream stops pulling before it could lapse.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lease::Lease;
use super::VhostLink;

/// How often a waiting exclusive subscription tries to take the lease.
pub const STANDBY_POLL: Duration = Duration::from_millis(500);
/// How long this edge trusts its last reading of whether the lease is held.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// One queue's exclusive-consumer lease as this edge sees it (one per queue per edge).
pub(super) struct ExclusiveGate {
    key: String,
    /// Exclusive subscriptions of this edge holding the lease (0 or 1).
    held_here: AtomicUsize,
    /// What the last reading found, and when it was taken (`None`: read again).
    seen: Mutex<(Seen, Option<Instant>)>,
    /// When a subscription of this edge last tried to take the lease: however many wait
    /// here, the edge asks JetStream about twice per [`STANDBY_POLL`] at most.
    last_try: Mutex<Option<Instant>>,
}

/// What this edge last read of the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Nobody held it (or nobody ever did, as far as this edge knows).
    Free,
    /// Somebody held it.
    Taken,
    /// Free, after it had been seen held: another reading must find it free too.
    Freed,
}

impl Seen {
    /// The next state after a reading that found the lease `taken`.
    fn after(self, taken: bool) -> Seen {
        match (self, taken) {
            (_, true) => Seen::Taken,
            (Seen::Taken, false) => Seen::Freed,
            (Seen::Freed | Seen::Free, false) => Seen::Free,
        }
    }
}

impl ExclusiveGate {
    /// The gate of the queue whose durable consumer is `consumer` (its token).
    pub(super) fn new(consumer: &str) -> ExclusiveGate {
        ExclusiveGate {
            key: format!("x.{consumer}"),
            held_here: AtomicUsize::new(0),
            seen: Mutex::new((Seen::Free, None)),
            last_try: Mutex::new(None),
        }
    }

    /// What tells this edge's subscriptions of the queue that are not exclusive that an
    /// exclusive one (here or elsewhere) just took it ([`super::lease_watch`]).
    pub(super) fn taken_notifier(&self, link: &VhostLink) -> Arc<tokio::sync::Notify> {
        link.lease_watch.notifier(&self.key)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, (Seen, Option<Instant>)> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For a subscription that is not exclusive: whether an exclusive one (on this edge or
    /// another) holds the queue. The vhost's lease watch answers ([`super::lease_watch`]);
    /// while it cannot, the lease is read from JetStream, at most every [`CHECK_EVERY`]; when
    /// it cannot be read, the queue counts as not held (a consumer keeps working while NATS
    /// falters rather than stop for good).
    pub(super) async fn is_taken(&self, link: &VhostLink) -> bool {
        if self.held_here.load(Ordering::Acquire) > 0 {
            return true;
        }
        if let Some(taken) = link.lease_watch.is_taken(|| link.leases_now(), &self.key) {
            return taken;
        }
        let (before, read_at) = *self.seen();
        if read_at.is_some_and(|at| at.elapsed() < CHECK_EVERY) {
            return before != Seen::Free;
        }
        link.stats
            .lease_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let taken = match link.lease_bucket().await {
            Ok(bucket) => match bucket.get(self.key.as_str()).await {
                Ok(value) => value.is_some(),
                Err(err) => {
                    tracing::debug!(key = %self.key, error = %err, "cluster: exclusive lease not read");
                    false
                }
            },
            Err(err) => {
                tracing::debug!(key = %self.key, error = %err, "cluster: lease bucket not reachable");
                false
            }
        };
        let mut seen = self.seen();
        seen.0 = seen.0.after(taken);
        seen.1 = Some(Instant::now());
        seen.0 != Seen::Free
    }

    /// For an exclusive subscription: takes the lease, making it the queue's active consumer;
    /// `None` while another subscription (here or elsewhere) holds it, or NATS did not answer.
    /// Not asked of JetStream while a subscription of this edge holds the lease, nor when
    /// another one here asked less than half a [`STANDBY_POLL`] ago.
    pub(super) async fn try_take(self: &Arc<Self>, link: &VhostLink) -> Option<ExclusiveHold> {
        if self.held_here.load(Ordering::Acquire) > 0 {
            return None;
        }
        {
            let mut last = self.last_try.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < STANDBY_POLL / 2) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let bucket = link.lease_bucket().await.ok()?;
        match Lease::take(&bucket, None, &self.key).await {
            Ok(Some(lease)) => {
                self.held_here.fetch_add(1, Ordering::AcqRel);
                tracing::debug!(key = %self.key, "cluster: exclusive consumer active");
                Some(ExclusiveHold {
                    gate: self.clone(),
                    lease,
                })
            }
            Ok(None) => None,
            Err(err) => {
                tracing::debug!(key = %self.key, error = %err, "cluster: exclusive lease not taken");
                None
            }
        }
    }
}

/// The lease held by the active exclusive subscription: given up when dropped.
pub(super) struct ExclusiveHold {
    gate: Arc<ExclusiveGate>,
    lease: Lease,
}

impl ExclusiveHold {
    /// Whether it is still safely held: renewals reached JetStream recently enough that it
    /// cannot lapse before a pull of `pull_wait` ends.
    pub(super) fn is_fresh(&self, pull_wait: Duration) -> bool {
        self.lease.is_fresh(pull_wait + Duration::from_secs(1))
    }
}

impl Drop for ExclusiveHold {
    fn drop(&mut self) {
        self.lease.release();
        self.gate.held_here.fetch_sub(1, Ordering::AcqRel);
        // The others here read the lease again, as after a reading that found it held.
        *self.gate.seen() = (Seen::Taken, None);
    }
}

#[cfg(test)]
mod tests {
    use super::Seen;

    #[test]
    fn others_start_again_only_after_two_readings_find_the_lease_free() {
        // Never held: the first free reading lets them pull.
        assert_eq!(Seen::Free.after(false), Seen::Free);
        // Held, then free once: still waiting; free again: pulling.
        let freed = Seen::Free.after(true).after(false);
        assert_eq!(freed, Seen::Freed);
        assert_eq!(freed.after(false), Seen::Free);
        // Taken again in between (a standby took over): waiting.
        assert_eq!(freed.after(true), Seen::Taken);
    }
}
