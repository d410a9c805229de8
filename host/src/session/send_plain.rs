//! The plain SEND: one message to one destination, no send plugin, no transaction, schedule or
//! queue arguments. Most SENDs are this; they take this short path instead of the general one
//! in `handlers.rs` (`finish_send`), which serves plugin fan-outs, composites, transactions and
//! schedules. Kept apart so that the code a plain SEND runs is compact: the general path's
//! branches interleaved with it cost L1 instruction-cache misses on every message (see
//! docs/benchmarks.md, "Where the CPU time goes"). The two paths must agree on what they do
//! with a message: the tests of `handlers.rs` and the end-to-end tests run through both.

use std::sync::Arc;

use super::error::{client_error, SessionError};
use super::error_code;
use super::handlers::{expiry, full_queue_error, journal_bytes, PreparedSend};
use super::Session;
use crate::budget::Charge;
use crate::plugin::PluginMessage;
use crate::router::queue_args::expiry_in;
use crate::router::{publish, Destination, Message, Props, Published};
use crate::store::Reservation;

impl PreparedSend {
    /// Whether this SEND can take the plain path: outside a transaction, with its headers read
    /// before any plugin (so its destination was checked), and no schedule or queue arguments.
    pub(super) fn is_plain(&self) -> bool {
        self.transaction_id.is_none() && self.mentions.is_some_and(|m| !m.schedule && !m.queue_args)
    }
}

impl Session {
    /// Publishes a plain SEND's message (see the module doc); `send.is_plain()` holds.
    pub(super) async fn send_plain(
        &mut self,
        send: PreparedSend,
        copy: PluginMessage,
    ) -> Result<(), SessionError> {
        let PreparedSend {
            persistent,
            props,
            mentions,
            charge,
            ..
        } = send;
        let expires_at = match mentions {
            Some(m) if m.expiry => expiry(&copy.headers),
            _ => None,
        };
        let Some(target) = self
            .vhost
            .router
            .resolve(&mut self.conn, &copy.destination)?
        else {
            return Ok(()); // a topic nobody listens to, or a reply queue that is gone
        };
        let props = props.unwrap_or_default();
        let message = self.stamp(copy, &target, expires_at, persistent, props, charge);
        let reservation = if persistent {
            self.reserve_plain(&target, &message)?
        } else {
            None
        };
        // Over the memory budget the producer waits here, as on the general path.
        self.vhost
            .router
            .budget()
            .wait_for_room(Some(&self.account))
            .await;
        if let Some(remote) = target.remote_queue() {
            drop(reservation); // JetStream stores it, not the journal
            return self.publish_remote(remote, message).await;
        }
        let patience = self.slow_consumer_patience();
        let published = publish(&target, message, patience).await;
        drop(reservation);
        match published {
            Published::Queued | Published::Dropped => Ok(()),
            Published::Rejected => Err(full_queue_error(&target)),
            Published::Unavailable => Err(self.cluster_unavailable_error()),
        }
    }

    /// The message a SEND's `copy` for `target` becomes, under this session's next
    /// `message-id` (both paths make their messages here).
    pub(super) fn stamp(
        &mut self,
        copy: PluginMessage,
        target: &Destination,
        expires_at: Option<u64>,
        persistent: bool,
        props: Props,
        charge: Charge,
    ) -> Arc<Message> {
        let message = Arc::new(Message {
            destination: copy.destination,
            headers: copy.headers,
            body: copy.body,
            id_prefix: self.id.clone(),
            id_seq: self.next_message,
            expires_at: expiry_in(target, expires_at),
            persistent,
            props,
            charge,
        });
        self.next_message += 1;
        message
    }

    /// Room in the store for a persistent message's journaled copies (one per queue, one per
    /// durable subscription of a topic), held until they are written.
    #[inline(never)]
    fn reserve_plain(
        &self,
        target: &Destination,
        message: &Message,
    ) -> Result<Option<Reservation>, SessionError> {
        let Some(store) = self.vhost.router.store() else {
            return Ok(None);
        };
        store
            .reserve(journal_bytes(target, message))
            .map(Some)
            .map_err(|refused| client_error(error_code::store_code(&refused), refused.to_string()))
    }
}
