//! What a plugin costs per guest language, through the real `PluginHost` (release build):
//!
//! ```text
//! cargo xtask plugins && cargo run --release -p plugboard --example language_bench
//! ```
//!
//! For the same router written in Rust (header-router, on the SDK), JavaScript (the
//! `plugin new` template, componentize-js) and Python (the template, componentize-py), and for
//! the two filters (Rust `selector`, Python `where-filter`) and the JavaScript `json-router`:
//! - µs per call (median of 5 runs) on a warm instance;
//! - a fresh instance per call (`recycle_after_calls = 1`): instantiate + init + call;
//! - load time from a warm artifact cache, and component / compiled sizes;
//! - memory per instance: anonymous memory (`/proc/self/smaps_rollup`) added by 16 more warm
//!   instances, divided by 16; and the smallest `memory_mb` that loads the plugin and serves a call;
//! - heap growth: how many calls an instance serves before the host replaces it for growing past
//!   3/4 of `memory_mb = 64`.
//!
//! Not a test: the numbers depend on the machine (docs/writing-plugins.md has this machine's).

mod support;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use plugboard::plugin::{PluginHost, Principal, SubscriptionInfo};
use support::{cache, load, msg, root, try_load};

/// Untimed calls before each measurement (at most; see `support::time`).
const WARMUP: u32 = 500;

/// Anonymous memory of this process, in KiB.
fn anonymous_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One plugin under test: its `[[plugins]]` entry (without name) and a call to time.
struct Subject {
    label: &'static str,
    file: &'static str,
    entry: &'static str,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    /// on-send of an urgent order (a rewrite).
    Router,
    /// on-send of an order event with a JSON body (json-router).
    JsonRouter,
    /// filter with the plan for `selector`.
    Filter(&'static str, &'static str),
}

const URGENT_RULE: &str = "[plugins.config]\nrules = [{ destination = \"/queue/orders\", header = \"priority\", value = \"high\", to = [\"/queue/orders.urgent\"] }]\n";

fn spec(subject: &Subject, name: &str, extra: &str) -> String {
    let hooks = match subject.kind {
        Kind::Router | Kind::JsonRouter => "send",
        Kind::Filter(..) => "message",
    };
    format!(
        "[[plugins]]\nname = \"{name}\"\nfile = \"{}\"\nhooks = [\"{hooks}\"]\n{extra}\n{}",
        subject.file, subject.entry
    )
}

async fn one_call(
    host: &PluginHost,
    subject: &Subject,
    filter: Option<&plugboard::plugin::SubscriptionFilter>,
) {
    let alice = Principal::named("alice");
    match subject.kind {
        Kind::Router => {
            let m = msg("/queue/orders", &[("priority", "high"), ("id", "1")], b"{}");
            std::hint::black_box(host.on_send(&alice, m).await);
        }
        Kind::JsonRouter => {
            let m = msg(
                "/queue/events",
                &[],
                br#"{"type":"order.created","customer":{"country":"FR"}}"#,
            );
            std::hint::black_box(host.on_send(&alice, m).await);
        }
        Kind::Filter(..) => {
            let m = msg(
                "/topic/prices",
                &[("symbol", "ACME"), ("price", "120.5"), ("other", "x")],
                b"",
            );
            std::hint::black_box(filter.expect("a plan").filter(&m).await);
        }
    }
}

async fn plan(
    host: &PluginHost,
    subject: &Subject,
) -> Option<Arc<plugboard::plugin::SubscriptionFilter>> {
    let Kind::Filter(header, expr) = subject.kind else {
        return None;
    };
    let sub = SubscriptionInfo {
        id: Bytes::from_static(b"s"),
        destination: Bytes::from_static(b"/topic/prices"),
        headers: vec![(
            Bytes::copy_from_slice(header.as_bytes()),
            Bytes::copy_from_slice(expr.as_bytes()),
        )],
    };
    host.prepare_subscription(&Principal::named("alice"), sub)
        .await
        .expect("accepted")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let subjects = [
        Subject {
            label: "Rust router (header-router, SDK)",
            file: "header-router.wasm",
            entry: URGENT_RULE,
            kind: Kind::Router,
        },
        Subject {
            label: "JavaScript router (template-js)",
            file: "template-js.wasm",
            entry: "",
            kind: Kind::Router,
        },
        Subject {
            label: "Python router (template-python)",
            file: "template-python.wasm",
            entry: "",
            kind: Kind::Router,
        },
        Subject {
            label: "JavaScript json-router (JSON body, regex)",
            file: "json-router.wasm",
            entry: "[plugins.config]\nrules = [{ destination = \"/queue/events\", when = { type = \"^order\\\\.\" }, to = [\"/topic/orders.{customer.country}\"] }]\n",
            kind: Kind::JsonRouter,
        },
        Subject {
            label: "Rust filter (selector)",
            file: "selector.wasm",
            entry: "",
            kind: Kind::Filter("selector", "symbol IN ('ACME', 'INITECH') AND price >= 100"),
        },
        Subject {
            label: "Python filter (where-filter)",
            file: "where-filter.wasm",
            entry: "",
            kind: Kind::Filter("where", "symbol in (\"ACME\", \"INITECH\") and float(price) >= 100"),
        },
    ];
    println!(
        "| plugin | µs/call | fresh instance per call, µs | load (warm cache), ms | component / compiled | anon. memory per instance | smallest memory_mb | calls per recycle at 64 MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for s in &subjects {
        // Compile into the cache first (not timed), then time a warm load.
        drop(load(&spec(s, "warm", "memory_mb = 64")).await);
        let start = Instant::now();
        let host = load(&spec(s, "p", "memory_mb = 64")).await;
        let load_ms = start.elapsed().as_secs_f64() * 1e3;
        let filter = plan(&host, s).await;
        let per_call = support::time(
            WARMUP,
            if matches!(s.file, "header-router.wasm" | "selector.wasm") {
                20_000
            } else {
                2_000
            },
            || one_call(&host, s, filter.as_deref()),
        )
        .await;

        let fresh_host = load(&spec(s, "fresh", "memory_mb = 64\nrecycle_after_calls = 1")).await;
        let fresh_filter = plan(&fresh_host, s).await;
        let fresh = support::time(WARMUP, 100, || {
            one_call(&fresh_host, s, fresh_filter.as_deref())
        })
        .await;
        drop((fresh_filter, fresh_host));

        // Memory: 16 more warm instances (one per loaded plugin; the compiled code is a
        // file-backed mapping, not anonymous memory).
        let copies = 16;
        let before = anonymous_kib();
        let many: String = (0..copies)
            .map(|i| spec(s, &format!("copy{i}"), "memory_mb = 64"))
            .collect();
        let many_host = load(&many).await;
        let per_instance_mib =
            (anonymous_kib().saturating_sub(before)) as f64 / 1024.0 / f64::from(copies);
        drop(many_host);

        // The smallest cap that loads and serves a call.
        let mut smallest = None;
        for mb in [1u64, 2, 4, 8, 12, 16, 24, 32, 48, 64] {
            if let Ok(h) = try_load(&spec(s, "cap", &format!("memory_mb = {mb}"))).await {
                let f = plan(&h, s).await;
                one_call(&h, s, f.as_deref()).await;
                let st = &h.stats()[0];
                if st.traps + st.memory_limit == 0 {
                    smallest = Some(mb);
                    break;
                }
            }
        }

        // Heap growth: calls until the first replacement at memory_mb = 64 (10k calls at most).
        let grow_host = load(&spec(s, "grow", "memory_mb = 64")).await;
        let grow_filter = plan(&grow_host, s).await;
        let mut recycle_at = None;
        for i in 1..=10_000u32 {
            one_call(&grow_host, s, grow_filter.as_deref()).await;
            if grow_host.stats()[0].recycled > 0 {
                recycle_at = Some(i);
                break;
            }
        }

        let size = std::fs::metadata(root().join("target/plugins").join(s.file))
            .map(|m| m.len())
            .unwrap_or(0);
        let compiled: u64 = std::fs::read_dir(cache())
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| {
                let bytes =
                    std::fs::read(root().join("target/plugins").join(s.file)).unwrap_or_default();
                let digest = sha_hex(&bytes);
                e.file_name().to_string_lossy().starts_with(&digest)
            })
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0);
        println!(
            "| {} | {:.2} | {:.0} | {:.1} | {} / {} | {:.2} MiB | {} | {} |",
            s.label,
            per_call,
            fresh,
            load_ms,
            human(size),
            human(compiled),
            per_instance_mib,
            smallest.map_or("> 64".to_string(), |m| m.to_string()),
            recycle_at.map_or("> 10,000".to_string(), |n| n.to_string()),
        );
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{} KB", bytes / 1000)
    }
}

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
