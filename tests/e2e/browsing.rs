//! Queue browsing over TCP (ActiveMQ's `browser:true`): the waiting messages are shown without
//! being consumed, then a MESSAGE with `browser:end`; capped by `limits.max_browse_messages`;
//! refused on topics.

use std::time::Duration;

use crate::harness::*;

fn q(name: &str) -> String {
    format!("/queue/{}", unique(name))
}

pub(super) fn browse_frame(id: &str, dest: &str) -> Frame {
    Frame::new("SUBSCRIBE")
        .h("id", id)
        .h("destination", dest)
        .h("browser", "true")
}

/// Browses `dest` with subscription `id`: the bodies shown before `browser:end`.
pub(super) async fn browse(c: &mut Client, id: &str, dest: &str) -> Vec<Frame> {
    c.roundtrip(browse_frame(id, dest)).await;
    let mut shown = Vec::new();
    loop {
        let m = c.msg().await;
        assert_eq!(m.get("subscription"), Some(id), "{m:?}");
        if m.get("browser") == Some("end") {
            assert_eq!(m.body_str(), "", "{m:?}");
            assert_eq!(m.get("destination"), Some(dest));
            return shown;
        }
        shown.push(m);
    }
}

pub(super) fn bodies(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(|f| f.body_str()).collect()
}

#[tokio::test]
async fn a_browser_sees_the_waiting_messages_then_browser_end_and_consumes_nothing() {
    let broker = Broker::start();
    for version in [Version::V10, Version::V12] {
        let dest = q("browse");
        let mut producer = broker.client(Version::V12).await;
        for i in 0..5 {
            producer.send_r(&dest, &format!("m{i}")).await;
        }
        let mut browser = broker.client(version).await;
        let shown = browse(&mut browser, "b", &dest).await;
        assert_eq!(
            bodies(&shown),
            ["m0", "m1", "m2", "m3", "m4"],
            "{version:?}"
        );
        assert!(
            shown.iter().all(|m| m.get("ack").is_none()),
            "nothing to ack"
        );
        // Browsing again shows the same: nothing was consumed.
        browser
            .roundtrip(Frame::new("UNSUBSCRIBE").h("id", "b"))
            .await;
        let again = browse(&mut browser, "b2", &dest).await;
        assert_eq!(again.len(), 5);
        // Messages sent afterwards do not reach the finished browse.
        producer.send_r(&dest, "m5").await;
        browser.expect_silence(QUIET).await;
        // A consumer gets them all.
        let mut consumer = broker.client(Version::V12).await;
        consumer.subscribe("c", &dest, "auto").await;
        let got = consumer.msgs(6).await;
        assert_eq!(bodies(&got), ["m0", "m1", "m2", "m3", "m4", "m5"]);
    }
}

#[tokio::test]
async fn browsing_an_empty_or_new_queue_gives_only_the_end_marker() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V12).await;
    assert!(browse(&mut c, "b", &q("empty")).await.is_empty());
}

#[tokio::test]
async fn a_browse_shows_at_most_max_browse_messages_oldest_first() {
    let broker = Broker::with_config("[limits]\nmax_browse_messages = 3\n");
    let dest = q("capped");
    let mut c = broker.client(Version::V12).await;
    for i in 0..10 {
        c.send_r(&dest, &format!("m{i}")).await;
    }
    let shown = browse(&mut c, "b", &dest).await;
    assert_eq!(bodies(&shown), ["m0", "m1", "m2"]);
}

#[tokio::test]
async fn a_browse_does_not_show_messages_out_with_a_consumer() {
    let broker = Broker::start();
    let dest = q("inflight");
    let mut consumer = broker.client(Version::V12).await;
    consumer
        .subscribe_with("c", &dest, "client-individual", &[("prefetch-count", "1")])
        .await;
    let mut producer = broker.client(Version::V12).await;
    producer.send_r(&dest, "out").await;
    producer.send_r(&dest, "waiting").await;
    let out = consumer.msg().await;
    assert_eq!(out.body_str(), "out");
    let mut browser = broker.client(Version::V12).await;
    assert_eq!(bodies(&browse(&mut browser, "b", &dest).await), ["waiting"]);
    consumer.ack(&out).await;
    assert_eq!(consumer.msg().await.body_str(), "waiting");
}

#[tokio::test]
async fn browsing_a_topic_is_refused() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V12).await;
    let frame = browse_frame("b", &format!("/topic/{}", unique("t")));
    let err = expect_refused(&mut c, frame, "r", "browse a topic").await;
    assert!(
        err.must("message").contains("/queue/ destinations only"),
        "{err:?}"
    );
    assert_healthy(&broker).await;
}

#[tokio::test]
async fn a_browse_larger_than_the_outbox_is_paced_by_the_writer() {
    let broker = Broker::with_config(
        "[limits]\nmax_browse_messages = 2000\n[flow]\noutbound_queue_frames = 64\n",
    );
    let dest = q("paced");
    let mut c = broker.client(Version::V12).await;
    for chunk in 0..20 {
        let frames: Vec<Frame> = (0..100)
            .map(|i| {
                Frame::new("SEND")
                    .h("destination", &dest)
                    .body(format!("m{}", chunk * 100 + i))
            })
            .collect();
        c.write_all(&frames).await;
    }
    c.sync().await;
    let shown = browse(&mut c, "b", &dest).await;
    assert_eq!(shown.len(), 2000);
    assert_eq!(shown[1999].body_str(), "m1999");
    c.expect_silence(Duration::from_millis(200)).await;
}
