//! Consumer priority on a cluster queue (docs/cluster.md, "Consumer priority"): a subscription
//! with a higher `activemq.priority` / `x-priority`, on any edge, gets the queue's messages
//! while its window has room (and its pull is waiting at JetStream); the others get what it
//! cannot take.

use std::time::Duration;

use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use super::cluster::{client, cluster_name, edge, messages_within as take, target_dir};
use crate::harness::*;

fn bodies(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.body_str().to_string()).collect()
}

#[tokio::test]
async fn cluster_consumer_priority_serves_the_higher_one_first_across_edges() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_priority") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, "");
    let b = edge(&nats, &name, "");
    let dest = "/queue/prioritized";
    for (header, level) in [("activemq.priority", "5"), ("x-priority", "2")] {
        let dest = format!("{dest}-{header}");
        let mut low = client(&a).await;
        low.subscribe_with(
            "low",
            &dest,
            "client-individual",
            &[("activemq.prefetchSize", "10")],
        )
        .await;
        let mut high = client(&b).await;
        high.subscribe_with(
            "high",
            &dest,
            "client-individual",
            &[(header, level), ("activemq.prefetchSize", "2")],
        )
        .await;
        // Both pulls reach JetStream before the first message.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut p = client(&a).await;
        for i in 0..2 {
            p.send_r(&dest, &format!("m{i}")).await;
        }
        let first = take(&mut high, 2).await;
        assert_eq!(
            bodies(&first),
            ["m0", "m1"],
            "{header}: the higher one first"
        );
        low.expect_silence(Duration::from_millis(800)).await;

        // Its window is full: the lower one gets the next ones.
        for i in 2..5 {
            p.send_r(&dest, &format!("m{i}")).await;
        }
        assert_eq!(
            bodies(&take(&mut low, 3).await),
            ["m2", "m3", "m4"],
            "{header}"
        );
        high.expect_silence(Duration::from_millis(300)).await;

        // It acks: it has room again and is served first again.
        for m in &first {
            high.ack(m).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await; // its next pull is waiting
        p.send_r(&dest, "m5").await;
        assert_eq!(bodies(&take(&mut high, 1).await), ["m5"], "{header}");
        low.expect_silence(Duration::from_millis(800)).await;
    }
}

/// A queue's consumer that is not what a subscription took it for (here it gains its priority
/// group under it, as when a request that timed out on one edge reached the server after the
/// subscription found the consumer without it): the server refuses the subscription's pulls,
/// and the subscription reads the consumer again (after 5 s at most) and gets the messages.
/// The same for one band of a priority queue, while the other bands' pulls go on.
#[tokio::test]
async fn cluster_subscription_reads_its_consumer_again_when_its_pulls_are_refused() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_consumer_changed") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, "priority_queues = [\"/queue/prio.*\"]");
    let jetstream = async_nats::jetstream::new(
        async_nats::connect(nats.nodes[0].url())
            .await
            .expect("nats"),
    );
    // (A plain queue's consumer; a priority queue's high band's.)
    for (dest, suffix, priority) in [
        (format!("/queue/{}", cluster_name()), "", None),
        (format!("/queue/prio.{}", cluster_name()), "_h", Some("9")),
    ] {
        let token = format!("_2Fqueue_2F{}", dest["/queue/".len()..].replace('.', "_2E"));
        let stream = jetstream
            .get_stream(format!("{name}__2F_queues"))
            .await
            .expect("the queue stream");
        let band_subject = match suffix {
            "" => String::new(),
            _ => ".h".to_string(),
        };
        let plain = async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(format!("{token}{suffix}")),
            filter_subject: format!("{name}._2F.q.{token}{band_subject}"),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            max_deliver: -1,
            ..Default::default()
        };
        stream
            .create_consumer(plain.clone())
            .await
            .expect("the consumer, made without the priority policy");

        let mut c = client(&a).await;
        c.subscribe_with("s", &dest, "auto", &[("activemq.prefetchSize", "1")])
            .await;
        // Let its first pull reach the server, then give the consumer its priority group.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stream
            .update_consumer(async_nats::jetstream::consumer::pull::Config {
                priority_policy: async_nats::jetstream::consumer::PriorityPolicy::Prioritized,
                priority_groups: vec!["stomp".to_string()],
                ..plain
            })
            .await
            .expect("the consumer changed under the subscription");

        // The pull waiting since before the change takes the first; the next ones are
        // refused until the subscription read the consumer again.
        let mut p = client(&a).await;
        for body in ["first", "second", "third"] {
            let mut send = Frame::new("SEND").h("destination", &dest).body(body);
            if let Some(priority) = priority {
                send = send.h("priority", priority);
            }
            assert!(p.roundtrip(send).await.is("RECEIPT"), "{dest}");
        }
        for body in ["first", "second", "third"] {
            let m = c.recv_within(Duration::from_secs(20)).await;
            assert!(m.is("MESSAGE"), "{m:?}");
            assert_eq!(m.body_str(), body, "{dest}");
        }
        if priority.is_some() {
            // The other bands' pulls went on meanwhile.
            p.send_r(&dest, "normal").await;
            let m = c.recv_within(Duration::from_secs(5)).await;
            assert_eq!(m.body_str(), "normal", "{m:?}");
        }
    }
}
