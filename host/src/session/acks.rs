//! ACK and NACK (per protocol version: which headers name the delivery) and the transaction
//! frames BEGIN, COMMIT and ABORT.

use bytes::Bytes;

use crate::cluster::queue::Stored;
use crate::codec::{Frame, Version};
use crate::router::AckMode;

use crate::router::{publish, Destination, Published};
use crate::text::shown;

use super::error::{client_error, SessionError};
use super::handlers::required;
use super::transaction::{Action, OwnedTarget, Transaction};
use super::ErrorCode;
use super::Session;

impl Session {
    pub(super) fn on_ack(&mut self, frame: &Frame, requeue: bool) -> Result<(), SessionError> {
        let (key, target) = self.ack_target(frame)?;
        let subscription = self
            .conn
            .subscription(key)
            .cloned()
            .expect("ack_target found it");
        let verb = if requeue { "NACK" } else { "ACK" };
        if subscription.ack_mode() == AckMode::Auto {
            return Err(client_error(
                ErrorCode::ProtocolAckNotExpected,
                format!(
                    "{verb} on subscription '{}', which is in auto ack mode",
                    shown(subscription.name())
                ),
            ));
        }
        let not_pending = || {
            client_error(
                ErrorCode::ProtocolUnknownAck,
                format!(
                    "{verb} names no unacknowledged message of subscription '{}'",
                    shown(subscription.name())
                ),
            )
        };
        if let Some(transaction) = self.transaction_mut(frame)? {
            subscription
                .check(target.as_target())
                .map_err(|_| not_pending())?;
            let nack_headers = if requeue {
                nack_headers(frame)
            } else {
                Vec::new()
            };
            transaction.actions.push(Action::Settle {
                key,
                target,
                requeue,
                nack_headers,
            });
            return Ok(());
        }
        if requeue {
            return subscription
                .nack(target.as_target(), &nack_headers(frame))
                .map_err(|_| not_pending());
        }
        subscription
            .settle(target.as_target(), requeue)
            .map_err(|_| not_pending())
    }

    /// Finds the subscription and delivery an ACK/NACK names, per protocol version.
    fn ack_target(&self, frame: &Frame) -> Result<(u32, OwnedTarget), SessionError> {
        let verb = frame.command.as_str();
        if self.version == Version::V1_2 {
            if let Some(id) = frame.get(b"id") {
                return self.parse_ack_id(id, verb);
            }
        }
        let message_id = frame.get(b"message-id");
        let subscription = frame.get(b"subscription");
        match (message_id, subscription) {
            (Some(message_id), Some(subscription)) => {
                let key = self
                    .conn
                    .by_wire_id(subscription)
                    .map(|s| s.key())
                    .ok_or_else(|| {
                        client_error(
                            ErrorCode::ProtocolUnknownSubscription,
                            format!(
                                "{verb} names unknown subscription '{}'",
                                shown(subscription)
                            ),
                        )
                    })?;
                // A composite subscription: the part that delivered the message.
                let key = self.conn.part_holding(key, message_id);
                Ok((key, OwnedTarget::MessageId(message_id.clone())))
            }
            (Some(message_id), None) if self.version == Version::V1_0 => {
                // 1.0 names only the message: find the subscription holding it.
                let target = OwnedTarget::MessageId(message_id.clone());
                self.conn
                    .subscriptions()
                    .find(|s| s.check(target.as_target()).is_ok())
                    .map(|s| (s.key(), target))
                    .ok_or_else(|| {
                        client_error(
                            ErrorCode::ProtocolUnknownAck,
                            format!(
                                "{verb} names no unacknowledged message '{}'",
                                shown(message_id)
                            ),
                        )
                    })
            }
            _ => Err(client_error(
                ErrorCode::ProtocolMissingHeader,
                match self.version {
                    Version::V1_2 => format!("{verb} frame is missing the required 'id' header"),
                    Version::V1_1 => format!(
                    "{verb} frame needs both 'message-id' and 'subscription' headers in STOMP 1.1"
                ),
                    Version::V1_0 => {
                        format!("{verb} frame is missing the required 'message-id' header")
                    }
                },
            )),
        }
    }

    /// Parses a 1.2 `ack` value `<key>.<seq>`.
    fn parse_ack_id(&self, id: &Bytes, verb: &str) -> Result<(u32, OwnedTarget), SessionError> {
        let unknown = || {
            client_error(
                ErrorCode::ProtocolUnknownAck,
                format!("{verb} names unknown ack id '{}'", shown(id)),
            )
        };
        let text_id = std::str::from_utf8(id).map_err(|_| unknown())?;
        let (key, seq) = text_id.split_once('.').ok_or_else(unknown)?;
        let key: u32 = key.parse().map_err(|_| unknown())?;
        let seq: u64 = seq.parse().map_err(|_| unknown())?;
        if self.conn.subscription(key).is_none() {
            return Err(unknown());
        }
        Ok((key, OwnedTarget::Seq(seq)))
    }

    #[inline(never)] // rare beside SEND and ACK: kept out of `dispatch` (see `RareFuture`)
    pub(super) fn on_begin(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let id = required(frame, "transaction")?.clone();
        if self.transactions.contains_key(&id) {
            return Err(client_error(
                ErrorCode::ProtocolDuplicateTransaction,
                format!("transaction '{}' is already open", shown(&id)),
            ));
        }
        let max = self.broker.config.limits.max_transactions_per_connection;
        if self.transactions.len() >= max {
            return Err(client_error(
                ErrorCode::LimitTransactions,
                format!("too many open transactions: the limit is {max} per connection"),
            ));
        }
        self.transactions.insert(id, Transaction::default());
        Ok(())
    }

    pub(super) async fn on_commit(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let id = required(frame, "transaction")?;
        let transaction = self.transactions.remove(id).ok_or_else(|| {
            client_error(
                ErrorCode::ProtocolUnknownTransaction,
                format!("COMMIT of unknown transaction '{}'", shown(id)),
            )
        })?;
        let patience = self.slow_consumer_patience();
        // A message a full queue refused does not undo the others: COMMIT gets the ERROR.
        let mut rejected = None;
        let mut unavailable = false;
        // Cluster mode: the queue messages go to JetStream together, all or none.
        let mut atomic = Vec::new();
        for action in transaction.actions {
            match action {
                Action::Publish {
                    plan,
                    reservation,
                    schedule: Some(schedule),
                } => {
                    // Admitted at SEND: the caps were checked then.
                    let scheduler = self.vhost.router.scheduler();
                    let _ = scheduler.schedule(plan, schedule, &self.principal.name, false);
                    drop(reservation);
                }
                Action::Publish {
                    plan,
                    reservation,
                    schedule: None,
                } => {
                    for (destination, message) in plan {
                        if let Destination::Queue(queue) = &destination {
                            if let Some(remote) = queue.remote() {
                                atomic.push((remote.clone(), message));
                                continue;
                            }
                        }
                        match publish(&destination, message, patience).await {
                            Published::Rejected => rejected = Some(destination),
                            Published::Unavailable => unavailable = true,
                            Published::Queued | Published::Dropped => {}
                        }
                    }
                    // Journaled now: the records count, the reservation is released.
                    drop(reservation);
                }
                Action::Settle {
                    key,
                    target,
                    requeue,
                    nack_headers,
                } => {
                    // The subscription may have ended since; its messages were redelivered.
                    if let Some(subscription) = self.conn.subscription(key) {
                        let _ = if requeue {
                            subscription.nack(target.as_target(), &nack_headers)
                        } else {
                            subscription.settle(target.as_target(), false)
                        };
                    }
                }
            }
        }
        let mut full_batch = false;
        if let Some((remote, _)) = atomic.first() {
            let link = remote.link().clone();
            match link.publish_atomically(&atomic).await {
                Stored::Yes => {}
                Stored::Full => full_batch = true,
                Stored::No => unavailable = true,
            }
        }
        if unavailable {
            return Err(self.cluster_unavailable_error());
        }
        if full_batch {
            return Err(client_error(
                ErrorCode::FlowQueueFull,
                "transaction rejected: a [cluster] queue limit refused its messages to cluster queues (queue_overflow reject-publish); the atomic batch it refused (up to 1000 of them) was not stored".to_string(),
            ));
        }
        match rejected {
            Some(queue) => Err(super::handlers::full_queue_error(&queue)),
            None => Ok(()),
        }
    }

    #[inline(never)] // rare beside SEND and ACK: kept out of `dispatch` (see `RareFuture`)
    pub(super) fn on_abort(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let id = required(frame, "transaction")?;
        let transaction = self.transactions.remove(id).ok_or_else(|| {
            client_error(
                ErrorCode::ProtocolUnknownTransaction,
                format!("ABORT of unknown transaction '{}'", shown(id)),
            )
        })?;
        transaction.abort(&self.conn);
        Ok(())
    }
}

/// A NACK frame's own headers (an `error` text, say), for a queue's redeliver hook: the
/// protocol's (`id`, `subscription`, `message-id`, `transaction`, `receipt`) left out, at most
/// [`MAX_NACK_HEADERS`](crate::plugin::MAX_NACK_HEADERS) of them.
fn nack_headers(frame: &Frame) -> Vec<(bytes::Bytes, bytes::Bytes)> {
    const PROTOCOL: [&[u8]; 5] = [
        b"id",
        b"subscription",
        b"message-id",
        b"transaction",
        b"receipt",
    ];
    frame
        .headers
        .iter()
        .filter(|(name, _)| !PROTOCOL.contains(&&name[..]))
        .take(crate::plugin::MAX_NACK_HEADERS)
        .cloned()
        .collect()
}
