//! Cluster mode's pipelined queue SENDs (docs/cluster.md, "Throughput"): SENDs without a
//! RECEIPT go to JetStream without waiting for each acknowledgement, in order, within
//! `[cluster] publish_window` and `publish_window_bytes`; a RECEIPT answers only once every
//! SEND before it is stored; a publish that fails ends even a quiet producer's connection with
//! `cluster.unavailable`.

use std::time::{Duration, Instant};

use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use super::cluster::{
    answer, client, cluster_name, edge, message_within, single_edge, still_served, target_dir,
    ACROSS,
};
use crate::harness::*;

/// Sends `count` messages without receipts and one with, kills the sending edge (SIGKILL) the
/// moment its RECEIPT arrives, and reads them all on another edge, in order.
async fn receipt_covers_every_send_before_it(window: &str, count: usize, body_bytes: usize) {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_pipelined_sends") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let mut a = edge(&nats, &name, window);
    let b = edge(&nats, &name, "");
    let dest = "/queue/pipelined";
    let pad = "x".repeat(body_bytes);
    let mut p = client(&a).await;
    for i in 0..count {
        p.write(&send_frame(dest, &[], &format!("{i} {pad}"))).await;
    }
    let receipt = p
        .roundtrip(send_frame(dest, &[], &format!("{count} {pad}")))
        .await;
    assert!(receipt.is("RECEIPT"), "{receipt:?}");
    // Nothing the edge still held counts now: the RECEIPT promised every SEND was stored.
    a.kill_hard();

    let mut c = client(&b).await;
    c.subscribe("s", dest, "client-individual").await;
    for i in 0..=count {
        let m = message_within(&mut c, ACROSS).await;
        let (n, _) = m.body_str().split_once(' ').expect("numbered");
        assert_eq!(n, i.to_string(), "in the order sent");
        c.ack(&m).await;
    }
    c.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn cluster_pipelined_sends_are_all_stored_in_order_before_a_receipt() {
    receipt_covers_every_send_before_it("", 3000, 10).await;
}

#[tokio::test]
async fn cluster_pipelined_sends_wait_at_a_full_window_of_messages_or_bytes() {
    // Four messages, or about three of these bodies, in flight at a time.
    receipt_covers_every_send_before_it(
        "publish_window = 4\npublish_window_bytes = 1024",
        500,
        300,
    )
    .await;
}

#[tokio::test]
async fn cluster_publish_window_zero_makes_every_send_wait() {
    receipt_covers_every_send_before_it("publish_window = 0", 200, 10).await;
}

#[tokio::test]
async fn cluster_pipelined_send_that_fails_ends_a_quiet_producer_with_an_error() {
    let Some((mut nats, e)) =
        single_edge("cluster_pipelined_send_fails", "publish_timeout_ms = 500")
    else {
        return;
    };
    let dest = "/queue/pipelined-outage";
    let mut bystander = client(&e).await;

    nats.kill(0);
    let mut p = client(&e).await;
    let started = Instant::now();
    for i in 0..3 {
        p.write(&send_frame(dest, &[], &format!("lost? {i}"))).await;
    }
    // No further frame: the edge reports the failure by itself, twice the timeout later.
    let error = p.recv_within(Duration::from_secs(10)).await;
    assert_error_frame(&error);
    assert_eq!(
        error.get("error-code"),
        Some("cluster.unavailable"),
        "{error:?}"
    );
    assert!(
        error.must("message").contains("since the last RECEIPT"),
        "{error:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "after both attempts: {:?}",
        started.elapsed()
    );
    p.expect_closed().await;
    // Other connections carry on.
    still_served(&mut bystander).await;
}

#[tokio::test]
async fn cluster_receipt_after_pipelined_sends_that_failed_is_an_error() {
    let Some((mut nats, e)) =
        single_edge("cluster_receipt_after_failed", "publish_timeout_ms = 500")
    else {
        return;
    };
    let dest = "/queue/pipelined-outage";
    nats.kill(0);
    let mut p = client(&e).await;
    for i in 0..3 {
        p.write(&send_frame(dest, &[], &format!("lost? {i}"))).await;
    }
    // A frame that does not touch the cluster itself: its RECEIPT would say the SENDs before
    // it were done, so it waits for them and becomes their ERROR.
    let answer = answer(&mut p, Frame::new("BEGIN").h("transaction", "t1")).await;
    assert!(answer.is("ERROR"), "{answer:?}");
    assert_eq!(
        answer.get("error-code"),
        Some("cluster.unavailable"),
        "{answer:?}"
    );
    assert!(answer.get("receipt-id").is_some(), "{answer:?}");
    p.expect_closed().await;
}
