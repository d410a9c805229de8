//! Composite destinations (ActiveMQ): `SEND destination:/queue/a,/topic/b` delivers to each
//! part; `SUBSCRIBE destination:/queue/a,/queue/b` is one subscription consuming from every
//! part, its MESSAGEs naming the concrete destination and the one `id`.

use std::time::Duration;

use crate::harness::*;

fn q(name: &str) -> String {
    format!("/queue/{}", unique(name))
}

#[tokio::test]
async fn a_composite_send_reaches_every_part_queue_and_topic() {
    let broker = Broker::start();
    let (queue, topic) = (q("cq"), format!("/topic/{}", unique("ct")));
    let mut t = broker.client(Version::V12).await;
    t.subscribe("t", &topic, "auto").await;
    let mut p = broker.client(Version::V11).await;
    // RECEIPT only once every part has it.
    p.send_r(&format!("{queue},{topic}"), "both").await;
    let m = t.msg().await;
    assert_eq!(
        (m.must("destination"), m.body_str()),
        (topic.as_str(), "both")
    );
    let mut c = broker.client(Version::V12).await;
    c.subscribe("q", &queue, "auto").await;
    let m = c.msg().await;
    assert_eq!(
        (m.must("destination"), m.body_str()),
        (queue.as_str(), "both")
    );
}

#[tokio::test]
async fn a_part_without_a_prefix_takes_the_one_before_it() {
    let broker = Broker::start();
    let base = unique("inherit");
    let mut p = broker.client(Version::V12).await;
    p.send_r(&format!("/queue/{base}.a,{base}.b"), "x").await;
    for part in ["a", "b"] {
        let dest = format!("/queue/{base}.{part}");
        let mut c = broker.client(Version::V12).await;
        c.subscribe("s", &dest, "auto").await;
        assert_eq!(c.msg().await.must("destination"), dest);
    }
}

#[tokio::test]
async fn a_composite_subscription_consumes_every_part_under_one_id() {
    let broker = Broker::start();
    for version in [Version::V11, Version::V12] {
        let (a, b) = (q("sa"), q("sb"));
        let mut c = broker.client(version).await;
        c.subscribe("both", &format!("{a},{b}"), "client-individual")
            .await;
        let mut p = broker.client(Version::V12).await;
        p.send_r(&a, "to a").await;
        p.send_r(&b, "to b").await;
        let mut ms = c.msgs(2).await;
        ms.sort_by(|x, y| x.body_str().cmp(y.body_str()));
        assert_eq!(ms[0].must("destination"), a);
        assert_eq!(ms[1].must("destination"), b);
        for m in &ms {
            assert_eq!(m.must("subscription"), "both");
        }
        // ACK the one from a (by message-id + subscription in 1.1), NACK the one from b.
        c.ack(&ms[0]).await;
        c.nack(&ms[1]).await;
        let again = c.msg().await;
        assert_eq!(
            (again.must("destination"), again.body_str()),
            (b.as_str(), "to b"),
            "{version:?}: NACKed back to its own queue"
        );
        c.ack(&again).await;
        c.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn unsubscribe_ends_every_part_and_hands_back_what_was_unacked() {
    let broker = Broker::start();
    let (a, b) = (q("ua"), q("ub"));
    let mut c = broker.client(Version::V12).await;
    c.subscribe("both", &format!("{a},{b}"), "client-individual")
        .await;
    let mut p = broker.client(Version::V12).await;
    p.send_r(&a, "a1").await;
    p.send_r(&b, "b1").await;
    c.msgs(2).await;
    c.unsubscribe("both").await;
    p.send_r(&a, "a2").await;
    p.send_r(&b, "b2").await;
    c.expect_silence(QUIET).await;
    // The unacked ones and the new ones wait in their queues.
    for (dest, expected) in [(&a, ["a1", "a2"]), (&b, ["b1", "b2"])] {
        let mut other = broker.client(Version::V12).await;
        other.subscribe("s", dest, "auto").await;
        let got: Vec<String> = other
            .msgs(2)
            .await
            .iter()
            .map(|m| m.body_str().to_string())
            .collect();
        assert_eq!(got, expected);
    }
    // The id is free again.
    c.subscribe("both", &a, "auto").await;
}

#[tokio::test]
async fn a_stomp_1_0_composite_subscription_is_named_by_its_destination() {
    let broker = Broker::start();
    let (a, b) = (q("oa"), q("ob"));
    let composite = format!("{a},{b}");
    let mut c = broker.client(Version::V10).await;
    c.roundtrip(Frame::new("SUBSCRIBE").h("destination", &composite))
        .await;
    c.send_r(&b, "b").await;
    assert_eq!(c.msg().await.must("destination"), b);
    c.roundtrip(Frame::new("UNSUBSCRIBE").h("destination", &composite))
        .await;
    c.send_r(&a, "a").await;
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_composite_subscription_may_mix_queues_topics_and_patterns() {
    let broker = Broker::start();
    let (queue, root) = (q("mix"), unique("mix").replace('-', "_"));
    let mut c = broker.client(Version::V12).await;
    c.subscribe("m", &format!("{queue},/topic/{root}.*"), "auto")
        .await;
    let mut p = broker.client(Version::V12).await;
    p.send_r(&format!("/topic/{root}.x"), "topic").await;
    p.send_r(&queue, "queue").await;
    let mut got: Vec<(String, String)> = c
        .msgs(2)
        .await
        .iter()
        .map(|m| {
            (
                m.must("destination").to_string(),
                m.must("subscription").to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (queue.clone(), "m".to_string()),
            (format!("/topic/{root}.x"), "m".to_string())
        ]
    );
}

#[tokio::test]
async fn composite_sends_in_a_transaction_are_delivered_at_commit_only() {
    let broker = Broker::start();
    let (a, b) = (q("ta"), q("tb"));
    let mut c = broker.client(Version::V12).await;
    c.subscribe("both", &format!("{a},{b}"), "auto").await;
    let mut p = broker.client(Version::V12).await;
    for (tx, end) in [("t1", "ABORT"), ("t2", "COMMIT")] {
        p.roundtrip(Frame::new("BEGIN").h("transaction", tx)).await;
        p.roundtrip(
            Frame::new("SEND")
                .h("destination", &format!("{a},{b}"))
                .h("transaction", tx)
                .body(tx),
        )
        .await;
        c.expect_silence(QUIET).await;
        p.roundtrip(Frame::new(end).h("transaction", tx)).await;
    }
    let mut got: Vec<(String, String)> = c
        .msgs(2)
        .await
        .iter()
        .map(|m| (m.must("destination").to_string(), m.body_str().to_string()))
        .collect();
    got.sort();
    assert_eq!(got, vec![(a, "t2".to_string()), (b, "t2".to_string())]);
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_receipted_persistent_composite_send_is_stored_for_every_part() {
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (q("pa"), q("pb"));
    let mut broker = Broker::with_data_dir("", data.path());
    let mut p = broker.client(Version::V12).await;
    p.roundtrip(
        Frame::new("SEND")
            .h("destination", &format!("{a},{b}"))
            .h("persistent", "true")
            .body("kept"),
    )
    .await;
    broker.kill_hard();
    let broker = Broker::with_data_dir("", data.path());
    for dest in [&a, &b] {
        let mut c = broker.client(Version::V12).await;
        c.subscribe("s", dest, "auto").await;
        let m = c.recv_within(Duration::from_secs(30)).await;
        assert_eq!(
            (m.must("destination"), m.body_str()),
            (dest.as_str(), "kept")
        );
    }
}

#[tokio::test]
async fn malformed_or_unsupported_composites_are_refused() {
    let broker = Broker::with_config("[limits]\nmax_composite_parts = 3\n");
    let cases: Vec<(Frame, &str)> = vec![
        (
            Frame::new("SEND").h("destination", "/queue/a,,/queue/b"),
            "has an empty part",
        ),
        (
            Frame::new("SEND").h("destination", "/queue/a,"),
            "has an empty part",
        ),
        (
            Frame::new("SEND").h("destination", "/queue/a,b,c,d"),
            "has 4 parts: at most 3 are allowed",
        ),
        (
            Frame::new("SEND").h("destination", "/queue/a,/topic/b.*"),
            "wildcard pattern",
        ),
        (
            Frame::new("SEND").h("destination", "/queue/a,/nowhere/b"),
            "unknown destination '/nowhere/b'",
        ),
        (
            Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", "/queue/a,,/queue/b"),
            "has an empty part",
        ),
        (
            Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", "/queue/a,/queue/b")
                .h("ack", "client"),
            "use ack:client-individual",
        ),
        (
            Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", "/topic/a,/topic/b")
                .h("activemq.subscriptionName", "d"),
            "cannot be a durable subscription",
        ),
        (
            Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", "/queue/a,/queue/b.*"),
            "wildcard subscriptions are supported on /topic/ destinations only",
        ),
    ];
    for (frame, why) in cases {
        let context = format!("{frame:?}");
        let mut c = broker.client(Version::V12).await;
        let err = expect_refused(&mut c, frame, "r1", &context).await;
        assert!(err.must("message").contains(why), "{context}: {err:?}");
    }
    assert_healthy(&broker).await;
}
