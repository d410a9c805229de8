//! This edge's view of the vhost's exclusive-consumer leases (`x.TOKEN` keys of the lease
//! bucket, [`super::exclusive`]), kept by one watch of those keys instead of a lease read per
//! queue every few seconds.
//!
//! A subscription that is not exclusive pulls only while nobody holds its queue's lease; with
//! reads, every such queue cost each edge one key-value read every
//! [`CHECK_EVERY`], whether or not anyone ever subscribed
//! exclusively. The watch (started by the first question, one per vhost and edge) receives
//! every take, renewal and release of an `x.` key as it happens, so the answer is local:
//!
//! - a key taken or renewed less than [`LEASE_TTL`] ago is held (its holder renews every
//!   [`LEASE_RENEW`](super::lease::LEASE_RENEW); one that stopped lapses after `LEASE_TTL`,
//!   with no event);
//! - a key released (or lapsed) counts as held for [`CHECK_EVERY`] more, so that a waiting
//!   exclusive subscription, which tries every half second, takes over before the others
//!   start again (what the reads' "two free readings" gave);
//! - until the watch has delivered the keys that exist (or while it is being made again after
//!   NATS failed it), [`LeaseWatch::is_taken`] has no answer and the caller reads the key.
//!
//! When a key is taken, the pulls waiting for the queue's other subscriptions on this edge are
//! told ([`LeaseWatch::notifier`]) and leave the server at once: the exclusive subscription
//! gets the queue's next message, not a pull started before it took the lease.
//!
//! It holds at most [`MAX_KEYS`] keys (released ones are forgotten once their grace passed):
//! past that it gives no answers, and the reads take over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tokio::sync::Notify;

use super::exclusive::CHECK_EVERY;
use super::lease::LEASE_TTL;

/// Most keys followed at once.
pub const MAX_KEYS: usize = 65_536;
/// A watch that delivered nothing for this long has delivered every key that exists.
const SYNCED_AFTER: Duration = Duration::from_millis(250);
/// The pause before a watch NATS ended is made again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The vhost's exclusive leases as this edge last heard of them.
#[derive(Default)]
pub struct LeaseWatch {
    started: AtomicBool,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Whether the keys that exist have all been delivered (and none was left out).
    synced: bool,
    /// Past [`MAX_KEYS`]: answers stop until the watch is made again.
    overflowed: bool,
    keys: HashMap<String, Seen>,
    /// Told when a key is taken: the queue's subscriptions on this edge that are not
    /// exclusive (one per key, shared; dropped with the last of them).
    takers: HashMap<String, Weak<Notify>>,
}

/// One key's last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Taken or renewed at this instant.
    Put(Instant),
    /// Released at this instant.
    Gone(Instant),
}

impl Seen {
    /// Whether a subscription that is not exclusive must still keep off the queue.
    fn holds(self, now: Instant) -> bool {
        match self {
            Seen::Put(at) => now.saturating_duration_since(at) < LEASE_TTL + CHECK_EVERY,
            Seen::Gone(at) => now.saturating_duration_since(at) < CHECK_EVERY,
        }
    }
}

impl LeaseWatch {
    /// Whether key `key` is held as far as the watch knows; `None` when it cannot say (not
    /// started or not caught up yet, or following too many keys): read the key then. The
    /// first question starts the watch on `leases`.
    pub fn is_taken(&self, leases: impl FnOnce() -> Option<kv::Store>, key: &str) -> Option<bool> {
        if !self.started.load(Ordering::Acquire) {
            if let Some(store) = leases() {
                if !self.started.swap(true, Ordering::AcqRel) {
                    tokio::spawn(run(store, self.state.clone()));
                }
            }
            return None;
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.synced || state.overflowed {
            return None;
        }
        Some(
            state
                .keys
                .get(key)
                .is_some_and(|seen| seen.holds(Instant::now())),
        )
    }
}

impl LeaseWatch {
    /// What tells the subscriptions of this edge that are not exclusive that key `key` was
    /// just taken.
    pub fn notifier(&self, key: &str) -> Arc<Notify> {
        let mut state = lock(&self.state);
        if let Some(notify) = state.takers.get(key).and_then(Weak::upgrade) {
            return notify;
        }
        if state.takers.len() >= MAX_KEYS {
            state.takers.retain(|_, notify| notify.strong_count() > 0);
        }
        let notify = Arc::new(Notify::new());
        state
            .takers
            .insert(key.to_string(), Arc::downgrade(&notify));
        notify
    }
}

/// Follows the `x.>` keys of `leases` into `state`, making the watch again whenever it ends;
/// ends with the NATS client.
async fn run(leases: kv::Store, state: Arc<Mutex<State>>) {
    loop {
        match leases.watch_with_history("x.>").await {
            Ok(mut watch) => {
                reset(&state);
                loop {
                    match tokio::time::timeout(SYNCED_AFTER, watch.next()).await {
                        Err(_) => mark_synced(&state),
                        Ok(Some(Ok(entry))) => apply(&state, &entry),
                        Ok(Some(Err(err))) => {
                            tracing::debug!(error = %err, "cluster: the exclusive leases' watch failed; making it again");
                            break;
                        }
                        Ok(None) => break,
                    }
                }
                reset(&state);
            }
            Err(err) => {
                tracing::debug!(error = %err, "cluster: cannot watch the exclusive leases; reading them meanwhile");
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn reset(state: &Mutex<State>) {
    let mut state = lock(state);
    state.synced = false;
    state.overflowed = false;
    state.keys.clear();
    state.takers.retain(|_, notify| notify.strong_count() > 0);
}

fn mark_synced(state: &Mutex<State>) {
    lock(state).synced = true;
}

/// When the event `entry` of a watch happened, on this edge's clock (`now` being now): an
/// event from the history happened before now, as long ago as the server says, at most `cap`
/// (clocks may differ a little).
pub(super) fn seen_at(entry: &kv::Entry, now: Instant, cap: Duration) -> Instant {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let age_ns = (now_ns - entry.created.unix_timestamp_nanos()).max(0);
    let age = Duration::from_nanos(u64::try_from(age_ns).unwrap_or(u64::MAX)).min(cap);
    now.checked_sub(age).unwrap_or(now)
}

/// Records one event of the watch.
fn apply(state: &Mutex<State>, entry: &kv::Entry) {
    let now = Instant::now();
    let at = seen_at(entry, now, LEASE_TTL + CHECK_EVERY);
    let seen = match entry.operation {
        kv::Operation::Put => Seen::Put(at),
        kv::Operation::Delete | kv::Operation::Purge => Seen::Gone(at),
    };
    let mut state = lock(state);
    if entry.delta == 0 {
        state.synced = true;
    }
    let was_held = state.keys.get(&entry.key).is_some_and(
        |s| matches!(s, Seen::Put(p) if now.saturating_duration_since(*p) < LEASE_TTL),
    );
    if matches!(seen, Seen::Put(_)) && !was_held {
        if let Some(notify) = state.takers.get(&entry.key).and_then(Weak::upgrade) {
            notify.notify_waiters();
        }
    }
    if state.keys.len() >= MAX_KEYS && !state.keys.contains_key(&entry.key) {
        state.keys.retain(|_, seen| seen.holds(now));
        if state.keys.len() >= MAX_KEYS {
            if !state.overflowed {
                tracing::warn!(
                    max = MAX_KEYS,
                    "cluster: too many exclusive leases to follow; reading them instead"
                );
            }
            state.overflowed = true;
            return;
        }
    }
    state.keys.insert(entry.key.clone(), seen);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_while_renewed_and_a_moment_after_it_went() {
        let now = Instant::now();
        let ago = |secs: u64| now - Duration::from_secs(secs);
        assert!(Seen::Put(ago(14)).holds(now), "renewed within its life");
        assert!(
            Seen::Put(ago(16)).holds(now),
            "lapsed a moment ago: a standby goes first"
        );
        assert!(!Seen::Put(ago(20)).holds(now), "lapsed long ago");
        assert!(
            Seen::Gone(ago(1)).holds(now),
            "just released: a standby goes first"
        );
        assert!(!Seen::Gone(ago(3)).holds(now));
    }

    #[tokio::test]
    async fn no_answer_until_started_and_caught_up() {
        let watch = LeaseWatch::default();
        // Without a bucket it cannot start.
        assert_eq!(watch.is_taken(|| None, "x.q"), None);
        assert!(!watch.started.load(Ordering::Acquire));
        // Started (by hand here) but not caught up: still no answer.
        watch.started.store(true, Ordering::Release);
        assert_eq!(watch.is_taken(|| None, "x.q"), None);
        lock(&watch.state).synced = true;
        assert_eq!(watch.is_taken(|| None, "x.q"), Some(false));
        lock(&watch.state)
            .keys
            .insert("x.q".into(), Seen::Put(Instant::now()));
        assert_eq!(watch.is_taken(|| None, "x.q"), Some(true));
        lock(&watch.state).overflowed = true;
        assert_eq!(watch.is_taken(|| None, "x.q"), None);
    }
}
