//! Limits of the queues' JetStream stream (docs/cluster.md, "Queue limits"):
//! `queue_max_length` per queue, `queue_max_messages` / `queue_max_bytes` for all of a vhost's
//! queues, and `queue_overflow`: `drop-head` keeps the newest, `reject-publish` answers the SEND
//! (with or without a receipt) and a transaction's COMMIT with ERROR `flow.queue-full`, storing
//! none of the refused batch, and takes messages again once there is room.

use std::time::Duration;

use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use super::cluster::{
    answer, client, cluster_name, edge, message_within, messages_within, single_edge, target_dir,
    ACROSS,
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

/// `[[queues]]` entries with a length limit: queue classes, each its own stream.
const CLASSES: &str = "[[queues]]\npattern = \"/queue/lim.*\"\nmax_length = 3\noverflow = \"reject-publish\"\n\n[[queues]]\npattern = \"/queue/dh.*\"\nmax_length = 2\n\n[[queues]]\npattern = \"/queue/*\"\nmessage_ttl_ms = 600000\n";

#[tokio::test]
async fn cluster_queues_entries_limit_each_queue_they_match_on_every_edge() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_queue_classes") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, CLASSES);
    let b = edge(&nats, &name, CLASSES);
    let (limited, sibling, free) = ("/queue/lim.a", "/queue/lim.b", "/queue/free");

    // Three fit, from either edge; the fourth is refused on the other edge too.
    let mut pa = client(&a).await;
    let mut pb = client(&b).await;
    pa.send_r(limited, "m0").await;
    pb.send_r(limited, "m1").await;
    pa.send_r(limited, "m2").await;
    assert_full(&answer(&mut pb, send(limited, "m3")).await, limited);

    // Each queue the pattern matches has its own limit; a queue no limited entry matches
    // (the last entry gives it a TTL only) has none.
    let mut p = client(&a).await;
    for i in 0..5 {
        p.send_r(free, &format!("f{i}")).await;
    }
    // A transaction over a class's queue and a queue of the vhost's stream: both stored.
    p.roundtrip(Frame::new("BEGIN").h("transaction", "t")).await;
    p.roundtrip(tx_send(sibling, "t", "s0")).await;
    p.roundtrip(tx_send(free, "t", "f5")).await;
    let committed = answer(&mut p, Frame::new("COMMIT").h("transaction", "t")).await;
    assert!(committed.is("RECEIPT"), "{committed:?}");
    for i in 1..3 {
        p.send_r(sibling, &format!("s{i}")).await;
    }
    assert_full(&answer(&mut p, send(sibling, "s3")).await, sibling);

    // Consumers on edge B get every stored message, in order.
    let mut c = client(&b).await;
    c.subscribe("l", limited, "auto").await;
    c.subscribe("s", sibling, "auto").await;
    c.subscribe("f", free, "auto").await;
    let mut got: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for _ in 0..12 {
        let m = message_within(&mut c, ACROSS).await;
        got.entry(m.get("subscription").unwrap_or_default().to_string())
            .or_default()
            .push(m.body_str().to_string());
    }
    assert_eq!(got["l"], ["m0", "m1", "m2"]);
    assert_eq!(got["s"], ["s0", "s1", "s2"]);
    assert_eq!(got["f"], ["f0", "f1", "f2", "f3", "f4", "f5"]);
    c.expect_silence(Duration::from_millis(500)).await;

    // Consumed: there is room again.
    tokio::time::sleep(Duration::from_millis(300)).await; // the acks reach JetStream
    let mut p = client(&a).await;
    p.send_r(limited, "m3").await;
    assert_eq!(message_within(&mut c, ACROSS).await.body_str(), "m3");

    // drop-head (the default with a limit): the newest two of each queue stay.
    for i in 0..5 {
        p.send_r("/queue/dh.x", &format!("d{i}")).await;
    }
    let mut d = client(&b).await;
    d.subscribe("d", "/queue/dh.x", "auto").await;
    let kept: Vec<String> = messages_within(&mut d, 2)
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    assert_eq!(kept, ["d3", "d4"]);
    d.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn cluster_reject_publish_dlx_dead_letters_what_the_queue_s_limit_refuses() {
    let Some((_nats, edge)) = single_edge(
        "cluster_queue_classes_dlx",
        "[[queues]]\npattern = \"/queue/rx\"\nmax_length = 1\noverflow = \"reject-publish-dlx\"\n\n[dead_letter]\nmax_deliveries = 5\n",
    ) else {
        return;
    };
    let dest = "/queue/rx";
    let mut p = client(&edge).await;
    p.send_r(dest, "kept").await;
    // Refused, with a receipt and without one: both SENDs get the ERROR, and both messages go
    // to the dead-letter queue.
    assert_full(&answer(&mut p, send(dest, "over-1")).await, dest);
    let mut quiet = client(&edge).await;
    quiet.send(dest, "over-2").await;
    assert_full(&quiet.recv_within(ACROSS).await, dest);

    let mut dlq = client(&edge).await;
    dlq.subscribe("d", "/queue/DLQ.rx", "auto").await;
    let mut bodies = Vec::new();
    for m in messages_within(&mut dlq, 2).await {
        assert_eq!(m.get("dlq-reason"), Some("maxlen"), "{m:?}");
        assert_eq!(m.get("dlq-original-destination"), Some(dest), "{m:?}");
        bodies.push(m.body_str().to_string());
    }
    bodies.sort();
    assert_eq!(bodies, ["over-1", "over-2"]);
    let mut c = client(&edge).await;
    c.subscribe("s", dest, "auto").await;
    assert_eq!(message_within(&mut c, ACROSS).await.body_str(), "kept");
    c.expect_silence(Duration::from_millis(500)).await;
}
