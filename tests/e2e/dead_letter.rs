//! Redelivery counts, dead-letter queues and message expiry.

use crate::harness::*;

#[tokio::test]
async fn a_message_nacked_too_often_goes_to_the_dead_letter_queue() {
    let broker = Broker::with_config("[dead_letter]\nmax_deliveries = 2\n");
    let name = unique("dlq");
    let dest = format!("/queue/{name}");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "client-individual").await;
    c.send_r(&dest, "poison").await;
    let first = c.msg().await;
    assert_eq!(first.get("redelivered"), None, "{first:?}");
    assert_eq!(first.get("redelivery-count"), None, "{first:?}");
    c.nack(&first).await;
    let second = c.msg().await;
    assert_eq!(second.get("redelivered"), Some("true"), "{second:?}");
    assert_eq!(second.get("redelivery-count"), Some("1"), "{second:?}");
    c.nack(&second).await;
    c.expect_silence(QUIET).await;

    let mut d = broker.client(Version::V12).await;
    d.subscribe("d", &format!("/queue/DLQ.{name}"), "auto")
        .await;
    let dead = d.msg().await;
    assert_eq!(dead.body_str(), "poison");
    assert_eq!(dead.get("dlq-reason"), Some("max-deliveries"), "{dead:?}");
    assert_eq!(dead.get("dlq-original-destination"), Some(dest.as_str()));
    assert_eq!(dead.get("dlq-delivery-count"), Some("2"));
    assert_eq!(
        dead.get("destination"),
        Some(format!("/queue/DLQ.{name}").as_str())
    );
}

#[tokio::test]
async fn without_a_limit_nacked_messages_come_back_with_a_count() {
    let broker = Broker::start();
    let dest = format!("/queue/{}", unique("redeliver"));
    let mut c = broker.client(Version::V11).await;
    c.subscribe("s", &dest, "client-individual").await;
    c.send_r(&dest, "again").await;
    let mut m = c.msg().await;
    for n in 1..=3 {
        c.nack(&m).await;
        m = c.msg().await;
        assert_eq!(
            m.get("redelivery-count"),
            Some(n.to_string().as_str()),
            "{m:?}"
        );
    }
    c.ack(&m).await;
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn expired_messages_are_not_delivered() {
    let broker = Broker::start();
    let dest = format!("/queue/{}", unique("ttl"));
    let mut p = broker.client(Version::V12).await;
    // Relative (ttl, expiration) and absolute (expires) forms; 0 means never for `expires`.
    for (name, value, body) in [
        ("ttl", "1", "gone-ttl"),
        ("expiration", "1", "gone-expiration"),
        ("expires", "1000", "gone-expires"),
        ("expires", "0", "kept-0"),
        ("ttl", "600000", "kept-ttl"),
    ] {
        p.roundtrip(send_frame(&dest, &[(name, value)], body)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    let got: Vec<String> = c
        .msgs(2)
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    assert_eq!(got, vec!["kept-0", "kept-ttl"]);
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn expired_messages_can_be_dead_lettered() {
    let broker = Broker::with_config("[dead_letter]\nexpired = true\n");
    let name = unique("ttl-dlq");
    let dest = format!("/queue/{name}");
    let mut p = broker.client(Version::V12).await;
    p.roundtrip(send_frame(&dest, &[("ttl", "1")], "late"))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    c.expect_silence(QUIET).await;
    let mut d = broker.client(Version::V12).await;
    d.subscribe("d", &format!("/queue/DLQ.{name}"), "auto")
        .await;
    let dead = d.msg().await;
    assert_eq!(dead.body_str(), "late");
    assert_eq!(dead.get("dlq-reason"), Some("expired"), "{dead:?}");
}
