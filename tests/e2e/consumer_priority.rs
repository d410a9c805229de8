//! Consumer priority on SUBSCRIBE (ActiveMQ's `activemq.priority`, RabbitMQ's `x-priority`):
//! a queue gives its messages to the highest-priority consumers while they have window space,
//! and to the others only when those are full; equal priorities share round-robin.

use crate::harness::*;

fn q(name: &str) -> String {
    format!("/queue/{}", unique(name))
}

async fn send_n(p: &mut Client, dest: &str, range: std::ops::Range<usize>) {
    for i in range {
        p.send(dest, &format!("m{i}")).await;
    }
    p.sync().await;
}

fn bodies(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.body_str().to_string()).collect()
}

#[tokio::test]
async fn the_high_priority_consumer_gets_messages_while_it_has_window_space() {
    let broker = Broker::start();
    for header in ["activemq.priority", "x-priority"] {
        let dest = q("cprio");
        // The low-priority consumer subscribes first: order does not matter.
        let mut low = broker.client(Version::V12).await;
        low.subscribe_with("low", &dest, "client-individual", &[(header, "1")])
            .await;
        let mut high = broker.client(Version::V12).await;
        high.subscribe_with(
            "high",
            &dest,
            "client-individual",
            &[(header, "10"), ("prefetch-count", "3")],
        )
        .await;
        let mut p = broker.client(Version::V12).await;
        send_n(&mut p, &dest, 0..5).await;
        let to_high = high.msgs(3).await;
        assert_eq!(bodies(&to_high), ["m0", "m1", "m2"], "{header}");
        assert_eq!(
            bodies(&low.msgs(2).await),
            ["m3", "m4"],
            "{header}: overflow"
        );
        high.expect_silence(QUIET).await;
        // Window space again: the next message goes to the high-priority consumer.
        high.ack(&to_high[0]).await;
        send_n(&mut p, &dest, 5..6).await;
        assert_eq!(high.msg().await.body_str(), "m5", "{header}");
        low.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn negative_priorities_rank_below_the_default() {
    let broker = Broker::start();
    let dest = q("cprio-neg");
    let mut neg = broker.client(Version::V12).await;
    neg.subscribe_with("neg", &dest, "auto", &[("x-priority", "-5")])
        .await;
    let mut plain = broker.client(Version::V12).await;
    plain.subscribe("plain", &dest, "auto").await;
    let mut p = broker.client(Version::V12).await;
    send_n(&mut p, &dest, 0..20).await;
    assert_eq!(plain.msgs(20).await.len(), 20);
    neg.expect_silence(QUIET).await;
}

#[tokio::test]
async fn equal_priorities_share_round_robin() {
    let broker = Broker::start();
    let dest = q("cprio-equal");
    let mut a = broker.client(Version::V12).await;
    a.subscribe_with("a", &dest, "auto", &[("activemq.priority", "5")])
        .await;
    let mut b = broker.client(Version::V12).await;
    b.subscribe_with("b", &dest, "auto", &[("x-priority", "5")])
        .await;
    let mut low = broker.client(Version::V12).await;
    low.subscribe("low", &dest, "auto").await;
    let mut p = broker.client(Version::V12).await;
    send_n(&mut p, &dest, 0..10).await;
    assert_eq!(a.msgs(5).await.len(), 5);
    assert_eq!(b.msgs(5).await.len(), 5);
    low.expect_silence(QUIET).await;
}

#[tokio::test]
async fn when_the_high_priority_consumer_leaves_the_others_get_its_messages() {
    let broker = Broker::start();
    let dest = q("cprio-leave");
    let mut high = broker.client(Version::V12).await;
    high.subscribe_with("h", &dest, "client-individual", &[("x-priority", "9")])
        .await;
    let mut low = broker.client(Version::V12).await;
    low.subscribe("l", &dest, "client-individual").await;
    let mut p = broker.client(Version::V12).await;
    send_n(&mut p, &dest, 0..3).await;
    assert_eq!(high.msgs(3).await.len(), 3);
    low.expect_silence(QUIET).await;
    high.drop_abruptly();
    let back = low.msgs(3).await;
    assert_eq!(bodies(&back), ["m0", "m1", "m2"]);
    assert!(back.iter().all(|m| m.get("redelivered") == Some("true")));
}

#[tokio::test]
async fn an_invalid_consumer_priority_is_an_error() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for (header, bad) in [
        ("x-priority", "high"),
        ("activemq.priority", "1.5"),
        ("x-priority", "99999999999"),
    ] {
        let mut c = broker.client(Version::V12).await;
        let frame = Frame::new("SUBSCRIBE")
            .h("id", "s")
            .h("destination", &q("cprio-bad"))
            .h(header, bad);
        let err = expect_refused(&mut c, frame, "r", header).await;
        let expected = format!("invalid {header} '{bad}'");
        assert!(err.must("message").contains(&expected), "{err:?}");
        by.check().await;
    }
}
