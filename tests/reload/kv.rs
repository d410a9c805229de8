//! A reload and the plugins' kv stores (WIT 0.1.4): a plugin reloaded under the same name keeps
//! its entries (its new caps apply), a plugin removed loses them, so one added again under
//! that name starts empty.

use plugboard_test_support::stomp::{send_frame, unique, Client, Frame};

use crate::support::*;

fn probe(file: &std::path::Path, name: &str, kv: &str) -> String {
    format!(
        "[[plugins]]\nname = {name:?}\nfile = {:?}\nhooks = [\"send\"]\ndestinations = [\"/queue/kv.*\"]\n{DEADLINE}kv = {kv}\n",
        file.to_str().expect("UTF-8 path")
    )
}

/// Sends `headers` through the probe and returns the message it let through.
async fn through(client: &mut Client, headers: &[(&str, &str)]) -> Frame {
    let dest = format!("/queue/kv.{}", unique("reload"));
    client.subscribe("s", &dest, "auto").await;
    client.roundtrip(send_frame(&dest, headers, "m")).await;
    let m = client.msg().await;
    client.unsubscribe("s").await;
    m
}

#[tokio::test]
async fn a_reloaded_plugin_keeps_its_store_and_a_removed_one_loses_it() {
    let setup = Setup::new();
    let wasm = setup.copy("kv-probe");
    let broker = setup.start(&probe(&wasm, "p", "{}"));
    let mut c = broker.client().await;
    let m = through(&mut c, &[("kv-set", "k=v")]).await;
    assert_eq!(m.get("x-kv-error"), None, "{m:?}");

    // New caps: same name, same store.
    setup.write(&probe(&wasm, "p", "{ max_entries = 2 }"));
    broker.wait_generation_change(1, RELOAD_T).await;
    let mut c = broker.client().await;
    let m = through(&mut c, &[("kv-get", "k")]).await;
    assert_eq!(m.get("x-kv"), Some("v"), "kept across the reload: {m:?}");
    let m = through(&mut c, &[("kv-fill", "5")]).await;
    assert_eq!(
        m.get("x-kv-filled"),
        Some("1"),
        "the new cap applies: {m:?}"
    );

    // Removed (on purpose), then back: empty.
    setup.write(&format!(
        "[reload]\nallow_weaker_policy = true\n\n{}",
        probe(&wasm, "q", "{}")
    ));
    broker.wait_generation_change(2, RELOAD_T).await;
    setup.write(&format!(
        "[reload]\nallow_weaker_policy = true\n\n{}",
        probe(&wasm, "p", "{}")
    ));
    broker.wait_generation_change(3, RELOAD_T).await;
    let mut c = broker.client().await;
    let m = through(&mut c, &[("kv-get", "k")]).await;
    assert_eq!(
        m.get("x-kv-absent"),
        Some("k"),
        "a removed plugin's store is gone: {m:?}"
    );
}
