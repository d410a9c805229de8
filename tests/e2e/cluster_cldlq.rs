//! Cluster mode's dead-lettering (docs/cluster.md, "Dead-lettering"): `[dead_letter]` applied
//! to JetStream's deliveries by the edge that holds the message, the copy published to the
//! dead-letter queue's subject so that any edge delivers it; a transaction's queue messages
//! stored as one JetStream atomic batch; and the cluster's `/metrics`.

use std::time::Duration;

use plugboard_test_support::broker::{fetch_status, Broker as Edge, Launch};
use plugboard_test_support::metrics::scrape;
use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use super::cluster::{client, cluster_name, edge, message_within, plugboard, target_dir, ACROSS};
use crate::harness::*;

/// An edge of cluster `name` on `nats` with `[dead_letter] dead_letter` and its status page.
fn edge_with_status_and(nats: &NatsCluster, name: &str, dead_letter: &str) -> Edge {
    let toml = format!(
        "admin_listen = \"127.0.0.1:0\"\n[dead_letter]\n{dead_letter}\n[cluster]\nnats = [\"{}\"]\nname = \"{name}\"\n",
        nats.nodes[0].url()
    );
    Launch::config_text(plugboard(), &toml)
        .status_line()
        .start_within(Duration::from_secs(60))
        .start()
}

/// An edge with its admin endpoint and the console's actions (the console tests' token), and
/// `extra` sections before `[cluster]`.
fn edge_with_token(nats: &NatsCluster, name: &str, extra: &str) -> Edge {
    let toml = format!(
        "admin_listen = \"127.0.0.1:0\"\nadmin_token = \"{}\"\n{extra}\n[cluster]\nnats = [\"{}\"]\nname = \"{name}\"\n",
        super::console::TOKEN,
        nats.nodes[0].url()
    );
    Launch::config_text(plugboard(), &toml)
        .status_line()
        .start_within(Duration::from_secs(60))
        .start()
}

#[tokio::test]
async fn cluster_messages_handed_back_too_often_or_expired_go_to_the_dlq_on_every_edge() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_dead_letter") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let policy = "max_deliveries = 2\nexpired = true";
    let a = edge(&nats, &name, &format!("[dead_letter]\n{policy}"));
    let b = edge_with_status_and(&nats, &name, policy);
    let dest = "/queue/work";
    let dlq = "/queue/DLQ.work";

    let mut p = client(&a).await;
    p.send_r(dest, "poison").await;
    let mut c = client(&b).await;
    c.subscribe("s", dest, "client-individual").await;
    let first = message_within(&mut c, ACROSS).await;
    assert_eq!(first.body_str(), "poison");
    c.nack(&first).await;
    let second = message_within(&mut c, ACROSS).await;
    assert_eq!(second.get("redelivery-count"), Some("1"), "{second:?}");
    // The second hand back is the last one allowed: to the DLQ, not back.
    c.nack(&second).await;
    c.expect_silence(Duration::from_secs(1)).await;

    // A message whose subscription ends after its last allowed delivery goes too.
    p.send_r(dest, "left").await;
    let once = message_within(&mut c, ACROSS).await;
    assert_eq!(once.body_str(), "left");
    c.nack(&once).await;
    let twice = message_within(&mut c, ACROSS).await;
    assert_eq!(twice.body_str(), "left");
    c.unsubscribe("s").await;

    // A message expired while stored: dead-lettered when it is pulled (`expired = true`).
    p.roundtrip(send_frame(dest, &[("ttl", "1")], "stale"))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut again = client(&b).await;
    again.subscribe("s", dest, "client-individual").await;
    again.expect_silence(Duration::from_secs(1)).await;

    // The dead-letter queue is a cluster queue: read on the other edge, each message once.
    let mut d = client(&a).await;
    d.subscribe("d", dlq, "client-individual").await;
    let mut dead = Vec::new();
    for _ in 0..3 {
        let m = message_within(&mut d, ACROSS).await;
        d.ack(&m).await;
        dead.push(m);
    }
    d.expect_silence(Duration::from_secs(1)).await;
    dead.sort_by(|x, y| x.body_str().cmp(y.body_str()));
    let bodies: Vec<&str> = dead.iter().map(Frame::body_str).collect();
    assert_eq!(bodies, ["left", "poison", "stale"]);
    for m in &dead {
        assert_eq!(m.get("destination"), Some(dlq), "{m:?}");
        assert_eq!(m.get("dlq-original-destination"), Some(dest), "{m:?}");
    }
    let (left, poison, stale) = (&dead[0], &dead[1], &dead[2]);
    assert_eq!(
        poison.get("dlq-reason"),
        Some("max-deliveries"),
        "{poison:?}"
    );
    assert_eq!(poison.get("dlq-delivery-count"), Some("2"), "{poison:?}");
    assert_eq!(poison.get("message-id"), first.get("message-id"), "same id");
    assert_eq!(left.get("dlq-reason"), Some("max-deliveries"), "{left:?}");
    assert_eq!(left.get("dlq-delivery-count"), Some("2"), "{left:?}");
    assert_eq!(stale.get("dlq-reason"), Some("expired"), "{stale:?}");

    let status = fetch_status(b.admin()).await;
    assert_eq!(status["cluster"]["dead_lettered"], 3, "{status}");
}

#[tokio::test]
async fn cluster_metrics_show_the_edge_counters_and_jetstream_queue_depth() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_metrics") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge_with_status_and(&nats, &name, "");
    let b = edge(&nats, &name, "");
    let dest = "/queue/depth";
    let mut p = client(&a).await;
    for i in 0..3 {
        p.send_r(dest, &format!("m{i}")).await;
    }
    // A consumer on the other edge holds one message, unacknowledged.
    let mut c = client(&b).await;
    c.subscribe_with(
        "s",
        dest,
        "client-individual",
        &[("activemq.prefetchSize", "1")],
    )
    .await;
    let held = message_within(&mut c, ACROSS).await;
    assert_eq!(held.body_str(), "m0");

    let metrics = scrape(a.admin(), None).await;
    let depth = [("vhost", "/"), ("queue", dest)];
    assert_eq!(metrics.value("plugboard_cluster_connected", &[]), 1.0);
    assert_eq!(metrics.value("plugboard_cluster_published_total", &[]), 3.0);
    assert_eq!(
        metrics.value("plugboard_cluster_publish_failures_total", &[]),
        0.0
    );
    assert_eq!(metrics.value("plugboard_cluster_delivered_total", &[]), 0.0);
    assert_eq!(
        metrics.value("plugboard_cluster_dead_lettered_total", &[]),
        0.0
    );
    assert_eq!(
        metrics.value("plugboard_cluster_queue_messages_ready", &depth),
        2.0
    );
    assert_eq!(
        metrics.value("plugboard_cluster_queue_messages_unacked", &depth),
        1.0
    );
    // The console shows JetStream's depth too (the edge itself holds none of the messages).
    let doc = super::console::overview(a.admin(), None).await;
    let row = doc["queues"]
        .as_array()
        .and_then(|rows| rows.iter().find(|q| q["name"] == dest))
        .unwrap_or_else(|| panic!("{dest} in {doc}"));
    assert_eq!(
        (&row["ready"], &row["unacked"], &row["depth_from"]),
        (&2.into(), &1.into(), &"jetstream".into()),
        "{row}"
    );
    c.ack(&held).await;
}

#[tokio::test]
async fn cluster_console_purge_and_move_act_on_jetstream_for_every_edge() {
    use super::console::action;
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_console_purge") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge_with_token(&nats, &name, "");
    let b = edge(&nats, &name, "");
    let dest = "/queue/purged";
    let mut p = client(&b).await;
    for i in 0..3 {
        p.send_r(dest, &format!("m{i}")).await;
    }
    // Edge A knows the queue once something there touched it.
    let mut probe = client(&a).await;
    probe.subscribe("s", dest, "client-individual").await;
    let first = message_within(&mut probe, ACROSS).await;
    probe.unsubscribe("s").await; // the message goes back

    let body = format!(r#"{{"queue":"{dest}"}}"#);
    let answer = action(a.admin(), "/api/queues/purge", &body).await;
    assert_eq!(answer.code(), 200, "{}", answer.body);
    assert_eq!(answer.json()["purged"], 3, "{}", answer.body);
    // Gone for every edge: a consumer on the other edge gets nothing, then what is sent next.
    let mut c = client(&b).await;
    c.subscribe("s", dest, "client-individual").await;
    c.expect_silence(Duration::from_secs(1)).await;
    p.send_r(dest, "after").await;
    assert_eq!(message_within(&mut c, ACROSS).await.body_str(), "after");
    assert_ne!(first.body_str(), "after");

    // Move: out of a cluster queue (through JetStream, a few at a time) into another,
    // received on the other edge in order; the source is empty afterwards.
    let (from, to) = ("/queue/move-from", "/queue/move-to");
    let mut pa = client(&a).await;
    let count = 70; // more than one chunk of the move
    for i in 0..count {
        pa.send_r(from, &format!("v{i:02}")).await;
    }
    let body = format!(r#"{{"from":"{from}","to":"{to}"}}"#);
    let moved = action(a.admin(), "/api/queues/move", &body).await;
    assert_eq!(moved.code(), 200, "{}", moved.body);
    assert_eq!(moved.json()["moved"], count, "{}", moved.body);
    let mut r = client(&b).await;
    r.subscribe("s", to, "client-individual").await;
    for i in 0..count {
        let m = message_within(&mut r, ACROSS).await;
        assert_eq!(m.body_str(), format!("v{i:02}"));
        r.ack(&m).await;
    }
    let mut left = client(&b).await;
    left.subscribe("s", from, "client-individual").await;
    left.expect_silence(Duration::from_secs(1)).await;
    drop(left);

    // Without `to`, messages that name no queue to go back to stay where they are, all of
    // them (each taken once), and are delivered from there afterwards.
    let stay = "/queue/move-nowhere";
    for i in 0..40 {
        pa.send_r(stay, &format!("s{i:02}")).await;
    }
    let body = format!(r#"{{"from":"{stay}"}}"#);
    let answer = action(a.admin(), "/api/queues/move", &body).await;
    let report = answer.json();
    assert_eq!(
        (&report["moved"], &report["skipped_without_target"]),
        (&0.into(), &40.into()),
        "{report}"
    );
    let mut s = client(&b).await;
    s.subscribe("s", stay, "client-individual").await;
    let mut bodies = Vec::new();
    for _ in 0..40 {
        let m = message_within(&mut s, ACROSS).await;
        s.ack(&m).await;
        bodies.push(m.body_str().to_string());
    }
    bodies.sort();
    assert_eq!(
        bodies,
        (0..40).map(|i| format!("s{i:02}")).collect::<Vec<_>>()
    );
    s.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn cluster_dead_letter_moved_back_and_dead_lettered_again_is_not_lost() {
    use super::console::action;
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_dlq_round_trip") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge_with_token(&nats, &name, "[dead_letter]\nmax_deliveries = 1");
    let b = edge(&nats, &name, "[dead_letter]\nmax_deliveries = 1");
    let (dest, dlq) = ("/queue/round-trip", "/queue/DLQ.round-trip");
    let mut p = client(&a).await;
    p.send_r(dest, "poison").await;
    let mut c = client(&b).await;
    c.subscribe("s", dest, "client-individual").await;
    for round in 0..2 {
        let m = message_within(&mut c, ACROSS).await;
        assert_eq!(m.body_str(), "poison", "round {round}");
        c.nack(&m).await; // the one delivery allowed: to the DLQ
        c.expect_silence(Duration::from_millis(500)).await;
        if round == 0 {
            // Back to its queue (by its dlq-original-destination), within JetStream's
            // duplicate window of its first dead-lettering.
            let body = format!(r#"{{"from":"{dlq}"}}"#);
            let moved = action(a.admin(), "/api/queues/move", &body).await;
            assert_eq!(moved.json()["moved"], 1, "{}", moved.body);
        }
    }
    // Dead-lettered a second time: in the DLQ again, not taken for its first copy.
    let mut d = client(&b).await;
    d.subscribe("d", dlq, "client-individual").await;
    let again = message_within(&mut d, ACROSS).await;
    assert_eq!(again.body_str(), "poison");
    d.ack(&again).await;
    d.expect_silence(Duration::from_millis(500)).await;
}

fn tx_send(dest: &str, tx: &str, body: &str) -> Frame {
    Frame::new("SEND")
        .h("destination", dest)
        .h("transaction", tx)
        .body(body)
}

#[tokio::test]
async fn cluster_transaction_stores_its_queue_messages_all_or_none() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_transaction") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, "publish_timeout_ms = 1500");
    let b = edge(&nats, &name, "");
    let (first, second) = ("/queue/tx.one", "/queue/tx.two");
    let mut r = client(&b).await;
    r.subscribe("1", first, "client-individual").await;
    r.subscribe("2", second, "client-individual").await;

    // Committed: every message, on both queues, received on the other edge.
    let mut p = client(&a).await;
    p.roundtrip(Frame::new("BEGIN").h("transaction", "t1"))
        .await;
    for (dest, body) in [(first, "a1"), (second, "b1"), (first, "a2")] {
        p.roundtrip(tx_send(dest, "t1", body)).await;
    }
    r.expect_silence(Duration::from_millis(500)).await;
    let receipt = p
        .roundtrip(Frame::new("COMMIT").h("transaction", "t1"))
        .await;
    assert!(receipt.is("RECEIPT"), "{receipt:?}");
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = message_within(&mut r, ACROSS).await;
        r.ack(&m).await;
        got.push(m.body_str().to_string());
    }
    got.sort();
    assert_eq!(got, ["a1", "a2", "b1"]);

    // One message NATS refuses (larger than its max_payload of 1 MB): the COMMIT fails and
    // none of the transaction's messages is stored, not even those before it.
    p.roundtrip(Frame::new("BEGIN").h("transaction", "t2"))
        .await;
    p.roundtrip(tx_send(first, "t2", "before")).await;
    p.roundtrip(tx_send(second, "t2", &"x".repeat(1_500_000)))
        .await;
    p.roundtrip(tx_send(first, "t2", "after")).await;
    let error = answer_to(&mut p, Frame::new("COMMIT").h("transaction", "t2")).await;
    assert!(error.is("ERROR"), "{error:?}");
    assert_eq!(
        error.get("error-code"),
        Some("cluster.unavailable"),
        "{error:?}"
    );
    r.expect_silence(Duration::from_secs(2)).await;
}

/// Writes `frame` with a receipt and returns the answer (its RECEIPT or an ERROR).
async fn answer_to(c: &mut Client, frame: Frame) -> Frame {
    c.write(&frame.h("receipt", "answer-me")).await;
    c.recv_within(ACROSS).await
}
