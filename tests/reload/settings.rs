//! Settings outside `[[plugins]]` cannot change live: a change is reported in
//! `plugins.needs_restart`, and nothing else is disturbed.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

const IN: &str = "/queue/rn.in";
const A: &str = "/queue/rn.a";
const B: &str = "/queue/rn.b";

fn needs_restart(status: &serde_json::Value) -> serde_json::Value {
    status["plugins"]["needs_restart"].clone()
}

#[tokio::test]
async fn listen_and_flow_changes_are_reported_not_applied() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let rules_a = router(&wasm, IN, &[("eu", A)]);
    let rules_b = router(&wasm, IN, &[("eu", B)]);
    let broker = setup.start(&rules_a);
    let mut rx = broker.client().await;
    subscribe_all(&mut rx, &[IN, A, B]).await;
    let mut tx = broker.client().await;
    assert_eq!(needs_restart(&broker.status().await), json!([]));

    let write = |listen: &str, flow: &str, body: &str| {
        let text = Setup::text(body).replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = {listen:?}"),
            1,
        );
        write_atomic(&setup.config, format!("{text}\n{flow}").as_bytes());
    };

    // 1. listen: reported, the broker keeps serving where it is.
    write("127.0.0.1:1", "", &rules_a);
    let status = broker
        .wait_status(RELOAD_T, "needs_restart = [listen]", |s| {
            needs_restart(s) == json!(["listen"])
        })
        .await;
    assert_eq!(
        generation(&status),
        1,
        "no plugin change, no new generation"
    );
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, A);
    let mut fresh = broker.client().await;
    fresh.sync().await;

    // 2. [flow] as well (the table goes after the plugins: TOML tables end at the next one).
    let flow = "[flow]\ndefault_prefetch = 7\n";
    write("127.0.0.1:1", flow, &rules_a);
    let status = broker
        .wait_status(RELOAD_T, "needs_restart = [listen, flow]", |s| {
            needs_restart(s) == json!(["listen", "flow"])
        })
        .await;
    assert_eq!(generation(&status), 1);
    assert_eq!(status["plugins"]["reload_failures"], 0);

    // 3. A plugin change together with them: the plugins apply, the rest is still reported.
    write("127.0.0.1:1", flow, &rules_b);
    let status = broker.wait_generation_change(1, RELOAD_T).await;
    assert_eq!(needs_restart(&status), json!(["listen", "flow"]));
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, B);

    // 4. Back to the running values: nothing waits for a restart any more.
    setup.write(&rules_b);
    let status = broker
        .wait_status(RELOAD_T, "needs_restart = []", |s| {
            needs_restart(s) == json!([])
        })
        .await;
    assert_eq!(generation(&status), 2);
    assert_eq!(status["plugins"]["reload_failures"], 0);
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, B);
    for c in [&mut tx, &mut rx, &mut fresh] {
        c.sync().await;
    }
    assert_eq!(status["connections"]["open"], 3);
}

// `--listen` and `--admin-listen` override the file's values in the running config; a reload
// applies the same overrides to the new file before comparing, so they are not reported as
// needing a restart (regression test: every reload used to report them, e.g. in the README's
// demo with `--admin-listen`).
#[tokio::test]
async fn command_line_overrides_are_not_reported_as_changes() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let text = |body: &str| {
        format!(
            "plugin_cache_dir = {:?}\n\n{body}",
            cache_dir().to_str().unwrap()
        )
    };
    write_atomic(
        &setup.config,
        text(&router(&wasm, IN, &[("eu", A)])).as_bytes(),
    );
    let broker = ReloadBroker::start(
        &setup.config,
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
    );
    broker.wait_watching(&setup.config);
    write_atomic(
        &setup.config,
        text(&router(&wasm, IN, &[("eu", B)])).as_bytes(),
    );
    let status = broker.wait_generation_change(1, RELOAD_T).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        needs_restart(&status),
        json!([]),
        "neither listen nor admin_listen changed in the file"
    );
}

/// Without `plugin_cache_dir`, compiled plugins are cached in `plugin-cache` of the data
/// directory: the one `--data-dir` names, for reloads as for the start (the re-read file does
/// not carry `--data-dir`; a reload once cached into `plugboard-data` of the working directory).
#[tokio::test]
async fn reloads_cache_in_the_data_directory_of_the_command_line() {
    let setup = Setup::new();
    let original = std::fs::read(plugin("header-router")).expect("header-router component");
    let file = setup.path("router.wasm");
    let variant = |tag: &str| with_custom_section(&original, tag);
    let text =
        |body: &str| format!("listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n{body}");
    write_atomic(&file, &variant("data-dir-cache-1"));
    write_atomic(
        &setup.config,
        text(&router(&file, IN, &[("eu", A)])).as_bytes(),
    );
    let data = setup.path("data");
    let broker = ReloadBroker::start(&setup.config, &["--data-dir", data.to_str().unwrap()]);
    broker.wait_watching(&setup.config);
    let cached = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(data.join("plugin-cache"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".cwasm"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let first = sha256_hex(&variant("data-dir-cache-1"));
    assert!(
        cached().iter().any(|n| n.starts_with(&first)),
        "{:?}",
        cached()
    );

    let generation = broker.generation().await;
    let second = variant("data-dir-cache-2");
    write_atomic(&file, &second);
    broker.wait_generation_change(generation, COMPILE_T).await;
    let second = sha256_hex(&second);
    assert!(
        cached().iter().any(|n| n.starts_with(&second)),
        "the reload cached into the data directory: {:?}",
        cached()
    );
}
