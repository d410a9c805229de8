//! A publish-subscribe topic: every current subscriber gets a copy. Nothing is retained; a
//! subscriber that is behind slows its publishers for a while, and one that stays stuck meets
//! the slow-consumer policy.
//!
//! Durable subscriptions are queues bound to the topic: each gets every message published
//! here, whether or not its subscriber is connected (see `Router::durable_subscription`).
//!
//! The subscriber list is copy-on-write behind a per-topic lock held only to clone an `Arc`,
//! so publishers to one topic do not serialise on each other's deliveries.
//!
//! Wildcard subscriptions (`/topic/prices.*`) subscribe to a *pattern topic*, a topic whose
//! name is the pattern, kept in the router's [`WildcardIndex`]. A message published to a
//! concrete topic goes to its own subscribers, then to every pattern topic the index finds
//! for its name (only when the index is not empty: without wildcard subscriptions this is one
//! relaxed load). A wildcard subscriber whose read rights do not cover the whole pattern
//! carries them, and sees only the messages of topics it may read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::config::SlowConsumerPolicy;

use super::message::{Delivery, Message};
use super::outbox::Outgoing;
use super::queue::{AckTarget, NotPending, Published, Queue};
use super::subscription::{AckMode, Subscription};
use super::wildcard::WildcardIndex;
use super::TOPIC_PREFIX;

/// The router's pattern topics, by pattern (without `/topic/`).
pub type Patterns = WildcardIndex<Arc<Topic>>;

/// Per-subscription state of a topic consumer: delivery numbering and, in client modes, the
/// deliveries not yet acknowledged plus the copies waiting for the window to open (topic
/// messages are never redelivered; acks only open the window).
#[derive(Debug, Default)]
pub struct TopicConsumer {
    state: Mutex<TopicConsumerState>,
}

#[derive(Debug, Default)]
struct TopicConsumerState {
    next_seq: u64,
    unacked: VecDeque<(u64, Arc<Message>)>,
    /// Copies published while the client-ack window was full, bounded by the outbox limit.
    waiting: VecDeque<Arc<Message>>,
}

/// Why a copy could not be taken.
#[derive(Debug)]
pub struct Overflow;

impl TopicConsumer {
    fn lock(&self) -> MutexGuard<'_, TopicConsumerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one copy: straight to the outbox when the window allows, else into the waiting
    /// list; `Overflow` when that is full too (the slow-consumer policy applies).
    fn offer(
        &self,
        subscription: &Arc<Subscription>,
        message: &Arc<Message>,
    ) -> Result<(), Overflow> {
        let mut state = self.lock();
        let limit = subscription.outbox.limit();
        if !subscription.ack_mode.needs_ack() {
            let seq = state.next_seq;
            let delivery = delivery(subscription, message, seq);
            subscription
                .outbox
                .try_push(Outgoing::Delivery(delivery))
                .map_err(|_| Overflow)?;
            state.next_seq += 1;
            return Ok(());
        }
        if state.unacked.len() >= subscription.window as usize || !state.waiting.is_empty() {
            if state.waiting.len() >= limit {
                return Err(Overflow);
            }
            state.waiting.push_back(message.clone());
            return Ok(());
        }
        let seq = state.next_seq;
        let delivery = delivery(subscription, message, seq);
        subscription
            .outbox
            .try_push(Outgoing::Delivery(delivery))
            .map_err(|_| Overflow)?;
        state.next_seq += 1;
        state.unacked.push_back((seq, message.clone()));
        Ok(())
    }

    /// Takes an ACK or NACK off the window (`client` mode: cumulative) when `apply`, and lets
    /// waiting copies through; without `apply`, only checks that the target is pending.
    pub fn settle(
        &self,
        subscription: &Arc<Subscription>,
        target: AckTarget<'_>,
        apply: bool,
    ) -> Result<(), NotPending> {
        let mut state = self.lock();
        let index = state
            .unacked
            .iter()
            .position(|(seq, message)| match target {
                AckTarget::Seq(s) => *seq == s,
                AckTarget::MessageId(id) => message.has_id(id),
            })
            .ok_or(NotPending)?;
        if !apply {
            return Ok(());
        }
        if subscription.ack_mode == AckMode::Client {
            state.unacked.drain(..=index);
        } else {
            state.unacked.remove(index);
        }
        refill(&mut state, subscription);
        Ok(())
    }

    /// Takes exactly one delivery off the window (one the subscription's filter skipped).
    pub fn forget(&self, subscription: &Arc<Subscription>, seq: u64) {
        let mut state = self.lock();
        if let Some(index) = state.unacked.iter().position(|(s, _)| *s == seq) {
            state.unacked.remove(index);
            refill(&mut state, subscription);
        }
    }
}

/// Lets waiting copies through while the window has room.
fn refill(state: &mut TopicConsumerState, subscription: &Arc<Subscription>) {
    while state.unacked.len() < subscription.window as usize {
        let Some(message) = state.waiting.pop_front() else {
            break;
        };
        let seq = state.next_seq;
        state.next_seq += 1;
        state.unacked.push_back((seq, message.clone()));
        // Bounded by the window, like queue deliveries.
        subscription
            .outbox
            .push(Outgoing::Delivery(delivery(subscription, &message, seq)));
    }
}

fn delivery(subscription: &Arc<Subscription>, message: &Arc<Message>, seq: u64) -> Delivery {
    Delivery {
        message: message.clone(),
        subscription: subscription.clone(),
        seq,
        redeliveries: 0,
        first_in_group: false,
    }
}

/// Counters a status page can show.
#[derive(Debug, Default)]
pub struct TopicStats {
    /// Messages published to it.
    pub published: AtomicU64,
    /// Copies handed to subscribers (not counting durable subscriptions' queues).
    pub delivered: AtomicU64,
    /// Copies dropped for a subscriber that could not keep up (the `drop` policy).
    pub slow_consumer_drops: AtomicU64,
    /// Copies refused to a subscriber that could not keep up, which is then disconnected (the
    /// `disconnect` policy).
    pub slow_consumer_disconnects: AtomicU64,
}

/// A topic.
#[derive(Debug)]
pub struct Topic {
    /// The topic's destination as clients write it (`/topic/prices`).
    pub name: Bytes,
    subscribers: Mutex<Arc<Vec<Arc<Subscription>>>>,
    /// Queues of the durable subscriptions on this topic.
    durables: Mutex<Arc<Vec<Arc<Queue>>>>,
    policy: SlowConsumerPolicy,
    /// For a concrete topic: the pattern topics to publish to as well.
    patterns: Option<Arc<Patterns>>,
    /// Counters, for status output.
    pub stats: TopicStats,
    /// Cluster mode: where its messages go for the subscribers on the other edges.
    remote: Option<Arc<crate::cluster::RemoteTopic>>,
}

/// What publishing found: subscribers that must be disconnected as slow consumers.
pub type SlowConsumers = Vec<Arc<Subscription>>;

impl Topic {
    /// A topic without subscribers; a subscriber that cannot keep up meets `policy`.
    pub fn new(name: Bytes, policy: SlowConsumerPolicy) -> Topic {
        Topic {
            name,
            subscribers: Mutex::new(Arc::new(Vec::new())),
            durables: Mutex::new(Arc::new(Vec::new())),
            policy,
            patterns: None,
            stats: TopicStats::default(),
            remote: None,
        }
    }

    /// Cluster mode: its messages also go to the other edges through `remote`.
    pub fn with_remote(mut self, remote: Arc<crate::cluster::RemoteTopic>) -> Topic {
        self.remote = Some(remote);
        self
    }

    /// A concrete topic whose messages also go to the matching pattern topics in `patterns`.
    pub fn with_patterns(mut self, patterns: Arc<Patterns>) -> Topic {
        self.patterns = Some(patterns);
        self
    }

    /// The pattern topics whose pattern matches this topic's name (none without wildcard
    /// subscriptions, and then without taking any lock).
    fn matching_patterns(&self) -> Vec<Arc<Topic>> {
        let mut found = Vec::new();
        if let Some(patterns) = self.patterns.as_ref().filter(|p| !p.is_empty()) {
            let name = self.name.strip_prefix(TOPIC_PREFIX).unwrap_or(&self.name);
            patterns.matching(name, &mut found);
        }
        found
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Subscription>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Delivers a copy to every current subscriber. A subscriber whose outbound queue (or
    /// client-ack window) is full holds this publisher up (TCP backpressure on the producer)
    /// for up to `patience`; one that makes no progress in that time meets the slow-consumer
    /// policy, and is not waited for again until it drains.
    /// Then the same for every matching pattern topic (wildcard subscriptions). In cluster
    /// mode the other edges get it first (through NATS): [`Published::Unavailable`] when the
    /// cluster did not store a persistent message for the durable subscriptions in time (the
    /// local subscribers still get it), or, for another edge's temporary queue, that edge did
    /// not answer in time; [`Published::Rejected`] when that queue is full.
    pub async fn publish(&self, message: &Arc<Message>, patience: Duration) -> Published {
        let stored = match &self.remote {
            Some(remote) => remote.publish(message).await,
            None => Published::Queued,
        };
        self.publish_local(message, patience).await;
        stored
    }

    /// [`publish`](Self::publish) to this edge's subscribers only (a message from another
    /// edge).
    pub async fn publish_local(&self, message: &Arc<Message>, patience: Duration) {
        self.publish_here(message, patience).await;
        if self.patterns.as_ref().is_some_and(|p| !p.is_empty()) {
            for pattern in self.matching_patterns() {
                pattern.publish_here(message, patience).await;
            }
        }
    }

    async fn publish_here(&self, message: &Arc<Message>, patience: Duration) {
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        let mut blocked = Vec::new();
        for subscription in self.snapshot().iter() {
            if !self.deliver(subscription, message) {
                blocked.push(subscription.clone());
            }
        }
        for subscription in blocked {
            self.wait_for(&subscription, message, patience).await;
        }
        let durables = self
            .durables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // A durable subscription's queue that is full applies its overflow policy (by default
        // it drops its oldest message: an offline subscriber does not hold publishers up).
        for queue in durables.iter() {
            queue.publish(message.clone()).await;
        }
    }

    /// Binds a durable subscription's queue (it receives every message from now on).
    pub fn bind_durable(&self, queue: Arc<Queue>) {
        let mut guard = self.durables.lock().unwrap_or_else(|e| e.into_inner());
        if guard.iter().any(|q| Arc::ptr_eq(q, &queue)) {
            return;
        }
        let mut next = Vec::clone(&guard);
        next.push(queue);
        *guard = Arc::new(next);
    }

    /// Unbinds a durable subscription's queue.
    pub fn unbind_durable(&self, queue: &Arc<Queue>) {
        let mut guard = self.durables.lock().unwrap_or_else(|e| e.into_inner());
        let next: Vec<_> = guard
            .iter()
            .filter(|q| !Arc::ptr_eq(q, queue))
            .cloned()
            .collect();
        *guard = Arc::new(next);
    }

    /// Offers a copy; false when the subscriber has no room for it now.
    fn deliver(&self, subscription: &Arc<Subscription>, message: &Arc<Message>) -> bool {
        let Some(consumer) = &subscription.topic_window else {
            return true;
        };
        // A wildcard subscriber sees only the topics it may read.
        if let Some(rights) = &subscription.topic_rights {
            if !crate::plugin::glob::any_matches(rights, &message.destination) {
                return true;
            }
        }
        if consumer.offer(subscription, message).is_err() {
            if subscription.outbox.is_stalled() {
                self.slow(subscription);
                return true;
            }
            return false;
        }
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Waits (up to `patience`) for a full subscriber to make room for the copy.
    async fn wait_for(
        &self,
        subscription: &Arc<Subscription>,
        message: &Arc<Message>,
        patience: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let outbox = &subscription.outbox;
            if tokio::time::Instant::now() >= deadline {
                outbox.set_stalled();
                self.slow(subscription);
                return;
            }
            if outbox.len() >= outbox.limit() {
                let _ = tokio::time::timeout_at(deadline, outbox.wait_for_room()).await;
            } else {
                // The client-ack window is full: its ACKs open it.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if self.deliver(subscription, message) {
                return;
            }
        }
    }

    fn slow(&self, subscription: &Arc<Subscription>) {
        match self.policy {
            SlowConsumerPolicy::Drop => {
                self.stats
                    .slow_consumer_drops
                    .fetch_add(1, Ordering::Relaxed);
                subscription.outbox.count_drop();
            }
            SlowConsumerPolicy::Disconnect => {
                self.stats
                    .slow_consumer_disconnects
                    .fetch_add(1, Ordering::Relaxed);
                subscription.outbox.mark_slow();
            }
        }
    }

    /// How many durable subscriptions collect from it, those on matching patterns included
    /// (each journals every persistent message).
    pub fn durable_count(&self) -> usize {
        let own = self
            .durables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        own + self
            .matching_patterns()
            .iter()
            .map(|pattern| pattern.durable_count())
            .sum::<usize>()
    }

    /// Subscribers now (durable subscriptions' queues not included).
    pub fn subscriber_count(&self) -> usize {
        self.snapshot().len()
    }

    /// Whether nobody subscribes to it and no durable subscription collects from it.
    pub fn is_unused(&self) -> bool {
        self.snapshot().is_empty()
            && self
                .durables
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Adds a subscriber: it gets a copy of every message published from now on.
    pub fn subscribe(&self, subscription: Arc<Subscription>) {
        let mut guard = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::clone(&guard);
        next.push(subscription);
        *guard = Arc::new(next);
    }

    /// Removes a subscriber; returns how many remain.
    pub fn unsubscribe(&self, consumer_id: u64) -> usize {
        let mut guard = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        let next: Vec<_> = guard
            .iter()
            .filter(|s| s.consumer_id != consumer_id)
            .cloned()
            .collect();
        let remaining = next.len();
        *guard = Arc::new(next);
        remaining
    }
}
