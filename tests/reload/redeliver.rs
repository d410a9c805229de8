//! A reload swaps the redeliver chain like the others: the next message that comes back is
//! decided by the new set (a message already waiting out a delay keeps it).

use std::time::Duration;

use plugboard_test_support::stomp::{unique, Client, QUIET};

use crate::support::*;

fn backoff(file: &std::path::Path, delays_ms: &str) -> String {
    format!(
        "[[plugins]]\nname = \"backoff\"\nfile = {:?}\nhooks = [\"redeliver\"]\n{DEADLINE}\n\
         [plugins.config]\ndelays_ms = {delays_ms}\n",
        file.to_str().expect("UTF-8 path")
    )
}

/// Sends one message to a fresh queue, takes it and NACKs it; returns the consumer.
async fn nacked(broker: &ReloadBroker) -> Client {
    let queue = format!("/queue/{}", unique("reload-redeliver"));
    let mut consumer = broker.client().await;
    consumer.subscribe("c", &queue, "client-individual").await;
    let mut sender = broker.client().await;
    sender.send_r(&queue, "m").await;
    let m = consumer.msg().await;
    consumer.nack(&m).await;
    consumer
}

#[tokio::test]
async fn a_reload_swaps_the_redeliver_chain() {
    let setup = Setup::new();
    let wasm = setup.copy("backoff");
    let broker = setup.start(&backoff(&wasm, "[60000]"));
    let mut before = nacked(&broker).await;
    before.expect_silence(QUIET).await;

    setup.write(&backoff(&wasm, "[50]"));
    broker.wait_generation_change(1, RELOAD_T).await;
    let mut after = nacked(&broker).await;
    let m = after.recv_within(Duration::from_secs(10)).await;
    assert!(m.is("MESSAGE"), "{m:?}");
    assert_eq!(m.body_str(), "m");
    assert_eq!(m.get("redelivered"), Some("true"));
    // The first one still waits out the delay it was given.
    before.expect_silence(QUIET).await;
}
