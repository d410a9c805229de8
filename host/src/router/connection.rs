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
    /// The next connection-local subscription key to try.
    next_key: u32,
}

impl Connection {
    /// The router's state for a new connection whose session id is `id`.
    pub fn new(id: Arc<str>) -> Connection {
        Connection {
            id,
            temp_queues: HashMap::new(),
            resolved: HashMap::new(),
            subscriptions: HashMap::new(),
            by_wire_id: HashMap::new(),
            next_key: 0,
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
