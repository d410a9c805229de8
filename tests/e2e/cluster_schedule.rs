//! Cluster mode and scheduled delivery: a scheduled message that falls due while NATS is
//! unreachable stays on its edge and reaches the cluster once NATS is back, once.

use std::time::Duration;

use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use super::cluster::{client, cluster_name, edge, message_within, target_dir};
use crate::harness::*;

#[tokio::test]
async fn cluster_scheduled_message_due_during_an_outage_is_delivered_once_nats_is_back() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_scheduled_outage") else {
        return;
    };
    let mut nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let e = edge(&nats, &name, "publish_timeout_ms = 500");
    let dest = "/queue/scheduled-outage";
    let mut subscriber = client(&e).await;
    subscriber.subscribe("s", dest, "client-individual").await;

    let mut p = client(&e).await;
    let receipt = p
        .roundtrip(send_frame(
            dest,
            &[("persistent", "true"), ("AMQ_SCHEDULED_DELAY", "1500")],
            "later",
        ))
        .await;
    assert!(receipt.is("RECEIPT"), "{receipt:?}");
    nats.kill(0);
    // Due while NATS is down: the edge tries, fails, keeps it (1 s, 2 s, 4 s … apart).
    e.wait_log_line(
        &["scheduled message due but the cluster did not take it"],
        Duration::from_secs(10),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart(0);
    let m = message_within(&mut subscriber, Duration::from_secs(60)).await;
    assert_eq!(m.body_str(), "later");
    subscriber.ack(&m).await;
    // Once: JetStream dropped any second copy of a try it stored after all.
    subscriber.expect_silence(Duration::from_secs(3)).await;
}
