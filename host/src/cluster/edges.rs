//! The cluster's edges as each one sees them, and the policy each runs: every edge keeps an
//! entry in the key-value bucket `CLUSTER_edges` (key: its random id), written when it starts
//! and again every [`LEASE_RENEW`] (with its server name, version, start time, plugin
//! generation and policy digest); an entry is gone [`LEASE_TTL`] after its edge last wrote it
//! (the bucket's `max_age`), so the list is the edges alive now.
//!
//! Hot reload is per edge, so a policy change reaches the edges one after another; the digest
//! ([`crate::policy::policy_digest`]) tells which edges run which. The entry also carries the
//! digest of the edge's queue settings ([`queue_settings_digest`]: `[[queues]]`,
//! `priority_queues`, the `[cluster]` queue limits and stream and consumer settings), which
//! every edge must share: an edge
//! with other `[[queues]]` or `priority_queues` puts a queue's messages on subjects the other
//! edges' subscribers never read. An edge that finds a live edge with other queue settings
//! logs it (once per edge and digest), so a configuration that went wrong on one edge shows
//! up without anyone asking.
//!
//! `GET /status` (`cluster.edges`), the console and `/metrics` (`plugboard_cluster_edges`,
//! `plugboard_cluster_edges_other_policy`, `plugboard_cluster_edges_other_queue_settings`)
//! list the live edges, read at most every [`REFRESH_AFTER`] when asked for and by the edge
//! itself every [`CHECK_EVERY`]: at most [`MAX_EDGES`] entries of at most [`MAX_ENTRY_BYTES`]
//! each, [`MAX_IN_FLIGHT`] reads at a time, each bounded by [`READ_TIMEOUT`]. An edge that
//! cannot write its entry (NATS unreachable, a user without permission on
//! `$KV.CLUSTER_edges.>`) keeps working and says so in its log, once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::lease::{LEASE_RENEW, LEASE_TTL};
use super::{ClusterConfig, Storage};
use crate::config::QueuePolicy;

/// How long the list read for one request serves the next ones.
pub const REFRESH_AFTER: Duration = Duration::from_secs(5);
/// Most edges listed.
pub const MAX_EDGES: usize = 256;
/// The largest entry read (one is about 300 bytes).
pub const MAX_ENTRY_BYTES: usize = 4096;
/// Most entry reads at a time.
pub const MAX_IN_FLIGHT: usize = 8;
/// How long one read (of the keys, or of one entry) may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an edge reads the list itself, to find edges with other queue settings (first
/// [`FIRST_CHECK`] after it starts, when the edges started with it wrote their entries).
pub const CHECK_EVERY: Duration = Duration::from_secs(30);
/// When an edge first reads the list itself.
pub const FIRST_CHECK: Duration = Duration::from_secs(10);

/// One edge's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeEntry {
    /// Its random id (as in its `/reply-queue/` names).
    pub edge: String,
    /// Its `server_name`.
    pub server: String,
    /// Its version.
    pub version: String,
    /// When it started (unix ms).
    pub started_ms: u64,
    /// Its plugin set's generation (1 at start, +1 per reload).
    pub generation: u64,
    /// Its policy digest.
    pub policy: String,
    /// Its queue settings' digest ([`queue_settings_digest`]); empty from an edge of a
    /// version before it (not compared).
    #[serde(default)]
    pub queue_settings: String,
}

/// The digest (SHA-256, hex) of the settings that decide where and how a cluster queue's
/// messages are kept, which every edge must share: the `[[queues]]` entries in order (the first
/// matching one places a queue, and gives it its limits and expiry), `[cluster]
/// priority_queues` (which queues keep priority bands), `group_queues` and `group_partitions`
/// (which queues keep message groups, in how many partitions), the `[cluster]` queue limits (the
/// vhost stream's, set by the last edge to start), and the streams' `replicas` and `storage` and
/// the queue consumers' `ack_wait_ms` and `max_ack_pending` (set by the first edge to make
/// them).
pub fn queue_settings_digest(queues: &[QueuePolicy], cluster: &ClusterConfig) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(
        format!(
            "limits {:?}\nreplicas {} storage {:?} ack_wait_ms {} max_ack_pending {}\n",
            cluster.queue_limits(),
            cluster.replicas,
            cluster.storage,
            cluster.ack_wait_ms,
            cluster.max_ack_pending
        )
        .as_bytes(),
    );
    for pattern in &cluster.priority_queues {
        hasher.update(format!("priority {pattern:?}\n").as_bytes());
    }
    hasher.update(format!("group_partitions {}\n", cluster.group_partitions).as_bytes());
    for pattern in &cluster.group_queues {
        hasher.update(format!("groups {pattern:?}\n").as_bytes());
    }
    for entry in queues {
        hasher.update(
            format!(
                "queue {:?} max_length={:?} max_length_bytes={:?} overflow={:?} message_ttl_ms={:?}\n",
                entry.pattern,
                entry.max_length,
                entry.max_length_bytes,
                entry.overflow,
                entry.message_ttl_ms
            )
            .as_bytes(),
        );
    }
    crate::text::hex(&hasher.finalize())
}

/// The bucket of the edges' entries, and the list last read from it.
pub struct EdgeRegistry {
    name: String,
    edge: Arc<str>,
    bucket: tokio::sync::OnceCell<kv::Store>,
    /// When the last list was read; held while one is read (so only one is).
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    listed: Mutex<Vec<EdgeEntry>>,
    /// Whether a failed write was logged already.
    warned: AtomicBool,
    /// This edge's queue settings' digest (set once at start).
    queue_settings: OnceLock<String>,
    /// The (edge, digest) pairs of other queue settings logged already (at most
    /// [`MAX_EDGES`]; forgotten all at once beyond).
    reported: Mutex<HashSet<(String, String)>>,
}

impl EdgeRegistry {
    /// The registry of cluster `config.name`, for edge `edge`.
    pub fn new(config: &ClusterConfig, edge: Arc<str>) -> EdgeRegistry {
        EdgeRegistry {
            name: format!("{}_edges", config.name),
            edge,
            bucket: tokio::sync::OnceCell::new(),
            refreshed: tokio::sync::Mutex::new(None),
            listed: Mutex::new(Vec::new()),
            warned: AtomicBool::new(false),
            queue_settings: OnceLock::new(),
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// Sets this edge's queue settings' digest ([`queue_settings_digest`]); the first one
    /// set stays.
    pub fn set_queue_settings(&self, digest: String) {
        let _ = self.queue_settings.set(digest);
    }

    /// This edge's queue settings' digest (empty before it is set).
    pub fn queue_settings(&self) -> &str {
        self.queue_settings.get().map_or("", String::as_str)
    }

    /// Whether `entry` (another edge's) has queue settings other than this edge's; `None`
    /// when one side's are not known.
    pub fn other_queue_settings(&self, entry: &EdgeEntry) -> Option<bool> {
        let ours = self.queue_settings();
        if ours.is_empty() || entry.queue_settings.is_empty() {
            return None;
        }
        Some(entry.queue_settings != ours)
    }

    /// This edge's id.
    pub fn edge(&self) -> &str {
        &self.edge
    }

    async fn bucket(
        &self,
        jetstream: &jetstream::Context,
        config: &ClusterConfig,
    ) -> anyhow::Result<&kv::Store> {
        self.bucket
            .get_or_try_init(|| async {
                let storage = match config.storage {
                    Storage::File => jetstream::stream::StorageType::File,
                    Storage::Memory => jetstream::stream::StorageType::Memory,
                };
                let wanted = kv::Config {
                    bucket: self.name.clone(),
                    history: 1,
                    max_age: LEASE_TTL,
                    max_value_size: MAX_ENTRY_BYTES as i32,
                    storage,
                    num_replicas: config.replicas,
                    ..Default::default()
                };
                match jetstream.create_key_value(wanted).await {
                    Ok(store) => Ok(store),
                    Err(_) => Ok(jetstream.get_key_value(&self.name).await?),
                }
            })
            .await
    }

    /// Keeps this edge's entry (from `describe`, `None` once the broker is gone) until the
    /// broker is gone, then deletes it.
    pub fn start(
        self: &Arc<Self>,
        jetstream: jetstream::Context,
        config: Arc<ClusterConfig>,
        describe: impl Fn() -> Option<EdgeEntry> + Send + 'static,
    ) {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut renew = tokio::time::interval(LEASE_RENEW);
            let mut next_check = Instant::now() + FIRST_CHECK;
            loop {
                renew.tick().await;
                let Some(entry) = describe() else {
                    break;
                };
                registry.write(&jetstream, &config, &entry).await;
                if Instant::now() >= next_check {
                    next_check = Instant::now() + CHECK_EVERY;
                    registry.refresh(&jetstream, &config).await;
                }
            }
            if let Some(bucket) = registry.bucket.get() {
                let _ = bucket.delete(registry.edge.as_ref()).await;
            }
        });
    }

    async fn write(
        &self,
        jetstream: &jetstream::Context,
        config: &ClusterConfig,
        entry: &EdgeEntry,
    ) {
        let written = async {
            let bucket = self.bucket(jetstream, config).await?;
            let value = serde_json::to_vec(entry)?;
            bucket.put(self.edge.as_ref(), Bytes::from(value)).await?;
            anyhow::Ok(())
        };
        match tokio::time::timeout(READ_TIMEOUT, written).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => self.warn_once(&err.to_string()),
            Err(_) => self.warn_once("no answer in time"),
        }
    }

    fn warn_once(&self, error: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(bucket = %self.name, %error, "cluster: this edge's entry in the edges' bucket was not written (other edges do not list it; logged once)");
        }
    }

    /// Reads the live edges' entries, unless the last read is recent or another one runs
    /// now.
    pub async fn refresh(&self, jetstream: &jetstream::Context, config: &ClusterConfig) {
        let Ok(mut refreshed) = self.refreshed.try_lock() else {
            return;
        };
        if refreshed.is_some_and(|at| at.elapsed() < REFRESH_AFTER) {
            return;
        }
        *refreshed = Some(Instant::now());
        let Ok(Ok(bucket)) =
            tokio::time::timeout(READ_TIMEOUT, self.bucket(jetstream, config)).await
        else {
            return;
        };
        let keys = async {
            let mut keys = Vec::new();
            let mut listed = bucket.keys().await?;
            while let Some(key) = listed.next().await {
                keys.push(key?);
                if keys.len() >= MAX_EDGES {
                    break;
                }
            }
            anyhow::Ok(keys)
        };
        let Ok(Ok(keys)) = tokio::time::timeout(READ_TIMEOUT, keys).await else {
            return;
        };
        let mut entries: Vec<EdgeEntry> = futures_util::stream::iter(keys)
            .map(|key| async move {
                let value = tokio::time::timeout(READ_TIMEOUT, bucket.get(key))
                    .await
                    .ok()?
                    .ok()??;
                if value.len() > MAX_ENTRY_BYTES {
                    return None;
                }
                serde_json::from_slice::<EdgeEntry>(&value).ok()
            })
            .buffer_unordered(MAX_IN_FLIGHT)
            .filter_map(|entry| async move { entry })
            .collect()
            .await;
        entries.sort_by(|a, b| a.edge.cmp(&b.edge));
        self.report_other_queue_settings(&entries);
        *self.listed.lock().unwrap_or_else(|e| e.into_inner()) = entries;
    }

    /// Logs each live edge whose queue settings differ from this edge's, once per edge and
    /// digest.
    fn report_other_queue_settings(&self, entries: &[EdgeEntry]) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for entry in entries {
            if self.other_queue_settings(entry) != Some(true) {
                continue;
            }
            if reported.len() >= MAX_EDGES {
                reported.clear();
            }
            if reported.insert((entry.edge.clone(), entry.queue_settings.clone())) {
                tracing::warn!(
                    edge = %entry.edge,
                    server = %crate::text::shown(entry.server.as_bytes()),
                    theirs = %entry.queue_settings,
                    ours = %self.queue_settings(),
                    "cluster: a live edge runs other queue settings ([[queues]], priority_queues, or the [cluster] queue limits, stream or consumer settings): queues they place differently are split between subjects the other edges' subscribers do not read (every edge needs the same)"
                );
            }
        }
    }

    /// The entries the last read found (by edge id).
    pub fn listed(&self) -> Vec<EdgeEntry> {
        self.listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_fits_well_within_the_bound() {
        let entry = EdgeEntry {
            edge: "0123456789abcdef".into(),
            server: "x".repeat(64),
            version: "0.1.0".into(),
            started_ms: u64::MAX,
            generation: u64::MAX,
            policy: "f".repeat(64),
            queue_settings: "e".repeat(64),
        };
        let bytes = serde_json::to_vec(&entry).unwrap();
        assert!(bytes.len() < MAX_ENTRY_BYTES / 4, "{}", bytes.len());
        assert_eq!(serde_json::from_slice::<EdgeEntry>(&bytes).unwrap(), entry);
    }

    fn entry(queue_settings: &str) -> EdgeEntry {
        EdgeEntry {
            edge: "e".into(),
            server: "s".into(),
            version: "0.1.0".into(),
            started_ms: 0,
            generation: 1,
            policy: "p".into(),
            queue_settings: queue_settings.into(),
        }
    }

    #[test]
    fn an_entry_of_an_older_edge_has_no_queue_settings_and_is_not_compared() {
        let old = br#"{"edge":"e","server":"s","version":"0.1.0","started_ms":0,"generation":1,"policy":"p"}"#;
        let read: EdgeEntry = serde_json::from_slice(old).unwrap();
        assert_eq!(read, entry(""));
        let registry = EdgeRegistry::new(&ClusterConfig::default(), "ours".into());
        // Ours not set yet: nothing compared.
        assert_eq!(registry.other_queue_settings(&entry("d1")), None);
        registry.set_queue_settings("d1".into());
        registry.set_queue_settings("d2".into());
        assert_eq!(registry.queue_settings(), "d1", "the first one set stays");
        assert_eq!(registry.other_queue_settings(&read), None);
        assert_eq!(registry.other_queue_settings(&entry("d1")), Some(false));
        assert_eq!(registry.other_queue_settings(&entry("d2")), Some(true));
    }

    fn queue(pattern: &str, max_length: Option<u64>) -> QueuePolicy {
        QueuePolicy {
            pattern: pattern.into(),
            max_length,
            max_length_bytes: None,
            overflow: None,
            message_ttl_ms: None,
        }
    }

    #[test]
    fn the_queue_settings_digest_follows_every_setting_that_places_or_bounds_a_queue() {
        let cluster = ClusterConfig::default();
        let queues = vec![queue("/queue/a.*", Some(10)), queue("/queue/b", None)];
        let base = queue_settings_digest(&queues, &cluster);
        assert_eq!(base.len(), 64);
        assert_eq!(base, queue_settings_digest(&queues.clone(), &cluster));

        let mut differ = Vec::new();
        // The first matching entry places a queue: order counts.
        let reversed: Vec<QueuePolicy> = queues.iter().rev().cloned().collect();
        differ.push(queue_settings_digest(&reversed, &cluster));
        differ.push(queue_settings_digest(&queues[..1], &cluster));
        differ.push(queue_settings_digest(
            &[queue("/queue/a.*", Some(11)), queue("/queue/b", None)],
            &cluster,
        ));
        let ttl = QueuePolicy {
            message_ttl_ms: Some(1000),
            ..queue("/queue/b", None)
        };
        differ.push(queue_settings_digest(
            &[queue("/queue/a.*", Some(10)), ttl],
            &cluster,
        ));
        let prioritized = ClusterConfig {
            priority_queues: vec!["/queue/jobs".into()],
            ..ClusterConfig::default()
        };
        differ.push(queue_settings_digest(&queues, &prioritized));
        let limited = ClusterConfig {
            queue_max_length: 5,
            ..ClusterConfig::default()
        };
        differ.push(queue_settings_digest(&queues, &limited));
        let slower = ClusterConfig {
            ack_wait_ms: cluster.ack_wait_ms + 1,
            ..ClusterConfig::default()
        };
        differ.push(queue_settings_digest(&queues, &slower));
        let replicated = ClusterConfig {
            replicas: 3,
            ..ClusterConfig::default()
        };
        differ.push(queue_settings_digest(&queues, &replicated));
        let grouped = ClusterConfig {
            group_queues: vec!["/queue/orders".into()],
            ..ClusterConfig::default()
        };
        differ.push(queue_settings_digest(&queues, &grouped));
        let partitioned = ClusterConfig {
            group_partitions: 16,
            ..ClusterConfig::default()
        };
        differ.push(queue_settings_digest(&queues, &partitioned));
        for (i, digest) in differ.iter().enumerate() {
            assert_ne!(digest, &base, "change {i}");
        }
        // Settings that do not bound or place queues leave it alone.
        let other = ClusterConfig {
            publish_timeout_ms: cluster.publish_timeout_ms + 1,
            ..ClusterConfig::default()
        };
        assert_eq!(queue_settings_digest(&queues, &other), base);
    }
}
