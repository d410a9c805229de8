//! Message priority on a cluster queue (docs/cluster.md, "Message priority"): a queue that
//! `[cluster] priority_queues` names keeps three bands (5–9, 4, 0–3) and delivers the highest
//! band that has messages first, on any edge, arrival order within a band; a NACKed message
//! goes back to its band; a transaction's messages and a browse follow the bands. A queue the
//! setting does not name delivers in the order JetStream stored its messages. Under a load of
//! every band on a 3-node NATS cluster, nothing is lost, stranded or marked redelivered.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use super::browsing::browse;
use super::cluster::{client, cluster_name, edge, edge_on, message_within, target_dir, ACROSS};
use super::cluster_load::{batch_producer, consumer, Tally};
use super::priority::{bodies, fill, send_p};
use crate::harness::*;

const SETTING: &str = "priority_queues = [\"/queue/prio.*\"]";

const MIXED: [(&str, Option<&str>); 8] = [
    ("a4", None),
    ("b0", Some("0")),
    ("c9", Some("9")),
    ("d4", Some("4")),
    ("e7", Some("7")),
    ("f9", Some("9")),
    ("g0", Some("0")),
    ("h4", None),
];

/// Takes `n` messages from `c`, acknowledging each (`client-individual`).
async fn take_acking(c: &mut Client, n: usize) -> Vec<Frame> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let m = message_within(c, ACROSS).await;
        c.ack(&m).await;
        got.push(m);
    }
    got
}

#[tokio::test]
async fn cluster_priority_queue_delivers_higher_bands_first_across_edges() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_message_priority") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, SETTING);
    let b = edge(&nats, &name, SETTING);
    let mut p = client(&a).await;

    // A backlog sent on edge A: edge B browses it and delivers it by band, with any window.
    for (i, window) in ["1", "100"].into_iter().enumerate() {
        let dest = format!("/queue/prio.backlog{i}");
        fill(&mut p, &dest, &MIXED).await;
        let mut browser = client(&b).await;
        let shown = browse(&mut browser, "b", &dest).await;
        let expected = ["c9", "e7", "f9", "a4", "d4", "h4", "b0", "g0"];
        assert_eq!(bodies(&shown), expected, "browsed by band");
        let mut c = client(&b).await;
        c.subscribe_with(
            "s",
            &dest,
            "client-individual",
            &[("activemq.prefetchSize", window)],
        )
        .await;
        let got = take_acking(&mut c, 8).await;
        assert_eq!(bodies(&got), expected, "window {window}");
        for m in &got {
            assert_eq!(m.get("redelivered"), None, "{m:?}");
        }
        // The header travels as sent.
        assert_eq!(got[0].get("priority"), Some("9"));
        assert_eq!(got[3].get("priority"), None);
        c.expect_silence(Duration::from_millis(300)).await;
    }

    // The same messages to a queue the setting does not name: the order they were stored in.
    let dest = "/queue/plain.backlog";
    fill(&mut p, dest, &MIXED).await;
    let mut c = client(&b).await;
    c.subscribe("s", dest, "client-individual").await;
    let got = take_acking(&mut c, 8).await;
    assert_eq!(
        bodies(&got),
        MIXED.iter().map(|(body, _)| *body).collect::<Vec<_>>()
    );

    // A transaction's messages go to their bands too.
    let dest = "/queue/prio.tx";
    p.write(&Frame::new("BEGIN").h("transaction", "t1")).await;
    for (body, priority) in [("t0", "0"), ("t4", "4"), ("t8", "8")] {
        p.write(&send_p(dest, body, Some(priority)).h("transaction", "t1"))
            .await;
    }
    let committed = p
        .roundtrip(Frame::new("COMMIT").h("transaction", "t1"))
        .await;
    assert!(committed.is("RECEIPT"), "{committed:?}");
    let mut c = client(&b).await;
    c.subscribe("s", dest, "client-individual").await;
    assert_eq!(bodies(&take_acking(&mut c, 3).await), ["t8", "t4", "t0"]);
}

#[tokio::test]
async fn cluster_priority_queue_serves_a_waiting_subscriber_and_its_nacks_by_band() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_message_priority_live") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, SETTING);
    let b = edge(&nats, &name, SETTING);
    let dest = "/queue/prio.live";
    let mut p = client(&a).await;

    // A subscriber with room, waiting on every band: each message comes at once, whatever
    // its band, delivered once.
    let mut c = client(&b).await;
    c.subscribe_with(
        "s",
        dest,
        "client-individual",
        &[("activemq.prefetchSize", "1")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // its pulls reach JetStream
    for (body, priority) in [("w0", "0"), ("w9", "9"), ("w4", "4")] {
        fill(&mut p, dest, &[(body, Some(priority))]).await;
        let m = message_within(&mut c, Duration::from_secs(3)).await;
        assert_eq!(m.body_str(), body);
        assert_eq!(m.get("redelivered"), None, "{m:?}");
        c.ack(&m).await;
    }

    // Its window is full: what arrives meanwhile waits, and the highest band goes first.
    fill(&mut p, dest, &[("x4", None)]).await;
    let held = message_within(&mut c, ACROSS).await;
    assert_eq!(held.body_str(), "x4");
    fill(
        &mut p,
        dest,
        &[("y1", Some("1")), ("y4", None), ("y6", Some("6"))],
    )
    .await;
    c.expect_silence(Duration::from_millis(300)).await;
    c.ack(&held).await;
    let m = message_within(&mut c, ACROSS).await;
    assert_eq!(m.body_str(), "y6");

    // A NACKed message goes back to its band: before the normal and low ones again.
    c.nack(&m).await;
    let again = message_within(&mut c, ACROSS).await;
    assert_eq!(again.body_str(), "y6");
    assert_eq!(again.get("redelivered"), Some("true"));
    c.ack(&again).await;
    let rest = take_acking(&mut c, 2).await;
    assert_eq!(bodies(&rest), ["y4", "y1"]);
    c.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn cluster_priority_queue_exclusive_subscriber_takes_every_band() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_message_priority_exclusive") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, SETTING);
    let b = edge(&nats, &name, SETTING);
    let dest = "/queue/prio.exclusive";
    // Two subscribers that are not exclusive, one per edge, waiting on every band.
    let mut others = Vec::new();
    for edge in [&a, &b] {
        let mut c = client(edge).await;
        c.subscribe("s", dest, "client-individual").await;
        others.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // An exclusive one arrives: the others leave their bands' pulls, and it gets everything.
    let mut active = client(&a).await;
    active
        .subscribe_with(
            "x",
            dest,
            "client-individual",
            &[("activemq.exclusive", "true")],
        )
        .await;
    let mut p = client(&b).await;
    // Probes until one reaches it (a probe sent before it took the lease may go elsewhere).
    let deadline = std::time::Instant::now() + ACROSS;
    loop {
        assert!(std::time::Instant::now() < deadline, "no probe reached it");
        fill(&mut p, dest, &[("probe", Some("9"))]).await;
        if let Ok(m) = active.try_recv(Duration::from_millis(500)).await {
            active.ack(&m).await;
            break;
        }
        for c in &mut others {
            while let Ok(m) = c.try_recv(Duration::from_millis(50)).await {
                c.ack(&m).await;
            }
        }
    }
    fill(
        &mut p,
        dest,
        &[("e0", Some("0")), ("e4", None), ("e9", Some("9"))],
    )
    .await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = message_within(&mut active, ACROSS).await;
        active.ack(&m).await;
        if m.body_str() != "probe" {
            got.push(m.body_str().to_string());
        }
    }
    got.sort();
    assert_eq!(got, ["e0", "e4", "e9"]);
    for c in &mut others {
        c.expect_silence(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn cluster_priority_queue_under_mixed_load_on_three_nats_nodes_loses_and_redelivers_nothing()
{
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_message_priority_load") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 3);
    let name = cluster_name();
    // A message stranded on its way to a pull (unacknowledged until `ack_wait`) would arrive
    // only after the consumers' deadline.
    let settings = format!("replicas = 3\nack_wait_ms = 60000\n{SETTING}");
    // Each edge knows another node: pulls and their messages cross the NATS cluster.
    let edges = [
        edge_on(&[nats.nodes[0].url()], &name, &settings),
        edge_on(&[nats.nodes[2].url()], &name, &settings),
    ];
    let dest = "/queue/prio.load";
    const PER_PRODUCER: usize = 1500;
    let expected = edges.len() * (PER_PRODUCER + 1);
    let deadline = Instant::now() + Duration::from_secs(45);
    let tally = Arc::new(Tally::default());
    // Small windows: every band's waiting pull often brings a message while the window is
    // full.
    let mut consumers = Vec::new();
    for edge in &edges {
        for _ in 0..2 {
            let done = move |t: &Tally| t.total.load(Ordering::SeqCst) >= expected;
            consumers.push(consumer(edge.addr, dest, 2, tally.clone(), done, deadline));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // their pulls reach JetStream
    for (e, edge) in edges.iter().enumerate() {
        batch_producer(
            edge.addr,
            dest,
            format!("p{e}"),
            PER_PRODUCER,
            &["0", "4", "9"],
        )
        .await
        .expect("producer");
    }
    let mut shares = Vec::new();
    for c in consumers {
        shares.push(c.await.expect("consumer"));
    }
    // (Before the consumers' deadline, so before `ack_wait`.)
    tally.assert_each_once(expected, &format!("per consumer {shares:?}"));
    // What a pull brought while the window was full waited for room: never handed back,
    // so never marked redelivered.
    assert_eq!(tally.redelivered.load(Ordering::SeqCst), 0, "{shares:?}");
}
