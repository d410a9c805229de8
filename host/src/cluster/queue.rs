//! A `/queue/` in cluster mode: [`RemoteQueue`] publishes into the vhost's work-queue stream
//! (and reports success only on JetStream's publish ack); [`RemoteConsumer`] is one
//! subscription's share of the queue's durable pull consumer, which every subscription on every
//! edge pulls from, so they compete for its messages.
//!
//! A consumer pulls at most its window of messages (the SUBSCRIBE's prefetch) and pulls again
//! as they are settled: ACK → ack, NACK → handed back, a `client` ACK acks every earlier
//! delivery of the subscription too, an `auto` delivery is acked once written to the socket. A
//! subscription that ends hands back what it still holds. A delivery handed back (or found
//! expired) goes through the redeliver hook or `[dead_letter]` ([`super::dead_letter`]): `nak`
//! (delivered again at once, possibly elsewhere), `nak` with a delay, or moved to its
//! dead-letter queue. An edge that dies holds its messages until JetStream's `ack_wait` gives
//! them to others. Exclusive subscriptions pull only while they hold the queue's lease, and
//! the others only while nobody does ([`super::exclusive`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, message::Acker, AckKind};
use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::budget::MemoryBudget;
use crate::plugin::RedeliverCause;
use crate::router::{
    AckMode, AckTarget, ConsumerOptions, Delivery, Message, NotPending, Outgoing, Queue,
    Subscription,
};

use super::bands::{self, Band};
use super::dead_letter::Returned;
use super::durable::DurableSource;
use super::exclusive::{ExclusiveGate, ExclusiveHold, CHECK_EVERY, STANDBY_POLL};
use super::groups::{self, GroupView, InFlight, Membership};
use super::parts::{self, Parts};
use super::priority;
use super::pull_request::{PullRequest, Wait};
use super::wire;
use super::VhostLink;

/// How long one pull waits on the server for messages before it is renewed.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// How long a consumer waits before trying again after NATS failed it (and the longest pause
/// between two attempts of a publish).
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// The first pause before a publish is tried again (doubling up to [`RETRY_AFTER`]).
const RETRY_FIRST: Duration = Duration::from_millis(20);
/// Longest a priority queue's subscription waits for JetStream to confirm the messages it
/// handed back before it asks the bands again.
const RETURN_WAIT: Duration = Duration::from_secs(1);
/// How long the console's move waits for a cluster queue's messages.
const MOVE_WAIT: Duration = Duration::from_millis(500);
/// A delivery the message plugins declined comes back after this long (to another consumer,
/// or this one once the filter changed), so a message nobody wants does not spin.
const DECLINED_DELAY: Duration = Duration::from_secs(1);

/// The cluster side of one queue: where its SENDs go.
pub struct RemoteQueue {
    pub(super) link: Arc<VhostLink>,
    subject: async_nats::Subject,
    /// A priority queue's band subjects, in [`bands::ORDER`] (see [`super::bands`]).
    bands: Option<[async_nats::Subject; 3]>,
    /// A grouped queue's partition subjects, by partition, and this edge's view of who holds
    /// them (see [`super::groups`]).
    groups: Option<(Vec<async_nats::Subject>, Arc<GroupView>)>,
    /// The stream holding the queue's messages: the vhost's, or its class's
    /// ([`super::classes`]).
    stream: jetstream::stream::Stream,
    /// Whether that stream takes atomic batches.
    atomic: bool,
    consumer: String,
    /// A durable topic subscription's consumer instead of the queue's (never published to).
    durable: Option<Arc<DurableSource>>,
    /// The queue's exclusive-consumer lease (none for a durable topic subscription).
    exclusive: Option<Arc<ExclusiveGate>>,
    /// Deliveries handed back that wait for the redeliver hook's verdict, by token (see
    /// [`super::dead_letter`]; bounded by the vhost's outlet).
    pub(super) deciding: Mutex<HashMap<u64, Returned>>,
    pub(super) next_token: AtomicU64,
}

impl std::fmt::Debug for RemoteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteQueue")
            .field("subject", &self.subject)
            .finish()
    }
}

impl RemoteQueue {
    pub(super) fn new(link: Arc<VhostLink>, destination: &Bytes) -> RemoteQueue {
        let consumer = link.names.queue_consumer(destination);
        let place = link.placement(destination);
        RemoteQueue {
            bands: place
                .banded
                .then(|| bands::ORDER.map(|band| band.subject(&place.subject).into())),
            groups: place.grouped.map(|partitions| {
                let subjects = (0..partitions)
                    .map(|partition| groups::subject(&place.subject, partition).into())
                    .collect();
                (subjects, Arc::new(GroupView::default()))
            }),
            subject: place.subject.into(),
            stream: place.stream,
            atomic: place.atomic,
            exclusive: Some(Arc::new(ExclusiveGate::new(&consumer))),
            consumer,
            link,
            durable: None,
            deciding: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(0),
        }
    }

    /// The side of a durable topic subscription claimed as `source` (see [`super::durable`]):
    /// its subscriber pulls from the subscription's own consumer of the topic stream.
    pub(super) fn for_durable(link: Arc<VhostLink>, source: Arc<DurableSource>) -> RemoteQueue {
        RemoteQueue {
            subject: source.subject().to_string().into(),
            bands: None,
            groups: None,
            // (Never published to, purged or browsed: its consumer is the source's.)
            stream: link.stream.clone(),
            atomic: false,
            consumer: source.name().to_string(),
            link,
            durable: Some(source),
            exclusive: None,
            deciding: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(0),
        }
    }

    /// A durable topic subscription's claim, for one.
    pub fn durable(&self) -> Option<&Arc<DurableSource>> {
        self.durable.as_ref()
    }

    /// The queue's subject (a priority queue's normal band).
    pub(super) fn subject(&self) -> &async_nats::Subject {
        &self.subject
    }

    /// The subject `message` is published to: the queue's, a priority queue's band of the
    /// message's priority, or a grouped queue's partition of the message's group.
    pub(super) fn subject_for(&self, message: &Message) -> &async_nats::Subject {
        if let (Some((partitions, _)), Some(group)) = (&self.groups, &message.props.group) {
            let count = u32::try_from(partitions.len()).unwrap_or(1);
            return &partitions[groups::partition_of(&group.id, count) as usize];
        }
        match &self.bands {
            Some(subjects) => &subjects[Band::of(message.props.priority).index()],
            None => &self.subject,
        }
    }

    /// The queue's consumers and their subjects, in the order their messages are delivered:
    /// the queue's one, a priority queue's bands', or a grouped queue's one and then its
    /// partitions' (partition `P` at index `1 + P`).
    pub(super) fn parts(&self) -> Vec<(String, String)> {
        let own = (self.consumer.clone(), self.subject.to_string());
        if let Some((partitions, _)) = &self.groups {
            let partitions = partitions.iter().enumerate().map(|(partition, subject)| {
                let partition = partition as u32;
                (
                    groups::consumer(&self.consumer, partition),
                    subject.to_string(),
                )
            });
            return std::iter::once(own).chain(partitions).collect();
        }
        match &self.bands {
            Some(subjects) => bands::ORDER
                .iter()
                .zip(subjects)
                .map(|(band, subject)| (band.consumer(&self.consumer), subject.to_string()))
                .collect(),
            None => vec![own],
        }
    }

    /// The stream holding the queue's messages.
    pub(super) fn stream(&self) -> &jetstream::stream::Stream {
        &self.stream
    }

    /// Whether that stream takes atomic batches.
    pub(super) fn atomic(&self) -> bool {
        self.atomic
    }

    /// Its vhost's link.
    pub fn link(&self) -> &Arc<VhostLink> {
        &self.link
    }

    /// Publishes `message` into the queue's stream: [`Stored::Yes`] once JetStream
    /// acknowledged it (stored on a majority of the replicas); [`Stored::Full`] when a limit of
    /// the stream refused it; [`Stored::No`] when it was not acknowledged within
    /// `publish_timeout_ms` or refused otherwise (logged with the reason).
    pub async fn publish(&self, message: &Message) -> Stored {
        self.publish_as(message, &nats_message_id(message)).await
    }

    /// [`publish`](Self::publish) with `Nats-Msg-Id` `id` (a dead-letter copy keeps the
    /// original's `message-id` but must not be taken for the original by JetStream's
    /// duplicate check).
    pub async fn publish_as(&self, message: &Message, id: &str) -> Stored {
        let payload = wire::encode_message(message);
        let headers = id_headers(id);
        let timeout = self.link.config.publish_timeout();
        let stats = &self.link.stats;
        let subject = self.subject_for(message);
        match tokio::time::timeout(
            timeout,
            self.publish_until_stored(subject, headers, payload),
        )
        .await
        {
            Ok(Ok(())) => {
                stats.published.fetch_add(1, Ordering::Relaxed);
                Stored::Yes
            }
            Ok(Err(err)) if is_limit_refusal(&err) => {
                stats.refused_full.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(subject = %self.subject, error = %err, "cluster: the queues' stream is at a limit; message refused");
                Stored::Full
            }
            Ok(Err(err)) => {
                stats.publish_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = %self.subject, error = %err, "cluster: JetStream refused a message");
                Stored::No
            }
            Err(_) => {
                stats.publish_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = %self.subject, timeout_ms = timeout.as_millis() as u64, "cluster: no publish acknowledgement in time");
                Stored::No
            }
        }
    }

    /// Sends `message` into the queue's stream without waiting for JetStream's acknowledgement:
    /// the future that resolves with it (within `publish_timeout_ms`), for
    /// [`super::pipeline::PublishPipeline`]. An error: the message was not sent (the client's
    /// queue to NATS stayed full, or NATS can never take it).
    pub(super) async fn start_publish(
        &self,
        message: &Message,
    ) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
        let headers = id_headers(&nats_message_id(message));
        self.link
            .jetstream
            .publish_with_headers(
                self.subject_for(message).clone(),
                headers,
                wire::encode_message(message),
            )
            .await
    }

    /// Publishes until JetStream acknowledges, trying again (same `Nats-Msg-Id`, so a message
    /// stored by an attempt whose ack was lost is stored once) while the failure is one that
    /// passes: no stream leader during an election, a reconnect, a full ack window. The caller
    /// bounds the whole by `publish_timeout_ms`.
    async fn publish_until_stored(
        &self,
        subject: &async_nats::Subject,
        headers: async_nats::HeaderMap,
        payload: Bytes,
    ) -> Result<(), jetstream::context::PublishError> {
        use jetstream::context::PublishErrorKind as Kind;
        let mut backoff = RETRY_FIRST;
        loop {
            let attempt = async {
                self.link
                    .jetstream
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                    .await?
                    .await
            };
            match attempt.await {
                Ok(_ack) => return Ok(()),
                Err(err) if is_limit_refusal(&err) => return Err(err),
                Err(err)
                    if matches!(
                        err.kind(),
                        Kind::StreamNotFound
                            | Kind::TimedOut
                            | Kind::BrokenPipe
                            | Kind::MaxAckPending
                            | Kind::Other
                    ) =>
                {
                    tracing::debug!(%subject, error = %err, "cluster: publish not acknowledged; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_AFTER);
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Removes every message JetStream holds for this queue (ready ones, and those out with
    /// consumers on any edge, whose ACKs then find nothing): how many. Refused for a durable
    /// topic subscription (its messages are the topic stream's, shared with the others).
    pub async fn purge(&self) -> Result<u64, String> {
        if self.durable.is_some() {
            return Err("a durable subscription's messages are not purged this way".into());
        }
        let purge = async {
            let mut purged = 0;
            for (_, subject) in self.parts() {
                purged += self.stream.purge().filter(subject).await?.purged;
            }
            Ok::<u64, jetstream::stream::PurgeError>(purged)
        };
        match tokio::time::timeout(self.link.config.publish_timeout(), purge).await {
            Ok(Ok(purged)) => Ok(purged),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!(
                "no answer from JetStream within {} ms",
                self.link.config.publish_timeout_ms
            )),
        }
    }

    /// Takes up to `max` messages no consumer on any edge was given yet, oldest first, for the
    /// console's move, which takes them a few at a time (at the lowest priority level, so a
    /// waiting subscriber comes first):
    /// each stays in JetStream until [`Moving::done`] acknowledges it, and comes back with
    /// [`Moving::put_back`] (or after `ack_wait_ms` when neither happens). Messages are
    /// charged to `budget`.
    pub async fn take_for_move(
        &self,
        max: usize,
        budget: &Arc<MemoryBudget>,
    ) -> Result<Vec<Moving>, String> {
        if self.durable.is_some() {
            return Err("a durable subscription's messages are not moved this way".into());
        }
        let link = &self.link;
        let timeout = link.config.publish_timeout();
        // A priority queue's bands are each asked without waiting, highest first.
        let wait = match self.bands {
            Some(_) => Wait::No,
            None => Wait::Up(MOVE_WAIT),
        };
        let mut taken = Vec::new();
        for (name, subject) in self.parts() {
            if taken.len() >= max {
                break;
            }
            let consumer =
                tokio::time::timeout(timeout, queue_consumer(link, &self.stream, &name, &subject))
                    .await
                    .map_err(|_| {
                        format!("no answer from JetStream within {} ms", timeout.as_millis())
                    })?
                    .map_err(|err| err.to_string())?;
            let want = max - taken.len();
            let mut pull = start_pull(link, &consumer, want, wait, Some(priority::LOWEST)).await?;
            while let Some(next) = pull.next().await {
                let pulled = match next {
                    Ok(pulled) => pulled,
                    // What was taken is moved; the rest stays for the next chunk.
                    Err(_) if !taken.is_empty() => break,
                    Err(err) => return Err(err),
                };
                let stream_seq = pulled.info().map(|info| info.stream_sequence).unwrap_or(0);
                let (pulled, acker) = pulled.split();
                match wire::decode(pulled.payload) {
                    Ok(parts) => taken.push(Moving {
                        message: Arc::new(wire::into_message(parts, budget)),
                        acker,
                        stream_seq,
                    }),
                    Err(_) => settle_later(vec![(acker, AckKind::Term)]),
                }
            }
        }
        Ok(taken)
    }

    /// A consumer of this queue (`queue` is its router side) for one subscription (started
    /// by [`RemoteConsumer::start`]), with its consumer priority and exclusivity (`options`).
    pub fn consumer(
        &self,
        queue: Arc<Queue>,
        ack_mode: AckMode,
        window: u32,
        options: ConsumerOptions,
    ) -> Arc<RemoteConsumer> {
        Arc::new(RemoteConsumer {
            link: self.link.clone(),
            stream: self.stream.clone(),
            queue,
            name: self.consumer.clone(),
            parts: self.parts(),
            ack_mode,
            window: window.max(1) as usize,
            held: Mutex::new(VecDeque::new()),
            next_seq: AtomicU64::new(0),
            room: Notify::new(),
            stopped: AtomicBool::new(false),
            started: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            stop: Notify::new(),
            durable: self.durable.clone(),
            gate: self.exclusive.clone(),
            exclusive: options.exclusive,
            hold: Mutex::new(None),
            // A durable topic subscription has its consumer to itself.
            level: self
                .durable
                .is_none()
                .then(|| priority::level(options.priority)),
            returning: Default::default(),
            failed_pull: AtomicBool::new(false),
            groups: self.groups.as_ref().map(|(_, view)| view.clone()),
            membership: Mutex::new(None),
            groups_seen: Mutex::new(std::collections::HashSet::new()),
        })
    }
}

/// A message taken out of a cluster queue by the console's move, still in JetStream.
pub struct Moving {
    /// The message.
    pub message: Arc<Message>,
    acker: Acker,
    stream_seq: u64,
}

impl Moving {
    /// Publishes `copy` (of this message) into the cluster queue `target` under a
    /// `Nats-Msg-Id` of its own (the copy keeps the `message-id`, which JetStream would take
    /// for the original's): whether JetStream stored it.
    pub async fn publish_copy(&self, target: &RemoteQueue, copy: &Message) -> bool {
        let id = super::dead_letter::moved_id("move", self.stream_seq, &self.message);
        target.publish_as(copy, &id).await == Stored::Yes
    }

    /// It reached its new queue: acknowledged (removed from this one).
    pub fn done(self) {
        settle_later(vec![(self.acker, AckKind::Ack)]);
    }

    /// It stays: handed back, delivered again at once.
    pub fn put_back(self) {
        settle_later(vec![(self.acker, AckKind::Nak(None))]);
    }

    /// It stays, handed back only once the move is over (so that the move does not take it
    /// again); its message is let go meanwhile.
    pub fn defer(self) -> Deferred {
        Deferred(self.acker)
    }
}

/// A message a move leaves where it is, handed back at [`Deferred::put_back`].
pub struct Deferred(Acker);

impl Deferred {
    /// Handed back: delivered again at once.
    pub fn put_back(self) {
        settle_later(vec![(self.0, AckKind::Nak(None))]);
    }
}

/// What became of a publish into a queue's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// JetStream stored it, on a majority of the stream's replicas.
    Yes,
    /// A limit of the queues' stream refused it (`[cluster] queue_max_*` with
    /// `queue_overflow = "reject-publish"`).
    Full,
    /// Not acknowledged within `publish_timeout_ms`, or refused for another reason.
    No,
}

/// Whether JetStream refused a publish because the stream is at one of its limits (see
/// [`is_limit_error`]). Never passes by retrying at once.
pub(super) fn is_limit_refusal(err: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|api| is_limit_error(api.error_code().0, &api.to_string()))
}

/// Whether a JetStream API error (`err_code`, `description`) is a stream limit's refusal
/// (maximum messages, bytes, or messages per subject, with the discard policy `new`): the
/// server's "stream store failed" error with such a description.
pub(super) fn is_limit_error(err_code: u64, description: &str) -> bool {
    err_code == jetstream::ErrorCode::STREAM_STORE_FAILED.0 && description.contains("maximum")
}

/// The `Nats-Msg-Id` of `message`: its `message-id`, so JetStream stores a retried publish once.
fn nats_message_id(message: &Message) -> String {
    let mut id = BytesMut::new();
    message.write_id(&mut id);
    String::from_utf8_lossy(&id).into_owned()
}

/// Publish headers carrying `Nats-Msg-Id` `id`.
fn id_headers(id: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    headers
}

/// A message delivered to the subscription and not settled yet.
struct Held {
    seq: u64,
    message: Arc<Message>,
    acker: Acker,
    /// JetStream's delivery count.
    deliveries: u32,
    /// Its sequence in the stream (0: not known).
    stream_seq: u64,
    /// A grouped queue's partition counts it until it is settled.
    in_flight: Option<InFlight>,
}

impl Held {
    fn returned(self, returning: Option<bands::ReturningGuard>) -> Returned {
        Returned {
            acker: self.acker,
            message: self.message,
            deliveries: self.deliveries,
            stream_seq: self.stream_seq,
            returning,
            in_flight: self.in_flight,
        }
    }
}

/// One subscription's pull from a queue's shared durable consumer.
pub struct RemoteConsumer {
    link: Arc<VhostLink>,
    /// The stream of the queue's consumer.
    stream: jetstream::stream::Stream,
    /// The queue's router side (its dead-letter policy and redeliver-hook outlet).
    queue: Arc<Queue>,
    /// The durable consumer's name (the queue's token).
    name: String,
    /// The queue's consumers and their filter subjects, in the order their messages go out:
    /// the queue's one, or a priority queue's bands' ([`RemoteQueue::parts`]).
    parts: Vec<(String, String)>,
    ack_mode: AckMode,
    window: usize,
    /// Deliveries not settled yet, in delivery order (at most `window`).
    held: Mutex<VecDeque<Held>>,
    next_seq: AtomicU64,
    /// Wakes the pull loop when deliveries are settled.
    room: Notify,
    stopped: AtomicBool,
    /// Whether its pull task was started (it finishes the subscription once stopped).
    started: AtomicBool,
    /// Whether the subscription was finished (see `RemoteConsumer::finish`).
    finished: AtomicBool,
    /// Wakes the pull loop when the subscription ends.
    stop: Notify,
    /// A durable topic subscription's claim: pulled from its consumer, released at stop.
    durable: Option<Arc<DurableSource>>,
    /// The queue's exclusive-consumer lease, and whether this subscription is exclusive.
    gate: Option<Arc<ExclusiveGate>>,
    exclusive: bool,
    /// An exclusive subscription's hold of the queue while it is the active one.
    hold: Mutex<Option<ExclusiveHold>>,
    /// The JetStream priority level of its pulls (a queue's, not a durable subscription's).
    level: Option<usize>,
    /// A priority queue's deliveries handed back and not yet confirmed back in JetStream.
    returning: Arc<bands::Returning>,
    /// Set when the server refused or ended a pull with an error (see `pull`; a band or
    /// partition whose waiting pull failed has its own consumer read again, see `pull_parts`).
    failed_pull: AtomicBool,
    /// A grouped queue's view of its members and partitions ([`super::groups`]).
    groups: Option<Arc<GroupView>>,
    /// This subscription's membership of a grouped queue (not for an exclusive one), once
    /// its pull task joined.
    membership: Mutex<Option<Arc<Membership>>>,
    /// The groups it was given a message of, by their ids' hashes (for
    /// `JMSXGroupFirstForConsumer`; at most [`MAX_GROUPS_SEEN`], forgotten all at once
    /// beyond: 8 bytes each).
    groups_seen: Mutex<std::collections::HashSet<u64>>,
}

/// Most groups a subscription remembers having been given (see `groups_seen`).
const MAX_GROUPS_SEEN: usize = 1024;
/// Numbers the subscriptions of this edge that join a grouped queue (with the edge's id: a
/// member id).
static NEXT_MEMBER: AtomicU64 = AtomicU64::new(1);

impl std::fmt::Debug for RemoteConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConsumer")
            .field("name", &self.name)
            .field("window", &self.window)
            .finish()
    }
}

impl RemoteConsumer {
    /// Starts pulling for `subscription` (held weakly: the pull loop ends with it, or at
    /// [`stop`](Self::stop)); messages are charged to `budget`.
    pub fn start(self: &Arc<Self>, subscription: Weak<Subscription>, budget: Arc<MemoryBudget>) {
        self.started.store(true, Ordering::Release);
        let consumer = self.clone();
        tokio::spawn(async move {
            consumer.clone().pull(subscription, budget).await;
            consumer.finish();
        });
    }

    /// The subscription ended: stop pulling and hand what it holds back to the queue (nak:
    /// delivered again at once, to whichever consumer pulls next). Done by the pull task once
    /// it left its pull (so that nothing handed back goes to that pull again), or here when
    /// none was started.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.stop.notify_one();
        if !self.started.load(Ordering::Acquire) {
            self.finish();
        }
    }

    /// What ends a subscription, once: its messages handed back, then its durable
    /// subscription's or exclusive lease given up (the next active consumer gets those
    /// messages first).
    fn finish(&self) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let held: Vec<Held> = self.lock().drain(..).collect();
        self.hand_back(held, RedeliverCause::ConsumerGone, &[]);
        if let Some(durable) = &self.durable {
            durable.detach();
        }
        self.hold().take();
        if let Some(membership) = self.membership().take() {
            // Its partitions go once what it handed back is in them again (bounded), so the
            // next holder gets those messages before the later ones.
            let returning = self.returning.clone();
            tokio::spawn(async move {
                returning.settled(RETURN_WAIT).await;
                membership.leave();
            });
        }
    }

    fn membership(&self) -> std::sync::MutexGuard<'_, Option<Arc<Membership>>> {
        self.membership.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the grouped queue's members (see [`super::groups`]); `None` when the
    /// subscription ended first.
    async fn join_groups(&self, view: &Arc<GroupView>) -> Option<Arc<Membership>> {
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return None;
            }
            match self.link.lease_bucket().await {
                Ok(leases) => {
                    let member = format!(
                        "{}-{}",
                        self.link.edge_id(),
                        NEXT_MEMBER.fetch_add(1, Ordering::Relaxed)
                    );
                    let partitions = u32::try_from(self.parts.len() - 1).unwrap_or(1);
                    let membership =
                        Membership::join(view.clone(), leases, &self.name, member, partitions);
                    *self.membership() = Some(membership.clone());
                    return Some(membership);
                }
                Err(err) => {
                    tracing::warn!(consumer = %self.name, error = %err, "cluster: cannot join the queue's message groups; retrying");
                    if self.pause(RETRY_AFTER).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Hands `held` back to the queue for `cause`: redelivered, delayed or dead-lettered as
    /// the redeliver hook or the `[dead_letter]` policy says (see [`super::dead_letter`]).
    fn hand_back(&self, held: Vec<Held>, cause: RedeliverCause, nack_headers: &[(Bytes, Bytes)]) {
        self.count(held.len(), AckKind::Nak(None));
        let Some(remote) = self.queue.remote() else {
            return settle_later(with_kind(held, AckKind::Nak(None)));
        };
        for held in held {
            let returned = held.returned(self.returning_guard());
            remote.hand_back(&self.queue, returned, cause, nack_headers);
        }
    }

    /// For a priority queue's subscription, one more delivery on its way back (see
    /// [`bands::Returning`]).
    fn returning_guard(&self) -> Option<bands::ReturningGuard> {
        (self.parts.len() > 1).then(|| self.returning.guard())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn position(held: &VecDeque<Held>, target: AckTarget<'_>) -> Option<usize> {
        match target {
            AckTarget::Seq(seq) => held.iter().position(|h| h.seq == seq),
            AckTarget::MessageId(id) => held.iter().position(|h| h.message.has_id(id)),
        }
    }

    /// Whether `target` names a delivery not settled yet.
    pub fn check(&self, target: AckTarget<'_>) -> Result<(), NotPending> {
        Self::position(&self.lock(), target)
            .map(|_| ())
            .ok_or(NotPending)
    }

    /// ACK (`requeue == false`: ack) or NACK (handed back) of `target`, and in `client` mode
    /// of every earlier delivery.
    pub fn settle(&self, target: AckTarget<'_>, requeue: bool) -> Result<(), NotPending> {
        self.nack_or_ack(target, requeue, &[])
    }

    /// NACK of `target` (and in `client` mode of every earlier delivery), with the NACK
    /// frame's headers for the redeliver hook.
    pub fn nack(
        &self,
        target: AckTarget<'_>,
        headers: &[(Bytes, Bytes)],
    ) -> Result<(), NotPending> {
        self.nack_or_ack(target, true, headers)
    }

    fn nack_or_ack(
        &self,
        target: AckTarget<'_>,
        requeue: bool,
        nack_headers: &[(Bytes, Bytes)],
    ) -> Result<(), NotPending> {
        let settled: Vec<Held> = {
            let mut held = self.lock();
            let index = Self::position(&held, target).ok_or(NotPending)?;
            if self.ack_mode == AckMode::Client {
                held.drain(..=index).collect()
            } else {
                held.remove(index).into_iter().collect()
            }
        };
        if requeue {
            self.hand_back(settled, RedeliverCause::Nacked, nack_headers);
        } else {
            self.count(settled.len(), AckKind::Ack);
            settle_later(with_kind(settled, AckKind::Ack));
        }
        self.room.notify_one();
        Ok(())
    }

    /// `auto` deliveries up to `seq` were written to the socket: acked.
    pub fn written(&self, up_to_seq: u64) {
        let settled: Vec<Held> = {
            let mut held = self.lock();
            let end = held.iter().take_while(|h| h.seq <= up_to_seq).count();
            held.drain(..end).collect()
        };
        if !settled.is_empty() {
            self.count(settled.len(), AckKind::Ack);
            settle_later(with_kind(settled, AckKind::Ack));
            self.room.notify_one();
        }
    }

    /// The message plugins declined delivery `seq` (or failed on it): it goes back to the
    /// queue, offered again after a short delay.
    pub fn decline(&self, seq: u64) {
        let taken: Vec<Held> = {
            let mut held = self.lock();
            match held.iter().position(|h| h.seq == seq) {
                Some(index) => held.remove(index).into_iter().collect(),
                None => return,
            }
        };
        self.count(taken.len(), AckKind::Nak(None));
        settle_later(with_kind(taken, AckKind::Nak(Some(DECLINED_DELAY))));
        self.room.notify_one();
    }

    /// Counts `n` settlements of `kind`.
    fn count(&self, n: usize, kind: AckKind) {
        let stats = &self.link.stats;
        let counter = match kind {
            AckKind::Ack => &stats.acked,
            _ => &stats.nacked,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    async fn pull(self: Arc<Self>, subscription: Weak<Subscription>, budget: Arc<MemoryBudget>) {
        let Some(mut consumers) = self.consumers().await else {
            return;
        };
        // A subscription that is not exclusive leaves its pull when an exclusive one takes
        // the queue (here or on another edge).
        let taken = match (&self.gate, self.exclusive) {
            (Some(gate), false) => Some(gate.taken_notifier(&self.link)),
            _ => None,
        };
        // A grouped queue's subscription pulls the partitions it holds (an exclusive one all).
        let membership = match (&self.groups, self.exclusive) {
            (Some(view), false) => match self.join_groups(view).await {
                Some(membership) => Some(membership),
                None => return,
            },
            _ => None,
        };
        let mut rounds: usize = 0;
        let mut refreshed = std::time::Instant::now();
        loop {
            // A pull the server refused: the consumers are read again (at most every
            // REFRESH_AFTER), in case one is not what this subscription took it for.
            if self.failed_pull.swap(false, Ordering::AcqRel)
                && refreshed.elapsed() >= REFRESH_AFTER
            {
                refreshed = std::time::Instant::now();
                match self.consumers().await {
                    Some(fresh) => consumers = fresh,
                    None => return,
                }
            }
            let Some(want) = self.wait_for_room().await else {
                return;
            };
            // Made before the lease is looked at: a take from then on is not missed.
            let notified = taken.as_ref().map(|taken| taken.notified());
            tokio::pin!(notified);
            if let Some(gate) = &self.gate {
                if !self.may_pull(gate).await {
                    if self
                        .pause(if self.exclusive {
                            STANDBY_POLL
                        } else {
                            CHECK_EVERY
                        })
                        .await
                    {
                        return;
                    }
                    continue;
                }
            }
            let round = Round {
                taken: notified.as_mut(),
                subscription: &subscription,
                budget: &budget,
            };
            let stopped = match (&membership, &consumers[..]) {
                (None, [consumer]) => self.pull_one(consumer, want, round).await,
                (Some(membership), _) => {
                    // The queue's own consumer and each partition held, each round starting
                    // with another, so that a backlog of one does not hold the others up.
                    let mut order: Vec<usize> = std::iter::once(0)
                        .chain(
                            membership
                                .pulling()
                                .into_iter()
                                .map(|partition| 1 + partition as usize),
                        )
                        .filter(|part| *part < consumers.len())
                        .collect();
                    rounds = rounds.wrapping_add(1);
                    let start = rounds % order.len();
                    order.rotate_left(start);
                    self.pull_parts(&mut consumers, order, Some(membership), want, round)
                        .await
                }
                // A priority queue's bands, highest first.
                (None, bands) => {
                    let order = (0..bands.len()).collect();
                    self.pull_parts(&mut consumers, order, None, want, round)
                        .await
                }
            };
            if stopped {
                return;
            }
        }
    }

    /// One pull of up to `want` messages from `consumer`, waiting up to [`PULL_WAIT`]: true
    /// when the subscription ended meanwhile.
    async fn pull_one(
        &self,
        consumer: &QueueConsumer,
        want: usize,
        mut round: Round<'_, '_>,
    ) -> bool {
        let pull = start_pull(&self.link, consumer, want, Wait::Up(PULL_WAIT), self.level).await;
        let mut batch = match pull {
            Ok(batch) => batch,
            Err(err) => {
                tracing::debug!(consumer = %self.name, error = %err, "cluster: pull failed; retrying");
                return self.pause(RETRY_AFTER).await;
            }
        };
        loop {
            let next = tokio::select! {
                next = batch.next() => next,
                _ = self.stop.notified() => {
                    self.stop.notify_one();
                    self.leave_pulls(vec![batch], None).await;
                    return true;
                }
                _ = round.taken() => {
                    self.leave_pulls(vec![batch], None).await;
                    return false;
                }
            };
            match next {
                Some(Ok(message)) => self.deliver(message, round.subscription, round.budget),
                Some(Err(err)) => {
                    // (A server that keeps ending pulls at once is not asked in a loop.)
                    tracing::debug!(consumer = %self.name, %err, "cluster: pull ended early");
                    self.failed_pull.store(true, Ordering::Release);
                    return self.pause(RETRY_AFTER).await;
                }
                None => {
                    // (Over; or the server did not end it in time: then it is left.)
                    self.leave_pulls(vec![batch], None).await;
                    return false;
                }
            }
        }
    }

    /// Asks each of `parts`, in that order, for what it holds now (JetStream's `no_wait`), up
    /// to `want` messages together, and delivers them.
    async fn sweep(
        &self,
        parts: &[&QueueConsumer],
        mut want: usize,
        round: &Round<'_, '_>,
    ) -> Swept {
        for consumer in parts {
            if want == 0 {
                break;
            }
            let mut pull = match start_pull(&self.link, consumer, want, Wait::No, self.level).await
            {
                Ok(pull) => pull,
                Err(err) => {
                    tracing::debug!(consumer = %self.name, error = %err, "cluster: pull failed; retrying");
                    return Swept::Failed;
                }
            };
            loop {
                let next = tokio::select! {
                    next = pull.next() => next,
                    _ = self.stop.notified() => {
                        self.stop.notify_one();
                        self.leave_pulls(vec![pull], None).await;
                        return Swept::Stopped;
                    }
                };
                match next {
                    Some(Ok(message)) => {
                        self.deliver(message, round.subscription, round.budget);
                        want = want.saturating_sub(1);
                    }
                    Some(Err(err)) => {
                        // (At `max_ack_pending`, say: the next part may still have some.)
                        tracing::debug!(consumer = %self.name, %err, "cluster: a band's pull ended early");
                        self.failed_pull.store(true, Ordering::Release);
                        break;
                    }
                    None => {
                        // (Over; or the server did not end it in time: then it is left.)
                        self.leave_pulls(vec![pull], Some(round)).await;
                        break;
                    }
                }
            }
        }
        Swept::Room(want)
    }

    /// One round of a subscription that pulls several parts of its queue (`consumers`): a
    /// priority queue's bands, highest first ([`super::bands`]), or a grouped queue's own
    /// consumer and partitions ([`super::groups`]; `membership` says which partitions this
    /// subscription holds). `order` lists the parts to pull, in the order they are served.
    ///
    /// First what waits: each part asked without waiting, in that order, for what room the
    /// window has. Then one waiting pull of one message on each part, asked again once it
    /// delivered (after taking what else waits there, without waiting), while the window has
    /// room. No pull is left because another delivered: a message brought while the window is
    /// full is parked, and delivered first in its part's turn once the window has room (see
    /// [`super::parts`]). A part whose pull failed is asked again after [`RETRY_AFTER`], its
    /// consumer read again first (at most every [`REFRESH_AFTER`]: one that is not what the
    /// subscription took it for refuses its pulls). A
    /// partition given up is not asked again, and its pull ends by itself (with a message, or
    /// its time) before its lease goes: the pull counts as one of the partition's deliveries
    /// not settled. An exclusive subscription's round ends once its hold of the queue is no
    /// longer safe for one more pull. True when the subscription ended meanwhile.
    async fn pull_parts(
        &self,
        consumers: &mut [QueueConsumer],
        order: Vec<usize>,
        membership: Option<&Membership>,
        want: usize,
        mut round: Round<'_, '_>,
    ) -> bool {
        // What this subscription handed back is in its part again before the parts are asked.
        self.returning.settled(RETURN_WAIT).await;
        let swept: Vec<&QueueConsumer> = order.iter().map(|part| &consumers[*part]).collect();
        match self.sweep(&swept, want, &round).await {
            Swept::Room(0) => return false,
            Swept::Room(_) => {}
            Swept::Stopped => return true,
            Swept::Failed => return self.pause(RETRY_AFTER).await,
        }
        let holds = |part: usize| match membership {
            Some(membership) if part > 0 => membership.pulls((part - 1) as u32),
            _ => true,
        };
        let park_limit = (self.link.config.ack_wait() / 2).min(parts::MAX_PARK);
        let mut parts: Parts<PulledPart> = Parts::new(&order, consumers.len());
        let mut waiting: Vec<PartPull> = Vec::with_capacity(order.len());
        // Parts whose pull failed, and when a consumer was last read again.
        let mut refused: Vec<usize> = Vec::new();
        let mut refreshed: Option<std::time::Instant> = None;
        enum Event {
            Next(usize, Option<Result<Box<jetstream::Message>, String>>),
            Stop,
            Taken,
            Regrouped,
            Room,
            Timer,
        }
        loop {
            if self.exclusive && !self.holds_fresh() {
                // Its lease might lapse while a new pull waits: the next round pauses until
                // it holds the queue again.
                self.leave_parts(waiting, &mut parts).await;
                return false;
            }
            let now = tokio::time::Instant::now();
            // Parked too long, or from a partition given up: handed back.
            for stale in
                parts.unpark_where(|parked| parked.since + park_limit <= now || !holds(parked.part))
            {
                self.hand_back_pulled(stale.message);
            }
            parts.wake(now);
            if self.has_room() && parts.has_turns() {
                // What this subscription handed back is in its part again first.
                self.returning.settled(RETURN_WAIT).await;
            }
            // Each part's turn, in order: its parked message, then a new waiting pull (after
            // taking what else waits there when a message just came from it).
            for part in parts.turns() {
                if !self.has_room() {
                    break;
                }
                if !holds(part) {
                    // Given up meanwhile.
                    if let Some(parked) = parts.forget(part) {
                        self.hand_back_pulled(parked.message);
                    }
                    continue;
                }
                if let Some(parked) = parts.unpark(part) {
                    self.deliver(parked.message, round.subscription, round.budget);
                }
                let Some(busy) = parts.take_idle(part) else {
                    continue;
                };
                if !self.has_room() {
                    parts.set_idle(part, busy);
                    break;
                }
                if busy {
                    let room = self.window.saturating_sub(self.lock().len());
                    match self.sweep(&[&consumers[part]], room, &round).await {
                        Swept::Room(_) => {}
                        Swept::Stopped => {
                            self.leave_parts(waiting, &mut parts).await;
                            return true;
                        }
                        Swept::Failed => {
                            parts.rest(part, now + RETRY_AFTER);
                            continue;
                        }
                    }
                    if !self.has_room() {
                        // More may wait there: taken (without waiting) in its next turn, before
                        // a later part's parked message.
                        parts.set_idle(part, true);
                        break;
                    }
                }
                if refused.contains(&part)
                    && refreshed.is_none_or(|at| at.elapsed() >= REFRESH_AFTER)
                {
                    refused.retain(|refused| *refused != part);
                    refreshed = Some(std::time::Instant::now());
                    let (name, subject) = &self.parts[part];
                    match queue_consumer(&self.link, &self.stream, name, subject).await {
                        Ok(fresh) => consumers[part] = fresh,
                        Err(err) => {
                            tracing::debug!(consumer = %name, error = %err, "cluster: cannot read the consumer again; retrying");
                            refused.push(part);
                            parts.rest(part, now + RETRY_AFTER);
                            continue;
                        }
                    }
                }
                match self.arm(consumers, membership, part).await {
                    Ok(pull) => waiting.push(pull),
                    Err(err) => {
                        tracing::debug!(consumer = %self.name, error = %err, "cluster: pull failed; retrying");
                        parts.rest(part, now + RETRY_AFTER);
                    }
                }
            }
            if waiting.is_empty() && !parts.holds_on() {
                return false;
            }
            let deadline = parts.next_deadline(park_limit);
            let event = {
                let first = async {
                    if waiting.is_empty() {
                        return std::future::pending().await;
                    }
                    let pulls = waiting.iter_mut().map(|part| Box::pin(part.pull.next()));
                    let (next, index, _) = futures_util::future::select_all(pulls).await;
                    (index, next.map(|next| next.map(Box::new)))
                };
                let regrouped = async {
                    match membership {
                        Some(membership) => membership.regrouped().await,
                        None => std::future::pending().await,
                    }
                };
                let timer = tokio::time::sleep_until(deadline.unwrap_or(now));
                tokio::select! {
                    (index, next) = first => Event::Next(index, next),
                    _ = self.stop.notified() => {
                        self.stop.notify_one();
                        Event::Stop
                    }
                    _ = round.taken() => Event::Taken,
                    _ = regrouped => Event::Regrouped,
                    _ = self.room.notified(), if parts.has_turns() => Event::Room,
                    _ = timer, if deadline.is_some() => Event::Timer,
                }
            };
            match event {
                Event::Stop => {
                    self.leave_parts(waiting, &mut parts).await;
                    return true;
                }
                Event::Taken => {
                    self.leave_parts(waiting, &mut parts).await;
                    return false;
                }
                Event::Room | Event::Timer => {}
                Event::Regrouped => {
                    // Partitions newly held are asked; those given up are not asked again.
                    for partition in membership.map(Membership::pulling).unwrap_or_default() {
                        let part = 1 + partition as usize;
                        if part < consumers.len()
                            && !waiting.iter().any(|w| w.part == part)
                            && !parts.knows(part)
                        {
                            parts.set_idle(part, true);
                        }
                    }
                }
                Event::Next(index, next) => {
                    let PartPull {
                        part,
                        pull,
                        _in_flight: in_flight,
                    } = waiting.swap_remove(index);
                    match next {
                        Some(Ok(message)) => {
                            if self.has_room() {
                                self.deliver(*message, round.subscription, round.budget);
                            } else {
                                let pulled = PulledPart {
                                    message: *message,
                                    _in_flight: in_flight,
                                };
                                let now = tokio::time::Instant::now();
                                if let Err(pulled) = parts.park(part, pulled, now) {
                                    self.hand_back_pulled(pulled.message);
                                }
                            }
                            if holds(part) {
                                parts.set_idle(part, true);
                            }
                        }
                        Some(Err(err)) => {
                            // (Its consumer is read again before its next pull: not by the
                            // pull loop once the round ends.)
                            tracing::debug!(consumer = %self.name, %err, "cluster: a part's pull ended early");
                            parts.rest(part, tokio::time::Instant::now() + RETRY_AFTER);
                            if !refused.contains(&part) {
                                refused.push(part);
                            }
                        }
                        // Its time passed (or the server did not end it in time: then it is
                        // left).
                        None => {
                            self.leave_pulls(vec![pull], Some(&round)).await;
                            if holds(part) {
                                parts.set_idle(part, false);
                            }
                        }
                    }
                }
            }
        }
    }

    /// A waiting pull of one message on part `part` (a grouped queue's partition `P`,
    /// `1 + P`, counts it as one of its deliveries not settled until the pull is over).
    async fn arm(
        &self,
        consumers: &[QueueConsumer],
        membership: Option<&Membership>,
        part: usize,
    ) -> Result<PartPull, String> {
        let in_flight = match (membership, part) {
            (Some(membership), 1..) => membership.in_flight((part - 1) as u32),
            _ => None,
        };
        let pull = start_pull(
            &self.link,
            &consumers[part],
            1,
            Wait::Up(PULL_WAIT),
            self.level,
        )
        .await?;
        Ok(PartPull {
            part,
            pull,
            _in_flight: in_flight,
        })
    }

    /// Ends a round of [`RemoteConsumer::pull_parts`] early (the subscription ended, or an
    /// exclusive one took the queue): its parked messages handed back, its waiting pulls left
    /// (see [`RemoteConsumer::leave_pulls`]).
    async fn leave_parts(&self, waiting: Vec<PartPull>, parts: &mut Parts<PulledPart>) {
        for parked in parts.unpark_all() {
            self.hand_back_pulled(parked.message);
        }
        let pulls = waiting.into_iter().map(|part| part.pull).collect();
        self.leave_pulls(pulls, None).await;
    }

    /// Whether the window has room for one more delivery.
    fn has_room(&self) -> bool {
        !self.stopped.load(Ordering::Acquire) && self.lock().len() < self.window
    }

    /// Hands a pulled message back at once (beyond the window), JetStream confirming it
    /// before the subscription's next round asks again.
    fn hand_back_pulled(&self, message: jetstream::Message) {
        self.count(1, AckKind::Nak(None));
        let guard = self.returning.guard();
        let (_, acker) = message.split();
        tokio::spawn(async move {
            if let Err(err) = acker.double_ack_with(AckKind::Nak(None)).await {
                tracing::debug!(error = %err, "cluster: a nak not confirmed");
            }
            drop(guard);
        });
    }

    /// Leaves waiting `pulls` (see [`PullRequest::leave`]): what they were sent meanwhile is
    /// delivered (a priority queue's highest band first) while the window has room, when
    /// `round` is given, and handed back (nak) otherwise, once the server no longer sends to
    /// them: for the next pull, after a take the exclusive subscription's. Without `round`
    /// when the subscription ended or an exclusive one took the queue.
    async fn leave_pulls(&self, pulls: Vec<PullRequest>, round: Option<&Round<'_, '_>>) {
        let left = futures_util::future::join_all(pulls.into_iter().map(PullRequest::leave)).await;
        let mut handed_back = Vec::new();
        for message in left.into_iter().flatten() {
            match round.filter(|_| self.has_room()) {
                Some(round) => self.deliver(message, round.subscription, round.budget),
                None => handed_back.push((message.split().1, AckKind::Nak(None))),
            }
        }
        self.count(handed_back.len(), AckKind::Nak(None));
        settle_later(handed_back);
    }

    /// Whether the subscription may pull now: an exclusive one once it holds the queue's lease
    /// (taken here; given up when it could have lapsed), any other while nobody holds it.
    async fn may_pull(&self, gate: &Arc<ExclusiveGate>) -> bool {
        if !self.exclusive {
            return !gate.is_taken(&self.link).await;
        }
        {
            let mut hold = self.hold();
            if hold.as_ref().is_some_and(|h| !h.is_fresh(PULL_WAIT)) {
                tracing::warn!(consumer = %self.name, "cluster: the exclusive consumer's lease was not renewed in time; pausing until it is taken again");
                *hold = None;
            }
            if hold.is_some() {
                return true;
            }
        }
        let Some(taken) = gate.try_take(&self.link).await else {
            return false;
        };
        *self.hold() = Some(taken);
        // `stop` sets `stopped` before it gives the hold up: one of the two sees the other.
        if self.stopped.load(Ordering::Acquire) {
            self.hold().take();
            return false;
        }
        true
    }

    /// Whether an exclusive subscription holds the queue safely for one more pull (see
    /// [`ExclusiveHold::is_fresh`]).
    fn holds_fresh(&self) -> bool {
        self.hold()
            .as_ref()
            .is_some_and(|hold| hold.is_fresh(PULL_WAIT))
    }

    fn hold(&self) -> std::sync::MutexGuard<'_, Option<ExclusiveHold>> {
        self.hold.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The queue's durable consumers (one, or a priority queue's bands', highest first),
    /// made by whichever edge comes first; `None` when the subscription ended before NATS
    /// answered.
    async fn consumers(&self) -> Option<Vec<QueueConsumer>> {
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return None;
            }
            let made = match &self.durable {
                Some(durable) => durable.consumer().await.map(|consumer| vec![consumer]),
                None => {
                    let mut made = Vec::with_capacity(self.parts.len());
                    for (name, subject) in &self.parts {
                        match queue_consumer(&self.link, &self.stream, name, subject).await {
                            Ok(consumer) => made.push(consumer),
                            Err(err) => {
                                made.clear();
                                tracing::warn!(consumer = %name, error = %err, "cluster: cannot get the queue's consumer; retrying");
                                break;
                            }
                        }
                    }
                    if made.is_empty() {
                        Err(anyhow::anyhow!("a consumer of the queue was not made"))
                    } else {
                        Ok(made)
                    }
                }
            };
            match made {
                Ok(consumers) => return Some(consumers),
                Err(err) => {
                    tracing::warn!(consumer = %self.name, error = %err, "cluster: cannot get the queue's consumer; retrying");
                    if self.pause(RETRY_AFTER).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Waits until the window has room: how many messages to pull; `None` once stopped.
    async fn wait_for_room(&self) -> Option<usize> {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stopped.load(Ordering::Acquire) {
                return None;
            }
            let held = self.lock().len();
            if held < self.window {
                return Some(self.window - held);
            }
            tokio::select! {
                _ = notified => {}
                _ = self.stop.notified() => {
                    self.stop.notify_one();
                }
            }
        }
    }

    /// Sleeps `duration` unless stopped first; true when stopped.
    async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = self.stop.notified() => self.stop.notify_one(),
        }
        self.stopped.load(Ordering::Acquire)
    }

    /// Hands one pulled message to the subscription (or back to the queue when it has ended).
    fn deliver(
        &self,
        pulled: jetstream::Message,
        subscription: &Weak<Subscription>,
        budget: &Arc<MemoryBudget>,
    ) {
        let (delivered, stream_seq) = pulled
            .info()
            .map(|info| (info.delivered, info.stream_sequence))
            .unwrap_or((1, 0));
        let deliveries = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
        let in_flight = self.in_flight(pulled.subject.as_str());
        let (pulled, acker) = pulled.split();
        let subscription = match subscription.upgrade() {
            Some(s) if !self.stopped.load(Ordering::Acquire) => s,
            _ => return settle_later(vec![(acker, AckKind::Nak(None))]),
        };
        let parts = match wire::decode(pulled.payload) {
            Ok(parts) => parts,
            Err(err) => {
                // Not ours (someone else published on our subjects): never delivered again.
                tracing::warn!(consumer = %self.name, error = %err, "cluster: a message in the queue's stream is not a Plugboard message; terminated");
                return settle_later(vec![(acker, AckKind::Term)]);
            }
        };
        let message = Arc::new(wire::into_message(parts, budget));
        if let Some(durable) = &self.durable {
            if !durable.takes(&message.destination) {
                // Selected by a wildcard subscription's broader filter, but not a topic its
                // pattern matches: not this subscription's.
                return settle_later(vec![(acker, AckKind::Ack)]);
            }
        }
        if message.is_expired(crate::router::message::now_ms()) {
            // Expired while stored: dropped or dead-lettered, as a local queue does (or as the
            // redeliver hook says).
            self.queue.stats.expired.fetch_add(1, Ordering::Relaxed);
            if let Some(remote) = self.queue.remote() {
                let returned = Returned {
                    acker,
                    message,
                    deliveries,
                    stream_seq,
                    returning: self.returning_guard(),
                    in_flight: None,
                };
                remote.hand_back(&self.queue, returned, RedeliverCause::Expired, &[]);
                return;
            }
            return settle_later(vec![(acker, AckKind::Ack)]);
        }
        let stats = &self.link.stats;
        stats.delivered.fetch_add(1, Ordering::Relaxed);
        if delivered > 1 {
            stats.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let first_in_group = self.first_in_group(&message);
        self.lock().push_back(Held {
            seq,
            message: message.clone(),
            acker,
            deliveries,
            stream_seq,
            in_flight,
        });
        subscription.outbox().push(Outgoing::Delivery(Delivery {
            message,
            subscription: subscription.clone(),
            seq,
            redeliveries: deliveries - 1,
            first_in_group,
        }));
    }

    /// For a grouped queue's message pulled on `subject` from a partition this subscription
    /// holds: counted until settled (see [`Membership::in_flight`]).
    fn in_flight(&self, subject: &str) -> Option<InFlight> {
        self.groups.as_ref()?;
        let partition = groups::partition_of_subject(&self.parts.first()?.1, subject)?;
        self.membership().as_ref()?.in_flight(partition)
    }

    /// Whether `message` is the first of its group this subscription is given (a grouped
    /// queue's; `JMSXGroupFirstForConsumer`, as on one node); a closing message
    /// (`JMSXGroupSeq:-1`) ends the group for it.
    fn first_in_group(&self, message: &Message) -> bool {
        let (Some(_), Some(group)) = (&self.groups, &message.props.group) else {
            return false;
        };
        let mut seen = self.groups_seen.lock().unwrap_or_else(|e| e.into_inner());
        let id = groups::fnv(&group.id);
        if group.closes {
            return !seen.remove(&id);
        }
        if seen.contains(&id) {
            return false;
        }
        if seen.len() >= MAX_GROUPS_SEEN {
            seen.clear();
        }
        seen.insert(id);
        true
    }
}

/// The durable consumer `name` of a queue (filter `subject`): the one that exists, as it is;
/// else made with the prioritized policy ([`priority`]), or without it when the server refuses
/// the policy (before 2.12).
///
/// Made with JetStream's `create` action, never create-or-update: when subscriptions (on any
/// edge) make it at once, or a request that timed out here still reaches the server after
/// the other kind was made, the first one made stays and the other request is refused, and
/// its maker reads what was made. So every subscription pulls the consumer as it is (a pull
/// naming a priority group the consumer does not have, or lacking the one it has, is
/// refused).
async fn queue_consumer(
    link: &VhostLink,
    stream: &jetstream::stream::Stream,
    name: &str,
    subject: &str,
) -> anyhow::Result<QueueConsumer> {
    use jetstream::stream::ConsumerCreateStrictErrorKind::AlreadyExists;
    let config = &link.config;
    let wanted = pull::Config {
        durable_name: Some(name.to_string()),
        filter_subject: subject.to_string(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait(),
        max_ack_pending: i64::from(config.max_ack_pending),
        max_deliver: -1,
        ..Default::default()
    };
    for _ in 0..MAKE_ATTEMPTS {
        if let Ok(consumer) = stream.get_consumer(name).await {
            return Ok(consumer);
        }
        match stream
            .create_consumer_strict(priority::prioritized(wanted.clone()))
            .await
        {
            Ok(consumer) => return Ok(consumer),
            Err(err) if err.kind() == AlreadyExists => continue,
            Err(err) => match stream.create_consumer_strict(wanted.clone()).await {
                Ok(plain) => {
                    tracing::info!(consumer = %name, error = %err, "cluster: the queue's consumer was made without consumer priorities (does the NATS server predate 2.12?)");
                    return Ok(plain);
                }
                Err(again) if again.kind() == AlreadyExists => continue,
                Err(again) => return Err(again.into()),
            },
        }
    }
    anyhow::bail!("consumer {name} was neither found nor made in {MAKE_ATTEMPTS} attempts")
}

/// Least time between two readings of a subscription's consumers after failed pulls.
const REFRESH_AFTER: Duration = Duration::from_secs(5);

/// How often [`queue_consumer`] looks for a consumer that another request made meanwhile.
const MAKE_ATTEMPTS: usize = 3;

/// Asks `consumer` for up to `want` messages, waiting on the server as `wait` says: at
/// priority `level` when the consumer is prioritized (and a level is given).
async fn start_pull(
    link: &VhostLink,
    consumer: &QueueConsumer,
    want: usize,
    wait: Wait,
    level: Option<usize>,
) -> Result<PullRequest, String> {
    let level = level.filter(|_| priority::is_prioritized(consumer));
    PullRequest::start(consumer, &link.jetstream, &link.client, want, wait, level).await
}

/// A durable pull consumer of a queue (or of a durable topic subscription).
type QueueConsumer = jetstream::consumer::Consumer<pull::Config>;

/// What one round of a subscription's pulls needs of its loop: whether an exclusive
/// subscription took the queue, and where messages go.
struct Round<'t, 'a> {
    /// Completes when an exclusive subscription took the queue (never for one that is
    /// exclusive itself).
    taken: std::pin::Pin<&'t mut Option<tokio::sync::futures::Notified<'a>>>,
    subscription: &'t Weak<Subscription>,
    budget: &'t Arc<MemoryBudget>,
}

impl Round<'_, '_> {
    /// Completes when the queue was taken (see `taken`).
    async fn taken(&mut self) {
        match self.taken.as_mut().as_pin_mut() {
            Some(notified) => notified.await,
            None => std::future::pending().await,
        }
    }
}

/// What [`RemoteConsumer::sweep`] left.
enum Swept {
    /// Room for this many more messages.
    Room(usize),
    /// The subscription ended.
    Stopped,
    /// A pull could not be asked for.
    Failed,
}

/// A waiting pull on one part of a queue (see [`RemoteConsumer::pull_parts`]).
struct PartPull {
    /// A priority queue's band (0: the highest); a grouped queue's own consumer (0) or
    /// partition `P` (`1 + P`).
    part: usize,
    pull: PullRequest,
    /// A grouped queue's pull counts as one of its partition's deliveries not settled.
    _in_flight: Option<InFlight>,
}

/// A message a part's pull brought while the window was full (parked: see [`super::parts`]).
struct PulledPart {
    message: jetstream::Message,
    /// Its partition's count of deliveries not settled (a grouped queue's), until delivered
    /// or handed back.
    _in_flight: Option<InFlight>,
}

/// `held`'s ackers, each with `kind`.
fn with_kind(held: Vec<Held>, kind: AckKind) -> Vec<(Acker, AckKind)> {
    held.into_iter().map(|h| (h.acker, kind)).collect()
}

/// Sends the acks, naks or terms in a task of their own: ACK and NACK frames are handled
/// without waiting on NATS (an ack that is lost only means the message comes back after
/// `ack_wait`: at least once).
pub(super) fn settle_later(list: Vec<(Acker, AckKind)>) {
    if list.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for (acker, kind) in list {
            if let Err(err) = acker.ack_with(kind).await {
                tracing::debug!(error = %err, "cluster: ack not sent (the message will come back after ack_wait)");
            }
        }
    });
}
