//! Durable topic subscriptions in cluster mode, resumable on any edge.
//!
//! Every topic message is published on its subject `CLUSTER.VHOST.t.s.SEG...`
//! ([`super::topic`], [`super::subject`]);
//! the vhost's interest stream `CLUSTER_VHOST_topics` takes those subjects (made when the vhost
//! joins), so JetStream keeps a topic's message for as long as one durable subscription on it
//! has not acked it, and stores nothing for a topic without one. A persistent message is
//! published through JetStream (its SEND acknowledged once stored), a non-persistent one as a
//! core message the stream takes when it reaches it. Each durable subscription is one durable pull consumer of that stream,
//! named by the token of its router key (`durable:OWNER/CLIENT/NAME`, see
//! [`crate::router::DurableKey`]): distinct keys never share a consumer. Its topic and owner
//! are in the consumer's metadata; it starts with the messages published after it was made.
//! It filters on its topic's subject, or on the NATS wildcards that select a pattern's topics
//! ([`super::subject::Names::topic_filters`]); where those select more than the pattern
//! matches, the subscriber's edge acks the others away unseen ([`DurableSource::takes`]).
//!
//! Which edge has a subscriber attached is a lease in the key-value bucket
//! `CLUSTER_VHOST_durables` (key: the consumer's name): taken with a create (refused while
//! another edge holds it), renewed every [`LEASE_RENEW`](super::lease::LEASE_RENEW), deleted when the subscriber leaves;
//! an edge that dies loses it after [`LEASE_TTL`] (the bucket's `max_age`). Creating, moving
//! and removing a durable subscription happen under its lease, so they take turns across edges
//! as they do on one node.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, kv};
use bytes::Bytes;
use futures_util::StreamExt;

use super::lease::{Lease, LEASE_TTL};
use super::{RemoteQueue, Storage, VhostLink, DUPLICATE_WINDOW};

/// How long a lease found taken is tried again before the subscription counts as attached.
const RELEASE_GRACE: Duration = Duration::from_secs(1);
/// How often it is tried meanwhile.
const RELEASE_POLL: Duration = Duration::from_millis(50);
/// The shortest `inactive_threshold` given to JetStream: a subscriber whose window is full
/// pulls nothing for a while, and must not lose its subscription meanwhile.
const MIN_INACTIVE: Duration = Duration::from_secs(60);
/// Consumer metadata: the topic (hex of its bytes).
const META_TOPIC: &str = "plugboard-topic";
/// Consumer metadata: the owning principal (hex of its name).
const META_OWNER: &str = "plugboard-owner";

/// Why a durable subscription could not be claimed or removed.
#[derive(Debug, thiserror::Error)]
pub enum DurableRefusal {
    /// Another subscriber (on this edge or another) holds it.
    #[error("attached elsewhere")]
    Active,
    /// It is on another topic, which the principal may not read: the topic.
    #[error("on another topic")]
    OtherTopic(Bytes),
    /// The principal has this many durable subscriptions already.
    #[error("too many")]
    TooMany(usize),
    /// No durable subscription has this key.
    #[error("unknown")]
    Unknown,
    /// Its topic is one the principal may not read: the topic.
    #[error("not permitted")]
    NotPermitted(Bytes),
    /// JetStream did not answer, or refused.
    #[error("{0}")]
    Unavailable(String),
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> DurableRefusal {
    DurableRefusal::Unavailable(format!("{what}: {err}"))
}

/// What a durable SUBSCRIBE asks of the cluster.
pub struct ClaimRequest<'a> {
    /// The router's name of the subscription (`durable:OWNER/CLIENT/NAME`).
    pub queue_name: &'a [u8],
    /// The principal's name.
    pub owner: &'a str,
    /// The topic subscribed to (`/topic/...`), or a wildcard pattern (checked).
    pub topic: &'a [u8],
    /// Whether the principal may read every message of a topic (to move the subscription
    /// away from its old topic).
    pub may_read: &'a (dyn Fn(&[u8]) -> bool + Sync),
    /// `durable.max_per_principal`.
    pub max_per_owner: usize,
    /// `durable.expire_after_ms` as JetStream's `inactive_threshold` (zero: never; at least
    /// a minute otherwise).
    pub expire_after: Duration,
}

impl VhostLink {
    /// Makes (or finds) the topic stream and the lease bucket.
    pub(super) async fn open_durables(&self) -> anyhow::Result<()> {
        self.durables
            .get_or_try_init(|| async { DurableStore::open(self).await.map(Arc::new) })
            .await
            .map(|_| ())
            .map_err(|err| {
                anyhow::anyhow!(
                    "making JetStream stream {} and bucket {}: {err}",
                    self.names.topic_stream(),
                    self.names.lease_bucket()
                )
            })
    }

    /// The topic stream and the lease bucket (made again if that failed at join).
    async fn durable_store(&self) -> Result<&Arc<DurableStore>, DurableRefusal> {
        self.durables
            .get_or_try_init(|| async { DurableStore::open(self).await.map(Arc::new) })
            .await
            .map_err(|err| unavailable("making the topic stream", err))
    }

    /// The vhost's lease bucket when it is open already (it is made when the vhost joins).
    pub(super) fn leases_now(&self) -> Option<kv::Store> {
        Some(self.durables.get()?.leases.clone())
    }

    /// The vhost's lease bucket (also holds the queues' exclusive-consumer leases:
    /// [`super::exclusive`]).
    pub(super) async fn lease_bucket(&self) -> Result<kv::Store, DurableRefusal> {
        Ok(self.durable_store().await?.leases.clone())
    }

    /// Claims a durable subscription for one subscriber of this edge (see
    /// `DurableStore::claim`); the [`RemoteQueue`] to attach it through.
    pub async fn claim_durable(
        self: &Arc<Self>,
        request: &ClaimRequest<'_>,
    ) -> Result<Arc<RemoteQueue>, DurableRefusal> {
        let source = self.durable_store().await?.claim(self, request).await?;
        Ok(Arc::new(RemoteQueue::for_durable(self.clone(), source)))
    }

    /// Removes a durable subscription (see `DurableStore::remove`).
    pub async fn remove_durable(
        &self,
        queue_name: &[u8],
        may_read: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> Result<(), DurableRefusal> {
        self.durable_store()
            .await?
            .remove(self, queue_name, may_read)
            .await
    }
}

/// One durable subscription in the cluster as JetStream counts it (every edge together), for
/// the console and `/metrics` ([`super::depth`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableDepth {
    /// The router's name of it (`durable:OWNER/CLIENT/NAME`; the consumer's name when that
    /// was too long to decode back).
    pub name: Bytes,
    /// Its topic or pattern.
    pub topic: Bytes,
    /// Messages kept for it, not delivered yet.
    pub ready: u64,
    /// Messages out with its subscriber, unacknowledged.
    pub unacked: u64,
    /// Whether a subscriber is attached on some edge (its lease is held).
    pub attached: bool,
}

impl VhostLink {
    /// The vhost's durable subscriptions in the cluster, at most `max` (in consumer-name
    /// order), each bounded by `timeout`; none before the topic stream is open on this edge.
    pub(super) async fn list_durables(
        &self,
        max: usize,
        in_flight: usize,
        timeout: Duration,
    ) -> Vec<DurableDepth> {
        let Some(store) = self.durables.get() else {
            return Vec::new();
        };
        let listing = async {
            let mut infos = Vec::new();
            let mut consumers = store.stream.consumers();
            while let Some(Ok(info)) = consumers.next().await {
                infos.push(info);
                if infos.len() >= max {
                    break;
                }
            }
            infos
        };
        let Ok(infos) = tokio::time::timeout(timeout, listing).await else {
            return Vec::new();
        };
        let mut rows: Vec<DurableDepth> = futures_util::stream::iter(infos)
            .map(|info| async move {
                let consumer = info.config.durable_name.clone()?;
                let topic = meta(&info.config.metadata, META_TOPIC)?;
                let lease = tokio::time::timeout(timeout, store.leases.get(&consumer)).await;
                let name = super::subject::untoken(&consumer).unwrap_or(consumer.into_bytes());
                Some(DurableDepth {
                    name: Bytes::from(name),
                    topic: Bytes::from(topic),
                    ready: info.num_pending,
                    unacked: info.num_ack_pending as u64,
                    attached: matches!(lease, Ok(Ok(Some(_)))),
                })
            })
            .buffer_unordered(in_flight)
            .filter_map(|row| async move { row })
            .collect()
            .await;
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows
    }
}

/// The vhost's topic stream and lease bucket (made on first use).
pub struct DurableStore {
    stream: jetstream::stream::Stream,
    leases: kv::Store,
}

impl DurableStore {
    /// Makes (or finds) the topic stream and the lease bucket of `link`'s vhost.
    pub(super) async fn open(link: &VhostLink) -> anyhow::Result<DurableStore> {
        let config = &link.config;
        let storage = match config.storage {
            Storage::File => jetstream::stream::StorageType::File,
            Storage::Memory => jetstream::stream::StorageType::Memory,
        };
        let stream = link
            .jetstream
            .get_or_create_stream(jetstream::stream::Config {
                name: link.names.topic_stream(),
                subjects: vec![link.names.topic_wildcard()],
                retention: jetstream::stream::RetentionPolicy::Interest,
                storage,
                num_replicas: config.replicas,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await?;
        let bucket = kv::Config {
            bucket: link.names.lease_bucket(),
            history: 1,
            max_age: LEASE_TTL,
            storage,
            num_replicas: config.replicas,
            ..Default::default()
        };
        let leases = match link.jetstream.create_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => {
                link.jetstream
                    .get_key_value(link.names.lease_bucket())
                    .await?
            }
        };
        let store = DurableStore { stream, leases };
        let updated = store.update_filters(link).await;
        if updated > 0 {
            tracing::info!(stream = %link.names.topic_stream(), updated, "cluster: durable consumers made by an earlier version now filter on this version's topic subjects too");
        }
        Ok(store)
    }

    /// Claims durable subscription `request` for one subscriber of this edge: takes its lease,
    /// then finds its consumer, moves it (emptied) from another topic when the principal may
    /// read that one, or makes it within the principal's limit.
    pub(super) async fn claim(
        &self,
        link: &VhostLink,
        request: &ClaimRequest<'_>,
    ) -> Result<Arc<DurableSource>, DurableRefusal> {
        let name = link.names.durable_consumer(request.queue_name);
        let lease = self.lease(&name).await?;
        match self.stream.consumer_info(&name).await {
            Ok(info) => {
                let old = meta(&info.config.metadata, META_TOPIC).unwrap_or_default();
                if old == request.topic {
                    let config = existing_config(link, &name, &info.config, &old);
                    if filters_of(&info.config) != config.filter_subjects {
                        self.stream
                            .update_consumer(config.clone())
                            .await
                            .map_err(|err| unavailable("updating the durable consumer", err))?;
                    }
                    return Ok(self.source(name, config, lease, &old, link));
                }
                if !(request.may_read)(&old) {
                    return Err(DurableRefusal::OtherTopic(Bytes::from(old)));
                }
                self.stream
                    .delete_consumer(&name)
                    .await
                    .map_err(|err| unavailable("removing the durable consumer", err))?;
            }
            Err(err) if err.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                if self.owned_by(request.owner).await? >= request.max_per_owner {
                    return Err(DurableRefusal::TooMany(request.max_per_owner));
                }
            }
            Err(err) => return Err(unavailable("reading the durable consumer", err)),
        }
        let config = consumer_config(link, &name, request);
        self.stream
            .create_consumer(config.clone())
            .await
            .map_err(|err| unavailable("making the durable consumer", err))?;
        Ok(self.source(name, config, lease, request.topic, link))
    }

    /// Removes durable subscription `queue_name` with the messages it holds: refused while a
    /// subscriber is attached (on any edge), and unless `may_read` its topic.
    pub(super) async fn remove(
        &self,
        link: &VhostLink,
        queue_name: &[u8],
        may_read: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> Result<(), DurableRefusal> {
        let name = link.names.durable_consumer(queue_name);
        let lease = self.lease(&name).await?;
        let info = match self.stream.consumer_info(&name).await {
            Ok(info) => info,
            Err(err) if err.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                return Err(DurableRefusal::Unknown)
            }
            Err(err) => return Err(unavailable("reading the durable consumer", err)),
        };
        let topic = meta(&info.config.metadata, META_TOPIC).unwrap_or_default();
        if !may_read(&topic) {
            return Err(DurableRefusal::NotPermitted(Bytes::from(topic)));
        }
        self.stream
            .delete_consumer(&name)
            .await
            .map_err(|err| unavailable("removing the durable consumer", err))?;
        lease.release_now().await;
        Ok(())
    }

    /// Takes the attachment lease of consumer `name`; `Active` while another holds it. A
    /// lease found taken is tried again for up to [`RELEASE_GRACE`]: a subscriber that just
    /// left (on this edge or another) gives its lease up a moment later.
    async fn lease(&self, name: &str) -> Result<Lease, DurableRefusal> {
        let deadline = tokio::time::Instant::now() + RELEASE_GRACE;
        loop {
            match Lease::take(&self.leases, Some(self.stream.clone()), name).await {
                Ok(Some(lease)) => return Ok(lease),
                Ok(None) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(DurableRefusal::Active);
                    }
                    tokio::time::sleep(RELEASE_POLL).await;
                }
                Err(err) => {
                    return Err(unavailable("taking the durable subscription's lease", err))
                }
            }
        }
    }

    /// How many durable subscriptions `owner` has in this vhost (reads every consumer's
    /// metadata: done only when a new one is about to be made).
    async fn owned_by(&self, owner: &str) -> Result<usize, DurableRefusal> {
        let wanted = crate::text::hex(owner.as_bytes());
        let mut count = 0;
        let mut consumers = self.stream.consumers();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|err| unavailable("listing the durable consumers", err))?;
            if info.config.metadata.get(META_OWNER) == Some(&wanted) {
                count += 1;
            }
        }
        Ok(count)
    }

    fn source(
        &self,
        name: String,
        config: pull::Config,
        lease: Lease,
        topic: &[u8],
        link: &VhostLink,
    ) -> Arc<DurableSource> {
        let exact = link.names.topic_filters(topic).exact;
        Arc::new(DurableSource {
            stream: self.stream.clone(),
            config,
            name,
            lease,
            pattern: (!exact).then(|| Bytes::copy_from_slice(topic)),
        })
    }

    /// Gives every durable consumer of the stream the filter subjects this version derives
    /// from its topic: those made by an edge of an earlier version filter on the subject such
    /// an edge publishes under only, and would miss what this one publishes. Done once when
    /// the vhost joins; a failure is logged (a consumer is brought up to date again when its
    /// subscription is next claimed). How many were updated.
    async fn update_filters(&self, link: &VhostLink) -> usize {
        let mut updated = 0;
        let mut consumers = self.stream.consumers();
        while let Some(info) = consumers.next().await {
            let info = match info {
                Ok(info) => info,
                Err(err) => {
                    tracing::warn!(stream = %link.names.topic_stream(), error = %err, "cluster: cannot list the durable consumers to update their filters");
                    break;
                }
            };
            let (Some(name), Some(topic)) = (
                info.config.durable_name.clone(),
                meta(&info.config.metadata, META_TOPIC),
            ) else {
                continue;
            };
            let config = existing_config(link, &name, &info.config, &topic);
            if filters_of(&info.config) == config.filter_subjects {
                continue;
            }
            match self.stream.update_consumer(config).await {
                Ok(_) => updated += 1,
                Err(err) => {
                    tracing::warn!(consumer = %name, error = %err, "cluster: cannot update a durable consumer's filter subjects")
                }
            }
        }
        updated
    }
}

/// A consumer's filter subjects, whichever way they are set.
fn filters_of(config: &jetstream::consumer::Config) -> Vec<String> {
    if config.filter_subjects.is_empty() && !config.filter_subject.is_empty() {
        vec![config.filter_subject.clone()]
    } else {
        config.filter_subjects.clone()
    }
}

/// The pull configuration of an existing durable consumer on `topic` (to make it again as it
/// was), with the filter subjects of this version.
fn existing_config(
    link: &VhostLink,
    name: &str,
    config: &jetstream::consumer::Config,
    topic: &[u8],
) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_string()),
        filter_subjects: link.names.topic_filters(topic).subjects,
        deliver_policy: config.deliver_policy,
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: link.config.ack_wait(),
        max_ack_pending: config.max_ack_pending,
        max_deliver: config.max_deliver,
        inactive_threshold: config.inactive_threshold,
        metadata: config.metadata.clone(),
        ..Default::default()
    }
}

fn consumer_config(link: &VhostLink, name: &str, request: &ClaimRequest<'_>) -> pull::Config {
    let metadata = [
        (META_TOPIC.to_string(), crate::text::hex(request.topic)),
        (
            META_OWNER.to_string(),
            crate::text::hex(request.owner.as_bytes()),
        ),
    ]
    .into_iter()
    .collect();
    pull::Config {
        durable_name: Some(name.to_string()),
        filter_subjects: link.names.topic_filters(request.topic).subjects,
        deliver_policy: jetstream::consumer::DeliverPolicy::New,
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: link.config.ack_wait(),
        max_ack_pending: i64::from(link.config.max_ack_pending),
        max_deliver: -1,
        inactive_threshold: match request.expire_after {
            Duration::ZERO => Duration::ZERO,
            after => after.max(MIN_INACTIVE),
        },
        metadata,
        ..Default::default()
    }
}

/// One claimed durable subscription: its consumer, pulled from while its lease is held.
pub struct DurableSource {
    stream: jetstream::stream::Stream,
    name: String,
    config: pull::Config,
    lease: Lease,
    /// The pattern (a `/topic/` destination) each message is checked against, when the
    /// filter subjects may select more than it matches.
    pattern: Option<Bytes>,
}

impl std::fmt::Debug for DurableSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableSource")
            .field("consumer", &self.name)
            .finish()
    }
}

impl DurableSource {
    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The consumer's first filter subject (its topic's subject, for a plain topic).
    pub fn subject(&self) -> &str {
        self.config
            .filter_subjects
            .first()
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// Whether a message of topic `destination`, selected by the consumer's filters, is one the
    /// subscription takes: always for a plain topic; for a pattern, when it matches.
    pub fn takes(&self, destination: &[u8]) -> bool {
        let Some(pattern) = &self.pattern else {
            return true;
        };
        let prefix = crate::router::TOPIC_PREFIX;
        match (
            pattern.strip_prefix(prefix),
            destination.strip_prefix(prefix),
        ) {
            (Some(pattern), Some(topic)) => crate::router::wildcard::matches(pattern, topic),
            _ => false,
        }
    }

    /// The durable consumer to pull from (made again as it was if it went meanwhile).
    pub async fn consumer(&self) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
        Ok(self
            .stream
            .get_or_create_consumer(&self.name, self.config.clone())
            .await?)
    }

    /// The subscriber left: the lease is given up (and the consumer removed first when
    /// [`remove_on_detach`](Self::remove_on_detach) asked for it).
    pub fn detach(&self) {
        self.lease.release();
    }

    /// UNSUBSCRIBE with the durable name of an attached subscription: the subscription is
    /// removed when its subscriber detaches, still under its lease.
    pub fn remove_on_detach(&self) {
        self.lease.remove_consumer_on_release();
    }
}

fn meta(metadata: &std::collections::HashMap<String, String>, key: &str) -> Option<Vec<u8>> {
    crate::text::unhex(metadata.get(key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_hex_round_trips_any_bytes() {
        let topic = b"/topic/a.b\x00\xff:";
        assert_eq!(
            meta(&[("k".to_string(), crate::text::hex(topic))].into(), "k").unwrap(),
            topic
        );
        let bad = [("k".to_string(), "zz".to_string())].into();
        assert_eq!(meta(&bad, "k"), None);
        assert_eq!(meta(&bad, "missing"), None);
    }
}
