//! Plugins in other languages, through the real host: the JavaScript `json-router`
//! (componentize-js) and the Python `where-filter` (componentize-py), built by `cargo xtask
//! plugins` like the Rust ones; and the author tools `plugboard plugin check` and `plugboard
//! plugin new`.
//!
//! Compiling a JavaScript or Python component takes 20–45 s in a debug build, so every test
//! first waits for [`warm`], which compiles each into the shared artifact cache once; the tests
//! then load them from the cache in milliseconds.

mod plugin_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

use bytes::Bytes;
use plugboard::plugin::{FilterOutcome, SendOutcome, SubscriptionInfo};
use plugin_support::{
    alice, cache_dir, header, header_list, load, msg, plugins_dir, workspace_root,
};

const JSON_ROUTER: &str = r#"
[[plugins]]
name = "json-router"
file = "json-router.wasm"
hooks = ["send"]
destinations = ["/queue/events"]
memory_mb = 64
deadline_ms = 100
[plugins.config]
reject_invalid_json = true
rules = [
  { destination = "/queue/events", when = { "header:priority" = "^high$" }, to = ["/queue/urgent", "/queue/audit"] },
  { destination = "/queue/events", when = { type = "^order\\.", "customer.country" = "^(DE|FR)$" }, to = ["/topic/orders.eu.{type}"] },
  { destination = "/queue/events", when = { type = "^order\\." }, to = ["/topic/orders.{customer.country}"] },
]
"#;

const WHERE_FILTER: &str = r#"
[[plugins]]
name = "where-filter"
file = "where-filter.wasm"
hooks = ["message"]
memory_mb = 64
# An interpreter needs more than the 5 ms default: the first call of a fresh instance (after a
# recycle) instantiates it within the call's deadline.
deadline_ms = 100
"#;

/// Builds the components and compiles the JavaScript and Python ones into the cache, once.
fn warm() {
    static WARM: Once = Once::new();
    WARM.call_once(|| {
        plugins_dir();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            // Concurrently: each compiles on its own blocking thread.
            let (a, b) = tokio::join!(load(JSON_ROUTER), load(WHERE_FILTER));
            drop((a, b));
        });
    });
}

fn destinations(outcome: &SendOutcome) -> Vec<String> {
    match outcome {
        SendOutcome::Deliver(list) => list
            .iter()
            .map(|m| String::from_utf8_lossy(&m.destination).into_owned())
            .collect(),
        SendOutcome::Reject(reason) => vec![format!("reject: {reason}")],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_router_routes_by_json_body_and_headers() {
    tokio::task::spawn_blocking(warm).await.unwrap();
    let host = load(JSON_ROUTER).await;
    let me = alice();
    let send = |headers: &[(&str, &str)], body: &str| {
        let m = msg("/queue/events", headers, body);
        let host = host.clone();
        let me = me.clone();
        async move { destinations(&host.on_send(&me, m).await) }
    };
    assert_eq!(
        send(
            &[],
            r#"{"type":"order.created","customer":{"country":"FR"}}"#
        )
        .await,
        ["/topic/orders.eu.order.created"]
    );
    assert_eq!(
        send(&[], r#"{"type":"order.paid","customer":{"country":"US"}}"#).await,
        ["/topic/orders.US"]
    );
    assert_eq!(
        send(&[("priority", "high")], r#"{"type":"alert"}"#).await,
        ["/queue/urgent", "/queue/audit"]
    );
    assert_eq!(
        send(&[], r#"{"type":"user.created"}"#).await,
        ["/queue/events"]
    );
    assert_eq!(
        send(&[], "not json").await,
        ["reject: the body is not JSON"]
    );
    // A templated field that is not a plain word cannot make a destination.
    assert_eq!(
        send(&[], r#"{"type":"order.x","customer":{"country":"../x"}}"#).await,
        ["reject: field `customer.country` cannot be part of a destination"]
    );
    // The headers and body of a rewritten message are kept.
    let m = msg(
        "/queue/events",
        &[("priority", "low"), ("trace", "t1")],
        r#"{"type":"order.created","customer":{"country":"DE"}}"#,
    );
    let SendOutcome::Deliver(out) = host.on_send(&me, m.clone()).await else {
        panic!("rejected")
    };
    assert_eq!(header(&out[0], "trace"), Some(&b"t1"[..]));
    assert_eq!(out[0].body, m.body);
    // Other destinations are not intercepted at all.
    assert!(!host.intercepts_send(b"/queue/other"));
    let stats = &host.stats()[0];
    assert_eq!(stats.traps + stats.timeouts + stats.invalid_output, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_router_refuses_a_bad_config_with_its_reason() {
    tokio::task::spawn_blocking(warm).await.unwrap();
    let bad = JSON_ROUTER.replace("^high$", "(unclosed");
    let err = plugin_support::try_load(&bad).await.err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("json-router")
            && text.contains("init: config: rules[0].when.header:priority"),
        "{text}"
    );
}

fn subscription(headers: &[(&str, &str)]) -> SubscriptionInfo {
    SubscriptionInfo {
        id: Bytes::from_static(b"sub-1"),
        destination: Bytes::from_static(b"/topic/prices"),
        headers: header_list(headers),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_filter_filters_per_subscriber() {
    tokio::task::spawn_blocking(warm).await.unwrap();
    let host = load(WHERE_FILTER).await;
    let me = alice();
    let filter = host
        .prepare_subscription(
            &me,
            subscription(&[(
                "where",
                r#"symbol in ("ACME", "INITECH") and float(price) >= 100"#,
            )]),
        )
        .await
        .expect("accepted")
        .expect("a filter");
    let price = |symbol: &str, price: &str| {
        msg(
            "/topic/prices",
            &[("symbol", symbol), ("price", price), ("other", "x")],
            "",
        )
    };
    assert_eq!(
        filter.filter(&price("ACME", "120.5")).await,
        FilterOutcome::Deliver
    );
    assert_eq!(
        filter.filter(&price("ACME", "99")).await,
        FilterOutcome::Skip
    );
    assert_eq!(
        filter.filter(&price("UMBRELLA", "500")).await,
        FilterOutcome::Skip
    );
    // A missing header is None; float(None) fails, and a failing expression skips.
    let no_price = msg("/topic/prices", &[("symbol", "ACME")], "");
    assert_eq!(filter.filter(&no_price).await, FilterOutcome::Skip);

    // The body is passed only to filters that read it.
    let news = host
        .prepare_subscription(
            &me,
            subscription(&[(
                "where",
                r#"lower(region) == "eu" and "merger" in lower(body)"#,
            )]),
        )
        .await
        .unwrap()
        .unwrap();
    let m = msg("/topic/prices", &[("region", "EU")], "Big Merger announced");
    assert_eq!(news.filter(&m).await, FilterOutcome::Deliver);

    // No `where` header: no filter, deliveries cost nothing.
    assert!(host
        .prepare_subscription(&me, subscription(&[]))
        .await
        .unwrap()
        .is_none());
    // Malformed and disallowed expressions refuse the SUBSCRIBE and say where.
    let err = host
        .prepare_subscription(&me, subscription(&[("where", "price >")]))
        .await
        .err()
        .unwrap();
    assert!(err.reason.starts_with("where: column "), "{err}");
    let err = host
        .prepare_subscription(&me, subscription(&[("where", r#"__import__("os")"#)]))
        .await
        .err()
        .unwrap();
    assert!(
        err.reason
            .contains("only int, float, str, len, lower, upper may be called"),
        "{err}"
    );
    let err = host
        .prepare_subscription(&me, subscription(&[("where", "price.__class__")]))
        .await
        .err()
        .unwrap();
    assert!(err.reason.contains("Attribute is not allowed"), "{err}");
    let stats = &host.stats()[0];
    assert_eq!(
        stats.traps + stats.timeouts + stats.invalid_output,
        0,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_filter_survives_thousands_of_calls_through_recycling() {
    tokio::task::spawn_blocking(warm).await.unwrap();
    // A small cap: the interpreter's heap grows, and the host replaces an instance that grew
    // past 3/4 of it after a successful call, before it can fail one.
    let host =
        load(&WHERE_FILTER.replace("deadline_ms", "recycle_after_calls = 1000\ndeadline_ms")).await;
    let filter = host
        .prepare_subscription(&alice(), subscription(&[("where", "int(n) % 2 == 0")]))
        .await
        .unwrap()
        .unwrap();
    for i in 0..3000u32 {
        let n = i.to_string();
        let m = msg("/topic/prices", &[("n", &n)], "");
        let expected = if i % 2 == 0 {
            FilterOutcome::Deliver
        } else {
            FilterOutcome::Skip
        };
        assert_eq!(filter.filter(&m).await, expected, "call {i}");
    }
    let stats = &host.stats()[0];
    assert_eq!(
        stats.traps + stats.timeouts + stats.memory_limit,
        0,
        "{stats:?}"
    );
    assert!(stats.recycled >= 2, "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// `plugboard plugin check` and `plugboard plugin new`

fn plugboard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plugboard"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("running plugboard")
}

fn check(file: &Path, samples: Option<&Path>) -> (bool, String) {
    let cache = cache_dir();
    let mut args = vec![
        "plugin".to_string(),
        "check".into(),
        file.display().to_string(),
        "--cache-dir".into(),
        cache.display().to_string(),
    ];
    if let Some(s) = samples {
        args.extend(["--samples".into(), s.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = plugboard(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn scratch(name: &str) -> PathBuf {
    let dir = workspace_root().join("target/tmp/languages").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Builds a Rust project for wasm32-wasip2 in the plugins' shared target dir (so the SDK and
/// wit-bindgen are not compiled again), returning the component.
fn build_rust(project: &Path, crate_name: &str, bin: bool) -> PathBuf {
    // The workspace's lock file pins the same dependency versions the plugins were built with.
    std::fs::copy(
        workspace_root().join("Cargo.lock"),
        project.join("Cargo.lock"),
    )
    .unwrap();
    let target = workspace_root().join("target/plugin-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(project)
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running cargo");
    assert!(status.success(), "building {}", project.display());
    // A library's file name uses `_`, a binary's keeps the package name.
    let name = if bin {
        crate_name.to_string()
    } else {
        crate_name.replace('-', "_")
    };
    let built = target
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(built.is_file(), "{}", built.display());
    built
}

#[test]
fn plugin_check_accepts_plugins_and_explains_what_it_refuses() {
    warm();
    let dir = plugins_dir();
    // A Rust plugin without samples: it loads, and the report names its hooks.
    let (ok, text) = check(&dir.join("header-router.wasm"), None);
    assert!(ok, "{text}");
    assert!(text.contains("hook send: implemented"), "{text}");
    assert!(text.contains("hook message: not implemented"), "{text}");
    assert!(text.contains("result: OK"), "{text}");

    // JavaScript and Python plugins on the example samples: every decision as expected.
    let examples = workspace_root().join("examples/samples");
    for name in ["json-router", "where-filter"] {
        let samples = examples.join(format!("{name}.toml"));
        let (ok, text) = check(&dir.join(format!("{name}.wasm")), Some(&samples));
        assert!(ok, "{text}");
        assert!(
            text.contains("[as expected]") && !text.contains("MISMATCH"),
            "{text}"
        );
        assert!(
            text.contains("imports: only what the host provides"),
            "{text}"
        );
    }

    // A sample that decides otherwise fails the check and says so.
    let scratch = scratch("check");
    let wrong = scratch.join("wrong.toml");
    std::fs::write(
        &wrong,
        "[[send]]\ndestination = \"/queue/events\"\nbody = \"{}\"\nexpect = \"reject\"\n",
    )
    .unwrap();
    let (ok, text) = check(&dir.join("header-router.wasm"), Some(&wrong));
    assert!(!ok && text.contains("MISMATCH: expected reject"), "{text}");

    // A config the plugin refuses: the plugin's own reason.
    let bad_config = scratch.join("bad-config.toml");
    std::fs::write(&bad_config, "[plugin.config]\ndefault = [\"nope\"]\n").unwrap();
    let (ok, text) = check(&dir.join("header-router.wasm"), Some(&bad_config));
    assert!(!ok && text.contains("must start with `/`"), "{text}");

    // Garbage, a core module, a missing file.
    let garbage = scratch.join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm at all").unwrap();
    let (ok, text) = check(&garbage, None);
    assert!(!ok && text.contains("not a WebAssembly file"), "{text}");
    let core = scratch.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let (ok, text) = check(&core, None);
    assert!(
        !ok && text.contains("core WebAssembly module, not a component"),
        "{text}"
    );
    let (ok, text) = check(&scratch.join("missing.wasm"), None);
    assert!(!ok && text.contains("reading"), "{text}");

    // A component of another world: a WASI command (`fn main`).
    let project = scratch.join("hello");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        "[package]\nname = \"plugboard-hello-command\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        project.join("src/main.rs"),
        "fn main() { println!(\"hello\"); }\n",
    )
    .unwrap();
    let command = build_rust(&project, "plugboard-hello-command", true);
    let (ok, text) = check(&command, None);
    assert!(!ok, "{text}");
    assert!(
        text.contains("does not export plugboard:plugin/lifecycle@0.1.4")
            && text.contains("wasi:cli/run"),
        "{text}"
    );
}

#[test]
fn plugin_new_rust_project_builds_and_passes_its_own_check() {
    plugins_dir(); // the SDK and wit-bindgen are already built for wasm32-wasip2
    let dir = scratch("new-rust");
    let out = plugboard(&[
        "plugin",
        "new",
        "my-router",
        "--lang",
        "rust",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.join("my-router");
    for f in ["Cargo.toml", "src/lib.rs", "samples.toml", "README.md"] {
        assert!(project.join(f).is_file(), "{f}");
    }
    let wasm = build_rust(&project, "my-router", false);
    let (ok, text) = check(&wasm, Some(&project.join("samples.toml")));
    assert!(ok, "{text}");
    assert!(
        text.contains("hook send: implemented")
            && text.contains("hook authenticate: not implemented"),
        "{text}"
    );
    assert!(
        text.contains("-> /queue/orders.urgent [as expected]"),
        "{text}"
    );

    // The name is checked, and an existing project is never overwritten.
    let out = plugboard(&[
        "plugin",
        "new",
        "Bad_Name",
        "--lang",
        "rust",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let out = plugboard(&[
        "plugin",
        "new",
        "my-router",
        "--lang",
        "js",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[test]
fn plugin_new_js_and_python_projects_are_the_templates_xtask_builds() {
    // `cargo xtask plugins` builds examples/templates/{js,python} as template-js and
    // template-python with the same tools it uses for every plugin; a generated project's sources
    // are those files, so they build. (Each build takes 10-25 s: done once, not per test.)
    let built = plugins_dir();
    let templates = workspace_root().join("examples/templates");
    let dir = scratch("new-lang");
    for (lang, files) in [
        ("js", ["plugin.js", "plugboard.toml"]),
        ("python", ["app.py", "plugboard.toml"]),
    ] {
        let name = format!("my-{lang}");
        let out = plugboard(&[
            "plugin",
            "new",
            &name,
            "--lang",
            lang,
            "--dir",
            dir.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let project = dir.join(&name);
        for f in files {
            assert_eq!(
                std::fs::read_to_string(project.join(f)).unwrap(),
                std::fs::read_to_string(templates.join(lang).join(f)).unwrap(),
                "{lang}/{f}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(project.join("wit/plugin.wit")).unwrap(),
            std::fs::read_to_string(workspace_root().join("wit/plugin.wit")).unwrap()
        );
        assert!(project.join("samples.toml").is_file() && project.join("README.md").is_file());
        let component = built.join(format!("template-{lang}.wasm"));
        assert!(
            std::fs::metadata(&component).unwrap().len() > 1_000_000,
            "{}",
            component.display()
        );
    }
}

/// A plugin on the SDK implementing every hook, exported as `WORLD`.
const SDK_PLUGIN: &str = r#"
use plugboard_sdk::prelude::*;
pub struct P;
impl Plugin for P {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self, String> { log::info("ready"); Ok(P) }
}
impl Router for P {
    fn on_send(&self, _: &Principal, m: &Message) -> SendVerdict {
        SendVerdict::Rewrite(Edit::to(format!("{}.x", m.destination)))
    }
}
impl Authenticator for P {
    fn authenticate(&self, r: &AuthRequest) -> AuthResult {
        match r.login.as_deref() {
            Some("alice") => AuthResult::Allow(Principal::named("alice").with_group("admins")),
            _ => AuthResult::Deny("who?".into()),
        }
    }
}
impl Filter for P {
    fn prepare_subscription(&self, _: &Principal, s: &Subscription) -> Result<Option<FilterPlan>, String> {
        Ok(s.header("f").map(|v| FilterPlan { token: v.as_bytes().to_vec(), needs: Needs::headers(["k"]) }))
    }
    fn filter(&self, t: &[u8], m: &Message) -> FilterVerdict {
        if m.header("k").map(str::as_bytes) == Some(t) { FilterVerdict::Deliver } else { FilterVerdict::Skip }
    }
}
plugboard_sdk::export_WORLD!(P);
"#;

const SDK_SAMPLES: &str = r#"
[[connect]]
login = "alice"
expect = "allow"
[[connect]]
login = "mallory"
expect = "deny"
[[send]]
destination = "/q"
expect = "rewrite"
[[subscribe]]
destination = "/t"
headers = { f = "v" }
expect = "filter"
  [[subscribe.message]]
  headers = { k = "v" }
  expect = "deliver"
  [[subscribe.message]]
  headers = { k = "w" }
  expect = "skip"
"#;

#[test]
fn sdk_export_macros_make_components_of_exactly_their_world() {
    plugins_dir(); // the SDK and wit-bindgen are already built for wasm32-wasip2
    let sdk = workspace_root().join("plugins/sdk");
    let dir = scratch("sdk-worlds");
    for (world, hooks) in [
        ("router", ["send"].as_slice()),
        ("authenticator", &["authenticate"]),
        ("message_filter", &["message"]),
        ("transformer", &["send", "message"]),
        ("full", &["authenticate", "send", "message"]),
    ] {
        let name = format!("sdk-{}", world.replace('_', "-"));
        let project = dir.join(&name);
        std::fs::create_dir_all(project.join("src")).unwrap();
        let manifest = include_str!("../../examples/templates/rust/Cargo.toml.tmpl")
            .replace("{{name}}", &name)
            .replace("{{sdk}}", &sdk.display().to_string());
        std::fs::write(project.join("Cargo.toml"), manifest).unwrap();
        std::fs::write(
            project.join("src/lib.rs"),
            SDK_PLUGIN.replace("WORLD", world),
        )
        .unwrap();
        std::fs::write(project.join("samples.toml"), SDK_SAMPLES).unwrap();
        let wasm = build_rust(&project, &name, false);
        let (ok, text) = check(&wasm, Some(&project.join("samples.toml")));
        assert!(ok, "{world}: {text}");
        for hook in ["authenticate", "send", "message"] {
            let expected = if hooks.contains(&hook) {
                format!("hook {hook}: implemented")
            } else {
                format!("hook {hook}: not implemented")
            };
            assert!(text.contains(&expected), "{world}: {expected}\n{text}");
        }
        assert!(!text.contains("MISMATCH"), "{world}: {text}");
    }
}
