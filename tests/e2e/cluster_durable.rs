//! Cluster mode (docs/cluster.md): durable topic subscriptions resumed on another edge, with
//! the single-node checks across edges, and temporary queues answered from another edge.
//! Two edges (the real binary) on one nats-server, as in `cluster.rs`; skipped with a message
//! only when nats-server cannot be installed, and never under CI.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plugboard_test_support::broker::{Broker as Edge, Launch};
use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use crate::harness::*;

/// A frame from another edge (through NATS) arrives within this.
const ACROSS: Duration = Duration::from_secs(10);

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// An edge in cluster `name` on `nats`'s first node, with users alice and bob.
fn edge(nats: &NatsCluster, name: &str) -> Edge {
    edge_with(nats, name, "")
}

/// [`edge`] with `extra` `[cluster]` settings.
fn edge_with(nats: &NatsCluster, name: &str, extra: &str) -> Edge {
    launch(nats, name, "", extra).start()
}

/// [`edge`] with its admin endpoint (status, console, metrics).
pub(super) fn edge_with_admin(nats: &NatsCluster, name: &str) -> Edge {
    launch(nats, name, "admin_listen = \"127.0.0.1:0\"\n", "")
        .status_line()
        .start()
}

fn launch(nats: &NatsCluster, name: &str, top: &str, extra: &str) -> Launch {
    let toml = format!(
        "{top}[[users]]\nlogin = \"alice\"\npasscode = \"pw\"\n\n[[users]]\nlogin = \"bob\"\npasscode = \"pw\"\n\n[cluster]\nnats = [\"{}\"]\nname = \"{name}\"\n{extra}\n",
        nats.nodes[0].url()
    );
    Launch::config_text(
        Path::new(<crate::Plugboard as plugboard_test_support::BrokerBinary>::PATH),
        &toml,
    )
    .start_within(Duration::from_secs(60))
}

/// A 1.2 client logged in as `login` with CONNECT's `client-id`.
pub(super) async fn login(edge: &Edge, login: &str, client_id: &str) -> Client {
    let connect = Client::connect_frame(Version::V12)
        .h("login", login)
        .h("passcode", "pw")
        .h("client-id", client_id);
    let (c, reply) = Client::connect_with(edge.addr, connect).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    c
}

fn durable_subscribe(id: &str, topic: &str, name: &str) -> Frame {
    Frame::new("SUBSCRIBE")
        .h("id", id)
        .h("destination", topic)
        .h("ack", "client-individual")
        .h("activemq.subscriptionName", name)
}

/// Writes `frame` with a receipt and returns the answer: its RECEIPT or an ERROR.
async fn answer(c: &mut Client, frame: Frame) -> Frame {
    c.write(&frame.h("receipt", "answer-me")).await;
    c.recv_within(ACROSS).await
}

/// The bodies of the next `n` MESSAGEs (each acked), sorted.
async fn bodies(c: &mut Client, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        let m = c.recv_within(ACROSS).await;
        assert!(m.is("MESSAGE"), "expected MESSAGE, got {m:?}");
        got.push(m.body_str().to_string());
        c.ack(&m).await;
    }
    got.sort();
    got
}

/// Removes durable subscription `name` of `login`/`client_id` by name, on a fresh connection
/// (an ERROR closes it): the answer. While the last subscriber's edge gives its lease up (a
/// moment after it left), tries again for up to a few seconds.
async fn remove_by_name(edge: &Edge, login_name: &str, client_id: &str, name: &str) -> Frame {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = login(edge, login_name, client_id).await;
        let f = answer(
            &mut c,
            Frame::new("UNSUBSCRIBE").h("activemq.subscriptionName", name),
        )
        .await;
        let active = f.get("error-code") == Some("destination.durable-active");
        if !active || Instant::now() >= deadline {
            return f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn cluster_durable_subscription_resumes_on_another_edge_with_one_subscriber_per_owner() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_durable_resumes") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = unique("d").replace('_', "-");
    let a = edge(&nats, &name);
    let b = edge(&nats, &name);
    let topic = format!("/topic/{}", unique("news.eu"));
    let mut publisher = login(&b, "bob", "pub").await;

    // Made on edge A: it gets what is published on B.
    let mut alice_a = login(&a, "alice", "app").await;
    let made = answer(&mut alice_a, durable_subscribe("s", &topic, "reader")).await;
    assert!(made.is("RECEIPT"), "{made:?}");
    publisher.send_r(&topic, "m1").await;
    assert_eq!(bodies(&mut alice_a, 1).await, ["m1"]);
    alice_a.disconnect().await;

    // Published while nobody is attached, on both edges: kept for it (a persistent one is
    // receipted once the topic stream stored it).
    let stored = answer(
        &mut publisher,
        send_frame(&topic, &[("persistent", "true")], "m2"),
    )
    .await;
    assert!(stored.is("RECEIPT"), "{stored:?}");
    let mut publisher_a = login(&a, "bob", "pub-a").await;
    publisher_a.send_r(&topic, "m3").await;

    // Resumed on edge B by the same principal and client-id.
    let mut alice_b = login(&b, "alice", "app").await;
    let resumed = answer(&mut alice_b, durable_subscribe("s", &topic, "reader")).await;
    assert!(resumed.is("RECEIPT"), "{resumed:?}");
    assert_eq!(bodies(&mut alice_b, 2).await, ["m2", "m3"]);

    // One subscriber at a time, across edges.
    let mut again = login(&a, "alice", "app").await;
    let refused = answer(&mut again, durable_subscribe("s", &topic, "reader")).await;
    assert_eq!(
        refused.get("error-code"),
        Some("destination.durable-active"),
        "{refused:?}"
    );

    // Another principal with the same client-id and name has a subscription of its own,
    // which holds nothing of alice's.
    let mut bob = login(&a, "bob", "app").await;
    let own = answer(&mut bob, durable_subscribe("s", &topic, "reader")).await;
    assert!(own.is("RECEIPT"), "{own:?}");
    bob.expect_silence(Duration::from_secs(1)).await;
    publisher.send_r(&topic, "m4").await;
    assert_eq!(bodies(&mut alice_b, 1).await, ["m4"]);
    assert_eq!(bodies(&mut bob, 1).await, ["m4"]);

    // Not removed while attached on the other edge; removed once detached.
    let busy = remove_by_name(&a, "alice", "app", "reader").await;
    assert_eq!(
        busy.get("error-code"),
        Some("destination.durable-active"),
        "{busy:?}"
    );
    alice_b.disconnect().await;
    let removed = remove_by_name(&a, "alice", "app", "reader").await;
    assert!(removed.is("RECEIPT"), "{removed:?}");
    let gone = remove_by_name(&a, "alice", "app", "reader").await;
    assert_eq!(
        gone.get("error-code"),
        Some("destination.unknown-durable"),
        "{gone:?}"
    );

    // Removed with what it held: a new one starts empty.
    publisher.send_r(&topic, "m5").await;
    let mut fresh = login(&b, "alice", "app").await;
    fresh
        .subscribe_with(
            "s",
            &topic,
            "client-individual",
            &[("activemq.subscriptionName", "reader")],
        )
        .await;
    fresh.expect_silence(Duration::from_secs(1)).await;

    // UNSUBSCRIBE naming it while attached removes it as the subscriber leaves.
    let bye = answer(
        &mut fresh,
        Frame::new("UNSUBSCRIBE")
            .h("id", "s")
            .h("activemq.subscriptionName", "reader"),
    )
    .await;
    assert!(bye.is("RECEIPT"), "{bye:?}");
    let after = remove_by_name(&a, "alice", "app", "reader").await;
    assert_eq!(
        after.get("error-code"),
        Some("destination.unknown-durable"),
        "{after:?}"
    );
}

#[tokio::test]
async fn cluster_durable_subscription_of_a_killed_edge_is_resumed_elsewhere_with_what_it_held() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_durable_killed_edge") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = unique("k").replace('_', "-");
    let mut a = edge_with(&nats, &name, "ack_wait_ms = 1500");
    let b = edge_with(&nats, &name, "ack_wait_ms = 1500");
    let topic = format!("/topic/{}", unique("jobs"));

    let mut holder = login(&a, "alice", "app").await;
    let made = answer(&mut holder, durable_subscribe("s", &topic, "worker")).await;
    assert!(made.is("RECEIPT"), "{made:?}");
    let mut publisher = login(&b, "bob", "pub").await;
    for i in 0..3 {
        let stored = answer(
            &mut publisher,
            send_frame(&topic, &[("persistent", "true")], &format!("job-{i}")),
        )
        .await;
        assert!(stored.is("RECEIPT"), "{stored:?}");
    }
    for _ in 0..3 {
        let m = holder.recv_within(ACROSS).await;
        assert!(m.is("MESSAGE"), "{m:?}");
    }
    a.kill_hard();

    // The dead edge's lease holds the subscription until it lapses (15 s, renewed every 5 s).
    let mut early = login(&b, "alice", "app").await;
    let refused = answer(&mut early, durable_subscribe("s", &topic, "worker")).await;
    assert_eq!(
        refused.get("error-code"),
        Some("destination.durable-active"),
        "{refused:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut resumed = loop {
        let mut c = login(&b, "alice", "app").await;
        let f = answer(&mut c, durable_subscribe("s", &topic, "worker")).await;
        if f.is("RECEIPT") {
            break c;
        }
        assert_eq!(
            f.get("error-code"),
            Some("destination.durable-active"),
            "{f:?}"
        );
        assert!(
            Instant::now() < deadline,
            "the dead edge's lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = resumed.recv_within(ACROSS).await;
        assert!(m.is("MESSAGE"), "{m:?}");
        assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
        got.push(m.body_str().to_string());
        resumed.ack(&m).await;
    }
    got.sort();
    assert_eq!(got, ["job-0", "job-1", "job-2"]);
    resumed.expect_silence(Duration::from_secs(2)).await;
    // The same id again on its connection is a duplicate, as on one node.
    let duplicate = answer(&mut resumed, durable_subscribe("s", &topic, "worker")).await;
    assert_eq!(
        duplicate.get("error-code"),
        Some("protocol.duplicate-subscription"),
        "{duplicate:?}"
    );
}

/// A request sent on edge `a` with `reply-to` a temporary queue its requester (alice)
/// subscribes to, taken (and acknowledged) by a responder (bob) on edge `b`: the requester,
/// the responder and the `/reply-queue/` name the request carried.
async fn request_across(a: &Edge, b: &Edge) -> (Client, Client, String) {
    let requests = format!("/queue/{}", unique("requests"));
    let mut requester = login(a, "alice", "req").await;
    requester
        .subscribe("answers", "/temp-queue/answers", "client-individual")
        .await;
    let sent = answer(
        &mut requester,
        send_frame(&requests, &[("reply-to", "/temp-queue/answers")], "when"),
    )
    .await;
    assert!(sent.is("RECEIPT"), "{sent:?}");
    let mut responder = login(b, "bob", "resp").await;
    responder
        .subscribe("req", &requests, "client-individual")
        .await;
    let request = responder.recv_within(ACROSS).await;
    assert!(request.is("MESSAGE"), "{request:?}");
    let reply_to = request.must("reply-to").to_string();
    assert!(reply_to.starts_with("/reply-queue/"), "{reply_to}");
    responder.ack(&request).await;
    (requester, responder, reply_to)
}

#[tokio::test]
async fn cluster_reply_from_another_edge_reaches_the_temp_queue_only_its_owner_reads() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_reply_across_edges") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = unique("r").replace('_', "-");
    let a = edge(&nats, &name);
    let b = edge(&nats, &name);
    let (mut requester, mut responder, reply_to) = request_across(&a, &b).await;
    let replied = answer(&mut responder, send_frame(&reply_to, &[], "noon")).await;
    assert!(replied.is("RECEIPT"), "{replied:?}");

    let reply = requester.recv_within(ACROSS).await;
    assert!(reply.is("MESSAGE"), "{reply:?}");
    assert_eq!(reply.body_str(), "noon");
    assert_eq!(reply.must("subscription"), "answers");
    requester.ack(&reply).await;

    // Nobody else reads it, on either edge (the same principal on another connection neither).
    for (edge, user) in [(&b, "bob"), (&a, "bob"), (&b, "alice")] {
        let mut thief = login(edge, user, "thief").await;
        let refused = answer(
            &mut thief,
            Frame::new("SUBSCRIBE")
                .h("id", "t")
                .h("destination", &reply_to),
        )
        .await;
        assert_eq!(
            refused.get("error-code"),
            Some("permission.subscribe"),
            "{refused:?}"
        );
    }

    // A second reply from B still arrives (the edge's reply subscription stays).
    let mut responder2 = login(&b, "bob", "resp2").await;
    responder2.send_r(&reply_to, "still noon").await;
    let second = requester.recv_within(ACROSS).await;
    assert_eq!(second.body_str(), "still noon", "{second:?}");
}

/// A persistent reply to another edge's temporary queue is receipted once that edge has put it
/// in the queue; without that edge's answer in time the SEND gets `cluster.unavailable`; a reply
/// to a queue or an edge that is gone is dropped, as on one node (receipted, not waited for).
#[tokio::test]
async fn cluster_persistent_reply_is_receipted_once_its_edge_has_it() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_persistent_reply") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = unique("p").replace('_', "-");
    let mut a = edge(&nats, &name);
    let b = edge_with(&nats, &name, "publish_timeout_ms = 1500");
    let (mut requester, mut responder, reply_to) = request_across(&a, &b).await;
    let persistent = [("persistent", "true")];

    // Handed over: receipted once edge A has it.
    let replied = answer(&mut responder, send_frame(&reply_to, &persistent, "noon")).await;
    assert!(replied.is("RECEIPT"), "{replied:?}");
    let reply = requester.recv_within(ACROSS).await;
    assert_eq!(reply.body_str(), "noon", "{reply:?}");
    requester.ack(&reply).await;

    // Edge A does not answer (stopped): the persistent reply's SEND is told; a non-persistent
    // one goes at most once, not waited for.
    a.signal("STOP");
    let error = answer(&mut responder, send_frame(&reply_to, &persistent, "late")).await;
    assert_eq!(
        error.get("error-code"),
        Some("cluster.unavailable"),
        "{error:?}"
    );
    let mut quick = login(&b, "bob", "quick").await;
    let fired = answer(&mut quick, send_frame(&reply_to, &[], "fired")).await;
    assert!(fired.is("RECEIPT"), "{fired:?}");
    a.signal("CONT");
    // Both were on their way: an unanswered reply may still arrive (sent again, it would
    // arrive twice: at least once).
    for body in ["late", "fired"] {
        let m = requester.recv_within(ACROSS).await;
        assert_eq!(m.body_str(), body, "{m:?}");
        requester.ack(&m).await;
    }

    // The temporary queue is gone with its connection: dropped, receipted.
    requester.disconnect().await;
    let mut later = login(&b, "bob", "later").await;
    let dropped = answer(&mut later, send_frame(&reply_to, &persistent, "nobody")).await;
    assert!(dropped.is("RECEIPT"), "{dropped:?}");
    // Edge A is gone: nobody is on its subject; dropped, receipted (not an ERROR after the
    // timeout).
    a.kill_hard();
    let gone = answer(&mut later, send_frame(&reply_to, &persistent, "no edge")).await;
    assert!(gone.is("RECEIPT"), "{gone:?}");
}

#[tokio::test]
async fn cluster_persistent_topic_send_and_durable_subscribe_fail_in_time_without_nats() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_durable_without_nats") else {
        return;
    };
    let mut nats = NatsCluster::start(&bin, 1);
    let name = unique("u").replace('_', "-");
    let e = edge_with(&nats, &name, "publish_timeout_ms = 1000");
    let topic = format!("/topic/{}", unique("outage"));
    let mut local = login(&e, "alice", "local").await;
    local.subscribe("s", &topic, "auto").await;

    nats.kill(0);
    // Not kept for the durable subscriptions: the sender is told; this edge's own live
    // subscribers still get it.
    let mut p = login(&e, "bob", "pub").await;
    let error = answer(
        &mut p,
        send_frame(&topic, &[("persistent", "true")], "not stored"),
    )
    .await;
    assert_eq!(
        error.get("error-code"),
        Some("cluster.unavailable"),
        "{error:?}"
    );
    let m = local.recv_within(ACROSS).await;
    assert!(m.is("MESSAGE"), "{m:?}");
    assert_eq!(m.body_str(), "not stored");
    // A non-persistent one is not held up.
    let mut q = login(&e, "bob", "pub2").await;
    let receipt = answer(&mut q, send_frame(&topic, &[], "live only")).await;
    assert!(receipt.is("RECEIPT"), "{receipt:?}");

    // A durable subscription cannot be claimed meanwhile.
    let mut d = login(&e, "alice", "app").await;
    let refused = answer(&mut d, durable_subscribe("s", &topic, "reader")).await;
    assert_eq!(
        refused.get("error-code"),
        Some("cluster.unavailable"),
        "{refused:?}"
    );
}
