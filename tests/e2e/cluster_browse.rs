//! Browsing a cluster queue (docs/cluster.md, "Queue browsing"): `browser:true` on any edge
//! shows the messages JetStream holds for the queue that no consumer on any edge was given,
//! oldest first, capped by `limits.max_browse_messages`, and consumes nothing.

use std::time::Duration;

use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use super::browsing::{bodies, browse};
use super::cluster::{client, cluster_name, edge, message_within, target_dir, ACROSS};

#[tokio::test]
async fn cluster_browse_shows_what_no_consumer_was_given_on_any_edge_and_consumes_nothing() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_browse") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, "");
    let b = edge(&nats, &name, "[limits]\nmax_browse_messages = 4");
    let dest = "/queue/browsed";
    let mut p = client(&a).await;
    for i in 0..6 {
        p.send_r(dest, &format!("m{i}")).await;
    }

    // Nobody consumed yet: everything, oldest first, on the other edge too (up to its cap).
    let mut browser = client(&a).await;
    let shown = browse(&mut browser, "b1", dest).await;
    assert_eq!(bodies(&shown), ["m0", "m1", "m2", "m3", "m4", "m5"]);
    assert!(shown.iter().all(|m| m.must("destination") == dest));
    let mut capped = client(&b).await;
    let shown = browse(&mut capped, "b1", dest).await;
    assert_eq!(
        bodies(&shown),
        ["m0", "m1", "m2", "m3"],
        "max_browse_messages"
    );

    // A consumer on edge B holds two, unacknowledged: the browse shows the others.
    let mut c = client(&b).await;
    c.subscribe_with(
        "s",
        dest,
        "client-individual",
        &[("activemq.prefetchSize", "2")],
    )
    .await;
    let first = message_within(&mut c, ACROSS).await;
    let second = message_within(&mut c, ACROSS).await;
    assert_eq!([first.body_str(), second.body_str()], ["m0", "m1"]);
    let shown = browse(&mut browser, "b2", dest).await;
    assert_eq!(bodies(&shown), ["m2", "m3", "m4", "m5"]);

    // Browsing consumed nothing: the consumer gets every message.
    c.ack(&first).await;
    c.ack(&second).await;
    for i in 2..6 {
        let m = message_within(&mut c, ACROSS).await;
        assert_eq!(m.body_str(), format!("m{i}"));
        c.ack(&m).await;
    }
    c.expect_silence(Duration::from_millis(300)).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the last ACK reaches JetStream
    let shown = browse(&mut browser, "b3", dest).await;
    assert!(shown.is_empty(), "{shown:?}");
}
