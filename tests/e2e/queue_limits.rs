//! Queue arguments over TCP (RabbitMQ's spellings): `x-max-length`, `x-max-length-bytes`,
//! `x-overflow` = `drop-head` | `reject-publish` | `reject-publish-dlx`, `x-message-ttl`, set by
//! the SEND or SUBSCRIBE that creates the queue or by a `[[queues]]` pattern in the config; a
//! later declaration with other arguments refused.

use std::time::Duration;

use crate::harness::*;

fn q(name: &str) -> String {
    format!("/queue/{}", unique(name))
}

fn send(dest: &str, body: &str) -> Frame {
    Frame::new("SEND").h("destination", dest).body(body)
}

/// Every message waiting in `dest`, drained by a fresh auto-ack subscriber.
async fn drain(broker: &Broker, dest: &str) -> Vec<String> {
    let mut c = broker.client(Version::V12).await;
    c.subscribe("drain", dest, "auto").await;
    let mut out = Vec::new();
    loop {
        match c.try_recv(Duration::from_millis(500)).await {
            Ok(f) if f.is("MESSAGE") => out.push(f.body_str().to_string()),
            Ok(f) => panic!("draining {dest}: unexpected {f:?}"),
            Err(RecvError::Timeout) => break,
            Err(e) => panic!("draining {dest}: {e:?}"),
        }
    }
    out
}

#[tokio::test]
async fn x_max_length_drops_the_head_by_default_and_with_drop_head() {
    let broker = Broker::start();
    for overflow in [None, Some("drop-head")] {
        let dest = q("maxlen");
        let mut c = broker.client(Version::V12).await;
        let mut first = send(&dest, "m0").h("x-max-length", "3");
        if let Some(overflow) = overflow {
            first = first.h("x-overflow", overflow);
        }
        c.roundtrip(first).await;
        for i in 1..5 {
            c.roundtrip(send(&dest, &format!("m{i}"))).await;
        }
        assert_eq!(
            drain(&broker, &dest).await,
            ["m2", "m3", "m4"],
            "{overflow:?}"
        );
    }
}

#[tokio::test]
async fn reject_publish_gives_the_sender_an_error_with_its_receipt_id() {
    let broker = Broker::start();
    let dest = q("reject");
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(
        send(&dest, "m0")
            .h("x-max-length", "2")
            .h("x-overflow", "reject-publish"),
    )
    .await;
    c.roundtrip(send(&dest, "m1")).await;
    let err = expect_refused(&mut c, send(&dest, "m2"), "full-1", "third message").await;
    assert!(err.must("message").contains("is full"), "{err:?}");
    assert_eq!(
        drain(&broker, &dest).await,
        ["m0", "m1"],
        "the queue kept its own"
    );
}

#[tokio::test]
async fn the_limits_count_unacknowledged_messages_and_subscribe_can_declare_them() {
    let broker = Broker::start();
    let dest = q("sub-declared");
    let mut consumer = broker.client(Version::V12).await;
    consumer
        .subscribe_with(
            "s",
            &dest,
            "client-individual",
            &[
                ("prefetch-count", "1"),
                ("x-max-length", "2"),
                ("x-overflow", "reject-publish"),
            ],
        )
        .await;
    let mut producer = broker.client(Version::V12).await;
    producer.roundtrip(send(&dest, "m0")).await;
    let held = consumer.msg().await;
    producer.roundtrip(send(&dest, "m1")).await;
    // m0 is out with the consumer, unacknowledged; m1 waits: the queue is full.
    expect_refused(&mut producer, send(&dest, "m2"), "r", "full").await;
    consumer.ack(&held).await;
    assert_eq!(consumer.msg().await.body_str(), "m1");
}

#[tokio::test]
async fn x_max_length_bytes_limits_the_bytes_held() {
    let broker = Broker::start();
    let dest = q("maxbytes");
    let mut c = broker.client(Version::V12).await;
    // A queue takes a message while it is below its byte limit: one message, then full.
    c.roundtrip(
        send(&dest, "m0")
            .h("x-max-length-bytes", "1")
            .h("x-overflow", "reject-publish"),
    )
    .await;
    expect_refused(&mut c, send(&dest, "m1"), "r", "over the bytes").await;
    assert_eq!(drain(&broker, &dest).await, ["m0"]);
}

#[tokio::test]
async fn reject_publish_dlx_dead_letters_the_refused_message() {
    let broker = Broker::with_config("[dead_letter]\nmax_deliveries = 5\n");
    let name = unique("dlx");
    let dest = format!("/queue/{name}");
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(
        send(&dest, "kept")
            .h("x-max-length", "1")
            .h("x-overflow", "reject-publish-dlx"),
    )
    .await;
    let err = expect_refused(&mut c, send(&dest, "refused"), "r", "dlx").await;
    assert!(err.must("message").contains("is full"), "{err:?}");
    let mut d = broker.client(Version::V12).await;
    d.subscribe("d", &format!("/queue/DLQ.{name}"), "auto")
        .await;
    let dead = d.msg().await;
    assert_eq!(dead.body_str(), "refused");
    assert_eq!(dead.get("dlq-reason"), Some("maxlen"));
    assert_eq!(dead.get("dlq-original-destination"), Some(dest.as_str()));
    assert_eq!(drain(&broker, &dest).await, ["kept"]);
}

#[tokio::test]
async fn x_message_ttl_expires_messages_in_the_queue() {
    let broker = Broker::start();
    let short = q("ttl-short");
    let long = q("ttl-long");
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(send(&short, "gone").h("x-message-ttl", "1"))
        .await;
    c.roundtrip(send(&long, "kept").h("x-message-ttl", "600000"))
        .await;
    // A later SEND without arguments gets the queue's TTL too.
    c.roundtrip(send(&short, "gone too")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(drain(&broker, &short).await, Vec::<String>::new());
    assert_eq!(drain(&broker, &long).await, ["kept"]);
}

#[tokio::test]
async fn a_declaration_with_other_arguments_is_refused_as_rabbitmq_does() {
    let broker = Broker::start();
    let dest = q("inequivalent");
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(send(&dest, "m0").h("x-max-length", "3")).await;
    // The same arguments, or none, are fine.
    c.roundtrip(send(&dest, "m1").h("x-max-length", "3")).await;
    c.roundtrip(send(&dest, "m2")).await;
    let frame = Frame::new("SUBSCRIBE")
        .h("id", "s")
        .h("destination", &dest)
        .h("x-max-length", "4");
    let err = expect_refused(&mut c, frame, "r", "other arguments").await;
    assert!(
        err.must("message").contains("precondition failed"),
        "{err:?}"
    );
    let mut c = broker.client(Version::V12).await;
    let err = expect_refused(
        &mut c,
        send(&dest, "m3").h("x-message-ttl", "5"),
        "r2",
        "a new argument",
    )
    .await;
    assert!(
        err.must("message").contains("precondition failed"),
        "{err:?}"
    );
}

#[tokio::test]
async fn queue_patterns_in_the_config_set_the_arguments() {
    let broker = Broker::with_config(
        r#"
[[queues]]
pattern = "/queue/limited.*"
max_length = 2
overflow = "reject-publish"
"#,
    );
    let limited = format!("/queue/limited.{}", unique("q"));
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(send(&limited, "m0")).await;
    c.roundtrip(send(&limited, "m1")).await;
    expect_refused(&mut c, send(&limited, "m2"), "r", "pattern limit").await;
    // A frame's argument overrides the pattern's, key by key.
    let roomier = format!("/queue/limited.{}", unique("q"));
    let mut c = broker.client(Version::V12).await;
    for i in 0..4 {
        let mut frame = send(&roomier, &format!("m{i}"));
        if i == 0 {
            frame = frame.h("x-max-length", "4");
        }
        c.roundtrip(frame).await;
    }
    expect_refused(&mut c, send(&roomier, "m4"), "r", "the frame's limit").await;
    // Other queues are not limited.
    let free = q("free");
    let mut c = broker.client(Version::V12).await;
    for i in 0..5 {
        c.roundtrip(send(&free, &format!("m{i}"))).await;
    }
    assert_eq!(drain(&broker, &free).await.len(), 5);
}

#[tokio::test]
async fn bad_queue_arguments_get_an_error() {
    let broker = Broker::start();
    for (dest, header, value, says) in [
        (q("bad"), "x-overflow", "drop-tail", "x-overflow must be"),
        (q("bad"), "x-max-length", "-1", "whole number"),
        (q("bad"), "x-message-ttl", "soon", "whole number"),
        (
            format!("/topic/{}", unique("t")),
            "x-max-length",
            "1",
            "/queue/ destinations only",
        ),
    ] {
        let mut c = broker.client(Version::V12).await;
        let err = expect_refused(&mut c, send(&dest, "x").h(header, value), "r", header).await;
        assert!(err.must("message").contains(says), "{header}: {err:?}");
    }
    assert_healthy(&broker).await;
}

#[tokio::test]
async fn a_commit_whose_message_a_full_queue_refuses_gets_the_error_after_the_others() {
    let broker = Broker::start();
    let full = q("tx-full");
    let other = q("tx-other");
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(
        send(&full, "m0")
            .h("x-max-length", "1")
            .h("x-overflow", "reject-publish"),
    )
    .await;
    c.roundtrip(Frame::new("BEGIN").h("transaction", "t")).await;
    c.roundtrip(send(&full, "refused").h("transaction", "t"))
        .await;
    c.roundtrip(send(&other, "kept").h("transaction", "t"))
        .await;
    let err = expect_refused(
        &mut c,
        Frame::new("COMMIT").h("transaction", "t"),
        "commit",
        "COMMIT into a full queue",
    )
    .await;
    assert!(err.must("message").contains("is full"), "{err:?}");
    assert_eq!(drain(&broker, &full).await, ["m0"]);
    assert_eq!(
        drain(&broker, &other).await,
        ["kept"],
        "the rest was committed"
    );
}
