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
pub async fn reload(
    broker: &Broker,
    config_path: &Path,
    overrides: Overrides,
    noticed: Instant,
) -> Outcome {
    let policy = &broker.policy;
    let new = match Config::from_file(config_path) {
        Ok(mut config) => {
            overrides.apply(&mut config);
            config
        }
        Err(err) => {
            let reason = format!("config file: {err:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
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
    // The running broker's cache: `plugin_cache_dir` only changes with a restart (reported
    // above), and its default follows `--data-dir`, which the re-read file does not carry.
    let cache_dir = broker.config.plugin_cache_dir();
    match PluginHost::load(&new.plugins, &new.base_dir, &cache_dir).await {
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

/// Command-line settings that override the file (so they are not reported as changes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub listen: Option<std::net::SocketAddr>,
    pub admin_listen: Option<std::net::SocketAddr>,
}

impl Overrides {
    fn apply(&self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(admin) = self.admin_listen {
            config.admin_listen = Some(admin);
        }
    }
}

/// Installs the SIGHUP handler and the file watches, then reloads on their events in a task
/// until shutdown. Returns once both are in place, so a caller that announces readiness after
/// it has no window in which a SIGHUP kills the process or a change goes unnoticed.
pub fn start(
    broker: Arc<Broker>,
    config_path: PathBuf,
    overrides: Overrides,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let (events, changed) = mpsc::channel::<()>(1);
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
    let watcher = match watcher {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            warn!(%err, "cannot watch files; reload with SIGHUP");
            None
        }
    };
    let mut reloader = Reloader {
        broker,
        config_path,
        overrides,
        interesting,
        watcher,
        watched_dirs: BTreeSet::new(),
    };
    reloader.update_watches();
    tokio::spawn(reloader.run(changed, hangup, shutdown));
    Ok(())
}

/// The reload loop's state.
struct Reloader {
    broker: Arc<Broker>,
    config_path: PathBuf,
    overrides: Overrides,
    /// The files whose events matter (shared with the watcher's callback).
    interesting: Arc<Mutex<BTreeSet<PathBuf>>>,
    watcher: Option<notify::RecommendedWatcher>,
    watched_dirs: BTreeSet<PathBuf>,
}

impl Reloader {
    /// Watches the directories of the interesting files (editors and `cp` replace files by
    /// rename, which a watch on the file itself would miss).
    fn update_watches(&mut self) {
        let files = watched_files(&self.config_path, &self.broker);
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        *self.interesting.lock().unwrap_or_else(|e| e.into_inner()) = files;
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for dir in dirs.difference(&self.watched_dirs) {
            if let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                warn!(dir = %dir.display(), %err, "cannot watch directory");
            }
        }
        for dir in self.watched_dirs.difference(&dirs) {
            let _ = watcher.unwatch(dir);
        }
        self.watched_dirs = dirs;
    }

    async fn run(
        mut self,
        mut changed: mpsc::Receiver<()>,
        mut hangup: tokio::signal::unix::Signal,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let noticed = tokio::select! {
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
                    noticed
                }
                _ = hangup.recv() => {
                    info!("SIGHUP: reloading");
                    Instant::now()
                }
                _ = shutdown.changed() => return,
            };
            reload(&self.broker, &self.config_path, self.overrides, noticed).await;
            self.update_watches();
        }
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
