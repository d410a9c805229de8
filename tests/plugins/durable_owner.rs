//! Durable subscriptions belong to the authenticated principal: a client that claims another's
//! `client-id` reaches only its own principal's subscriptions, and none can be removed by a
//! principal that may not read its topic, nor while a subscriber is attached (the hardening
//! issue: bob, with alice's client-id, took her backlog and deleted her subscription).

use plugboard_test_support::stomp::{unique, Client, Frame, QUIET};

use crate::support::*;

/// A CONNECT of `login` with `client-id: shared`.
async fn with_shared_client_id(broker: &PluginBroker, login: &str, passcode: &str) -> Client {
    let connect = connect_frame(Some(login), Some(passcode)).h("client-id", "shared");
    let (client, reply) = Client::connect_with(broker.addr, connect).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    client
}

fn durable(topic: &str, name: &str) -> Frame {
    Frame::new("SUBSCRIBE")
        .h("id", "s")
        .h("destination", topic)
        .h("ack", "auto")
        .h("activemq.subscriptionName", name)
}

#[tokio::test]
async fn another_principal_with_the_same_client_id_gets_its_own_subscription() {
    let config = temp_config(&demo_auth());
    let broker = PluginBroker::start(&config.path);
    let topic = format!("/topic/public.{}", unique("news"));
    let mut alice = with_shared_client_id(&broker, "alice", "alice-secret").await;
    alice.roundtrip(durable(&topic, "news")).await;
    alice.disconnect().await;
    let mut publisher = login(broker.addr, "alice", "alice-secret").await;
    for n in 0..3 {
        publisher.send_r(&topic, &format!("for alice {n}")).await;
    }

    // Bob may read the topic and claims alice's client-id: he gets a subscription of his own,
    // empty, not her backlog.
    let mut bob = with_shared_client_id(&broker, "bob", "bob-secret").await;
    bob.roundtrip(durable(&topic, "news")).await;
    bob.expect_silence(QUIET).await;
    bob.disconnect().await;

    let mut alice = with_shared_client_id(&broker, "alice", "alice-secret").await;
    alice.roundtrip(durable(&topic, "news")).await;
    let bodies: Vec<String> = alice
        .msgs(3)
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    assert_eq!(bodies, ["for alice 0", "for alice 1", "for alice 2"]);
}

#[tokio::test]
async fn a_durable_subscription_is_not_removed_by_others_nor_while_attached() {
    let config = temp_config(&demo_auth());
    let broker = PluginBroker::start(&config.path);
    // A topic bob may not read.
    let topic = format!("/topic/private.{}", unique("secret"));
    let mut alice = with_shared_client_id(&broker, "alice", "alice-secret").await;
    alice.roundtrip(durable(&topic, "secret")).await;

    // Bob's UNSUBSCRIBE by name (ActiveMQ's way to delete) reaches nothing of alice's.
    let mut bob = with_shared_client_id(&broker, "bob", "bob-secret").await;
    bob.write(
        &Frame::new("UNSUBSCRIBE")
            .h("id", "x")
            .h("activemq.subscriptionName", "secret")
            .h("receipt", "r-bob"),
    )
    .await;
    let err = bob.expect_error_close().await;
    assert!(
        err.must("message").contains("no durable subscription"),
        "{err:?}"
    );

    // Alice's other connection cannot delete it while it is attached.
    let mut other = with_shared_client_id(&broker, "alice", "alice-secret").await;
    other
        .write(
            &Frame::new("UNSUBSCRIBE")
                .h("id", "x")
                .h("activemq.subscriptionName", "secret")
                .h("receipt", "r-other"),
        )
        .await;
    let err = other.expect_error_close().await;
    assert!(err.must("message").contains("while attached"), "{err:?}");

    // Still hers, still collecting.
    let mut publisher = login(broker.addr, "alice", "alice-secret").await;
    publisher.send_r(&topic, "still yours").await;
    assert_eq!(alice.msg().await.body_str(), "still yours");
}
