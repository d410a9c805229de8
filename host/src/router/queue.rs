//! A point-to-point queue: competing consumers served round-robin, each within its window;
//! unacked deliveries tracked per consumer and put back (marked redelivered) on NACK, on
//! UNSUBSCRIBE and when the consumer's connection ends. A full queue pauses its producers.
//! With a store, persistent messages are journaled as they enter and settled as they leave
//! (acked, expired, dead-lettered, dropped).
//!
//! All state sits behind one lock per queue: producers and consumers of *this* queue share it,
//! nobody else does. The lock is never held across an `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::store::Store;

use super::message::{now_ms, Delivery, Message};
use super::outbox::Outgoing;
use super::subscription::{AckMode, Subscription};

/// A message waiting in the queue.
#[derive(Debug)]
struct Pending {
    message: Arc<Message>,
    /// Arrival order in this queue: a message handed back (NACK, decline, a consumer leaving)
    /// returns to its place among the waiting ones, so FIFO order holds.
    order: u64,
    /// How many times it was delivered (and handed back) so far.
    deliveries: u32,
    /// Consumers whose message filter declined it (empty, and unallocated, almost always).
    declined: Vec<u64>,
    /// Its journal id, 0 when it is not journaled.
    journal: u64,
}

impl Pending {
    fn new(message: Arc<Message>, order: u64, journal: u64) -> Pending {
        Pending {
            message,
            order,
            deliveries: 0,
            declined: Vec::new(),
            journal,
        }
    }
}

/// How far past the head dispatch looks for a message some consumer will take, when the head
/// was declined by every consumer with credit.
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
}

#[derive(Debug, Default)]
struct State {
    pending: VecDeque<Pending>,
    consumers: Vec<Consumer>,
    /// Round-robin cursor into `consumers`.
    cursor: usize,
    /// The next arrival number.
    next_order: u64,
    /// Set when a temporary queue's owner went away: messages are dropped from then on.
    deleted: bool,
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
    pub enqueued: AtomicU64,
    pub delivered: AtomicU64,
    pub redelivered: AtomicU64,
    pub acked: AtomicU64,
    pub dropped: AtomicU64,
    pub expired: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Persistent messages put back from the journal at start-up.
    pub recovered: AtomicU64,
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    pub name: Bytes,
    state: Mutex<State>,
    /// Wakes producers paused on a full queue.
    room: Notify,
    max_messages: usize,
    /// Where messages go that were delivered too often or expired, if anywhere.
    dead_letter: Option<DeadLetter>,
    /// Where persistent messages are journaled (none for temporary queues or without a store).
    store: Option<Arc<Store>>,
    /// For a durable subscription's queue, the topic it collects from. Its one consumer's
    /// filter declining a message means the subscription does not want it (dropped), as on a
    /// topic.
    durable_topic: Option<Bytes>,
    /// A durable subscription's queue is taken by one subscriber at a time: set by
    /// [`Queue::claim`] before that subscriber attaches, cleared when it leaves.
    claimed: AtomicBool,
    pub stats: QueueStats,
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

impl Queue {
    pub fn new(name: Bytes, max_messages: usize) -> Queue {
        Queue {
            name,
            state: Mutex::new(State::default()),
            room: Notify::new(),
            max_messages,
            dead_letter: None,
            store: None,
            durable_topic: None,
            claimed: AtomicBool::new(false),
            stats: QueueStats::default(),
        }
    }

    /// Journals this queue's persistent messages in `store`.
    pub fn journaled(self, store: Option<Arc<Store>>) -> Queue {
        Queue { store, ..self }
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

    /// Records that a message left the queue for good.
    fn forget(&self, pending: &Pending) {
        if pending.journal != 0 {
            if let Some(store) = &self.store {
                store.settle(pending.journal);
            }
        }
    }

    /// A queue with a dead-letter policy.
    pub fn with_dead_letter(name: Bytes, max_messages: usize, dead_letter: DeadLetter) -> Queue {
        Queue {
            dead_letter: Some(dead_letter),
            ..Queue::new(name, max_messages)
        }
    }

    /// Hands deliveries back, each at its arrival place, unless it was delivered as often as
    /// the dead-letter policy allows: then it goes to the dead-letter queue.
    fn hand_back(&self, state: &mut State, pendings: impl IntoIterator<Item = Pending>) {
        for pending in pendings {
            match &self.dead_letter {
                Some(dead_letter)
                    if dead_letter.max_deliveries > 0
                        && pending.deliveries >= dead_letter.max_deliveries =>
                {
                    self.dead_letter(dead_letter, &pending, "max-deliveries");
                }
                _ => reinsert(state, pending),
            }
        }
    }

    /// Drops an expired message, or dead-letters it when the policy says so.
    fn expire(&self, pending: Pending) {
        self.stats.expired.fetch_add(1, Ordering::Relaxed);
        match &self.dead_letter {
            Some(dead_letter) if dead_letter.expired => {
                self.dead_letter(dead_letter, &pending, "expired");
            }
            _ => self.forget(&pending),
        }
    }

    /// Sends a copy of the message to the dead-letter queue, saying why and from where.
    fn dead_letter(&self, dead_letter: &DeadLetter, pending: &Pending, reason: &str) {
        let original = &pending.message;
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
            Bytes::from(pending.deliveries.to_string()),
        ));
        let message = Arc::new(Message {
            destination: dead_letter.queue.name.clone(),
            headers,
            body: original.body.clone(),
            id_prefix: original.id_prefix.clone(),
            id_seq: original.id_seq,
            expires_at: None,
            persistent: original.persistent,
        });
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        // Journaled in the DLQ before it leaves this queue: a crash between the two records
        // keeps both copies, never neither.
        dead_letter.queue.push_dead(message);
        self.forget(pending);
    }

    /// Takes a dead-lettered message without waiting for room (a DLQ is fed under other
    /// queues' locks, which must not wait; its growth is bounded by what they held).
    fn push_dead(&self, message: Arc<Message>) {
        let mut state = self.lock();
        let order = state.next_order;
        state.next_order += 1;
        let journal = self.journal(&message);
        state
            .pending
            .push_back(Pending::new(message, order, journal));
        self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
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
        state.pending.push_back(pending);
        self.stats.recovered.fetch_add(1, Ordering::Relaxed);
        self.dispatch(&mut state);
    }

    /// Puts back a message read from the journal under another queue name (a durable
    /// subscription renamed at start-up): journaled again here, as delivered once.
    pub fn restore_renamed(&self, message: Arc<Message>) {
        let mut state = self.lock();
        let order = state.next_order;
        state.next_order += 1;
        let journal = self.journal(&message);
        let mut pending = Pending::new(message, order, journal);
        pending.deliveries = 1;
        state.pending.push_back(pending);
        self.stats.recovered.fetch_add(1, Ordering::Relaxed);
        self.dispatch(&mut state);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a message, waiting while the queue is full (the producer's connection stops
    /// being read meanwhile: TCP backpressure).
    pub async fn publish(&self, message: Arc<Message>) {
        let mut message = Some(message);
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if state.deleted {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if state.pending.len() < self.max_messages {
                    let message = message.take().expect("published once");
                    let order = state.next_order;
                    state.next_order += 1;
                    let journal = self.journal(&message);
                    state
                        .pending
                        .push_back(Pending::new(message, order, journal));
                    self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
                    self.dispatch(&mut state);
                    return;
                }
            }
            notified.await;
        }
    }

    /// Hands waiting messages to consumers with credit, round-robin, skipping consumers that
    /// declined a message.
    fn dispatch(&self, state: &mut State) {
        let before = state.pending.len();
        while !state.pending.is_empty() && state.consumers.iter().any(|c| c.credit > 0) {
            let Some((position, index)) = pick(state) else {
                break;
            };
            let pending = state
                .pending
                .remove(position)
                .expect("picked from the queue");
            if pending.message.expires_at.is_some() && pending.message.is_expired(now_ms()) {
                self.expire(pending);
                continue;
            }
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
        if state.pending.len() < before && state.pending.len() < self.max_messages {
            self.room.notify_waiters();
        }
    }

    /// Adds a consumer and gives it waiting messages.
    pub fn subscribe(&self, subscription: Arc<Subscription>) {
        let mut state = self.lock();
        let window = subscription.window.max(1);
        state.consumers.push(Consumer {
            subscription,
            credit: window,
            next_seq: 0,
            unacked: VecDeque::new(),
        });
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
        if state.consumers.is_empty() {
            self.claimed.store(false, Ordering::Release);
        }
        if state.cursor > index {
            state.cursor -= 1;
        }
        if state.consumers.is_empty() {
            state.cursor = 0;
        } else {
            state.cursor %= state.consumers.len();
        }
        self.hand_back(&mut state, consumer.unacked.into_iter().map(|u| u.pending));
        self.dispatch(&mut state);
    }

    /// Settles auto-ack deliveries up to `seq` once the writer has put them on the socket.
    pub fn written(&self, consumer_id: u64, up_to_seq: u64) {
        let mut state = self.lock();
        let Some(consumer) = find(&mut state, consumer_id) else {
            return;
        };
        let mut settled = 0;
        let mut journaled = Vec::new();
        while consumer.unacked.front().is_some_and(|u| u.seq <= up_to_seq) {
            let unacked = consumer.unacked.pop_front().expect("checked above");
            if unacked.pending.journal != 0 {
                journaled.push(unacked.pending);
            }
            settled += 1;
        }
        consumer.credit += settled;
        for pending in &journaled {
            self.forget(pending);
        }
        self.stats
            .acked
            .fetch_add(settled as u64, Ordering::Relaxed);
        self.dispatch(&mut state);
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
            self.hand_back(&mut state, settled);
        } else {
            self.stats
                .acked
                .fetch_add(settled.len() as u64, Ordering::Relaxed);
            for pending in &settled {
                self.forget(pending);
            }
        }
        self.dispatch(&mut state);
        Ok(())
    }

    /// A consumer's message filter declined a delivery: it goes back to the queue for the
    /// other consumers (and stays there while nobody takes it), and the consumer gets its credit
    /// back.
    pub fn decline(&self, consumer_id: u64, seq: u64) {
        let mut state = self.lock();
        let Some(consumer) = find(&mut state, consumer_id) else {
            return;
        };
        let Some(index) = consumer.unacked.iter().position(|u| u.seq == seq) else {
            return;
        };
        let mut pending = consumer
            .unacked
            .remove(index)
            .expect("index is valid")
            .pending;
        consumer.credit += 1;
        if self.durable_topic.is_some() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.forget(&pending);
            self.dispatch(&mut state);
            return;
        }
        pending.declined.push(consumer_id);
        // It never reached the client: not a delivery that counts toward the dead-letter limit.
        pending.deliveries = pending.deliveries.saturating_sub(1);
        reinsert(&mut state, pending);
        self.dispatch(&mut state);
    }

    /// Deletes a temporary queue: waiting messages are dropped and later publishes ignored.
    pub fn delete(&self) {
        let mut state = self.lock();
        state.deleted = true;
        let dropped = state.pending.len() as u64;
        for pending in std::mem::take(&mut state.pending) {
            self.forget(&pending);
        }
        for consumer in &mut state.consumers {
            for unacked in std::mem::take(&mut consumer.unacked) {
                self.forget(&unacked.pending);
            }
        }
        self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        drop(state);
        self.room.notify_waiters();
    }

    /// Messages waiting (not yet delivered).
    pub fn depth(&self) -> usize {
        self.lock().pending.len()
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

/// The first waiting message (from the head, within [`DECLINED_SCAN`]) and the next consumer
/// in round-robin order that has credit and has not declined it.
fn pick(state: &State) -> Option<(usize, usize)> {
    let n = state.consumers.len();
    for (position, pending) in state.pending.iter().take(DECLINED_SCAN).enumerate() {
        let found = (0..n).map(|i| (state.cursor + i) % n).find(|&i| {
            let consumer = &state.consumers[i];
            consumer.credit > 0
                && !pending
                    .declined
                    .contains(&consumer.subscription.consumer_id)
        });
        if let Some(index) = found {
            return Some((position, index));
        }
    }
    None
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
    let at = state.pending.partition_point(|p| p.order < pending.order);
    state.pending.insert(at, pending);
}
