//! What becomes of a cluster queue's message that comes back: dead-lettering (`[dead_letter]`)
//! and the redeliver hook, applied by the edge that held the message.
//!
//! A delivery handed back (NACK, or its subscription ended) or found expired when pulled is a
//! `Returned` message: its JetStream acker, the message and JetStream's delivery count. When
//! a plugin serves the redeliver hook for the queue, it waits in the queue's deciding set
//! (this edge's memory, bounded by the vhost's outlet) for the verdict; else, or when the
//! outlet is full, the built-in policy applies at once, as on a single node:
//!
//! | verdict | JetStream |
//! |---|---|
//! | redeliver | `nak` (delivered again at once, on any edge) |
//! | redeliver after a delay | `nak` with that delay |
//! | dead-letter (`max-deliveries`, `expired`, a plugin's) | a copy with the `dlq-*` headers published to the dead-letter queue's subject (`Nats-Msg-Id` `dlq:` + the `message-id`), then the original acked |
//! | drop | ack |
//!
//! The copy is published before the original is acked: an edge that dies in between leaves
//! both (the original comes back after `ack_wait` and is dead-lettered again at its next hand
//! back; the copy's fixed `Nats-Msg-Id` makes JetStream store it once within its duplicate
//! window). A copy JetStream does not acknowledge leaves the original in its queue (`nak`).
//!
//! The consumers keep JetStream's `max_deliver` unlimited: the edges count deliveries (each
//! delivery carries JetStream's count) and dead-letter at the hand back, so a message is never
//! stranded in the stream as it would be after `max_deliver` with only JetStream's
//! at-most-once advisory left to move it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_nats::jetstream::{message::Acker, AckKind};
use bytes::Bytes;

use crate::plugin::{RedeliverCause, MAX_NACK_HEADERS};
use crate::router::redelivery::Decision;
use crate::router::{Message, Queue, Resolution};

use super::queue::{settle_later, Stored};
use super::RemoteQueue;

/// A cluster queue's delivery that came back and waits for what becomes of it.
pub(super) struct Returned {
    pub(super) acker: Acker,
    pub(super) message: Arc<Message>,
    /// JetStream's delivery count (1 on the first delivery).
    pub(super) deliveries: u32,
    /// Its sequence in the stream (0: not known).
    pub(super) stream_seq: u64,
    /// A priority queue's subscription waits for it to be back in JetStream before it asks
    /// the bands again ([`super::bands::Returning`]): released once that is so, or when what
    /// becomes of it is decided otherwise.
    pub(super) returning: Option<super::bands::ReturningGuard>,
    /// A grouped queue's partition counts it until it is back in JetStream, or gone from the
    /// queue ([`super::groups`]).
    pub(super) in_flight: Option<super::groups::InFlight>,
}

/// Hands `returned` back to its consumer: delivered again at once. For a priority queue's
/// subscription, JetStream confirms it took the nak in before the subscription asks the bands
/// again (so that a handed-back message goes before the newer ones of lower bands); for a
/// grouped queue's, before its partition can be given up (so that the next holder gets it
/// before the group's later messages).
fn nak(returned: Returned) {
    match returned.returning {
        None => settle_later(vec![(returned.acker, AckKind::Nak(None))]),
        Some(guard) => {
            let in_flight = returned.in_flight;
            tokio::spawn(async move {
                if let Err(err) = returned.acker.double_ack_with(AckKind::Nak(None)).await {
                    tracing::debug!(error = %err, "cluster: a nak not confirmed");
                }
                drop((guard, in_flight));
            });
        }
    }
}

/// The `Nats-Msg-Id` of the copy of the stored message `stream_seq` (`message`) moved to
/// another queue for `purpose` (`dlq`, `renew`, `move`): fixed per stored message, so a second
/// move of it (its ack lost, the message back) is stored once, and distinct for each stored
/// message, so a message moved back from its dead-letter queue and dead-lettered again within
/// JetStream's duplicate window is not taken for its first copy. By the message's id when the
/// sequence is not known.
pub(super) fn moved_id(purpose: &str, stream_seq: u64, message: &Message) -> String {
    if stream_seq > 0 {
        return format!("{purpose}:{stream_seq}");
    }
    let mut id = bytes::BytesMut::new();
    message.write_id(&mut id);
    format!("{purpose}:{}", String::from_utf8_lossy(&id))
}

impl RemoteQueue {
    /// A delivery of `queue` (this queue's router side) handed back for `cause` (with the
    /// NACK's headers): to the redeliver hook when a plugin serves the queue, else the
    /// built-in policy.
    pub(super) fn hand_back(
        &self,
        queue: &Queue,
        returned: Returned,
        cause: RedeliverCause,
        nack_headers: &[(Bytes, Bytes)],
    ) {
        if let Some(returned) = self.ask_plugin(queue, returned, cause, nack_headers) {
            self.builtin(queue, returned, cause);
        }
    }

    /// Submits a decision when a plugin serves the queue's redeliver hook and the vhost's
    /// outlet has room; the message back otherwise.
    fn ask_plugin(
        &self,
        queue: &Queue,
        returned: Returned,
        cause: RedeliverCause,
        nack_headers: &[(Bytes, Bytes)],
    ) -> Option<Returned> {
        let Some(outlet) = queue.redelivery_outlet() else {
            return Some(returned);
        };
        if !outlet.serves(&queue.name) {
            return Some(returned);
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let decision = Decision {
            queue: queue.name.clone(),
            token,
            message: returned.message.clone(),
            cause,
            deliveries: returned.deliveries,
            nack_headers: nack_headers
                .iter()
                .take(MAX_NACK_HEADERS)
                .cloned()
                .collect(),
        };
        // In the deciding set before the decision can come back.
        self.lock_deciding().insert(token, returned);
        if outlet.submit(decision) {
            return None;
        }
        self.lock_deciding().remove(&token)
    }

    fn lock_deciding(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Returned>> {
        self.deciding.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Messages waiting for the redeliver hook's verdict on this edge.
    pub fn deciding(&self) -> usize {
        self.lock_deciding().len()
    }

    /// The redeliver hook's verdict on message `token` (nothing when it is not waiting).
    pub fn resolve(&self, queue: &Queue, token: u64, resolution: Resolution) {
        let Some(returned) = self.lock_deciding().remove(&token) else {
            return;
        };
        match resolution {
            Resolution::Redeliver if returned.message.expires_at.is_some() => {
                if returned
                    .message
                    .is_expired(crate::router::message::now_ms())
                {
                    // Given another chance: a copy without its expiry takes its place (the
                    // stored message cannot change).
                    let copy = Arc::new(returned.message.copy_as(
                        returned.message.destination.clone(),
                        returned.message.headers.clone(),
                        None,
                        |_| Default::default(),
                    ));
                    let id = moved_id("renew", returned.stream_seq, &returned.message);
                    self.renew(queue, copy, id, returned.acker);
                } else {
                    nak(returned);
                }
            }
            Resolution::Redeliver => nak(returned),
            Resolution::RedeliverAfter(delay) => {
                // Back only after `delay`: the subscription need not wait for it to ask again.
                settle_later(vec![(returned.acker, AckKind::Nak(Some(delay)))])
            }
            Resolution::DeadLetter(target, reason) => {
                queue.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                queue.stats.dead_letter_reasons.count("plugin");
                self.dead_letter_to(queue, target, returned, &reason);
            }
            Resolution::Drop => {
                queue.stats.dropped.fetch_add(1, Ordering::Relaxed);
                settle_later(vec![(returned.acker, AckKind::Ack)]);
            }
            Resolution::Builtin(cause) => self.builtin(queue, returned, cause),
        }
    }

    /// The built-in `[dead_letter]` policy: an expired message is dropped or dead-lettered
    /// (`dead_letter.expired`); one handed back after `max_deliveries` deliveries is
    /// dead-lettered; any other goes back to the queue at once.
    pub(super) fn builtin(&self, queue: &Queue, returned: Returned, cause: RedeliverCause) {
        let policy = queue.dead_letter_policy();
        let reason = match cause {
            RedeliverCause::Expired => match policy {
                Some(policy) if policy.expired => "expired",
                _ => return settle_later(vec![(returned.acker, AckKind::Ack)]),
            },
            _ => match policy {
                Some(policy)
                    if policy.max_deliveries > 0
                        && returned.deliveries >= policy.max_deliveries =>
                {
                    "max-deliveries"
                }
                _ => return nak(returned),
            },
        };
        let Some(policy) = policy else { return };
        queue.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        queue.stats.dead_letter_reasons.count(reason);
        self.dead_letter_to(queue, policy.queue.clone(), returned, reason);
    }

    /// Moves `returned` to dead-letter queue `target` with the `dlq-*` headers.
    fn dead_letter_to(&self, queue: &Queue, target: Arc<Queue>, returned: Returned, reason: &str) {
        let copy = queue.dead_letter_copy(&target, &returned.message, reason, returned.deliveries);
        let id = moved_id("dlq", returned.stream_seq, &returned.message);
        let stats = self.link.stats.clone();
        let acker = returned.acker;
        tokio::spawn(async move {
            if publish_moved(&target, &copy, &id).await {
                stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                settle_later(vec![(acker, AckKind::Ack)]);
            } else {
                tracing::warn!(queue = %crate::text::shown(&copy.destination), "cluster: the dead-letter copy was not stored; the message stays in its queue");
                settle_later(vec![(acker, AckKind::Nak(None))]);
            }
        });
    }

    /// Publishes `copy` into this queue again (`queue` is its router side) with
    /// `Nats-Msg-Id` `id`, then acks the original (naks it when the copy was not stored).
    fn renew(&self, queue: &Queue, copy: Arc<Message>, id: String, acker: Acker) {
        let Some(own) = queue.remote().cloned() else {
            return settle_later(vec![(acker, AckKind::Nak(None))]);
        };
        tokio::spawn(async move {
            let kind = match own.publish_as(&copy, &id).await {
                Stored::Yes => AckKind::Ack,
                Stored::Full | Stored::No => AckKind::Nak(None),
            };
            settle_later(vec![(acker, kind)]);
        });
    }
}

/// Publishes a dead-letter copy to `target`: into JetStream with `Nats-Msg-Id` `id` for a
/// cluster queue (every `/queue/` in cluster mode), into the queue itself otherwise.
async fn publish_moved(target: &Arc<Queue>, copy: &Arc<Message>, id: &str) -> bool {
    match target.remote() {
        Some(remote) => remote.publish_as(copy, id).await == Stored::Yes,
        None => target.publish(copy.clone()).await == crate::router::Published::Queued,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(prefix: &str, seq: u64) -> Message {
        Message {
            destination: Bytes::from_static(b"/queue/q"),
            headers: vec![],
            body: Bytes::from_static(b"m"),
            id_prefix: Arc::from(prefix),
            id_seq: seq,
            expires_at: None,
            persistent: false,
            props: Default::default(),
            charge: Default::default(),
        }
    }

    #[test]
    fn a_moved_copy_has_a_fixed_id_distinct_from_the_original() {
        let original = message("ID:edge-a", 7);
        let mut id = bytes::BytesMut::new();
        original.write_id(&mut id);
        let dlq = moved_id("dlq", 42, &original);
        assert_eq!(dlq, "dlq:42");
        assert_ne!(
            dlq.as_bytes(),
            &id[..],
            "JetStream must not take it for the original"
        );
        assert_eq!(
            dlq,
            moved_id("dlq", 42, &original),
            "the same for a second move"
        );
        assert_ne!(dlq, moved_id("renew", 42, &original));
        // Another stored copy of the same message (moved back, then dead-lettered again).
        assert_ne!(dlq, moved_id("dlq", 43, &original));
        // Without a sequence: by the message's id.
        assert_eq!(moved_id("dlq", 0, &original), "dlq:ID:edge-a-7");
        assert_ne!(
            moved_id("dlq", 0, &original),
            moved_id("dlq", 0, &message("ID:edge-a", 8))
        );
    }
}
