//! The plugin host: policy in sandboxed WebAssembly components (WIT in `wit/`) called at CONNECT,
//! SEND, SUBSCRIBE and MESSAGE.
//!
//! This file owns the surface the broker core uses: the config ([`PluginSpec`]), loading a plugin
//! set ([`PluginHost::load`]), the broker-side types and the errors. The hook calls and chains live
//! in `hooks.rs`, the warm-instance pools and limits in `pool.rs`, the engine, deny-all linker and
//! compiled-artifact cache in `engine.rs`, the type conversions in `convert.rs` and the only
//! `bindgen!` in `bindings.rs`. A loaded [`PluginHost`] is immutable: a reload builds a new one
//! and swaps the `Arc` (e.g. in an `ArcSwap`); calls in flight finish on the set they started on.

mod auth;
mod bindings;
mod cache;
pub mod check;
mod convert;
mod engine;
pub(crate) mod glob;
mod hook_stats;
mod hooks;
pub mod kv;
mod pool;
mod rejection;
mod summary;
pub mod template;
pub mod trace;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::config::defaults;

use bindings::types::Manifest;
use bindings::{deliver, lifecycle, redeliver, send};
use pool::{Exports, Limits, Pool};

pub use hook_stats::{HookStats, FAILURE_KINDS, HOOKS, LATENCY_SAMPLE_EVERY};
pub use hooks::{
    RedeliverCause, RedeliverEvent, RedeliverVerdict, SubscriptionFilter, MAX_NACK_HEADERS,
    MAX_REDELIVER_DELAY,
};
pub use pool::FailureKind;
pub use rejection::{is_reason_code, split_reason_code, RejectCause, Rejection, MAX_REASON_CODE};
pub use trace::{Decision, PluginTrace, Traces};

/// The virtual host of every connection until virtual hosts are configured.
pub const DEFAULT_VHOST: &str = "/";

/// The shared [`DEFAULT_VHOST`] (one allocation per process: stores compare it by pointer).
pub fn default_vhost() -> Arc<str> {
    static VHOST: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    VHOST.get_or_init(|| Arc::from(DEFAULT_VHOST)).clone()
}

/// Who a plugin call is made for: what the WIT `context` import answers (`vhost`) and what a
/// traced decision records. A session makes one and passes it to every hook call it makes.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The virtual host of the connection.
    pub vhost: Arc<str>,
    /// The session id (the CONNECTED frame's `session`; empty outside a session).
    pub session: Arc<str>,
}

impl CallContext {
    /// The context of calls for session `session` on virtual host `vhost`.
    pub fn new(vhost: Arc<str>, session: Arc<str>) -> CallContext {
        CallContext { vhost, session }
    }

    /// Calls outside any session (tests, `plugin check`): the default virtual host.
    pub fn detached() -> CallContext {
        CallContext::new(default_vhost(), Arc::from(""))
    }
}

/// Deadline of instantiating and `init` of one instance: long enough for a plugin that parses
/// a large config or builds tables at start, short enough that a looping `init` does not hold
/// up a load or reload noticeably.
pub const INIT_DEADLINE: Duration = Duration::from_secs(1);
/// The optional interface of packed send hooks (see `wit/plugin.wit`).
const SEND_PACKED: &str = "plugboard:plugin/send-packed@0.1.4";
/// The optional interface of batched send hooks (see `wit/plugin.wit`).
const SEND_BATCH: &str = "plugboard:plugin/send-batch@0.1.4";
/// The optional interface of batched send hooks with packed verdicts (see `wit/plugin.wit`).
const SEND_BATCH_PACKED: &str = "plugboard:plugin/send-batch-packed@0.1.4";
/// The optional interface of batched message filters (see `wit/plugin.wit`).
const DELIVER_BATCH: &str = "plugboard:plugin/deliver-batch@0.1.4";

/// One `[[plugins]]` entry of the broker's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// Name used in logs, errors and stats; unique.
    pub name: String,
    /// The component file, relative to the config file's directory.
    pub file: PathBuf,
    /// The hooks this plugin serves; chains run in config order.
    pub hooks: Vec<Hook>,
    /// Destination patterns the send and message hooks apply to (`*` matches anything).
    #[serde(default = "all_destinations")]
    pub destinations: Vec<String>,
    /// What a failed call means: `closed` (deny/reject/skip, the default) or `open` (ignore the plugin).
    #[serde(default)]
    pub failure: FailurePolicy,
    /// Deadline of every call of this plugin, overriding the per-hook defaults.
    pub deadline_ms: Option<u64>,
    /// Memory cap of one instance in MiB (default 16).
    pub memory_mb: Option<u64>,
    /// Most live instances, i.e. concurrent calls (default 16).
    pub max_instances: Option<usize>,
    /// Replace an instance after this many calls (default: never, only after a failure).
    pub recycle_after_calls: Option<u64>,
    /// Who a client is when an authenticator with `failure = "open"` fails: by default
    /// `anonymous`, who may send and subscribe nowhere (never the login the client claimed).
    pub fail_open_principal: Option<FailOpenPrincipal>,
    /// Whether destinations this send plugin routes messages to are exempt from the sender's
    /// `may_send` patterns (default: every routed destination is checked, since a templated
    /// route may let the client choose it). For routers whose targets the operator chose.
    #[serde(default)]
    pub routes_bypass_sender_rights: bool,
    /// Share of this plugin's calls whose decisions are traced, 0 (off, the default) to 1
    /// (every call); switchable live through the admin surface. See [`trace`].
    #[serde(default)]
    pub trace_sample: f64,
    /// How many traced decisions are kept (default 256, at most 10,000).
    pub trace_keep: Option<usize>,
    /// The plugin's key-value store (WIT `kv`): present, it enables one, with these caps per
    /// vhost and persistence (see [`kv`]).
    pub kv: Option<kv::KvSpec>,
    /// The plugin's own configuration, passed to its `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
}

fn all_destinations() -> Vec<String> {
    vec!["*".to_string()]
}

/// The principal an authenticator that fails open admits clients as (`fail_open_principal`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailOpenPrincipal {
    /// Its name (default `anonymous`).
    #[serde(default = "anonymous_name")]
    pub name: String,
    /// Destination patterns it may SEND to (default none).
    #[serde(default)]
    pub may_send: Vec<String>,
    /// Destination patterns it may SUBSCRIBE to (default none).
    #[serde(default)]
    pub may_subscribe: Vec<String>,
}

impl Default for FailOpenPrincipal {
    fn default() -> Self {
        FailOpenPrincipal {
            name: anonymous_name(),
            may_send: Vec::new(),
            may_subscribe: Vec::new(),
        }
    }
}

fn anonymous_name() -> String {
    "anonymous".to_string()
}

/// A hook a plugin serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// CONNECT: who is this client.
    Authenticate,
    /// SEND: route, transform or reject.
    Send,
    /// SUBSCRIBE and MESSAGE: per-subscriber filters and transforms.
    Message,
    /// A queue's message NACKed, left by its consumer or expired: redeliver, delay,
    /// dead-letter or drop it.
    Redeliver,
}

impl Hook {
    /// The hook's config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Authenticate => "authenticate",
            Hook::Send => "send",
            Hook::Message => "message",
            Hook::Redeliver => "redeliver",
        }
    }
}

/// What a failed plugin call means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// CONNECT denied, SEND rejected, MESSAGE skipped, SUBSCRIBE refused.
    #[default]
    Closed,
    /// The plugin is ignored for that call (an authenticator admits the client as its
    /// `fail_open_principal`: by default `anonymous`, with no rights).
    Open,
}

/// A plugin set failed to load; names the plugin and the reason.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The `[[plugins]]` entry is inconsistent.
    #[error("plugin `{plugin}`: {reason}")]
    Spec {
        /// The plugin's `name`.
        plugin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The component file could not be read.
    #[error("plugin `{plugin}`: reading {}: {source}", path.display())]
    Read {
        /// The plugin's `name`.
        plugin: String,
        /// The component file.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The file is not a usable component.
    #[error("plugin `{plugin}`: {} is not a usable plugin component: {reason}", path.display())]
    Compile {
        /// The plugin's `name`.
        plugin: String,
        /// The component file.
        path: PathBuf,
        /// What wasmtime or the host's checks refused.
        reason: String,
    },
    /// Instantiating or `init` failed (e.g. the plugin refused its config).
    #[error("plugin `{plugin}`: {reason}")]
    Init {
        /// The plugin's `name`.
        plugin: String,
        /// The plugin's own message, or the limit it hit.
        reason: String,
    },
}

/// What a CONNECT presented, for the authenticator.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// The `login` header, when sent.
    pub login: Option<Bytes>,
    /// The `passcode` header, when sent.
    pub passcode: Option<Bytes>,
    /// The `host` header, when sent.
    pub host: Option<Bytes>,
    /// The client's address, as the listener saw it.
    pub client_addr: std::net::SocketAddr,
    /// Every CONNECT header exactly as sent.
    pub headers: Vec<(Bytes, Bytes)>,
    /// The listener that accepted the connection.
    pub listener: crate::listen::ListenerKind,
    /// The verified TLS client certificate, when there is one.
    pub client_certificate: Option<Arc<crate::listen::ClientCertificate>>,
    /// Credentials from a WebSocket upgrade, when there were any.
    pub upgrade: Option<crate::listen::UpgradeCredentials>,
    /// True when a connected client re-authenticates (`reauth:true`); only plugins of WIT
    /// 0.1.4 (`authenticate-expiring`) are told.
    pub reauth: bool,
}

impl AuthRequest {
    /// Bytes the request copies into a plugin, roughly (for the plugin's input cap).
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 16)
            .sum();
        let certificate = self.client_certificate.as_ref().map_or(0, |c| {
            c.der.len()
                + c.subject.len()
                + c.common_name.as_ref().map_or(0, String::len)
                + c.subject_alt_names
                    .iter()
                    .map(|n| n.len() + 8)
                    .sum::<usize>()
        });
        headers + certificate + self.upgrade.as_ref().map_or(0, |u| u.len() + 16)
    }
}

/// The outcome of authentication.
#[derive(Debug, Clone)]
pub enum AuthOutcome {
    /// The client is this principal, until this time (milliseconds since the Unix epoch) when
    /// the plugin gave one (only `authenticate-expiring` can).
    Allow(Principal, Option<u64>),
    /// The reason goes into the ERROR frame.
    Deny(String),
}

/// An authenticated client and what it may do (destination patterns, `*` matches anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who the client is (the owner of its durable subscriptions and memory account).
    pub name: String,
    /// Groups the authenticator reported, passed on to the other hooks.
    pub groups: Vec<String>,
    /// Destination patterns it may SEND to.
    pub may_send: Vec<String>,
    /// Destination patterns it may SUBSCRIBE to.
    pub may_subscribe: Vec<String>,
}

impl Principal {
    /// The principal of a broker without an authenticator: may do everything.
    pub fn anonymous() -> Principal {
        Principal::named("anonymous")
    }

    /// A principal with this name that may do everything.
    pub fn named(name: impl Into<String>) -> Principal {
        Principal {
            name: name.into(),
            groups: Vec::new(),
            may_send: all_destinations(),
            may_subscribe: all_destinations(),
        }
    }

    /// Whether this principal may SEND to `destination`.
    pub fn may_send(&self, destination: &[u8]) -> bool {
        glob::any_matches(&self.may_send, destination)
    }

    /// Whether this principal may SUBSCRIBE to `destination`.
    pub fn may_subscribe(&self, destination: &[u8]) -> bool {
        glob::any_matches(&self.may_subscribe, destination)
    }
}

/// A message as the send and message hooks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginMessage {
    /// Where the message goes (or was sent).
    pub destination: Bytes,
    /// Ordered, repeats kept.
    pub headers: Vec<(Bytes, Bytes)>,
    /// The body, unchanged bytes.
    pub body: Bytes,
}

impl PluginMessage {
    /// The message borrowed, as the filters take it.
    pub fn view(&self) -> MessageRef<'_> {
        MessageRef {
            destination: &self.destination,
            headers: &self.headers,
            body: &self.body,
            id: None,
        }
    }
}

/// A message borrowed from wherever the broker keeps it (see [`SubscriptionFilter::filter_batch`]).
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    /// Where the message was sent.
    pub destination: &'a Bytes,
    /// Ordered, repeats kept.
    pub headers: &'a [(Bytes, Bytes)],
    /// The body.
    pub body: &'a Bytes,
    /// The message's `message-id` as its prefix and sequence number, when it has one yet (a
    /// delivery does; decision traces record it).
    pub id: Option<(&'a str, u64)>,
}

/// The outcome of the send chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// One message (kept or rewritten) or several (fan-out); none when a plugin dropped it.
    Deliver(Vec<PluginMessage>),
    /// The sender gets an ERROR for this refusal.
    Reject(Rejection),
}

/// What the send chain made of a batch of SENDs ([`PluginHost::route_batch`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutedBatch {
    /// Every message to deliver, in the order of the SENDs they came from.
    pub messages: Vec<PluginMessage>,
    /// Per SEND that was not rejected, in order: how many of `messages` it became (none when a
    /// plugin dropped it, several after a fan-out).
    pub counts: Vec<usize>,
    /// Why the SEND after those was rejected, when one was (the later SENDs were not run).
    pub rejected: Option<Rejection>,
}

/// A SUBSCRIBE, for the message hooks.
#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    /// The SUBSCRIBE's `id`.
    pub id: Bytes,
    /// The destination subscribed to.
    pub destination: Bytes,
    /// Every SUBSCRIBE header exactly as sent (selectors read theirs from here).
    pub headers: Vec<(Bytes, Bytes)>,
}

/// The outcome of a subscription's filter chain for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterOutcome {
    /// Deliver the message as it is.
    Deliver,
    /// Deliver this rewritten copy to this subscriber instead.
    Rewrite(PluginMessage),
    /// A filter declined it.
    Skip,
    /// A filter failing closed could not judge it (trap, timeout, invalid answer): not a
    /// decline; a queue tries it again, up to its limit.
    Failed,
}

/// Counters of one plugin, for a status surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginStats {
    /// The plugin's `name`.
    pub name: String,
    /// Calls made (including failed ones, excluding refused oversize/busy).
    pub calls: u64,
    /// Calls that trapped.
    pub traps: u64,
    /// Calls stopped at their deadline.
    pub timeouts: u64,
    /// Calls that hit the memory cap.
    pub memory_limit: u64,
    /// Answers the host refused (invalid destination, header, size...).
    pub invalid_output: u64,
    /// Inputs refused before the call for being too large.
    pub oversize: u64,
    /// Calls that waited for an instance of a busy pool (backpressure, not a failure).
    pub busy_waits: u64,
    /// Calls that found no free instance within the busy-pool wait limit (failures).
    pub busy: u64,
    /// Calls that failed because, after failures in a row, no new instance could be made within
    /// the back-off limit.
    pub backoff: u64,
    /// Routes to a destination the sender may not send to, refused (send hook).
    pub routes_refused: u64,
    /// Lines of the `log` import dropped by the rate limit.
    pub log_dropped: u64,
    /// Instances made (the first ones and every replacement).
    pub instances_created: u64,
    /// Instances discarded (after a failure or `recycle_after_calls`).
    pub recycled: u64,
}

/// One loaded plugin.
struct Plugin {
    name: Arc<str>,
    hooks: Vec<Hook>,
    destinations: Vec<glob::Pattern>,
    failure: FailurePolicy,
    /// Who a client is when this authenticator fails open.
    fail_open: Principal,
    /// Destinations this send plugin routes to are not checked against the sender's rights.
    routes_bypass_sender_rights: bool,
    deadline_override: Option<Duration>,
    manifest: Manifest,
    /// Largest input (bytes copied into the guest) a call may carry.
    max_input: usize,
    pool: Pool,
    /// Its decision trace (sampling rate and recent decisions), shared across reloads.
    trace: Arc<PluginTrace>,
}

impl Plugin {
    fn deadline(&self, hook: Hook) -> Duration {
        self.deadline_override.unwrap_or(match hook {
            Hook::Authenticate => defaults::PLUGIN_AUTH_DEADLINE,
            Hook::Send => defaults::PLUGIN_SEND_DEADLINE,
            Hook::Message => defaults::PLUGIN_MESSAGE_DEADLINE,
            Hook::Redeliver => defaults::PLUGIN_REDELIVER_DEADLINE,
        })
    }

    fn applies_to(&self, hook: Hook, destination: &[u8]) -> bool {
        self.hooks.contains(&hook) && self.destinations.iter().any(|p| p.matches(destination))
    }
}

/// A loaded, immutable plugin set.
pub struct PluginHost {
    /// In config order, which is the order of every chain.
    plugins: Vec<Arc<Plugin>>,
    /// The decision traces of its plugins, handed on to the set that replaces it.
    traces: Arc<Traces>,
    /// The plugins' kv stores, handed on to the set that replaces it.
    kv: Arc<kv::Registry>,
}

impl PluginHost {
    /// A host without plugins: everyone is anonymous and nothing is intercepted.
    pub fn empty() -> Arc<PluginHost> {
        Arc::new(PluginHost {
            plugins: Vec::new(),
            traces: Arc::default(),
            kv: kv::Registry::new(),
        })
    }

    /// The kv store gauges of this set's plugins that have a store, in config order.
    pub fn kv_stats(&self) -> Vec<(String, kv::KvStats)> {
        self.plugins
            .iter()
            .filter_map(|p| Some((p.name.to_string(), self.kv.stats(&p.name)?)))
            .collect()
    }

    /// The kv stores of this set's plugins (kept by the sets loaded after it with
    /// [`load_traced`](Self::load_traced)).
    pub fn kv(&self) -> &Arc<kv::Registry> {
        &self.kv
    }

    /// The decision traces of this set's plugins (kept by the sets loaded after it with
    /// [`load_traced`](Self::load_traced)).
    pub fn traces(&self) -> &Arc<Traces> {
        &self.traces
    }

    /// The trace of loaded plugin `name`.
    pub fn trace(&self, name: &str) -> Option<&Arc<PluginTrace>> {
        self.plugins
            .iter()
            .find(|p| &*p.name == name)
            .map(|p| &p.trace)
    }

    /// The names of the loaded plugins, in config order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.iter().map(|p| &*p.name)
    }

    /// Compiles (or loads from the on-disk cache `cache_dir`, keyed by content hash), instantiates
    /// and inits every plugin; any failure names the plugin and the reason. A cache directory
    /// that is not private is not used (the reason is logged) and every plugin is compiled.
    pub async fn load(
        specs: &[PluginSpec],
        base_dir: &Path,
        cache_dir: &Path,
    ) -> Result<Arc<PluginHost>, PluginError> {
        Self::load_traced(
            specs,
            base_dir,
            cache_dir,
            Arc::default(),
            kv::Registry::new(),
        )
        .await
    }

    /// [`load`](Self::load), the plugins' decision traces taken from (and kept in) `traces`:
    /// a reload passes the traces of the set it replaces, so that a rate switched live and the
    /// decisions recorded survive it (see [`Traces::for_plugin`]). So with the plugins' kv
    /// stores in `kv`: a plugin keeps its entries across a reload (the set in force calls
    /// [`kv::Registry::retain`] once it took over).
    pub async fn load_traced(
        specs: &[PluginSpec],
        base_dir: &Path,
        cache_dir: &Path,
        traces: Arc<Traces>,
        kv: Arc<kv::Registry>,
    ) -> Result<Arc<PluginHost>, PluginError> {
        let mut plugins = Vec::with_capacity(specs.len());
        let cache = if specs.is_empty() {
            None
        } else {
            let dir = cache_dir.to_path_buf();
            tokio::task::spawn_blocking(move || cache::ArtifactCache::open_or_log(&dir))
                .await
                .unwrap_or(None)
        };
        let cache = Arc::new(cache);
        for (i, spec) in specs.iter().enumerate() {
            let invalid = |reason: &str| PluginError::Spec {
                plugin: spec.name.clone(),
                reason: reason.into(),
            };
            if specs[..i].iter().any(|s| s.name == spec.name) {
                return Err(invalid("the name is used by another plugin"));
            }
            if spec.hooks.is_empty() {
                return Err(invalid("`hooks` is empty"));
            }
            let auth_before = specs[..i]
                .iter()
                .any(|s| s.hooks.contains(&Hook::Authenticate));
            if spec.hooks.contains(&Hook::Authenticate) && auth_before {
                return Err(invalid("only one plugin may serve the `authenticate` hook"));
            }
            if spec.fail_open_principal.is_some() {
                if !spec.hooks.contains(&Hook::Authenticate) {
                    return Err(invalid(
                        "`fail_open_principal` applies only to an `authenticate` plugin",
                    ));
                }
                if spec.failure != FailurePolicy::Open {
                    return Err(invalid(
                        "`fail_open_principal` applies only with `failure = \"open\"`",
                    ));
                }
            }
            if spec.routes_bypass_sender_rights
                && !spec.hooks.contains(&Hook::Send)
                && !spec.hooks.contains(&Hook::Redeliver)
            {
                return Err(invalid(
                    "`routes_bypass_sender_rights` applies only to a `send` or `redeliver` plugin",
                ));
            }
            let rate = trace::check_rate(spec.trace_sample)
                .map_err(|reason| invalid(&format!("trace_sample: {reason}")))?;
            let keep = trace::check_keep(spec.trace_keep.unwrap_or(trace::DEFAULT_TRACE_KEEP))
                .map_err(|reason| invalid(&reason))?;
            let kv_settings = spec
                .kv
                .as_ref()
                .map(kv::KvSpec::settings)
                .transpose()
                .map_err(|reason| invalid(&reason))?;
            let store =
                kv_settings.map(|settings| (kv.plugin(&Arc::from(spec.name.as_str())), settings));
            plugins.push((
                load_one(spec, base_dir, cache.clone(), store).await?,
                rate,
                keep,
            ));
        }
        // Only a set that loaded whole touches the traces the set in force uses.
        let plugins = plugins
            .into_iter()
            .map(|(mut plugin, rate, keep)| {
                plugin.trace = traces.for_plugin(&plugin.name, rate, keep);
                Arc::new(plugin)
            })
            .collect();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        traces.retain(&names);
        Ok(Arc::new(PluginHost {
            plugins,
            traces,
            kv,
        }))
    }

    /// A host with the plugins of this one named in `names` (the same instances, in this
    /// host's order): the chains of a virtual host that selects them.
    pub fn subset(&self, names: &[String]) -> Arc<PluginHost> {
        Arc::new(PluginHost {
            plugins: self
                .plugins
                .iter()
                .filter(|p| names.iter().any(|n| **n == *p.name))
                .cloned()
                .collect(),
            traces: self.traces.clone(),
            kv: self.kv.clone(),
        })
    }

    /// Counters of every plugin, in config order.
    pub fn stats(&self) -> Vec<PluginStats> {
        self.plugins
            .iter()
            .map(|p| {
                let c = &p.pool.counters;
                PluginStats {
                    name: p.name.to_string(),
                    calls: c.hooks.iter().map(|h| h.calls.load(Relaxed)).sum(),
                    traps: c.traps.load(Relaxed),
                    timeouts: c.timeouts.load(Relaxed),
                    memory_limit: c.memory.load(Relaxed),
                    invalid_output: c.invalid.load(Relaxed),
                    oversize: c.oversize.load(Relaxed),
                    busy_waits: c.busy_waits.load(Relaxed),
                    busy: c.busy.load(Relaxed),
                    backoff: c.backoff.load(Relaxed),
                    routes_refused: c.routes_refused.load(Relaxed),
                    log_dropped: p.pool.log.dropped.load(Relaxed),
                    instances_created: c.instances_created.load(Relaxed),
                    recycled: c.recycled.load(Relaxed),
                }
            })
            .collect()
    }
}

/// The function `func` of the optional interface `interface`, when `spec` serves `hook` and the
/// component exports it (its type is checked when an instance is made).
fn optional_export(
    pre: &wasmtime::component::InstancePre<pool::State>,
    spec: &PluginSpec,
    hook: Hook,
    interface: &str,
    func: &str,
) -> Option<wasmtime::component::ComponentExportIndex> {
    if !spec.hooks.contains(&hook) {
        return None;
    }
    let component = pre.component();
    let index = component.get_export_index(None, interface)?;
    component.get_export_index(Some(&index), func)
}

async fn load_one(
    spec: &PluginSpec,
    base_dir: &Path,
    cache: Arc<Option<cache::ArtifactCache>>,
    kv: Option<(Arc<kv::PluginKv>, kv::KvSettings)>,
) -> Result<Plugin, PluginError> {
    let plugin = spec.name.clone();
    let path = base_dir.join(&spec.file);
    let file = path.clone();
    // Reading and compiling take milliseconds to seconds of CPU and a deep stack: not on a worker.
    let compiled = tokio::task::spawn_blocking(move || {
        let wasm = std::fs::read(&file)?;
        Ok(engine::load_component(&wasm, cache.as_ref().as_ref()))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
    .and_then(|r| r)
    .map_err(|source| PluginError::Read {
        plugin: plugin.clone(),
        path: path.clone(),
        source,
    })?;
    let compile_err = |reason: String| PluginError::Compile {
        plugin: plugin.clone(),
        path: path.clone(),
        reason,
    };
    let (component, cached) = compiled.map_err(compile_err)?;
    tracing::debug!(plugin, cached, "plugin component ready");
    let linker = engine::linker_for(&component).map_err(compile_err)?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| compile_err(format!("{e:#}")))?;
    let missing =
        |hook: &str, e: wasmtime::Error| compile_err(format!("serves `{hook}` but {e:#}"));
    let exports = Exports {
        lifecycle: lifecycle::GuestIndices::new(&pre).map_err(|e| missing("init", e))?,
        auth: (spec.hooks.contains(&Hook::Authenticate))
            .then(|| auth::AuthIndices::new(&pre).map_err(|e| missing("authenticate", e)))
            .transpose()?,
        send: (spec.hooks.contains(&Hook::Send))
            .then(|| send::GuestIndices::new(&pre).map_err(|e| missing("send", e)))
            .transpose()?,
        deliver: (spec.hooks.contains(&Hook::Message))
            .then(|| deliver::GuestIndices::new(&pre).map_err(|e| missing("message", e)))
            .transpose()?,
        redeliver: (spec.hooks.contains(&Hook::Redeliver))
            .then(|| redeliver::GuestIndices::new(&pre).map_err(|e| missing("redeliver", e)))
            .transpose()?,
        // Optional fast paths, used when the component exports them.
        send_packed: optional_export(&pre, spec, Hook::Send, SEND_PACKED, "on-send-packed"),
        send_batch: optional_export(&pre, spec, Hook::Send, SEND_BATCH, "on-send-batch"),
        send_batch_packed: optional_export(
            &pre,
            spec,
            Hook::Send,
            SEND_BATCH_PACKED,
            "on-send-batch-packed",
        ),
        deliver_batch: optional_export(&pre, spec, Hook::Message, DELIVER_BATCH, "filter-batch"),
    };
    let config_json = serde_json::to_string(&spec.config).map_err(|e| PluginError::Spec {
        plugin: plugin.clone(),
        reason: format!("config: {e}"),
    })?;
    let memory = spec
        .memory_mb
        .unwrap_or(defaults::PLUGIN_MEMORY_MB)
        .saturating_mul(1024 * 1024);
    let limits = Limits {
        max_memory: usize::try_from(memory).unwrap_or(usize::MAX),
        max_instances: spec
            .max_instances
            .unwrap_or(defaults::PLUGIN_MAX_INSTANCES)
            .max(1),
        recycle_after: spec.recycle_after_calls.filter(|&n| n > 0),
        init_deadline: INIT_DEADLINE,
    };
    let max_input = limits.max_memory / 4;
    let mut pool = Pool::new(plugin.as_str().into(), pre, exports, config_json, limits);
    if let Some((store, settings)) = kv {
        pool = pool.with_kv(store, settings);
    }
    let (warm, manifest) = pool
        .instantiate()
        .await
        .map_err(|reason| PluginError::Init {
            plugin: plugin.clone(),
            reason,
        })?;
    pool.put_back(warm);
    let fail_open = spec.fail_open_principal.clone().unwrap_or_default();
    let fail_open = convert::principal(bindings::types::Principal {
        name: fail_open.name,
        groups: Vec::new(),
        may_send: fail_open.may_send,
        may_subscribe: fail_open.may_subscribe,
    })
    .map_err(|reason| PluginError::Spec {
        plugin: plugin.clone(),
        reason: format!("fail_open_principal: {reason}"),
    })?;
    if spec.failure == FailurePolicy::Open && spec.hooks.contains(&Hook::Authenticate) {
        tracing::warn!(
            plugin,
            principal = fail_open.name,
            "failure = \"open\" on an authenticator admits clients as this principal when it fails"
        );
    }
    Ok(Plugin {
        name: plugin.as_str().into(),
        hooks: spec.hooks.clone(),
        destinations: spec
            .destinations
            .iter()
            .map(|d| glob::Pattern::new(d))
            .collect(),
        failure: spec.failure,
        fail_open,
        routes_bypass_sender_rights: spec.routes_bypass_sender_rights,
        deadline_override: spec.deadline_ms.map(Duration::from_millis),
        manifest,
        max_input,
        pool,
        // Replaced by the set's shared trace (see `load_traced`).
        trace: Arc::new(PluginTrace::off(&plugin)),
    })
}
