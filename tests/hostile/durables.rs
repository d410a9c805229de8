//! Durable subscriptions cannot be used to hold a topic's publishers hostage or to pile up
//! forever: a full one drops its oldest message (by default) instead of stopping publishers,
//! a principal has a bounded number of them, and abandoned ones expire.

use std::time::Duration;

use crate::harness::*;

async fn durable_reader(broker: &Broker, client_id: &str, topic: &str, name: &str) -> Client {
    let connect = Client::connect_frame(Version::V12).h("client-id", client_id);
    let (mut c, reply) = Client::connect_with(broker.addr, connect).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    c.subscribe_with("s", topic, "auto", &[("activemq.subscriptionName", name)])
        .await;
    c
}

#[tokio::test]
async fn an_offline_durable_subscriber_does_not_stop_the_topics_publishers() {
    let broker = Broker::with_config("[flow]\nqueue_max_messages = 5\n");
    let topic = format!("/topic/{}", unique("offline"));
    durable_reader(&broker, "sleepy", &topic, "d")
        .await
        .disconnect()
        .await;
    let mut live = broker.client(Version::V12).await;
    live.subscribe("live", &topic, "auto").await;
    let mut publisher = broker.client(Version::V12).await;
    for n in 0..20 {
        // Before, the sixth SEND waited forever for the offline subscriber.
        publisher.send_r(&topic, &format!("m{n}")).await;
    }
    assert_eq!(live.msgs(20).await.len(), 20);
    // The durable subscription kept the newest five.
    let mut back = durable_reader(&broker, "sleepy", &topic, "d").await;
    let bodies: Vec<String> = back
        .msgs(5)
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    assert_eq!(bodies, ["m15", "m16", "m17", "m18", "m19"]);
    back.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_principal_has_a_bounded_number_of_durable_subscriptions() {
    let broker = Broker::with_config("[durable]\nmax_per_principal = 3\n");
    for n in 0..3 {
        let topic = format!("/topic/{}", unique("many"));
        durable_reader(&broker, "hoarder", &topic, &format!("d{n}"))
            .await
            .disconnect()
            .await;
    }
    let connect = Client::connect_frame(Version::V12).h("client-id", "hoarder");
    let (mut c, _) = Client::connect_with(broker.addr, connect).await;
    let err = expect_refused(
        &mut c,
        Frame::new("SUBSCRIBE")
            .h("id", "s")
            .h("destination", &format!("/topic/{}", unique("many")))
            .h("activemq.subscriptionName", "d3"),
        "r-too-many",
        "fourth durable subscription",
    )
    .await;
    assert!(
        err.must("message")
            .contains("maximum of 3 durable subscriptions"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_abandoned_durable_subscription_expires() {
    let broker = Broker::with_config("[durable]\nexpire_after_ms = 200\n");
    let topic = format!("/topic/{}", unique("abandoned"));
    durable_reader(&broker, "gone", &topic, "d")
        .await
        .disconnect()
        .await;
    let mut publisher = broker.client(Version::V12).await;
    publisher.send_r(&topic, "kept while it lives").await;
    // While it lives, a detached subscription keeps what was published (another one, read
    // back at once, shows it).
    let control = format!("/topic/{}", unique("control"));
    durable_reader(&broker, "gone", &control, "c")
        .await
        .disconnect()
        .await;
    publisher.send_r(&control, "kept").await;
    let mut c = durable_reader(&broker, "gone", &control, "c").await;
    assert_eq!(c.msg().await.body_str(), "kept");
    // The sweep runs every 5 s: within about that, the subscription is gone with its message.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mut back = durable_reader(&broker, "gone", &topic, "d").await;
    back.expect_silence(Duration::from_millis(500)).await;
}
