//! `/queue/NAME`: competing consumers, buffering, order, redelivery on UNSUBSCRIBE and on
//! connection loss, prefetch windows, UNSUBSCRIBE in 1.0 (checklist U-*, N-01, A-07).

use std::collections::HashSet;

use crate::harness::*;

fn q(name: &str) -> String {
    format!("/queue/{}", unique(name))
}

#[tokio::test]
async fn queue_keeps_messages_until_a_consumer_comes_in_order() {
    let broker = Broker::start();
    let mut p = broker.client(Version::V12).await;
    let dest = q("buffer");
    for i in 0..100 {
        p.send(&dest, &format!("m{i}")).await;
    }
    p.sync().await;
    let mut c = broker.client(Version::V11).await;
    c.subscribe("s", &dest, "auto").await;
    for (i, m) in c.msgs(100).await.iter().enumerate() {
        assert_eq!(m.body_str(), format!("m{i}"), "FIFO order");
        assert!(m.get("redelivered").is_none_or(|r| r == "false"), "{m:?}");
    }
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn competing_consumers_round_robin() {
    let broker = Broker::start();
    let dest = q("rr");
    let mut a = broker.client(Version::V12).await;
    let mut b = broker.client(Version::V12).await;
    a.subscribe("a", &dest, "auto").await;
    b.subscribe("b", &dest, "auto").await;
    let mut p = broker.client(Version::V12).await;
    for i in 0..10 {
        p.send(&dest, &i.to_string()).await;
    }
    p.sync().await;
    let ma = a.msgs(5).await;
    let mb = b.msgs(5).await;
    a.expect_silence(QUIET).await;
    b.expect_silence(std::time::Duration::from_millis(50)).await;
    let mut all: Vec<String> = ma
        .iter()
        .chain(mb.iter())
        .map(|m| m.body_str().to_string())
        .collect();
    all.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(all, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    // Each consumer still sees its share in order.
    for share in [&ma, &mb] {
        let nums: Vec<u32> = share
            .iter()
            .map(|m| m.body_str().parse().unwrap())
            .collect();
        let mut sorted = nums.clone();
        sorted.sort();
        assert_eq!(nums, sorted);
    }
}

/// A message written to an auto-ack subscriber is consumed: it does not come back after the
/// UNSUBSCRIBE (regression test of the settlement race fixed with
/// `acks::auto_ack_message_is_not_redelivered_after_unsubscribe`).
#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = Broker::start();
    let dest = q("unsub");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    c.send_r(&dest, "one").await;
    assert_eq!(c.msg().await.body_str(), "one");
    c.unsubscribe("s").await;
    c.send_r(&dest, "two").await;
    c.expect_silence(QUIET).await;
    // The message waits in the queue for the next consumer.
    let mut d = broker.client(Version::V12).await;
    d.subscribe("s", &dest, "auto").await;
    assert_eq!(d.msg().await.body_str(), "two");
}

async fn redelivery_case(broker: &Broker, v: Version, ack: &str, how: &str) {
    let dest = q("redeliver");
    let mut p = broker.client(Version::V12).await;
    for i in 0..3 {
        p.send(&dest, &format!("m{i}")).await;
    }
    p.sync().await;
    let mut c = broker.client(v).await;
    c.subscribe("s", &dest, ack).await;
    let got = c.msgs(3).await;
    // Settle m0 only (in client mode ACK of m0 is cumulative over nothing earlier).
    c.ack(&got[0]).await;
    match how {
        "unsubscribe" => c.unsubscribe("s").await,
        "disconnect" => c.disconnect().await,
        "drop" => c.drop_abruptly(),
        _ => unreachable!(),
    }
    let mut d = broker.client(Version::V12).await;
    d.subscribe("s2", &dest, "client-individual").await;
    let again = d.msgs(2).await;
    let mut bodies: Vec<&str> = again.iter().map(|m| m.body_str()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        vec!["m1", "m2"],
        "{v} {ack} {how}: the unacked messages come back"
    );
    for m in &again {
        assert_eq!(m.get("redelivered"), Some("true"), "{v} {ack} {how}: {m:?}");
    }
    d.expect_silence(QUIET).await;
    for m in &again {
        d.ack(m).await;
    }
}

#[tokio::test]
async fn unacked_redelivered_on_unsubscribe() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        for ack in ["client", "client-individual"] {
            redelivery_case(&broker, v, ack, "unsubscribe").await;
        }
    }
}

#[tokio::test]
async fn unacked_redelivered_on_disconnect() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        for ack in ["client", "client-individual"] {
            redelivery_case(&broker, v, ack, "disconnect").await;
        }
    }
}

#[tokio::test]
async fn unacked_redelivered_when_socket_drops() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        for ack in ["client", "client-individual"] {
            redelivery_case(&broker, v, ack, "drop").await;
        }
    }
}

/// Redelivery goes to a consumer that is already waiting (not only to new subscribers).
#[tokio::test]
async fn redelivered_to_waiting_consumer_on_drop() {
    let broker = Broker::start();
    let dest = q("waiting");
    let mut holder = broker.client(Version::V12).await;
    holder
        .subscribe_with("s", &dest, "client-individual", &[("prefetch-count", "10")])
        .await;
    let mut p = broker.client(Version::V12).await;
    p.send_r(&dest, "held").await;
    let m = holder.msg().await;
    assert_eq!(m.body_str(), "held");
    let mut waiter = broker.client(Version::V12).await;
    waiter.subscribe("w", &dest, "auto").await;
    waiter.expect_silence(QUIET).await;
    holder.drop_abruptly();
    let again = waiter.msg().await;
    assert_eq!(again.body_str(), "held");
    assert_eq!(again.get("redelivered"), Some("true"), "{again:?}");
}

#[tokio::test]
async fn acked_message_never_comes_back() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let dest = q("acked");
        let mut c = broker.client(v).await;
        c.subscribe("s", &dest, "client-individual").await;
        c.send_r(&dest, "a").await;
        let m = c.msg().await;
        c.ack(&m).await;
        c.drop_abruptly();
        let mut d = broker.client(v).await;
        d.subscribe("s", &dest, "client-individual").await;
        d.expect_silence(QUIET).await;
        d.disconnect().await;
    }
}

async fn prefetch_case(broker: &Broker, header: &str) {
    let dest = q("prefetch");
    let mut c = broker.client(Version::V12).await;
    c.subscribe_with("s", &dest, "client-individual", &[(header, "2")])
        .await;
    let mut p = broker.client(Version::V12).await;
    for i in 0..6 {
        p.send(&dest, &format!("m{i}")).await;
    }
    p.sync().await;
    let first = c.msgs(2).await;
    c.expect_silence(QUIET).await;
    c.ack(&first[0]).await;
    let third = c.msg().await;
    assert_eq!(third.body_str(), "m2", "{header}");
    c.expect_silence(QUIET).await;
    c.ack(&first[1]).await;
    c.ack(&third).await;
    let rest = c.msgs(2).await;
    assert_eq!(
        rest.iter().map(|m| m.body_str()).collect::<Vec<_>>(),
        vec!["m3", "m4"],
        "{header}"
    );
    c.expect_silence(QUIET).await;
    // A second consumer gets what the first cannot take.
    let mut d = broker.client(Version::V12).await;
    d.subscribe("d", &dest, "auto").await;
    assert_eq!(d.msg().await.body_str(), "m5", "{header}");
}

#[tokio::test]
async fn prefetch_count_limits_unacked_messages() {
    let broker = Broker::start();
    prefetch_case(&broker, "prefetch-count").await;
}

#[tokio::test]
async fn activemq_prefetch_size_alias() {
    let broker = Broker::start();
    prefetch_case(&broker, "activemq.prefetchSize").await;
}

/// In client mode the window counts unacked messages; a cumulative ACK frees them all.
#[tokio::test]
async fn prefetch_with_cumulative_ack() {
    let broker = Broker::start();
    let dest = q("prefetch-client");
    let mut c = broker.client(Version::V11).await;
    c.subscribe_with("s", &dest, "client", &[("prefetch-count", "3")])
        .await;
    let mut p = broker.client(Version::V12).await;
    for i in 0..9 {
        p.send(&dest, &format!("m{i}")).await;
    }
    p.sync().await;
    let first = c.msgs(3).await;
    c.expect_silence(QUIET).await;
    c.ack(&first[2]).await;
    let next = c.msgs(3).await;
    assert_eq!(
        next.iter().map(|m| m.body_str()).collect::<Vec<_>>(),
        vec!["m3", "m4", "m5"]
    );
    c.expect_silence(QUIET).await;
}

/// `default_prefetch` from the config applies when the SUBSCRIBE asks for nothing.
#[tokio::test]
async fn default_prefetch_from_config() {
    let broker = Broker::with_config("[flow]\ndefault_prefetch = 4\n");
    let dest = q("defprefetch");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "client-individual").await;
    let mut p = broker.client(Version::V12).await;
    for i in 0..10 {
        p.send(&dest, &i.to_string()).await;
    }
    p.sync().await;
    c.msgs(4).await;
    c.expect_silence(QUIET).await;
}

/// STOMP 1.0 without `id`: UNSUBSCRIBE by destination, and the auto-ack message already
/// written does not come back (see `acks::auto_ack_message_is_not_redelivered_after_unsubscribe`).
#[tokio::test]
async fn v1_0_subscribe_without_id_and_unsubscribe_by_destination() {
    let broker = Broker::start();
    let dest = q("v10");
    let mut c = broker.client(Version::V10).await;
    c.roundtrip(Frame::new("SUBSCRIBE").h("destination", &dest))
        .await;
    c.send_r(&dest, "one").await;
    let m = c.msg().await;
    assert_eq!(m.body_str(), "one");
    assert_eq!(m.must("destination"), dest);
    c.roundtrip(Frame::new("UNSUBSCRIBE").h("destination", &dest))
        .await;
    c.send_r(&dest, "two").await;
    c.expect_silence(QUIET).await;
    // 1.0 with an id: MESSAGE carries `subscription`; UNSUBSCRIBE by id works too.
    c.roundtrip(Frame::new("SUBSCRIBE").h("destination", &dest).h("id", "x"))
        .await;
    let m = c.msg().await;
    assert_eq!(m.body_str(), "two");
    assert_eq!(m.get("subscription"), Some("x"));
    c.roundtrip(Frame::new("UNSUBSCRIBE").h("id", "x")).await;
    c.send_r(&dest, "three").await;
    c.expect_silence(QUIET).await;
}

/// client-individual is accepted in 1.0 sessions too (decided).
#[tokio::test]
async fn client_individual_accepted_in_1_0() {
    let broker = Broker::start();
    let dest = q("v10ci");
    let mut c = broker.client(Version::V10).await;
    c.subscribe("s", &dest, "client-individual").await;
    c.send_r(&dest, "a").await;
    c.send_r(&dest, "b").await;
    let ms = c.msgs(2).await;
    c.ack(&ms[1]).await;
    c.drop_abruptly();
    let mut d = broker.client(Version::V12).await;
    d.subscribe("s", &dest, "auto").await;
    let m = d.msg().await;
    assert_eq!(m.body_str(), "a", "only b was acked");
    d.expect_silence(QUIET).await;
}

/// Two subscriptions of one connection to the same queue compete like two consumers.
#[tokio::test]
async fn two_subscriptions_one_connection() {
    let broker = Broker::start();
    let dest = q("twosubs");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("one", &dest, "auto").await;
    c.subscribe("two", &dest, "auto").await;
    for i in 0..10 {
        c.send(&dest, &i.to_string()).await;
    }
    let ms = c.msgs(10).await;
    let subs: HashSet<&str> = ms.iter().map(|m| m.must("subscription")).collect();
    assert_eq!(
        subs,
        HashSet::from(["one", "two"]),
        "both subscriptions get messages"
    );
    let bodies: HashSet<&str> = ms.iter().map(|m| m.body_str()).collect();
    assert_eq!(bodies.len(), 10, "no duplicates");
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn max_subscriptions_per_connection() {
    let broker = Broker::with_config("[limits]\nmax_subscriptions_per_connection = 3\n");
    let mut by = Bystander::new(&broker).await;
    let mut c = broker.client(Version::V12).await;
    for i in 0..3 {
        c.subscribe(&format!("s{i}"), &q("maxsub"), "auto").await;
    }
    let fourth = Frame::new("SUBSCRIBE")
        .h("id", "s3")
        .h("destination", &q("maxsub"));
    expect_refused(&mut c, fourth, "over", "fourth SUBSCRIBE").await;
    by.check().await;
}

/// UNSUBSCRIBE then SUBSCRIBE again with the same id works.
#[tokio::test]
async fn subscription_id_reusable_after_unsubscribe() {
    let broker = Broker::start();
    let dest = q("reuse");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    c.unsubscribe("s").await;
    c.subscribe("s", &dest, "auto").await;
    c.send_r(&dest, "x").await;
    assert_eq!(c.msg().await.must("subscription"), "s");
}

/// A 1.0 UNSUBSCRIBE by `destination` finds a subscription that was made with an `id`, as
/// ActiveMQ does (stomp.py's 1.0 `unsubscribe(destination=...)` after `subscribe(dest, id=...)`
/// relies on it): regression test of a fixed defect.
#[tokio::test]
async fn v1_0_unsubscribe_by_destination_when_subscribed_with_id() {
    let broker = Broker::start();
    let dest = q("v10byid");
    let mut c = broker.client(Version::V10).await;
    c.subscribe("with-id", &dest, "auto").await;
    c.roundtrip(Frame::new("UNSUBSCRIBE").h("destination", &dest))
        .await;
    c.send_r(&dest, "after").await;
    c.expect_silence(QUIET).await;
}

/// A prefetch above `max_prefetch` is clamped to it.
#[tokio::test]
async fn prefetch_is_clamped_to_max_prefetch() {
    let broker = Broker::with_config("[flow]\nmax_prefetch = 3\n");
    let dest = q("maxprefetch");
    let mut c = broker.client(Version::V12).await;
    c.subscribe_with(
        "s",
        &dest,
        "client-individual",
        &[("prefetch-count", "100")],
    )
    .await;
    let mut p = broker.client(Version::V12).await;
    for i in 0..10 {
        p.send(&dest, &i.to_string()).await;
    }
    p.sync().await;
    c.msgs(3).await;
    c.expect_silence(QUIET).await;
}
