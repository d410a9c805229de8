//! The router's state for one client connection: its subscriptions (by connection-local key and
//! by SUBSCRIBE `id`), its temporary queues (private to it, removed with it) and the
//! destinations it resolved before (a cache, so publishing takes no shared lock). The session
//! owns it and hands it to every router call made for the connection;
//! [`Router::disconnect`](super::Router::disconnect) releases everything in it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::queue::Queue;
use super::subscription::Subscription;
use super::Destination;

/// A connection forgets its resolved destinations past this many (bounded memory; the next
/// publish to one of them takes the name table's lock once more).
const DESTINATION_CACHE: usize = 1024;

/// One client connection, as the router knows it.
#[derive(Debug)]
pub struct Connection {
    /// The session id: names its reply queues.
    pub(super) id: Arc<str>,
    /// `/temp-queue/NAME` → the queue and its global reply name.
    pub(super) temp_queues: HashMap<Bytes, (Bytes, Arc<Queue>)>,
    /// Destinations resolved for SEND.
    resolved: HashMap<Bytes, Destination>,
    /// Subscriptions by connection-local key (the first part of a 1.2 `ack` value).
    pub(super) subscriptions: HashMap<u32, Arc<Subscription>>,
    /// SUBSCRIBE `id` → key. 1.0 subscriptions without an id are keyed by destination here.
    pub(super) by_wire_id: HashMap<Bytes, u32>,
    /// Composite subscriptions: the first part's key → its `by_wire_id` key and every part's
    /// key (see `composite`).
    pub(super) composites: HashMap<u32, (Bytes, Vec<u32>)>,
    /// The next connection-local subscription key to try.
    pub(super) next_key: u32,
    /// Destinations this connection may still create now (a token bucket).
    creations: f64,
    /// When `creations` was last refilled.
    refilled: std::time::Instant,
}

/// A connection may create this many seconds' worth of destinations at once.
const CREATION_BURST_SECONDS: f64 = 10.0;

impl Connection {
    /// The router's state for a new connection whose session id is `id`.
    pub fn new(id: Arc<str>) -> Connection {
        Connection {
            id,
            temp_queues: HashMap::new(),
            resolved: HashMap::new(),
            subscriptions: HashMap::new(),
            by_wire_id: HashMap::new(),
            composites: HashMap::new(),
            next_key: 0,
            creations: f64::INFINITY,
            refilled: std::time::Instant::now(),
        }
    }

    /// Takes one destination creation from the connection's allowance of `per_second`
    /// (bursts of ten seconds' worth); false when it is used up.
    pub(super) fn take_creation(&mut self, per_second: u32) -> bool {
        let rate = f64::from(per_second);
        let burst = rate * CREATION_BURST_SECONDS;
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.creations = (self.creations + elapsed * rate).min(burst);
        self.refilled = now;
        if self.creations >= 1.0 {
            self.creations -= 1.0;
            true
        } else {
            false
        }
    }

    /// A subscription key no subscription of this connection holds now (keys wrap around
    /// after 2^32 subscriptions; one still in use is skipped).
    pub(super) fn free_key(&mut self) -> u32 {
        loop {
            let key = self.next_key;
            self.next_key = self.next_key.wrapping_add(1);
            if !self.subscriptions.contains_key(&key) {
                return key;
            }
        }
    }

    /// The subscription with connection-local `key`.
    pub fn subscription(&self, key: u32) -> Option<&Arc<Subscription>> {
        self.subscriptions.get(&key)
    }

    /// The subscription a SUBSCRIBE `id` names (or, for a 1.0 subscription without one, the
    /// [`table_key`] of its destination).
    pub fn by_wire_id(&self, id: &[u8]) -> Option<&Arc<Subscription>> {
        self.by_wire_id
            .get(id)
            .and_then(|key| self.subscriptions.get(key))
    }

    /// The part of subscription `key` that has `message_id` pending: `key` itself unless it
    /// is a composite subscription and another part delivered that message.
    pub fn part_holding(&self, key: u32, message_id: &[u8]) -> u32 {
        let Some((_, parts)) = self.composites.get(&key) else {
            return key;
        };
        parts
            .iter()
            .copied()
            .find(|part| {
                self.subscriptions.get(part).is_some_and(|subscription| {
                    subscription
                        .check(super::AckTarget::MessageId(message_id))
                        .is_ok()
                })
            })
            .unwrap_or(key)
    }

    /// Every subscription of this connection.
    pub fn subscriptions(&self) -> impl Iterator<Item = &Arc<Subscription>> {
        self.subscriptions.values()
    }

    /// How many subscriptions the connection holds.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    pub(super) fn cached(&self, name: &[u8]) -> Option<&Destination> {
        self.resolved.get(name)
    }

    pub(super) fn remember(&mut self, name: &Bytes, destination: &Destination) {
        if self.resolved.len() >= DESTINATION_CACHE {
            self.resolved.clear();
        }
        self.resolved.insert(name.clone(), destination.clone());
    }

    /// The temp queue `local` names, if this connection has it.
    pub(super) fn temp_queue(&self, local: &[u8]) -> Option<&(Bytes, Arc<Queue>)> {
        self.temp_queues.get(local)
    }

    /// Whether `global` is the reply name of one of this connection's temp queues.
    pub(super) fn owns_reply_queue(&self, global: &[u8]) -> Option<Arc<Queue>> {
        self.temp_queues
            .values()
            .find(|(name, _)| name.as_ref() == global)
            .map(|(_, queue)| queue.clone())
    }
}

/// The `by_wire_id` key of a subscription: its SUBSCRIBE `id`, or for a 1.0 subscription without
/// one, its destination behind a NUL-led marker (1.0 headers cannot contain NUL, so it never
/// collides with a real id).
pub fn table_key(wire_id: Option<&Bytes>, destination: &Bytes) -> Bytes {
    match wire_id {
        Some(id) => id.clone(),
        None => {
            let mut key = bytes::BytesMut::with_capacity(destination.len() + 6);
            key.extend_from_slice(b"\x00dest:");
            key.extend_from_slice(destination);
            key.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_are_allowed_in_bursts_then_at_the_rate() {
        let mut conn = Connection::new(Arc::from("c"));
        let allowed = (0..2000).filter(|_| conn.take_creation(10)).count();
        assert_eq!(allowed, 100, "a burst of ten seconds' worth");
        conn.refilled -= std::time::Duration::from_millis(500);
        let allowed = (0..100).filter(|_| conn.take_creation(10)).count();
        assert_eq!(allowed, 5, "half a second at 10 per second");
    }
}
