//! Wildcard topic subscriptions: ActiveMQ's `*` and `>`, RabbitMQ's `*` and `#`, each MESSAGE
//! carrying the concrete destination and the wildcard SUBSCRIBE's id; what is refused (SEND to
//! a pattern, patterns on queues, malformed patterns); durable wildcard subscriptions.

use crate::harness::*;

/// A unique first segment, so parallel tests never see each other's topics.
fn root(name: &str) -> String {
    unique(name).replace('-', "_")
}

/// Subscribes `c` to `pattern` as `id` (auto ack, with a receipt).
async fn sub(c: &mut Client, id: &str, pattern: &str) {
    c.subscribe(id, pattern, "auto").await;
}

/// The (subscription, destination, body) of each of the next `n` MESSAGEs, sorted.
async fn received(c: &mut Client, n: usize) -> Vec<(String, String, String)> {
    let mut got: Vec<(String, String, String)> = c
        .msgs(n)
        .await
        .iter()
        .map(|m| {
            (
                m.get("subscription").unwrap_or("").to_string(),
                m.must("destination").to_string(),
                m.body_str().to_string(),
            )
        })
        .collect();
    got.sort();
    got
}

fn triple(sub: &str, dest: &str, body: &str) -> (String, String, String) {
    (sub.to_string(), dest.to_string(), body.to_string())
}

#[tokio::test]
async fn activemq_star_is_one_segment_and_greater_is_the_rest() {
    let broker = Broker::start();
    let r = root("amq");
    let mut c = broker.client(Version::V12).await;
    sub(&mut c, "one", &format!("/topic/{r}.*")).await;
    sub(&mut c, "rest", &format!("/topic/{r}.>")).await;
    let mut p = broker.client(Version::V12).await;
    let (bare, child, grandchild, other) = (
        format!("/topic/{r}"),
        format!("/topic/{r}.a"),
        format!("/topic/{r}.a.b"),
        format!("/topic/x{r}.a"),
    );
    for (dest, body) in [
        (&bare, "bare"),
        (&child, "child"),
        (&grandchild, "grandchild"),
        (&other, "other"),
    ] {
        p.send_r(dest, body).await;
    }
    let got = received(&mut c, 4).await;
    assert_eq!(
        got,
        vec![
            triple("one", &child, "child"),
            triple("rest", &bare, "bare"),
            triple("rest", &child, "child"),
            triple("rest", &grandchild, "grandchild"),
        ]
    );
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn rabbitmq_hash_is_zero_or_more_segments_anywhere() {
    let broker = Broker::start();
    let r = root("rmq");
    let mut c = broker.client(Version::V12).await;
    sub(&mut c, "tail", &format!("/topic/{r}.#")).await;
    sub(&mut c, "middle", &format!("/topic/{r}.#.end")).await;
    sub(&mut c, "star", &format!("/topic/{r}.*.end")).await;
    let mut p = broker.client(Version::V11).await;
    let (bare, end, one, deep, miss) = (
        format!("/topic/{r}"),
        format!("/topic/{r}.end"),
        format!("/topic/{r}.x.end"),
        format!("/topic/{r}.a.b.end"),
        format!("/topic/{r}.a.end.x"),
    );
    for (dest, body) in [
        (&bare, "0"),
        (&end, "1"),
        (&one, "4"),
        (&deep, "2"),
        (&miss, "3"),
    ] {
        p.send_r(dest, body).await;
    }
    let got = received(&mut c, 9).await;
    let mut expected = vec![
        triple("tail", &bare, "0"),
        triple("tail", &end, "1"),
        triple("tail", &one, "4"),
        triple("tail", &deep, "2"),
        triple("tail", &miss, "3"),
        triple("middle", &end, "1"),
        triple("middle", &one, "4"),
        triple("middle", &deep, "2"),
        triple("star", &one, "4"),
    ];
    expected.sort();
    assert_eq!(got, expected);
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn exact_and_wildcard_subscribers_of_one_topic_each_get_a_copy() {
    let broker = Broker::start();
    let r = root("both");
    let dest = format!("/topic/{r}.prices");
    let mut exact = broker.client(Version::V12).await;
    sub(&mut exact, "e", &dest).await;
    let mut wild = broker.client(Version::V10).await;
    // STOMP 1.0: no id; the MESSAGE still names the concrete topic.
    wild.roundtrip(
        Frame::new("SUBSCRIBE")
            .h("destination", &format!("/topic/{r}.*"))
            .h("ack", "auto"),
    )
    .await;
    let mut p = broker.client(Version::V12).await;
    for i in 0..10 {
        p.send(&dest, &format!("m{i}")).await;
    }
    p.sync().await;
    for c in [&mut exact, &mut wild] {
        let ms = c.msgs(10).await;
        for (i, m) in ms.iter().enumerate() {
            assert_eq!(m.body_str(), format!("m{i}"), "in order");
            assert_eq!(m.must("destination"), dest);
        }
    }
}

#[tokio::test]
async fn wildcard_subscription_in_client_mode_is_acked_per_message() {
    let broker = Broker::start();
    let r = root("ack");
    let mut c = broker.client(Version::V12).await;
    c.subscribe_with(
        "w",
        &format!("/topic/{r}.>"),
        "client-individual",
        &[("activemq.prefetchSize", "2")],
    )
    .await;
    let mut p = broker.client(Version::V12).await;
    for i in 0..4 {
        p.send_r(&format!("/topic/{r}.t{i}"), &format!("m{i}"))
            .await;
    }
    // A window of two: the other two wait for ACKs.
    let first = c.msgs(2).await;
    c.expect_silence(QUIET).await;
    for m in &first {
        c.ack(m).await;
    }
    let rest = c.msgs(2).await;
    assert_eq!(rest[1].must("destination"), format!("/topic/{r}.t3"));
    assert_eq!(rest[1].must("subscription"), "w");
}

#[tokio::test]
async fn unsubscribing_a_pattern_stops_its_copies() {
    let broker = Broker::start();
    let r = root("unsub");
    let mut c = broker.client(Version::V12).await;
    sub(&mut c, "w", &format!("/topic/{r}.#")).await;
    c.send_r(&format!("/topic/{r}.a"), "before").await;
    assert_eq!(c.msg().await.body_str(), "before");
    c.unsubscribe("w").await;
    c.send_r(&format!("/topic/{r}.a"), "after").await;
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn transactional_sends_reach_wildcard_subscribers_at_commit() {
    let broker = Broker::start();
    let r = root("tx");
    let mut c = broker.client(Version::V12).await;
    sub(&mut c, "w", &format!("/topic/{r}.*")).await;
    let mut p = broker.client(Version::V12).await;
    p.roundtrip(Frame::new("BEGIN").h("transaction", "t")).await;
    p.roundtrip(
        Frame::new("SEND")
            .h("destination", &format!("/topic/{r}.a"))
            .h("transaction", "t")
            .body("held"),
    )
    .await;
    c.expect_silence(QUIET).await;
    p.roundtrip(Frame::new("COMMIT").h("transaction", "t"))
        .await;
    assert_eq!(c.msg().await.body_str(), "held");
}

#[tokio::test]
async fn sending_to_a_pattern_is_refused_in_every_spelling() {
    let broker = Broker::start();
    for pattern in ["/topic/a.*", "/topic/a.>", "/topic/#", "/queue/q.*"] {
        let mut c = broker.client(Version::V12).await;
        let err = expect_refused(
            &mut c,
            Frame::new("SEND").h("destination", pattern).body("x"),
            "r1",
            pattern,
        )
        .await;
        assert!(
            err.must("message").contains("wildcard pattern"),
            "{pattern}: {err:?}"
        );
    }
    assert_healthy(&broker).await;
}

#[tokio::test]
async fn wildcard_characters_inside_a_segment_are_plain_characters() {
    let broker = Broker::start();
    let r = root("plain");
    let dest = format!("/topic/{r}.a*b");
    let mut c = broker.client(Version::V12).await;
    sub(&mut c, "s", &dest).await;
    c.send_r(&dest, "literal").await;
    assert_eq!(c.msg().await.must("destination"), dest);
    c.send_r(&format!("/topic/{r}.axb"), "not a match").await;
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn wildcard_subscriptions_on_queues_are_refused() {
    let broker = Broker::start();
    for pattern in [
        "/queue/orders.*",
        "/queue/orders.>",
        "/queue/#",
        "/temp-queue/t.*",
    ] {
        let mut c = broker.client(Version::V12).await;
        let err = expect_refused(
            &mut c,
            Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", pattern),
            "r1",
            pattern,
        )
        .await;
        assert!(
            err.must("message")
                .contains("wildcard subscriptions are supported on /topic/ destinations only"),
            "{pattern}: {err:?}"
        );
    }
    assert_healthy(&broker).await;
}

#[tokio::test]
async fn malformed_patterns_are_refused() {
    let broker = Broker::with_config("[limits]\nmax_pattern_segments = 4\n");
    let cases = [
        ("/topic/a.>.b", "may only be the last segment"),
        ("/topic/a.b.c.d.*", "at most 4 are allowed"),
    ];
    for (pattern, why) in cases {
        let mut c = broker.client(Version::V12).await;
        let err = expect_refused(
            &mut c,
            Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", pattern),
            "r1",
            pattern,
        )
        .await;
        assert!(err.must("message").contains(why), "{pattern}: {err:?}");
    }
    // Four segments are fine.
    let mut c = broker.client(Version::V12).await;
    sub(&mut c, "ok", "/topic/a.b.c.*").await;
    c.send_r("/topic/a.b.c.d", "four").await;
    assert_eq!(c.msg().await.body_str(), "four");
}

#[tokio::test]
async fn durable_wildcard_subscriptions_collect_while_away_in_both_spellings() {
    let broker = Broker::start();
    for (spelling, headers) in [
        ("activemq", vec![("activemq.subscriptionName", "wild-amq")]),
        (
            "rabbitmq",
            vec![("durable", "true"), ("auto-delete", "false")],
        ),
    ] {
        let r = root(spelling);
        let pattern = format!("/topic/{r}.>");
        let connect = Client::connect_frame(Version::V12).h("client-id", &format!("app-{r}"));
        let (mut c, reply) = Client::connect_with(broker.addr, connect.clone()).await;
        assert!(reply.is("CONNECTED"), "{reply:?}");
        c.subscribe_with("d1", &pattern, "client-individual", &headers)
            .await;
        c.disconnect().await;
        let mut p = broker.client(Version::V12).await;
        p.send_r(&format!("/topic/{r}.eu.prices"), "while away")
            .await;
        let (mut c, _) = Client::connect_with(broker.addr, connect).await;
        c.subscribe_with("d1", &pattern, "client-individual", &headers)
            .await;
        let m = c.msg().await;
        assert_eq!(m.body_str(), "while away", "{spelling}");
        assert_eq!(m.must("destination"), format!("/topic/{r}.eu.prices"));
        assert_eq!(m.must("subscription"), "d1");
        c.ack(&m).await;
    }
}

#[tokio::test]
async fn a_durable_wildcard_subscription_survives_a_restart_and_keeps_collecting() {
    let data = tempfile::tempdir().unwrap();
    let r = root("restart");
    let pattern = format!("/topic/{r}.#");
    let connect = Client::connect_frame(Version::V12).h("client-id", "restart-app");
    let durable = [("activemq.subscriptionName", "wild")];
    let mut broker = Broker::with_data_dir("", data.path());
    let (mut c, _) = Client::connect_with(broker.addr, connect.clone()).await;
    c.subscribe_with("d", &pattern, "client-individual", &durable)
        .await;
    c.disconnect().await;
    let mut p = broker.client(Version::V12).await;
    p.roundtrip(
        Frame::new("SEND")
            .h("destination", &format!("/topic/{r}.before"))
            .h("persistent", "true")
            .body("before"),
    )
    .await;
    broker.kill_hard();
    let broker = Broker::with_data_dir("", data.path());
    let mut p = broker.client(Version::V12).await;
    p.send_r(&format!("/topic/{r}.after.restart"), "after")
        .await;
    let (mut c, _) = Client::connect_with(broker.addr, connect).await;
    c.subscribe_with("d", &pattern, "client-individual", &durable)
        .await;
    let got: Vec<(String, String)> = c
        .msgs(2)
        .await
        .iter()
        .map(|m| (m.must("destination").to_string(), m.body_str().to_string()))
        .collect();
    assert_eq!(
        got,
        vec![
            (format!("/topic/{r}.before"), "before".to_string()),
            (format!("/topic/{r}.after.restart"), "after".to_string()),
        ]
    );
}
