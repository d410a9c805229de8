//! One pull request to a consumer and the messages JetStream sends for it, read from an inbox
//! of the edge's own (async-nats' batch builder cannot name a priority group, and cannot leave
//! a pull cleanly).
//!
//! A pull waits on the server until it got what it asked for or `expires` passed, and the
//! server sends to it as long as the edge listens on its inbox (a pull whose inbox has no
//! subscriber is dropped when the server would send to it). [`PullRequest::leave`] ends one
//! early (the subscription left) without losing what is on its way: the inbox is unsubscribed
//! after one more message (NATS's `UNSUB sid max`, counted by the server and the client
//! alike), and a marker is sent to the inbox right after (the answer to a JetStream request
//! that names the inbox as its reply subject), so the server's count is reached at once: by
//! the marker, or by a message the pull was being sent, which is read. Then the server forgets the pull, and the messages received are returned, to be
//! handed back. Handing them back while the pull still waited would deliver them to it again,
//! each time counted as one more delivery; unsubscribing plainly would leave a message already
//! on its way to the inbox unread, unacknowledged until the consumer's `ack_wait`.
//!
//! One message on its way is read; a second one the server had sent before it learnt of the
//! `UNSUB` is not (the client stops at the count), and comes back after `ack_wait`. And on a
//! NATS cluster the marker, sent by the server the edge is connected to, can overtake a
//! message that the consumer's leader on another node was sending: that message is dropped
//! too, and comes back after `ack_wait`. So pulls are left only when a subscription ends or an
//! exclusive one takes the queue, never as a matter of course: a priority queue's or grouped
//! queue's subscription keeps one waiting pull per part ([`super::parts`]).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use async_nats::StatusCode;
use futures_util::{FutureExt, StreamExt};

use super::priority::GROUP;

/// How long leaving a pull waits for the server to stop sending to it (one round trip).
pub const LEAVE_WAIT: Duration = Duration::from_secs(2);
/// The request whose answer, sent to a pull's inbox, is the marker that ends it: JetStream's
/// account info (cheap, answered by any JetStream server, allowed by `$JS.API.>`).
const MARKER_REQUEST: &str = "$JS.API.INFO";
/// How long past its `expires` (or, for one that does not wait, at all) a pull counts as
/// going on without the server's end status.
const GRACE: Duration = Duration::from_secs(5);

/// How long a pull waits on the server for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Not at all: the server sends what the consumer has now, then ends the pull
    /// (JetStream's `no_wait`).
    No,
    /// Up to this long for the messages asked for.
    Up(Duration),
}

/// One pull request: the messages JetStream sends for it.
pub struct PullRequest {
    client: async_nats::Client,
    inbox: async_nats::Subject,
    subscriber: async_nats::Subscriber,
    context: jetstream::Context,
    pending: usize,
    /// Messages read from the inbox (status ones included), as the server counts what it
    /// sent there.
    read: u64,
    /// Past this, the pull counts as over even without the server's timeout status.
    deadline: tokio::time::Instant,
}

impl PullRequest {
    /// Asks `consumer` for up to `want` messages, waiting on the server as `wait` says; at
    /// level `level` of [`GROUP`] when given (a prioritized consumer refuses a pull without
    /// its group, and a plain one a pull with it).
    pub async fn start(
        consumer: &jetstream::consumer::Consumer<pull::Config>,
        context: &jetstream::Context,
        client: &async_nats::Client,
        want: usize,
        wait: Wait,
        level: Option<usize>,
    ) -> Result<PullRequest, String> {
        let inbox = async_nats::Subject::from(client.new_inbox());
        let subscriber = client
            .subscribe(inbox.clone())
            .await
            .map_err(|err| err.to_string())?;
        let (expires, no_wait) = match wait {
            Wait::No => (None, true),
            Wait::Up(expires) => (Some(expires), false),
        };
        let request = pull::BatchConfig {
            batch: want,
            expires,
            no_wait,
            group: level.map(|_| GROUP.to_string()),
            priority: level,
            ..Default::default()
        };
        consumer
            .request_batch(request, inbox.clone())
            .await
            .map_err(|err| err.to_string())?;
        Ok(PullRequest {
            client: client.clone(),
            inbox,
            subscriber,
            context: context.clone(),
            pending: want,
            read: 0,
            deadline: tokio::time::Instant::now() + expires.unwrap_or_default() + GRACE,
        })
    }

    /// The next message of the pull; `None` once it is over (all it asked for came, it
    /// expired, or the server ended it: the status is returned as an error first).
    pub async fn next(&mut self) -> Option<Result<jetstream::Message, String>> {
        loop {
            if self.pending == 0 {
                return None;
            }
            let message = tokio::time::timeout_at(self.deadline, self.subscriber.next())
                .await
                .ok()??;
            self.read += 1;
            match message.status.unwrap_or(StatusCode::OK) {
                StatusCode::OK => {
                    self.pending -= 1;
                    return Some(Ok(jetstream::Message {
                        context: self.context.clone(),
                        message,
                    }));
                }
                StatusCode::IDLE_HEARTBEAT => continue,
                StatusCode::TIMEOUT | StatusCode::NOT_FOUND => {
                    self.pending = 0;
                    return None;
                }
                status => {
                    self.pending = 0;
                    return Some(Err(format!("{status}: {:?}", message.description)));
                }
            }
        }
    }

    /// Ends the pull, before the server did or after it stopped answering (see the module
    /// docs): the messages it had been sent, to be handed back. A message on its way when the
    /// server's confirmation does not come within [`LEAVE_WAIT`] comes back after the
    /// consumer's `ack_wait`.
    pub async fn leave(mut self) -> Vec<jetstream::Message> {
        let mut received = Vec::new();
        if self.pending == 0 {
            // Over: the server sends nothing more.
            return received;
        }
        let context = self.context.clone();
        let keep = |message: async_nats::Message, received: &mut Vec<jetstream::Message>| {
            // (The marker has no reply subject; a stored message has its ack subject.)
            let status = message.status.unwrap_or(StatusCode::OK);
            if status == StatusCode::OK && message.reply.is_some() {
                received.push(jetstream::Message {
                    context: context.clone(),
                    message,
                });
            }
        };
        // What the client holds already, so that the count is the server's.
        let mut ended = false;
        while let Some(Some(message)) = self.subscriber.next().now_or_never() {
            self.read += 1;
            let status = message.status.unwrap_or(StatusCode::OK);
            ended |= status != StatusCode::OK && status != StatusCode::IDLE_HEARTBEAT;
            keep(message, &mut received);
        }
        if ended || received.len() >= self.pending {
            // The server ended it (its end status came), or sent all it asked for: nothing
            // more comes, and no marker is needed.
            return received;
        }
        if let Err(err) = self.subscriber.unsubscribe_after(self.read + 1).await {
            tracing::debug!(error = %err, "cluster: a pull's inbox not unsubscribed");
            return received;
        }
        // The marker must come from the server: the edge's connection does not get its own
        // messages back (`no_echo`), so it asks JetStream for its account info, answered to
        // the inbox.
        if let Err(err) = self
            .client
            .publish_with_reply(MARKER_REQUEST, self.inbox.clone(), bytes::Bytes::new())
            .await
        {
            tracing::debug!(error = %err, "cluster: a pull's end marker not asked for");
        }
        let rest = async {
            while let Some(message) = self.subscriber.next().await {
                keep(message, &mut received);
            }
        };
        let _ = tokio::time::timeout(LEAVE_WAIT, rest).await;
        received
    }
}
