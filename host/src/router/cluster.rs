//! Where the router meets cluster mode ([`crate::cluster`]): a vhost's router joins the
//! cluster once at start ([`Router::join_cluster`]); from then on the `/queue/` and `/topic/`
//! objects it makes carry their cluster side, so the per-message path asks one question (is
//! there a remote side?) that the destination answered when it was made. Topic messages from
//! the other edges come in through [`Router::deliver_from_cluster`].
//!
//! Durable subscriptions to plain topics live in the cluster too ([`crate::cluster::durable`]):
//! [`Router::claim_cluster_durable`] claims one (async, before the session's
//! [`Router::prepare_cluster_durable`]) with the checks the edge-local ones have, and
//! [`Router::remove_cluster_durable`] removes one; a wildcard pattern's consumer filters on the
//! NATS wildcards that select its topics. A `/reply-queue/` of another edge is reached through
//! [`crate::cluster::reply`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::cluster::durable::{ClaimRequest, DurableRefusal};
use crate::cluster::VhostLink;
use crate::plugin::Principal;
use crate::text::shown;

use super::wildcard::{may_read_all, wildcard_name};
use super::{
    Destination, DurableError, DurableKey, Message, Queue, Router, SubscribeError, Subscription,
    Topic, TOPIC_PREFIX,
};

impl Router {
    /// Cluster mode: from now on this router's `/queue/`s and `/topic/`s live in the cluster
    /// `link` leads to. Called once, before any session uses the router.
    pub fn join_cluster(&mut self, link: Arc<VhostLink>) {
        self.cluster = Some(link);
    }

    /// The cluster link, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<VhostLink>> {
        self.cluster.as_ref()
    }

    /// Whether a durable subscription `key` to `destination` lives in the cluster: in cluster
    /// mode, on a topic or a topic pattern (except one this edge already holds from before it
    /// was in the cluster, which moves as an edge-local one).
    pub fn durable_in_cluster(&self, key: &DurableKey, destination: &[u8]) -> bool {
        self.cluster.is_some()
            && destination.starts_with(TOPIC_PREFIX)
            && self.existing_queue(&key.queue_name()).is_none()
    }

    /// Claims durable subscription `key` on `topic` in the cluster for one subscriber of this
    /// edge, as [`Router::prepare_subscription`] claims an edge-local one: refused while a
    /// subscriber on any edge has it, moved (emptied) from another topic only when `principal`
    /// may read that one, made within `durable.max_per_principal`. The queue to attach.
    pub async fn claim_cluster_durable(
        &self,
        key: &DurableKey,
        topic: &Bytes,
        principal: &Principal,
    ) -> Result<Arc<Queue>, SubscribeError> {
        let Some(link) = &self.cluster else {
            return Err(SubscribeError::ClusterUnavailable(
                key.describe(),
                "not in cluster mode".into(),
            ));
        };
        // A pattern is checked before the cluster is asked (and again when it is attached).
        self.check_durable_pattern(topic, principal)?;
        let queue_name = key.queue_name();
        let may_read = |old: &[u8]| may_read_all(principal, old);
        let request = ClaimRequest {
            queue_name: &queue_name,
            owner: &key.owner,
            topic,
            may_read: &may_read,
            max_per_owner: self.settings.durable.max_per_principal,
            expire_after: Duration::from_millis(self.settings.durable.expire_after_ms),
        };
        let remote = link
            .claim_durable(&request)
            .await
            .map_err(|refusal| match refusal {
                DurableRefusal::Active => SubscribeError::DurableActive(key.describe()),
                DurableRefusal::OtherTopic(old) => {
                    SubscribeError::DurableMoveRefused(key.describe(), shown(&old))
                }
                DurableRefusal::TooMany(max) => {
                    SubscribeError::TooManyDurables(key.owner.clone(), max)
                }
                other => SubscribeError::ClusterUnavailable(key.describe(), other.to_string()),
            })?;
        let queue = Queue::new(queue_name, self.queue_limits())
            .with_remote(remote)
            .charged_to(self.budget.clone());
        Ok(Arc::new(queue))
    }

    /// Removes durable subscription `key` from the cluster with what it holds: refused while a
    /// subscriber on any edge has it, and unless `principal` may read its topic.
    pub async fn remove_cluster_durable(
        &self,
        key: &DurableKey,
        principal: &Principal,
    ) -> Result<(), DurableError> {
        let Some(link) = &self.cluster else {
            return Err(DurableError::Unknown(key.describe()));
        };
        let may_read = |topic: &[u8]| may_read_all(principal, topic);
        link.remove_durable(&key.queue_name(), &may_read)
            .await
            .map_err(|refusal| match refusal {
                DurableRefusal::Active => DurableError::Active(key.describe()),
                DurableRefusal::Unknown => DurableError::Unknown(key.describe()),
                DurableRefusal::NotPermitted(topic) => {
                    DurableError::NotPermitted(key.describe(), shown(&topic))
                }
                other => DurableError::ClusterUnavailable(key.describe(), other.to_string()),
            })
    }

    /// Before `subscription` detaches for an UNSUBSCRIBE naming its durable subscription: a
    /// cluster one is removed as its subscriber leaves, still holding it (true); false for
    /// anything else.
    pub fn remove_on_detach(&self, subscription: &Subscription) -> bool {
        let Destination::Queue(queue) = &subscription.source else {
            return false;
        };
        match queue.remote().and_then(|remote| remote.durable()) {
            Some(durable) => {
                durable.remove_on_detach();
                true
            }
            None => false,
        }
    }

    /// A stand-in for another edge's temporary queue `name` (a `/reply-queue/` name carrying
    /// that edge's id): a SEND to it is published to that edge. `None` single-node, and for
    /// names of this edge or of none.
    pub(super) fn cluster_reply(&self, name: &Bytes) -> Option<Arc<Topic>> {
        let remote = self.cluster.as_ref()?.reply_target(name)?;
        let topic =
            Topic::new(name.clone(), self.settings.flow.slow_consumer_policy).with_remote(remote);
        Some(Arc::new(topic))
    }

    /// A topic nobody on this edge subscribes to by name, for one SEND in cluster mode: it
    /// reaches the other edges and this edge's wildcard subscribers.
    pub(super) fn cluster_stand_in(&self, name: &Bytes) -> Arc<Topic> {
        let topic = Topic::new(name.clone(), self.settings.flow.slow_consumer_policy)
            .with_patterns(self.patterns.clone())
            .in_cluster(self.cluster.as_ref(), name);
        Arc::new(topic)
    }

    /// A topic message another edge published: delivered to this edge's subscribers of the
    /// topic and of the patterns matching it (not sent back to the cluster).
    pub async fn deliver_from_cluster(&self, message: Arc<Message>, patience: Duration) {
        let name = &message.destination;
        // Never a pattern: a SEND to a wildcard name is refused on every edge.
        if wildcard_name(name).is_some() {
            return;
        }
        let topic = match self.existing_topic(name) {
            Some(topic) => topic,
            None => match self.unnamed_topic(name) {
                Some(topic) => topic,
                None => return,
            },
        };
        topic.publish_local(&message, patience).await;
    }
}

impl Queue {
    /// With its cluster side when `link` is set (cluster mode).
    pub(super) fn in_cluster(self, link: Option<&Arc<VhostLink>>, name: &Bytes) -> Queue {
        match link {
            Some(link) => self.with_remote(link.queue(name)),
            None => self,
        }
    }
}

impl Topic {
    /// With its cluster side when `link` is set (cluster mode).
    pub(super) fn in_cluster(self, link: Option<&Arc<VhostLink>>, name: &Bytes) -> Topic {
        match link {
            Some(link) => self.with_remote(link.topic(name)),
            None => self,
        }
    }
}
