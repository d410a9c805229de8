//! Read rights and wildcard subscriptions (static-auth's demo users: bob may subscribe to
//! `/topic/public.*` only). A plain wildcard subscription sees only the topics its login may
//! read; a durable one must be covered by the rights as a whole.

use crate::support::*;
use plugboard_test_support::stomp::{unique, Frame, QUIET};

#[tokio::test]
async fn a_wildcard_subscriber_sees_only_topics_it_may_read() {
    let broker = PluginBroker::start(&demo_config());
    let tag = unique("w").replace('-', "_");
    let mut bob = bob(broker.addr).await;
    for (id, pattern) in [
        ("all", "/topic/#"),
        ("gt", "/topic/>"),
        ("star", "/topic/*.*"),
    ] {
        bob.roundtrip(
            Frame::new("SUBSCRIBE")
                .h("id", id)
                .h("destination", pattern),
        )
        .await;
    }
    let mut alice = alice(broker.addr).await;
    let public = format!("/topic/public.{tag}");
    alice
        .send_r(&format!("/topic/secret.{tag}"), "secret")
        .await;
    alice.send_r(&public, "public").await;
    let mut got: Vec<(String, String)> = bob
        .msgs(3)
        .await
        .iter()
        .map(|m| (m.must("subscription").to_string(), m.body_str().to_string()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("all".to_string(), "public".to_string()),
            ("gt".to_string(), "public".to_string()),
            ("star".to_string(), "public".to_string()),
        ]
    );
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_durable_wildcard_subscription_needs_rights_on_everything_it_can_match() {
    let broker = PluginBroker::start(&demo_config());
    let mut bob_client = bob(broker.addr).await;
    bob_client
        .write(
            &Frame::new("SUBSCRIBE")
                .h("id", "d")
                .h("destination", "/topic/#")
                .h("activemq.subscriptionName", "everything")
                .h("receipt", "r1"),
        )
        .await;
    let err = bob_client.expect_error_close().await;
    assert!(
        err.must("message")
            .contains("its read rights do not cover every topic the pattern can match"),
        "{err:?}"
    );
    assert_eq!(err.get("receipt-id"), Some("r1"));
    // Covered by /topic/public.*: accepted, and it collects.
    let tag = unique("d").replace('-', "_");
    let mut bob_client = bob(broker.addr).await;
    bob_client
        .roundtrip(
            Frame::new("SUBSCRIBE")
                .h("id", "d")
                .h("destination", "/topic/public.*")
                .h("activemq.subscriptionName", &format!("public-{tag}")),
        )
        .await;
    let mut alice = alice(broker.addr).await;
    alice.send_r(&format!("/topic/public.{tag}"), "news").await;
    assert_eq!(bob_client.msg().await.body_str(), "news");
}
