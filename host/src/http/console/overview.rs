//! The document of `GET /api/overview`, which the console page polls: queues (depth, unacked,
//! consumers, rates and their history), topics, connections, plugins, the store and the
//! broker-wide rates. Every list is capped (queues and topics at `metrics.
//! max_labelled_destinations` in name order, connections at [`MAX_CONNECTIONS_LISTED`]) and
//! says how many there are in all. No file paths: the page may run without a token.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use super::rates::{Rate, Rates, SAMPLE_EVERY};
use crate::broker::Broker;
use crate::connection_registry::ConnectionInfo;
use crate::histogram::Snapshot;
use crate::router::message::now_ms;

/// Most connections listed (the oldest first); `connections_total` counts them all.
pub const MAX_CONNECTIONS_LISTED: usize = 1000;

/// Rounds a rate for the page (two decimals are plenty, and keep the document small).
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn rate_json(rate: Option<&Rate>) -> Value {
    let rate = rate.copied().unwrap_or_default();
    json!({
        "in": round(rate.published),
        "out": round(rate.delivered),
        "ack": round(rate.acked),
    })
}

/// The overview document. `actions`: whether the actions are enabled (a token is configured).
pub fn overview(broker: &Broker, rates: &Rates, actions: bool) -> Value {
    let now = now_ms();
    let cap = broker.config.metrics.max_labelled_destinations;
    let (queues, queues_total) = queues(broker, rates, cap);
    let (topics, topics_total) = topics(broker, cap);
    let (listed, connections_total) = broker.registry.list(MAX_CONNECTIONS_LISTED);
    let connections: Vec<Value> = listed.iter().map(|c| connection(c, now)).collect();
    let history = rates.broker();
    let status = crate::http::status(broker, false);
    json!({
        "server": format!("{}/{}", broker.config.server_name, env!("CARGO_PKG_VERSION")),
        "now_ms": now,
        "actions": actions,
        "rates": {
            "interval_ms": SAMPLE_EVERY.as_millis() as u64,
            "now": rate_json(history.last().map(|(_, r)| r)),
            "t": history.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            "in": history.iter().map(|(_, r)| round(r.published)).collect::<Vec<_>>(),
            "out": history.iter().map(|(_, r)| round(r.delivered)).collect::<Vec<_>>(),
            "ack": history.iter().map(|(_, r)| round(r.acked)).collect::<Vec<_>>(),
        },
        "queues": queues,
        "queues_total": queues_total,
        "topics": topics,
        "topics_total": topics_total,
        "cluster_durables": cluster_durables(broker),
        "cluster_edges": broker
            .vhosts
            .iter()
            .find_map(|v| v.router.cluster().cloned())
            .map(|link| {
                crate::http::metrics::cluster::edges_json(&link, &broker.policy.current().policy_digest)
            })
            .unwrap_or_else(|| json!([])),
        "connections": connections,
        "connections_total": connections_total,
        "plugins": plugins(broker, &status),
        "store": status["store"].clone(),
        "memory": {
            "used_bytes": broker.vhosts.budget().used(),
            "limit_bytes": broker.vhosts.budget().limit(),
        },
    })
}

/// The first `cap` queues by name and how many there are.
fn queues(broker: &Broker, rates: &Rates, cap: usize) -> (Vec<Value>, usize) {
    let mut all: Vec<_> = broker
        .vhosts
        .iter()
        .flat_map(|vhost| {
            vhost
                .router
                .queues()
                .into_iter()
                .map(|q| (vhost.name.clone(), q))
        })
        .collect();
    let total = all.len();
    all.sort_by(|a, b| (&a.0, &a.1.name).cmp(&(&b.0, &b.1.name)));
    all.truncate(cap);
    let history: HashMap<String, Vec<Rate>> = rates.queues();
    let dead_letter_prefix = broker.config.dead_letter.prefix.as_bytes();
    let cluster_depths = cluster_depths(broker);
    let rows = all
        .iter()
        .map(|(vhost, queue)| {
            let name = String::from_utf8_lossy(&queue.name).into_owned();
            let (held, bytes) = queue.held();
            // A cluster queue's messages are in JetStream: its depth is JetStream's (every
            // edge together), when the last read has it.
            let jetstream = queue
                .remote()
                .and_then(|_| cluster_depths.get(&(vhost.clone(), queue.name.clone())));
            let (ready, unacked) = match jetstream {
                Some(depth) => (depth.ready, depth.unacked),
                None => {
                    let ready = queue.depth() as u64;
                    (ready, (held as u64).saturating_sub(ready))
                }
            };
            let series = history.get(&super::rates::queue_key(vhost, &name));
            let stats = &queue.stats;
            json!({
                "vhost": &**vhost,
                "name": name,
                "dead_letter_queue": !dead_letter_prefix.is_empty()
                    && queue.name.starts_with(dead_letter_prefix),
                "ready": ready,
                "unacked": unacked,
                "depth_from": if jetstream.is_some() { "jetstream" } else { "edge" },
                "bytes": bytes,
                "consumers": queue.consumer_count(),
                "published": stats.enqueued.load(Relaxed),
                "delivered": stats.delivered.load(Relaxed),
                "acked": stats.acked.load(Relaxed),
                "dead_lettered": stats.dead_lettered.load(Relaxed),
                "rate": rate_json(series.and_then(|s| s.last())),
                "history": {
                    "in": series.map(|s| s.iter().map(|r| round(r.published)).collect::<Vec<_>>()),
                    "out": series.map(|s| s.iter().map(|r| round(r.delivered)).collect::<Vec<_>>()),
                },
            })
        })
        .collect();
    (rows, total)
}

/// The cluster queues' depths as JetStream last counted them (see
/// [`crate::cluster::depth`]), by vhost and queue name; empty single-node.
fn cluster_depths(
    broker: &Broker,
) -> HashMap<(Arc<str>, Bytes), crate::cluster::depth::QueueDepth> {
    broker
        .vhosts
        .iter()
        .filter_map(|vhost| Some((vhost.name.clone(), vhost.router.cluster()?.depths())))
        .flat_map(|(vhost, depths)| {
            depths
                .into_iter()
                .map(move |depth| ((vhost.clone(), depth.queue.clone()), depth))
        })
        .collect()
}

/// Cluster mode: the durable topic subscriptions in the cluster as the last refresh listed them
/// (see [`crate::cluster::depth`]; at most 256 per vhost), wherever their subscriber is; an
/// empty list single-node. Those this edge holds in its own journal are among the queues.
fn cluster_durables(broker: &Broker) -> Vec<Value> {
    broker
        .vhosts
        .iter()
        .filter_map(|vhost| Some((vhost.name.clone(), vhost.router.cluster()?.durable_depths())))
        .flat_map(|(vhost, durables)| {
            durables.into_iter().map(move |d| {
                json!({
                    "vhost": &*vhost,
                    "name": String::from_utf8_lossy(&d.name),
                    "topic": String::from_utf8_lossy(&d.topic),
                    "ready": d.ready,
                    "unacked": d.unacked,
                    "attached": d.attached,
                })
            })
        })
        .collect()
}

/// The first `cap` topics by name and how many there are.
fn topics(broker: &Broker, cap: usize) -> (Vec<Value>, usize) {
    let mut all: Vec<_> = broker
        .vhosts
        .iter()
        .flat_map(|vhost| {
            vhost
                .router
                .topics()
                .into_iter()
                .map(|t| (vhost.name.clone(), t))
        })
        .collect();
    let total = all.len();
    all.sort_by(|a, b| (&a.0, &a.1.name).cmp(&(&b.0, &b.1.name)));
    all.truncate(cap);
    let rows = all
        .iter()
        .map(|(vhost, topic)| {
            json!({
                "vhost": &**vhost,
                "name": String::from_utf8_lossy(&topic.name),
                "subscribers": topic.subscriber_count(),
                "published": topic.stats.published.load(Relaxed),
                "delivered": topic.stats.delivered.load(Relaxed),
                "dropped": topic.stats.slow_consumer_drops.load(Relaxed),
            })
        })
        .collect();
    (rows, total)
}

/// One connection's row.
pub fn connection(info: &ConnectionInfo, now: u64) -> Value {
    let login = info.login();
    json!({
        "id": info.id,
        "session": login.map(|l| l.session.as_str()),
        "user": login.map(|l| l.user.as_str()),
        "vhost": info.vhost(),
        "listener": info.listener,
        "version": login.map(|l| l.version),
        "address": info.address.to_string(),
        "bytes_in": info.bytes_in.load(Relaxed),
        "bytes_out": info.bytes_out.load(Relaxed),
        "opened_at_ms": info.opened_at_ms,
        "age_s": now.saturating_sub(info.opened_at_ms) / 1000,
        "closing": info.close_requested(),
    })
}

/// Mean and 99th percentile (a bucket's upper bound) of a latency histogram, in µs.
fn latency(snapshot: &Snapshot) -> Value {
    if snapshot.count == 0 {
        return Value::Null;
    }
    let rank = (snapshot.count * 99).div_ceil(100);
    let mut seen = 0;
    let p99 = snapshot
        .buckets
        .iter()
        .find(|(_, n)| {
            seen += n;
            seen >= rank
        })
        .map(|(bound, _)| *bound);
    json!({
        "mean_us": round(snapshot.sum as f64 / snapshot.count as f64 / 1000.0),
        "p99_us": p99.filter(|&b| b != u64::MAX).map(|b| round(b as f64 / 1000.0)),
        "sampled": snapshot.count,
    })
}

/// Plugins: per plugin and hook, calls, failures and latency; the reload generation.
fn plugins(broker: &Broker, status: &Value) -> Value {
    let set = broker.policy.current();
    let hooks: Vec<Value> = set
        .host
        .hook_stats()
        .iter()
        .map(|h| {
            json!({
                "plugin": h.plugin,
                "hook": h.hook.as_str(),
                "calls": h.calls,
                "failures": h.failures.iter().map(|(_, n)| n).sum::<u64>(),
                "latency": latency(&h.latency_ns),
            })
        })
        .collect();
    let reload = &status["plugins"];
    json!({
        "generation": set.generation,
        "loaded_at_unix_ms": reload["loaded_at_unix_ms"],
        "reloads": reload["reloads"],
        "reload_failures": reload["reload_failures"],
        "last_error": reload["last_error"],
        "names": set.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        "hooks": hooks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn broker() -> Arc<Broker> {
        let policy =
            crate::policy::Policy::new(crate::plugin::PluginHost::empty(), Vec::new(), Vec::new());
        Arc::new(Broker::new(Arc::new(crate::Config::default()), policy))
    }

    #[test]
    fn the_overview_lists_queues_topics_and_connections_with_totals() {
        let broker = broker();
        let router = &broker.vhosts.get("/").unwrap().router;
        router.queue_for_admin(b"/queue/b").unwrap();
        router.queue_for_admin(b"/queue/a").unwrap();
        let registered = broker
            .registry
            .register(9, "ws", "127.0.0.1:4000".parse().unwrap());
        registered
            .info
            .set_login(crate::connection_registry::Login {
                user: "alice".into(),
                version: "1.2",
                session: "x-9".into(),
            });
        let rates = Rates::default();
        rates.sample([("/", router)], 10);
        rates.sample([("/", router)], 10);
        let doc = overview(&broker, &rates, false);
        assert_eq!(doc["queues_total"], 2);
        assert_eq!(doc["queues"][0]["name"], "/queue/a");
        assert_eq!(doc["queues"][0]["vhost"], "/");
        assert_eq!(doc["queues"][0]["ready"], 0);
        assert_eq!(doc["queues"][0]["history"]["in"], json!([0.0]));
        assert_eq!(doc["connections_total"], 1);
        let connection = &doc["connections"][0];
        assert_eq!(connection["user"], "alice");
        assert_eq!(connection["vhost"], "/");
        assert_eq!(connection["listener"], "ws");
        assert_eq!(connection["version"], "1.2");
        assert_eq!(connection["address"], "127.0.0.1:4000");
        assert_eq!(doc["actions"], false);
        assert_eq!(doc["plugins"]["generation"], 1);
        assert_eq!(doc["rates"]["t"].as_array().unwrap().len(), 1);
        assert!(doc["topics"].as_array().unwrap().is_empty());
    }

    #[test]
    fn latency_gives_mean_and_the_bucket_of_the_99th_percentile() {
        let snapshot = Snapshot {
            buckets: vec![(1_000, 98), (10_000, 1), (100_000, 1), (u64::MAX, 0)],
            sum: 98 * 500 + 5_000 + 50_000,
            count: 100,
        };
        let value = latency(&snapshot);
        assert_eq!(value["p99_us"], 10.0);
        assert_eq!(value["mean_us"], 1.04);
        let empty = Snapshot {
            buckets: vec![(u64::MAX, 0)],
            sum: 0,
            count: 0,
        };
        assert!(latency(&empty).is_null());
    }

    #[test]
    fn the_connection_list_is_capped_with_a_total() {
        let broker = broker();
        let guards: Vec<_> = (0..(MAX_CONNECTIONS_LISTED as u64 + 5))
            .map(|n| {
                broker
                    .registry
                    .register(n, "tcp", "127.0.0.1:1".parse().unwrap())
            })
            .collect();
        let doc = overview(&broker, &Rates::default(), true);
        assert_eq!(
            doc["connections"].as_array().unwrap().len(),
            MAX_CONNECTIONS_LISTED
        );
        assert_eq!(doc["connections_total"], guards.len());
        assert_eq!(doc["connections"][0]["user"], Value::Null);
    }
}
