//! A subscription as the router, the session and the connection's writer see it: who it belongs
//! to, how it acknowledges, where its deliveries go, and the operations on its deliveries
//! (settle, check, decline, written), which act on its queue or topic without the caller having
//! to know which it is.
//!
//! Made by [`Router::attach`](super::Router::attach); its fields are the router's.

use std::sync::Arc;

use bytes::Bytes;

use crate::policy::DeliveryFilter;

use super::outbox::Outbox;
use super::queue::{AckTarget, NotPending};
use super::topic::TopicConsumer;
use super::Destination;

/// The SUBSCRIBE `ack` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// The message counts as consumed once written to the socket.
    Auto,
    /// Cumulative: an ACK or NACK covers the named message and every earlier one.
    Client,
    /// Each ACK or NACK covers one message.
    ClientIndividual,
}

impl AckMode {
    /// Parses a SUBSCRIBE `ack` value (`auto`, `client`, `client-individual`); anything else is
    /// `None`.
    pub fn parse(value: &[u8]) -> Option<AckMode> {
        match value {
            b"auto" => Some(AckMode::Auto),
            b"client" => Some(AckMode::Client),
            b"client-individual" => Some(AckMode::ClientIndividual),
            _ => None,
        }
    }

    /// Whether the client acknowledges (the MESSAGE then carries `ack` in 1.2).
    pub fn needs_ack(self) -> bool {
        self != AckMode::Auto
    }
}

/// How a queue consumer wants to be served, from its SUBSCRIBE (topics ignore it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// Consumer priority (`activemq.priority`, `x-priority`; 0 by default): a queue gives
    /// messages to its highest-priority consumers while they have window space.
    pub priority: i32,
    /// `activemq.exclusive:true` or `x-single-active-consumer:true`: the queue delivers to one
    /// such consumer at a time and fails over to the next when it goes away.
    pub exclusive: bool,
}

/// One subscription of one connection. Shared by the session (acks), the router (dispatch) and
/// the connection's writer (encoding the MESSAGE, settling auto acks).
pub struct Subscription {
    /// Connection-local key; part of the 1.2 `ack` header.
    pub(super) key: u32,
    /// Unique among every consumer the broker ever had (a global counter).
    pub(super) consumer_id: u64,
    /// The SUBSCRIBE `id` (absent only for 1.0 subscriptions without one).
    pub(super) wire_id: Option<Bytes>,
    /// The SUBSCRIBE `destination`.
    pub(super) destination: Bytes,
    pub(super) ack_mode: AckMode,
    /// Unacked-message window.
    pub(super) window: u32,
    /// Consumer priority and exclusivity (queues only).
    pub(super) options: ConsumerOptions,
    /// The connection's outbound queue.
    pub(super) outbox: Arc<Outbox>,
    /// The message plugins' filter (opaque to the router).
    pub(super) filter: DeliveryFilter,
    /// The queue (a durable subscription's included) or topic it consumes from.
    pub(super) source: Destination,
    /// A topic subscription's delivery numbering and client-ack window (none for queues).
    pub(super) topic_window: Option<TopicConsumer>,
    /// A wildcard subscription whose read rights do not cover its whole pattern: those
    /// rights (destination globs), checked against each message's topic.
    pub(super) topic_rights: Option<Box<[String]>>,
    /// Cluster mode, on a `/queue/`: its pull from the queue's JetStream consumer, which
    /// settles what the queue would (see [`crate::cluster::queue`]).
    pub(super) remote: Option<Arc<crate::cluster::RemoteConsumer>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("key", &self.key)
            .field("consumer_id", &self.consumer_id)
            .field("wire_id", &self.wire_id)
            .field("destination", &self.destination)
            .field("ack_mode", &self.ack_mode)
            .field("window", &self.window)
            .field("options", &self.options)
            .finish()
    }
}

impl Subscription {
    /// The connection-local key (the first part of a 1.2 `ack` value).
    pub fn key(&self) -> u32 {
        self.key
    }

    /// The SUBSCRIBE `id`.
    pub fn wire_id(&self) -> Option<&Bytes> {
        self.wire_id.as_ref()
    }

    /// The SUBSCRIBE `destination`.
    pub fn destination(&self) -> &Bytes {
        &self.destination
    }

    /// The `id`, or for a 1.0 subscription without one its destination: how errors name it.
    pub fn name(&self) -> &Bytes {
        self.wire_id.as_ref().unwrap_or(&self.destination)
    }

    /// The SUBSCRIBE `ack` mode.
    pub fn ack_mode(&self) -> AckMode {
        self.ack_mode
    }

    /// The connection's outbound queue.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The message plugins' filter for this subscription.
    pub fn filter(&self) -> &DeliveryFilter {
        &self.filter
    }

    /// Whether it consumes a durable topic subscription's queue.
    pub fn is_durable(&self) -> bool {
        matches!(&self.source, Destination::Queue(queue) if queue.bound_topic().is_some())
    }

    /// ACK (`requeue == false`) or NACK (`requeue == true`) of the delivery `target` names (and
    /// every earlier one in `client` mode). Queue messages NACKed go back to the queue; topic
    /// deliveries only leave the window.
    pub fn settle(
        self: &Arc<Self>,
        target: AckTarget<'_>,
        requeue: bool,
    ) -> Result<(), NotPending> {
        if let Some(remote) = &self.remote {
            return remote.settle(target, requeue);
        }
        match (&self.source, &self.topic_window) {
            (Destination::Queue(queue), _) => queue.settle(self.consumer_id, target, requeue),
            (_, Some(window)) => window.settle(self, target, true),
            (Destination::Topic(_), None) => Err(NotPending),
        }
    }

    /// NACK of a delivery: as [`settle`](Self::settle) with `requeue`, the NACK frame's own
    /// headers `headers` passed on to a queue's redeliver hook.
    pub fn nack(
        self: &Arc<Self>,
        target: AckTarget<'_>,
        headers: &[(bytes::Bytes, bytes::Bytes)],
    ) -> Result<(), NotPending> {
        if let Some(remote) = &self.remote {
            return remote.nack(target, headers);
        }
        match &self.source {
            Destination::Queue(queue) => queue.settle_with(self.consumer_id, target, true, headers),
            Destination::Topic(_) => self.settle(target, true),
        }
    }

    /// Whether `target` names a delivery this subscription has not settled yet (an ACK or NACK
    /// inside a transaction is checked now and applied at COMMIT).
    pub fn check(self: &Arc<Self>, target: AckTarget<'_>) -> Result<(), NotPending> {
        if !self.ack_mode.needs_ack() {
            return Err(NotPending);
        }
        if let Some(remote) = &self.remote {
            return remote.check(target);
        }
        match (&self.source, &self.topic_window) {
            (Destination::Queue(queue), _) => queue.check_pending(self.consumer_id, target),
            (_, Some(window)) => window.settle(self, target, false),
            (Destination::Topic(_), None) => Err(NotPending),
        }
    }

    /// The filter skipped delivery `seq`: a queue hands it to its other consumers; a topic
    /// subscriber just does not see it (and it leaves the client-ack window).
    pub fn decline(self: &Arc<Self>, seq: u64) {
        if let Some(remote) = &self.remote {
            return remote.decline(seq);
        }
        match (&self.source, &self.topic_window) {
            (Destination::Queue(queue), _) => queue.decline(self.consumer_id, seq),
            (_, Some(window)) if self.ack_mode.needs_ack() => window.forget(self, seq),
            _ => {}
        }
    }

    /// The filter failed on delivery `seq` (not a decline): a queue retries it and
    /// dead-letters it after `dead_letter.max_filter_failures`; a topic subscriber does not see
    /// it.
    pub fn filter_failed(self: &Arc<Self>, seq: u64) {
        if let Some(remote) = &self.remote {
            return remote.decline(seq);
        }
        match &self.source {
            Destination::Queue(queue) => queue.filter_failed(self.consumer_id, seq),
            Destination::Topic(_) => self.decline(seq),
        }
    }

    /// Auto-ack deliveries up to `seq` were handed to the socket: they count as consumed.
    pub fn written(&self, seq: u64) {
        if let Some(remote) = &self.remote {
            return remote.written(seq);
        }
        if let Destination::Queue(queue) = &self.source {
            queue.written(self.consumer_id, seq);
        }
    }
}
