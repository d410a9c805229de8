//! Exclusive consumers on a cluster queue (docs/cluster.md, "Exclusive consumers"): one
//! subscription on any edge receives the queue's messages while the others (exclusive or not,
//! on every edge) get none; when it leaves, a waiting exclusive one on another edge takes
//! over with what it held; with no exclusive subscription left the others compete again; when
//! its edge dies, another takes over once the lease lapses.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use super::cluster::{
    client, cluster_name, edge, message_within, messages_within as take, target_dir, ACROSS,
};
use crate::harness::*;

/// Long enough for a subscription that should not get a message to have got one.
const QUIET_ACROSS: Duration = Duration::from_millis(1500);

fn numbered(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("m{i:02}")).collect()
}

async fn send_range(p: &mut Client, dest: &str, range: std::ops::Range<usize>) {
    for i in range {
        p.send_r(dest, &format!("m{i:02}")).await;
    }
}

async fn exclusive(c: &mut Client, id: &str, dest: &str, header: &str) {
    c.subscribe_with(id, dest, "client-individual", &[(header, "true")])
        .await;
}

fn bodies(frames: &[Frame]) -> BTreeSet<String> {
    frames.iter().map(|f| f.body_str().to_string()).collect()
}

#[tokio::test]
async fn cluster_exclusive_consumer_gets_everything_and_fails_over_across_edges() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_exclusive") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, "");
    let b = edge(&nats, &name, "");
    let dest = "/queue/exclusive";
    let mut p = client(&a).await;

    // The first exclusive subscriber (edge A) takes the queue: its first message proves it.
    let mut first = client(&a).await;
    exclusive(&mut first, "x", dest, "activemq.exclusive").await;
    send_range(&mut p, dest, 0..1).await;
    let probe = message_within(&mut first, ACROSS).await;
    first.ack(&probe).await;

    // A second exclusive one (edge B, the other spelling) and two that are not exclusive, one
    // on each edge: none of them gets anything while the first is there.
    let mut standby = client(&b).await;
    exclusive(&mut standby, "x", dest, "x-single-active-consumer").await;
    let mut plain_a = client(&a).await;
    plain_a.subscribe("p", dest, "client-individual").await;
    let mut plain_b = client(&b).await;
    plain_b.subscribe("p", dest, "client-individual").await;
    send_range(&mut p, dest, 1..11).await;
    let got = take(&mut first, 10).await;
    assert_eq!(bodies(&got), numbered(1..11), "all to the active one");
    for other in [&mut standby, &mut plain_a, &mut plain_b] {
        other.expect_silence(QUIET_ACROSS).await;
    }

    // It acks half and leaves: the standby on the other edge takes over, with the five it
    // did not ack (redelivered) and what is sent after.
    for m in &got[..5] {
        first.ack(m).await;
    }
    first.unsubscribe("x").await;
    send_range(&mut p, dest, 11..13).await;
    let taken = take(&mut standby, 7).await;
    let mut expected = numbered(6..11);
    expected.extend(numbered(11..13));
    assert_eq!(bodies(&taken), expected);
    for m in &taken {
        // (One sent after may have reached the old subscription's last pull, which hands it
        // back too.)
        if numbered(6..11).contains(m.body_str()) {
            assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
        }
        standby.ack(m).await;
    }
    plain_a.expect_silence(QUIET_ACROSS).await;
    plain_b.expect_silence(Duration::from_millis(200)).await;

    // The last exclusive one goes (abruptly): the others compete again, on both edges,
    // losing and duplicating nothing.
    standby.drop_abruptly();
    send_range(&mut p, dest, 13..33).await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + ACROSS * 2;
    while seen.len() < 20 {
        assert!(Instant::now() < deadline, "got only {seen:?}");
        for c in [&mut plain_a, &mut plain_b] {
            if let Ok(m) = c.try_recv(Duration::from_millis(100)).await {
                assert!(m.is("MESSAGE"), "{m:?}");
                c.ack(&m).await;
                seen.push(m.body_str().to_string());
            }
        }
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates: {seen:?}");
    assert_eq!(unique, numbered(13..33));
}

#[tokio::test]
async fn cluster_exclusive_consumer_of_a_killed_edge_is_replaced_once_its_lease_lapses() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_exclusive_killed") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let settings = "ack_wait_ms = 1500";
    let mut a = edge(&nats, &name, settings);
    let b = edge(&nats, &name, settings);
    let dest = "/queue/exclusive-killed";
    let mut p = client(&b).await;

    let mut active = client(&a).await;
    exclusive(&mut active, "x", dest, "activemq.exclusive").await;
    send_range(&mut p, dest, 0..3).await;
    let held = bodies(&take(&mut active, 3).await);
    let mut standby = client(&b).await;
    exclusive(&mut standby, "x", dest, "activemq.exclusive").await;
    standby.expect_silence(QUIET_ACROSS).await;

    let killed = Instant::now();
    a.kill_hard();
    send_range(&mut p, dest, 3..5).await;
    // The lease lapses (15 s without renewal), then the standby gets the dead edge's three
    // (redelivered after ack_wait) and the two sent since.
    let mut got = Vec::new();
    for _ in 0..5 {
        let m = message_within(&mut standby, Duration::from_secs(30)).await;
        standby.ack(&m).await;
        got.push(m);
    }
    let mut expected = held.clone();
    expected.extend(numbered(3..5));
    assert_eq!(bodies(&got), expected);
    assert!(
        killed.elapsed() >= Duration::from_secs(5),
        "taken over only once the lease lapsed ({:?})",
        killed.elapsed()
    );
    standby.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn cluster_queues_without_exclusive_consumers_cost_no_lease_reads_and_one_taken_stops_the_others(
) {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_lease_watch") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = super::cluster::edge_with_status(&nats, &name);
    let b = super::cluster::edge_with_status(&nats, &name);
    // Eight queues with a subscriber on each edge, none exclusive, idle for a while: the
    // edges learn of exclusive leases from their watch, not by reading each queue's lease.
    let queues: Vec<String> = (0..8).map(|i| format!("/queue/watched-{i}")).collect();
    let mut subscribers = Vec::new();
    for edge in [&a, &b] {
        let mut c = client(edge).await;
        for (i, queue) in queues.iter().enumerate() {
            c.subscribe(&format!("s{i}"), queue, "client-individual")
                .await;
        }
        subscribers.push(c);
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    for edge in [&a, &b] {
        let status = plugboard_test_support::broker::fetch_status(edge.admin()).await;
        let reads = status["cluster"]["lease_reads"]
            .as_u64()
            .unwrap_or(u64::MAX);
        // (At most one read per queue, before the watch caught up.)
        assert!(reads <= 8, "{reads} lease reads: {status}");
    }

    // An exclusive subscriber on edge A: from the watch, the others' pulls (waiting on the
    // server since before) leave at once, on both edges, and A's exclusive one gets
    // everything sent from then on.
    let dest = &queues[0];
    let mut active = client(&a).await;
    exclusive(&mut active, "x", dest, "activemq.exclusive").await;
    let mut p = client(&b).await;
    // Probes until one reaches it (the SUBSCRIBE's RECEIPT comes before the lease is taken;
    // a probe sent before may go to another subscriber, which acks it).
    let deadline = Instant::now() + ACROSS;
    loop {
        assert!(
            Instant::now() < deadline,
            "the exclusive subscriber got no probe"
        );
        p.send_r(dest, "probe").await;
        if let Ok(m) = active.try_recv(Duration::from_millis(500)).await {
            active.ack(&m).await;
            break;
        }
        for c in &mut subscribers {
            while let Ok(m) = c.try_recv(Duration::from_millis(50)).await {
                c.ack(&m).await;
            }
        }
    }
    send_range(&mut p, dest, 1..6).await;
    // (A probe another pull had been sent is handed back: to the exclusive one.)
    let mut got = BTreeSet::new();
    while got.len() < 5 {
        let m = message_within(&mut active, ACROSS).await;
        active.ack(&m).await;
        if m.body_str() != "probe" {
            got.insert(m.body_str().to_string());
        }
    }
    assert_eq!(got, numbered(1..6));
    for c in &mut subscribers {
        c.expect_silence(Duration::from_millis(500)).await;
    }
}
