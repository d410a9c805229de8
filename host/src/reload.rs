//! Live policy changes: watches the config file and every plugin's component file, and on a
//! change (or SIGHUP) loads the new plugin set in the background and swaps it in atomically.
//!
//! Writes are debounced (a burst of events, such as an editor's partial writes, becomes one
//! reload once the files have been quiet for [`QUIET`]). A new set that fails to parse, compile,
//! instantiate, match the WIT or accept its config is refused as a whole: the old set keeps
//! serving and the error (naming the plugin) is logged and kept for the status endpoint.
//! Settings outside `[[plugins]]` cannot change live; changing them is reported, not ignored.
//!
//! A reload never weakens the policy by accident: an empty file, one that changes while it is
//! read, or one that drops the authenticate hook, removes a plugin or a hook, or makes a plugin
//! fail open is refused unless the new file says `[reload] allow_weaker_policy = true`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::broker::Broker;
use crate::config::Config;
use crate::plugin::{FailurePolicy, Hook, PluginHost, PluginSpec};
use crate::policy::PluginFile;

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
    overrides: &Overrides,
    noticed: Instant,
) -> Outcome {
    let policy = &broker.policy;
    // Certificates first, whatever becomes of the config file: a renewed certificate applies
    // even when the plugin set did not change (a bad one is refused and logged, the old one
    // kept serving; see listen::tls).
    if let Some(tls) = &broker.tls {
        let _ = tls.reload();
    }
    let refuse = |reason: String| {
        // wasmtime's and toml's messages span lines; a status line should not.
        let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
        error!(%reason, "reload refused; the previous plugins keep serving");
        policy.refuse(reason.clone());
        Outcome::Refused(reason)
    };
    let new = match read_stable(config_path).await.and_then(|text| {
        let mut config = Config::from_toml(&text).map_err(|err| format!("config file: {err:#}"))?;
        config.base_dir = config_dir(config_path);
        Ok(config)
    }) {
        Ok(mut config) => {
            overrides.apply(&mut config);
            config
        }
        Err(reason) => return refuse(reason),
    };
    let restart = changed_settings(&broker.config, &new);
    if !restart.is_empty() {
        warn!(settings = ?restart, "these settings changed but only apply after a restart");
    }
    policy.set_needs_restart(restart);

    let files = PluginFile::hash_all(&new.plugins, &new.base_dir);
    let current = policy.current();
    if current.specs == new.plugins && current.files == files {
        info!("reload: the plugin set did not change");
        return Outcome::Unchanged;
    }
    if !new.reload.allow_weaker_policy {
        if let Some(weaker) = weakens(&current.specs, &new.plugins) {
            return refuse(format!(
                "{weaker}: a reload may not weaken the policy in force (set [reload] \
                 allow_weaker_policy = true in the same edit to do it on purpose, or restart)"
            ));
        }
    }
    // The running broker's cache: `plugin_cache_dir` only changes with a restart (reported
    // above), and its default follows `--data-dir`, which the re-read file does not carry.
    let cache_dir = broker.config.plugin_cache_dir();
    let vhost_names: Vec<_> = broker.vhosts.iter().map(|v| v.name.clone()).collect();
    if let Err(reason) = policy.check_vhost_plugins(&new.plugins, &vhost_names) {
        return refuse(reason);
    }
    // The traces of the set in force go on: a rate switched live survives the reload.
    let traces = current.host.traces().clone();
    let kv = current.host.kv().clone();
    match PluginHost::load_traced(&new.plugins, &new.base_dir, &cache_dir, traces, kv.clone()).await
    {
        Ok(host) => {
            let took = noticed.elapsed().as_millis() as u64;
            let generation = policy.install(host, new.plugins.clone(), files, took);
            // Stores of plugins gone (or no longer persisted) go; a plugin kept keeps its own.
            kv.retain(&crate::plugin::kv::configured(&new.plugins));
            // Messages every consumer's filter declined are offered to the new filters.
            for vhost in broker.vhosts.iter() {
                vhost.router.filters_changed();
            }
            info!(
                generation,
                took_ms = took,
                plugins = new.plugins.len(),
                "plugins reloaded"
            );
            Outcome::Swapped(generation)
        }
        Err(err) => refuse(err.to_string()),
    }
}

/// How often a config file is read again when it changed while being read.
const STABLE_READS: usize = 3;
/// The pause before reading it again.
const REREAD_AFTER: Duration = Duration::from_millis(50);

/// Reads the config file, making sure it did not change while it was read (an editor or a
/// copy in the middle of writing it) and that it is not empty: a half-written or truncated file
/// must never become the policy. Files are best replaced by atomic rename.
async fn read_stable(path: &Path) -> Result<String, String> {
    let stat = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path)
            .map(|m| {
                (
                    m.dev(),
                    m.ino(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime_nsec(),
                )
            })
            .map_err(|err| format!("config file {}: {err}", path.display()))
    };
    for attempt in 1..=STABLE_READS {
        let before = stat(path)?;
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("reading config file {}: {err}", path.display()))?;
        let after = stat(path)?;
        if before == after && text.len() as u64 == after.2 {
            if text.trim().is_empty() {
                return Err(format!(
                    "config file {} is empty: refused (an empty file would drop every plugin)",
                    path.display()
                ));
            }
            return Ok(text);
        }
        debug!(
            attempt,
            "the config file changed while it was read; reading it again"
        );
        tokio::time::sleep(REREAD_AFTER).await;
    }
    Err(format!(
        "config file {} kept changing while it was read; replace it by atomic rename",
        path.display()
    ))
}

fn config_dir(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// How a new plugin set would weaken the one in force, if it would: it drops the authenticate
/// hook, removes a plugin or a hook of one, or turns a plugin from failing closed to open.
pub fn weakens(current: &[PluginSpec], new: &[PluginSpec]) -> Option<String> {
    let authenticates = |specs: &[PluginSpec]| {
        specs
            .iter()
            .find(|s| s.hooks.contains(&Hook::Authenticate))
            .map(|s| s.name.clone())
    };
    if let (Some(auth), None) = (authenticates(current), authenticates(new)) {
        return Some(format!(
            "the new config has no authenticate hook (plugin `{auth}` serves it now)"
        ));
    }
    for old in current {
        let Some(next) = new.iter().find(|s| s.name == old.name) else {
            return Some(format!("the new config removes plugin `{}`", old.name));
        };
        if let Some(hook) = old.hooks.iter().find(|h| !next.hooks.contains(h)) {
            return Some(format!(
                "the new config removes the `{}` hook of plugin `{}`",
                hook.as_str(),
                old.name
            ));
        }
        if old.failure == FailurePolicy::Closed && next.failure == FailurePolicy::Open {
            return Some(format!(
                "the new config makes plugin `{}` fail open",
                old.name
            ));
        }
    }
    None
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
        "tls",
        format!("{:?}", running.tls),
        format!("{:?}", new.tls),
    );
    check(
        "admin_listen",
        format!("{:?}", running.admin_listen),
        format!("{:?}", new.admin_listen),
    );
    check(
        "admin_token",
        // Compared, never printed.
        (running.admin_token == new.admin_token).to_string(),
        "true".to_string(),
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
        "websocket",
        format!("{:?}", running.websocket),
        format!("{:?}", new.websocket),
    );
    check(
        "cluster",
        // Compared whole (credentials included), never printed.
        (running.cluster == new.cluster).to_string(),
        "true".to_string(),
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
    check(
        "vhosts",
        format!("{:?}", running.vhosts),
        format!("{:?}", new.vhosts),
    );
    check(
        "default_vhost",
        format!("{:?}", running.default_vhost),
        format!("{:?}", new.default_vhost),
    );
    check(
        "store",
        format!("{:?}", running.store),
        format!("{:?}", new.store),
    );
    check(
        "dead_letter",
        format!("{:?}", running.dead_letter),
        format!("{:?}", new.dead_letter),
    );
    check(
        "log_format",
        format!("{:?}", running.log_format),
        format!("{:?}", new.log_format),
    );
    check(
        "metrics",
        format!("{:?}", running.metrics),
        format!("{:?}", new.metrics),
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
    // A renewed certificate (or key, or client CA) reloads like a changed plugin.
    for file in broker.tls.iter().flat_map(|tls| tls.files()) {
        files.insert(absolute(&file));
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
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The STOMP listen address (`--listen`), replacing `listen`.
    pub listen: Option<std::net::SocketAddr>,
    /// The status endpoint's address (`--admin-listen`), replacing `admin_listen`.
    pub admin_listen: Option<std::net::SocketAddr>,
    /// The WebSocket listener's address (`--ws-listen`), replacing `websocket.listen`.
    pub ws_listen: Option<std::net::SocketAddr>,
    /// The WSS listener's address (`--wss-listen`), replacing `websocket.tls_listen`.
    pub wss_listen: Option<std::net::SocketAddr>,
    /// An absolute directory (`--data-dir`, resolved against the working directory).
    pub data_dir: Option<PathBuf>,
    /// An absolute directory (`--plugin-cache-dir`).
    pub plugin_cache_dir: Option<PathBuf>,
    /// `--log-format`, replacing `log_format`.
    pub log_format: Option<crate::config::LogFormat>,
    /// `--no-tcp`: no plain STOMP listener (`listen = "off"`).
    pub no_tcp: bool,
    /// The TLS listener's address (`--tls-listen`), replacing `tls.listen`.
    pub tls_listen: Option<std::net::SocketAddr>,
    /// Absolute PEM file paths (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
    pub tls_cert: Option<PathBuf>,
    /// See `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// See `tls_cert`.
    pub tls_client_ca: Option<PathBuf>,
    /// `--cluster-nats URL[,URL...]`: cluster mode with these NATS servers, replacing
    /// `[cluster] nats` (the other `[cluster]` settings keep their values or defaults).
    pub cluster_nats: Option<Vec<String>>,
}

impl Overrides {
    /// Puts the command line's settings over the file's.
    pub fn apply(&self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.listen = Some(listen);
        }
        if self.no_tcp {
            config.listen = None;
        }
        if let Some(listen) = self.tls_listen {
            config.tls.listen = Some(listen);
        }
        for (set, path) in [
            (&mut config.tls.cert, &self.tls_cert),
            (&mut config.tls.key, &self.tls_key),
            (&mut config.tls.client_ca, &self.tls_client_ca),
        ] {
            if let Some(path) = path {
                *set = Some(path.clone());
            }
        }
        if let Some(admin) = self.admin_listen {
            config.admin_listen = Some(admin);
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        if let Some(ws) = self.ws_listen {
            config.websocket.listen = Some(ws);
        }
        if let Some(wss) = self.wss_listen {
            config.websocket.tls_listen = Some(wss);
        }
        if let Some(dir) = &self.data_dir {
            config.store.data_dir = Some(dir.clone());
            config.store.enabled = true;
        }
        if let Some(dir) = &self.plugin_cache_dir {
            config.plugin_cache_dir = Some(dir.clone());
        }
        if let Some(urls) = &self.cluster_nats {
            config.cluster.get_or_insert_with(Default::default).nats = urls.clone();
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
            reload(&self.broker, &self.config_path, &self.overrides, noticed).await;
            self.update_watches();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, hooks: &[Hook], failure: FailurePolicy) -> PluginSpec {
        PluginSpec {
            name: name.to_string(),
            file: PathBuf::from("x.wasm"),
            hooks: hooks.to_vec(),
            destinations: vec!["*".to_string()],
            failure,
            deadline_ms: None,
            memory_mb: None,
            max_instances: None,
            recycle_after_calls: None,
            fail_open_principal: None,
            routes_bypass_sender_rights: false,
            trace_sample: 0.0,
            trace_keep: None,
            kv: None,
            config: Default::default(),
        }
    }

    #[test]
    fn a_weaker_plugin_set_is_named() {
        use FailurePolicy::{Closed, Open};
        let auth = spec("auth", &[Hook::Authenticate], Closed);
        let router = spec("router", &[Hook::Send, Hook::Message], Closed);
        let current = vec![auth.clone(), router.clone()];
        assert_eq!(weakens(&current, &current), None);
        // Added plugins and added hooks are not weaker.
        let more = spec("extra", &[Hook::Send], Closed);
        assert_eq!(
            weakens(&current, &[auth.clone(), router.clone(), more]),
            None
        );
        let cases = [
            (vec![router.clone()], "no authenticate hook"),
            (vec![auth.clone()], "removes plugin `router`"),
            (
                vec![auth.clone(), spec("router", &[Hook::Send], Closed)],
                "removes the `message` hook",
            ),
            (
                vec![spec("auth", &[Hook::Authenticate], Open), router.clone()],
                "`auth` fail open",
            ),
            (Vec::new(), "no authenticate hook"),
        ];
        for (new, expected) in cases {
            let found = weakens(&current, &new).unwrap_or_default();
            assert!(
                found.contains(expected),
                "{found:?} should say {expected:?}"
            );
        }
    }

    #[tokio::test]
    async fn empty_files_are_refused_and_stable_files_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugboard.toml");
        for empty in ["", "  \n\t\n"] {
            std::fs::write(&path, empty).unwrap();
            let err = read_stable(&path).await.unwrap_err();
            assert!(err.contains("is empty"), "{err}");
        }
        std::fs::write(&path, "listen = \"127.0.0.1:0\"\n").unwrap();
        assert!(read_stable(&path).await.unwrap().contains("listen"));
        assert!(read_stable(&dir.path().join("missing.toml")).await.is_err());
    }

    #[test]
    fn cluster_settings_need_a_restart_and_the_command_line_turns_cluster_mode_on() {
        let running = Config::default();
        let new = Config {
            cluster: Some(crate::cluster::ClusterConfig {
                password: Some("secret".into()),
                ..Default::default()
            }),
            ..Config::default()
        };
        let changed = changed_settings(&running, &new);
        assert_eq!(changed, vec!["cluster"]);
        let overrides = Overrides {
            cluster_nats: Some(vec![
                "nats://10.0.0.1:4222".into(),
                "nats://10.0.0.2:4222".into(),
            ]),
            ..Default::default()
        };
        let mut config = Config::default();
        overrides.apply(&mut config);
        let cluster = config
            .cluster
            .expect("--cluster-nats turns cluster mode on");
        assert_eq!(cluster.nats.len(), 2);
        assert_eq!(cluster.name, "plugboard");
        cluster.validate().unwrap();
    }

    #[test]
    fn changed_settings_names_what_needs_a_restart() {
        let running = Config::default();
        let mut new = Config::default();
        assert!(changed_settings(&running, &new).is_empty());
        new.listen = Some("127.0.0.1:1".parse().unwrap());
        new.flow.default_prefetch = 7;
        assert_eq!(changed_settings(&running, &new), vec!["listen", "flow"]);
        new.websocket.path = "/stomp".to_string();
        assert!(changed_settings(&running, &new).contains(&"websocket".to_string()));
    }
}
