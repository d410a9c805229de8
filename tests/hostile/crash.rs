//! One frame must never take the broker down: announced lengths are checked before anything is
//! sized from them, and a session that fails hands back everything it held.

use crate::harness::*;

/// `content-length` values at and past every edge: 2^62 (made the broker allocate 4 EiB and
/// abort), 2^63 - 1, 2^63 and u64::MAX (panicked the session), 2^64 and 10^30 (not a u64).
const HUGE_LENGTHS: [&str; 6] = [
    "4611686018427387904",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1000000000000000000000000000000",
];

/// Commands with and without a body, each given a huge `content-length` and no body.
const HEADS: [&str; 6] = [
    "ACK\nid:0.0",
    "NACK\nid:0.0",
    "SEND\ndestination:/queue/huge",
    "SUBSCRIBE\nid:9\ndestination:/queue/huge",
    "BEGIN\ntransaction:t",
    "DISCONNECT",
];

#[tokio::test]
async fn a_huge_content_length_gets_an_error_and_the_broker_stays_up() {
    let mut broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for head in HEADS {
        for length in HUGE_LENGTHS {
            let mut c = broker.client(Version::V12).await;
            let frame = format!("{head}\nreceipt:r-huge\ncontent-length:{length}\n\n");
            c.write_raw_lossy(frame.as_bytes()).await;
            let err = c.expect_error_close().await;
            let message = err.must("message");
            assert!(
                message.contains("limit") || message.contains("content-length"),
                "{head:?} {length}: {message}"
            );
            assert_eq!(err.get("receipt-id"), Some("r-huge"), "{err:?}");
            assert!(broker.is_running(), "{head:?} {length} stopped the broker");
        }
        by.check().await;
    }
    assert_healthy(&broker).await;
    assert!(
        !broker.log().contains("memory allocation"),
        "{}",
        broker.log_tail()
    );
}

/// In STOMP 1.0 a body on a frame that may not have one is read and dropped: its length must
/// be checked the same way.
#[tokio::test]
async fn a_huge_content_length_in_stomp_1_0_is_refused_too() {
    let mut broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for length in HUGE_LENGTHS {
        let mut c = broker.client(Version::V10).await;
        let frame = format!("SUBSCRIBE\ndestination:/queue/x\ncontent-length:{length}\n\n");
        c.write_raw_lossy(frame.as_bytes()).await;
        c.expect_error_close().await;
        assert!(broker.is_running());
    }
    by.check().await;
}

/// The consumer that sent the frame held unacked messages: they go to the next consumer, in
/// order, and its window no longer takes messages (before the fix a live consumer saw m3 and
/// m5 of m1-m5, the dead session's window swallowing the others).
#[tokio::test]
async fn the_failed_consumers_messages_go_to_the_others_in_order() {
    let broker = Broker::start();
    let queue = format!("/queue/{}", unique("handed-back"));
    let mut doomed = broker.client(Version::V12).await;
    doomed
        .subscribe_with("s", &queue, "client-individual", &[("prefetch-count", "2")])
        .await;
    let mut producer = broker.client(Version::V12).await;
    for n in 1..=5 {
        producer.send_r(&queue, &format!("m{n}")).await;
    }
    let first = doomed.msgs(2).await;
    assert_eq!(first[0].body_str(), "m1");
    doomed
        .write_raw_lossy(b"ACK\nid:0.0\ncontent-length:18446744073709551615\n\n")
        .await;
    doomed.expect_error_close().await;

    let mut live = broker.client(Version::V12).await;
    live.subscribe("s", &queue, "client-individual").await;
    let got: Vec<String> = live
        .msgs(5)
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5"]);
    live.expect_silence(QUIET).await;
}

/// A durable subscription held by the failed session is free again at once.
#[tokio::test]
async fn the_failed_sessions_durable_subscription_is_released() {
    let broker = Broker::start();
    let topic = format!("/topic/{}", unique("durable-release"));
    let connect = Client::connect_frame(Version::V12).h("client-id", "crashy");
    let (mut doomed, _) = Client::connect_with(broker.addr, connect.clone()).await;
    doomed
        .subscribe_with("d", &topic, "client", &[("durable", "true")])
        .await;
    doomed
        .write_raw_lossy(b"NACK\nid:0.0\ncontent-length:9223372036854775808\n\n")
        .await;
    doomed.expect_error_close().await;

    let (mut again, _) = Client::connect_with(broker.addr, connect).await;
    again
        .subscribe_with("d", &topic, "client", &[("durable", "true")])
        .await;
    let mut producer = broker.client(Version::V12).await;
    producer.send_r(&topic, "after").await;
    assert_eq!(again.msg().await.body_str(), "after");
}
