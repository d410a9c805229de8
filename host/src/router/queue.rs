//! A point-to-point queue: competing consumers served round-robin, each within its window;
//! unacked deliveries tracked per consumer and put back (marked redelivered) on NACK, on
//! UNSUBSCRIBE and when the consumer's connection ends. With a store, persistent messages are
//! journaled as they enter and settled as they leave (acked, expired, dead-lettered, dropped).
//!
//! Bounds: a queue holds at most `max_messages` messages and `max_bytes` bytes, counting the
//! ones waiting *and* the ones delivered but not yet acknowledged (a consumer with a large
//! window that never reads cannot drain it past its limits). A full queue pauses its producers
//! (`Overflow::Block`), or drops its oldest waiting message or the new one (the policies of a
//! durable subscription's queue, which must not hold a topic's live publishers hostage).
//!
//! A message that every current consumer's filter declined is *parked*: it no longer sits in
//! the way of the messages behind it, and is offered again when the consumers or their
//! filters change. A filter that *fails* on a message is not a decline: the message is retried
//! and, after `max_filter_failures` failed attempts, dead-lettered.
//!
//! Waiting messages are kept by priority (see [`Ready`]); which consumer gets which message
//! (exclusive consumers, message groups, consumer priority, round-robin) is decided in
//! `pick`, and the live message groups are kept in `groups`.
//!
//! A message that comes back (NACK, its consumer gone, expired) to a queue a redeliver plugin
//! serves leaves the delivery order into the *deciding* set until the plugin's verdict is
//! applied ([`Queue::resolve`], see [`super::redelivery`]); without such a plugin the built-in
//! `[dead_letter]` policy applies at once.
//!
//! All state sits behind one lock per queue: producers and consumers of *this* queue share it,
//! nobody else does. The lock is never held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::budget::MemoryBudget;
use crate::plugin::{RedeliverCause, MAX_NACK_HEADERS};
use crate::store::Store;

use super::message::{now_ms, Delivery, Message};
use super::outbox::Outgoing;
use super::ready::{Ready, Waiting};
use super::redelivery::{Decision, Redelivery, Resolution};
use super::subscription::{AckMode, Subscription};

mod admin;
mod groups;
mod pick;

pub use admin::Taken;

use groups::Groups;

/// What a full queue does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// The producer waits until there is room (TCP backpressure).
    Block,
    /// The oldest waiting (not delivered) message is dropped to make room: the head of the
    /// queue, the next one it would deliver (of the highest priority waiting).
    DropOldest,
    /// The new message is dropped.
    DropNew,
    /// The new message is refused ([`Published::Rejected`]): `x-overflow: reject-publish`.
    #[serde(skip)]
    Reject,
    /// The new message is refused and dead-lettered: `x-overflow: reject-publish-dlx`.
    #[serde(skip)]
    RejectDeadLetter,
}

/// A queue's size limits and what it does when they are reached.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most messages held: waiting, parked, and delivered but not yet acknowledged.
    pub max_messages: usize,
    /// Most bytes those messages take (by [`Message::size`]); `u64::MAX` for no limit. A
    /// message is taken while the queue is below it.
    pub max_bytes: u64,
    /// What a publish to a full queue does.
    pub overflow: Overflow,
}

impl QueueLimits {
    /// `max_messages` messages, no byte limit, producers wait.
    pub fn messages(max_messages: usize) -> QueueLimits {
        QueueLimits {
            max_messages,
            max_bytes: u64::MAX,
            overflow: Overflow::Block,
        }
    }
}

/// A message waiting in the queue.
#[derive(Debug)]
struct Pending {
    message: Arc<Message>,
    /// Arrival order in this queue: a message handed back (NACK, decline, a consumer leaving)
    /// returns to its place among the waiting ones, so FIFO order holds.
    order: u64,
    /// What it counts against the queue's byte limit.
    size: u64,
    /// How many times it was delivered (and handed back) so far.
    deliveries: u32,
    /// Consumers whose message filter declined it (empty, and unallocated, almost always).
    declined: Vec<u64>,
    /// How often a message filter failed on it.
    filter_failures: u32,
    /// Its journal id, 0 when it is not journaled.
    journal: u64,
}

impl Waiting for Pending {
    fn priority(&self) -> u8 {
        self.message.props.priority
    }

    fn order(&self) -> u64 {
        self.order
    }

    fn size(&self) -> u64 {
        self.size
    }
}

impl Pending {
    fn new(message: Arc<Message>, order: u64, journal: u64) -> Pending {
        Pending {
            size: message.size(),
            message,
            order,
            deliveries: 0,
            declined: Vec::new(),
            filter_failures: 0,
            journal,
        }
    }
}

/// How far past the head dispatch looks for a message some consumer will take, when the head
/// is declined by the consumers that have credit (they are not stuck: the messages they
/// declined go to the others as those make room, or get parked), or waits for its group's
/// consumer to make room.
const DECLINED_SCAN: usize = 256;

/// A delivery the consumer has not settled yet.
#[derive(Debug)]
struct Unacked {
    seq: u64,
    pending: Pending,
}

#[derive(Debug)]
struct Consumer {
    subscription: Arc<Subscription>,
    credit: u32,
    next_seq: u64,
    unacked: VecDeque<Unacked>,
    /// Consumer priority (`activemq.priority` / `x-priority`).
    priority: i32,
    /// Asked to be the queue's only active consumer.
    exclusive: bool,
}

#[derive(Debug)]
struct State {
    /// Waiting messages, by priority then arrival.
    pending: Ready<Pending>,
    /// Declined by every consumer it was offered to: out of the way until they change.
    parked: Vec<Pending>,
    /// Messages in `pending` that some consumer declined (a scan is needed only when > 0).
    declined_pending: usize,
    consumers: Vec<Consumer>,
    /// Round-robin cursor into `consumers`.
    cursor: usize,
    /// In exclusive mode, the index in `consumers` of the one consumer delivered to.
    active: Option<usize>,
    /// The consumers' priorities differ.
    ranked: bool,
    /// Live message groups and their consumers.
    groups: Groups,
    /// The next arrival number.
    next_order: u64,
    /// Messages held (waiting, parked and delivered-unacknowledged) and their bytes.
    held: usize,
    bytes: u64,
    /// Producers waiting for room.
    waiting: usize,
    /// Set when a temporary queue's owner went away: messages are dropped from then on.
    deleted: bool,
    /// Messages waiting for the redeliver hook's verdict or its delay, by their `order`
    /// (still held and journaled).
    deciding: HashMap<u64, Pending>,
}

impl State {
    fn new(max_groups: usize) -> State {
        State {
            pending: Ready::default(),
            parked: Vec::new(),
            declined_pending: 0,
            consumers: Vec::new(),
            cursor: 0,
            active: None,
            ranked: false,
            groups: Groups::new(max_groups),
            next_order: 0,
            held: 0,
            bytes: 0,
            waiting: 0,
            deleted: false,
            deciding: HashMap::new(),
        }
    }
}

/// Which deliveries an ACK or NACK names.
#[derive(Debug, Clone, Copy)]
pub enum AckTarget<'a> {
    /// By delivery number (the 1.2 `ack` header).
    Seq(u64),
    /// By `message-id` (1.0 and 1.1).
    MessageId(&'a [u8]),
}

/// The ACK or NACK named no delivery pending on this subscription.
#[derive(Debug)]
pub struct NotPending;

/// Counters a status page can show.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Messages taken in: published, or dead-lettered into it.
    pub enqueued: AtomicU64,
    /// Deliveries to consumers, redeliveries included.
    pub delivered: AtomicU64,
    /// Deliveries of a message delivered before (handed back, or recovered from the journal).
    pub redelivered: AtomicU64,
    /// Deliveries settled by an ACK, or by being written to an `auto` consumer.
    pub acked: AtomicU64,
    /// Messages discarded undelivered: the queue was deleted (a temporary queue whose owner
    /// left), or a durable subscription's filter declined them.
    pub dropped: AtomicU64,
    /// Messages found expired when their turn came (dropped, or dead-lettered with
    /// `dead_letter.expired`).
    pub expired: AtomicU64,
    /// Messages dead-lettered (too many deliveries, expired, too many filter failures),
    /// including those dropped for want of a dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Messages dropped by the overflow policy of a full queue.
    pub overflowed: AtomicU64,
    /// Message filter calls that failed on a message of this queue.
    pub filter_failures: AtomicU64,
    /// Persistent messages put back from the journal at start-up.
    pub recovered: AtomicU64,
    /// Message groups dropped from a full group table (`flow.max_groups_per_queue`) to make
    /// room for a new one.
    pub groups_evicted: AtomicU64,
    /// `dead_lettered` by reason.
    pub dead_letter_reasons: super::census::DeadLetterReasons,
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// The queue's name as clients write it (`/queue/orders`, a dead-letter queue's
    /// `/queue/DLQ.orders`), a temporary queue's global `/reply-queue/...` name, or a durable
    /// subscription's internal `durable:...` name.
    pub name: Bytes,
    state: Mutex<State>,
    /// Wakes producers paused on a full queue.
    room: Notify,
    limits: QueueLimits,
    /// Where messages go that were delivered too often or expired, if anywhere.
    dead_letter: Option<DeadLetter>,
    /// Filter failures after which a message is dead-lettered (or dropped without a DLQ).
    max_filter_failures: u32,
    /// Where persistent messages are journaled (none for temporary queues or without a store).
    store: Option<Arc<Store>>,
    /// Charged for messages this queue makes itself (dead-letter copies).
    budget: Option<Arc<MemoryBudget>>,
    /// For a durable subscription's queue, the topic it collects from. Its one consumer's
    /// filter declining a message means the subscription does not want it (dropped), as on a
    /// topic.
    durable_topic: Option<Bytes>,
    /// A durable subscription's queue is taken by one subscriber at a time: set by
    /// [`Queue::claim`] before that subscriber attaches, cleared when it leaves.
    claimed: AtomicBool,
    /// When its last consumer left (unix ms; 0 while one is attached): abandoned durable
    /// subscriptions expire.
    detached_at: AtomicU64,
    /// Counters, for status output.
    pub stats: QueueStats,
    /// Its arguments (`x-message-ttl`, and what a declaring frame must match).
    arguments: super::queue_args::QueueArguments,
    /// Where messages that came back go for the redeliver hook's verdict (its vhost's outlet).
    redelivery: Option<Arc<Redelivery>>,
    /// Cluster mode: the queue lives in NATS JetStream; publishing goes there and its
    /// subscriptions pull from there (see [`crate::cluster`]). `None` single-node.
    remote: Option<Arc<crate::cluster::RemoteQueue>>,
}

/// A queue's dead-letter policy.
#[derive(Debug)]
pub struct DeadLetter {
    /// The dead-letter queue (never itself dead-lettered).
    pub queue: Arc<Queue>,
    /// A message handed back after this many deliveries goes to the DLQ (0: never).
    pub max_deliveries: u32,
    /// Expired messages go to the DLQ instead of being dropped.
    pub expired: bool,
}

/// What became of a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// It is in the queue.
    Queued,
    /// The queue dropped it (deleted, or full under `Overflow::DropNew`).
    Dropped,
    /// The queue is full and refuses it (`Overflow::Reject`, `Overflow::RejectDeadLetter`):
    /// its producer is told.
    Rejected,
    /// Cluster mode: JetStream did not acknowledge it within `[cluster] publish_timeout_ms`
    /// (it may or may not be stored; for a persistent topic message: in the topic stream):
    /// its producer is told.
    Unavailable,
}

impl Queue {
    /// An empty queue within `limits`: no journal, no dead-letter queue and no memory budget
    /// until the builder methods below add them.
    pub fn new(name: Bytes, limits: QueueLimits) -> Queue {
        Queue {
            name,
            state: Mutex::new(State::new(crate::config::defaults::MAX_GROUPS_PER_QUEUE)),
            room: Notify::new(),
            limits,
            dead_letter: None,
            max_filter_failures: crate::config::defaults::MAX_FILTER_FAILURES,
            store: None,
            budget: None,
            durable_topic: None,
            claimed: AtomicBool::new(false),
            detached_at: AtomicU64::new(now_ms()),
            stats: QueueStats::default(),
            arguments: Default::default(),
            redelivery: None,
            remote: None,
        }
    }

    /// Makes this a cluster queue: its messages live in NATS JetStream (see
    /// [`crate::cluster`]).
    pub fn with_remote(self, remote: Arc<crate::cluster::RemoteQueue>) -> Queue {
        Queue {
            remote: Some(remote),
            ..self
        }
    }

    /// The cluster side of this queue, in cluster mode.
    pub fn remote(&self) -> Option<&Arc<crate::cluster::RemoteQueue>> {
        self.remote.as_ref()
    }

    /// Its dead-letter policy (for the cluster side, which applies it to JetStream's
    /// deliveries).
    pub(crate) fn dead_letter_policy(&self) -> Option<&DeadLetter> {
        self.dead_letter.as_ref()
    }

    /// Its vhost's redeliver-hook outlet (for the cluster side).
    pub(crate) fn redelivery_outlet(&self) -> Option<&Arc<Redelivery>> {
        self.redelivery.as_ref()
    }

    /// Gives the queue its arguments (see [`queue_args`](super::queue_args)).
    pub fn with_arguments(self, arguments: super::queue_args::QueueArguments) -> Queue {
        Queue { arguments, ..self }
    }

    /// The queue's arguments.
    pub fn arguments(&self) -> &super::queue_args::QueueArguments {
        &self.arguments
    }

    /// Journals this queue's persistent messages in `store`.
    pub fn journaled(self, store: Option<Arc<Store>>) -> Queue {
        Queue { store, ..self }
    }

    /// Charges the messages this queue makes (dead-letter copies) to `budget`.
    pub fn charged_to(self, budget: Arc<MemoryBudget>) -> Queue {
        Queue {
            budget: Some(budget),
            ..self
        }
    }

    /// Sends messages delivered too often or expired to a dead-letter queue.
    pub fn with_dead_letter(self, dead_letter: DeadLetter) -> Queue {
        Queue {
            dead_letter: Some(dead_letter),
            ..self
        }
    }

    /// Asks the redeliver hook (through its vhost's `outlet`) what becomes of messages that
    /// come back.
    pub fn with_redelivery(self, outlet: Arc<Redelivery>) -> Queue {
        Queue {
            redelivery: Some(outlet),
            ..self
        }
    }

    /// Dead-letters a message after this many failed filter calls.
    pub fn with_max_filter_failures(self, max: u32) -> Queue {
        Queue {
            max_filter_failures: max.max(1),
            ..self
        }
    }

    /// Keeps at most `max` live message groups (the least recently used one makes room).
    pub fn with_max_groups(mut self, max: usize) -> Queue {
        self.state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .groups = Groups::new(max);
        self
    }

    /// Makes this the queue of a durable subscription to `topic`.
    pub fn for_durable_subscription(self, topic: Bytes) -> Queue {
        Queue {
            durable_topic: Some(topic),
            ..self
        }
    }

    /// The topic of a durable subscription's queue.
    pub fn bound_topic(&self) -> Option<Bytes> {
        self.durable_topic.clone()
    }

    /// Journals a message entering the queue, when it is persistent and there is a store.
    fn journal(&self, message: &Message) -> u64 {
        match &self.store {
            Some(store) if message.persistent => store.enqueue(&self.name, message),
            _ => 0,
        }
    }

    /// Takes a message in (counted against the limits, journaled).
    fn enter(&self, state: &mut State, message: Arc<Message>) -> Pending {
        let order = state.next_order;
        state.next_order += 1;
        let journal = self.journal(&message);
        let pending = Pending::new(message, order, journal);
        state.held += 1;
        state.bytes += pending.size;
        self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
        pending
    }

    /// Records that a message left the queue for good.
    fn leave(&self, state: &mut State, pending: &Pending) {
        state.held -= 1;
        state.bytes -= pending.size;
        if pending.journal != 0 {
            if let Some(store) = &self.store {
                store.settle(pending.journal);
            }
        }
    }

    /// Wakes paused producers when there is room again.
    fn notify_room(&self, state: &State) {
        if state.waiting > 0 && self.has_room(state) {
            self.room.notify_waiters();
        }
    }

    fn has_room(&self, state: &State) -> bool {
        state.held < self.limits.max_messages && state.bytes < self.limits.max_bytes
    }

    /// Hands deliveries back (`cause`: NACKed with `nack` headers, or their consumer left):
    /// each to the redeliver hook when a plugin serves this queue, else as the built-in
    /// policy says ([`hand_back_builtin`](Self::hand_back_builtin)).
    fn hand_back(
        &self,
        state: &mut State,
        pendings: impl IntoIterator<Item = Pending>,
        cause: RedeliverCause,
        nack: &[(Bytes, Bytes)],
    ) {
        for pending in pendings {
            if let Some(pending) = self.ask_plugin(state, pending, cause, nack) {
                self.hand_back_builtin(state, pending);
            }
        }
    }

    /// Moves `pending` into the deciding set and asks the redeliver hook for a verdict, when a
    /// plugin serves this queue and the vhost's outlet has room; else gives it back.
    fn ask_plugin(
        &self,
        state: &mut State,
        pending: Pending,
        cause: RedeliverCause,
        nack: &[(Bytes, Bytes)],
    ) -> Option<Pending> {
        let Some(outlet) = &self.redelivery else {
            return Some(pending);
        };
        if state.deleted || !outlet.serves(&self.name) {
            return Some(pending);
        }
        let token = pending.order;
        let decision = Decision {
            queue: self.name.clone(),
            token,
            message: pending.message.clone(),
            cause,
            deliveries: pending.deliveries,
            nack_headers: nack.iter().take(MAX_NACK_HEADERS).cloned().collect(),
        };
        if !outlet.submit(decision) {
            return Some(pending);
        }
        state.deciding.insert(token, pending);
        None
    }

    /// The built-in policy for a delivery handed back: back to its arrival place, unless it
    /// was delivered as often as the dead-letter policy allows: then to the dead-letter queue.
    fn hand_back_builtin(&self, state: &mut State, pending: Pending) {
        match &self.dead_letter {
            Some(dead_letter)
                if dead_letter.max_deliveries > 0
                    && pending.deliveries >= dead_letter.max_deliveries =>
            {
                self.dead_letter(state, &pending, "max-deliveries");
            }
            _ => reinsert(state, pending),
        }
    }

    /// An expired message: to the redeliver hook when a plugin serves this queue, else
    /// dropped, or dead-lettered when the policy says so.
    fn expire(&self, state: &mut State, pending: Pending) {
        self.stats.expired.fetch_add(1, Ordering::Relaxed);
        if let Some(pending) = self.ask_plugin(state, pending, RedeliverCause::Expired, &[]) {
            self.expire_builtin(state, pending);
        }
    }

    /// The built-in policy for an expired message.
    fn expire_builtin(&self, state: &mut State, pending: Pending) {
        match &self.dead_letter {
            Some(dead_letter) if dead_letter.expired => {
                self.dead_letter(state, &pending, "expired");
            }
            _ => self.leave(state, &pending),
        }
    }

    /// Sends a copy of the message to the dead-letter queue (when there is one; else it is
    /// dropped, as a broker without a dead-letter exchange does), saying why and from where.
    fn dead_letter(&self, state: &mut State, pending: &Pending, reason: &str) {
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.stats.dead_letter_reasons.count(reason);
        let Some(dead_letter) = &self.dead_letter else {
            tracing::warn!(queue = %crate::text::shown(&self.name), reason, "message dead-lettered without a dead-letter queue: dropped");
            self.leave(state, pending);
            return;
        };
        let message = self.dead_letter_copy(
            &dead_letter.queue,
            &pending.message,
            reason,
            pending.deliveries,
        );
        // Journaled in the DLQ before it leaves this queue: a crash between the two records
        // keeps both copies, never neither.
        dead_letter.queue.push_dead(message);
        self.leave(state, pending);
    }

    /// Takes a dead-lettered message without waiting for room (a DLQ is fed under other
    /// queues' locks, which must not wait; its growth is bounded by what they held, and its
    /// messages are charged to the memory budget).
    fn push_dead(&self, message: Arc<Message>) {
        let mut state = self.lock();
        let pending = self.enter(&mut state, message);
        state.pending.push(pending);
        self.dispatch(&mut state);
    }

    /// Puts back a message read from the journal at start-up. It may have been delivered
    /// before the broker stopped, so it counts as delivered once (`redelivered:true`).
    pub fn restore(&self, message: Arc<Message>, journal: u64) {
        let mut state = self.lock();
        let order = state.next_order;
        state.next_order += 1;
        let mut pending = Pending::new(message, order, journal);
        pending.deliveries = 1;
        state.held += 1;
        state.bytes += pending.size;
        state.pending.push(pending);
        self.stats.recovered.fetch_add(1, Ordering::Relaxed);
        self.dispatch(&mut state);
    }

    /// Puts back a message read from the journal under another queue name (a durable
    /// subscription renamed at start-up): journaled again here, as delivered once.
    pub fn restore_renamed(&self, message: Arc<Message>) {
        let mut state = self.lock();
        let mut pending = self.enter(&mut state, message);
        pending.deliveries = 1;
        state.pending.push(pending);
        self.stats.recovered.fetch_add(1, Ordering::Relaxed);
        self.dispatch(&mut state);
    }

    /// Counts a message a full queue refused; under `Overflow::RejectDeadLetter` a copy goes
    /// to the dead-letter queue, when there is one.
    fn reject(&self, message: Arc<Message>) {
        self.stats.overflowed.fetch_add(1, Ordering::Relaxed);
        if self.limits.overflow != Overflow::RejectDeadLetter {
            return;
        }
        if let Some(dead_letter) = &self.dead_letter {
            self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            self.stats.dead_letter_reasons.count("maxlen");
            let copy = self.dead_letter_copy(&dead_letter.queue, &message, "maxlen", 0);
            dead_letter.queue.push_dead(copy);
        }
    }

    /// Cluster mode: a message a limit of the queue's JetStream stream refused. Under
    /// `x-overflow: reject-publish-dlx` with `[dead_letter]` on, its dead-letter copy and the
    /// dead-letter queue to publish it to (counted as dead-lettered, reason `maxlen`, as a
    /// local queue's refusal is); `None` otherwise.
    pub fn refused_dead_letter(&self, message: &Message) -> Option<(Arc<Queue>, Arc<Message>)> {
        self.stats.overflowed.fetch_add(1, Ordering::Relaxed);
        if self.limits.overflow != Overflow::RejectDeadLetter {
            return None;
        }
        let dead_letter = self.dead_letter.as_ref()?;
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.stats.dead_letter_reasons.count("maxlen");
        let copy = self.dead_letter_copy(&dead_letter.queue, message, "maxlen", 0);
        Some((dead_letter.queue.clone(), copy))
    }

    /// The copy of `original` that goes to the dead-letter queue, with the headers every
    /// dead-lettered message gets (`dlq-reason`, `dlq-original-destination`,
    /// `dlq-delivery-count`), charged to the memory budget.
    pub(crate) fn dead_letter_copy(
        &self,
        dead_letter_queue: &Queue,
        original: &Message,
        reason: &str,
        deliveries: u32,
    ) -> Arc<Message> {
        let mut headers = original.headers.clone();
        headers.push((
            Bytes::from_static(b"dlq-reason"),
            Bytes::from(reason.to_string()),
        ));
        headers.push((
            Bytes::from_static(b"dlq-original-destination"),
            original.destination.clone(),
        ));
        headers.push((
            Bytes::from_static(b"dlq-delivery-count"),
            Bytes::from(deliveries.to_string()),
        ));
        let destination = dead_letter_queue.name.clone();
        Arc::new(original.copy_as(destination, headers, None, |size| {
            self.budget
                .as_ref()
                .map(|budget| budget.charge(size))
                .unwrap_or_default()
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a message. A full queue pauses this producer until there is room (the
    /// producer's connection stops being read meanwhile: TCP backpressure), or applies its
    /// overflow policy.
    pub async fn publish(&self, message: Arc<Message>) -> Published {
        if let Some(remote) = &self.remote {
            return match remote.publish(&message).await {
                crate::cluster::queue::Stored::Yes => Published::Queued,
                crate::cluster::queue::Stored::Full => Published::Rejected,
                crate::cluster::queue::Stored::No => Published::Unavailable,
            };
        }
        let mut message = Some(message);
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // The common case, room at once, takes no wake-up registration (that locks the
            // `Notify`'s waiter list); without room, register and look again before waiting,
            // so a wake-up between the two looks is not missed.
            let mut registered = false;
            loop {
                let mut state = self.lock();
                if let Some(published) = self.try_publish(&mut state, &mut message) {
                    drop(state);
                    if published == Published::Rejected {
                        // Outside the lock: a dead-letter copy goes to another queue.
                        self.reject(message.take().expect("published once"));
                    }
                    return published;
                }
                if registered {
                    state.waiting += 1;
                    break;
                }
                drop(state);
                notified.as_mut().enable();
                registered = true;
            }
            // Counted as waiting until this producer is done waiting (or dropped).
            let _waiting = WaitingProducer(self);
            notified.await;
        }
    }

    /// One attempt of [`publish`](Self::publish) under the queue's lock: the outcome, or
    /// `None` when the producer must wait for room (the `block` policy). A message refused
    /// by `reject-publish` is left in `message` for the caller to reject once unlocked.
    fn try_publish(
        &self,
        state: &mut State,
        message: &mut Option<Arc<Message>>,
    ) -> Option<Published> {
        if state.deleted {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Some(Published::Dropped);
        }
        if !self.has_room(state) {
            match self.limits.overflow {
                Overflow::Block => return None,
                Overflow::DropNew => {
                    self.stats.overflowed.fetch_add(1, Ordering::Relaxed);
                    return Some(Published::Dropped);
                }
                Overflow::Reject | Overflow::RejectDeadLetter => return Some(Published::Rejected),
                Overflow::DropOldest => {
                    // Room is made from the waiting messages only; when every message is out
                    // with a consumer, the new one is dropped instead.
                    while !self.has_room(state) {
                        let Some(oldest) = state.pending.pop() else {
                            break;
                        };
                        if !oldest.declined.is_empty() {
                            state.declined_pending -= 1;
                        }
                        self.stats.overflowed.fetch_add(1, Ordering::Relaxed);
                        self.leave(state, &oldest);
                    }
                    if !self.has_room(state) {
                        self.stats.overflowed.fetch_add(1, Ordering::Relaxed);
                        return Some(Published::Dropped);
                    }
                }
            }
        }
        let message = message.take().expect("published once");
        let pending = self.enter(state, message);
        state.pending.push(pending);
        self.dispatch(state);
        Some(Published::Queued)
    }

    /// Hands waiting messages to consumers with credit, in the order and to the consumers
    /// `pick` chooses (priority, exclusive consumer, group, consumer priority, round-robin).
    fn dispatch(&self, state: &mut State) {
        while !state.pending.is_empty() && state.consumers.iter().any(|c| c.credit > 0) {
            let Some(choice) = pick::pick(state) else {
                break;
            };
            let index = choice.consumer;
            let pending = state
                .pending
                .remove(choice.slot)
                .expect("picked from the queue");
            if !pending.declined.is_empty() {
                state.declined_pending -= 1;
            }
            if pending.message.expires_at.is_some() && pending.message.is_expired(now_ms()) {
                self.expire(state, pending);
                continue;
            }
            let first_in_group = self.follow_group(state, &pending, choice);
            let n = state.consumers.len();
            state.cursor = (index + 1) % n;
            let consumer = &mut state.consumers[index];
            consumer.credit -= 1;
            let seq = consumer.next_seq;
            consumer.next_seq += 1;
            let delivery = Delivery {
                message: pending.message.clone(),
                subscription: consumer.subscription.clone(),
                seq,
                redeliveries: pending.deliveries,
                first_in_group,
            };
            if pending.deliveries > 0 {
                self.stats.redelivered.fetch_add(1, Ordering::Relaxed);
            }
            let pending = Pending {
                deliveries: pending.deliveries.saturating_add(1),
                ..pending
            };
            self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            consumer.unacked.push_back(Unacked { seq, pending });
            consumer
                .subscription
                .outbox
                .push(Outgoing::Delivery(delivery));
        }
        self.notify_room(state);
    }

    /// Keeps the message's group with the consumer chosen for it: pinned there when the
    /// choice claims it, ended when the message closes it. True when the consumer gets its
    /// first message of the group.
    fn follow_group(&self, state: &mut State, pending: &Pending, choice: pick::Choice) -> bool {
        let Some(group) = &pending.message.props.group else {
            return false;
        };
        if group.closes {
            state.groups.close(&group.id);
        } else if choice.claims_group {
            let consumer_id = state.consumers[choice.consumer].subscription.consumer_id;
            let charge = self
                .budget
                .as_ref()
                .map(|budget| budget.charge(groups::entry_bytes(&group.id)))
                .unwrap_or_default();
            if state.groups.assign(&group.id, consumer_id, charge) {
                self.stats.groups_evicted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(queue = %crate::text::shown(&self.name), "message group table full: least recently used group evicted");
            }
        } else {
            state.groups.touch(&group.id);
        }
        choice.claims_group
    }

    /// Adds a consumer and gives it waiting messages (parked ones too: it may take them).
    pub fn subscribe(&self, subscription: Arc<Subscription>) {
        let mut state = self.lock();
        let window = subscription.window.max(1);
        let options = subscription.options;
        state.consumers.push(Consumer {
            subscription,
            credit: window,
            next_seq: 0,
            unacked: VecDeque::new(),
            priority: options.priority,
            exclusive: options.exclusive,
        });
        state.ranked = pick::ranked(&state.consumers);
        if state.active.is_none() {
            state.active = pick::choose_active(&state.consumers);
        }
        self.detached_at.store(0, Ordering::Relaxed);
        unpark(&mut state, false);
        self.dispatch(&mut state);
    }

    /// Removes a consumer; its unsettled deliveries go back to the head of the queue, marked
    /// redelivered, and on to the remaining consumers.
    pub fn unsubscribe(&self, consumer_id: u64) {
        let mut state = self.lock();
        let Some(index) = state
            .consumers
            .iter()
            .position(|c| c.subscription.consumer_id == consumer_id)
        else {
            return;
        };
        let consumer = state.consumers.remove(index);
        state.ranked = pick::ranked(&state.consumers);
        state.active = match state.active {
            Some(active) if active == index => pick::choose_active(&state.consumers),
            Some(active) if active > index => Some(active - 1),
            other => other,
        };
        state.groups.release(consumer.subscription.consumer_id);
        if state.consumers.is_empty() {
            self.claimed.store(false, Ordering::Release);
            self.detached_at.store(now_ms(), Ordering::Relaxed);
        }
        if state.cursor > index {
            state.cursor -= 1;
        }
        if state.consumers.is_empty() {
            state.cursor = 0;
        } else {
            state.cursor %= state.consumers.len();
        }
        self.hand_back(
            &mut state,
            consumer.unacked.into_iter().map(|u| u.pending),
            RedeliverCause::ConsumerGone,
            &[],
        );
        // Messages only that consumer had not declined are now declined by everyone left.
        park_declined(&mut state);
        self.dispatch(&mut state);
    }

    /// Offers the parked messages again, the consumers' earlier verdicts forgotten (their
    /// filters changed: a plugin reload).
    pub fn filters_changed(&self) {
        let mut state = self.lock();
        if state.parked.is_empty() && state.declined_pending == 0 {
            return;
        }
        unpark(&mut state, true);
        self.dispatch(&mut state);
    }

    /// Settles auto-ack deliveries up to `seq` once the writer has put them on the socket.
    pub fn written(&self, consumer_id: u64, up_to_seq: u64) {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(consumer) = state
            .consumers
            .iter_mut()
            .find(|c| c.subscription.consumer_id == consumer_id)
        else {
            return;
        };
        let mut settled = 0;
        let mut freed_bytes = 0;
        while consumer.unacked.front().is_some_and(|u| u.seq <= up_to_seq) {
            let unacked = consumer.unacked.pop_front().expect("checked above");
            if unacked.pending.journal != 0 {
                if let Some(store) = &self.store {
                    store.settle(unacked.pending.journal);
                }
            }
            freed_bytes += unacked.pending.size;
            settled += 1;
        }
        consumer.credit += settled;
        state.held -= settled as usize;
        state.bytes -= freed_bytes;
        self.stats
            .acked
            .fetch_add(u64::from(settled), Ordering::Relaxed);
        self.dispatch(state);
    }

    /// Checks that an ACK/NACK names a delivery pending on this consumer, without settling it
    /// (used for ACK/NACK inside a transaction, settled at COMMIT).
    pub fn check_pending(&self, consumer_id: u64, target: AckTarget<'_>) -> Result<(), NotPending> {
        let mut state = self.lock();
        let consumer = find(&mut state, consumer_id).ok_or(NotPending)?;
        position(consumer, target).map(|_| ()).ok_or(NotPending)
    }

    /// ACK (`requeue == false`) or NACK (`requeue == true`) of one delivery, or of it and every
    /// earlier one in `client` mode.
    pub fn settle(
        &self,
        consumer_id: u64,
        target: AckTarget<'_>,
        requeue: bool,
    ) -> Result<(), NotPending> {
        self.settle_with(consumer_id, target, requeue, &[])
    }

    /// [`settle`](Self::settle), a NACK's headers `nack` passed on to the redeliver hook.
    pub fn settle_with(
        &self,
        consumer_id: u64,
        target: AckTarget<'_>,
        requeue: bool,
        nack: &[(Bytes, Bytes)],
    ) -> Result<(), NotPending> {
        let mut state = self.lock();
        let consumer = find(&mut state, consumer_id).ok_or(NotPending)?;
        let index = position(consumer, target).ok_or(NotPending)?;
        let settled: Vec<Pending> = if consumer.subscription.ack_mode == AckMode::Client {
            consumer
                .unacked
                .drain(..=index)
                .map(|u| u.pending)
                .collect()
        } else {
            let unacked = consumer.unacked.remove(index).expect("index is valid");
            vec![unacked.pending]
        };
        consumer.credit += settled.len() as u32;
        if requeue {
            self.hand_back(&mut state, settled, RedeliverCause::Nacked, nack);
        } else {
            self.stats
                .acked
                .fetch_add(settled.len() as u64, Ordering::Relaxed);
            for pending in &settled {
                self.leave(&mut state, pending);
            }
        }
        self.dispatch(&mut state);
        Ok(())
    }

    /// Takes delivery `seq` back from the consumer without it counting as a delivery (it
    /// never reached the client).
    fn take_back(&self, state: &mut State, consumer_id: u64, seq: u64) -> Option<Pending> {
        let consumer = find(state, consumer_id)?;
        let index = consumer.unacked.iter().position(|u| u.seq == seq)?;
        let mut pending = consumer
            .unacked
            .remove(index)
            .expect("index is valid")
            .pending;
        consumer.credit += 1;
        pending.deliveries = pending.deliveries.saturating_sub(1);
        Some(pending)
    }

    /// A consumer's message filter declined a delivery: it goes back to the queue for the
    /// other consumers (parked when every consumer declined it), and the consumer gets its
    /// credit back. On a durable subscription's queue a decline drops it, as on a topic.
    pub fn decline(&self, consumer_id: u64, seq: u64) {
        let mut state = self.lock();
        let Some(mut pending) = self.take_back(&mut state, consumer_id, seq) else {
            return;
        };
        if self.durable_topic.is_some() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.leave(&mut state, &pending);
            self.dispatch(&mut state);
            return;
        }
        pending.declined.push(consumer_id);
        if declined_by_all(&state, &pending) {
            state.parked.push(pending);
        } else {
            reinsert(&mut state, pending);
        }
        self.dispatch(&mut state);
    }

    /// A consumer's message filter failed on a delivery (a trap, a timeout, an answer the host
    /// refused): not a decline. The message goes back to its place to be tried again, and is
    /// dead-lettered after `max_filter_failures` failures.
    pub fn filter_failed(&self, consumer_id: u64, seq: u64) {
        let mut state = self.lock();
        let Some(mut pending) = self.take_back(&mut state, consumer_id, seq) else {
            return;
        };
        self.stats.filter_failures.fetch_add(1, Ordering::Relaxed);
        pending.filter_failures += 1;
        if pending.filter_failures >= self.max_filter_failures {
            self.dead_letter(&mut state, &pending, "filter-failed");
        } else {
            reinsert(&mut state, pending);
        }
        self.dispatch(&mut state);
    }

    /// Applies the redeliver hook's verdict to message `token` of the deciding set (nothing
    /// when it is no longer there: the queue was deleted meanwhile).
    pub fn resolve(&self, token: u64, resolution: Resolution) {
        if let Some(remote) = &self.remote {
            return remote.resolve(self, token, resolution);
        }
        let mut state = self.lock();
        let Some(mut pending) = state.deciding.remove(&token) else {
            return;
        };
        match resolution {
            Resolution::Redeliver | Resolution::RedeliverAfter(_) => {
                if pending.message.is_expired(now_ms()) {
                    // The plugin gave an expired message another chance: without its expiry.
                    pending.message = self.unexpired_copy(&pending.message);
                }
                reinsert(&mut state, pending);
            }
            Resolution::DeadLetter(target, reason) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                self.stats.dead_letter_reasons.count("plugin");
                let copy =
                    self.dead_letter_copy(&target, &pending.message, &reason, pending.deliveries);
                // Outside this queue's lock: a plugin with `routes_bypass_sender_rights` may
                // dead-letter two queues into each other. Journaled in the target before it
                // leaves this queue (as `dead_letter`); still counted as held meanwhile.
                drop(state);
                target.push_dead(copy);
                state = self.lock();
                self.leave(&mut state, &pending);
            }
            Resolution::Drop => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.leave(&mut state, &pending);
            }
            Resolution::Builtin(RedeliverCause::Expired) => {
                self.expire_builtin(&mut state, pending)
            }
            Resolution::Builtin(_) => self.hand_back_builtin(&mut state, pending),
        }
        self.dispatch(&mut state);
        drop(state);
        self.room.notify_waiters();
    }

    /// Messages waiting for the redeliver hook's verdict or its delay.
    pub fn deciding(&self) -> usize {
        self.lock().deciding.len()
    }

    /// A copy of `message` that never expires (charged to the memory budget).
    fn unexpired_copy(&self, message: &Message) -> Arc<Message> {
        Arc::new(Message {
            destination: message.destination.clone(),
            headers: message.headers.clone(),
            body: message.body.clone(),
            id_prefix: message.id_prefix.clone(),
            id_seq: message.id_seq,
            expires_at: None,
            persistent: message.persistent,
            props: message.props.clone(),
            charge: self
                .budget
                .as_ref()
                .map(|budget| budget.charge(message.size()))
                .unwrap_or_default(),
        })
    }

    /// Deletes the queue: waiting messages are dropped and later publishes ignored.
    pub fn delete(&self) {
        let mut state = self.lock();
        state.deleted = true;
        let mut gone: Vec<Pending> = state.pending.take_all();
        gone.append(&mut state.parked);
        gone.extend(state.deciding.drain().map(|(_, pending)| pending));
        for consumer in &mut state.consumers {
            gone.extend(
                std::mem::take(&mut consumer.unacked)
                    .into_iter()
                    .map(|u| u.pending),
            );
        }
        self.stats
            .dropped
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        for pending in &gone {
            self.leave(&mut state, pending);
        }
        state.declined_pending = 0;
        drop(state);
        self.room.notify_waiters();
    }

    /// Messages waiting (not yet delivered; parked ones included).
    pub fn depth(&self) -> usize {
        let state = self.lock();
        state.pending.len() + state.parked.len()
    }

    /// Consumers attached now.
    pub fn consumer_count(&self) -> usize {
        self.lock().consumers.len()
    }

    /// Up to `max` of the messages waiting (parked ones after the others), in delivery order,
    /// skipping expired ones: what a queue browser sees (the lock is held only to copy the
    /// `Arc`s).
    pub fn waiting_messages(&self, max: usize) -> Vec<Arc<Message>> {
        let state = self.lock();
        let now = now_ms();
        state
            .pending
            .iter()
            .map(|(_, pending)| pending)
            .chain(state.parked.iter())
            .filter(|p| !p.message.is_expired(now))
            .take(max)
            .map(|p| p.message.clone())
            .collect()
    }

    /// Messages held (waiting or delivered and not yet acknowledged) and their bytes.
    pub fn held(&self) -> (usize, u64) {
        let state = self.lock();
        (state.held, state.bytes)
    }

    /// Whether the queue is empty with no consumer and no waiting producer: nothing would be
    /// lost if it went away (the router's sweep removes such queues nobody refers to).
    pub fn is_unused(&self) -> bool {
        let state = self.lock();
        state.held == 0 && state.consumers.is_empty() && state.waiting == 0
    }

    /// When the last consumer left (unix ms), or `None` while one is attached.
    pub fn detached_since(&self) -> Option<u64> {
        Some(self.detached_at.load(Ordering::Relaxed)).filter(|&at| at != 0)
    }

    /// Takes a durable subscription's queue for one subscriber; false while another has it
    /// (the claim ends when its subscriber unsubscribes, or with [`Queue::release_claim`] when
    /// the subscriber never attached).
    pub fn claim(&self) -> bool {
        self.claimed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Ends a claim whose subscriber did not attach.
    pub fn release_claim(&self) {
        self.claimed.store(false, Ordering::Release);
    }
}

/// A producer waiting for room, counted in `State::waiting` while it lives.
struct WaitingProducer<'a>(&'a Queue);

impl Drop for WaitingProducer<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

/// Whether every current consumer declined `pending`.
fn declined_by_all(state: &State, pending: &Pending) -> bool {
    !state.consumers.is_empty()
        && state
            .consumers
            .iter()
            .all(|c| pending.declined.contains(&c.subscription.consumer_id))
}

/// Parks the waiting messages every current consumer declined.
fn park_declined(state: &mut State) {
    if state.declined_pending == 0 || state.consumers.is_empty() {
        return;
    }
    for pending in state.pending.take_all() {
        if !pending.declined.is_empty() && declined_by_all(state, &pending) {
            state.declined_pending -= 1;
            state.parked.push(pending);
        } else {
            // In delivery order: each priority's messages keep their order.
            state.pending.push(pending);
        }
    }
}

/// Puts parked messages back among the waiting ones; `forget` clears every consumer's earlier
/// verdict (the filters changed).
fn unpark(state: &mut State, forget: bool) {
    if forget {
        for pending in state.pending.iter_mut() {
            pending.declined.clear();
        }
        state.declined_pending = 0;
    }
    for mut pending in std::mem::take(&mut state.parked) {
        if forget {
            pending.declined.clear();
        }
        reinsert(state, pending);
    }
}

fn find(state: &mut State, consumer_id: u64) -> Option<&mut Consumer> {
    state
        .consumers
        .iter_mut()
        .find(|c| c.subscription.consumer_id == consumer_id)
}

fn position(consumer: &Consumer, target: AckTarget<'_>) -> Option<usize> {
    match target {
        AckTarget::Seq(seq) => consumer.unacked.iter().position(|u| u.seq == seq),
        AckTarget::MessageId(id) => consumer
            .unacked
            .iter()
            .position(|u| u.pending.message.has_id(id)),
    }
}

/// Inserts a handed-back message at its arrival place (waiting messages stay in order).
fn reinsert(state: &mut State, pending: Pending) {
    if !pending.declined.is_empty() {
        state.declined_pending += 1;
    }
    state.pending.requeue(pending);
}

#[cfg(test)]
mod tests;
