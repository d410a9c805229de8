//! The broker's current policy: the loaded plugin set, swapped atomically on reload.
//!
//! Every hook call takes the set that is current when it starts and finishes on it, so a message
//! is handled by exactly one version. [`Policy`] also keeps what a status page shows: each
//! plugin's content hash, when the set was loaded, and the outcome of the last reload.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::plugin::{PluginHost, PluginSpec};

/// One loaded plugin set.
pub struct PluginSet {
    /// Starts at 1 and grows by one with every successful reload.
    pub generation: u64,
    pub host: Arc<PluginHost>,
    pub loaded_at: SystemTime,
    /// The specs it was loaded from (to tell whether a reload changes anything).
    pub specs: Vec<PluginSpec>,
    /// Each plugin's component file and the sha256 of its content, in config order.
    pub files: Vec<PluginFile>,
}

/// A plugin's component file as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFile {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
}

impl PluginFile {
    /// Hashes the files of `specs` (paths relative to `base_dir`).
    pub fn hash_all(specs: &[PluginSpec], base_dir: &std::path::Path) -> Vec<PluginFile> {
        specs
            .iter()
            .map(|spec| {
                let path = base_dir.join(&spec.file);
                let sha256 = match std::fs::read(&path) {
                    Ok(bytes) => hex(&Sha256::digest(&bytes)),
                    Err(err) => format!("unreadable: {err}"),
                };
                PluginFile {
                    name: spec.name.clone(),
                    path,
                    sha256,
                }
            })
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The outcome of reloads, for the status surface.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// Successful reloads that swapped in a new set.
    pub reloads: u64,
    /// Reloads refused (the previous set kept serving).
    pub failures: u64,
    /// The last refusal: when, and why (naming the plugin).
    pub last_error: Option<(SystemTime, String)>,
    /// How long the last successful reload took, from the change being noticed to the swap.
    pub last_reload_ms: Option<u64>,
    /// Settings changed in the file that only a restart applies.
    pub needs_restart: Vec<String>,
}

/// The current plugin set and the reload history.
pub struct Policy {
    current: ArcSwap<PluginSet>,
    status: Mutex<ReloadStatus>,
}

impl Policy {
    pub fn new(host: Arc<PluginHost>, specs: Vec<PluginSpec>, files: Vec<PluginFile>) -> Policy {
        Policy {
            current: ArcSwap::from_pointee(PluginSet {
                generation: 1,
                host,
                loaded_at: SystemTime::now(),
                specs,
                files,
            }),
            status: Mutex::new(ReloadStatus::default()),
        }
    }

    /// The set in force now. Hold the `Arc` for the whole of a hook call.
    pub fn current(&self) -> Arc<PluginSet> {
        self.current.load_full()
    }

    /// The current generation (cheap: for per-delivery staleness checks).
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// The plugin host in force now.
    pub fn host(&self) -> Arc<PluginHost> {
        self.current.load().host.clone()
    }

    /// Swaps in a newly loaded set; calls in flight finish on the old one.
    pub fn install(
        &self,
        host: Arc<PluginHost>,
        specs: Vec<PluginSpec>,
        files: Vec<PluginFile>,
        took_ms: u64,
    ) -> u64 {
        let generation = self.generation() + 1;
        self.current.store(Arc::new(PluginSet {
            generation,
            host,
            loaded_at: SystemTime::now(),
            specs,
            files,
        }));
        let mut status = self.lock_status();
        status.reloads += 1;
        status.last_reload_ms = Some(took_ms);
        generation
    }

    /// Records a refused reload.
    pub fn refuse(&self, reason: String) {
        let mut status = self.lock_status();
        status.failures += 1;
        status.last_error = Some((SystemTime::now(), reason));
    }

    /// Records which changed settings need a restart (replacing the previous list).
    pub fn set_needs_restart(&self, settings: Vec<String>) {
        self.lock_status().needs_restart = settings;
    }

    pub fn status(&self) -> ReloadStatus {
        self.lock_status().clone()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, ReloadStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}
