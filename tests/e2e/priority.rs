//! Message priority (`priority` 0–9 on SEND, JMS's default 4; ActiveMQ and RabbitMQ spell it
//! the same): a queue delivers higher priorities first among its waiting messages, FIFO
//! within a priority; a NACKed or handed-back message keeps its place by priority; persistent
//! messages keep their priority across a restart; bad values are an ERROR.

use std::time::Duration;

use crate::harness::*;

fn q(name: &str) -> String {
    format!("/queue/{}", unique(name))
}

pub(super) fn send_p(dest: &str, body: &str, priority: Option<&str>) -> Frame {
    let f = Frame::new("SEND").h("destination", dest).body(body);
    match priority {
        Some(p) => f.h("priority", p),
        None => f,
    }
}

pub(super) fn bodies(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(|f| f.body_str()).collect()
}

/// Sends `(body, priority)` pairs with receipts to `dest` while nobody consumes.
pub(super) async fn fill(c: &mut Client, dest: &str, messages: &[(&str, Option<&str>)]) {
    for (body, priority) in messages {
        let answer = c.roundtrip(send_p(dest, body, *priority)).await;
        assert!(answer.is("RECEIPT"), "{answer:?}");
    }
}

#[tokio::test]
async fn higher_priorities_first_fifo_within_a_priority_in_every_version() {
    let broker = Broker::start();
    for version in [Version::V10, Version::V11, Version::V12] {
        let dest = q("prio-order");
        let mut p = broker.client(version).await;
        fill(
            &mut p,
            &dest,
            &[
                ("a4", None),
                ("b0", Some("0")),
                ("c9", Some("9")),
                ("d4", Some("4")),
                ("e7", Some("7")),
                ("f9", Some("9")),
                ("g0", Some("0")),
                ("h4", None),
            ],
        )
        .await;
        let mut c = broker.client(version).await;
        c.subscribe("s", &dest, "auto").await;
        let got = c.msgs(8).await;
        assert_eq!(
            bodies(&got),
            ["c9", "f9", "e7", "a4", "d4", "h4", "b0", "g0"],
            "{version:?}: by priority, then in arrival order"
        );
        assert_eq!(got[0].get("priority"), Some("9"), "the header is echoed");
        assert_eq!(got[3].get("priority"), None, "no header invented");
        c.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn priorities_above_nine_count_as_nine_and_spaces_are_allowed() {
    let broker = Broker::start();
    let dest = q("prio-clamp");
    let mut p = broker.client(Version::V12).await;
    fill(
        &mut p,
        &dest,
        &[
            ("eight", Some("8")),
            ("nine", Some("9")),
            ("fifteen", Some("15")),
            ("big", Some("99999999999999999999999")),
            ("spaced", Some(" 9 ")),
        ],
    )
    .await;
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    let got = c.msgs(5).await;
    assert_eq!(bodies(&got), ["nine", "fifteen", "big", "spaced", "eight"]);
    assert_eq!(
        got[1].get("priority"),
        Some("15"),
        "sent as is: {:?}",
        got[1]
    );
}

#[tokio::test]
async fn an_invalid_priority_is_an_error_and_nothing_is_queued() {
    let broker = Broker::start();
    let dest = q("prio-bad");
    let mut by = Bystander::new(&broker).await;
    for bad in ["high", "-1", "", "4.5", "0x9"] {
        let mut c = broker.client(Version::V12).await;
        let err = expect_refused(&mut c, send_p(&dest, "x", Some(bad)), "bad", bad).await;
        let message = err.must("message");
        assert!(
            message.contains("invalid priority") && message.contains("0 to 9"),
            "{bad:?}: {err:?}"
        );
        by.check().await;
    }
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_nacked_high_priority_message_comes_back_before_lower_ones() {
    let broker = Broker::start();
    let dest = q("prio-nack");
    let mut p = broker.client(Version::V12).await;
    fill(
        &mut p,
        &dest,
        &[("low1", Some("1")), ("mid", None), ("high1", Some("8"))],
    )
    .await;
    let mut c = broker.client(Version::V12).await;
    c.subscribe_with("s", &dest, "client-individual", &[("prefetch-count", "1")])
        .await;
    let first = c.msg().await;
    assert_eq!(first.body_str(), "high1");
    // Arrives while high1 is out: behind high1 in arrival order, same priority.
    fill(&mut p, &dest, &[("high2", Some("8"))]).await;
    c.nack(&first).await;
    let again = c.msg().await;
    assert_eq!(again.body_str(), "high1", "back at its place: {again:?}");
    assert_eq!(again.get("redelivered"), Some("true"));
    c.ack(&again).await;
    let mut rest = Vec::new();
    for _ in 0..3 {
        let m = c.msg().await;
        c.ack(&m).await;
        rest.push(m.body_str().to_string());
    }
    assert_eq!(rest, ["high2", "mid", "low1"]);
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn messages_handed_back_by_a_leaving_consumer_keep_priority_order() {
    let broker = Broker::start();
    let dest = q("prio-handback");
    let mut p = broker.client(Version::V12).await;
    fill(
        &mut p,
        &dest,
        &[("m4", None), ("m2", Some("2")), ("m6", Some("6"))],
    )
    .await;
    let mut a = broker.client(Version::V12).await;
    a.subscribe_with("a", &dest, "client-individual", &[("prefetch-count", "3")])
        .await;
    assert_eq!(bodies(&a.msgs(3).await), ["m6", "m4", "m2"]);
    // While a holds them: a newer top-priority message and an older-priority one.
    fill(&mut p, &dest, &[("late9", Some("9")), ("late4", None)]).await;
    // The consumer leaves with its three unacked messages; its UNSUBSCRIBE's receipt says they
    // are back in the queue (an abrupt close is noticed at some later point, and b could
    // subscribe before it: then late9 and late4 are all there is to deliver).
    a.unsubscribe("a").await;
    let mut b = broker.client(Version::V12).await;
    b.subscribe("b", &dest, "auto").await;
    let got = b.msgs(5).await;
    assert_eq!(bodies(&got), ["late9", "m6", "m4", "late4", "m2"]);
    for m in got.iter().filter(|m| m.body_str().starts_with('m')) {
        assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
    }
}

#[tokio::test]
async fn committed_transactions_keep_each_messages_priority() {
    let broker = Broker::start();
    let dest = q("prio-tx");
    let mut p = broker.client(Version::V12).await;
    p.roundtrip(Frame::new("BEGIN").h("transaction", "t")).await;
    for (body, priority) in [("t3", "3"), ("t9", "9"), ("t5", "5")] {
        p.write(&send_p(&dest, body, Some(priority)).h("transaction", "t"))
            .await;
    }
    p.roundtrip(Frame::new("COMMIT").h("transaction", "t"))
        .await;
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    assert_eq!(bodies(&c.msgs(3).await), ["t9", "t5", "t3"]);
}

#[tokio::test]
async fn persistent_messages_keep_their_priority_across_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let dest = q("prio-restart");
    let mut broker = Broker::with_data_dir("", data.path());
    let mut p = broker.client(Version::V12).await;
    for (body, priority) in [
        ("p2", "2"),
        ("p9", "9"),
        ("p4", "4"),
        ("p7", "7"),
        ("q9", "9"),
    ] {
        p.roundtrip(send_p(&dest, body, Some(priority)).h("persistent", "true"))
            .await;
    }
    p.roundtrip(
        Frame::new("SEND")
            .h("destination", &dest)
            .h("persistent", "true")
            .body("default"),
    )
    .await;
    broker.kill_hard();

    let broker = Broker::with_data_dir("", data.path());
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    let got = c.msgs(6).await;
    assert_eq!(bodies(&got), ["p9", "q9", "p7", "p4", "default", "p2"]);
    for m in &got {
        assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
    }
    c.expect_silence(Duration::from_millis(300)).await;
}
