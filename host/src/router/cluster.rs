//! Where the router meets cluster mode ([`crate::cluster`]): a vhost's router joins the
//! cluster once at start ([`Router::join_cluster`]); from then on the `/queue/` and `/topic/`
//! objects it makes carry their cluster side, so the per-message path asks one question (is
//! there a remote side?) that the destination answered when it was made. Topic messages from
//! the other edges come in through [`Router::deliver_from_cluster`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::cluster::VhostLink;

use super::wildcard::wildcard_name;
use super::{Message, Queue, Router, Topic};

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
