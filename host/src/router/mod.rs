//! Destinations and delivery: the [`Router`] owns every queue and topic of one virtual host
//! by name (the broker has one router per vhost, see [`crate::vhost`]), resolves a
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
//! RabbitMQ do. A `/topic/` SUBSCRIBE may be a wildcard pattern (see [`wildcard`]); a SEND
//! may not, and neither may a queue's name.
//!
//! The name table is split into shards so that connections resolving different names do not
//! share a lock; connections also cache what they resolved, so the per-message path takes no
//! shared lock at all.
//!
//! Lock order (never taken the other way round): durable turns → name shard → queue (the
//! sweep); queue → its DLQ queue → store inbox; topic subscriber list (held only to clone an
//! `Arc`); topic consumer window → outbox. No lock is held across an `.await`.
//!
//! Poisoned locks, here and everywhere in the broker, are used as they are
//! (`unwrap_or_else(PoisonError::into_inner)`): no code changes shared state halfway and then
//! panics while holding a lock, and a panicking session must not take the broker down with it.

mod admin;
pub mod browse;
mod census;
mod cluster;
pub mod composite;
pub mod connection;
pub mod durable;
pub mod message;
pub mod outbox;
pub mod props;
pub mod queue;
pub mod queue_args;
pub mod ready;
pub mod redelivery;
pub mod schedule;
pub mod schedule_headers;
pub mod subscription;
pub mod topic;
pub mod wildcard;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::budget::MemoryBudget;
use crate::config::{
    Config, DeadLetterConfig, DurableConfig, FlowConfig, LimitsConfig, QueuePolicy, ScheduleConfig,
};
use crate::plugin::Principal;
use crate::policy::DeliveryFilter;
use crate::store::record::Enqueue;
use crate::store::Store;
use crate::text::shown;

pub use admin::{NotAQueue, DEAD_LETTER_HEADERS};
pub use census::{DeadLetterReasons, DEAD_LETTER_REASONS};
pub use composite::{is_composite, parts as composite_parts};
pub use connection::{table_key, Connection};
pub use durable::DurableKey;
pub use message::{Delivery, Message};
pub use outbox::{Outbox, Outgoing};
pub use props::Props;
pub use queue::{
    AckTarget, DeadLetter, NotPending, Overflow, Published, Queue, QueueLimits, Taken,
};
pub use queue_args::{QueueArgs, QueueArgsError};
pub use redelivery::{Redelivery, Resolution};
pub use schedule::Scheduler;
pub use schedule_headers::{Schedule, ScheduleError};
pub use subscription::{AckMode, ConsumerOptions, Subscription};
pub use topic::{Topic, TopicConsumer};
pub use wildcard::{check_send_name, is_wildcard, may_read_all, PatternError};

use topic::Patterns;
use wildcard::wildcard_name;

/// Destinations of shared queues (competing consumers) start with this.
pub const QUEUE_PREFIX: &[u8] = b"/queue/";
/// Destinations of topics (fan-out to current subscribers) start with this.
pub const TOPIC_PREFIX: &[u8] = b"/topic/";
/// A connection's private temporary queues start with this (the name is local to it).
pub const TEMP_QUEUE_PREFIX: &[u8] = b"/temp-queue/";
/// The global names of temporary queues (`/reply-queue/SESSION.NAME`, for `reply-to`) start
/// with this.
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
    /// The destination starts with none of the known prefixes; its name as [`shown`].
    #[error("unknown destination '{0}': destinations must start with /queue/, /topic/, /temp-queue/ or /reply-queue/")]
    UnknownPrefix(String),
    /// The destination is a bare prefix, such as `/queue/`; its name as [`shown`].
    #[error("destination '{0}' has an empty name after its prefix")]
    EmptyName(String),
    /// The connection already has as many temporary queues as it may; the limit
    /// (`limits.max_temp_queues_per_connection`).
    #[error("too many temporary queues: the limit is {0} per connection")]
    TooManyTempQueues(usize),
    /// The broker already holds as many queues and topics as it may: the new name (as
    /// [`shown`]) and the limit (`limits.max_destinations`).
    #[error("'{0}' cannot be created: the broker holds the maximum of {1} destinations")]
    TooManyDestinations(String, usize),
    /// The connection used up its allowance for creating destinations: the new name (as
    /// [`shown`]) and the rate (`limits.destinations_created_per_second`).
    #[error("'{0}' cannot be created: this connection creates new destinations too fast (at most {1} per second)")]
    CreatingTooFast(String, u32),
    /// A SEND to a wildcard pattern (as ActiveMQ, the broker refuses it); the name as
    /// [`shown`].
    #[error("cannot send to '{0}': it is a wildcard pattern ('*', '#' or '>' as a segment); send to a concrete topic")]
    WildcardSend(String),
    /// A wildcard pattern on something other than a topic; the name as [`shown`].
    #[error("'{0}' is a wildcard pattern: wildcard subscriptions are supported on /topic/ destinations only")]
    WildcardNotTopic(String),
    /// A wildcard pattern that is not well formed; the name as [`shown`].
    #[error("invalid wildcard pattern '{0}': {1}")]
    BadPattern(String, PatternError),
    /// A composite destination with an empty part (`/queue/a,,/queue/b`); it as [`shown`].
    #[error("composite destination '{0}' has an empty part")]
    EmptyPart(String),
    /// A composite destination with too many parts: it (as [`shown`]), how many, the limit
    /// (`limits.max_composite_parts`).
    #[error("composite destination '{0}' has {1} parts: at most {2} are allowed")]
    TooManyParts(String, usize, usize),
    /// The frame's queue arguments were refused.
    #[error(transparent)]
    Arguments(#[from] QueueArgsError),
}

/// Why a SUBSCRIBE was refused by the router.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    /// The destination was refused.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The connection already has a subscription with this `id` (for a 1.0 SUBSCRIBE without
    /// one, on this destination); the id or destination as [`shown`].
    #[error("duplicate subscription id '{0}' on this connection")]
    DuplicateId(String),
    /// The `/reply-queue/` destination is not one of this connection's temporary queues; its
    /// name as [`shown`].
    #[error("'{0}' is another connection's reply queue; only its owner may subscribe")]
    NotOwner(String),
    /// The durable subscription has another subscriber attached; it as
    /// [`DurableKey::describe`] names it.
    #[error("durable subscription {0} already has an active subscriber")]
    DurableActive(String),
    /// The durable subscription is on another topic, which the subscriber may not read, so it
    /// cannot move: the subscription ([`DurableKey::describe`]) and that topic (as [`shown`]).
    #[error("durable subscription {0} is on topic '{1}', which this login may not read: it cannot be moved")]
    DurableMoveRefused(String, String),
    /// The principal already owns as many durable subscriptions as it may: its name and the
    /// limit (`durable.max_per_principal`).
    #[error("'{0}' has the maximum of {1} durable subscriptions")]
    TooManyDurables(String, usize),
    /// A durable wildcard subscription whose pattern can match topics the principal may not
    /// read: the principal and the pattern (as [`shown`]).
    #[error("'{0}' may not make a durable subscription to '{1}': its read rights do not cover every topic the pattern can match")]
    DurablePatternNotCovered(String, String),
    /// Cluster mode: JetStream did not answer or refused while the durable subscription was
    /// claimed: the subscription ([`DurableKey::describe`]) and the reason.
    #[error("durable subscription {0}: the cluster is unavailable ({1})")]
    ClusterUnavailable(String, String),
}

/// Why a durable subscription could not be removed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurableError {
    /// No durable subscription has this key; the key as [`DurableKey::describe`] names it.
    #[error("no durable subscription {0}")]
    Unknown(String),
    /// The durable subscription has a subscriber attached; it as [`DurableKey::describe`]
    /// names it.
    #[error(
        "durable subscription {0} has an active subscriber: it cannot be removed while attached"
    )]
    Active(String),
    /// The durable subscription is on a topic the principal may not read: the subscription
    /// ([`DurableKey::describe`]) and the topic (as [`shown`]).
    #[error("durable subscription {0} is on topic '{1}', which this login may not read")]
    NotPermitted(String, String),
    /// Cluster mode: JetStream did not answer or refused: the subscription
    /// ([`DurableKey::describe`]) and the reason.
    #[error("durable subscription {0}: the cluster is unavailable ({1})")]
    ClusterUnavailable(String, String),
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
    /// A `/queue/`, temporary, reply or durable subscription queue.
    Queue(Arc<Queue>),
    /// A `/topic/`.
    Topic(Arc<Topic>),
}

impl Destination {
    /// The cluster side of a `/queue/` in cluster mode (its SENDs go to JetStream).
    #[inline]
    pub fn remote_queue(&self) -> Option<&Arc<crate::cluster::RemoteQueue>> {
        match self {
            Destination::Queue(queue) => queue.remote(),
            Destination::Topic(_) => None,
        }
    }
}

/// Publishes a message to a resolved destination. A full queue pauses this producer until
/// there is room (or applies its overflow policy: [`Published::Rejected`] when it refuses
/// the message); a topic subscriber that is behind holds it up for up to `patience`.
pub async fn publish(
    destination: &Destination,
    message: Arc<Message>,
    patience: Duration,
) -> Published {
    match destination {
        Destination::Queue(queue) => queue.publish(message).await,
        Destination::Topic(topic) => topic.publish(&message, patience).await,
    }
}

/// What the router needs of the configuration.
#[derive(Debug, Clone, Default)]
pub struct RouterSettings {
    /// Queue bounds and the topics' slow-consumer policy.
    pub flow: FlowConfig,
    /// Dead-lettering of `/queue/` messages: after how many deliveries or filter failures,
    /// whether expired ones too, and the dead-letter queues' prefix.
    pub dead_letter: DeadLetterConfig,
    /// Durable subscriptions: their overflow policy, how many per principal, when they expire.
    pub durable: DurableConfig,
    /// The limits on destinations and temporary queues.
    pub limits: LimitsConfig,
    /// Scheduled delivery's caps and bounds.
    pub schedule: ScheduleConfig,
    /// Queue arguments by destination pattern.
    pub queues: Vec<QueuePolicy>,
}

impl RouterSettings {
    /// The router's part of `config`.
    pub fn from_config(config: &Config) -> RouterSettings {
        RouterSettings {
            flow: config.flow.clone(),
            dead_letter: config.dead_letter.clone(),
            durable: config.durable.clone(),
            limits: config.limits.clone(),
            schedule: config.schedule.clone(),
            queues: config.queues.clone(),
        }
    }
}

/// What a SUBSCRIBE asks for, as the session read it from the frame.
pub struct SubscribeRequest<'a> {
    /// The SUBSCRIBE `id`; `None` only for a 1.0 SUBSCRIBE without one (keyed by destination).
    pub wire_id: Option<Bytes>,
    /// The SUBSCRIBE `destination`, as the client wrote it.
    pub destination: Bytes,
    /// The SUBSCRIBE `ack` mode.
    pub ack_mode: AckMode,
    /// Unacked-message window.
    pub window: u32,
    /// Consumer priority and exclusivity (for a queue).
    pub options: ConsumerOptions,
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
    options: ConsumerOptions,
    outbox: Arc<Outbox>,
    filter: DeliveryFilter,
    source: Destination,
    claim: Claim,
    topic_rights: Option<Box<[String]>>,
}

impl PreparedSubscription {
    /// The cluster side of its queue, in cluster mode (a browse reads it from JetStream).
    pub fn remote_queue(&self) -> Option<&Arc<crate::cluster::RemoteQueue>> {
        self.source.remote_queue()
    }
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

/// Shards of the name table: enough that connections resolving different names rarely share
/// a lock on a machine of a few cores (and they resolve a name once, then use their cache),
/// few enough that a walk over all of them (status, the sweep) stays cheap.
const SHARDS: usize = 16;

#[derive(Debug, Default)]
struct Shard {
    queues: HashMap<Bytes, Arc<Queue>>,
    topics: HashMap<Bytes, Arc<Topic>>,
}

/// What the routers of every virtual host share (one router holds one vhost's destinations):
/// the count behind the broker-wide `limits.max_destinations`, and the consumer id sequence.
#[derive(Debug)]
pub struct RouterShared {
    /// Queues and topics in the name tables of every router sharing this.
    destinations: AtomicUsize,
    /// Consumer ids: unique for the broker's life, so no ACK of one connection can ever name
    /// another's deliveries.
    next_consumer: AtomicU64,
}

impl Default for RouterShared {
    fn default() -> RouterShared {
        RouterShared {
            destinations: AtomicUsize::new(0),
            next_consumer: AtomicU64::new(1),
        }
    }
}

/// The destinations of one virtual host (the broker has one router per vhost; with no
/// `[[vhosts]]` configured, one for `/`).
#[derive(Debug)]
pub struct Router {
    shards: Vec<Mutex<Shard>>,
    settings: RouterSettings,
    store: Option<Arc<Store>>,
    budget: Arc<MemoryBudget>,
    /// The destination count and consumer ids shared with the other vhosts' routers.
    shared: Arc<RouterShared>,
    /// Serialises creating, moving and removing durable subscriptions; counts them per owner.
    durable_turns: Mutex<HashMap<String, usize>>,
    /// Sweep counters, for status output.
    pub stats: RouterStats,
    /// Durable subscriptions of the journal before the current naming, read back under
    /// their new name: journal name → new name (used while the journal is read back).
    legacy_durables: Mutex<HashMap<Bytes, Bytes>>,
    /// The pattern topics of wildcard subscriptions, by pattern (they are in the name table
    /// too, under their full name).
    patterns: Arc<Patterns>,
    /// Messages waiting for their delivery time.
    scheduler: Arc<Scheduler>,
    /// Where this vhost's queues send messages that came back for the redeliver hook.
    redelivery: Arc<Redelivery>,
    /// Cluster mode: where this vhost's `/queue/` and `/topic/` traffic goes (see
    /// [`crate::cluster`] and [`Router::join_cluster`]); `None` single-node.
    cluster: Option<Arc<crate::cluster::VhostLink>>,
}

/// Counters of the name table.
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Empty queues and topics nobody used, removed by the sweep.
    pub swept: AtomicU64,
    /// Durable subscriptions removed for being unused too long.
    pub durables_expired: AtomicU64,
}

/// How often the sweep looks for unused destinations and abandoned durable subscriptions:
/// often enough that a flood of names is gone within seconds, rarely enough that walking a
/// table of 100,000 names costs nothing noticeable.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl Router {
    /// A router with default settings, no store and no memory limit (tests).
    pub fn new(settings: RouterSettings) -> Router {
        Router::with_store(settings, None, MemoryBudget::unlimited())
    }

    /// A router whose queues journal persistent messages in `store` and charge the messages
    /// they make to `budget`.
    pub fn with_store(
        settings: RouterSettings,
        store: Option<Arc<Store>>,
        budget: Arc<MemoryBudget>,
    ) -> Router {
        Router::sharing(settings, store, budget, Arc::default())
    }

    /// A router of one virtual host among several: `store` is the handle that journals under
    /// that vhost ([`Store::in_vhost`]), and `shared` (the destination count and consumer ids)
    /// is the other vhosts' routers' too, so broker-wide limits stay broker-wide.
    pub fn sharing(
        settings: RouterSettings,
        store: Option<Arc<Store>>,
        budget: Arc<MemoryBudget>,
        shared: Arc<RouterShared>,
    ) -> Router {
        Router {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            scheduler: Arc::new(Scheduler::new(
                settings.schedule.clone(),
                store.clone(),
                budget.clone(),
            )),
            settings,
            store,
            budget,
            shared,
            durable_turns: Mutex::default(),
            stats: RouterStats::default(),
            legacy_durables: Mutex::default(),
            patterns: Arc::default(),
            redelivery: Arc::default(),
            cluster: None,
        }
    }

    /// The store persistent messages are journaled in; `None` when persistence is off.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// The scheduler of delayed and repeated deliveries.
    pub fn redelivery(&self) -> &Arc<Redelivery> {
        &self.redelivery
    }

    /// The queue a redeliver plugin dead-letters to: `name` (a `/queue/` name), created if
    /// missing.
    pub fn dead_letter_target(&self, name: &Bytes) -> Arc<Queue> {
        self.queue(name)
    }

    /// The name of the dead-letter queue of queue `name` by the `dead_letter.prefix`
    /// convention, whether or not built-in dead-lettering is on (`None` when `name` is not a
    /// `/queue/` or is a dead-letter queue itself).
    pub fn dead_letter_name(&self, name: &[u8]) -> Option<Bytes> {
        let prefix = self.settings.dead_letter.prefix.as_bytes();
        if !name.starts_with(QUEUE_PREFIX) || name.starts_with(prefix) {
            return None;
        }
        let mut dlq = Vec::with_capacity(prefix.len() + name.len());
        dlq.extend_from_slice(prefix);
        dlq.extend_from_slice(&name[QUEUE_PREFIX.len()..]);
        Some(Bytes::from(dlq))
    }

    /// The scheduler of delayed and repeated deliveries.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// The memory budget messages are charged to.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// The flow-control settings (windows, queue bounds, slow-consumer policy).
    pub fn flow(&self) -> &FlowConfig {
        &self.settings.flow
    }

    fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_messages: self.settings.flow.queue_max_messages,
            max_bytes: self.settings.flow.queue_max_bytes,
            overflow: Overflow::Block,
        }
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
            _ if wildcard_name(name).is_some() => {
                return Err(RouteError::WildcardSend(shown(name)))
            }
            Kind::Queue => Destination::Queue(self.queue_for(conn, name)?),
            Kind::Topic => match self.existing_topic(name) {
                Some(topic) => Destination::Topic(topic),
                // Nobody subscribes to it by name: a wildcard subscriber may still want it
                // (a stand-in topic, not cached: the patterns are matched at each publish),
                // and in cluster mode the other edges' subscribers.
                None if self.cluster.is_some() => {
                    return Ok(Some(Destination::Topic(self.cluster_stand_in(name))))
                }
                None => return Ok(self.unnamed_topic(name).map(Destination::Topic)),
            },
            Kind::TempQueue => return Ok(Some(Destination::Queue(self.temp_queue(conn, name)?.1))),
            Kind::ReplyQueue => match self.existing_queue(name) {
                Some(queue) => Destination::Queue(queue),
                // Cluster mode: another edge's temporary queue, reached through NATS.
                None => match self.cluster_reply(name) {
                    Some(topic) => Destination::Topic(topic),
                    None => return Ok(None),
                },
            },
        };
        conn.remember(name, &found);
        Ok(Some(found))
    }

    /// The global reply name of `conn`'s temp queue `/temp-queue/NAME` (made on first use),
    /// for a `reply-to` header: whoever receives the message can answer to it.
    pub fn reply_name(
        &self,
        conn: &mut Connection,
        local: &Bytes,
    ) -> Result<Option<Bytes>, RouteError> {
        if !(local.starts_with(TEMP_QUEUE_PREFIX) && local.len() > TEMP_QUEUE_PREFIX.len()) {
            return Ok(None);
        }
        Ok(Some(self.temp_queue(conn, local)?.0))
    }

    /// `conn`'s temp queue for `/temp-queue/NAME`, created (and registered under its global
    /// reply name) on first use, up to the per-connection limit.
    fn temp_queue(
        &self,
        conn: &mut Connection,
        local: &Bytes,
    ) -> Result<(Bytes, Arc<Queue>), RouteError> {
        if let Some(found) = conn.temp_queue(local) {
            return Ok(found.clone());
        }
        let max = self.settings.limits.max_temp_queues_per_connection;
        if conn.temp_queues.len() >= max {
            return Err(RouteError::TooManyTempQueues(max));
        }
        let mut global = BytesMut::new();
        global.extend_from_slice(REPLY_QUEUE_PREFIX);
        if let Some(link) = &self.cluster {
            // Which edge holds it, for the replies sent on the others.
            global.extend_from_slice(link.edge_id().as_bytes());
            global.extend_from_slice(b".");
        }
        global.extend_from_slice(conn.id.as_bytes());
        global.extend_from_slice(b".");
        global.extend_from_slice(&local[TEMP_QUEUE_PREFIX.len()..]);
        let global = global.freeze();
        let queue = Arc::new(
            Queue::new(global.clone(), self.queue_limits()).charged_to(self.budget.clone()),
        );
        self.shard(&global)
            .queues
            .insert(global.clone(), queue.clone());
        conn.temp_queues
            .insert(local.clone(), (global.clone(), queue.clone()));
        Ok((global, queue))
    }

    /// Resolves a SUBSCRIBE for `conn`: finds or makes its queue or topic, claims (and
    /// journals) a durable subscription. Nothing is delivered before [`attach`](Self::attach).
    pub fn prepare_subscription(
        &self,
        conn: &mut Connection,
        request: SubscribeRequest<'_>,
    ) -> Result<PreparedSubscription, SubscribeError> {
        self.prepare_with(conn, request, None)
    }

    /// [`prepare_subscription`](Self::prepare_subscription) of a durable subscription claimed
    /// in the cluster ([`Router::claim_cluster_durable`]): `queue` is its side.
    pub fn prepare_cluster_durable(
        &self,
        conn: &mut Connection,
        request: SubscribeRequest<'_>,
        queue: Arc<Queue>,
    ) -> Result<PreparedSubscription, SubscribeError> {
        self.prepare_with(conn, request, Some(queue))
    }

    fn prepare_with(
        &self,
        conn: &mut Connection,
        request: SubscribeRequest<'_>,
        claimed: Option<Arc<Queue>>,
    ) -> Result<PreparedSubscription, SubscribeError> {
        let table_key = table_key(request.wire_id.as_ref(), &request.destination);
        if conn.by_wire_id.contains_key(&table_key) {
            let name = request.wire_id.as_ref().unwrap_or(&request.destination);
            return Err(SubscribeError::DuplicateId(shown(name)));
        }
        let name = &request.destination;
        let mut claim = Claim(None);
        let topic_rights = self.pattern_rights(&request)?;
        let source = match (classify(name)?, claimed) {
            (Kind::Topic, Some(claimed)) => Destination::Queue(claimed),
            (Kind::Queue, _) => Destination::Queue(self.queue_for(conn, name)?),
            (Kind::TempQueue, _) => Destination::Queue(self.temp_queue(conn, name)?.1),
            (Kind::ReplyQueue, _) => Destination::Queue(
                conn.owns_reply_queue(name)
                    .ok_or_else(|| SubscribeError::NotOwner(shown(name)))?,
            ),
            (Kind::Topic, None) => {
                let topic = self.topic_for(conn, name)?;
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
            options: request.options,
            outbox: request.outbox,
            filter: request.filter,
            source,
            claim,
            topic_rights,
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
            options,
            outbox,
            filter,
            source,
            mut claim,
            topic_rights,
        } = prepared;
        // The claim passes to the attached subscriber (released when it unsubscribes).
        claim.0 = None;
        let key = conn.free_key();
        let topic_window = matches!(source, Destination::Topic(_)).then(TopicConsumer::default);
        let remote = match &source {
            Destination::Queue(queue) => queue
                .remote()
                .map(|remote| remote.consumer(queue.clone(), ack_mode, window, options)),
            Destination::Topic(_) => None,
        };
        let subscription = Arc::new(Subscription {
            key,
            consumer_id: self.shared.next_consumer.fetch_add(1, Ordering::Relaxed),
            wire_id,
            destination,
            ack_mode,
            window,
            options,
            outbox,
            filter,
            source,
            topic_window,
            topic_rights,
            remote,
        });
        conn.by_wire_id.insert(
            table_key(subscription.wire_id.as_ref(), &subscription.destination),
            key,
        );
        conn.subscriptions.insert(key, subscription.clone());
        match (&subscription.source, &subscription.remote) {
            (_, Some(remote)) => {
                remote.start(Arc::downgrade(&subscription), self.budget.clone());
            }
            (Destination::Queue(queue), None) => queue.subscribe(subscription.clone()),
            (Destination::Topic(topic), None) => topic.subscribe(subscription.clone()),
        }
        subscription
    }

    /// A queue for `conn` to send to or subscribe to: an existing one, or a new one within the
    /// broker's and the connection's limits on creating destinations.
    fn queue_for(&self, conn: &mut Connection, name: &Bytes) -> Result<Arc<Queue>, RouteError> {
        self.found_or_created(conn, name, self.existing_queue(name), || self.queue(name))
    }

    /// A topic for `conn` to subscribe to, as [`Router::queue_for`].
    fn topic_for(&self, conn: &mut Connection, name: &Bytes) -> Result<Arc<Topic>, RouteError> {
        self.found_or_created(conn, name, self.existing_topic(name), || self.topic(name))
    }

    /// `existing`, or what `create` makes when `conn` may create `name` now.
    fn found_or_created<T>(
        &self,
        conn: &mut Connection,
        name: &Bytes,
        existing: Option<Arc<T>>,
        create: impl FnOnce() -> Arc<T>,
    ) -> Result<Arc<T>, RouteError> {
        if let Some(found) = existing {
            return Ok(found);
        }
        self.may_create(conn, name)?;
        Ok(create())
    }

    /// Whether `conn` may create destination `name` now.
    fn may_create(&self, conn: &mut Connection, name: &[u8]) -> Result<(), RouteError> {
        let limits = &self.settings.limits;
        if self.shared.destinations.load(Ordering::Relaxed) >= limits.max_destinations {
            return Err(RouteError::TooManyDestinations(
                shown(name),
                limits.max_destinations,
            ));
        }
        if !conn.take_creation(limits.destinations_created_per_second) {
            return Err(RouteError::CreatingTooFast(
                shown(name),
                limits.destinations_created_per_second,
            ));
        }
        Ok(())
    }

    /// Ends `conn`'s subscription `key` (detaches it; a durable subscription keeps collecting
    /// messages), every part of it for a composite one. Its unacked queue messages go back to
    /// the queue for the other consumers.
    pub fn unsubscribe(&self, conn: &mut Connection, key: u32) -> Option<Arc<Subscription>> {
        if let Some((name, parts)) = conn.composites.remove(&key) {
            conn.by_wire_id.remove(&name);
            for part in parts.into_iter().filter(|&part| part != key) {
                self.unsubscribe_one(conn, part);
            }
        }
        self.unsubscribe_one(conn, key)
    }

    fn unsubscribe_one(&self, conn: &mut Connection, key: u32) -> Option<Arc<Subscription>> {
        let subscription = conn.subscriptions.remove(&key)?;
        conn.by_wire_id.remove(&table_key(
            subscription.wire_id.as_ref(),
            &subscription.destination,
        ));
        if let Some(remote) = &subscription.remote {
            remote.stop();
        }
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
        self.queue_with(name, None)
    }

    /// [`Router::queue`], a new queue made with the arguments `declared` (see [`queue_args`]).
    fn queue_with(&self, name: &Bytes, declared: Option<&QueueArgs>) -> Arc<Queue> {
        if let Some(queue) = self.shard(name).queues.get(name) {
            return queue.clone();
        }
        // The DLQ is made first, outside this name's shard lock (it may share the shard).
        let dead_letter = self.dead_letter_queue(name).map(|queue| DeadLetter {
            queue,
            max_deliveries: self.settings.dead_letter.max_deliveries,
            expired: self.settings.dead_letter.expired,
        });
        self.shard(name)
            .queues
            .entry(name.clone())
            .or_insert_with(|| {
                self.shared.destinations.fetch_add(1, Ordering::Relaxed);
                let (limits, arguments) = self.queue_settings(name, declared);
                let mut queue = Queue::new(name.clone(), limits)
                    .with_arguments(arguments)
                    .in_cluster(self.cluster.as_ref(), name)
                    .journaled(self.store.clone())
                    .charged_to(self.budget.clone())
                    .with_max_filter_failures(self.settings.dead_letter.max_filter_failures)
                    .with_max_groups(self.settings.flow.max_groups_per_queue)
                    .with_redelivery(self.redelivery.clone());
                if let Some(dead_letter) = dead_letter {
                    queue = queue.with_dead_letter(dead_letter);
                }
                Arc::new(queue)
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
        let mut owners = self.durable_lock();
        let existing = self.shard(&name).queues.get(&name).cloned();
        if let Some(queue) = existing {
            let old_topic = queue.bound_topic().unwrap_or_default();
            if old_topic != topic.name && !may_read_all(principal, &old_topic) {
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
            self.remove_durable_queue(&mut owners, &name);
        }
        let max = self.settings.durable.max_per_principal;
        if owners.get(&key.owner).copied().unwrap_or(0) >= max {
            return Err(SubscribeError::TooManyDurables(key.owner.clone(), max));
        }
        let queue = self.durable_queue(&mut owners, &name, topic);
        queue.claim();
        if let Some(store) = &self.store {
            store.durable_created(&name, &topic.name);
        }
        Ok(queue)
    }

    fn durable_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.durable_turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn durable_queue(
        &self,
        owners: &mut HashMap<String, usize>,
        name: &Bytes,
        topic: &Arc<Topic>,
    ) -> Arc<Queue> {
        let limits = QueueLimits {
            overflow: self.settings.durable.overflow,
            ..self.queue_limits()
        };
        let queue = Arc::new(
            Queue::new(name.clone(), limits)
                .journaled(self.store.clone())
                .charged_to(self.budget.clone())
                .for_durable_subscription(topic.name.clone()),
        );
        self.shard(name).queues.insert(name.clone(), queue.clone());
        topic.bind_durable(queue.clone());
        if let Some(key) = DurableKey::parse(name) {
            *owners.entry(key.owner).or_insert(0) += 1;
        }
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
        let mut owners = self.durable_lock();
        let queue = self
            .shard(&name)
            .queues
            .get(&name)
            .cloned()
            .ok_or_else(|| DurableError::Unknown(key.describe()))?;
        let topic = queue.bound_topic().unwrap_or_default();
        if !may_read_all(principal, &topic) {
            return Err(DurableError::NotPermitted(key.describe(), shown(&topic)));
        }
        if !queue.claim() {
            return Err(DurableError::Active(key.describe()));
        }
        self.remove_durable_queue(&mut owners, &name);
        Ok(())
    }

    /// Removes the durable subscription that `subscription` (just detached) consumed.
    pub fn remove_detached_durable(&self, subscription: &Subscription) {
        if let Destination::Queue(queue) = &subscription.source {
            if queue.bound_topic().is_some() {
                let mut owners = self.durable_lock();
                if queue.claim() {
                    self.remove_durable_queue(&mut owners, &queue.name);
                }
            }
        }
    }

    fn remove_durable_queue(&self, owners: &mut HashMap<String, usize>, name: &Bytes) -> bool {
        let Some(queue) = self.shard(name).queues.remove(name) else {
            return false;
        };
        if let Some(key) = DurableKey::parse(name) {
            if let Some(count) = owners.get_mut(&key.owner) {
                *count -= 1;
                if *count == 0 {
                    owners.remove(&key.owner);
                }
            }
        }
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
        let mut owners = self.durable_lock();
        if DurableKey::parse(name).is_some() {
            self.durable_queue(&mut owners, name, &topic);
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
        self.durable_queue(&mut owners, &renamed, &topic);
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
    pub fn restore_message(&self, mut enqueue: Enqueue) {
        if let Some(fields) = enqueue.schedule.take() {
            return self.restore_scheduled(enqueue, fields);
        }
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
        } else if classify(&enqueue.queue) == Ok(Kind::Queue) && self.cluster.is_some() {
            // Journaled before this edge joined a cluster: its queues now live in JetStream.
            // Kept in the journal (not settled), not moved: see docs/cluster.md.
            tracing::warn!(queue = %shown(&enqueue.queue), "journaled message of a queue that now lives in the cluster: kept in the journal, not delivered");
            return;
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
        let id = enqueue.id;
        let message = self.journaled_message(enqueue);
        match renamed {
            // Journaled again under the new queue name, then settled under the old.
            Some(_) => {
                queue.restore_renamed(message);
                if let Some(store) = &self.store {
                    store.settle(id);
                }
            }
            None => queue.restore(message, id),
        }
    }

    /// The message a journal record holds, charged to the memory budget whatever its state
    /// (producers wait until consumers catch up). The priority and group are read again from
    /// the journaled headers: journals written before priorities existed load unchanged.
    fn journaled_message(&self, enqueue: Enqueue) -> Arc<Message> {
        let size = Message::size_of(&enqueue.destination, &enqueue.headers, &enqueue.body);
        let props = Props::recovered(&enqueue.headers);
        Arc::new(Message {
            destination: enqueue.destination,
            headers: enqueue.headers,
            body: enqueue.body,
            id_prefix: Arc::from(String::from_utf8_lossy(&enqueue.id_prefix).as_ref()),
            id_seq: enqueue.id_seq,
            expires_at: (enqueue.expires_at != 0).then_some(enqueue.expires_at),
            persistent: true,
            props,
            charge: self.budget.charge(size),
        })
    }

    /// `/queue/NAME` → its dead-letter queue `<prefix>NAME`, when dead-lettering is on (DLQs
    /// themselves have none).
    fn dead_letter_queue(&self, name: &Bytes) -> Option<Arc<Queue>> {
        if !self.settings.dead_letter.enabled() {
            return None;
        }
        let dlq = self.dead_letter_name(name)?;
        Some(self.queue(&dlq))
    }

    /// The named queue if it exists (`/reply-queue/...` names: never created by a sender).
    pub fn existing_queue(&self, name: &[u8]) -> Option<Arc<Queue>> {
        self.shard(name).queues.get(name).cloned()
    }

    /// The named topic, created if missing (on SUBSCRIBE). A wildcard pattern's topic is
    /// registered in the pattern index too (under the name table's shard lock, so the sweep
    /// sees both or neither).
    fn topic(&self, name: &Bytes) -> Arc<Topic> {
        let mut shard = self.shard(name);
        shard
            .topics
            .entry(name.clone())
            .or_insert_with(|| {
                self.shared.destinations.fetch_add(1, Ordering::Relaxed);
                let topic = Topic::new(name.clone(), self.settings.flow.slow_consumer_policy);
                match wildcard_name(name) {
                    Some(pattern) => {
                        let topic = Arc::new(topic);
                        self.patterns.insert(pattern, topic.clone());
                        topic
                    }
                    None => Arc::new(
                        topic
                            .with_patterns(self.patterns.clone())
                            .in_cluster(self.cluster.as_ref(), name),
                    ),
                }
            })
            .clone()
    }

    /// The named topic if anyone ever subscribed to it (publishing to an unknown topic is a
    /// no-op and creates nothing).
    pub fn existing_topic(&self, name: &[u8]) -> Option<Arc<Topic>> {
        self.shard(name).topics.get(name).cloned()
    }

    /// Removes the queues and topics nobody uses (empty, no consumer, no subscriber, no
    /// durable subscription, not held by any connection or subscription: the name table holds
    /// the only reference, so nobody can be about to use it), and the durable subscriptions
    /// without a subscriber for longer than `durable.expire_after_ms`.
    pub fn sweep(&self) {
        let mut swept = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.queues.retain(|name, queue| {
                let unused = Arc::strong_count(queue) == 1
                    && !name.starts_with(DURABLE_PREFIX)
                    && queue.is_unused();
                swept += usize::from(unused);
                !unused
            });
            shard.topics.retain(|name, topic| {
                // A pattern topic is also held by the pattern index.
                let pattern = wildcard_name(name);
                let owners = if pattern.is_some() { 2 } else { 1 };
                let unused = Arc::strong_count(topic) == owners && topic.is_unused();
                if let (true, Some(pattern)) = (unused, pattern) {
                    self.patterns.remove(pattern, |t| Arc::ptr_eq(t, topic));
                }
                swept += usize::from(unused);
                !unused
            });
        }
        if swept > 0 {
            self.shared.destinations.fetch_sub(swept, Ordering::Relaxed);
            self.stats.swept.fetch_add(swept as u64, Ordering::Relaxed);
        }
        let expire_after = self.settings.durable.expire_after_ms;
        if expire_after == 0 {
            return;
        }
        let now = message::now_ms();
        let abandoned: Vec<Bytes> = self
            .shards
            .iter()
            .flat_map(|shard| {
                let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
                shard
                    .queues
                    .iter()
                    .filter(|(name, queue)| {
                        name.starts_with(DURABLE_PREFIX)
                            && queue
                                .detached_since()
                                .is_some_and(|at| now.saturating_sub(at) >= expire_after)
                    })
                    .map(|(name, _)| name.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        for name in abandoned {
            let mut owners = self.durable_lock();
            let Some(queue) = self.existing_queue(&name) else {
                continue;
            };
            // Not if a subscriber is (about to be) attached.
            if queue.claim() {
                tracing::info!(queue = %shown(&name), "durable subscription expired: unused too long");
                self.remove_durable_queue(&mut owners, &name);
                self.stats.durables_expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs [`Router::sweep`] every [`SWEEP_EVERY`] until shutdown.
    pub async fn sweep_periodically(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => self.sweep(),
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The plugin set changed: messages every consumer's filter declined are offered again.
    pub fn filters_changed(&self) {
        for shard in &self.shards {
            let queues: Vec<Arc<Queue>> = shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .queues
                .values()
                .cloned()
                .collect();
            for queue in queues {
                queue.filters_changed();
            }
        }
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
mod cluster_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod wildcard_tests;
