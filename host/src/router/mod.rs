//! Destinations and delivery: the [`Router`] owns every queue and topic by name and resolves a
//! STOMP `destination` to one of them.
//!
//! | prefix | kind |
//! |---|---|
//! | `/queue/NAME` | [`Queue`]: competing consumers, created on first use |
//! | `/topic/NAME` | [`Topic`]: fan-out to current subscribers, nothing retained |
//! | `/temp-queue/NAME` | a [`Queue`] private to the connection that names it (see `session`) |
//! | `/reply-queue/ID` | the global name under which a temp queue receives replies |
//! | `durable:CLIENT:NAME` | a durable topic subscription's queue (internal, not addressable) |
//!
//! Any other destination is refused with an ERROR naming these prefixes, as ActiveMQ and
//! RabbitMQ do.
//!
//! The name table is split into shards so that connections resolving different names do not
//! share a lock; sessions also cache what they resolved, so the per-message path takes no
//! shared lock at all.

pub mod message;
pub mod outbox;
pub mod queue;
pub mod subscription;
pub mod topic;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::config::{DeadLetterConfig, FlowConfig};
use crate::store::record::Enqueue;
use crate::store::Store;

pub use message::{Delivery, Message};
pub use outbox::{Outbox, Outgoing};
pub use queue::{AckTarget, DeadLetter, NotPending, Queue};
pub use subscription::{AckMode, FilterInputs, FilterSlot, Source, Subscription};
pub use topic::{Topic, TopicConsumer};

pub const QUEUE_PREFIX: &[u8] = b"/queue/";
pub const TOPIC_PREFIX: &[u8] = b"/topic/";
pub const TEMP_QUEUE_PREFIX: &[u8] = b"/temp-queue/";
pub const REPLY_QUEUE_PREFIX: &[u8] = b"/reply-queue/";
/// Names of durable subscription queues start with this (no destination does).
pub const DURABLE_PREFIX: &[u8] = b"durable:";

/// What kind of destination a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
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

/// Classifies a destination by prefix.
pub fn classify(destination: &[u8]) -> Result<Kind, RouteError> {
    let (kind, prefix) = if destination.starts_with(QUEUE_PREFIX) {
        (Kind::Queue, QUEUE_PREFIX)
    } else if destination.starts_with(TOPIC_PREFIX) {
        (Kind::Topic, TOPIC_PREFIX)
    } else if destination.starts_with(TEMP_QUEUE_PREFIX) {
        (Kind::TempQueue, TEMP_QUEUE_PREFIX)
    } else if destination.starts_with(REPLY_QUEUE_PREFIX) {
        (Kind::ReplyQueue, REPLY_QUEUE_PREFIX)
    } else {
        return Err(RouteError::UnknownPrefix(lossy(destination)));
    };
    if destination.len() == prefix.len() {
        return Err(RouteError::EmptyName(lossy(destination)));
    }
    Ok(kind)
}

fn lossy(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if bytes.len() > 200 {
        text.push('…');
    }
    text
}

/// A resolved destination.
#[derive(Debug, Clone)]
pub enum Destination {
    Queue(Arc<Queue>),
    Topic(Arc<Topic>),
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
}

/// A durable subscription that exists already on another topic, or is being consumed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurableError {
    #[error("durable subscription '{0}' already has an active subscriber")]
    Active(String),
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

    /// The named queue, created if missing (`/queue/...` names), with its dead-letter queue
    /// when dead-lettering is on.
    pub fn queue(&self, name: &Bytes) -> Arc<Queue> {
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

    /// The queue of durable subscription `name` (`durable:CLIENT:NAME`) on `topic`, claimed for
    /// the one subscriber about to attach: created and journaled if
    /// missing; one that was on another topic is emptied and moved (as ActiveMQ does).
    /// Refused while another subscriber has it.
    pub fn durable_subscription(
        &self,
        name: &Bytes,
        topic: &Arc<Topic>,
    ) -> Result<Arc<Queue>, DurableError> {
        // Creating, moving and removing durable subscriptions take turns (they are rare).
        let _turn = self.durable_lock();
        let existing = self.shard(name).queues.get(name).cloned();
        if let Some(queue) = existing {
            if queue.bound_topic().as_ref() == Some(&topic.name) {
                return match queue.claim() {
                    true => Ok(queue),
                    false => Err(DurableError::Active(lossy(name))),
                };
            }
            if !queue.claim() {
                return Err(DurableError::Active(lossy(name)));
            }
            self.remove_durable_queue(name);
        }
        let queue = self.durable_queue(name, topic);
        queue.claim();
        if let Some(store) = &self.store {
            store.durable_created(name, &topic.name);
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

    /// Removes a durable subscription and the messages it held.
    pub fn remove_durable_subscription(&self, name: &Bytes) -> bool {
        let _turn = self.durable_lock();
        self.remove_durable_queue(name)
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

    /// Puts back a durable subscription read from the journal.
    pub fn restore_durable(&self, name: &Bytes, topic: &Bytes) {
        let topic = self.topic(topic);
        self.durable_queue(name, &topic);
    }

    /// Puts back a persistent message read from the journal into its queue. A message whose
    /// queue is gone (a durable subscription removed meanwhile) is settled and dropped.
    pub fn restore_message(&self, enqueue: Enqueue) {
        let queue = if enqueue.queue.starts_with(DURABLE_PREFIX) {
            self.existing_queue(&enqueue.queue)
        } else if classify(&enqueue.queue) == Ok(Kind::Queue) {
            Some(self.queue(&enqueue.queue))
        } else {
            None
        };
        let Some(queue) = queue else {
            tracing::warn!(queue = %lossy(&enqueue.queue), "journaled message for an unknown queue dropped");
            if let Some(store) = &self.store {
                store.settle(enqueue.id);
            }
            return;
        };
        let message = Message {
            destination: enqueue.destination,
            headers: enqueue.headers,
            body: enqueue.body,
            id_prefix: Arc::from(String::from_utf8_lossy(&enqueue.id_prefix).as_ref()),
            id_seq: enqueue.id_seq,
            expires_at: (enqueue.expires_at != 0).then_some(enqueue.expires_at),
            persistent: true,
        };
        queue.restore(Arc::new(message), enqueue.id);
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

    /// Registers a connection's temp queue under its global reply name.
    pub fn register_temp_queue(&self, global_name: &Bytes, queue: Arc<Queue>) {
        self.shard(global_name)
            .queues
            .insert(global_name.clone(), queue);
    }

    /// Removes a temp queue when its owner goes away; messages still in it are dropped.
    pub fn remove_temp_queue(&self, global_name: &[u8]) {
        if let Some(queue) = self.shard(global_name).queues.remove(global_name) {
            queue.delete();
        }
    }

    /// The named topic, created if missing (on SUBSCRIBE).
    pub fn topic(&self, name: &Bytes) -> Arc<Topic> {
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
