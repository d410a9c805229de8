//! Cluster mode (docs/cluster.md, "Durable topic subscriptions"): durable subscriptions to
//! wildcard patterns live in the cluster, collect from every edge while nobody is attached and
//! resume on another edge; and a durable consumer made by an earlier version (filtering on the
//! old one-token topic subject) is brought up to date when an edge joins, so it misses nothing
//! this version publishes; and every edge's console and metrics list the durable subscriptions
//! in the cluster, wherever their subscriber is. Two edges on one nats-server; skipped with a
//! message only when nats-server cannot be installed, and never under CI.

use std::time::Duration;

use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use super::cluster::{target_dir, ACROSS};
use super::cluster_durable::{edge_with_admin as edge, login};
use crate::harness::*;

/// Subscribes durably (`activemq.subscriptionName`), answered with a RECEIPT or an ERROR.
async fn durable(c: &mut Client, destination: &str, name: &str) -> Frame {
    c.write(
        &Frame::new("SUBSCRIBE")
            .h("id", "s")
            .h("destination", destination)
            .h("ack", "client-individual")
            .h("activemq.subscriptionName", name)
            .h("receipt", "made"),
    )
    .await;
    c.recv_within(ACROSS).await
}

/// A persistent SEND, answered once the topic stream stored it.
async fn store(c: &mut Client, destination: &str, body: &str) {
    c.write(&send_frame(
        destination,
        &[("persistent", "true"), ("receipt", "r")],
        body,
    ))
    .await;
    let f = c.recv_within(ACROSS).await;
    assert!(f.is("RECEIPT"), "{f:?}");
}

/// The (destination, body) of the next `n` MESSAGEs, each acked, sorted. The pull a
/// subscriber that left had waiting took at most one message meanwhile (handed back at once):
/// none was delivered more than once before.
async fn received(c: &mut Client, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let mut redelivered = 0;
    for _ in 0..n {
        let m = c.recv_within(ACROSS).await;
        assert!(m.is("MESSAGE"), "expected MESSAGE, got {m:?}");
        match m.get("redelivery-count") {
            None => {}
            Some("1") => redelivered += 1,
            Some(count) => panic!("delivered {count} times before: {m:?}"),
        }
        assert!(redelivered <= 1, "{m:?}");
        got.push((
            m.get("destination").unwrap_or_default().to_string(),
            m.body_str().to_string(),
        ));
        c.ack(&m).await;
    }
    got.sort();
    got
}

#[tokio::test]
async fn cluster_durable_wildcard_subscriptions_collect_from_every_edge_and_resume_elsewhere() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_durable_patterns") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = unique("w").replace('_', "-");
    let a = edge(&nats, &name);
    let b = edge(&nats, &name);
    let base = unique("news");
    let topic = |rest: &str| format!("/topic/{base}{rest}");

    // Made on edge A: `>` (NATS's wildcards select exactly its topics) and `#` before the end
    // (selected more broadly, checked on the edge).
    let mut all = login(&a, "alice", "all").await;
    let made = durable(&mut all, &topic(".>"), "all").await;
    assert!(made.is("RECEIPT"), "{made:?}");
    let mut ends = login(&a, "alice", "ends").await;
    let made = durable(&mut ends, &topic(".#.end"), "ends").await;
    assert!(made.is("RECEIPT"), "{made:?}");
    let mut publisher = login(&b, "bob", "pub").await;
    store(&mut publisher, &topic(".live"), "m0").await;
    assert_eq!(
        received(&mut all, 1).await,
        [(topic(".live"), "m0".to_string())]
    );
    all.disconnect().await;
    ends.disconnect().await;

    // While nobody is attached, from both edges.
    let mut publisher_a = login(&a, "bob", "pub-a").await;
    store(&mut publisher, &topic(""), "p-bare").await;
    store(&mut publisher_a, &topic(".x.y"), "p-deep").await;
    store(&mut publisher, &topic(".q.end"), "p-q-end").await;
    store(&mut publisher_a, &topic(".end"), "p-end").await;
    store(&mut publisher, &topic(".end.no"), "p-end-no").await;
    store(
        &mut publisher,
        &format!("/topic/other.{base}.end"),
        "p-other",
    )
    .await;
    store(&mut publisher, &format!("/topic/{base}x.end"), "p-prefix").await;

    // Resumed on edge B: each gets the topics its pattern matches, and nothing else.
    let mut all = login(&b, "alice", "all").await;
    let resumed = durable(&mut all, &topic(".>"), "all").await;
    assert!(resumed.is("RECEIPT"), "{resumed:?}");
    let mut want: Vec<(String, String)> = [
        ("", "p-bare"),
        (".x.y", "p-deep"),
        (".q.end", "p-q-end"),
        (".end", "p-end"),
        (".end.no", "p-end-no"),
    ]
    .iter()
    .map(|(rest, body)| (topic(rest), body.to_string()))
    .collect();
    want.sort();
    assert_eq!(received(&mut all, 5).await, want);
    all.expect_silence(Duration::from_secs(1)).await;

    let mut ends = login(&b, "alice", "ends").await;
    let resumed = durable(&mut ends, &topic(".#.end"), "ends").await;
    assert!(resumed.is("RECEIPT"), "{resumed:?}");
    assert_eq!(
        received(&mut ends, 2).await,
        [
            (topic(".end"), "p-end".to_string()),
            (topic(".q.end"), "p-q-end".to_string()),
        ]
    );
    ends.expect_silence(Duration::from_secs(1)).await;

    // One subscriber at a time across edges, as for a plain topic.
    let mut again = login(&a, "alice", "all").await;
    let refused = durable(&mut again, &topic(".>"), "all").await;
    assert_eq!(
        refused.get("error-code"),
        Some("destination.durable-active"),
        "{refused:?}"
    );

    // A malformed pattern is refused before the cluster is asked.
    let mut bad = login(&a, "alice", "bad").await;
    let refused = durable(&mut bad, &topic(".>.x"), "bad").await;
    assert!(refused.is("ERROR"), "{refused:?}");
}

#[tokio::test]
async fn cluster_durable_consumer_of_an_earlier_version_is_updated_when_an_edge_joins() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_durable_legacy") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = unique("l").replace('_', "-");
    let a = edge(&nats, &name);
    let base = unique("legacy");
    let topic = format!("/topic/{base}");

    // What an earlier edge made for alice's subscription "old": a consumer filtering on the
    // whole destination as one token.
    let client = async_nats::connect(nats.nodes[0].url())
        .await
        .expect("nats");
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .get_stream(format!("{name}__2F_topics"))
        .await
        .expect("the topic stream, made by edge A");
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("durable_3Aalice_2Fapp_2Fold".into()),
            filter_subject: format!("{name}._2F.t._2Ftopic_2F{base}"),
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            metadata: [
                ("plugboard-topic".to_string(), hex(topic.as_bytes())),
                ("plugboard-owner".to_string(), hex(b"alice")),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        })
        .await
        .expect("an earlier version's consumer");

    // An edge of this version joins: from now on the subscription keeps what is published
    // under this version's subjects, though nobody is attached.
    let b = edge(&nats, &name);
    let mut publisher = login(&b, "bob", "pub").await;
    store(&mut publisher, &topic, "kept").await;
    let mut alice = login(&a, "alice", "app").await;
    let resumed = durable(&mut alice, &topic, "old").await;
    assert!(resumed.is("RECEIPT"), "{resumed:?}");
    assert_eq!(
        received(&mut alice, 1).await,
        [(topic.clone(), "kept".to_string())]
    );
    alice.expect_silence(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn cluster_durables_are_listed_in_every_edge_s_console_and_metrics() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_durable_console") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = unique("c").replace('_', "-");
    let a = edge(&nats, &name);
    let b = edge(&nats, &name);
    let base = unique("watched");
    let pattern = format!("/topic/{base}.>");
    let mut alice = login(&a, "alice", "c1").await;
    let made = durable(&mut alice, &pattern, "watch").await;
    assert!(made.is("RECEIPT"), "{made:?}");
    alice.disconnect().await;
    let mut publisher = login(&b, "bob", "pub").await;
    for i in 0..3 {
        store(
            &mut publisher,
            &format!("/topic/{base}.x"),
            &format!("m{i}"),
        )
        .await;
    }

    // Edge B lists it, kept messages and nobody attached, though it was made on edge A. (A
    // message the last subscriber's pull took after it left is handed back, and JetStream
    // counts it as unacked until delivered again: the two counts add up.)
    let row = |doc: &serde_json::Value| -> Option<serde_json::Value> {
        doc["cluster_durables"]
            .as_array()?
            .iter()
            .find(|d| d["name"] == "durable:alice/c1/watch")
            .cloned()
    };
    let kept = |d: &serde_json::Value| {
        d["ready"].as_u64().unwrap_or(0) + d["unacked"].as_u64().unwrap_or(0)
    };
    let doc = super::console::overview_until(b.admin(), None, "the durable listed", |doc| {
        row(doc).is_some_and(|d| kept(&d) == 3 && d["attached"] == false)
    })
    .await;
    let listed = row(&doc).unwrap();
    assert_eq!(listed["topic"], pattern.as_str(), "{listed}");

    // Attached on edge A and holding the three unacknowledged: so B shows it.
    let mut alice = login(&a, "alice", "c1").await;
    let resumed = durable(&mut alice, &pattern, "watch").await;
    assert!(resumed.is("RECEIPT"), "{resumed:?}");
    for _ in 0..3 {
        let m = alice.recv_within(ACROSS).await;
        assert!(m.is("MESSAGE"), "{m:?}");
    }
    super::console::overview_until(b.admin(), None, "the durable attached", |doc| {
        row(doc).is_some_and(|d| d["attached"] == true && d["unacked"] == 3 && d["ready"] == 0)
    })
    .await;
    let metrics = plugboard_test_support::metrics::scrape(b.admin(), None).await;
    let labels = [("vhost", "/"), ("subscription", "durable:alice/c1/watch")];
    assert_eq!(
        metrics.value("plugboard_cluster_durable_messages_unacked", &labels),
        3.0
    );
    assert_eq!(
        metrics.value("plugboard_cluster_durable_messages_ready", &labels),
        0.0
    );
}
