//! The redeliver hook on cluster queues (docs/cluster.md, "Dead-lettering"), with the
//! `backoff` sample on two edges of one NATS JetStream: a NACKed message comes back after the
//! plugin's delay (JetStream's `nak` with delay), then goes to its dead-letter queue with the
//! consumer's last error, where the other edge reads it.

use std::path::Path;
use std::time::Duration;

use plugboard_test_support::broker::{Broker, Launch};
use plugboard_test_support::metrics::scrape;
use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};
use plugboard_test_support::stomp::{unique, Client, Frame};

use crate::redeliver::{backoff_config, nack_with_error, DUE};
use crate::support::*;

/// An edge of cluster `name` on `nats` running `backoff` with `delays_ms` for `/queue/retry.*`.
fn backoff_edge(nats: &NatsCluster, name: &str, delays_ms: &str) -> (TempConfig, Broker) {
    let cluster = format!(
        "[cluster]\nnats = [\"{}\"]\nname = \"{name}\"",
        nats.nodes[0].url()
    );
    let config = backoff_config(delays_ms, &cluster);
    let edge = Launch::config_file(broker_bin(), &config.path)
        .status_line()
        .start_within(Duration::from_secs(60))
        .start();
    (config, edge)
}

async fn message(client: &mut Client) -> Frame {
    let m = client.recv_within(DUE).await;
    assert!(m.is("MESSAGE"), "{m:?}");
    m
}

#[tokio::test]
async fn cluster_nacked_message_backs_off_in_jetstream_then_goes_to_its_dlq() {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target");
    let Some(bin) = nats_server_or_skip(target, "cluster_redeliver_hook") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = unique("t").replace('_', "-");
    let (_config_a, a) = backoff_edge(&nats, &name, "[1000, 300]");
    let (_config_b, b) = backoff_edge(&nats, &name, "[1000, 300]");
    let queue = "/queue/retry.jobs";
    let dlq = "/queue/DLQ.retry.jobs";

    let mut consumer = anonymous(b.addr).await;
    consumer.subscribe("c", queue, "client-individual").await;
    let mut sender = anonymous(a.addr).await;
    sender.send_r(queue, "poison").await;

    let first = message(&mut consumer).await;
    assert_eq!(first.body_str(), "poison");
    nack_with_error(&mut consumer, &first, "timeout talking to db").await;
    // First step: 1 s in JetStream. Not back at once (the built-in policy would) ...
    consumer.expect_silence(Duration::from_millis(500)).await;
    // ... but back within a bounded time.
    let second = message(&mut consumer).await;
    assert_eq!(second.body_str(), "poison");
    assert_eq!(second.get("redelivered"), Some("true"), "{second:?}");

    nack_with_error(&mut consumer, &second, "still failing").await;
    let third = message(&mut consumer).await;
    assert_eq!(third.body_str(), "poison");

    // Steps used up: to the DLQ with the last error as its reason, read on the other edge.
    nack_with_error(&mut consumer, &third, "db down").await;
    let mut dead = anonymous(a.addr).await;
    dead.subscribe("d", dlq, "auto").await;
    let m = message(&mut dead).await;
    assert_eq!(m.body_str(), "poison");
    assert_eq!(m.get("dlq-reason"), Some("db down"), "{m:?}");
    assert_eq!(m.get("dlq-original-destination"), Some(queue));
    assert_eq!(m.get("dlq-delivery-count"), Some("3"), "{m:?}");
    consumer.expect_silence(Duration::from_secs(1)).await;

    let metrics = scrape(b.admin(), None).await;
    let verdicts = |verdict: &str| {
        metrics.value(
            "plugboard_redelivery_verdicts_total",
            &[("vhost", "/"), ("verdict", verdict)],
        )
    };
    assert_eq!(verdicts("redeliver_after"), 2.0);
    assert_eq!(verdicts("dead_letter"), 1.0);
    assert_eq!(verdicts("fallback"), 0.0);
}
