//! Browsing a cluster queue (`browser:true` on a `/queue/` in cluster mode): the messages its
//! stream holds that no consumer on any edge has been given yet, oldest first, read from
//! JetStream without consuming them.
//!
//! JetStream is asked for the queue consumer's last delivered stream sequence (one request),
//! then for the queue's next message after it, one message per request (`STREAM.MSG.GET` with
//! `next_by_subj`, answered by the stream leader), up to `limits.max_browse_messages`. What is
//! shown is a snapshot as of those requests: a message delivered or published meanwhile may
//! or may not be in it. Messages out with consumers (delivered, not acknowledged) are not
//! shown, as on one node; nor are those handed back and waiting to be delivered again (their
//! sequence is behind the consumer's). Expired ones are skipped. A priority queue's bands
//! ([`super::bands`]) are read the same way one after the other, highest first, as they are
//! delivered. The whole read is bounded by `publish_timeout_ms`.

use std::sync::Arc;

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::RawMessageErrorKind;

use crate::budget::MemoryBudget;
use crate::router::message::now_ms;
use crate::router::Message;

use super::queue::RemoteQueue;
use super::wire;

/// The cluster did not answer a browse in time (or refused it).
#[derive(Debug, thiserror::Error)]
#[error("reading the queue from JetStream: {0}")]
pub struct BrowseFailed(String);

impl RemoteQueue {
    /// Up to `max` messages of the queue no consumer has been given yet, oldest first,
    /// expired ones skipped (see the module doc), charged to `budget` while shown.
    pub async fn waiting_messages(
        &self,
        max: usize,
        budget: &Arc<MemoryBudget>,
    ) -> Result<Vec<Arc<Message>>, BrowseFailed> {
        let timeout = self.link.config.publish_timeout();
        tokio::time::timeout(timeout, self.read_waiting(max, budget))
            .await
            .map_err(|_| BrowseFailed(format!("no answer within {} ms", timeout.as_millis())))?
    }

    async fn read_waiting(
        &self,
        max: usize,
        budget: &Arc<MemoryBudget>,
    ) -> Result<Vec<Arc<Message>>, BrowseFailed> {
        let stream = self.stream();
        let now = now_ms();
        let mut shown = Vec::new();
        // A priority queue's bands in the order they are delivered, highest first.
        for (consumer, subject) in self.parts() {
            // Everything up to the consumer's last delivery has been given to a consumer.
            let mut next = match stream.consumer_info(&consumer).await {
                Ok(info) => info.delivered.stream_sequence + 1,
                // No consumer yet: nobody was given anything.
                Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => 1,
                Err(err) => return Err(BrowseFailed(err.to_string())),
            };
            while shown.len() < max {
                let got = stream
                    .raw_message_builder()
                    .sequence(next)
                    .next_by_subject(subject.clone())
                    .send()
                    .await;
                let stored = match got {
                    Ok(stored) => stored,
                    Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => break,
                    Err(err) => return Err(BrowseFailed(err.to_string())),
                };
                next = stored.sequence + 1;
                // Not a Plugboard message (someone else published on the subject): not shown.
                let Ok(parts) = wire::decode(stored.payload) else {
                    continue;
                };
                let message = wire::into_message(parts, budget);
                if !message.is_expired(now) {
                    shown.push(Arc::new(message));
                }
            }
        }
        Ok(shown)
    }
}
