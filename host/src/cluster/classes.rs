//! Per-queue limits in cluster mode: `[[queues]]` entries with a length limit ("queue classes").
//!
//! JetStream applies limits per stream, and per subject only as one `max_msgs_per_subject` for
//! the whole stream, so the vhost's one queue stream cannot give `/queue/orders.*` a limit of
//! its own. Each `[[queues]]` entry that has `max_length` (or `max_length_bytes` on a pattern
//! without `*`, which names one queue) therefore gets a work-queue stream of its own,
//! `CLUSTER_VHOST_qc_PTOKEN` on `CLUSTER.VHOST.c.PTOKEN.>` (`PTOKEN`: the pattern escaped as a
//! token), made or brought up to date by each edge at start:
//!
//! - `max_length` → `max_msgs_per_subject`: every queue the pattern matches has its own limit
//!   (each queue is one subject, `CLUSTER.VHOST.c.PTOKEN.TOKEN`);
//! - `max_length_bytes` → `max_bytes`, for a pattern without `*` only (a stream has one byte
//!   limit, which a wildcard pattern's queues would share);
//! - `overflow`: `drop-head` (the default with a limit) → discard `old`: the oldest message of
//!   the queue goes; `reject-publish` and `reject-publish-dlx` → discard `new` (per subject):
//!   the SEND is refused with `flow.queue-full`.
//!
//! A queue lives in the stream of the first `[[queues]]` entry whose pattern matches it (the
//! entry that gives it its arguments, as on one node) when that entry is a class, in the vhost's
//! stream otherwise. The number of streams (each a Raft group) is the number of such entries:
//! set by the operator, never by a client. Every edge must have the same `[[queues]]` entries
//! (as the same plugins): an edge without an entry would put the queue's messages in the vhost
//! stream, beside the other edges' ones. An edge that finds a class stream its configuration
//! does not have says so at start ([`unknown_classes`]).

use std::sync::Arc;

use async_nats::jetstream;
use futures_util::StreamExt;

use crate::config::QueuePolicy;
use crate::router::queue_args::ArgOverflow;

use super::config::QueueStreamLimits;
use super::subject::Names;
use super::VhostLink;

/// One `[[queues]]` entry as the cluster places queues: its pattern, and its stream when it
/// is a class.
pub struct Placing {
    /// The entry's pattern (`crate::plugin::glob`).
    pub pattern: String,
    /// Its stream, when the entry has limits a stream holds.
    pub class: Option<Arc<QueueClass>>,
}

/// The stream of one queue class.
pub struct QueueClass {
    /// The entry's pattern.
    pub pattern: String,
    /// The class's work-queue stream.
    pub stream: jetstream::stream::Stream,
    /// Whether the stream takes atomic batches (nats-server 2.12+).
    pub atomic: bool,
}

/// Where one queue's messages live: its stream and subject.
#[derive(Clone)]
pub struct Placement {
    /// The vhost's queue stream, or its class's.
    pub stream: jetstream::stream::Stream,
    /// The queue's subject in it.
    pub subject: String,
    /// Whether that stream takes atomic batches.
    pub atomic: bool,
    /// Whether the queue keeps its messages in priority bands ([`super::bands`]): in the
    /// vhost's stream only (a class stream's per-queue limit is one per subject, and would
    /// count per band). Not for a queue that keeps message groups.
    pub banded: bool,
    /// The number of partitions when the queue keeps message groups ([`super::groups`]): in
    /// the vhost's stream only, as bands.
    pub grouped: Option<u32>,
}

impl VhostLink {
    /// Where queue `destination` lives: in the stream of the first `[[queues]]` entry matching
    /// it when that entry is a class, in the vhost's stream otherwise.
    pub fn placement(&self, destination: &[u8]) -> Placement {
        let class = self
            .placing
            .iter()
            .find(|p| crate::plugin::glob::matches(p.pattern.as_bytes(), destination))
            .and_then(|p| p.class.as_ref());
        match class {
            Some(class) => Placement {
                stream: class.stream.clone(),
                subject: self.names.class_queue_subject(&class.pattern, destination),
                atomic: class.atomic,
                banded: false,
                grouped: None,
            },
            None => Placement {
                stream: self.stream.clone(),
                subject: self.names.queue_subject(destination),
                atomic: self.atomic,
                banded: self.banded.has(destination)
                    && self.grouped.partitions_of(destination).is_none(),
                grouped: self.grouped.partitions_of(destination),
            },
        }
    }
}

/// The stream limits of `[[queues]]` entry `policy`, when it has any a stream holds (see the
/// module docs); `None` otherwise (its queues live in the vhost's stream).
pub fn class_limits(policy: &QueuePolicy) -> Option<QueueStreamLimits> {
    let per_queue = policy.max_length.filter(|&n| n > 0);
    let one_queue = !policy.pattern.contains('*');
    let bytes = policy.max_length_bytes.filter(|&n| n > 0 && one_queue);
    if per_queue.is_none() && bytes.is_none() {
        return None;
    }
    let reject = matches!(
        policy.overflow,
        Some(ArgOverflow::RejectPublish | ArgOverflow::RejectPublishDlx)
    );
    let limit = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    Some(QueueStreamLimits {
        max_messages_per_subject: per_queue.map_or(-1, limit),
        max_messages: -1,
        max_bytes: bytes.map_or(-1, limit),
        discard_new: reject,
        discard_new_per_subject: reject && per_queue.is_some(),
    })
}

/// Most stream names [`unknown_classes`] looks at (an account may hold other applications'
/// streams too).
pub const MAX_STREAMS_LISTED: usize = 10_000;

/// The class streams of the vhost that the NATS servers have and `placing` does not name:
/// made by an edge whose `[[queues]]` differ from this one's. Asked once at start, among the
/// first [`MAX_STREAMS_LISTED`] streams of the account; an error counts as none found (it is
/// logged).
pub async fn unknown_classes(
    jetstream: &jetstream::Context,
    names: &Names,
    placing: &[Placing],
) -> Vec<String> {
    let ours: Vec<String> = placing
        .iter()
        .filter(|p| p.class.is_some())
        .map(|p| names.class_stream(&p.pattern))
        .collect();
    let prefix = names.class_stream("");
    let mut listed = jetstream.stream_names();
    let mut unknown = Vec::new();
    let mut looked_at = 0;
    while let Some(name) = listed.next().await {
        looked_at += 1;
        if looked_at > MAX_STREAMS_LISTED {
            break;
        }
        match name {
            Ok(name) if name.starts_with(&prefix) && !ours.contains(&name) => unknown.push(name),
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(error = %err, "cluster: cannot list the queue class streams");
                break;
            }
        }
    }
    unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(pattern: &str) -> QueuePolicy {
        QueuePolicy {
            pattern: pattern.into(),
            max_length: None,
            max_length_bytes: None,
            overflow: None,
            message_ttl_ms: None,
        }
    }

    #[test]
    fn an_entry_is_a_class_when_a_stream_can_hold_its_limits() {
        assert_eq!(class_limits(&policy("/queue/a.*")), None);
        let ttl_only = QueuePolicy {
            message_ttl_ms: Some(1000),
            ..policy("/queue/a.*")
        };
        assert_eq!(class_limits(&ttl_only), None);
        // A byte limit on a wildcard pattern would be shared by its queues: not a class.
        let shared_bytes = QueuePolicy {
            max_length_bytes: Some(1 << 20),
            ..policy("/queue/a.*")
        };
        assert_eq!(class_limits(&shared_bytes), None);

        let drop_head = QueuePolicy {
            max_length: Some(10),
            ..policy("/queue/a.*")
        };
        assert_eq!(
            class_limits(&drop_head),
            Some(QueueStreamLimits {
                max_messages_per_subject: 10,
                max_messages: -1,
                max_bytes: -1,
                discard_new: false,
                discard_new_per_subject: false,
            })
        );
        let reject = QueuePolicy {
            max_length: Some(10),
            max_length_bytes: Some(4096),
            overflow: Some(ArgOverflow::RejectPublishDlx),
            ..policy("/queue/one")
        };
        assert_eq!(
            class_limits(&reject),
            Some(QueueStreamLimits {
                max_messages_per_subject: 10,
                max_messages: -1,
                max_bytes: 4096,
                discard_new: true,
                discard_new_per_subject: true,
            })
        );
        let bytes_only = QueuePolicy {
            max_length_bytes: Some(4096),
            overflow: Some(ArgOverflow::RejectPublish),
            ..policy("/queue/one")
        };
        let limits = class_limits(&bytes_only).unwrap();
        assert_eq!(
            (
                limits.max_bytes,
                limits.discard_new,
                limits.discard_new_per_subject
            ),
            (4096, true, false)
        );
    }
}
