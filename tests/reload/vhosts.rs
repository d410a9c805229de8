//! Reloads with virtual hosts: the new plugin set is split into each vhost's chains by the
//! `plugins` lists the broker started with; a change of `[[vhosts]]` waits for a restart.

use serde_json::json;

use crate::support::*;
use plugboard_test_support::stomp::{Client, Frame, Version};

const IN: &str = "/queue/rv.in";
const A: &str = "/queue/rv.a";
const B: &str = "/queue/rv.b";

/// The vhosts: `routed` (the default) has the router, `plain` has no plugin.
const VHOSTS: &str = "[[vhosts]]\nname = \"routed\"\nplugins = [\"router\"]\n\n\
                      [[vhosts]]\nname = \"plain\"\nplugins = []\n";

fn body(rules: &str, vhosts: &str) -> String {
    format!("default_vhost = \"routed\"\n\n{rules}\n{vhosts}")
}

async fn plain_client(broker: &ReloadBroker) -> Client {
    let connect = Frame::new("CONNECT")
        .h("accept-version", Version::V12.as_str())
        .h("host", "plain");
    let (client, reply) = Client::connect_with(broker.addr, connect).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    client
}

#[tokio::test]
async fn a_reload_rebuilds_each_vhosts_chains_and_keeps_the_vhost_list() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let rules_a = router(&wasm, IN, &[("eu", A)]);
    let rules_b = router(&wasm, IN, &[("eu", B)]);
    let broker = setup.start(&body(&rules_a, VHOSTS));
    let mut rx = broker.client().await;
    subscribe_all(&mut rx, &[IN, A, B]).await;
    let mut tx = broker.client().await;
    let mut plain_rx = plain_client(&broker).await;
    subscribe_all(&mut plain_rx, &[IN, A, B]).await;
    let mut plain_tx = plain_client(&broker).await;
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, A);
    assert_eq!(routed_to(&mut plain_tx, &mut plain_rx, IN, "eu").await, IN);

    // New rules: the routed vhost routes by them, the plain one still has no plugin.
    setup.write(&body(&rules_b, VHOSTS));
    broker.wait_generation_change(1, RELOAD_T).await;
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, B);
    assert_eq!(routed_to(&mut plain_tx, &mut plain_rx, IN, "eu").await, IN);

    // The router added to `plain`: reported as waiting for a restart, not applied.
    let changed = VHOSTS.replace("plugins = []", "plugins = [\"router\"]");
    setup.write(&body(&rules_b, &changed));
    let status = broker
        .wait_status(RELOAD_T, "needs_restart = [vhosts]", |s| {
            s["plugins"]["needs_restart"] == json!(["vhosts"])
        })
        .await;
    assert_eq!(generation(&status), 2);
    assert_eq!(routed_to(&mut plain_tx, &mut plain_rx, IN, "eu").await, IN);
}
