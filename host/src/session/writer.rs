//! The connection's writer task: drains the outbox in batches, runs message filters (a
//! subscription's native selector first, then one `filter_batch` per subscription and batch, so
//! a plugin that takes batches is called once for all of them), encodes frames, and writes them
//! with as few syscalls as possible (small frames coalesced into one buffer, large bodies passed
//! as their own `Bytes` in a vectored write, never copied). Sends heart-beats when idle, settles
//! auto-ack queue deliveries as they go to the socket, signals `Outgoing::Drain` once everything
//! before it is written, and closes the socket (FIN after the last frame) on `Outgoing::Close`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::codec::{
    encode_broker_header, encode_frame, encode_with, Command, Escaping, FrameSink, LengthAt,
    Version,
};
use crate::connection_stats::ByteMeter;
use crate::listen::FrameWriter;
use crate::plugin::{FilterOutcome, MessageRef, SubscriptionFilter};
use crate::policy::Policy;
use crate::router::{AckMode, Delivery, Message, Outbox, Outgoing, Subscription};
use crate::text::Decimal;

/// Bodies at least this large are written from their own buffer instead of being copied.
const ZERO_COPY_BODY: usize = 8 * 1024;

/// How the writer behaves for one connection.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The negotiated version: how headers are escaped and whether a MESSAGE carries `ack`.
    pub version: Version,
    /// A heart-beat (an EOL) is written after this long with nothing to send; `None`: never.
    pub heartbeat: Option<Duration>,
    /// A write that takes longer (the peer stopped reading) fails and ends the connection.
    pub write_timeout: Duration,
    /// The connection's registry entry, whose `bytes_out` follows what is written.
    pub connection: Option<Arc<crate::connection_registry::ConnectionInfo>>,
}

/// Why the writer stopped.
#[derive(Debug)]
pub enum WriterExit {
    /// It wrote everything up to `Outgoing::Close` and closed the socket.
    Closed,
    /// The socket failed or stopped taking bytes.
    Failed(std::io::Error),
}

/// Output being assembled: a list of ready chunks plus the small-frame buffer, and where
/// each frame ends when the transport sends a message per frame.
struct OutBuf {
    chunks: Vec<Bytes>,
    current: BytesMut,
    /// Whether frame ends are kept ([`FrameWriter::MESSAGE_PER_FRAME`]).
    per_frame: bool,
    /// Indexes into `chunks` where each frame ends (only with `per_frame`).
    ends: Vec<usize>,
}

impl OutBuf {
    fn seal(&mut self) {
        if !self.current.is_empty() {
            self.chunks.push(self.current.split().freeze());
        }
    }

    /// Marks the end of a frame (if anything was written since the last one).
    fn end_frame(&mut self) {
        if self.per_frame {
            self.seal();
            if self.ends.last().copied().unwrap_or(0) != self.chunks.len() {
                self.ends.push(self.chunks.len());
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.current.is_empty()
    }
}

impl FrameSink for OutBuf {
    fn buf(&mut self) -> &mut BytesMut {
        &mut self.current
    }

    fn body(&mut self, body: &Bytes) {
        if body.len() >= ZERO_COPY_BODY {
            self.seal();
            self.chunks.push(body.clone());
        } else {
            self.current.extend_from_slice(body);
        }
    }
}

/// Runs until `Outgoing::Close` or a socket failure.
pub async fn run<W: FrameWriter>(
    mut socket: W,
    outbox: Arc<Outbox>,
    config: WriterConfig,
    broker: Arc<crate::broker::Broker>,
) -> WriterExit {
    let mut items = Vec::with_capacity(64);
    let mut out = OutBuf {
        chunks: Vec::new(),
        current: BytesMut::with_capacity(16 * 1024),
        per_frame: W::MESSAGE_PER_FRAME,
        ends: Vec::new(),
    };
    let mut settle: Vec<(Arc<Subscription>, u64)> = Vec::new();
    let mut filtered: Vec<FilterOutcome> = Vec::with_capacity(64);
    let mut groups: Vec<Group> = Vec::new();
    let mut draining = false;
    let mut drained = Vec::new();
    let connection = config.connection.clone();
    let mut sent = ByteMeter::new(&broker.stats.connections.bytes_out);
    if let Some(connection) = &connection {
        sent = sent.with_connection(&connection.bytes_out);
    }
    loop {
        items.clear();
        if let crate::router::outbox::Taken::Idle = outbox.take(&mut items, config.heartbeat).await
        {
            out.current.extend_from_slice(b"\n");
            out.end_frame();
        }
        filter_all(&items, &broker.policy, &mut filtered, &mut groups).await;
        let mut close = false;
        for (item, outcome) in items.drain(..).zip(filtered.drain(..)) {
            if close {
                // Deliveries after Close stay unacked in their queue and are redelivered by
                // the session's teardown.
                continue;
            }
            match item {
                Outgoing::Frame(frame) => {
                    encode_frame(&frame, config.version, &mut out.current);
                    out.end_frame();
                }
                // After a drain, deliveries go back to their queues with the subscriptions.
                Outgoing::Delivery(_) if draining => {}
                Outgoing::Delivery(delivery) => {
                    let written = encode_delivery(&delivery, outcome, config.version, &mut out);
                    out.end_frame();
                    if written && delivery.subscription.ack_mode() == AckMode::Auto {
                        note_written(&mut settle, &delivery);
                    }
                }
                Outgoing::Close => close = true,
                Outgoing::Drain(reached) => {
                    draining = true;
                    drained.push(reached);
                }
            }
        }
        // Auto-ack deliveries count as consumed once handed to the socket: settling them
        // before the write means a client that reacts to a MESSAGE (UNSUBSCRIBE, disconnect)
        // can never see it redelivered. Their window still bounds what is in flight.
        for (subscription, seq) in settle.drain(..) {
            subscription.written(seq);
        }
        if !out.is_empty() {
            out.seal();
            let bytes: usize = out.chunks.iter().map(Bytes::len).sum();
            let write = socket.write_frames(&mut out.chunks, &out.ends);
            match tokio::time::timeout(config.write_timeout, write).await {
                Ok(Ok(())) => {
                    out.ends.clear();
                    sent.add(bytes);
                }
                Ok(Err(err)) => return WriterExit::Failed(err),
                Err(_) => {
                    return WriterExit::Failed(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "write timed out: the peer stopped reading",
                    ))
                }
            }
        }
        for reached in drained.drain(..) {
            let _ = reached.send(());
        }
        if close {
            let _ = tokio::time::timeout(config.write_timeout, socket.close()).await;
            return WriterExit::Closed;
        }
    }
}

/// Remembers the highest auto-ack delivery written per subscription.
fn note_written(settle: &mut Vec<(Arc<Subscription>, u64)>, delivery: &Delivery) {
    match settle
        .iter_mut()
        .find(|(s, _)| Arc::ptr_eq(s, &delivery.subscription))
    {
        Some((_, seq)) => *seq = (*seq).max(delivery.seq),
        None => settle.push((delivery.subscription.clone(), delivery.seq)),
    }
}

/// The deliveries of one batch that go through the same filter (one subscription).
struct Group {
    filter: Arc<SubscriptionFilter>,
    /// Indexes into the batch.
    items: Vec<usize>,
}

/// Runs the message filters of every delivery in `items` up to the first `Close`: the
/// subscription's native selector, then, for what it lets through, one `filter_batch` per
/// subscription (a plugin that takes batches is then called once for all of them, which divides
/// its per-call cost); leaves one outcome per item in `outcomes` (`Deliver` for frames and
/// unfiltered deliveries, `Skip` for what a selector declined).
async fn filter_all(
    items: &[Outgoing],
    policy: &Policy,
    outcomes: &mut Vec<FilterOutcome>,
    groups: &mut Vec<Group>,
) {
    outcomes.clear();
    outcomes.resize(items.len(), FilterOutcome::Deliver);
    groups.clear();
    for (i, item) in items.iter().enumerate() {
        let delivery = match item {
            Outgoing::Delivery(delivery) => delivery,
            Outgoing::Close => break,
            Outgoing::Frame(_) | Outgoing::Drain(_) => continue,
        };
        let filters = delivery.subscription.filter();
        if let Some(selector) = filters.selector() {
            if !crate::selector::matches(selector, &delivery.message) {
                outcomes[i] = FilterOutcome::Skip;
                continue;
            }
        }
        let Some(filter) = filters.current(policy).await else {
            continue;
        };
        match groups.iter_mut().find(|g| Arc::ptr_eq(&g.filter, &filter)) {
            Some(group) => group.items.push(i),
            None => groups.push(Group {
                filter,
                items: vec![i],
            }),
        }
    }
    if groups.is_empty() {
        return;
    }
    // Plugin calls: behind a box, so that their code and state stay out of the writer's
    // future, which every delivery runs through.
    let plugins: futures_util::future::BoxFuture<'_, ()> =
        Box::pin(filter_groups(items, outcomes, groups));
    plugins.await;
}

/// The plugin half of [`filter_all`]: one `filter_batch` per group.
async fn filter_groups(
    items: &[Outgoing],
    outcomes: &mut [FilterOutcome],
    groups: &mut Vec<Group>,
) {
    for group in groups.drain(..) {
        let views: Vec<MessageRef<'_>> = group
            .items
            .iter()
            .map(|&i| match &items[i] {
                Outgoing::Delivery(d) => MessageRef {
                    destination: &d.message.destination,
                    headers: &d.message.headers,
                    body: &d.message.body,
                    id: Some((&d.message.id_prefix, d.message.id_seq)),
                },
                _ => unreachable!("groups hold deliveries only"),
            })
            .collect();
        let results = group.filter.filter_batch(&views).await;
        for (&i, outcome) in group.items.iter().zip(results) {
            outcomes[i] = outcome;
        }
    }
}

/// Encodes the MESSAGE as its filters decided (`outcome`); false when they skipped it.
fn encode_delivery(
    delivery: &Delivery,
    outcome: FilterOutcome,
    version: Version,
    out: &mut OutBuf,
) -> bool {
    match outcome {
        FilterOutcome::Deliver => encode_message(delivery, &delivery.message, version, out),
        FilterOutcome::Rewrite(rewritten) => {
            let original = &delivery.message;
            // Only encoded, then dropped: the delivered message holds the charge.
            let mut message = original.copy_as(
                rewritten.destination,
                rewritten.headers,
                original.expires_at,
                |_| Default::default(),
            );
            message.body = rewritten.body;
            encode_message(delivery, &message, version, out);
        }
        FilterOutcome::Failed => {
            delivery.subscription.filter_failed(delivery.seq);
            return false;
        }
        FilterOutcome::Skip => {
            delivery.subscription.decline(delivery.seq);
            return false;
        }
    }
    true
}

/// Encodes one MESSAGE frame: the broker's headers (destination, message-id, subscription,
/// ack, redelivery) first, then the message's own, `content-length` last; a large body is kept
/// by reference.
fn encode_message(delivery: &Delivery, message: &Message, version: Version, out: &mut OutBuf) {
    let subscription = &delivery.subscription;
    let head = |buf: &mut BytesMut, escaping: Escaping| {
        encode_broker_header(buf, b"destination:", &message.destination, escaping);
        buf.extend_from_slice(b"message-id:");
        message.write_id(buf);
        buf.extend_from_slice(b"\n");
        if let Some(id) = subscription.wire_id() {
            encode_broker_header(buf, b"subscription:", id, escaping);
        }
        if version == Version::V1_2 && subscription.ack_mode().needs_ack() {
            buf.extend_from_slice(b"ack:");
            buf.extend_from_slice(Decimal::new(u64::from(subscription.key())).as_bytes());
            buf.extend_from_slice(b".");
            buf.extend_from_slice(Decimal::new(delivery.seq).as_bytes());
            buf.extend_from_slice(b"\n");
        }
        if delivery.redeliveries > 0 {
            buf.extend_from_slice(b"redelivered:true\nredelivery-count:");
            buf.extend_from_slice(Decimal::new(u64::from(delivery.redeliveries)).as_bytes());
            buf.extend_from_slice(b"\n");
        }
        if delivery.first_in_group {
            buf.extend_from_slice(b"JMSXGroupFirstForConsumer:true\n");
        }
    };
    encode_with(
        out,
        Command::Message,
        version,
        LengthAt::Last,
        head,
        &message.headers,
        &message.body,
    );
}
