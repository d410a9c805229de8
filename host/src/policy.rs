//! The broker's current policy: the loaded plugin set, swapped atomically on reload.
//!
//! Every hook call takes the set that is current when it starts and finishes on it, so a message
//! is handled by exactly one version. [`Policy`] also keeps what a status page shows: each
//! plugin's content hash, when the set was loaded, and the outcome of the last reload.
//! [`DeliveryFilter`] is a subscription's filter chain, prepared again after a swap, with the
//! subscription's native selector ([`crate::selector`]) in front of it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::plugin::{
    CallContext, PluginHost, PluginSpec, Principal, SubscriptionFilter, SubscriptionInfo,
};

/// One loaded plugin set.
pub struct PluginSet {
    /// Starts at 1 and grows by one with every successful reload.
    pub generation: u64,
    /// Every loaded plugin (what status and metrics report).
    pub host: Arc<PluginHost>,
    /// The chains of each virtual host, by vhost index: the plugins its `[[vhosts]]` entry
    /// selects out of `host` (the same instances: counters and limits are the plugin's).
    pub vhosts: Vec<Arc<PluginHost>>,
    /// When this set was swapped in (or the broker started, for generation 1).
    pub loaded_at: SystemTime,
    /// The specs it was loaded from (to tell whether a reload changes anything).
    pub specs: Vec<PluginSpec>,
    /// Each plugin's component file and the sha256 of its content, in config order.
    pub files: Vec<PluginFile>,
    /// What tells two brokers' policies apart ([`policy_digest`], made once per set).
    pub policy_digest: String,
}

/// What tells two brokers' policies apart: the SHA-256 (hex) of the plugin chain as
/// configured (each plugin's name, component hash, hooks, destinations, limits, failure policy
/// and settings, in order), not of where the files are or how decisions are traced. Edges of a
/// cluster with the same digest apply the same policy.
pub fn policy_digest(specs: &[PluginSpec], files: &[PluginFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (spec, file) in specs.iter().zip(files) {
        let comparable = PluginSpec {
            file: PathBuf::new(),
            trace_sample: 0.0,
            trace_keep: None,
            config: toml::Table::new(),
            ..spec.clone()
        };
        let mut settings = String::new();
        canonical(&toml::Value::Table(spec.config.clone()), &mut settings);
        hasher.update(format!("{comparable:?}\n{settings}\n{}\n", file.sha256).as_bytes());
    }
    crate::text::hex(&hasher.finalize())
}

impl PluginSet {
    /// The chains of vhost `vhost` (its index); all of `host` for an index it does not know.
    pub fn for_vhost(&self, vhost: usize) -> &Arc<PluginHost> {
        self.vhosts.get(vhost).unwrap_or(&self.host)
    }
}

/// `value` written with every table's keys in order (the same settings written in another
/// order give the same text).
fn canonical(value: &toml::Value, out: &mut String) {
    match value {
        toml::Value::Table(table) => {
            let mut keys: Vec<&String> = table.keys().collect();
            keys.sort();
            out.push('{');
            for key in keys {
                out.push_str(&format!("{key:?}="));
                canonical(&table[key.as_str()], out);
                out.push(',');
            }
            out.push('}');
        }
        toml::Value::Array(items) => {
            out.push('[');
            for item in items {
                canonical(item, out);
                out.push(',');
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A plugin's component file as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFile {
    /// The plugin's `name` in its `[[plugins]]` entry.
    pub name: String,
    /// The entry's `file`, resolved against the config's `base_dir`.
    pub path: PathBuf,
    /// The SHA-256 of the file's content in lowercase hex, or `unreadable: ERROR` when it could
    /// not be read.
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
                    Ok(bytes) => crate::text::hex(&Sha256::digest(&bytes)),
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
    /// The plugins each vhost selects (`None`: all), by vhost index; fixed while the broker
    /// runs, applied to every set installed.
    selection: Vec<Option<Vec<String>>>,
}

/// The chains of each vhost: `host`'s plugins that `selection` names (every one for `None`).
fn vhost_hosts(host: &Arc<PluginHost>, selection: &[Option<Vec<String>>]) -> Vec<Arc<PluginHost>> {
    selection
        .iter()
        .map(|names| match names {
            None => host.clone(),
            Some(names) => host.subset(names),
        })
        .collect()
}

impl Policy {
    /// The broker's first plugin set (generation 1), with no reload history.
    pub fn new(host: Arc<PluginHost>, specs: Vec<PluginSpec>, files: Vec<PluginFile>) -> Policy {
        Policy {
            current: ArcSwap::from_pointee(PluginSet {
                generation: 1,
                vhosts: vec![host.clone()],
                host,
                loaded_at: SystemTime::now(),
                policy_digest: policy_digest(&specs, &files),
                specs,
                files,
            }),
            status: Mutex::new(ReloadStatus::default()),
            selection: vec![None],
        }
    }

    /// The same policy with the plugins of each vhost selected by `selection` (by vhost
    /// index; `None`: every plugin), for this set and every one a reload installs.
    pub fn with_vhosts(self, selection: Vec<Option<Vec<String>>>) -> Policy {
        let set = self.current.load_full();
        self.current.store(Arc::new(PluginSet {
            generation: set.generation,
            host: set.host.clone(),
            vhosts: vhost_hosts(&set.host, &selection),
            loaded_at: set.loaded_at,
            specs: set.specs.clone(),
            files: set.files.clone(),
            policy_digest: set.policy_digest.clone(),
        }));
        Policy { selection, ..self }
    }

    /// Why a plugin set loaded from `specs` cannot be installed, if it cannot: a vhost selects
    /// a plugin it does not have (the vhost list is fixed until a restart).
    pub fn check_vhost_plugins(
        &self,
        specs: &[PluginSpec],
        vhost_names: &[Arc<str>],
    ) -> Result<(), String> {
        for (index, names) in self.selection.iter().enumerate() {
            for name in names.iter().flatten() {
                if !specs.iter().any(|s| &s.name == name) {
                    let vhost = vhost_names.get(index).map_or("?", |v| v);
                    return Err(format!(
                        "virtual host {vhost:?} selects plugin `{name}`, which the new config no \
                         longer has (the [[vhosts]] section applies only after a restart)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The set in force now. Hold the `Arc` for the whole of a hook call.
    pub fn current(&self) -> Arc<PluginSet> {
        self.current.load_full()
    }

    /// The current generation (cheap: for per-delivery staleness checks).
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// The plugin host in force now: every plugin, whatever the vhost.
    pub fn host(&self) -> Arc<PluginHost> {
        self.current.load().host.clone()
    }

    /// The plugin chains in force now for the connections of vhost `vhost` (its index).
    pub fn host_for(&self, vhost: usize) -> Arc<PluginHost> {
        self.current.load().for_vhost(vhost).clone()
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
            vhosts: vhost_hosts(&host, &self.selection),
            host,
            loaded_at: SystemTime::now(),
            policy_digest: policy_digest(&specs, &files),
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

    /// A copy of the reload history.
    pub fn status(&self) -> ReloadStatus {
        self.lock_status().clone()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, ReloadStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The message filter of one subscription, as the plugin set in force prepared it: kept with
/// what it was prepared from, and prepared again (lazily, before the next delivery) once a
/// reload swapped the set. To the router it is one opaque value a subscription carries.
pub struct DeliveryFilter {
    /// The SUBSCRIBE's `selector`, compiled: judged before the plugins, whatever they are.
    selector: Option<crate::selector::Selector>,
    slot: Mutex<FilterSlot>,
    principal: Principal,
    info: SubscriptionInfo,
    /// The subscriber's vhost (its index): whose chains filter its messages.
    vhost: usize,
    /// The session that subscribed (its vhost's name and its id: its filter calls are made
    /// for it).
    context: CallContext,
    /// The SUBSCRIBE's share of the memory budget (its headers are kept here).
    _charge: crate::budget::Charge,
}

/// Why a subscription's filter could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterRefusal {
    /// Its `selector` is malformed (`selector: column N: ...`).
    #[error("{0}")]
    Selector(String),
    /// A message plugin refused the SUBSCRIBE (or failed, failing closed).
    #[error("{0}")]
    Plugin(crate::plugin::Rejection),
}

/// A prepared filter chain (none when no message plugin applies) and its generation.
struct FilterSlot {
    generation: u64,
    filter: Option<Arc<SubscriptionFilter>>,
}

impl DeliveryFilter {
    /// Prepares the filter for a new subscription under the set in force now; `Err(reason)`
    /// when its `selector` is malformed (`selector: column N: ...`, before any plugin is
    /// asked) or a plugin refuses the SUBSCRIBE.
    pub async fn prepare(
        policy: &Policy,
        vhost: &crate::vhost::Vhost,
        context: &CallContext,
        principal: &Principal,
        info: SubscriptionInfo,
        charge: crate::budget::Charge,
    ) -> Result<DeliveryFilter, FilterRefusal> {
        let selector =
            crate::selector::from_subscribe(&info.headers).map_err(FilterRefusal::Selector)?;
        let set = policy.current();
        let filter = set
            .for_vhost(vhost.index)
            .prepare_subscription_in(context, principal, info.clone())
            .await
            .map_err(FilterRefusal::Plugin)?;
        Ok(DeliveryFilter {
            selector,
            slot: Mutex::new(FilterSlot {
                generation: set.generation,
                filter,
            }),
            principal: principal.clone(),
            info,
            vhost: vhost.index,
            context: context.clone(),
            _charge: charge,
        })
    }

    /// A filter that lets everything through, whatever the plugins (tests).
    pub fn none(principal: Principal, info: SubscriptionInfo) -> DeliveryFilter {
        DeliveryFilter {
            selector: None,
            slot: Mutex::new(FilterSlot {
                generation: u64::MAX,
                filter: None,
            }),
            principal,
            info,
            vhost: 0,
            context: CallContext::detached(),
            _charge: Default::default(),
        }
    }

    /// The name of the subscriber's virtual host (what its filter calls are made for).
    pub fn vhost(&self) -> &Arc<str> {
        &self.context.vhost
    }

    /// The subscription's native selector, if its SUBSCRIBE had one.
    pub fn selector(&self) -> Option<&crate::selector::Selector> {
        self.selector.as_ref()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, FilterSlot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The filter chain for the plugin set in force, prepared again when a reload swapped the
    /// set since it was last prepared. If the new set refuses the subscription, the previous
    /// filter stays (the SUBSCRIBE was accepted under it).
    pub async fn current(&self, policy: &Policy) -> Option<Arc<SubscriptionFilter>> {
        let generation = policy.generation();
        {
            let slot = self.slot();
            if slot.generation == generation || slot.generation == u64::MAX {
                return slot.filter.clone();
            }
        }
        // Once per reload: behind a box, so that the plugin call's code and state stay out of
        // the writer's future, which runs the lines above for every delivery.
        let prepare: futures_util::future::BoxFuture<'_, Option<Arc<SubscriptionFilter>>> =
            Box::pin(self.prepare_again(policy));
        prepare.await
    }

    /// [`current`](Self::current) after a reload: the filter chain prepared with the new set.
    async fn prepare_again(&self, policy: &Policy) -> Option<Arc<SubscriptionFilter>> {
        let set = policy.current();
        let prepared = set
            .for_vhost(self.vhost)
            .prepare_subscription_in(&self.context, &self.principal, self.info.clone())
            .await;
        let mut slot = self.slot();
        match prepared {
            Ok(filter) => slot.filter = filter,
            Err(reason) => tracing::warn!(
                %reason,
                generation = set.generation,
                "the reloaded plugins refuse this subscription; it keeps its previous filter"
            ),
        }
        slot.generation = set.generation;
        slot.filter.clone()
    }

    /// The plugin generation it was last prepared with.
    pub fn generation(&self) -> u64 {
        self.slot().generation
    }
}

impl std::fmt::Debug for DeliveryFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryFilter")
            .field("generation", &self.generation())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(names: &[&str]) -> Vec<PluginSpec> {
        let toml: String = names
            .iter()
            .map(|n| {
                format!("[[plugins]]\nname = \"{n}\"\nfile = \"x.wasm\"\nhooks = [\"send\"]\n")
            })
            .collect();
        crate::config::Config::from_toml(&toml).unwrap().plugins
    }

    #[test]
    fn a_reload_may_not_drop_a_plugin_a_vhost_selects() {
        let policy = Policy::new(PluginHost::empty(), specs(&["a", "b"]), Vec::new())
            .with_vhosts(vec![None, Some(vec!["b".into()]), Some(Vec::new())]);
        let names: Vec<Arc<str>> = ["/", "tenant", "bare"].map(Arc::from).to_vec();
        assert_eq!(policy.current().vhosts.len(), 3);
        assert!(policy.check_vhost_plugins(&specs(&["b"]), &names).is_ok());
        let err = policy
            .check_vhost_plugins(&specs(&["a"]), &names)
            .unwrap_err();
        assert!(err.contains("\"tenant\" selects plugin `b`"), "{err}");
        // Installing a set keeps one chain per vhost.
        policy.install(PluginHost::empty(), specs(&["b"]), Vec::new(), 1);
        assert_eq!(policy.current().vhosts.len(), 3);
        assert_eq!(policy.host_for(1).names().count(), 0);
    }

    #[test]
    fn the_policy_digest_follows_what_the_plugins_do_not_where_their_files_are() {
        let digest = |toml: &str, sha: &str| {
            let specs = crate::config::Config::from_toml(toml).unwrap().plugins;
            let files = specs
                .iter()
                .map(|s| PluginFile {
                    name: s.name.clone(),
                    path: s.file.clone(),
                    sha256: sha.to_string(),
                })
                .collect();
            Policy::new(PluginHost::empty(), specs, files)
                .current()
                .policy_digest
                .clone()
        };
        let base = "[[plugins]]\nname = \"r\"\nfile = \"a/r.wasm\"\nhooks = [\"send\"]\n[plugins.config]\nx = 1\ny = [\"p\", \"q\"]\n";
        let same = digest(base, "aa");
        assert_eq!(same.len(), 64);
        // Another path, trace settings, settings in another order: the same policy.
        let moved = "[[plugins]]\nname = \"r\"\nfile = \"/elsewhere/r.wasm\"\nhooks = [\"send\"]\ntrace_sample = 0.5\n[plugins.config]\ny = [\"p\", \"q\"]\nx = 1\n";
        assert_eq!(digest(moved, "aa"), same);
        // Another component, setting or hook: another policy.
        assert_ne!(digest(base, "bb"), same);
        assert_ne!(digest(&base.replace("x = 1", "x = 2"), "aa"), same);
        assert_ne!(
            digest(&base.replace("[\"send\"]", "[\"send\", \"message\"]"), "aa"),
            same
        );
        assert_ne!(digest("", "aa"), same);
    }
}
