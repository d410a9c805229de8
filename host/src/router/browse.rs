//! Queue browsing (ActiveMQ's `browser:true` SUBSCRIBE): the subscription is shown the
//! messages waiting in its queue, without consuming them, then a MESSAGE with `browser:end`.
//!
//! The browse is a subscription of its connection (it takes one of its
//! `limits.max_subscriptions_per_connection` places until UNSUBSCRIBE, which clients send
//! after `browser:end`) that is never a consumer of the queue: nothing is dispatched to it,
//! and its writes and its filter's verdicts settle nothing. It sees a snapshot: at most
//! `limits.max_browse_messages` waiting messages, oldest first, copied (as `Arc`s) under the
//! queue's lock, which is released before anything is sent. Messages out with consumers
//! (unacknowledged) are not shown. The message plugins' filters apply as to any subscription.
//! A cluster queue's snapshot is read from JetStream instead ([`crate::cluster::browse`]).
//! Its ack mode is `auto` whatever the SUBSCRIBE says (there is nothing to acknowledge).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{Command, Frame};

use super::message::{Delivery, Message};
use super::subscription::{AckMode, Subscription};
use super::{table_key, Connection, Destination, PreparedSubscription, Router};

/// A browse ready to be sent: its subscription, the snapshot and the end marker.
#[derive(Debug)]
pub struct Browse {
    /// The browser's subscription (registered with its connection).
    pub subscription: Arc<Subscription>,
    /// The waiting messages it is shown.
    pub messages: Vec<Arc<Message>>,
}

impl Browse {
    /// The deliveries of the snapshot, in order.
    pub fn deliveries(&self) -> impl Iterator<Item = Delivery> + '_ {
        self.messages
            .iter()
            .enumerate()
            .map(|(seq, message)| Delivery {
                message: message.clone(),
                subscription: self.subscription.clone(),
                seq: seq as u64,
                redeliveries: 0,
                first_in_group: false,
            })
    }

    /// The MESSAGE that ends the browse (`browser:end`, no body), as ActiveMQ sends it.
    pub fn end_marker(&self) -> Frame {
        let subscription = &self.subscription;
        let mut frame = Frame::new(Command::Message)
            .header("destination", subscription.destination.clone())
            .header(
                "message-id",
                Bytes::from(format!("browser-end-{}", subscription.consumer_id)),
            );
        if let Some(id) = &subscription.wire_id {
            frame = frame.header("subscription", id.clone());
        }
        frame.header("browser", "end")
    }
}

impl Router {
    /// Registers a prepared `/queue/` subscription as a browser of its queue and takes the
    /// snapshot it is shown, or shows it `snapshot` (a cluster queue's, read from JetStream:
    /// [`crate::cluster::browse`]). `None` when the subscription is not on a queue.
    pub fn attach_browser(
        &self,
        conn: &mut Connection,
        prepared: PreparedSubscription,
        snapshot: Option<Vec<Arc<Message>>>,
    ) -> Option<Browse> {
        let PreparedSubscription {
            wire_id,
            destination,
            window,
            outbox,
            filter,
            source,
            ..
        } = prepared;
        let Destination::Queue(queue) = &source else {
            return None;
        };
        let messages = snapshot
            .unwrap_or_else(|| queue.waiting_messages(self.settings.limits.max_browse_messages));
        let key = conn.free_key();
        let subscription = Arc::new(Subscription {
            key,
            consumer_id: self.shared.next_consumer.fetch_add(1, Ordering::Relaxed),
            wire_id,
            destination,
            ack_mode: AckMode::Auto,
            window,
            options: Default::default(),
            outbox,
            filter,
            source,
            topic_window: None,
            topic_rights: None,
            remote: None,
        });
        conn.by_wire_id.insert(
            table_key(subscription.wire_id.as_ref(), &subscription.destination),
            key,
        );
        conn.subscriptions.insert(key, subscription.clone());
        Some(Browse {
            subscription,
            messages,
        })
    }
}
