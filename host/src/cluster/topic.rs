//! A `/topic/` in cluster mode: a SEND is published on the topic's NATS subject besides being
//! delivered to the edge's own subscribers; each edge takes every topic message of its vhosts
//! ([`run_inbound`]) and fans it out to its own subscribers, wildcard ones included (at most
//! once, to the subscribers live at that moment). The vhost's topic stream takes the same
//! subjects for the durable subscriptions ([`super::durable`]): a persistent message is
//! published through JetStream and its SEND acknowledged once stored, a non-persistent one as a
//! core message (kept for the durable subscriptions when it reaches the stream).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::router::{Message, Published};
use crate::vhost::Vhost;

use super::{wire, VhostLink};

/// The cluster side of one topic: where its SENDs go besides the local subscribers.
pub struct RemoteTopic {
    client: async_nats::Client,
    /// For a topic (not a reply stand-in): persistent messages are published through
    /// JetStream, acknowledged once the topic stream kept them for its durable subscriptions.
    jetstream: Option<jetstream::Context>,
    /// For another edge's temporary queue (a reply stand-in): a persistent message is handed
    /// over with a request that edge answers once the queue has it ([`super::reply`]).
    reply: bool,
    subject: async_nats::Subject,
    /// How long a publish may wait (for room in the client's buffer, or for JetStream's ack).
    timeout: Duration,
}

impl std::fmt::Debug for RemoteTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTopic")
            .field("subject", &self.subject)
            .finish()
    }
}

impl RemoteTopic {
    pub(super) fn new(
        client: async_nats::Client,
        jetstream: Option<jetstream::Context>,
        subject: String,
        timeout: Duration,
    ) -> RemoteTopic {
        RemoteTopic {
            client,
            jetstream,
            reply: false,
            subject: subject.into(),
            timeout,
        }
    }

    /// The stand-in for another edge's temporary queues, on that edge's reply `subject`.
    pub(super) fn reply(
        client: async_nats::Client,
        subject: String,
        timeout: Duration,
    ) -> RemoteTopic {
        RemoteTopic {
            reply: true,
            ..RemoteTopic::new(client, None, subject, timeout)
        }
    }

    /// Publishes `message` to the other edges, at most once (while NATS is unreachable the
    /// client buffers a little; once its buffer is full a publisher waits at most
    /// `publish_timeout_ms`, then the message is dropped for the other edges, logged). A
    /// persistent message of a topic goes through JetStream: [`Published::Unavailable`] when
    /// the topic stream did not acknowledge it within `publish_timeout_ms` (it may or may not
    /// have been stored). A persistent reply is handed over to its temporary queue's edge
    /// ([`super::reply::hand_over`]).
    pub async fn publish(&self, message: &Message) -> Published {
        let payload = wire::encode_message(message);
        if message.persistent && self.reply {
            return super::reply::hand_over(&self.client, &self.subject, payload, self.timeout)
                .await;
        }
        if let (true, Some(jetstream)) = (message.persistent, &self.jetstream) {
            return match self.store(jetstream, message, payload).await {
                true => Published::Queued,
                false => Published::Unavailable,
            };
        }
        let published = tokio::time::timeout(
            self.timeout,
            self.client.publish(self.subject.clone(), payload),
        )
        .await;
        match published {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(subject = %self.subject, error = %err, "cluster: topic message not published to the other edges");
            }
            Err(_) => {
                tracing::debug!(subject = %self.subject, "cluster: topic message not published to the other edges in time");
            }
        }
        Published::Queued
    }

    /// Publishes through JetStream until the topic stream acknowledges (the live subscribers
    /// on the other edges get it as any topic message), trying again with the same
    /// `Nats-Msg-Id` while the failure passes, for at most `publish_timeout_ms`.
    async fn store(
        &self,
        jetstream: &jetstream::Context,
        message: &Message,
        payload: Bytes,
    ) -> bool {
        let mut id = BytesMut::new();
        message.write_id(&mut id);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            String::from_utf8_lossy(&id).as_ref(),
        );
        let attempts = async {
            let mut backoff = RETRY_FIRST;
            loop {
                let attempt = async {
                    jetstream
                        .publish_with_headers(
                            self.subject.clone(),
                            headers.clone(),
                            payload.clone(),
                        )
                        .await?
                        .await
                };
                match attempt.await {
                    Ok(_ack) => return,
                    Err(err) => {
                        tracing::debug!(subject = %self.subject, error = %err, "cluster: persistent topic message not acknowledged; trying again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            }
        };
        let stored = tokio::time::timeout(self.timeout, attempts).await.is_ok();
        if !stored {
            tracing::warn!(subject = %self.subject, "cluster: the topic stream did not acknowledge a persistent message in time");
        }
        stored
    }
}

/// The first pause before a persistent topic publish is tried again (doubling).
const RETRY_FIRST: Duration = Duration::from_millis(20);
/// The longest pause between two attempts.
const RETRY_MAX: Duration = Duration::from_millis(500);

/// This edge's subscription to every topic message of a vhost, in place on the server (flushed)
/// when this returns, so a message another edge publishes from then on reaches this edge.
pub async fn subscribe_inbound(link: &VhostLink) -> anyhow::Result<async_nats::Subscriber> {
    let subscriber = link.client().subscribe(link.topic_wildcard()).await?;
    link.client().flush().await?;
    Ok(subscriber)
}

/// Takes every topic message the other edges publish in `vhost` (through `subscriber`, from
/// [`subscribe_inbound`]) and delivers it to this edge's subscribers; ends when the NATS
/// client is closed. A subscriber that is behind holds the others up for at most `patience`
/// (the slow-consumer policy, as for a local publisher).
pub async fn run_inbound(
    vhost: Arc<Vhost>,
    mut subscriber: async_nats::Subscriber,
    patience: Duration,
) {
    let budget = vhost.router.budget().clone();
    while let Some(nats) = subscriber.next().await {
        let parts = match wire::decode(nats.payload) {
            Ok(parts) => parts,
            Err(err) => {
                tracing::debug!(subject = %nats.subject, error = %err, "cluster: a topic message that is not a Plugboard message; dropped");
                continue;
            }
        };
        let message = Arc::new(wire::into_message(parts, &budget));
        vhost.router.deliver_from_cluster(message, patience).await;
    }
}
