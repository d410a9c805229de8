//! `/topic/NAME`: fan-out to every current subscriber.

use crate::harness::*;

fn t(name: &str) -> String {
    format!("/topic/{}", unique(name))
}

#[tokio::test]
async fn every_subscriber_gets_a_copy() {
    let broker = Broker::start();
    let dest = t("fanout");
    let mut subs = Vec::new();
    for (i, v) in [Version::V10, Version::V11, Version::V12, Version::V12]
        .into_iter()
        .enumerate()
    {
        let mut c = broker.client(v).await;
        c.subscribe(&format!("s{i}"), &dest, "auto").await;
        subs.push(c);
    }
    let mut p = broker.client(Version::V12).await;
    for i in 0..20 {
        p.write(
            &Frame::new("SEND")
                .h("destination", &dest)
                .h("n", &i.to_string())
                .body(format!("m{i}")),
        )
        .await;
    }
    p.sync().await;
    for (i, c) in subs.iter_mut().enumerate() {
        let ms = c.msgs(20).await;
        for (j, m) in ms.iter().enumerate() {
            assert_eq!(m.body_str(), format!("m{j}"), "subscriber {i}: order");
            assert_eq!(m.must("destination"), dest);
            assert_eq!(m.get("subscription"), Some(format!("s{i}").as_str()));
            assert_eq!(m.get("n"), Some(j.to_string().as_str()));
        }
        c.expect_silence(std::time::Duration::from_millis(100))
            .await;
    }
}

#[tokio::test]
async fn topic_without_subscribers_keeps_nothing() {
    let broker = Broker::start();
    let dest = t("nobody");
    let mut p = broker.client(Version::V12).await;
    p.send_r(&dest, "lost").await;
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    c.expect_silence(QUIET).await;
    p.send_r(&dest, "seen").await;
    assert_eq!(c.msg().await.body_str(), "seen");
}

#[tokio::test]
async fn unsubscribe_from_topic_stops_copies() {
    let broker = Broker::start();
    let dest = t("unsub");
    let mut a = broker.client(Version::V12).await;
    let mut b = broker.client(Version::V12).await;
    a.subscribe("s", &dest, "auto").await;
    b.subscribe("s", &dest, "auto").await;
    a.unsubscribe("s").await;
    b.send_r(&dest, "x").await;
    assert_eq!(b.msg().await.body_str(), "x");
    a.expect_silence(QUIET).await;
}

#[tokio::test]
async fn two_subscriptions_of_one_connection_each_get_a_copy() {
    let broker = Broker::start();
    let dest = t("twice");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("one", &dest, "auto").await;
    c.subscribe("two", &dest, "auto").await;
    c.send_r(&dest, "x").await;
    let ms = c.msgs(2).await;
    let mut subs: Vec<&str> = ms.iter().map(|m| m.must("subscription")).collect();
    subs.sort();
    assert_eq!(subs, vec!["one", "two"]);
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn topic_client_ack_and_nack() {
    let broker = Broker::start();
    let dest = t("acks");
    for v in [Version::V11, Version::V12] {
        let mut c = broker.client(v).await;
        c.subscribe("s", &dest, "client-individual").await;
        c.send_r(&dest, "a").await;
        let m = c.msg().await;
        if v == Version::V12 {
            assert!(is_safe_id(m.must("ack")), "{m:?}");
        }
        c.ack(&m).await;
        c.unsubscribe("s").await;
    }
}

/// The same message to a topic and a queue with the same NAME are separate destinations.
#[tokio::test]
async fn topic_and_queue_namespaces_are_separate() {
    let broker = Broker::start();
    let name = unique("ns");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("q", &format!("/queue/{name}"), "auto").await;
    c.subscribe("t", &format!("/topic/{name}"), "auto").await;
    c.send_r(&format!("/topic/{name}"), "to topic").await;
    let m = c.msg().await;
    assert_eq!(m.must("subscription"), "t");
    c.expect_silence(QUIET).await;
}
