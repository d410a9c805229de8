//! A lease in the vhost's key-value bucket `CLUSTER_VHOST_durables`: which edge holds a
//! durable topic subscription's attachment ([`super::durable`]) or a queue's exclusive consumer
//! ([`super::exclusive`]). Taken with a create (refused while another edge holds the key),
//! renewed every [`LEASE_RENEW`] by its holder, deleted when given up; an edge that dies loses
//! its leases after [`LEASE_TTL`] (the bucket's `max_age`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use tokio::sync::Notify;

/// How long a lease lives without renewal: after an edge dies, what it held can be taken
/// elsewhere after at most this long.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often the holder renews a lease.
pub const LEASE_RENEW: Duration = Duration::from_secs(5);

/// A lease held by this edge (given up when dropped).
pub(super) struct Lease {
    inner: Arc<LeaseInner>,
}

struct LeaseInner {
    leases: kv::Store,
    /// A durable subscription's stream: its consumer (named as the key) is removed before the
    /// lease is given up when [`Lease::remove_consumer_on_release`] asked for it.
    stream: Option<jetstream::stream::Stream>,
    key: String,
    revision: AtomicU64,
    /// When the lease was taken; `renewed_ms` counts from here.
    taken: Instant,
    /// Milliseconds after `taken` of the last successful renewal (or of the taking).
    renewed_ms: AtomicU64,
    released: AtomicBool,
    remove_consumer: AtomicBool,
    /// Wakes the renewal task at release.
    wake: Notify,
    /// Set (and `done` notified) once the renewal task gave the lease up.
    finished: AtomicBool,
    done: Notify,
}

impl Lease {
    /// Takes lease `key` in `leases` (with a create, which only one edge's request can win):
    /// `None` while another holds it. `stream`: see [`LeaseInner`]'s.
    pub(super) async fn take(
        leases: &kv::Store,
        stream: Option<jetstream::stream::Stream>,
        key: &str,
    ) -> Result<Option<Lease>, kv::CreateError> {
        match leases.create(key, Bytes::new()).await {
            Ok(revision) => Ok(Some(Lease::hold(
                leases.clone(),
                stream,
                key.to_string(),
                revision,
            ))),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Holds the lease taken at `revision` of `key`, renewing it until released.
    fn hold(
        leases: kv::Store,
        stream: Option<jetstream::stream::Stream>,
        key: String,
        revision: u64,
    ) -> Lease {
        let inner = Arc::new(LeaseInner {
            leases,
            stream,
            key,
            revision: AtomicU64::new(revision),
            taken: Instant::now(),
            renewed_ms: AtomicU64::new(0),
            released: AtomicBool::new(false),
            remove_consumer: AtomicBool::new(false),
            wake: Notify::new(),
            finished: AtomicBool::new(false),
            done: Notify::new(),
        });
        tokio::spawn(inner.clone().renew());
        Lease { inner }
    }

    /// Gives the lease up (in the background; see [`release_now`](Self::release_now)).
    pub(super) fn release(&self) {
        self.inner.release();
    }

    /// Asks for the durable subscription's consumer to be removed when the lease is given up.
    pub(super) fn remove_consumer_on_release(&self) {
        self.inner.remove_consumer.store(true, Ordering::Release);
    }

    /// Whether the last renewal that JetStream took is more recent than `LEASE_TTL - margin`:
    /// false once the lease may have lapsed (or be about to) because renewals failed, so that
    /// another edge could hold it.
    pub(super) fn is_fresh(&self, margin: Duration) -> bool {
        let inner = &self.inner;
        let since_renewal = inner.taken.elapsed().saturating_sub(Duration::from_millis(
            inner.renewed_ms.load(Ordering::Acquire),
        ));
        since_renewal + margin < LEASE_TTL
    }

    /// Gives the lease up and waits (bounded) until it is deleted.
    pub(super) async fn release_now(self) {
        let inner = self.inner.clone();
        inner.release();
        let finished = async {
            loop {
                let done = inner.done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if inner.finished.load(Ordering::Acquire) {
                    return;
                }
                done.await;
            }
        };
        let _ = tokio::time::timeout(LEASE_RENEW, finished).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl LeaseInner {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Renews the lease every [`LEASE_RENEW`] until it is released, then gives it up (one
    /// task does both, so a renewal never races the deletion).
    async fn renew(self: Arc<Self>) {
        loop {
            if self.released.load(Ordering::Acquire) {
                self.give_up().await;
                self.finished.store(true, Ordering::Release);
                self.done.notify_waiters();
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(LEASE_RENEW) => {}
                _ = self.wake.notified() => continue,
            }
            if self.released.load(Ordering::Acquire) {
                continue;
            }
            let revision = self.revision.load(Ordering::Acquire);
            let asked = self.taken.elapsed();
            match self.leases.update(&self.key, Bytes::new(), revision).await {
                Ok(next) => {
                    self.revision.store(next, Ordering::Release);
                    // From when it was asked: JetStream's clock for `max_age` started no earlier.
                    let asked_ms = u64::try_from(asked.as_millis()).unwrap_or(u64::MAX);
                    self.renewed_ms.store(asked_ms, Ordering::Release);
                }
                Err(err) => {
                    tracing::warn!(key = %self.key, error = %err, "cluster: a lease could not be renewed (another edge may take it once it lapses)");
                }
            }
        }
    }

    /// Removes the consumer when asked to, then deletes the lease if it is still this one.
    async fn give_up(&self) {
        if self.remove_consumer.load(Ordering::Acquire) {
            if let Some(stream) = &self.stream {
                if let Err(err) = stream.delete_consumer(&self.key).await {
                    tracing::warn!(consumer = %self.key, error = %err, "cluster: durable subscription not removed");
                }
            }
        }
        let revision = self.revision.load(Ordering::Acquire);
        if let Err(err) = self
            .leases
            .delete_expect_revision(&self.key, Some(revision))
            .await
        {
            tracing::debug!(key = %self.key, error = %err, "cluster: lease not deleted (it lapses by itself)");
        }
    }
}
