//! `/temp-queue/NAME`: private to the connection, `reply-to` request/reply between two
//! connections, removal on disconnect (P20).

use crate::harness::*;

/// A responder at `version` subscribed to a fresh service queue; returns the queue and it.
async fn start_service(broker: &Broker, version: Version) -> (String, Client) {
    let service = format!("/queue/{}", unique("svc"));
    let mut responder = broker.client(version).await;
    responder.subscribe("svc", &service, "auto").await;
    (service, responder)
}

/// A request `body` to `service` asking for replies on `reply_to`.
fn request(service: &str, reply_to: &str, body: &str) -> Frame {
    Frame::new("SEND")
        .h("destination", service)
        .h("reply-to", reply_to)
        .body(body)
}

/// Request/reply: the owner subscribes to its temp queue, the responder answers to whatever
/// `reply-to` it received.
#[tokio::test]
async fn request_reply_through_temp_queue() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let (service, mut responder) = start_service(&broker, v).await;
        let mut owner = broker.client(v).await;
        owner
            .subscribe("replies", "/temp-queue/replies", "auto")
            .await;
        let req = request(&service, "/temp-queue/replies", "ping").h("correlation-id", "c1");
        owner.roundtrip(req).await;
        let got = responder.msg().await;
        assert_eq!(got.body_str(), "ping");
        let reply_to = got.must("reply-to").to_string();
        assert_ne!(
            reply_to, "/temp-queue/replies",
            "{v}: reply-to must be rewritten to a global name"
        );
        assert_eq!(got.get("correlation-id"), Some("c1"));
        let resp = Frame::new("SEND")
            .h("destination", &reply_to)
            .h("correlation-id", "c1")
            .body("pong");
        responder.roundtrip(resp).await;
        let r = owner.msg().await;
        assert_eq!(r.body_str(), "pong", "{v}");
        assert_eq!(r.must("subscription"), "replies");
        assert_eq!(r.get("correlation-id"), Some("c1"));
    }
}

/// The temp queue exists from the owner's SEND with `reply-to`: a reply sent before the owner
/// subscribes waits for it.
#[tokio::test]
async fn temp_queue_created_by_reply_to() {
    let broker = Broker::start();
    let (service, mut responder) = start_service(&broker, Version::V12).await;
    let mut owner = broker.client(Version::V12).await;
    owner
        .roundtrip(request(&service, "/temp-queue/later", "q"))
        .await;
    let got = responder.msg().await;
    let reply_to = got.must("reply-to").to_string();
    responder.send_r(&reply_to, "answer").await;
    owner.subscribe("later", "/temp-queue/later", "auto").await;
    let r = owner.msg().await;
    assert_eq!(r.body_str(), "answer");
}

/// Two connections using the same temp-queue name each get a private queue.
#[tokio::test]
async fn temp_queues_are_private() {
    let broker = Broker::start();
    let mut a = broker.client(Version::V12).await;
    let mut b = broker.client(Version::V12).await;
    a.subscribe("t", "/temp-queue/same", "auto").await;
    b.subscribe("t", "/temp-queue/same", "auto").await;
    a.send_r("/temp-queue/same", "for a").await;
    b.send_r("/temp-queue/same", "for b").await;
    assert_eq!(a.msg().await.body_str(), "for a");
    assert_eq!(b.msg().await.body_str(), "for b");
    a.expect_silence(QUIET).await;
    b.expect_silence(QUIET).await;
}

/// Distinct owners get distinct global reply names.
#[tokio::test]
async fn reply_names_differ_per_owner() {
    let broker = Broker::start();
    let (service, mut responder) = start_service(&broker, Version::V12).await;
    let mut names = Vec::new();
    for _ in 0..2 {
        let mut owner = broker.client(Version::V12).await;
        owner
            .roundtrip(request(&service, "/temp-queue/r", "q"))
            .await;
        names.push(responder.msg().await.must("reply-to").to_string());
    }
    assert_ne!(names[0], names[1]);
}

/// When the owner disconnects the temp queue is removed: replies are dropped silently (the
/// responder's connection is unaffected and gets its receipt).
#[tokio::test]
async fn temp_queue_removed_when_owner_leaves() {
    let broker = Broker::start();
    let (service, mut responder) = start_service(&broker, Version::V12).await;
    let mut owner = broker.client(Version::V12).await;
    owner.subscribe("r", "/temp-queue/r", "auto").await;
    owner
        .roundtrip(request(&service, "/temp-queue/r", "q"))
        .await;
    let reply_to = responder.msg().await.must("reply-to").to_string();
    owner.disconnect().await;
    for i in 0..3 {
        responder.send_r(&reply_to, &format!("late {i}")).await;
    }
    responder.sync().await;
    responder.expect_silence(QUIET).await;
    // Nobody can pick the dropped replies up by subscribing to the global name either.
    let mut other = broker.client(Version::V12).await;
    let sub = Frame::new("SUBSCRIBE")
        .h("id", "x")
        .h("destination", &reply_to)
        .h("receipt", "r");
    other.write(&sub).await;
    let f = other.recv().await;
    if f.is("RECEIPT") {
        other.expect_silence(QUIET).await;
    } else {
        assert!(f.is("ERROR"), "{f:?}");
    }
}

/// Unacked messages on a temp queue do not outlive the owner (no redelivery to anyone else),
/// and the owner's own sends to its temp queue work without a reply-to.
#[tokio::test]
async fn temp_queue_acks_and_owner_sends() {
    let broker = Broker::start();
    let mut owner = broker.client(Version::V12).await;
    owner
        .subscribe("t", "/temp-queue/work", "client-individual")
        .await;
    owner.send_r("/temp-queue/work", "w1").await;
    let m = owner.msg().await;
    assert!(m.get("ack").is_some(), "{m:?}");
    owner.nack(&m).await;
    let again = owner.msg().await;
    assert_eq!(again.body_str(), "w1");
    assert_eq!(again.get("redelivered"), Some("true"));
    owner.ack(&again).await;
    owner.expect_silence(QUIET).await;
}

/// A request sent inside a transaction gets its `reply-to` rewritten too (at COMMIT).
#[tokio::test]
async fn reply_to_in_a_transaction() {
    let broker = Broker::start();
    let (service, mut responder) = start_service(&broker, Version::V12).await;
    let mut owner = broker.client(Version::V12).await;
    owner.subscribe("r", "/temp-queue/tx-replies", "auto").await;
    owner
        .roundtrip(Frame::new("BEGIN").h("transaction", "t"))
        .await;
    let req = request(&service, "/temp-queue/tx-replies", "q").h("transaction", "t");
    owner.roundtrip(req).await;
    responder.expect_silence(QUIET).await;
    owner
        .roundtrip(Frame::new("COMMIT").h("transaction", "t"))
        .await;
    let got = responder.msg().await;
    let reply_to = got.must("reply-to").to_string();
    assert_ne!(reply_to, "/temp-queue/tx-replies");
    responder.send_r(&reply_to, "a").await;
    assert_eq!(owner.msg().await.body_str(), "a");
}
