//! Messages a consumer's filter declines never block a queue: 300 messages the only consumer's
//! selector declines (once, only the first 256 were looked past, and the queue stalled for
//! every consumer) are parked out of the way, and offered again when a consumer that may take
//! them comes.

use plugboard_test_support::stomp::unique;

use crate::support::*;

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
