//! Exclusive consumers (ActiveMQ's `activemq.exclusive:true`) and single active consumer
//! (RabbitMQ's `x-single-active-consumer:true`): the queue delivers to one consumer at a time
//! and, when it goes away, fails over to the next (highest consumer priority first, then in
//! subscribe order), its unacknowledged messages first and in order.

use crate::harness::*;

const SPELLINGS: [&str; 2] = ["activemq.exclusive", "x-single-active-consumer"];

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

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

#[tokio::test]
async fn one_consumer_gets_everything_and_the_next_takes_over_in_subscribe_order() {
    let broker = Broker::start();
    for header in SPELLINGS {
        let dest = q("excl");
        let mut consumers = Vec::new();
        for name in ["a", "b", "c"] {
            let mut c = broker.client(Version::V12).await;
            c.subscribe_with(name, &dest, "client-individual", &[(header, "true")])
                .await;
            consumers.push(c);
        }
        let mut p = broker.client(Version::V12).await;
        send_n(&mut p, &dest, 0..10).await;
        let mut c = consumers.remove(0);
        let got = c.msgs(10).await;
        assert_eq!(bodies(&got), numbered(0..10), "{header}: all to the first");
        for other in &mut consumers {
            other.expect_silence(QUIET).await;
        }
        // It acks half, then goes away: the second subscriber takes over, the unacked ones
        // first and in order.
        for m in &got[..5] {
            c.ack(m).await;
        }
        c.drop_abruptly();
        send_n(&mut p, &dest, 10..12).await;
        let mut b = consumers.remove(0);
        let taken = b.msgs(7).await;
        assert_eq!(bodies(&taken), numbered(5..12), "{header}");
        assert!(taken[..5]
            .iter()
            .all(|m| m.get("redelivered") == Some("true")));
        consumers[0].expect_silence(QUIET).await;
        for m in &taken {
            b.ack(m).await;
        }
        b.disconnect().await;
        send_n(&mut p, &dest, 12..13).await;
        assert_eq!(consumers[0].msg().await.body_str(), "m12", "{header}");
    }
}

#[tokio::test]
async fn non_exclusive_consumers_wait_while_an_exclusive_one_is_attached() {
    let broker = Broker::start();
    let dest = q("excl-mixed");
    let mut plain = broker.client(Version::V12).await;
    plain.subscribe("plain", &dest, "auto").await;
    let mut exclusive = broker.client(Version::V12).await;
    exclusive
        .subscribe_with("x", &dest, "auto", &[("activemq.exclusive", "true")])
        .await;
    let mut p = broker.client(Version::V12).await;
    send_n(&mut p, &dest, 0..6).await;
    assert_eq!(bodies(&exclusive.msgs(6).await), numbered(0..6));
    plain.expect_silence(QUIET).await;
    exclusive.unsubscribe("x").await;
    send_n(&mut p, &dest, 6..8).await;
    assert_eq!(
        bodies(&plain.msgs(2).await),
        numbered(6..8),
        "back to normal"
    );
}

#[tokio::test]
async fn failover_prefers_the_highest_consumer_priority() {
    let broker = Broker::start();
    let dest = q("excl-prio");
    let mut first = broker.client(Version::V12).await;
    first
        .subscribe_with("f", &dest, "auto", &[("x-single-active-consumer", "true")])
        .await;
    let mut low = broker.client(Version::V12).await;
    low.subscribe_with(
        "l",
        &dest,
        "auto",
        &[("x-single-active-consumer", "true"), ("x-priority", "1")],
    )
    .await;
    let mut high = broker.client(Version::V12).await;
    high.subscribe_with(
        "h",
        &dest,
        "auto",
        &[("activemq.exclusive", "true"), ("activemq.priority", "7")],
    )
    .await;
    let mut p = broker.client(Version::V12).await;
    send_n(&mut p, &dest, 0..3).await;
    // The active consumer keeps the queue while it stays, whatever the newcomers' priority.
    assert_eq!(bodies(&first.msgs(3).await), numbered(0..3));
    first.disconnect().await;
    send_n(&mut p, &dest, 3..6).await;
    assert_eq!(bodies(&high.msgs(3).await), numbered(3..6));
    low.expect_silence(QUIET).await;
}

#[tokio::test]
async fn exclusive_false_is_an_ordinary_consumer() {
    let broker = Broker::start();
    let dest = q("excl-false");
    let mut a = broker.client(Version::V12).await;
    a.subscribe_with("a", &dest, "auto", &[("activemq.exclusive", "false")])
        .await;
    let mut b = broker.client(Version::V12).await;
    b.subscribe_with("b", &dest, "auto", &[("x-single-active-consumer", "FALSE")])
        .await;
    let mut p = broker.client(Version::V12).await;
    send_n(&mut p, &dest, 0..10).await;
    assert_eq!(a.msgs(5).await.len(), 5);
    assert_eq!(b.msgs(5).await.len(), 5);
}

#[tokio::test]
async fn a_bad_boolean_is_an_error() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for header in SPELLINGS {
        for bad in ["yes", "1", ""] {
            let mut c = broker.client(Version::V12).await;
            let frame = Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", &q("excl-bad"))
                .h(header, bad);
            let err = expect_refused(&mut c, frame, "r", header).await;
            let message = err.must("message");
            assert!(
                message.contains(header) && message.contains("expected true or false"),
                "{err:?}"
            );
            by.check().await;
        }
    }
}
