//! Cluster mode's families (docs/cluster.md): the edge's NATS connection, its cluster counters
//! (those of `GET /status`'s `cluster`), and each cluster queue's depth as JetStream counts it
//! (every edge together; read by [`refresh`] before the scrape, see
//! [`crate::cluster::depth`]), and so each durable topic subscription's in the cluster. Single-node, none of these families is written.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::encoding::DescriptorEncoder;

use super::{family, single, Counter, Gauge};
use crate::broker::Broker;

/// Reads the cluster queues' depths from JetStream for the coming scrape (at most once per
/// [`crate::cluster::depth::REFRESH_AFTER`]); nothing single-node.
pub async fn refresh(broker: &Broker) {
    for vhost in broker.vhosts.iter() {
        let Some(link) = vhost.router.cluster() else {
            continue;
        };
        let queues = vhost
            .router
            .queues()
            .into_iter()
            .filter(|queue| queue.remote().is_some())
            .map(|queue| queue.name.clone())
            .collect();
        link.refresh_depths(queues).await;
    }
    refresh_edges(broker).await;
}

/// Reads the live edges' entries (at most once per [`crate::cluster::edges::REFRESH_AFTER`]):
/// all `/status` needs; nothing single-node.
pub async fn refresh_edges(broker: &Broker) {
    if let Some(link) = broker
        .vhosts
        .iter()
        .find_map(|v| v.router.cluster().cloned())
    {
        link.refresh_edges().await;
    }
}

/// The live edges as last read (see [`crate::cluster::edges`]), each with whether it runs the
/// policy `ours` (this edge's digest), for `/status` and the console.
pub fn edges_json(link: &crate::cluster::VhostLink, ours: &str) -> serde_json::Value {
    let edges: Vec<serde_json::Value> = link
        .edges()
        .listed()
        .into_iter()
        .map(|entry| {
            serde_json::json!({
                "edge": entry.edge,
                "this_edge": entry.edge == link.edges().edge(),
                "server": entry.server,
                "version": entry.version,
                "started_ms": entry.started_ms,
                "generation": entry.generation,
                "policy": entry.policy,
                "same_policy": entry.policy == ours,
                "queue_settings": entry.queue_settings,
                "same_queue_settings": link.edges().other_queue_settings(&entry).map(|other| !other),
            })
        })
        .collect();
    serde_json::Value::Array(edges)
}

/// Writes the cluster families (nothing single-node).
pub fn encode_cluster(encoder: &mut DescriptorEncoder, broker: &Broker) -> fmt::Result {
    let Some(link) = broker
        .vhosts
        .iter()
        .find_map(|v| v.router.cluster().cloned())
    else {
        return Ok(());
    };
    single(
        encoder,
        "plugboard_cluster_connected",
        "1 while the edge is connected to a NATS server, else 0.",
        Gauge(u64::from(link.connected())),
    )?;
    let ours = broker.policy.current().policy_digest.clone();
    let edges = link.edges().listed();
    single(
        encoder,
        "plugboard_cluster_edges",
        "Live edges of the cluster, as last read from the edges' bucket (this one included).",
        Gauge(edges.len() as u64),
    )?;
    single(
        encoder,
        "plugboard_cluster_edges_other_policy",
        "Of those, edges whose policy (plugin chain) differs from this edge's.",
        Gauge(edges.iter().filter(|e| e.policy != ours).count() as u64),
    )?;
    single(
        encoder,
        "plugboard_cluster_edges_other_queue_settings",
        "Of those, edges whose queue settings ([[queues]], priority_queues, [cluster] queue limits, stream and consumer settings) differ from this edge's.",
        Gauge(
            edges
                .iter()
                .filter(|e| link.edges().other_queue_settings(e) == Some(true))
                .count() as u64,
        ),
    )?;
    let stats = link.stats();
    let counters = [
        (
            "plugboard_cluster_published",
            "Queue messages JetStream acknowledged (stored on a majority of the replicas).",
            &stats.published,
        ),
        (
            "plugboard_cluster_publish_failures",
            "Queue SENDs that got cluster.unavailable (no acknowledgement in time, or refused).",
            &stats.publish_failures,
        ),
        (
            "plugboard_cluster_refused_full",
            "Queue messages a limit of the queues' stream refused (queue_overflow reject-publish).",
            &stats.refused_full,
        ),
        (
            "plugboard_cluster_delivered",
            "Queue messages pulled from JetStream and handed to this edge's subscriptions.",
            &stats.delivered,
        ),
        (
            "plugboard_cluster_redelivered",
            "Of the delivered, messages JetStream had delivered before.",
            &stats.redelivered,
        ),
        ("plugboard_cluster_acked", "Deliveries acked.", &stats.acked),
        (
            "plugboard_cluster_nacked",
            "Deliveries handed back (NACK, declined, or held by a subscription that ended).",
            &stats.nacked,
        ),
        (
            "plugboard_cluster_lease_reads",
            "Exclusive-consumer lease reads made while the leases' watch could not answer.",
            &stats.lease_reads,
        ),
        (
            "plugboard_cluster_dead_lettered",
            "Messages this edge moved to a dead-letter queue (the copy stored by JetStream).",
            &stats.dead_lettered,
        ),
    ];
    for (name, help, counter) in counters {
        single(encoder, name, help, Counter(counter.load(Relaxed)))?;
    }
    depth_families(
        encoder,
        broker,
        "queue",
        |link| {
            link.depths()
                .into_iter()
                .map(|d| (d.queue, d.ready, d.unacked))
                .collect()
        },
        [
            (
                "plugboard_cluster_queue_messages_ready",
                "A cluster queue's messages not delivered yet, as JetStream counts them (every edge).",
            ),
            (
                "plugboard_cluster_queue_messages_unacked",
                "A cluster queue's messages out with consumers on any edge, unacknowledged.",
            ),
        ],
    )?;
    depth_families(
        encoder,
        broker,
        "subscription",
        |link| {
            link.durable_depths()
                .into_iter()
                .map(|d| (d.name, d.ready, d.unacked))
                .collect()
        },
        [
            (
                "plugboard_cluster_durable_messages_ready",
                "Messages a durable topic subscription in the cluster keeps, not delivered yet (JetStream's count).",
            ),
            (
                "plugboard_cluster_durable_messages_unacked",
                "A durable topic subscription's messages out with its subscriber, unacknowledged.",
            ),
        ],
    )
}

/// The ready and unacked families (`names`: each one's name and help) of the rows `rows`
/// gives for each vhost's link (name, ready, unacked), labelled `vhost` and `label`.
fn depth_families(
    encoder: &mut DescriptorEncoder,
    broker: &Broker,
    label: &'static str,
    rows: impl Fn(&crate::cluster::VhostLink) -> Vec<(bytes::Bytes, u64, u64)>,
    names: [(&str, &str); 2],
) -> fmt::Result {
    let mut ready = Vec::new();
    let mut unacked = Vec::new();
    for vhost in broker.vhosts.iter() {
        let Some(link) = vhost.router.cluster() else {
            continue;
        };
        for (name, ready_count, unacked_count) in rows(link) {
            let labels = [
                ("vhost", vhost.name.to_string()),
                (label, String::from_utf8_lossy(&name).into_owned()),
            ];
            ready.push((labels.clone(), Gauge(ready_count)));
            unacked.push((labels, Gauge(unacked_count)));
        }
    }
    let [(ready_name, ready_help), (unacked_name, unacked_help)] = names;
    family(encoder, ready_name, ready_help, ready)?;
    family(encoder, unacked_name, unacked_help, unacked)
}
