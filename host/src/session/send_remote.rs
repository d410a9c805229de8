//! Cluster mode: a SEND's message for a `/queue/` goes to JetStream through the connection's
//! [`PublishPipeline`] (without waiting for the acknowledgement, up to `[cluster]
//! publish_window` of them), and the session waits for all of them where its answer promises
//! they are stored: before a RECEIPT, a COMMIT and a DISCONNECT ([`Session::settle_sends`]).
//! Its loop waits for the oldest meanwhile ([`settle_oldest`]), so a failure ends the
//! connection even when the producer has gone quiet. With `publish_window = 0` every SEND waits
//! for its own acknowledgement, as a SEND that is not pipelined does.

use std::sync::Arc;

use super::error::{client_error, SessionError};
use super::error_code::ErrorCode;
use super::Session;
use crate::cluster::pipeline::{PublishPipeline, Unstored};
use crate::cluster::queue::Stored;
use crate::cluster::RemoteQueue;
use crate::router::Message;
use crate::text::shown;

/// Whether publishes wait for their acknowledgement (for the session loop's `select!`).
pub(super) fn sending(pipeline: &Option<Box<PublishPipeline>>) -> bool {
    pipeline
        .as_ref()
        .is_some_and(|pipeline| !pipeline.is_empty())
}

/// Waits for the oldest publish's acknowledgement (never, with none). Cancel-safe.
pub(super) async fn settle_oldest(
    pipeline: &mut Option<Box<PublishPipeline>>,
) -> Result<(), Unstored> {
    match pipeline {
        Some(pipeline) => pipeline.settle_oldest().await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// Publishes `message` to the cluster queue `remote`: through the pipeline, or waiting for
    /// the acknowledgement when the window is 0.
    #[inline(never)]
    pub(super) async fn publish_remote(
        &mut self,
        remote: &Arc<RemoteQueue>,
        message: Arc<Message>,
    ) -> Result<(), SessionError> {
        if self.pipeline.is_none() {
            let config = self.broker.config.cluster.as_ref();
            match config.and_then(PublishPipeline::new) {
                Some(pipeline) => self.pipeline = Some(Box::new(pipeline)),
                None => {
                    return match remote.publish(&message).await {
                        Stored::Yes => Ok(()),
                        Stored::Full => {
                            self.dead_letter_refused(&message).await;
                            Err(full_cluster_queue_error(&message.destination))
                        }
                        Stored::No => Err(self.cluster_unavailable_error()),
                    };
                }
            }
        }
        let pipeline = self.pipeline.as_mut().expect("made above");
        match pipeline.publish(remote, message).await {
            Ok(()) => Ok(()),
            Err(unstored) => Err(self.unstored_error(unstored).await),
        }
    }

    /// Waits until JetStream has stored every message this connection published to it without
    /// waiting: before a RECEIPT, a COMMIT and a DISCONNECT.
    pub(super) async fn settle_sends(&mut self) -> Result<(), SessionError> {
        if !sending(&self.pipeline) {
            return Ok(());
        }
        self.drain_sends().await
    }

    #[inline(never)]
    async fn drain_sends(&mut self) -> Result<(), SessionError> {
        let pipeline = self.pipeline.as_mut().expect("sending");
        match pipeline.drain().await {
            Ok(()) => Ok(()),
            Err(unstored) => Err(self.unstored_error(unstored).await),
        }
    }

    /// Under `x-overflow: reject-publish-dlx` (the queue's `[[queues]]` entry or declaration
    /// on this edge) with `[dead_letter]` on: the copy of a message a limit of its cluster
    /// queue's stream refused goes to the dead-letter queue (the SEND is refused all the
    /// same), as a local queue does.
    async fn dead_letter_refused(&self, message: &Arc<Message>) {
        let router = &self.vhost.router;
        let Some(queue) = router.existing_queue(&message.destination) else {
            return;
        };
        if let Some((dead_letter_queue, copy)) = queue.refused_dead_letter(message) {
            let published = dead_letter_queue.publish(copy).await;
            if published != crate::router::Published::Queued {
                tracing::warn!(queue = %shown(&message.destination), ?published, "cluster: the dead-letter copy of a refused message was not stored");
            }
        }
    }

    /// The ERROR for a message published without waiting that the cluster did not store.
    pub(super) async fn unstored_error(&self, unstored: Unstored) -> SessionError {
        if let Unstored::Full(message) = unstored {
            self.dead_letter_refused(&message).await;
            return full_cluster_queue_error(&message.destination);
        }
        let timeout = self.publish_timeout_ms();
        client_error(
            ErrorCode::ClusterUnavailable,
            format!("the cluster did not store a message this connection sent, tried twice for {timeout} ms each (publish_timeout_ms): NATS unreachable or JetStream unavailable; messages sent since the last RECEIPT may not be stored"),
        )
    }
}

/// The ERROR of a SEND to cluster queue `queue` that a limit of its stream refused
/// (`[cluster] queue_overflow = "reject-publish"`, or its `[[queues]]` entry's `overflow`).
pub(super) fn full_cluster_queue_error(queue: &[u8]) -> SessionError {
    client_error(
        ErrorCode::FlowQueueFull,
        format!(
            "message rejected: queue '{}' is full (a limit of its JetStream stream: [cluster] queue_* or its [[queues]] entry, overflow reject-publish)",
            shown(queue)
        ),
    )
}
