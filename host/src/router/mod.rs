//! Destinations and delivery: the [`Router`] owns every queue and topic by name, resolves a
//! STOMP `destination` to one of them, and makes and ends subscriptions. Its operations are its
//! whole API: a session resolves and publishes ([`Router::resolve`], [`publish`]), subscribes
//! and unsubscribes ([`Router::prepare_subscription`], [`Router::attach`],
//! [`Router::unsubscribe`]), acts on deliveries through the [`Subscription`] it got back
//! (settle, check, decline, written), and releases a connection's state with
//! [`Router::disconnect`]. It never builds router objects itself.
//!
//! | prefix | kind |
//! |---|---|
//! | `/queue/NAME` | [`Queue`]: competing consumers, created on first use |
//! | `/topic/NAME` | [`Topic`]: fan-out to current subscribers, nothing retained |
//! | `/temp-queue/NAME` | a [`Queue`] private to the connection that names it |
//! | `/reply-queue/ID` | the global name under which a temp queue receives replies |
//! | `durable:OWNER/CLIENT/NAME` | a durable topic subscription's queue (internal, see [`durable`]) |
//!
//! Any other destination is refused with an ERROR naming these prefixes, as ActiveMQ and
//! RabbitMQ do.
//!
//! The name table is split into shards so that connections resolving different names do not
//! share a lock; connections also cache what they resolved, so the per-message path takes no
//! shared lock at all.
//!
//! Lock order (never taken the other way round): durable turns → name shard; queue → its DLQ
//! queue → store inbox; topic subscriber list (held only to clone an `Arc`); topic consumer
//! window → outbox. No lock is held across an `.await`.

pub mod connection;
pub mod durable;
pub mod message;
pub mod outbox;
pub mod queue;
pub mod subscription;
pub mod topic;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::config::{DeadLetterConfig, FlowConfig};
use crate::plugin::Principal;
use crate::policy::DeliveryFilter;
use crate::store::record::Enqueue;
use crate::store::Store;
use crate::text::shown;

pub use connection::{table_key, Connection};
pub use durable::DurableKey;
pub use message::{Delivery, Message};
pub use outbox::{Outbox, Outgoing};
pub use queue::{AckTarget, DeadLetter, NotPending, Queue};
pub use subscription::{AckMode, Subscription};
pub use topic::{Topic, TopicConsumer};

pub const QUEUE_PREFIX: &[u8] = b"/queue/";
pub const TOPIC_PREFIX: &[u8] = b"/topic/";
pub const TEMP_QUEUE_PREFIX: &[u8] = b"/temp-queue/";
pub const REPLY_QUEUE_PREFIX: &[u8] = b"/reply-queue/";
/// Names of durable subscription queues start with this (no destination does).
pub const DURABLE_PREFIX: &[u8] = b"durable:";

/// What a destination name means (the router's own reading of a name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Queue,
    Topic,
    TempQueue,
    ReplyQueue,
}

/// Why a destination was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("unknown destination '{0}': destinations must start with /queue/, /topic/, /temp-queue/ or /reply-queue/")]
    UnknownPrefix(String),
    #[error("destination '{0}' has an empty name after its prefix")]
    EmptyName(String),
}

/// Why a SUBSCRIBE was refused by the router.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("duplicate subscription id '{0}' on this connection")]
    DuplicateId(String),
    #[error("'{0}' is another connection's reply queue; only its owner may subscribe")]
    NotOwner(String),
    #[error("durable subscription {0} already has an active subscriber")]
    DurableActive(String),
    #[error("durable subscription {0} is on topic '{1}', which this login may not read: it cannot be moved")]
    DurableMoveRefused(String, String),
}

/// Why a durable subscription could not be removed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurableError {
    #[error("no durable subscription {0}")]
    Unknown(String),
    #[error(
        "durable subscription {0} has an active subscriber: it cannot be removed while attached"
    )]
    Active(String),
    #[error("durable subscription {0} is on topic '{1}', which this login may not read")]
    NotPermitted(String, String),
}

/// Checks that `destination` names something a client may address.
pub fn check_name(destination: &[u8]) -> Result<(), RouteError> {
    classify(destination).map(|_| ())
}

fn classify(destination: &[u8]) -> Result<Kind, RouteError> {
    let (kind, prefix) = if destination.starts_with(QUEUE_PREFIX) {
        (Kind::Queue, QUEUE_PREFIX)
    } else if destination.starts_with(TOPIC_PREFIX) {
        (Kind::Topic, TOPIC_PREFIX)
    } else if destination.starts_with(TEMP_QUEUE_PREFIX) {
        (Kind::TempQueue, TEMP_QUEUE_PREFIX)
    } else if destination.starts_with(REPLY_QUEUE_PREFIX) {
        (Kind::ReplyQueue, REPLY_QUEUE_PREFIX)
    } else {
        return Err(RouteError::UnknownPrefix(shown(destination)));
    };
    if destination.len() == prefix.len() {
        return Err(RouteError::EmptyName(shown(destination)));
    }
    Ok(kind)
}

/// A resolved destination: a queue (a temp queue's or a durable subscription's included) or a
/// topic. The one "queue or topic" type.
#[derive(Debug, Clone)]
pub enum Destination {
    Queue(Arc<Queue>),
    Topic(Arc<Topic>),
}

/// Publishes a message to a resolved destination. A full queue pauses this producer until
/// there is room; a topic subscriber that is behind holds it up for up to `patience`.
pub async fn publish(destination: &Destination, message: Arc<Message>, patience: Duration) {
    match destination {
        Destination::Queue(queue) => queue.publish(message).await,
        Destination::Topic(topic) => topic.publish(&message, patience).await,
    }
}

/// What a SUBSCRIBE asks for, as the session read it from the frame.
pub struct SubscribeRequest<'a> {
    pub wire_id: Option<Bytes>,
    pub destination: Bytes,
    pub ack_mode: AckMode,
    /// Unacked-message window.
    pub window: u32,
    /// For a topic: make, or attach to, this durable subscription.
    pub durable: Option<DurableKey>,
    /// Who subscribes (moving a durable subscription to another topic needs read rights on
    /// the old one).
    pub principal: &'a Principal,
    /// Where deliveries go.
    pub outbox: Arc<Outbox>,
    /// The message plugins' filter.
    pub filter: DeliveryFilter,
}

/// A subscription resolved (its queue or topic found or made, a durable subscription claimed
/// and journaled) but not attached yet: nothing is delivered to it until
/// [`Router::attach`]. Dropped without attaching, it releases its claim.
pub struct PreparedSubscription {
    wire_id: Option<Bytes>,
    destination: Bytes,
    ack_mode: AckMode,
    window: u32,
    outbox: Arc<Outbox>,
    filter: DeliveryFilter,
    source: Destination,
    claim: Claim,
}

/// A durable subscription's queue claimed for one subscriber that has not attached yet.
struct Claim(Option<Arc<Queue>>);

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(queue) = self.0.take() {
            queue.release_claim();
        }
    }
}

const SHARDS: usize = 16;

#[derive(Debug, Default)]
struct Shard {
    queues: HashMap<Bytes, Arc<Queue>>,
    topics: HashMap<Bytes, Arc<Topic>>,
}

/// The broker's destinations.
#[derive(Debug)]
pub struct Router {
    shards: Vec<Mutex<Shard>>,
    flow: FlowConfig,
    dead_letter: DeadLetterConfig,
    store: Option<Arc<Store>>,
    /// Serialises creating, moving and removing durable subscriptions.
    durable_turns: Mutex<()>,
    /// Consumer ids: unique for the broker's life, so no ACK of one connection can ever name
    /// another's deliveries.
    next_consumer: AtomicU64,
    /// Durable subscriptions of the journal before the current naming, read back under
    /// their new name: journal name → new name (used while the journal is read back).
    legacy_durables: Mutex<HashMap<Bytes, Bytes>>,
}

impl Router {
    pub fn new(flow: FlowConfig, dead_letter: DeadLetterConfig) -> Router {
        Router::with_store(flow, dead_letter, None)
    }

    /// A router whose queues journal persistent messages in `store`.
    pub fn with_store(
        flow: FlowConfig,
        dead_letter: DeadLetterConfig,
        store: Option<Arc<Store>>,
    ) -> Router {
        Router {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            flow,
            dead_letter,
            store,
            durable_turns: Mutex::new(()),
            next_consumer: AtomicU64::new(1),
            legacy_durables: Mutex::default(),
        }
    }

    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    pub fn flow(&self) -> &FlowConfig {
        &self.flow
    }

    fn shard(&self, name: &[u8]) -> std::sync::MutexGuard<'_, Shard> {
        let mut hasher = DefaultHasher::new();
        name.hash(&mut hasher);
        let index = (hasher.finish() as usize) % SHARDS;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves a SEND destination for `conn`, from its cache when it can. `None`: nothing
    /// receives it (a topic nobody ever subscribed to, or a reply queue that is gone).
    pub fn resolve(
        &self,
        conn: &mut Connection,
        name: &Bytes,
    ) -> Result<Option<Destination>, RouteError> {
        if let Some(found) = conn.cached(name) {
            return Ok(Some(found.clone()));
        }
        let found = match classify(name)? {
            Kind::Queue => Destination::Queue(self.queue(name)),
            Kind::Topic => match self.existing_topic(name) {
                Some(topic) => Destination::Topic(topic),
                None => return Ok(None),
            },
            Kind::TempQueue => return Ok(Some(Destination::Queue(self.temp_queue(conn, name).1))),
            Kind::ReplyQueue => match self.existing_queue(name) {
                Some(queue) => Destination::Queue(queue),
                None => return Ok(None),
            },
        };
        conn.remember(name, &found);
        Ok(Some(found))
    }

    /// The global reply name of `conn`'s temp queue `/temp-queue/NAME` (made on first use),
    /// for a `reply-to` header: whoever receives the message can answer to it.
    pub fn reply_name(&self, conn: &mut Connection, local: &Bytes) -> Option<Bytes> {
        (local.starts_with(TEMP_QUEUE_PREFIX) && local.len() > TEMP_QUEUE_PREFIX.len())
            .then(|| self.temp_queue(conn, local).0)
    }

    /// `conn`'s temp queue for `/temp-queue/NAME`, created (and registered under its global
    /// reply name) on first use.
    fn temp_queue(&self, conn: &mut Connection, local: &Bytes) -> (Bytes, Arc<Queue>) {
        if let Some(found) = conn.temp_queue(local) {
            return found.clone();
        }
        let mut global = BytesMut::new();
        global.extend_from_slice(REPLY_QUEUE_PREFIX);
        global.extend_from_slice(conn.id.as_bytes());
        global.extend_from_slice(b".");
        global.extend_from_slice(&local[TEMP_QUEUE_PREFIX.len()..]);
        let global = global.freeze();
        let queue = Arc::new(Queue::new(global.clone(), self.flow.queue_max_messages));
        self.shard(&global)
            .queues
            .insert(global.clone(), queue.clone());
        conn.temp_queues
            .insert(local.clone(), (global.clone(), queue.clone()));
        (global, queue)
    }

    /// Resolves a SUBSCRIBE for `conn`: finds or makes its queue or topic, claims (and
    /// journals) a durable subscription. Nothing is delivered before [`attach`](Self::attach).
    pub fn prepare_subscription(
        &self,
        conn: &mut Connection,
        request: SubscribeRequest<'_>,
    ) -> Result<PreparedSubscription, SubscribeError> {
        let table_key = table_key(request.wire_id.as_ref(), &request.destination);
        if conn.by_wire_id.contains_key(&table_key) {
            let name = request.wire_id.as_ref().unwrap_or(&request.destination);
            return Err(SubscribeError::DuplicateId(shown(name)));
        }
        let name = &request.destination;
        let mut claim = Claim(None);
        let source = match classify(name)? {
            Kind::Queue => Destination::Queue(self.queue(name)),
            Kind::TempQueue => Destination::Queue(self.temp_queue(conn, name).1),
            Kind::ReplyQueue => Destination::Queue(
                conn.owns_reply_queue(name)
                    .ok_or_else(|| SubscribeError::NotOwner(shown(name)))?,
            ),
            Kind::Topic => {
                let topic = self.topic(name);
                match &request.durable {
                    Some(key) => {
                        let queue = self.claim_durable(key, &topic, request.principal)?;
                        claim = Claim(Some(queue.clone()));
                        Destination::Queue(queue)
                    }
                    None => Destination::Topic(topic),
                }
            }
        };
        Ok(PreparedSubscription {
            wire_id: request.wire_id,
            destination: request.destination,
            ack_mode: request.ack_mode,
            window: request.window,
            outbox: request.outbox,
            filter: request.filter,
            source,
            claim,
        })
    }

    /// Attaches a prepared subscription: from now on it receives messages.
    pub fn attach(
        &self,
        conn: &mut Connection,
        prepared: PreparedSubscription,
    ) -> Arc<Subscription> {
        let PreparedSubscription {
            wire_id,
            destination,
            ack_mode,
            window,
            outbox,
            filter,
            source,
            mut claim,
        } = prepared;
        // The claim passes to the attached subscriber (released when it unsubscribes).
        claim.0 = None;
        let key = conn.free_key();
        let topic_window = matches!(source, Destination::Topic(_)).then(TopicConsumer::default);
        let subscription = Arc::new(Subscription {
            key,
            consumer_id: self.next_consumer.fetch_add(1, Ordering::Relaxed),
            wire_id,
            destination,
            ack_mode,
            window,
            outbox,
            filter,
            source,
            topic_window,
        });
        conn.by_wire_id.insert(
            table_key(subscription.wire_id.as_ref(), &subscription.destination),
            key,
        );
        conn.subscriptions.insert(key, subscription.clone());
        match &subscription.source {
            Destination::Queue(queue) => queue.subscribe(subscription.clone()),
            Destination::Topic(topic) => topic.subscribe(subscription.clone()),
        }
        subscription
    }

    /// Ends `conn`'s subscription `key` (detaches it; a durable subscription keeps collecting
    /// messages). Its unacked queue messages go back to the queue for the other consumers.
    pub fn unsubscribe(&self, conn: &mut Connection, key: u32) -> Option<Arc<Subscription>> {
        let subscription = conn.subscriptions.remove(&key)?;
        conn.by_wire_id.remove(&table_key(
            subscription.wire_id.as_ref(),
            &subscription.destination,
        ));
        match &subscription.source {
            Destination::Queue(queue) => queue.unsubscribe(subscription.consumer_id),
            Destination::Topic(topic) => {
                topic.unsubscribe(subscription.consumer_id);
            }
        }
        Some(subscription)
    }

    /// Releases everything `conn` holds: its subscriptions end (unacked queue messages go to
    /// other consumers), its temp queues are removed with what is in them.
    pub fn disconnect(&self, conn: &mut Connection) {
        let keys: Vec<u32> = conn.subscriptions.keys().copied().collect();
        for key in keys {
            self.unsubscribe(conn, key);
        }
        for (_, (global, _)) in conn.temp_queues.drain() {
            if let Some(queue) = self.shard(&global).queues.remove(&global) {
                queue.delete();
            }
        }
    }

    /// The named queue, created if missing (`/queue/...` names), with its dead-letter queue
    /// when dead-lettering is on.
    fn queue(&self, name: &Bytes) -> Arc<Queue> {
        if let Some(queue) = self.shard(name).queues.get(name) {
            return queue.clone();
        }
        // The DLQ is made first, outside this name's shard lock (it may share the shard).
        let dead_letter = self.dead_letter_queue(name).map(|queue| DeadLetter {
            queue,
            max_deliveries: self.dead_letter.max_deliveries,
            expired: self.dead_letter.expired,
        });
        let max = self.flow.queue_max_messages;
        self.shard(name)
            .queues
            .entry(name.clone())
            .or_insert_with(|| {
                let queue = match dead_letter {
                    Some(dead_letter) => Queue::with_dead_letter(name.clone(), max, dead_letter),
                    None => Queue::new(name.clone(), max),
                };
                Arc::new(queue.journaled(self.store.clone()))
            })
            .clone()
    }

    /// The queue of durable subscription `key` on `topic`, claimed for the one subscriber about
    /// to attach: created and journaled if missing; one that was on another topic is emptied
    /// and moved (as ActiveMQ does), when `principal` may read that other topic. Refused while
    /// another subscriber has it.
    fn claim_durable(
        &self,
        key: &DurableKey,
        topic: &Arc<Topic>,
        principal: &Principal,
    ) -> Result<Arc<Queue>, SubscribeError> {
        let name = key.queue_name();
        // Creating, moving and removing durable subscriptions take turns (they are rare).
        let _turn = self.durable_lock();
        let existing = self.shard(&name).queues.get(&name).cloned();
        if let Some(queue) = existing {
            let old_topic = queue.bound_topic().unwrap_or_default();
            if old_topic != topic.name && !principal.may_subscribe(&old_topic) {
                return Err(SubscribeError::DurableMoveRefused(
                    key.describe(),
                    shown(&old_topic),
                ));
            }
            if !queue.claim() {
                return Err(SubscribeError::DurableActive(key.describe()));
            }
            if old_topic == topic.name {
                return Ok(queue);
            }
            self.remove_durable_queue(&name);
        }
        let queue = self.durable_queue(&name, topic);
        queue.claim();
        if let Some(store) = &self.store {
            store.durable_created(&name, &topic.name);
        }
        Ok(queue)
    }

    fn durable_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.durable_turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn durable_queue(&self, name: &Bytes, topic: &Arc<Topic>) -> Arc<Queue> {
        let queue = Arc::new(
            Queue::new(name.clone(), self.flow.queue_max_messages)
                .journaled(self.store.clone())
                .for_durable_subscription(topic.name.clone()),
        );
        self.shard(name).queues.insert(name.clone(), queue.clone());
        topic.bind_durable(queue.clone());
        queue
    }

    /// Removes a durable subscription and the messages it held; refused while a subscriber is
    /// attached, and unless `principal` may read its topic.
    pub fn remove_durable(
        &self,
        key: &DurableKey,
        principal: &Principal,
    ) -> Result<(), DurableError> {
        let name = key.queue_name();
        let _turn = self.durable_lock();
        let queue = self
            .shard(&name)
            .queues
            .get(&name)
            .cloned()
            .ok_or_else(|| DurableError::Unknown(key.describe()))?;
        let topic = queue.bound_topic().unwrap_or_default();
        if !principal.may_subscribe(&topic) {
            return Err(DurableError::NotPermitted(key.describe(), shown(&topic)));
        }
        if !queue.claim() {
            return Err(DurableError::Active(key.describe()));
        }
        self.remove_durable_queue(&name);
        Ok(())
    }

    /// Removes the durable subscription that `subscription` (just detached) consumed.
    pub fn remove_detached_durable(&self, subscription: &Subscription) {
        if let Destination::Queue(queue) = &subscription.source {
            if queue.bound_topic().is_some() {
                let _turn = self.durable_lock();
                if queue.claim() {
                    self.remove_durable_queue(&queue.name);
                }
            }
        }
    }

    fn remove_durable_queue(&self, name: &Bytes) -> bool {
        let Some(queue) = self.shard(name).queues.remove(name) else {
            return false;
        };
        if let Some(topic) = queue.bound_topic().and_then(|t| self.existing_topic(&t)) {
            topic.unbind_durable(&queue);
        }
        queue.delete();
        if let Some(store) = &self.store {
            store.durable_removed(name);
        }
        true
    }

    /// Puts back a durable subscription read from the journal. One journaled under the naming
    /// before [`DurableKey`] is moved to its new name (journaled again, its messages with it).
    pub fn restore_durable(&self, name: &Bytes, topic: &Bytes) {
        let topic = self.topic(topic);
        if DurableKey::parse(name).is_some() {
            self.durable_queue(name, &topic);
            return;
        }
        let Some(key) = DurableKey::from_legacy(name) else {
            tracing::warn!(queue = %shown(name), "journaled durable subscription with an unreadable name dropped");
            if let Some(store) = &self.store {
                store.durable_removed(name);
            }
            return;
        };
        let renamed = key.queue_name();
        tracing::info!(from = %shown(name), to = %shown(&renamed), "durable subscription renamed");
        self.durable_queue(&renamed, &topic);
        if let Some(store) = &self.store {
            store.durable_created(&renamed, &topic.name);
            store.durable_removed(name);
        }
        self.legacy_durables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), renamed);
    }

    /// Puts back a persistent message read from the journal into its queue. A message whose
    /// queue is gone (a durable subscription removed meanwhile) is settled and dropped.
    pub fn restore_message(&self, enqueue: Enqueue) {
        let renamed = self
            .legacy_durables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&enqueue.queue)
            .cloned();
        let queue = if let Some(renamed) = &renamed {
            self.existing_queue(renamed)
        } else if enqueue.queue.starts_with(DURABLE_PREFIX) {
            self.existing_queue(&enqueue.queue)
        } else if classify(&enqueue.queue) == Ok(Kind::Queue) {
            Some(self.queue(&enqueue.queue))
        } else {
            None
        };
        let Some(queue) = queue else {
            tracing::warn!(queue = %shown(&enqueue.queue), "journaled message for an unknown queue dropped");
            if let Some(store) = &self.store {
                store.settle(enqueue.id);
            }
            return;
        };
        let message = Arc::new(Message {
            destination: enqueue.destination,
            headers: enqueue.headers,
            body: enqueue.body,
            id_prefix: Arc::from(String::from_utf8_lossy(&enqueue.id_prefix).as_ref()),
            id_seq: enqueue.id_seq,
            expires_at: (enqueue.expires_at != 0).then_some(enqueue.expires_at),
            persistent: true,
        });
        match renamed {
            // Journaled again under the new queue name, then settled under the old.
            Some(_) => {
                queue.restore_renamed(message);
                if let Some(store) = &self.store {
                    store.settle(enqueue.id);
                }
            }
            None => queue.restore(message, enqueue.id),
        }
    }

    /// `/queue/NAME` → its dead-letter queue `<prefix>NAME`, when dead-lettering is on (DLQs
    /// themselves have none).
    fn dead_letter_queue(&self, name: &Bytes) -> Option<Arc<Queue>> {
        let config = &self.dead_letter;
        let prefix = config.prefix.as_bytes();
        if !config.enabled() || !name.starts_with(QUEUE_PREFIX) || name.starts_with(prefix) {
            return None;
        }
        let mut dlq = Vec::with_capacity(prefix.len() + name.len());
        dlq.extend_from_slice(prefix);
        dlq.extend_from_slice(&name[QUEUE_PREFIX.len()..]);
        Some(self.queue(&Bytes::from(dlq)))
    }

    /// The named queue if it exists (`/reply-queue/...` names: never created by a sender).
    pub fn existing_queue(&self, name: &[u8]) -> Option<Arc<Queue>> {
        self.shard(name).queues.get(name).cloned()
    }

    /// The named topic, created if missing (on SUBSCRIBE).
    fn topic(&self, name: &Bytes) -> Arc<Topic> {
        let mut shard = self.shard(name);
        shard
            .topics
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Topic::new(name.clone(), self.flow.slow_consumer_policy)))
            .clone()
    }

    /// The named topic if anyone ever subscribed to it (publishing to an unknown topic is a
    /// no-op and creates nothing).
    pub fn existing_topic(&self, name: &[u8]) -> Option<Arc<Topic>> {
        self.shard(name).topics.get(name).cloned()
    }

    /// Number of queues and topics (for status output).
    pub fn counts(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(q, t), shard| {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            (q + shard.queues.len(), t + shard.topics.len())
        })
    }
}

#[cfg(test)]
mod tests;
