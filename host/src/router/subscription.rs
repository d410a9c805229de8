//! A subscription as the router and the connection's writer see it: who it belongs to, how it
//! acknowledges, and where its deliveries go.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::plugin::{Principal, SubscriptionFilter, SubscriptionInfo};

use super::outbox::Outbox;
use super::queue::Queue;
use super::topic::TopicConsumer;

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

/// Where a subscription takes its messages from.
#[derive(Debug)]
pub enum Source {
    /// A queue: the router tracks unacked deliveries and redelivers them.
    Queue(Arc<Queue>),
    /// A topic: deliveries are fire-and-forget; client acks only free the window.
    Topic(Arc<TopicConsumer>),
}

/// One subscription of one connection. Shared by the session (acks), the router (dispatch) and
/// the connection's writer (encoding the MESSAGE, settling auto acks).
pub struct Subscription {
    /// Connection-local key; part of the 1.2 `ack` header.
    pub key: u32,
    /// Unique among the consumers of one queue (connection number and key).
    pub consumer_id: u64,
    /// The SUBSCRIBE `id` (absent only for 1.0 subscriptions without one).
    pub wire_id: Option<Bytes>,
    /// The SUBSCRIBE `destination`.
    pub destination: Bytes,
    pub ack_mode: AckMode,
    /// Unacked-message window.
    pub window: u32,
    /// The connection's outbound queue.
    pub outbox: Arc<Outbox>,
    /// The message filter plugins chose for this subscription, and the plugin generation it
    /// was prepared with (after a reload it is prepared again before the next delivery).
    pub filter: Mutex<FilterSlot>,
    /// What the filter is prepared from.
    pub filter_inputs: FilterInputs,
    /// The queue or topic it consumes from.
    pub source: Source,
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
            .field("filter", &self.filter.lock().map(|s| s.generation).ok())
            .finish()
    }
}

/// A subscription's prepared filter chain (none when no message plugin applies).
#[derive(Default)]
pub struct FilterSlot {
    /// The plugin generation it was prepared with.
    pub generation: u64,
    pub filter: Option<Arc<SubscriptionFilter>>,
}

/// The SUBSCRIBE as the message plugins see it, kept to prepare the filter again after a reload.
pub struct FilterInputs {
    pub principal: Principal,
    pub info: SubscriptionInfo,
}
