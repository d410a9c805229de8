//! Plugins in cluster mode (docs/cluster.md, "Plugins on every edge"): three edges run the demo
//! configuration's plugins (`examples/plugboard.toml`: static-auth's users and rights, the
//! header-router's region routes) and behave the same on each: the authenticate hook and the
//! rights where CONNECT and SEND arrive, the routing before the message enters the cluster,
//! so a routed message is received on any edge.

use std::net::SocketAddr;
use std::time::Duration;

use plugboard_test_support::broker::{Broker as Edge, Launch};
use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};
use plugboard_test_support::plugins::{plugins_dir, workspace_root, IfBuildFails};

use super::cluster::{cluster_name, message_within, plugboard, target_dir, ACROSS};
use crate::harness::*;

/// The demo configuration with its plugins named by absolute path and a `[cluster]` section.
fn demo_edge_config(nats: &NatsCluster, name: &str) -> String {
    let plugins = plugins_dir(IfBuildFails::Panic);
    let demo = std::fs::read_to_string(workspace_root().join("examples").join("plugboard.toml"))
        .expect("the demo configuration");
    let demo = demo.replace(
        "../target/plugins/",
        &format!("{}/", plugins.to_str().expect("UTF-8 path")),
    );
    format!(
        "{demo}\n[cluster]\nnats = [\"{}\"]\nname = \"{name}\"\n",
        nats.nodes[0].url()
    )
}

async fn try_login(addr: SocketAddr, login: &str, passcode: &str) -> (Client, Frame) {
    let connect = Client::connect_frame(Version::V12)
        .h("login", login)
        .h("passcode", passcode);
    Client::connect_with(addr, connect).await
}

async fn login(addr: SocketAddr, login: &str, passcode: &str) -> Client {
    let (client, reply) = try_login(addr, login, passcode).await;
    assert!(reply.is("CONNECTED"), "{login}: {reply:?}");
    client
}

#[tokio::test]
async fn cluster_auth_and_routing_plugins_behave_the_same_on_every_edge() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_plugins_on_every_edge") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, demo_edge_config(&nats, &name)).expect("write config");
    // Each edge compiles (or reads from the shared cache) the same plugins.
    let edges: Vec<Edge> = (0..3)
        .map(|_| {
            Launch::config_file(plugboard(), &config)
                .start_within(Duration::from_secs(120))
                .start()
        })
        .collect();

    for (i, edge) in edges.iter().enumerate() {
        let next = &edges[(i + 1) % 3];
        let after = &edges[(i + 2) % 3];

        // static-auth on edge i: a wrong password and bob's SEND are refused.
        let (mut refused, reply) = try_login(edge.addr, "alice", "bob-secret").await;
        assert_eq!(
            reply.get("error-code"),
            Some("auth.denied"),
            "edge {i}: {reply:?}"
        );
        refused.expect_closed().await;
        let mut bob = login(edge.addr, "bob", "bob-secret").await;
        bob.write(&send_frame(
            "/queue/orders",
            &[("receipt", "b")],
            "from bob",
        ))
        .await;
        let err = bob.expect_error_close().await;
        assert_eq!(
            err.get("error-code"),
            Some("permission.send"),
            "edge {i}: {err:?}"
        );

        // header-router on edge i: region=eu goes to /queue/orders.eu, received on the next
        // edge; no region stays on /queue/orders, received on the one after.
        let mut eu = login(next.addr, "alice", "alice-secret").await;
        eu.subscribe("eu", "/queue/orders.eu", "client-individual")
            .await;
        let mut plain = login(after.addr, "alice", "alice-secret").await;
        plain
            .subscribe("plain", "/queue/orders", "client-individual")
            .await;
        let mut alice = login(edge.addr, "alice", "alice-secret").await;
        let routed = format!("eu order from edge {i}");
        alice
            .roundtrip(send_frame("/queue/orders", &[("region", "eu")], &routed))
            .await;
        let stays = format!("order from edge {i}");
        alice
            .roundtrip(send_frame("/queue/orders", &[], &stays))
            .await;

        let m = message_within(&mut eu, ACROSS).await;
        assert_eq!(m.must("destination"), "/queue/orders.eu", "edge {i}: {m:?}");
        assert_eq!(m.body_str(), routed);
        assert_eq!(m.get("region"), Some("eu"), "headers kept: {m:?}");
        eu.ack(&m).await;
        let m = message_within(&mut plain, ACROSS).await;
        assert_eq!(m.must("destination"), "/queue/orders", "edge {i}: {m:?}");
        assert_eq!(m.body_str(), stays);
        plain.ack(&m).await;
        // Routed once: nothing went to the other queue.
        eu.expect_silence(Duration::from_millis(300)).await;
        plain.expect_silence(Duration::from_millis(300)).await;
        eu.disconnect().await;
        plain.disconnect().await;
    }
}

#[tokio::test]
async fn cluster_edges_list_each_other_with_the_policy_and_queue_settings_each_runs() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_edges_policy") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let dir = tempfile::tempdir().expect("tempdir");
    // Two edges on the demo's policy, a third whose router sends region=eu elsewhere: its
    // policy differs (the same files, another setting). The second keeps priority bands for
    // some queues: its queue settings differ.
    let demo = format!(
        "admin_listen = \"127.0.0.1:0\"\n{}",
        demo_edge_config(&nats, &name)
    );
    let changed = demo.replacen(
        "to = [\"/queue/orders.eu\"]",
        "to = [\"/queue/orders.europe\"]",
        1,
    );
    assert_ne!(changed, demo, "the demo's route to change");
    let start = |text: &str, file: &str| {
        let path = dir.path().join(file);
        std::fs::write(&path, text).expect("write config");
        Launch::config_file(plugboard(), &path)
            .status_line()
            .start_within(Duration::from_secs(120))
            .start()
    };
    let banded = format!("{demo}priority_queues = [\"/queue/urgent.*\"]\n");
    let a = start(&demo, "a.toml");
    let b = start(&banded, "b.toml");
    let c = start(&changed, "c.toml");

    // Each edge writes its entry when it starts; edge A reads them (at most every 5 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let cluster = loop {
        let status = plugboard_test_support::broker::fetch_status(a.admin()).await;
        let cluster = status["cluster"].clone();
        if cluster["edges"].as_array().is_some_and(|e| e.len() == 3) {
            break cluster;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "three edges never listed: {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let edges = cluster["edges"].as_array().unwrap();
    let same: Vec<bool> = edges.iter().map(|e| e["same_policy"] == true).collect();
    assert_eq!(same.iter().filter(|s| **s).count(), 2, "{cluster:#}");
    let this: Vec<&serde_json::Value> = edges.iter().filter(|e| e["this_edge"] == true).collect();
    assert_eq!(this.len(), 1, "{cluster:#}");
    assert_eq!(this[0]["edge"], cluster["edge"]);
    assert_eq!(this[0]["policy"], cluster["policy"]);
    assert_eq!(this[0]["generation"], 1);
    assert_eq!(this[0]["queue_settings"], cluster["queue_settings"]);

    // Edge B's queue settings differ: listed, counted and logged by edge A.
    let b_edge = plugboard_test_support::broker::fetch_status(b.admin()).await["cluster"]["edge"]
        .as_str()
        .expect("edge B's id")
        .to_string();
    for edge in edges {
        let same = edge["same_queue_settings"].as_bool();
        assert_eq!(same, Some(edge["edge"] != b_edge.as_str()), "{cluster:#}");
    }
    let metrics = plugboard_test_support::metrics::scrape(a.admin(), None).await;
    assert_eq!(metrics.value("plugboard_cluster_edges", &[]), 3.0);
    assert_eq!(
        metrics.value("plugboard_cluster_edges_other_policy", &[]),
        1.0
    );
    assert_eq!(
        metrics.value("plugboard_cluster_edges_other_queue_settings", &[]),
        1.0
    );
    let warnings: Vec<String> = a
        .log()
        .lines()
        .filter(|line| line.contains("other queue settings"))
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "logged once, for edge B: {warnings:?}");
    assert!(warnings[0].contains(&b_edge), "{warnings:?}");
    // Edge C, which nobody asks, finds edge B by its own check (10 s after its start).
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    while !c
        .log()
        .lines()
        .any(|line| line.contains("other queue settings") && line.contains(&b_edge))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "edge C never logged edge B's other queue settings\n{}",
            c.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
