//! Replacing a plugin's component file reloads it: by rename into place and by overwriting.

use std::path::PathBuf;

use crate::support::*;
use plugboard_test_support::stomp::Client;

const IN: &str = "/queue/rf.in";
const EU: &str = "/queue/rf.eu";

/// header-router's bytes, and the file `router.wasm` in `setup`'s directory holding them tagged
/// `files-v0` (with those bytes, `v0`).
fn tagged_router(setup: &Setup) -> (Vec<u8>, PathBuf, Vec<u8>) {
    let original = std::fs::read(plugin("header-router")).expect("read header-router.wasm");
    let file = setup.path("router.wasm");
    let v0 = with_custom_section(&original, "files-v0");
    std::fs::write(&file, &v0).unwrap();
    (original, file, v0)
}

/// A receiver subscribed to `IN` and `EU`, and a sender.
async fn receiver_and_sender(broker: &ReloadBroker) -> (Client, Client) {
    let mut rx = broker.client().await;
    subscribe_all(&mut rx, &[IN, EU]).await;
    let tx = broker.client().await;
    (rx, tx)
}

#[tokio::test]
async fn replacing_the_wasm_file_reloads_it() {
    let setup = Setup::new();
    let (original, file, v0) = tagged_router(&setup);
    let broker = setup.start(&router(&file, IN, &[("eu", EU)]));
    let status = broker.status().await;
    assert_eq!(generation(&status), 1);
    assert_eq!(loaded(&status, "router")["sha256"], sha256_hex(&v0));

    let (mut rx, mut tx) = receiver_and_sender(&broker).await;
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, EU);

    // 1. A new file renamed over the old one (how deploy tools and `cp` to a temp name work).
    let v1 = with_custom_section(&original, "files-v1");
    write_atomic(&file, &v1);
    let status = broker.wait_generation_change(1, COMPILE_T).await;
    assert_eq!(generation(&status), 2);
    assert_eq!(
        loaded(&status, "router")["sha256"],
        sha256_hex(&v1),
        "the status shows the new content hash"
    );
    assert_ne!(sha256_hex(&v0), sha256_hex(&v1));
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, EU);

    // 2. The same file overwritten in place.
    let v2 = with_custom_section(&original, "files-v2");
    write_in_place(&file, &v2);
    let status = broker.wait_generation_change(2, COMPILE_T).await;
    assert_eq!(generation(&status), 3);
    assert_eq!(loaded(&status, "router")["sha256"], sha256_hex(&v2));
    assert_eq!(status["plugins"]["reloads"], 2);
    assert_eq!(status["plugins"]["reload_failures"], 0);
    assert!(
        status["plugins"]["last_reload_ms"].as_u64().is_some(),
        "last_reload_ms: {}",
        status["plugins"]
    );
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, EU);
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "us").await, IN);
    rx.sync().await;
    tx.sync().await;
}

/// Copying the same bytes over the file (a touch, an identical deploy) is not a reload.
#[tokio::test]
async fn rewriting_identical_content_does_not_bump_the_generation() {
    let setup = Setup::new();
    let (_, file, v0) = tagged_router(&setup);
    let body = router(&file, IN, &[("eu", EU)]);
    let broker = setup.start(&body);
    write_atomic(&file, &v0);
    setup.write(&body);
    // Quiet period + a reload that finds nothing changed; then a real change must be gen 2.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(broker.generation().await, 1, "identical content reloaded");
    setup.write(&router(&file, IN, &[("us", EU)]));
    let status = broker.wait_generation_change(1, RELOAD_T).await;
    assert_eq!(generation(&status), 2);
}

/// Plugins added, reordered and (with `allow_weaker_policy`) removed in the file apply live.
#[tokio::test]
async fn adding_reordering_and_removing_plugins_applies_live() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let sel = setup.copy("selector");
    let routing = router(&wasm, IN, &[("eu", EU)]);
    let filtering = selector(&sel, &["/queue/rf.sel"], "");
    let broker = setup.start(&routing);
    let (mut rx, mut tx) = receiver_and_sender(&broker).await;
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, EU);

    // Added: a selector subscription made now is filtered.
    setup.write(&format!("{routing}{filtering}"));
    let status = broker.wait_generation_change(1, RELOAD_T).await;
    assert_eq!(status["plugins"]["loaded"].as_array().unwrap().len(), 2);
    let mut sub = broker.client().await;
    sub.subscribe_with("f", "/queue/rf.sel", "auto", &[("selector", "n = 2")])
        .await;
    for n in ["1", "2"] {
        tx.roundtrip(send_frame("/queue/rf.sel", &[("n", n)], n))
            .await;
    }
    assert_eq!(sub.msg().await.body_str(), "2");

    // Reordered.
    setup.write(&format!("{filtering}{routing}"));
    let status = broker.wait_generation_change(2, RELOAD_T).await;
    assert_eq!(loaded(&status, "selector")["name"], "selector");
    assert_eq!(status["plugins"]["loaded"][0]["name"], "selector");
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, EU);

    // Router removed (on purpose: a removal is refused without the flag): region=eu stays
    // where it was sent.
    setup.write(&format!(
        "[reload]\nallow_weaker_policy = true\n\n{filtering}"
    ));
    let status = broker.wait_generation_change(3, RELOAD_T).await;
    assert_eq!(status["plugins"]["loaded"].as_array().unwrap().len(), 1);
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, IN);
    for c in [&mut rx, &mut tx, &mut sub] {
        c.sync().await;
    }
}

/// A deleted component is refused (the old set keeps serving); putting a file back reloads.
#[tokio::test]
async fn deleted_wasm_is_refused_until_it_is_back() {
    let setup = Setup::new();
    let (original, file, _) = tagged_router(&setup);
    let broker = setup.start(&router(&file, IN, &[("eu", EU)]));
    let (mut rx, mut tx) = receiver_and_sender(&broker).await;

    std::fs::remove_file(&file).unwrap();
    let status = broker.wait_failures(1, RELOAD_T).await;
    assert_eq!(generation(&status), 1);
    let reason = last_error(&status);
    assert!(
        reason.contains("plugin `router`") && reason.contains("router.wasm"),
        "{reason}"
    );
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, EU);

    let v1 = with_custom_section(&original, "files-v1");
    write_atomic(&file, &v1);
    let status = broker.wait_generation_change(1, COMPILE_T).await;
    assert_eq!(loaded(&status, "router")["sha256"], sha256_hex(&v1));
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, EU);
}
