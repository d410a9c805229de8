//! The cluster's edges as each one sees them, and the policy each runs: every edge keeps an
//! entry in the key-value bucket `CLUSTER_edges` (key: its random id), written when it starts
//! and again every [`LEASE_RENEW`] (with its server name, version, start time, plugin
//! generation and policy digest); an entry is gone [`LEASE_TTL`] after its edge last wrote it
//! (the bucket's `max_age`), so the list is the edges alive now.
//!
//! Hot reload is per edge, so a policy change reaches the edges one after another; the digest
//! ([`crate::policy::policy_digest`]) tells which edges run which. `GET /status`
//! (`cluster.edges`), the console and `/metrics` (`plugboard_cluster_edges`,
//! `plugboard_cluster_edges_other_policy`) list the live edges, read at most every
//! [`REFRESH_AFTER`] when asked for: at most [`MAX_EDGES`] entries of at most
//! [`MAX_ENTRY_BYTES`] each, [`MAX_IN_FLIGHT`] reads at a time, each bounded by
//! [`READ_TIMEOUT`]. An edge that cannot write its entry (NATS unreachable, a user without
//! permission on `$KV.CLUSTER_edges.>`) keeps working and says so in its log, once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::lease::{LEASE_RENEW, LEASE_TTL};
use super::{ClusterConfig, Storage};

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
        }
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
            loop {
                renew.tick().await;
                let Some(entry) = describe() else {
                    break;
                };
                registry.write(&jetstream, &config, &entry).await;
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
        *self.listed.lock().unwrap_or_else(|e| e.into_inner()) = entries;
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
        };
        let bytes = serde_json::to_vec(&entry).unwrap();
        assert!(bytes.len() < MAX_ENTRY_BYTES / 4, "{}", bytes.len());
        assert_eq!(serde_json::from_slice::<EdgeEntry>(&bytes).unwrap(), entry);
    }
}
