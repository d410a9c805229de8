//! The status document of `GET /status` (and `plugboard status`): loaded plugins with their
//! content hashes, load time, call/trap/timeout counters, the last reload error, settings
//! waiting for a restart, connection and destination counts (with each virtual host's), the
//! store.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::broker::Broker;

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The status document; `with_paths` includes file and directory paths (authenticated callers).
pub fn status(broker: &Broker, with_paths: bool) -> Value {
    let path = |p: &std::path::Path| with_paths.then(|| p.display().to_string());
    let set = broker.policy.current();
    let reload = broker.policy.status();
    let stats = set.host.stats();
    let plugins: Vec<Value> = set
        .files
        .iter()
        .zip(&set.specs)
        .map(|(file, spec)| {
            let counters = stats.iter().find(|s| s.name == file.name);
            json!({
                "name": file.name,
                "file": path(&file.path),
                "sha256": file.sha256,
                "hooks": spec.hooks.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
                "destinations": spec.destinations,
                "calls": counters.map(|c| c.calls),
                "traps": counters.map(|c| c.traps),
                "timeouts": counters.map(|c| c.timeouts),
                "memory_limit": counters.map(|c| c.memory_limit),
                "invalid_output": counters.map(|c| c.invalid_output),
                "busy_waits": counters.map(|c| c.busy_waits),
                "busy": counters.map(|c| c.busy),
                "backoff": counters.map(|c| c.backoff),
                "routes_refused": counters.map(|c| c.routes_refused),
                "log_dropped": counters.map(|c| c.log_dropped),
                "instances_created": counters.map(|c| c.instances_created),
                "recycled": counters.map(|c| c.recycled),
            })
        })
        .collect();
    let (queues, topics) = broker.vhosts.counts();
    let vhosts: Vec<Value> = broker
        .vhosts
        .iter()
        .map(|vhost| {
            let (queues, topics) = vhost.router.counts();
            json!({
                "name": &*vhost.name,
                "connections": vhost.connections(),
                "queues": queues,
                "topics": topics,
                "scheduled": vhost.router.scheduler().len(),
                "plugins": set.for_vhost(vhost.index).names().collect::<Vec<_>>(),
            })
        })
        .collect();
    let scheduler = |read: fn(&crate::router::Scheduler) -> u64| -> u64 {
        broker
            .vhosts
            .iter()
            .map(|v| read(v.router.scheduler()))
            .sum()
    };
    let stats = &broker.stats;
    json!({
        "server": format!("{}/{}", broker.config.server_name, env!("CARGO_PKG_VERSION")),
        "connections": {
            "open": stats.connections_open.load(Relaxed),
            "total": stats.connections_total.load(Relaxed),
            "client_errors": stats.client_errors.load(Relaxed),
            "slow_consumer_disconnects": stats.slow_consumer_disconnects.load(Relaxed),
            "heartbeat_timeouts": stats.heartbeat_timeouts.load(Relaxed),
            "session_panics": stats.session_panics.load(Relaxed),
            "address_limit_refusals": stats.address_limit_refusals.load(Relaxed),
            "failed_logins": stats.failed_logins.load(Relaxed),
            "reauthentications": stats.reauthentications.load(Relaxed),
            "credential_expiries": stats.credential_expiries.load(Relaxed),
            "idle_closes": stats.idle_closes.load(Relaxed),
        },
        "tls": broker.tls.as_ref().map(|tls| {
            let s = &tls.stats;
            json!({
                "handshakes": s.handshakes.load(Relaxed),
                "handshake_failures": s.handshake_failures.load(Relaxed),
                "handshake_timeouts": s.handshake_timeouts.load(Relaxed),
                "certificate_reloads": s.reloads.load(Relaxed),
                "certificate_reload_failures": s.reload_failures.load(Relaxed),
            })
        }),
        "destinations": { "queues": queues, "topics": topics },
        "vhosts": vhosts,
        "scheduler": {
            "waiting": broker.vhosts.scheduled(),
            "scheduled": scheduler(|s| s.stats.scheduled.load(Relaxed)),
            "delivered": scheduler(|s| s.stats.delivered.load(Relaxed)),
            "recovered": scheduler(|s| s.stats.recovered.load(Relaxed)),
            "retried": scheduler(|s| s.stats.retried.load(Relaxed)),
        },
        // Cluster mode (docs/cluster.md): the edge's NATS connection and what went through it,
        // and the live edges with the policy and queue settings each runs.
        "cluster": broker.vhosts.iter().next().and_then(|v| v.router.cluster()).map(|link| {
            let mut cluster = link.stats().to_json(link.connected());
            cluster["edge"] = json!(link.edges().edge());
            cluster["policy"] = json!(set.policy_digest);
            cluster["queue_settings"] = json!(link.edges().queue_settings());
            cluster["edges"] = crate::http::metrics::cluster::edges_json(link, &set.policy_digest);
            cluster
        }),
        "store": broker.vhosts.store().map(|store| {
            let s = store.stats();
            json!({
                "data_dir": path(store.dir()),
                "fsync": format!("{:?}", broker.config.store.fsync).to_lowercase(),
                "live_messages": s.live_messages.load(Relaxed),
                "live_bytes": s.live_bytes.load(Relaxed),
                "max_bytes": broker.config.store.max_bytes,
                "disk_bytes": s.disk_bytes.load(Relaxed),
                "segments": s.segments.load(Relaxed),
                "records_appended": s.records_appended.load(Relaxed),
                "records_written": s.records_written.load(Relaxed),
                "bytes_written": s.bytes_written.load(Relaxed),
                "batches": s.batches.load(Relaxed),
                "fsyncs": s.fsyncs.load(Relaxed),
                "settled_before_written": s.cancelled.load(Relaxed),
                "relocated": s.relocated.load(Relaxed),
                "failed": store.failure(),
            })
        }),
        "plugins": {
            "generation": set.generation,
            "loaded_at_unix_ms": unix_ms(set.loaded_at),
            "loaded": plugins,
            "reloads": reload.reloads,
            "reload_failures": reload.failures,
            "last_reload_ms": reload.last_reload_ms,
            "last_error": reload.last_error.as_ref().map(|(at, reason)| json!({
                "at_unix_ms": unix_ms(*at),
                "reason": reason,
            })),
            "needs_restart": reload.needs_restart,
        },
    })
}
