//! Messages a consumer's filter declines never block a queue: 300 messages the only consumer's
//! selector declines (once, only the first 256 were looked past, and the queue stalled for
//! every consumer) are parked out of the way, and offered again when a consumer that may take
//! them comes.

use plugboard_test_support::stomp::unique;

use crate::support::*;
use plugboard_test_support::stomp::send_frame;

#[tokio::test]
async fn declined_messages_never_block_the_head_of_a_queue() {
    let broker = PluginBroker::start(&demo_config());
    let queue = format!("/queue/{}", unique("declined"));
    let mut picky = alice(broker.addr).await;
    picky
        .subscribe_with(
            "picky",
            &queue,
            "client-individual",
            &[("selector", "kind = 'wanted'")],
        )
        .await;
    let mut sender = alice(broker.addr).await;
    for n in 0..300 {
        sender.send(&queue, &format!("unwanted {n}")).await;
    }
    sender
        .roundtrip(send_frame(&queue, &[("kind", "wanted")], "wanted"))
        .await;
    let m = picky.msg().await;
    assert_eq!(m.body_str(), "wanted", "behind 300 declined ones");
    picky.ack(&m).await;

    // Someone who takes anything gets the 300, in order.
    let mut any = alice(broker.addr).await;
    any.subscribe("any", &queue, "auto").await;
    let got = any.msgs(300).await;
    for (n, m) in got.iter().enumerate() {
        assert_eq!(m.body_str(), format!("unwanted {n}"));
    }
}

/// A filter that fails on a message (a trap) is not declining it: the message is tried again
/// and, after `dead_letter.max_filter_failures` failures, dead-lettered with the reason; the
/// messages around it go through.
#[tokio::test]
async fn a_poison_message_for_a_failing_filter_is_dead_lettered_not_declined() {
    let config = temp_config(&format!(
        r#"
[dead_letter]
max_deliveries = 10
max_filter_failures = 3

[[plugins]]
name = "puppet"
file = "{}"
hooks = ["message"]
deadline_ms = 2000
"#,
        plugin("hostile-puppet")
    ));
    let broker = PluginBroker::start(&config.path);
    let queue = format!("/queue/{}", unique("poison"));
    let dlq = queue.replacen("/queue/", "/queue/DLQ.", 1);
    let mut consumer = anonymous(broker.addr).await;
    consumer
        .subscribe_with("c", &queue, "auto", &[("filter-trap", "poison")])
        .await;
    let mut sender = anonymous(broker.addr).await;
    sender.send_r(&queue, "m1").await;
    sender
        .roundtrip(send_frame(&queue, &[("poison", "yes")], "bad"))
        .await;
    sender.send_r(&queue, "m2").await;
    let got: Vec<String> = consumer
        .msgs(2)
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    assert_eq!(got, ["m1", "m2"]);
    let mut dead = anonymous(broker.addr).await;
    dead.subscribe("d", &dlq, "auto").await;
    let m = dead.msg().await;
    assert_eq!(m.body_str(), "bad");
    assert_eq!(m.get("dlq-reason"), Some("filter-failed"), "{m:?}");
    consumer
        .expect_silence(plugboard_test_support::stomp::QUIET)
        .await;
}
