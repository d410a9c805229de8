//! `plugboard plugin check FILE.wasm [--samples FILE]` (`plugin new` is in `template.rs`).
//!
//! `check` tells a plugin author, before deploying, whether the broker would load a component:
//! it inspects the file (a component? which imports? which hooks, typed against the current
//! WIT?), then loads it exactly as the broker does ([`PluginHost::load`]: compile, link with the
//! deny-all linker, instantiate, `init`) with every hook it implements, and runs it on the sample
//! frames of a TOML file, printing each decision. It succeeds only when the component loads, no
//! call failed (trap, timeout, memory cap, invalid output) and every `expect` in the samples held.
//!
//! The samples file (documented in docs/writing-plugins.md; examples under `examples/samples/`):
//!
//! ```toml
//! [plugin]                      # optional: the [[plugins]] settings to load it with
//! memory_mb = 64
//! [plugin.config]               # the plugin's own config table
//! rules = [...]
//!
//! [[connect]]                   # authenticate
//! login = "alice"
//! passcode = "secret"
//! expect = "allow"              # allow | deny
//!
//! [[send]]                      # on-send
//! sender = "alice"              # optional principal name, and `groups = [...]`
//! destination = "/queue/orders"
//! headers = { region = "eu" }   # or [["region", "eu"], ...] to keep order and repeats
//! body = "..."
//! expect = "rewrite"            # keep | rewrite | fan-out | drop | reject
//!
//! [[subscribe]]                 # prepare-subscription, then filter for each message
//! destination = "/topic/prices"
//! headers = { selector = "price > 10" }
//! expect = "filter"             # filter | none | refuse
//! [[subscribe.message]]
//! headers = { price = "12" }
//! expect = "deliver"            # deliver | rewrite | skip
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use wasmtime::component::Component;

use super::bindings::types::{HeaderNeed, Needs};
use super::bindings::{deliver, lifecycle, redeliver, send};
use super::{
    engine, AuthOutcome, AuthRequest, FailOpenPrincipal, FailurePolicy, FilterOutcome, Hook,
    PluginHost, PluginMessage, PluginSpec, Principal, SendOutcome, SubscriptionInfo,
};

/// The WIT interfaces of each hook, as a component names its exports.
const LIFECYCLE: &str = "plugboard:plugin/lifecycle@0.1.4";
const HOOK_EXPORTS: [(Hook, &str); 4] = [
    (Hook::Authenticate, "plugboard:plugin/authenticate@0.1.4"),
    (Hook::Send, "plugboard:plugin/send@0.1.4"),
    (Hook::Message, "plugboard:plugin/deliver@0.1.4"),
    (Hook::Redeliver, "plugboard:plugin/redeliver@0.1.4"),
];

/// Whether export name `name` is `interface` at a semver-compatible version (a plugin built
/// against 0.1.0 or 0.1.1 exports `...@0.1.0` or `...@0.1.1`, which the host finds when it
/// looks up `...@0.1.4`).
fn same_interface(name: &str, interface: &str) -> bool {
    let track = |n: &str| -> Option<(String, String)> {
        let (base, version) = n.rsplit_once('@')?;
        let mut parts = version.split('.');
        let major = parts.next()?;
        let minor = parts.next()?;
        // 0.x versions are compatible within a minor version, others within a major one.
        let track = if major == "0" {
            format!("0.{minor}")
        } else {
            major.to_string()
        };
        Some((base.to_string(), track))
    };
    name == interface || (track(name).is_some() && track(name) == track(interface))
}

/// What `check` found: its printed report and whether the broker would load the component (and
/// every sample ran as expected).
#[derive(Debug)]
pub struct CheckReport {
    /// Whether the component loads and every sample ran as expected.
    pub ok: bool,
    /// The report, one line per check or sample.
    pub text: String,
}

/// Checks `wasm` and runs the samples of `samples` (a TOML file, see the module docs).
/// `cache_dir` is the compiled-artifact cache (as the broker's).
pub async fn check(wasm: &Path, samples: Option<&Path>, cache_dir: &Path) -> CheckReport {
    let mut out = String::new();
    let ok = match run_check(wasm, samples, cache_dir, &mut out).await {
        Ok(ok) => ok,
        Err(reason) => {
            let _ = writeln!(out, "error: {reason}");
            false
        }
    };
    let _ = writeln!(
        out,
        "{}",
        if ok {
            "result: OK, the broker would load this plugin"
        } else {
            "result: FAILED"
        }
    );
    CheckReport { ok, text: out }
}

/// What the static inspection found.
struct Inspection {
    hooks: Vec<Hook>,
    lines: Vec<String>,
    cached: bool,
    /// Why the cache directory was not used, if it was not.
    cache_refused: Option<String>,
}

/// Reads and compiles the component, checks its imports and which hooks it exports with the
/// current WIT's types. Blocking.
fn inspect(wasm: &Path, cache_dir: &Path) -> Result<Inspection, String> {
    let bytes = std::fs::read(wasm).map_err(|e| format!("reading {}: {e}", wasm.display()))?;
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 0x01, 0]) => {}
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            return Err(
                "this is a core WebAssembly module, not a component: build for \
                        wasm32-wasip2, or wrap it with `wasm-tools component new`"
                    .into(),
            )
        }
        Some([0, b'a', b's', b'm', ..]) => {
            return Err("unsupported WebAssembly binary version (not a component)".into())
        }
        _ => return Err("not a WebAssembly file (no `\\0asm` header)".into()),
    }
    let mut lines = vec![format!("file: {} ({} bytes)", wasm.display(), bytes.len())];
    let (cache, cache_refused) = match super::cache::ArtifactCache::open(cache_dir) {
        Ok(cache) => (Some(cache), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let (component, cached): (Component, bool) = engine::load_component(&bytes, cache.as_ref())?;
    let engine = engine::engine();
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let linker = engine::linker_for(&component)?;
    let stubbed: Vec<&String> = imports
        .iter()
        .filter(|n| !n.starts_with("plugboard:plugin/"))
        .collect();
    if stubbed.is_empty() {
        lines.push("imports: only what the host provides".into());
    } else {
        lines.push(format!(
            "imports: {} WASI interface(s), each defined as a trap except \
             wasi:random/insecure-seed (calling the others fails the call): {}",
            stubbed.len(),
            stubbed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| format!("linking: {e:#}"))?;
    if let Err(e) = lifecycle::GuestIndices::new(&pre) {
        return Err(if exports.iter().any(|n| same_interface(n, LIFECYCLE)) {
            format!("exports {LIFECYCLE}, but not as the current WIT defines it: {e:#}")
        } else {
            format!(
                "does not export {LIFECYCLE}, so it is not a Plugboard plugin (of \
                 plugboard:plugin@0.1.4); its exports: {}",
                if exports.is_empty() {
                    "none".to_string()
                } else {
                    exports.join(", ")
                }
            )
        });
    }
    let mut hooks = Vec::new();
    for (hook, interface) in HOOK_EXPORTS {
        let typed = match hook {
            Hook::Authenticate => {
                super::auth::AuthIndices::new(&pre).map(|i| i.interface(interface))
            }
            Hook::Send => send::GuestIndices::new(&pre).map(|_| interface),
            Hook::Message => deliver::GuestIndices::new(&pre).map(|_| interface),
            Hook::Redeliver => redeliver::GuestIndices::new(&pre).map(|_| interface),
        };
        match typed {
            Ok(used) => {
                hooks.push(hook);
                lines.push(format!("hook {}: implemented ({used})", hook.as_str()));
            }
            Err(e)
                if exports.iter().any(|n| {
                    same_interface(n, interface)
                        || (hook == Hook::Authenticate
                            && (same_interface(n, super::auth::AUTHENTICATE_PEER)
                                || same_interface(n, super::auth::AUTHENTICATE_EXPIRING)))
                }) =>
            {
                return Err(format!(
                    "exports {interface}, but not as the current WIT defines it: {e:#}"
                ))
            }
            Err(_) => lines.push(format!("hook {}: not implemented", hook.as_str())),
        }
    }
    if hooks.is_empty() {
        return Err("exports no hook (authenticate, send or deliver)".into());
    }
    Ok(Inspection {
        hooks,
        lines,
        cached,
        cache_refused,
    })
}

/// `[plugin]` of a samples file: the `[[plugins]]` settings other than name, file and hooks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleSpec {
    #[serde(default)]
    destinations: Option<Vec<String>>,
    #[serde(default)]
    failure: Option<FailurePolicy>,
    deadline_ms: Option<u64>,
    memory_mb: Option<u64>,
    max_instances: Option<usize>,
    recycle_after_calls: Option<u64>,
    fail_open_principal: Option<FailOpenPrincipal>,
    #[serde(default)]
    routes_bypass_sender_rights: bool,
    #[serde(default)]
    config: toml::Table,
}

/// A samples file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Samples {
    #[serde(default)]
    plugin: SampleSpec,
    #[serde(default)]
    connect: Vec<ConnectSample>,
    #[serde(default)]
    send: Vec<SendSample>,
    #[serde(default)]
    subscribe: Vec<SubscribeSample>,
}

/// Headers as a table (`{ a = "1" }`) or as pairs (`[["a", "1"], ["a", "2"]]`, order and repeats kept).
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum SampleHeaders {
    #[default]
    None,
    Pairs(Vec<(String, String)>),
    Table(BTreeMap<String, String>),
}

impl SampleHeaders {
    fn to_bytes(&self) -> Vec<(Bytes, Bytes)> {
        let pairs: Vec<(&String, &String)> = match self {
            SampleHeaders::None => Vec::new(),
            SampleHeaders::Pairs(p) => p.iter().map(|(n, v)| (n, v)).collect(),
            SampleHeaders::Table(t) => t.iter().collect(),
        };
        pairs
            .into_iter()
            .map(|(n, v)| (Bytes::from(n.clone()), Bytes::from(v.clone())))
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectSample {
    login: Option<String>,
    passcode: Option<String>,
    host: Option<String>,
    #[serde(default)]
    headers: SampleHeaders,
    expect: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendSample {
    sender: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    destination: String,
    #[serde(default)]
    headers: SampleHeaders,
    #[serde(default)]
    body: String,
    expect: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeSample {
    subscriber: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    id: Option<String>,
    destination: String,
    #[serde(default)]
    headers: SampleHeaders,
    expect: Option<String>,
    #[serde(default)]
    message: Vec<MessageSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageSample {
    destination: Option<String>,
    #[serde(default)]
    headers: SampleHeaders,
    #[serde(default)]
    body: String,
    expect: Option<String>,
}

fn principal(name: &Option<String>, groups: &[String]) -> Principal {
    let mut p = Principal::named(name.as_deref().unwrap_or("anonymous"));
    p.groups = groups.to_vec();
    p
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `-> /queue/x, set a=1, removed b, body 12 bytes`: what changed from `before` to `after`.
fn changes(before: &PluginMessage, after: &PluginMessage) -> String {
    let mut parts = Vec::new();
    if after.destination != before.destination {
        parts.push(format!("-> {}", show(&after.destination)));
    }
    for (n, v) in &after.headers {
        if !before.headers.iter().any(|(bn, bv)| bn == n && bv == v) {
            parts.push(format!("set {}={}", show(n), show(v)));
        }
    }
    for (n, _) in &before.headers {
        let removed = format!("removed {}", show(n));
        if !after.headers.iter().any(|(an, _)| an == n) && !parts.contains(&removed) {
            parts.push(removed);
        }
    }
    if after.body != before.body {
        let body = show(&after.body);
        let shown: String = body.chars().take(60).collect();
        parts.push(format!(
            "body {:?}{}",
            shown,
            if body.chars().count() > 60 { "..." } else { "" }
        ));
    }
    if parts.is_empty() {
        "no change".into()
    } else {
        parts.join(", ")
    }
}

fn needs_text(needs: &Needs) -> String {
    let headers = match &needs.headers {
        HeaderNeed::None => "no headers".to_string(),
        HeaderNeed::All => "all headers".to_string(),
        HeaderNeed::Named(n) if n.is_empty() => "no headers".to_string(),
        HeaderNeed::Named(n) => format!("headers {}", n.join(", ")),
    };
    format!("{headers}{}", if needs.body { " + body" } else { "" })
}

/// Compares a decision with the sample's `expect`, counting mismatches.
fn verdict(
    out: &mut String,
    failures: &mut usize,
    label: &str,
    got: &str,
    detail: &str,
    expect: &Option<String>,
) {
    let mark = match expect {
        Some(e) if e == got => " [as expected]".to_string(),
        Some(e) => {
            *failures += 1;
            format!(" [MISMATCH: expected {e}]")
        }
        None => String::new(),
    };
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    let _ = writeln!(out, "  {label} -> {got}{detail}{mark}");
}

async fn run_check(
    wasm: &Path,
    samples_path: Option<&Path>,
    cache_dir: &Path,
    out: &mut String,
) -> Result<bool, String> {
    let samples: Samples = match samples_path {
        None => Samples::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("samples {}: {e}", path.display()))?
        }
    };
    let started = Instant::now();
    let (file, cache) = (wasm.to_path_buf(), cache_dir.to_path_buf());
    let inspection = tokio::task::spawn_blocking(move || inspect(&file, &cache))
        .await
        .map_err(|e| e.to_string())??;
    for line in &inspection.lines {
        let _ = writeln!(out, "{line}");
    }
    let spec_in = samples.plugin;
    let name = wasm
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let spec = PluginSpec {
        name,
        file: PathBuf::from(wasm.file_name().unwrap_or_default()),
        hooks: inspection.hooks.clone(),
        destinations: spec_in.destinations.unwrap_or_else(|| vec!["*".into()]),
        failure: spec_in.failure.unwrap_or_default(),
        deadline_ms: spec_in.deadline_ms,
        memory_mb: spec_in.memory_mb,
        max_instances: spec_in.max_instances,
        recycle_after_calls: spec_in.recycle_after_calls,
        fail_open_principal: spec_in.fail_open_principal,
        routes_bypass_sender_rights: spec_in.routes_bypass_sender_rights,
        trace_sample: 0.0,
        trace_keep: None,
        // A plugin that uses the kv store gets one (memory only, default caps) for the check.
        kv: Some(super::kv::KvSpec::default()),
        config: spec_in.config,
    };
    let base = wasm.parent().unwrap_or(Path::new("."));
    let host: Arc<PluginHost> = PluginHost::load(std::slice::from_ref(&spec), base, cache_dir)
        .await
        .map_err(|e| e.to_string())?;
    let _ = writeln!(
        out,
        "load: OK in {} ms ({}; instantiate + init with {} config)",
        started.elapsed().as_millis(),
        match (&inspection.cache_refused, inspection.cached) {
            (Some(why), _) => format!("compiled now; cache not used: {why}"),
            (None, true) => "compiled artifact from the cache".to_string(),
            (None, false) => "compiled now".to_string(),
        },
        if spec.config.is_empty() {
            "an empty"
        } else {
            "the samples'"
        }
    );
    let size = std::fs::metadata(wasm).map_or(0, |m| m.len());
    if size > 4_000_000 && (spec.memory_mb.is_none() || spec.deadline_ms.is_none()) {
        let _ = writeln!(
            out,
            "note: a {} MB component usually embeds an interpreter (JavaScript, Python): give it \
             `memory_mb = 64` (its instances start with 10-20 MiB) and `deadline_ms` of 50-100 (a \
             fresh instance takes 1-2 ms, within the call's deadline)",
            size / 1_000_000
        );
    }
    let plugin = &host.plugins[0];
    let _ = writeln!(
        out,
        "manifest: send reads {}; deliver reads {}",
        needs_text(&plugin.manifest.send),
        needs_text(&plugin.manifest.deliver)
    );

    let mut failures = 0usize;
    let total = samples.connect.len() + samples.send.len() + samples.subscribe.len();
    if total > 0 {
        let _ = writeln!(out, "samples:");
    }
    for (i, c) in samples.connect.iter().enumerate() {
        let label = format!(
            "connect #{} login={}",
            i + 1,
            c.login.as_deref().unwrap_or("-")
        );
        if !spec.hooks.contains(&Hook::Authenticate) {
            let _ = writeln!(out, "  {label}: skipped, the plugin does not authenticate");
            continue;
        }
        let req = AuthRequest {
            login: c.login.clone().map(Bytes::from),
            passcode: c.passcode.clone().map(Bytes::from),
            host: c.host.clone().map(Bytes::from),
            client_addr: "127.0.0.1:50000".parse().expect("a valid address"),
            headers: c.headers.to_bytes(),
            listener: crate::listen::ListenerKind::Tcp,
            client_certificate: None,
            upgrade: None,
            reauth: false,
        };
        let (got, detail) = match host.authenticate(req).await {
            AuthOutcome::Allow(p, expiry) => (
                "allow",
                format!(
                    "{} groups=[{}] may-send=[{}] may-subscribe=[{}]{}",
                    p.name,
                    p.groups.join(","),
                    p.may_send.join(","),
                    p.may_subscribe.join(","),
                    expiry.map_or(String::new(), |ms| format!(" expires-at-ms={ms}"))
                ),
            ),
            AuthOutcome::Deny(reason) => ("deny", reason),
        };
        verdict(out, &mut failures, &label, got, &detail, &c.expect);
    }
    for (i, s) in samples.send.iter().enumerate() {
        let label = format!("send #{} {}", i + 1, s.destination);
        if !spec.hooks.contains(&Hook::Send) {
            let _ = writeln!(out, "  {label}: skipped, the plugin does not serve send");
            continue;
        }
        let msg = PluginMessage {
            destination: Bytes::from(s.destination.clone()),
            headers: s.headers.to_bytes(),
            body: Bytes::from(s.body.clone()),
        };
        let sender = principal(&s.sender, &s.groups);
        let (got, detail) = if !host.intercepts_send(&msg.destination) {
            ("keep", "no plugin destination matches".to_string())
        } else {
            match host.on_send(&sender, msg.clone()).await {
                SendOutcome::Reject(rejection) => ("reject", rejection.reason),
                SendOutcome::Deliver(list) if list.is_empty() => ("drop", String::new()),
                SendOutcome::Deliver(list) if list.len() == 1 && list[0] == msg => {
                    ("keep", String::new())
                }
                SendOutcome::Deliver(list) if list.len() == 1 => {
                    ("rewrite", changes(&msg, &list[0]))
                }
                SendOutcome::Deliver(list) => (
                    "fan-out",
                    list.iter()
                        .map(|m| changes(&msg, m))
                        .collect::<Vec<_>>()
                        .join(" | "),
                ),
            }
        };
        verdict(out, &mut failures, &label, got, &detail, &s.expect);
    }
    for (i, s) in samples.subscribe.iter().enumerate() {
        let label = format!("subscribe #{} {}", i + 1, s.destination);
        if !spec.hooks.contains(&Hook::Message) {
            let _ = writeln!(out, "  {label}: skipped, the plugin does not serve message");
            continue;
        }
        let info = SubscriptionInfo {
            id: Bytes::from(s.id.clone().unwrap_or_else(|| format!("sub-{}", i + 1))),
            destination: Bytes::from(s.destination.clone()),
            headers: s.headers.to_bytes(),
        };
        let subscriber = principal(&s.subscriber, &s.groups);
        let filter = match host.prepare_subscription(&subscriber, info).await {
            Err(rejection) => {
                verdict(
                    out,
                    &mut failures,
                    &label,
                    "refuse",
                    &rejection.reason,
                    &s.expect,
                );
                continue;
            }
            Ok(None) => {
                verdict(
                    out,
                    &mut failures,
                    &label,
                    "none",
                    "no filter: every message is delivered",
                    &s.expect,
                );
                None
            }
            Ok(Some(filter)) => {
                verdict(
                    out,
                    &mut failures,
                    &label,
                    "filter",
                    "a filter runs for every message",
                    &s.expect,
                );
                Some(filter)
            }
        };
        for (j, m) in s.message.iter().enumerate() {
            let msg = PluginMessage {
                destination: Bytes::from(
                    m.destination
                        .clone()
                        .unwrap_or_else(|| s.destination.clone()),
                ),
                headers: m.headers.to_bytes(),
                body: Bytes::from(m.body.clone()),
            };
            let label = format!("  message #{}", j + 1);
            let (got, detail) = match &filter {
                None => ("deliver", String::new()),
                Some(f) => match f.filter(&msg).await {
                    FilterOutcome::Deliver => ("deliver", String::new()),
                    FilterOutcome::Skip => ("skip", String::new()),
                    FilterOutcome::Failed => ("failed", String::new()),
                    FilterOutcome::Rewrite(new) => ("rewrite", changes(&msg, &new)),
                },
            };
            verdict(out, &mut failures, &label, got, &detail, &m.expect);
        }
    }

    let stats = &host.stats()[0];
    let failed_calls = stats.traps
        + stats.timeouts
        + stats.memory_limit
        + stats.invalid_output
        + stats.oversize
        + stats.busy
        + stats.backoff;
    let _ = writeln!(
        out,
        "calls: {} (traps {}, timeouts {}, memory cap {}, invalid output {}, oversize {}, busy {}, \
         back-off {}); instances created {}, replaced {}",
        stats.calls,
        stats.traps,
        stats.timeouts,
        stats.memory_limit,
        stats.invalid_output,
        stats.oversize,
        stats.busy,
        stats.backoff,
        stats.instances_created,
        stats.recycled
    );
    let regrown = stats.recycled.saturating_sub(failed_calls);
    if regrown > 0 && spec.recycle_after_calls.is_none() {
        let _ = writeln!(
            out,
            "warning: {regrown} instance(s) were replaced for growing past 3/4 of the memory cap \
             ({} MiB): set `memory_mb` higher (interpreted languages start at 10-20 MiB)",
            spec.memory_mb
                .unwrap_or(crate::config::defaults::PLUGIN_MEMORY_MB)
        );
    }
    if failed_calls > 0 {
        let _ = writeln!(
            out,
            "error: {failed_calls} call(s) failed (details in the log on stderr)"
        );
    }
    if failures > 0 {
        let _ = writeln!(
            out,
            "error: {failures} sample(s) did not decide as expected"
        );
    }
    Ok(failed_calls == 0 && failures == 0)
}

/// The compiled-artifact cache of `plugin check`: `$XDG_CACHE_HOME/plugboard/check` or
/// `$HOME/.cache/plugboard/check`, created with mode 0700 and used only while it is private (as
/// the broker's). Never a shared directory such as /tmp: without a home, a fresh directory of
/// this process is used.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        });
    match base {
        Some(base) => base.join("plugboard").join("check"),
        None => std::env::temp_dir().join(format!(
            "plugboard-check-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        )),
    }
}
