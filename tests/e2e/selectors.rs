//! Native selectors (issue 13, item 11): a SUBSCRIBE's `selector` header is evaluated by the
//! broker itself, with no plugin loaded. A queue keeps what a consumer's selector declines for
//! its other consumers (and for later ones); a topic subscription does without it; a malformed
//! selector refuses the SUBSCRIBE with an ERROR that says where.

use crate::harness::*;

fn colored(dest: &str, color: &str, body: &str) -> Frame {
    send_frame(dest, &[("color", color)], body)
}

fn bodies(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|m| m.body_str().to_string()).collect()
}

#[tokio::test]
async fn a_queue_keeps_what_a_selector_declines_for_other_consumers() {
    let broker = Broker::start();
    let q = format!("/queue/{}", unique("sel"));
    let mut red = broker.client(Version::V12).await;
    red.subscribe_with("r", &q, "client", &[("selector", "color = 'red'")])
        .await;
    let mut tx = broker.client(Version::V12).await;
    for (i, color) in ["blue", "red", "green", "red"].iter().enumerate() {
        tx.roundtrip(colored(&q, color, &format!("{color}{i}")))
            .await;
    }
    let got = red.msgs(2).await;
    assert_eq!(bodies(&got), ["red1", "red3"]);
    for m in &got {
        red.ack(m).await;
    }
    red.expect_silence(QUIET).await;

    // The declined messages waited on the queue, in order, for a consumer that takes them.
    let mut rest = broker.client(Version::V12).await;
    rest.subscribe("all", &q, "auto").await;
    let kept = rest.msgs(2).await;
    assert_eq!(bodies(&kept), ["blue0", "green2"]);
    for m in &kept {
        assert_eq!(
            m.get("redelivered"),
            None,
            "a decline is not a delivery: {m:?}"
        );
    }
    rest.expect_silence(QUIET).await;

    // Both consumers at once: each message goes to a consumer that wants it.
    for (i, color) in ["red", "blue", "red", "blue"].iter().enumerate() {
        tx.roundtrip(colored(&q, color, &format!("x{color}{i}")))
            .await;
    }
    let got = red.msgs(2).await;
    assert_eq!(bodies(&got), ["xred0", "xred2"]);
    for m in &got {
        red.ack(m).await;
    }
    let got = rest.msgs(2).await;
    let mut got = bodies(&got);
    got.sort();
    assert_eq!(got, ["xblue1", "xblue3"]);
    red.expect_silence(QUIET).await;
    rest.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_selector_with_a_window_of_one_is_not_stuck_behind_declined_messages() {
    let broker = Broker::start();
    let q = format!("/queue/{}", unique("selw"));
    let mut c = broker.client(Version::V12).await;
    c.subscribe_with(
        "s",
        &q,
        "client-individual",
        &[("selector", "n > 5"), ("prefetch-count", "1")],
    )
    .await;
    let mut tx = broker.client(Version::V12).await;
    for n in 0..10 {
        tx.roundtrip(send_frame(&q, &[("n", &n.to_string())], &format!("m{n}")))
            .await;
    }
    let mut got = Vec::new();
    for _ in 6..10 {
        let m = c.msg().await;
        got.push(m.body_str().to_string());
        c.ack(&m).await;
    }
    assert_eq!(got, ["m6", "m7", "m8", "m9"]);
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_topic_subscriber_gets_only_what_its_selector_matches() {
    let broker = Broker::start();
    let t = format!("/topic/{}", unique("selt"));
    let mut picky = broker.client(Version::V11).await;
    picky
        .subscribe_with(
            "p",
            &t,
            "auto",
            &[("selector", "color IN ('red', 'green') AND NOT (size > 10)")],
        )
        .await;
    let mut all = broker.client(Version::V12).await;
    all.subscribe("a", &t, "auto").await;
    let mut tx = broker.client(Version::V12).await;
    let cases = [
        ("red", Some("3"), true),
        ("red", Some("30"), false),
        ("blue", Some("1"), false),
        ("green", None, false), // size missing: NOT unknown is unknown
        ("green", Some("10"), true),
    ];
    for (i, (color, size, _)) in cases.iter().enumerate() {
        let mut headers = vec![("color", *color)];
        if let Some(size) = size {
            headers.push(("size", size));
        }
        tx.roundtrip(send_frame(&t, &headers, &format!("m{i}")))
            .await;
    }
    assert_eq!(bodies(&picky.msgs(2).await), ["m0", "m4"], "{cases:?}");
    picky.expect_silence(QUIET).await;
    assert_eq!(all.msgs(cases.len()).await.len(), cases.len());
    all.expect_silence(QUIET).await;
}

#[tokio::test]
async fn selector_syntax_and_header_spellings() {
    let broker = Broker::start();
    let t = format!("/topic/{}", unique("syn"));
    // Each selector with the messages (by body) it must receive.
    let selectors: [(&str, &[&str]); 10] = [
        ("JMSType = 'order' AND JMSPriority >= 5", &["a"]),
        ("JMSCorrelationID LIKE 'c-%'", &["a", "b"]),
        ("\"content-type\" = 'application/json'", &["b"]),
        ("price BETWEEN 10 AND 20.5", &["a"]),
        ("region IS NULL", &["b", "c"]),
        ("code LIKE 'A\\_%' ESCAPE '\\'", &["c"]),
        ("type <> 'order' OR qty = 2", &["b", "c"]),
        ("flag", &["c"]),
        ("JMSPriority = 4", &["b", "c"]), // no `priority`: JMS's default 4
        ("JMSDeliveryMode = 'PERSISTENT'", &["a"]),
    ];
    let mut subs = Vec::new();
    for (i, (selector, _)) in selectors.iter().enumerate() {
        let mut c = broker.client(Version::V12).await;
        c.subscribe_with(&format!("s{i}"), &t, "auto", &[("selector", selector)])
            .await;
        subs.push(c);
    }
    let mut tx = broker.client(Version::V12).await;
    let messages: [(&str, &[(&str, &str)]); 3] = [
        (
            "a",
            &[
                ("type", "order"),
                ("priority", "7"),
                ("correlation-id", "c-1"),
                ("price", "12.5"),
                ("region", "eu"),
                ("persistent", "true"),
            ],
        ),
        (
            "b",
            &[
                ("type", "quote"),
                ("correlation-id", "c-2"),
                ("content-type", "application/json"),
            ],
        ),
        (
            "c",
            &[
                ("code", "A_1"),
                ("qty", "2"),
                ("flag", "true"),
                ("priority", "4"),
            ],
        ),
    ];
    for (body, headers) in messages {
        tx.roundtrip(send_frame(&t, headers, body)).await;
    }
    for ((selector, want), c) in selectors.iter().zip(subs.iter_mut()) {
        let got = bodies(&c.msgs(want.len()).await);
        assert_eq!(got, *want, "selector {selector:?}");
        c.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn a_malformed_selector_refuses_the_subscribe_and_says_where() {
    let broker = Broker::start();
    let cases = [
        (
            "color = ",
            "selector: column 9: expected a header name or a literal",
        ),
        ("color == 'red'", "selector: column 8"),
        ("color = 'red", "selector: column 9: unterminated quote"),
        ("", "selector: column 1: empty selector"),
        (&*"(".repeat(40), "nested too deeply"),
        (
            &*format!("a = '{}'", "x".repeat(5000)),
            "longer than 4096 bytes",
        ),
        (
            &*format!("a IN ({})", vec!["1"; 256].join(",")),
            "more than 256 operands",
        ),
    ];
    for (selector, want) in cases {
        let mut c = broker.client(Version::V12).await;
        c.write(
            &Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", "/queue/bad")
                .h("selector", selector)
                .h("receipt", "r-bad"),
        )
        .await;
        let err = c.expect_error_close().await;
        let message = err.must("message");
        assert!(
            message.contains(want) && message.starts_with("subscription refused: selector"),
            "{selector:?}: {err:?}"
        );
        assert_eq!(err.get("receipt-id"), Some("r-bad"), "{err:?}");
    }
    // Nothing was subscribed: a message sent now waits for a real consumer.
    let mut tx = broker.client(Version::V12).await;
    tx.roundtrip(send_frame("/queue/bad", &[], "kept")).await;
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", "/queue/bad", "auto").await;
    assert_eq!(c.msg().await.body_str(), "kept");
}

#[tokio::test]
async fn a_stomp_1_0_client_selects_with_spaces_after_the_colons() {
    let broker = Broker::start();
    let q = format!("/queue/{}", unique("sel10"));
    let mut c = Client::open(broker.addr).await;
    c.write_raw(b"CONNECT\n\n\0").await;
    assert!(c.recv().await.is("CONNECTED"));
    c.write_raw(
        format!("SUBSCRIBE\ndestination: {q}\nselector: color = 'red'\nreceipt: r\n\n\0")
            .as_bytes(),
    )
    .await;
    assert_eq!(c.expect("RECEIPT").await.get("receipt-id"), Some("r"));
    let mut tx = broker.client(Version::V10).await;
    tx.roundtrip(colored(&q, "blue", "b")).await;
    tx.roundtrip(colored(&q, "red", "r")).await;
    assert_eq!(c.msg().await.body_str(), "r");
    c.expect_silence(QUIET).await;
}

/// A durable subscription's selector judges what it collected while away when the subscriber
/// comes back: what it declines is dropped (a topic subscription does without it), not kept.
#[tokio::test]
async fn a_durable_subscription_drops_what_its_selector_declines() {
    let broker = Broker::start();
    let t = format!("/topic/{}", unique("seld"));
    let durable = [
        ("activemq.subscriptionName", "reds"),
        ("selector", "color = 'red'"),
    ];
    let connect = || async {
        let frame = Client::connect_frame(Version::V12).h("client-id", "sel-app");
        let (c, reply) = Client::connect_with(broker.addr, frame).await;
        assert!(reply.is("CONNECTED"), "{reply:?}");
        c
    };
    let mut reader = connect().await;
    reader.subscribe_with("s", &t, "client", &durable).await;
    reader.disconnect().await;
    let mut tx = broker.client(Version::V12).await;
    for (i, color) in ["blue", "red", "blue", "red"].iter().enumerate() {
        tx.roundtrip(colored(&t, color, &format!("{color}{i}")))
            .await;
    }
    let mut reader = connect().await;
    reader.subscribe_with("s", &t, "client", &durable).await;
    let got = reader.msgs(2).await;
    assert_eq!(bodies(&got), ["red1", "red3"]);
    reader.ack(&got[1]).await;
    reader.expect_silence(QUIET).await;
    reader.disconnect().await;
    // Back without a selector: the blue messages are gone.
    let mut reader = connect().await;
    reader
        .subscribe_with("s", &t, "client", &durable[..1])
        .await;
    reader.expect_silence(QUIET).await;
    tx.roundtrip(colored(&t, "blue", "blue after")).await;
    assert_eq!(reader.msg().await.body_str(), "blue after");
}
