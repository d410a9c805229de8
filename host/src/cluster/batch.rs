//! A transaction's queue messages as one JetStream atomic batch (nats-server 2.12+, ADR-50):
//! at COMMIT every message the transaction sends to cluster queues of the vhost is stored, or
//! none is.
//!
//! The protocol: each message carries `Nats-Batch-Id` (one id per attempt) and
//! `Nats-Batch-Sequence` (1, 2, ...); the last one also `Nats-Batch-Commit: 1` and is a request
//! whose answer is the batch's publish ack (or the error that discarded the whole batch). The
//! first message and every [`ACK_EVERY`]th are requests too (flow control: the server answers
//! them empty unless the batch already failed); the others are plain publishes. Each message
//! keeps its `Nats-Msg-Id` (the `message-id`), so an attempt made again after a lost commit
//! ack stores nothing twice within JetStream's duplicate window.
//!
//! JetStream takes at most [`MAX_BATCH`] messages per batch: a transaction with more is stored
//! as consecutive batches of that many, each all-or-nothing. A stream made by a server without
//! atomic batches (before 2.12) is not marked `allow_atomic`: then the messages are published
//! one by one, as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::router::Message;

use super::queue::{is_limit_error, Stored};
use super::{wire, RemoteQueue, VhostLink};

/// Most messages JetStream takes in one atomic batch.
pub const MAX_BATCH: usize = 1000;
/// Every this many messages of a batch, the edge waits for the server (flow control).
pub const ACK_EVERY: usize = 100;
/// The first pause before a batch is tried again (doubling).
const RETRY_FIRST: Duration = Duration::from_millis(20);
/// The longest pause between two attempts.
const RETRY_MAX: Duration = Duration::from_millis(500);

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// JetStream refused the batch (nothing of it stored).
    #[error("JetStream refused the batch: {0}")]
    Refused(String),
    /// A limit of the queues' stream refused the batch (nothing of it stored).
    #[error("a limit of the queues' stream refused the batch: {0}")]
    Full(String),
    /// No answer in time, or the connection failed (the batch may or may not be stored).
    #[error("no answer from JetStream: {0}")]
    NoAnswer(String),
}

/// A message ready to go: its subject, `Nats-Msg-Id` and payload.
struct Outgoing {
    subject: async_nats::Subject,
    id: String,
    payload: Bytes,
}

/// Distinct batch ids: a random prefix per process and a counter.
fn next_batch_id() -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix =
        PREFIX.get_or_init(|| getrandom::u64().unwrap_or_else(|_| std::process::id().into()));
    format!(
        "pb{prefix:016x}{:x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl VhostLink {
    /// Publishes `messages` (each with its cluster queue) as atomic batches of at most
    /// [`MAX_BATCH`], one stream after the other (a batch is stored by one stream: the queues
    /// of a class ([`super::classes`]) are in a stream of their own): [`Stored::Yes`] once
    /// JetStream acknowledged every batch, [`Stored::Full`] when a limit of a stream refused
    /// one, [`Stored::No`] (logged, counted as publish failures) when one was refused
    /// otherwise or not acknowledged within `publish_timeout_ms`. After a failure, the
    /// messages of the streams not tried yet are not published (those of the streams before
    /// stay stored). On a stream without atomic batches, one by one.
    pub async fn publish_atomically(
        &self,
        messages: &[(Arc<RemoteQueue>, Arc<Message>)],
    ) -> Stored {
        let mut by_stream: Vec<Vec<(Arc<RemoteQueue>, Arc<Message>)>> = Vec::new();
        for (queue, message) in messages {
            let stream = &queue.stream().cached_info().config.name;
            let same = |group: &&mut Vec<(Arc<RemoteQueue>, Arc<Message>)>| {
                group[0].0.stream().cached_info().config.name == *stream
            };
            match by_stream.iter_mut().find(same) {
                Some(group) => group.push((queue.clone(), message.clone())),
                None => by_stream.push(vec![(queue.clone(), message.clone())]),
            }
        }
        for group in &by_stream {
            let stored = self.publish_to_one_stream(group).await;
            if stored != Stored::Yes {
                return stored;
            }
        }
        Stored::Yes
    }

    /// [`VhostLink::publish_atomically`] for messages whose queues share one stream.
    async fn publish_to_one_stream(&self, messages: &[(Arc<RemoteQueue>, Arc<Message>)]) -> Stored {
        let Some((first, _)) = messages.first() else {
            return Stored::Yes;
        };
        let stream = first.stream().cached_info().config.name.clone();
        if !first.atomic() || messages.len() == 1 {
            let mut outcome = Stored::Yes;
            for (queue, message) in messages {
                match queue.publish(message).await {
                    Stored::Yes => {}
                    Stored::Full if outcome == Stored::Yes => outcome = Stored::Full,
                    Stored::Full => {}
                    Stored::No => outcome = Stored::No,
                }
            }
            return outcome;
        }
        for chunk in messages.chunks(MAX_BATCH) {
            let outgoing: Vec<Outgoing> = chunk
                .iter()
                .map(|(queue, message)| outgoing(queue, message))
                .collect();
            let timeout = self.config.publish_timeout();
            let result = tokio::time::timeout(timeout, self.batch_until_stored(&outgoing)).await;
            let error = match result {
                Ok(Ok(())) => {
                    self.stats
                        .published
                        .fetch_add(outgoing.len() as u64, Ordering::Relaxed);
                    continue;
                }
                Ok(Err(BatchError::Full(err))) => {
                    self.stats
                        .refused_full
                        .fetch_add(outgoing.len() as u64, Ordering::Relaxed);
                    tracing::debug!(%stream, error = %err, "cluster: a transaction's atomic batch was refused by a limit of the stream");
                    return Stored::Full;
                }
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no acknowledgement within {} ms", timeout.as_millis()),
            };
            self.stats
                .publish_failures
                .fetch_add(outgoing.len() as u64, Ordering::Relaxed);
            tracing::warn!(%stream, messages = outgoing.len(), %error, "cluster: a transaction's atomic batch was not stored");
            return Stored::No;
        }
        Stored::Yes
    }

    /// Sends the batch until JetStream answers its commit, again (a new batch id, the same
    /// message ids) after a failure that passes; the caller bounds the whole.
    async fn batch_until_stored(&self, messages: &[Outgoing]) -> Result<(), BatchError> {
        let mut backoff = RETRY_FIRST;
        loop {
            match self.send_batch(messages).await {
                Ok(()) => return Ok(()),
                Err(BatchError::NoAnswer(err)) => {
                    tracing::debug!(error = %err, "cluster: atomic batch not answered; trying again");
                }
                Err(BatchError::Refused(err)) if passing(&err) => {
                    tracing::debug!(error = %err, "cluster: atomic batch refused for now; trying again");
                }
                Err(err) => return Err(err),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }

    /// One attempt: every message with the batch headers, the last one committing.
    async fn send_batch(&self, messages: &[Outgoing]) -> Result<(), BatchError> {
        let batch_id = next_batch_id();
        let last = messages.len();
        for (index, message) in messages.iter().enumerate() {
            let sequence = index + 1;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, message.id.as_str());
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", sequence.to_string().as_str());
            if sequence == last {
                headers.insert("Nats-Batch-Commit", "1");
            }
            let subject = message.subject.clone();
            let payload = message.payload.clone();
            if sequence == 1 || sequence == last || sequence % ACK_EVERY == 0 {
                use async_nats::client::RequestErrorKind;
                let answer = self
                    .client
                    .request_with_headers(subject, headers, payload)
                    .await
                    .map_err(|err| match err.kind() {
                        // Never passes: the batch cannot be stored.
                        RequestErrorKind::MaxPayloadExceeded | RequestErrorKind::InvalidSubject => {
                            BatchError::Refused(err.to_string())
                        }
                        _ => BatchError::NoAnswer(err.to_string()),
                    })?;
                check_answer(&answer.payload, sequence == last, last)?;
            } else {
                use async_nats::client::PublishErrorKind;
                self.client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|err| match err.kind() {
                        PublishErrorKind::Send => BatchError::NoAnswer(err.to_string()),
                        _ => BatchError::Refused(err.to_string()),
                    })?;
            }
        }
        Ok(())
    }
}

/// The message as it goes into the batch (the payload and id [`RemoteQueue::publish`] gives).
fn outgoing(queue: &RemoteQueue, message: &Message) -> Outgoing {
    let mut id = BytesMut::new();
    message.write_id(&mut id);
    Outgoing {
        subject: queue.subject_for(message).clone(),
        id: String::from_utf8_lossy(&id).into_owned(),
        payload: wire::encode_message(message),
    }
}

/// Checks the server's answer to a batch request: empty (flow control) or, for the commit,
/// the batch's ack with every message counted; an error otherwise.
fn check_answer(payload: &[u8], commit: bool, count: usize) -> Result<(), BatchError> {
    if payload.is_empty() && !commit {
        return Ok(());
    }
    let answer: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|err| BatchError::Refused(format!("unreadable answer: {err}")))?;
    if let Some(error) = answer.get("error") {
        let code = error.get("err_code").and_then(serde_json::Value::as_u64);
        let description = error.get("description").and_then(serde_json::Value::as_str);
        if let (Some(code), Some(description)) = (code, description) {
            if is_limit_error(code, description) {
                return Err(BatchError::Full(error.to_string()));
            }
        }
        return Err(BatchError::Refused(error.to_string()));
    }
    if !commit {
        return Ok(());
    }
    match answer.get("count").and_then(serde_json::Value::as_u64) {
        Some(n) if n == count as u64 => Ok(()),
        _ => Err(BatchError::Refused(format!(
            "the commit's ack does not count {count} messages: {answer}"
        ))),
    }
}

/// Whether a refusal passes by itself (no stream leader during an election; too many batches
/// in flight on the stream).
fn passing(error: &str) -> bool {
    ["no responders", "leader", "too many inflight", "timeout"]
        .iter()
        .any(|hint| error.to_ascii_lowercase().contains(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_are_distinct_and_short() {
        let a = next_batch_id();
        let b = next_batch_id();
        assert_ne!(a, b);
        assert!(
            a.len() <= 64 && a.bytes().all(|c| c.is_ascii_alphanumeric()),
            "{a}"
        );
    }

    #[test]
    fn answers_are_checked() {
        assert!(check_answer(b"", false, 3).is_ok());
        assert!(
            check_answer(b"", true, 3).is_err(),
            "a commit needs its ack"
        );
        let ack = br#"{"stream":"s","seq":9,"batch":"b","count":3}"#;
        assert!(check_answer(ack, true, 3).is_ok());
        assert!(check_answer(ack, true, 4).is_err(), "a miscounted batch");
        let refused = br#"{"error":{"code":400,"err_code":10174,"description":"atomic publish is disabled"}}"#;
        assert!(matches!(
            check_answer(refused, false, 3),
            Err(BatchError::Refused(_))
        ));
        assert!(check_answer(b"not json", true, 1).is_err());
        // A stream limit's refusal is told apart (flow.queue-full, not cluster.unavailable).
        let full = br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages per subject exceeded"}}"#;
        assert!(matches!(
            check_answer(full, true, 3),
            Err(BatchError::Full(_))
        ));
        let disk =
            br#"{"error":{"code":503,"err_code":10077,"description":"no space left on device"}}"#;
        assert!(matches!(
            check_answer(disk, true, 3),
            Err(BatchError::Refused(_))
        ));
    }
}
