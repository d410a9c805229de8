//! Live policy changes: watches the config file and every plugin's component file, and on a
//! change (or SIGHUP) loads the new plugin set in the background and swaps it in atomically.
//!
//! Writes are debounced (a burst of events, such as an editor's partial writes, becomes one
//! reload once the files have been quiet for [`QUIET`]). A new set that fails to parse, compile,
//! instantiate, match the WIT or accept its config is refused as a whole: the old set keeps
//! serving and the error (naming the plugin) is logged and kept for the status endpoint.
//! Settings outside `[[plugins]]` cannot change live; changing them is reported, not ignored.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::plugin::PluginHost;
use crate::policy::PluginFile;
use crate::session::Broker;

/// How long the watched files must stay quiet before a reload starts.
pub const QUIET: Duration = Duration::from_millis(150);
/// A reload starts after at most this long even if events keep coming.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new plugin set is serving, with this generation.
    Swapped(u64),
    /// Nothing in the plugin set changed.
    Unchanged,
    /// Refused: the previous set keeps serving.
    Refused(String),
}

/// Re-reads `config_path` and swaps in its plugin set if it changed and loads.
pub async fn reload(broker: &Broker, config_path: &Path, noticed: Instant) -> Outcome {
    let policy = &broker.policy;
    let new = match Config::from_file(config_path) {
        Ok(config) => config,
        Err(err) => {
            let reason = format!("config file: {err:#}");
            error!(%reason, "reload refused; the previous plugins keep serving");
            policy.refuse(reason.clone());
            return Outcome::Refused(reason);
        }
    };
    let restart = changed_settings(&broker.config, &new);
    if !restart.is_empty() {
        warn!(settings = ?restart, "these settings changed but only apply after a restart");
    }
    policy.set_needs_restart(restart);

    let files = PluginFile::hash_all(&new.plugins, &new.base_dir);
    let current = policy.current();
    if current.specs == new.plugins && current.files == files {
        debug!("reload: the plugin set did not change");
        return Outcome::Unchanged;
    }
    match PluginHost::load(&new.plugins, &new.base_dir, &new.plugin_cache_dir()).await {
        Ok(host) => {
            let took = noticed.elapsed().as_millis() as u64;
            let generation = policy.install(host, new.plugins.clone(), files, took);
            info!(
                generation,
                took_ms = took,
                plugins = new.plugins.len(),
                "plugins reloaded"
            );
            Outcome::Swapped(generation)
        }
        Err(err) => {
            // wasmtime's messages span lines; a status line should not.
            let reason = err
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            error!(%reason, "reload refused; the previous plugins keep serving");
            policy.refuse(reason.clone());
            Outcome::Refused(reason)
        }
    }
}

/// Names of the settings outside `[[plugins]]` that differ (they need a restart).
pub fn changed_settings(running: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |name: &str, a: String, b: String| {
        if a != b {
            changed.push(name.to_string());
        }
    };
    check(
        "listen",
        format!("{:?}", running.listen),
        format!("{:?}", new.listen),
    );
    check(
        "admin_listen",
        format!("{:?}", running.admin_listen),
        format!("{:?}", new.admin_listen),
    );
    check(
        "server_name",
        running.server_name.clone(),
        new.server_name.clone(),
    );
    check(
        "shutdown_grace_ms",
        running.shutdown_grace_ms.to_string(),
        new.shutdown_grace_ms.to_string(),
    );
    check(
        "plugin_cache_dir",
        format!("{:?}", running.plugin_cache_dir),
        format!("{:?}", new.plugin_cache_dir),
    );
    check(
        "limits",
        format!("{:?}", running.limits),
        format!("{:?}", new.limits),
    );
    check(
        "heartbeat",
        format!("{:?}", running.heartbeat),
        format!("{:?}", new.heartbeat),
    );
    check(
        "flow",
        format!("{:?}", running.flow),
        format!("{:?}", new.flow),
    );
    check(
        "users",
        format!("{:?}", running.users),
        format!("{:?}", new.users),
    );
    changed
}

/// The files whose changes trigger a reload: the config, each loaded plugin's component, and
/// the components the config file names now (which may not have loaded yet).
fn watched_files(config_path: &Path, broker: &Broker) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    files.insert(absolute(config_path));
    for file in &broker.policy.current().files {
        files.insert(absolute(&file.path));
    }
    if let Ok(config) = Config::from_file(config_path) {
        for spec in &config.plugins {
            files.insert(absolute(&config.base_dir.join(&spec.file)));
        }
    }
    files
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Watches the files and reloads until shutdown. Runs as a task; logs and returns if the
/// platform's file watcher cannot start (SIGHUP still works then).
pub async fn watch_and_reload(
    broker: Arc<Broker>,
    config_path: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let (events, mut changed) = mpsc::channel::<()>(1);
    let interesting = Arc::new(Mutex::new(watched_files(&config_path, &broker)));
    let filter = interesting.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return; // reading the files (as a reload does) is not a change
        }
        let files = filter.lock().unwrap_or_else(|e| e.into_inner());
        if event.paths.iter().any(|p| files.contains(&absolute(p))) {
            let _ = events.try_send(());
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            warn!(%err, "cannot watch files; reload with SIGHUP");
            None
        }
    };
    let mut watched_dirs = BTreeSet::new();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        // Directories, not files: editors and `cp` replace files by rename.
        if let Some(watcher) = watcher.as_mut() {
            let files = interesting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let dirs: BTreeSet<PathBuf> = files
                .iter()
                .filter_map(|f| f.parent().map(Path::to_path_buf))
                .collect();
            for dir in dirs.difference(&watched_dirs) {
                if let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                    warn!(dir = %dir.display(), %err, "cannot watch directory");
                }
            }
            for dir in watched_dirs.difference(&dirs) {
                let _ = watcher.unwatch(dir);
            }
            watched_dirs = dirs;
        }
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            Some(()) = changed.recv() => {
                let noticed = Instant::now();
                let deadline = noticed + MAX_DEBOUNCE;
                while Instant::now() < deadline {
                    match tokio::time::timeout(QUIET, changed.recv()).await {
                        Ok(Some(())) => continue,
                        _ => break,
                    }
                }
                info!("plugin files or config changed: reloading");
                reload(&broker, &config_path, noticed).await;
            }
            _ = hup => {
                info!("SIGHUP: reloading");
                reload(&broker, &config_path, Instant::now()).await;
            }
            _ = shutdown.changed() => return,
        }
        *interesting.lock().unwrap_or_else(|e| e.into_inner()) =
            watched_files(&config_path, &broker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_settings_names_what_needs_a_restart() {
        let running = Config::default();
        let mut new = Config::default();
        assert!(changed_settings(&running, &new).is_empty());
        new.listen = "127.0.0.1:1".parse().unwrap();
        new.flow.default_prefetch = 7;
        assert_eq!(changed_settings(&running, &new), vec!["listen", "flow"]);
    }
}
