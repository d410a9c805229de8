//! The per-connection outbound queue: frames and deliveries waiting for the connection's writer.
//!
//! Pushed by the session (CONNECTED, RECEIPT, ERROR) and by the router (deliveries, from any
//! producer's task); drained in batches by the writer, which coalesces them into few syscalls.
//! The lock is per connection, never shared by all connections.
//!
//! Bounds: queue deliveries are bounded by each subscription's window (credit), so they are
//! pushed unconditionally; topic deliveries go through [`Outbox::try_push`] and meet the
//! slow-consumer policy when the outbox is full; the session pauses reading while the outbox is
//! over its limit (so a client that sends receipts faster than it reads them is slowed).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::codec::Frame;

use super::message::Delivery;

/// Something for the writer to send.
#[derive(Debug)]
pub enum Outgoing {
    /// A ready frame (CONNECTED, RECEIPT, ERROR).
    Frame(Frame),
    /// A message for one subscription.
    Delivery(Delivery),
    /// Write everything before this, then close the connection.
    Close,
    /// Write everything before this, then signal; deliveries queued after it are not written
    /// (the session is about to hand them back): a connection ending cleanly.
    Drain(tokio::sync::oneshot::Sender<()>),
}

/// The writer's view of what it took.
pub enum Taken {
    /// Items were moved into the caller's buffer.
    Items,
    /// Nothing arrived within the idle interval (time for a heart-beat).
    Idle,
}

#[derive(Default)]
struct State {
    items: VecDeque<Outgoing>,
}

/// A connection's outbound queue.
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer when items arrive.
    ready: Notify,
    /// Wakes a paused session when the writer made room.
    room: Notify,
    limit: usize,
    /// Topic messages dropped for this connection under the `drop` slow-consumer policy.
    pub dropped: AtomicU64,
    /// Set when the connection is to be cut as a slow consumer.
    slow: AtomicBool,
    /// Set when a publisher gave up waiting for room; cleared when the writer drains. While set,
    /// publishers do not wait for this connection again.
    stalled: AtomicBool,
    /// Wakes the session when `slow` is set.
    slow_signal: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("limit", &self.limit)
            .finish()
    }
}

/// The outbox is over its limit.
#[derive(Debug)]
pub struct Full;

impl Outbox {
    /// An empty outbox; [`Outbox::try_push`] refuses once it holds `limit` items.
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            room: Notify::new(),
            limit,
            dropped: AtomicU64::new(0),
            slow: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            slow_signal: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-push; the queue is still valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an item regardless of the limit (control frames and credit-bounded deliveries).
    pub fn push(&self, item: Outgoing) {
        let was_empty = {
            let mut state = self.lock();
            state.items.push_back(item);
            state.items.len() == 1
        };
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Queues an item unless the outbox is at its limit.
    pub fn try_push(&self, item: Outgoing) -> Result<(), (Full, Outgoing)> {
        let was_empty = {
            let mut state = self.lock();
            if state.items.len() >= self.limit {
                return Err((Full, item));
            }
            state.items.push_back(item);
            state.items.len() == 1
        };
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The limit given at creation.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Number of items waiting.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the outbox is below its limit.
    pub async fn wait_for_room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.len() < self.limit {
                return;
            }
            notified.await;
        }
    }

    /// Moves every waiting item into `out`, waiting for at least one, or for `idle` to pass.
    pub async fn take(&self, out: &mut Vec<Outgoing>, idle: Option<std::time::Duration>) -> Taken {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if !state.items.is_empty() {
                    out.extend(state.items.drain(..));
                    drop(state);
                    self.stalled.store(false, Ordering::Relaxed);
                    self.room.notify_waiters();
                    return Taken::Items;
                }
            }
            match idle {
                Some(idle) => {
                    if tokio::time::timeout(idle, notified).await.is_err() {
                        return Taken::Idle;
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Removes and returns everything still waiting (used at connection teardown).
    pub fn drain(&self) -> Vec<Outgoing> {
        self.lock().items.drain(..).collect()
    }

    /// Marks the connection as stuck (a publisher waited for it in vain).
    pub fn set_stalled(&self) {
        self.stalled.store(true, Ordering::Relaxed);
    }

    /// Whether a publisher waited for this connection in vain since it last drained.
    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Asks the session to disconnect this connection as a slow consumer.
    pub fn mark_slow(&self) {
        if !self.slow.swap(true, Ordering::AcqRel) {
            self.slow_signal.notify_one();
        }
    }

    /// Resolves once [`Outbox::mark_slow`] was called.
    pub async fn slow_consumer(&self) {
        loop {
            let notified = self.slow_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.slow.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Counts a topic message dropped for this connection.
    pub fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Command;
    use std::time::Duration;

    #[tokio::test]
    async fn take_returns_items_in_order() {
        let outbox = Outbox::new(16);
        outbox.push(Outgoing::Frame(Frame::new(Command::Receipt)));
        outbox.push(Outgoing::Close);
        let mut out = Vec::new();
        assert!(matches!(outbox.take(&mut out, None).await, Taken::Items));
        assert_eq!(out.len(), 2);
        assert!(matches!(out[1], Outgoing::Close));
    }

    #[tokio::test]
    async fn take_reports_idle() {
        let outbox = Outbox::new(16);
        let mut out = Vec::new();
        let taken = outbox.take(&mut out, Some(Duration::from_millis(10))).await;
        assert!(matches!(taken, Taken::Idle));
    }

    #[test]
    fn try_push_respects_the_limit() {
        let outbox = Outbox::new(1);
        assert!(outbox.try_push(Outgoing::Close).is_ok());
        assert!(outbox.try_push(Outgoing::Close).is_err());
        outbox.push(Outgoing::Close);
        assert_eq!(outbox.len(), 2);
    }
}
