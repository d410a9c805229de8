//! Limits of the queues' JetStream stream (docs/cluster.md, "Queue limits"):
//! `queue_max_length` per queue, `queue_max_messages` / `queue_max_bytes` for all of a vhost's
//! queues, and `queue_overflow`: `drop-head` keeps the newest, `reject-publish` answers the SEND
//! (with or without a receipt) and a transaction's COMMIT with ERROR `flow.queue-full`, storing
//! none of the refused batch, and takes messages again once there is room.

use std::time::Duration;

use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use super::cluster::{
    answer, client, cluster_name, edge, message_within, single_edge, target_dir, ACROSS,
};
use crate::harness::*;

fn send(dest: &str, body: &str) -> Frame {
    Frame::new("SEND").h("destination", dest).body(body)
}

fn tx_send(dest: &str, tx: &str, body: &str) -> Frame {
    send(dest, body).h("transaction", tx)
}

fn assert_full(error: &Frame, dest: &str) {
    assert!(error.is("ERROR"), "{error:?}");
    assert_eq!(
        error.get("error-code"),
        Some("flow.queue-full"),
        "{error:?}"
    );
    assert!(
        error.get("message").unwrap_or_default().contains(dest),
        "{error:?}"
    );
}

#[tokio::test]
async fn cluster_reject_publish_refuses_sends_and_commits_to_a_full_queue_until_there_is_room() {
    let Some((_nats, edge)) = single_edge(
        "cluster_queue_limits_reject",
        "queue_max_length = 3\nqueue_overflow = \"reject-publish\"",
    ) else {
        return;
    };
    let (full, other) = ("/queue/limited", "/queue/other");
    let mut p = client(&edge).await;
    for i in 0..3 {
        p.send_r(full, &format!("m{i}")).await;
    }
    // The fourth, with a receipt: refused, the connection closes.
    assert_full(&answer(&mut p, send(full, "m3")).await, full);

    // Without a receipt (published without waiting): refused all the same.
    let mut quiet = client(&edge).await;
    quiet.send(full, "m3").await;
    let error = quiet.recv_within(ACROSS).await;
    assert_full(&error, full);

    // The limit is per queue: another takes its three, and a transaction that would put a
    // fourth there is refused at COMMIT, storing none of its messages (on either queue).
    let mut p = client(&edge).await;
    for i in 0..3 {
        p.send_r(other, &format!("o{i}")).await;
    }
    p.roundtrip(Frame::new("BEGIN").h("transaction", "t")).await;
    p.roundtrip(tx_send("/queue/third", "t", "t0")).await;
    p.roundtrip(tx_send(other, "t", "o3")).await;
    let error = answer(&mut p, Frame::new("COMMIT").h("transaction", "t")).await;
    assert!(error.is("ERROR"), "{error:?}");
    assert_eq!(
        error.get("error-code"),
        Some("flow.queue-full"),
        "{error:?}"
    );
    let mut third = client(&edge).await;
    third
        .subscribe("t", "/queue/third", "client-individual")
        .await;
    third.expect_silence(Duration::from_secs(1)).await;

    // A consumer takes (and acks) one: there is room for one more, in order behind the rest.
    let mut c = client(&edge).await;
    c.subscribe_with(
        "s",
        full,
        "client-individual",
        &[("activemq.prefetchSize", "1")],
    )
    .await;
    let first = message_within(&mut c, ACROSS).await;
    assert_eq!(first.body_str(), "m0");
    c.ack(&first).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the ACK reaches JetStream
    let mut p = client(&edge).await;
    p.send_r(full, "m3").await;
    let mut rest = Vec::new();
    for _ in 0..3 {
        let m = message_within(&mut c, ACROSS).await;
        c.ack(&m).await;
        rest.push(m.body_str().to_string());
    }
    assert_eq!(rest, ["m1", "m2", "m3"]);
}

#[tokio::test]
async fn cluster_drop_head_keeps_the_newest_messages_of_each_queue() {
    let Some((_nats, edge)) = single_edge("cluster_queue_limits_drop", "queue_max_length = 3")
    else {
        return;
    };
    let dest = "/queue/dropping";
    let mut p = client(&edge).await;
    for i in 0..6 {
        p.send_r(dest, &format!("m{i}")).await;
    }
    let mut c = client(&edge).await;
    c.subscribe("s", dest, "client-individual").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = message_within(&mut c, ACROSS).await;
        c.ack(&m).await;
        got.push(m.body_str().to_string());
    }
    assert_eq!(got, ["m3", "m4", "m5"]);
    c.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn cluster_queue_limits_for_all_queues_refuse_by_messages_and_by_bytes() {
    let Some((_nats, edge)) = single_edge(
        "cluster_queue_limits_total",
        "queue_max_messages = 4\nqueue_overflow = \"reject-publish\"",
    ) else {
        return;
    };
    let mut p = client(&edge).await;
    for (i, dest) in ["/queue/a", "/queue/b", "/queue/c", "/queue/a"]
        .iter()
        .enumerate()
    {
        p.send_r(dest, &format!("m{i}")).await;
    }
    assert_full(&answer(&mut p, send("/queue/d", "m4")).await, "/queue/d");

    let Some((_nats, edge)) = single_edge(
        "cluster_queue_limits_bytes",
        "queue_max_bytes = 20000\nqueue_overflow = \"reject-publish\"",
    ) else {
        return;
    };
    let mut p = client(&edge).await;
    let body = "x".repeat(6000);
    for dest in ["/queue/a", "/queue/b", "/queue/c"] {
        p.send_r(dest, &body).await;
    }
    assert_full(&answer(&mut p, send("/queue/a", &body)).await, "/queue/a");
}

#[tokio::test]
async fn cluster_queue_limits_set_by_one_edge_bind_every_edge() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_queue_limits_shared") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    // The first edge makes the stream without limits; the second, started after, sets them
    // on the existing stream: they bind SENDs on the first edge too.
    let unlimited = edge(&nats, &name, "");
    let mut p = client(&unlimited).await;
    p.send_r("/queue/shared", "before").await;
    let _limiting = edge(
        &nats,
        &name,
        "queue_max_length = 2\nqueue_overflow = \"reject-publish\"",
    );
    p.send_r("/queue/shared", "m1").await;
    assert_full(
        &answer(&mut p, send("/queue/shared", "m2")).await,
        "/queue/shared",
    );
}
