//! Cluster mode: Plugboard edges sharing queues and topics through a NATS JetStream cluster
//! (`[cluster]` in the config, or `--cluster-nats URL[,URL...]`). Without `[cluster]` none of
//! this runs and the broker is the single-node one, unchanged.
//!
//! Each edge is a whole STOMP broker (listeners, plugins, limits, sessions) that keeps no state
//! another edge needs: the router delegates `/queue/` and `/topic/` traffic to this module, the
//! rest (temporary queues, scheduled delivery) stays on the edge. Durable subscriptions to
//! topics and topic patterns live in the cluster ([`durable`]); replies to a temporary queue
//! reach its edge from any other ([`reply`]).
//!
//! | STOMP | NATS | |
//! |---|---|---|
//! | `/queue/NAME` SEND | JetStream publish to `CLUSTER.VHOST.q.TOKEN`, `Nats-Msg-Id` = `message-id` | RECEIPT only after the publish ack (stored on a majority of `replicas`) |
//! | the queues of a vhost | one work-queue stream `CLUSTER_VHOST_queues` on `CLUSTER.VHOST.q.>` | one Raft group per vhost, not per queue |
//! | the queues a `[[queues]]` entry with `max_length` matches | a work-queue stream per entry, with its limits per queue ([`classes`]) | one Raft group per such entry |
//! | `/queue/NAME` SUBSCRIBE | the durable pull consumer `TOKEN` of that stream (filter: the queue's subject), shared by every edge | consumers on all edges compete; window → fetch size, `max_ack_pending` bounds the total |
//! | message priority (`priority`) on a queue `priority_queues` names | three bands, each a subject `CLUSTER.VHOST.q.TOKEN[.h/.l]` with a consumer of its own | subscriptions take from the highest band first ([`bands`]) |
//! | message groups (`JMSXGroupID`) on a queue `group_queues` names | partitions, each a subject `CLUSTER.VHOST.q.TOKEN.gP` with a consumer of its own, pulled by the subscription holding its lease | a group's messages go to one subscription at a time ([`groups`]) |
//! | consumer priority (`activemq.priority`, `x-priority`) | the level of the subscription's pulls in the consumer's `prioritized` priority group | nats-server 2.12+ ([`priority`]) |
//! | `/queue/NAME` exclusive SUBSCRIBE | the lease `x.TOKEN` in the bucket `CLUSTER_VHOST_durables` | the holder pulls, the others wait ([`exclusive`]) |
//! | ACK / NACK | ack / nak (each message of a cumulative `client` ACK) | `redelivered` and `redelivery-count` from JetStream's delivery count |
//! | an edge that dies | nothing: its unacked messages are delivered again after `ack_wait_ms` | |
//! | `/topic/NAME` SEND | core NATS publish to `CLUSTER.VHOST.t.s.SEG1.SEG2...` (a token per segment of `NAME`) and to the edge's own subscribers directly | at most once, live subscribers only |
//! | topic subscribers | each edge subscribes to `CLUSTER.VHOST.t.>` and fans out locally | wildcard subscriptions match on the edge |
//! | durable subscription to `/topic/NAME` or a pattern | a durable pull consumer of the interest stream `CLUSTER_VHOST_topics` on `CLUSTER.VHOST.t.>`, filtered on the pattern's NATS wildcards, its attachment a lease in the bucket `CLUSTER_VHOST_durables` | resumable on any edge; a persistent topic SEND is receipted once stored |
//! | SEND to another edge's `/reply-queue/EDGE....` | core NATS publish to `CLUSTER.VHOST.r.EDGE` | at most once |
//!
//! A delivery that comes back goes through `[dead_letter]` and the redeliver hook
//! ([`dead_letter`]); a transaction's queue messages are one atomic batch ([`batch`]); a
//! scrape reads the queues' depths from JetStream ([`depth`]).
//!
//! `TOKEN` is the destination escaped into one subject token, `SEG` one segment of a topic
//! name ([`subject`]); the message itself
//! (headers with any bytes and repeats, body, `message-id`, expiry) travels as the payload
//! ([`wire`]). See docs/cluster.md for the guarantees and what is not built yet.

pub mod bands;
pub mod batch;
pub mod browse;
pub mod classes;
pub mod config;
mod connect;
pub mod dead_letter;
pub mod depth;
pub mod durable;
pub mod edges;
pub mod exclusive;
pub mod groups;
pub mod lease;
pub mod lease_watch;
pub mod parts;
pub mod pipeline;
pub mod priority;
pub mod pull_request;
pub mod queue;
pub mod reply;
pub mod subject;
pub mod topic;
pub mod wire;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use bytes::Bytes;

pub use config::{ClusterConfig, NatsTls, QueueOverflow, Storage};
pub use queue::{RemoteConsumer, RemoteQueue};
pub use topic::RemoteTopic;

use subject::Names;

/// How long the stream keeps a `Nats-Msg-Id` to drop a second publish with the same id.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// An edge's connection to the NATS cluster (one per broker; the client reconnects by itself).
#[derive(Clone)]
pub struct Cluster {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    config: Arc<ClusterConfig>,
    stats: Arc<ClusterStats>,
    /// This edge's id, random per start (names its temporary queues: [`reply`]).
    edge: Arc<str>,
    server_errors: Arc<connect::ServerErrors>,
    /// The edges' entries ([`edges`]).
    edges: Arc<edges::EdgeRegistry>,
}

/// What the edge did through the cluster (every vhost together), for `GET /status`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Queue messages JetStream acknowledged.
    pub published: AtomicU64,
    /// Queue SENDs that got `cluster.unavailable`.
    pub publish_failures: AtomicU64,
    /// Queue messages a limit of the queues' stream refused (`flow.queue-full`).
    pub refused_full: AtomicU64,
    /// Queue messages pulled and handed to subscriptions of this edge.
    pub delivered: AtomicU64,
    /// Of those, messages JetStream had delivered before.
    pub redelivered: AtomicU64,
    /// Deliveries acked.
    pub acked: AtomicU64,
    /// Deliveries nak'ed (NACK, declined, or handed back by an ending subscription).
    pub nacked: AtomicU64,
    /// Messages this edge moved to a dead-letter queue (the copy stored by JetStream).
    pub dead_lettered: AtomicU64,
    /// Reads of an exclusive-consumer lease by a subscription that is not exclusive (made only
    /// while the leases' watch cannot answer: [`lease_watch`]).
    pub lease_reads: AtomicU64,
}

impl ClusterStats {
    /// The counters as JSON, with whether the client is connected now.
    pub fn to_json(&self, connected: bool) -> serde_json::Value {
        serde_json::json!({
            "connected": connected,
            "published": self.published.load(Relaxed),
            "publish_failures": self.publish_failures.load(Relaxed),
            "refused_full": self.refused_full.load(Relaxed),
            "delivered": self.delivered.load(Relaxed),
            "redelivered": self.redelivered.load(Relaxed),
            "acked": self.acked.load(Relaxed),
            "nacked": self.nacked.load(Relaxed),
            "dead_lettered": self.dead_lettered.load(Relaxed),
            "lease_reads": self.lease_reads.load(Relaxed),
        })
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("config", &self.config)
            .finish()
    }
}

impl Cluster {
    /// The cluster's edges ([`edges`]), shared by every vhost's link.
    pub fn edges(&self) -> &Arc<edges::EdgeRegistry> {
        &self.edges
    }

    /// Connects to one of `config.nats` within `connect_timeout_ms` (files named in the
    /// config relative to `base_dir`); after that first connection the client reconnects on
    /// its own, forever.
    pub async fn connect(config: &ClusterConfig, base_dir: &Path) -> anyhow::Result<Cluster> {
        let server_errors = Arc::new(connect::ServerErrors::default());
        let options = connect::options(config, base_dir, server_errors.clone())?
            .name("plugboard")
            // A topic message this edge publishes is delivered to its own subscribers directly;
            // NATS must not hand it back.
            .no_echo()
            .connection_timeout(config.connect_timeout())
            .max_reconnects(None);
        let servers: Vec<async_nats::ServerAddr> = config
            .nats
            .iter()
            .map(|url| url.parse())
            .collect::<Result<_, _>>()
            .context("[cluster] nats")?;
        let client = tokio::time::timeout(config.connect_timeout(), options.connect(servers))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no NATS server of {:?} answered within {} ms (connect_timeout_ms)",
                    config.nats,
                    config.connect_timeout_ms
                )
            })?
            .map_err(|err| {
                anyhow::anyhow!(server_errors
                    .explain(format!("connecting to NATS at {:?}: {err}", config.nats)))
            })?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(config.publish_timeout());
        let edge = reply::new_edge_id()?;
        Ok(Cluster {
            client,
            jetstream,
            config: Arc::new(config.clone()),
            stats: Arc::default(),
            edges: Arc::new(edges::EdgeRegistry::new(config, edge.clone())),
            edge,
            server_errors,
        })
    }

    /// The link of virtual host `vhost`: its queue stream, the streams of its queue classes
    /// (the `[[queues]]` entries `queues` with limits: [`classes`]), topic stream and lease
    /// bucket made (or found) on the cluster.
    pub async fn vhost(
        &self,
        vhost: &str,
        queues: &[crate::config::QueuePolicy],
    ) -> anyhow::Result<Arc<VhostLink>> {
        let names = Names::new(&self.config.name, vhost);
        let stream_config = jetstream::stream::Config {
            name: names.stream().to_string(),
            subjects: vec![names.queue_subjects()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: match self.config.storage {
                Storage::File => jetstream::stream::StorageType::File,
                Storage::Memory => jetstream::stream::StorageType::Memory,
            },
            num_replicas: self.config.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            // A transaction's queue messages go as one atomic batch (nats-server 2.12+).
            allow_atomic_publish: true,
            ..Default::default()
        };
        let (stream, atomic) = self
            .queue_stream(stream_config.clone(), self.config.queue_limits())
            .await?;
        let mut placing = Vec::with_capacity(queues.len());
        for policy in queues {
            let class = match classes::class_limits(policy) {
                Some(limits) => {
                    let config = jetstream::stream::Config {
                        name: names.class_stream(&policy.pattern),
                        subjects: vec![names.class_subjects(&policy.pattern)],
                        ..stream_config.clone()
                    };
                    let (stream, atomic) = self.queue_stream(config, limits).await?;
                    Some(Arc::new(classes::QueueClass {
                        pattern: policy.pattern.clone(),
                        stream,
                        atomic,
                    }))
                }
                None => None,
            };
            placing.push(classes::Placing {
                pattern: policy.pattern.clone(),
                class,
            });
        }
        for unknown in classes::unknown_classes(&self.jetstream, &names, &placing).await {
            tracing::warn!(stream = %unknown, "cluster: a queue class stream another edge made for a [[queues]] entry this edge does not have: queues it matches are split between it and this edge's stream (every edge needs the same [[queues]])");
        }
        let link = Arc::new(VhostLink {
            names,
            client: self.client.clone(),
            jetstream: self.jetstream.clone(),
            stream,
            placing,
            banded: bands::BandedQueues::new(&self.config.priority_queues),
            grouped: groups::GroupedQueues::new(
                &self.config.group_queues,
                self.config.group_partitions,
            ),
            config: self.config.clone(),
            stats: self.stats.clone(),
            edge: self.edge.clone(),
            durables: tokio::sync::OnceCell::new(),
            depths: Default::default(),
            lease_watch: Default::default(),
            edges: self.edges.clone(),
            atomic,
        });
        // The topic stream too: persistent topic messages are published into it from the
        // start, so that a durable subscription made on any edge gets them.
        tokio::time::timeout(self.config.connect_timeout(), link.open_durables())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "JetStream did not make the topic stream {} and bucket {} within {} ms",
                    link.names.topic_stream(),
                    link.names.lease_bucket(),
                    self.config.connect_timeout_ms
                )
            })??;
        Ok(link)
    }

    /// Makes (or finds) queue stream `config` and brings it up to date with `limits`: the
    /// stream, and whether it takes atomic batches.
    async fn queue_stream(
        &self,
        mut config: jetstream::stream::Config,
        limits: config::QueueStreamLimits,
    ) -> anyhow::Result<(jetstream::stream::Stream, bool)> {
        limits.apply(&mut config);
        let name = config.name.clone();
        let stream = tokio::time::timeout(
            self.config.connect_timeout(),
            self.jetstream.get_or_create_stream(config.clone()),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "JetStream did not make stream {name} within {} ms (is JetStream enabled on the NATS servers, with room for {} replica(s)?)",
                self.config.connect_timeout_ms,
                self.config.replicas
            )
        })?
        .with_context(|| format!("making JetStream stream {name}"))?;
        let atomic = self.bring_up_to_date(&stream, config, limits).await;
        Ok((stream, atomic))
    }

    /// Brings a stream that already existed up to date: the queue limits of this edge's
    /// `[cluster]` (the last edge to start sets them; logged when they change) and atomic
    /// batches. Whether it takes atomic batches: a server before 2.12 does not keep the
    /// setting, and the edge publishes transactions one message at a time there.
    async fn bring_up_to_date(
        &self,
        stream: &jetstream::stream::Stream,
        config: jetstream::stream::Config,
        limits: config::QueueStreamLimits,
    ) -> bool {
        let current = &stream.cached_info().config;
        let name = current.name.clone();
        let limits_set = limits.are_in(current);
        if current.allow_atomic_publish && limits_set {
            return true;
        }
        if !limits_set {
            tracing::warn!(stream = %name, from = ?limits_of(current), to = ?limits, "cluster: changing the queue stream's limits to this edge's settings ([cluster] queue_* for the vhost's stream, its [[queues]] entry for a queue class; every edge should have the same)");
        }
        match self.jetstream.update_stream(config).await {
            Ok(info) => {
                if !limits.are_in(&info.config) {
                    tracing::warn!(stream = %name, "cluster: the NATS servers did not keep the queue limits");
                }
                if !info.config.allow_atomic_publish {
                    tracing::warn!(stream = %name, "cluster: the NATS servers do not offer atomic batches (2.12+): a transaction's queue messages are published one by one");
                }
                info.config.allow_atomic_publish
            }
            Err(err) => {
                tracing::warn!(stream = %name, error = %err, "cluster: cannot update the queue stream (its limits, atomic batches); it keeps its settings");
                stream.cached_info().config.allow_atomic_publish
            }
        }
    }
}

/// The limits `config` has, for a log line.
fn limits_of(config: &jetstream::stream::Config) -> (i64, i64, i64, String, bool) {
    (
        config.max_messages_per_subject,
        config.max_messages,
        config.max_bytes,
        format!("{:?}", config.discard),
        config.discard_new_per_subject,
    )
}

/// What one virtual host's router uses of the cluster: its subjects, its queue stream, the
/// client.
pub struct VhostLink {
    names: Names,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: jetstream::stream::Stream,
    /// The `[[queues]]` entries in order, each with its stream when it is a queue class
    /// ([`classes`]).
    placing: Vec<classes::Placing>,
    /// The queues whose message priorities apply across edges ([`bands`]).
    banded: bands::BandedQueues,
    /// The queues whose message groups apply across edges ([`groups`]).
    grouped: groups::GroupedQueues,
    config: Arc<ClusterConfig>,
    stats: Arc<ClusterStats>,
    /// This edge's id (see [`reply`]).
    edge: Arc<str>,
    /// The topic stream and lease bucket of the durable subscriptions ([`durable`]), made when
    /// the vhost joins.
    durables: tokio::sync::OnceCell<Arc<durable::DurableStore>>,
    /// Its queues' depths as JetStream last told them ([`depth`], for `/metrics`).
    depths: depth::Depths,
    /// The exclusive-consumer leases as the watch last told them ([`lease_watch`]).
    lease_watch: lease_watch::LeaseWatch,
    /// The cluster's edges (shared by every vhost's link: [`edges`]).
    edges: Arc<edges::EdgeRegistry>,
    /// Whether its stream takes atomic batches ([`batch`]).
    atomic: bool,
}

impl std::fmt::Debug for VhostLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostLink")
            .field("stream", &self.names.stream())
            .finish()
    }
}

impl VhostLink {
    /// The cluster side of queue `destination` (a `/queue/` name).
    pub fn queue(self: &Arc<Self>, destination: &Bytes) -> Arc<RemoteQueue> {
        Arc::new(RemoteQueue::new(self.clone(), destination))
    }

    /// The cluster side of topic `destination` (a `/topic/` name).
    pub fn topic(self: &Arc<Self>, destination: &[u8]) -> Arc<RemoteTopic> {
        Arc::new(RemoteTopic::new(
            self.client.clone(),
            Some(self.jetstream.clone()),
            self.names.topic_subject(destination),
            self.config.publish_timeout(),
        ))
    }

    /// The subject every topic message of this vhost is published under (a wildcard).
    pub fn topic_wildcard(&self) -> String {
        self.names.topic_wildcard()
    }

    /// The NATS client (for the topic inbound subscription).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The edge's cluster counters (shared by every vhost).
    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// The cluster's edges as last read ([`edges`]).
    pub fn edges(&self) -> &Arc<edges::EdgeRegistry> {
        &self.edges
    }

    /// Keeps this edge's entry in the edges' bucket, described by `describe` (`None` once the
    /// broker is gone: the entry is deleted).
    pub fn keep_edge_entry(
        &self,
        describe: impl Fn() -> Option<edges::EdgeEntry> + Send + 'static,
    ) {
        self.edges
            .start(self.jetstream.clone(), self.config.clone(), describe);
    }

    /// Reads the live edges' entries for a status or scrape (at most every
    /// [`edges::REFRESH_AFTER`]).
    pub async fn refresh_edges(&self) {
        self.edges.refresh(&self.jetstream, &self.config).await;
    }

    /// Whether the client is connected to a NATS server now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}
