//! One connection's `/queue/` SENDs on their way into JetStream: published one after another
//! without waiting for each acknowledgement, in order, at most `[cluster] publish_window` of
//! them (and `publish_window_bytes` of messages) unacknowledged at a time.
//!
//! Waiting for every publish acknowledgement made a producer send one message per round trip
//! through the JetStream stream leader (and its replication): a few thousand messages a second
//! per connection. A SEND without a RECEIPT promises the client nothing, so it need not wait;
//! the session waits instead ([`PublishPipeline::drain`]) where its answers promise something:
//! before a RECEIPT (which covers every frame before it), a COMMIT and a DISCONNECT.
//!
//! A publish that fails (no acknowledgement in `publish_timeout_ms`, or refused) is tried once
//! more the way a waiting SEND is ([`RemoteQueue::publish`]: with the same `Nats-Msg-Id`, so a
//! copy stored by the first attempt is stored once); when that fails too the connection gets
//! `ERROR cluster.unavailable` and closes; one a limit of the queues' stream refused is not
//! tried again: the connection gets `ERROR flow.queue-full`. A message retried so lands after those sent behind
//! it that were stored at the first attempt. The session waits for the oldest publish in its
//! loop ([`PublishPipeline::settle_oldest`], cancel-safe), so a failure is reported even to a
//! producer that has gone quiet, and the window frees as acknowledgements arrive.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use crate::router::Message;

use super::config::ClusterConfig;
use super::queue::{is_limit_refusal, RemoteQueue, Stored};

/// A publish's outcome, on its way: the first attempt's acknowledgement, then (after a
/// failure) the second attempt.
type Outcome = Pin<Box<dyn Future<Output = Stored> + Send>>;

/// A message sent to JetStream and not acknowledged yet.
struct InFlight {
    remote: Arc<RemoteQueue>,
    /// Kept for a second attempt; its memory charge stays with it until it is stored.
    message: Arc<Message>,
    /// In a mutex only to make the session `Sync` (the client's futures are not); only ever
    /// reached through `&mut`, so never locked.
    outcome: Mutex<Outcome>,
    /// Whether `outcome` is the second attempt already.
    retried: bool,
}

/// A message the cluster did not store: the connection ends.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unstored {
    /// Not acknowledged, or refused, at two attempts.
    #[error("the cluster did not store a message published without waiting")]
    Unavailable,
    /// A limit of the queue's stream refused it: the message.
    #[error("a limit of the queue's stream refused a message")]
    Full(Arc<Message>),
}

impl Unstored {
    fn of(stored: Stored, message: &Arc<Message>) -> Result<(), Unstored> {
        match stored {
            Stored::Yes => Ok(()),
            Stored::Full => Err(Unstored::Full(message.clone())),
            Stored::No => Err(Unstored::Unavailable),
        }
    }
}

/// One connection's unacknowledged queue publishes (see the module doc).
pub struct PublishPipeline {
    window: usize,
    max_bytes: u64,
    /// The bytes of the messages in flight.
    bytes: u64,
    in_flight: VecDeque<InFlight>,
}

impl std::fmt::Debug for PublishPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishPipeline")
            .field("in_flight", &self.in_flight.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl PublishPipeline {
    /// A pipeline with `config`'s window, or `None` when `publish_window` is 0 (every SEND
    /// waits for its acknowledgement).
    pub fn new(config: &ClusterConfig) -> Option<PublishPipeline> {
        (config.publish_window > 0).then(|| PublishPipeline {
            window: config.publish_window as usize,
            max_bytes: config.publish_window_bytes,
            bytes: 0,
            in_flight: VecDeque::new(),
        })
    }

    /// Whether no publish is waiting for its acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Publishes `message` into `remote`'s stream without waiting for its acknowledgement;
    /// while the window is full, the oldest publishes are waited for first. An error: a
    /// message (this one or an earlier one) was not stored.
    pub async fn publish(
        &mut self,
        remote: &Arc<RemoteQueue>,
        message: Arc<Message>,
    ) -> Result<(), Unstored> {
        let size = message.size();
        while !self.in_flight.is_empty()
            && (self.in_flight.len() >= self.window || self.bytes + size > self.max_bytes)
        {
            self.settle_oldest().await?;
        }
        let outcome: Outcome = match remote.start_publish(&message).await {
            Ok(ack) => {
                let remote = remote.clone();
                Box::pin(async move {
                    match ack.into_future().await {
                        Ok(_) => {
                            remote.link.stats.published.fetch_add(1, Ordering::Relaxed);
                            Stored::Yes
                        }
                        Err(err) if is_limit_refusal(&err) => {
                            remote
                                .link
                                .stats
                                .refused_full
                                .fetch_add(1, Ordering::Relaxed);
                            Stored::Full
                        }
                        Err(err) => {
                            tracing::debug!(subject = %remote.subject(), error = %err, "cluster: a pipelined publish failed; trying again");
                            Stored::No
                        }
                    }
                })
            }
            // Not even sent: the waiting path (which retries what passes) decides.
            Err(err) => {
                tracing::debug!(subject = %remote.subject(), error = %err, "cluster: a pipelined publish was not sent; trying again");
                return Unstored::of(remote.publish(&message).await, &message);
            }
        };
        self.bytes += size;
        self.in_flight.push_back(InFlight {
            remote: remote.clone(),
            message,
            outcome: Mutex::new(outcome),
            retried: false,
        });
        Ok(())
    }

    /// Waits until the oldest publish is stored (or, with none, forever). Cancel-safe: a
    /// publish is forgotten only once its outcome is known.
    pub async fn settle_oldest(&mut self) -> Result<(), Unstored> {
        loop {
            let Some(oldest) = self.in_flight.front_mut() else {
                return std::future::pending().await;
            };
            let outcome = oldest.outcome.get_mut();
            let stored = outcome
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
                .await;
            if stored == Stored::No && !oldest.retried {
                // Once more as a waiting SEND would: same `Nats-Msg-Id`, its own retries
                // within `publish_timeout_ms`.
                let (remote, message) = (oldest.remote.clone(), oldest.message.clone());
                oldest.outcome =
                    Mutex::new(Box::pin(async move { remote.publish(&message).await }));
                oldest.retried = true;
                continue;
            }
            let done = self.in_flight.pop_front().expect("looked at above");
            self.bytes -= done.message.size();
            return Unstored::of(stored, &done.message);
        }
    }

    /// Waits until every publish is stored: before a RECEIPT, a COMMIT, a DISCONNECT.
    pub async fn drain(&mut self) -> Result<(), Unstored> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }
}
