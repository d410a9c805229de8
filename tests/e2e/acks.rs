//! ACK and NACK per version, cumulative vs individual, NACK redelivery, ack errors
//! (checklist A-01..A-07, K-01..K-04, P15..P17, P29).

use crate::harness::*;

fn q(name: &str) -> String {
    format!("/queue/{}", unique(name))
}

/// Fills a fresh queue with m0..m{n-1} and returns (queue, consumer holding all n unacked).
async fn consumer_with(
    broker: &Broker,
    v: Version,
    ack: &str,
    n: usize,
) -> (String, Client, Vec<Frame>) {
    let dest = q("acks");
    let mut p = broker.client(Version::V12).await;
    for i in 0..n {
        p.send(&dest, &format!("m{i}")).await;
    }
    p.sync().await;
    let mut c = broker.client(v).await;
    c.subscribe("s", &dest, ack).await;
    let ms = c.msgs(n).await;
    for (i, m) in ms.iter().enumerate() {
        assert_eq!(m.body_str(), format!("m{i}"));
        if v == Version::V12 && ack != "auto" {
            assert!(is_safe_id(m.must("ack")), "{m:?}");
        }
    }
    (dest, c, ms)
}

/// Drops `c` and returns the bodies (sorted) that come back to a new consumer, which must all
/// be marked redelivered.
async fn leftovers(broker: &Broker, dest: &str, c: Client) -> Vec<String> {
    c.drop_abruptly();
    let mut d = broker.client(Version::V12).await;
    d.subscribe("left", dest, "auto").await;
    let mut out = Vec::new();
    loop {
        match d.try_recv(QUIET * 2).await {
            Ok(m) => {
                assert!(m.is("MESSAGE"), "{m:?}");
                assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
                out.push(m.body_str().to_string());
            }
            Err(RecvError::Timeout) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn ack_headers_per_version() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let (dest, mut c, ms) = consumer_with(&broker, v, "client-individual", 2).await;
        // The harness builds 1.0 `message-id`, 1.1 `message-id`+`subscription`, 1.2 `id`.
        c.ack(&ms[0]).await;
        c.ack(&ms[1]).await;
        assert!(leftovers(&broker, &dest, c).await.is_empty(), "{v}");
    }
}

#[tokio::test]
async fn client_mode_ack_is_cumulative() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let (dest, mut c, ms) = consumer_with(&broker, v, "client", 5).await;
        c.ack(&ms[2]).await;
        assert_eq!(leftovers(&broker, &dest, c).await, vec!["m3", "m4"], "{v}");
    }
}

#[tokio::test]
async fn client_individual_ack_is_single() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let (dest, mut c, ms) = consumer_with(&broker, v, "client-individual", 5).await;
        c.ack(&ms[2]).await;
        assert_eq!(
            leftovers(&broker, &dest, c).await,
            vec!["m0", "m1", "m3", "m4"],
            "{v}"
        );
    }
}

/// Acking out of order in client-individual mode, then the rest.
#[tokio::test]
async fn client_individual_out_of_order() {
    let broker = Broker::start();
    let (dest, mut c, ms) = consumer_with(&broker, Version::V12, "client-individual", 4).await;
    for i in [3, 0, 2] {
        c.ack(&ms[i]).await;
    }
    assert_eq!(leftovers(&broker, &dest, c).await, vec!["m1"]);
}

#[tokio::test]
async fn nack_redelivers_single_message() {
    let broker = Broker::start();
    for v in [Version::V11, Version::V12] {
        let (dest, mut c, ms) = consumer_with(&broker, v, "client-individual", 3).await;
        c.nack(&ms[1]).await;
        let again = c.msg().await;
        assert_eq!(again.body_str(), "m1", "{v}");
        assert_eq!(again.get("redelivered"), Some("true"), "{v}: {again:?}");
        if v == Version::V12 {
            assert!(again.get("ack").is_some_and(is_safe_id), "{again:?}");
        }
        c.expect_silence(QUIET).await;
        c.ack(&again).await;
        c.ack(&ms[0]).await;
        assert_eq!(leftovers(&broker, &dest, c).await, vec!["m2"], "{v}");
    }
}

#[tokio::test]
async fn client_mode_nack_is_cumulative() {
    let broker = Broker::start();
    for v in [Version::V11, Version::V12] {
        let (dest, mut c, ms) = consumer_with(&broker, v, "client", 5).await;
        c.nack(&ms[2]).await;
        let mut again: Vec<String> = c
            .msgs(3)
            .await
            .iter()
            .map(|m| {
                assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
                m.body_str().to_string()
            })
            .collect();
        again.sort();
        assert_eq!(again, vec!["m0", "m1", "m2"], "{v}");
        c.expect_silence(QUIET).await;
        // m3 and m4 are still pending on this consumer.
        assert_eq!(
            leftovers(&broker, &dest, c).await,
            vec!["m0", "m1", "m2", "m3", "m4"],
            "{v}"
        );
    }
}

/// A NACKed message may go to another consumer.
#[tokio::test]
async fn nacked_message_goes_to_another_consumer() {
    let broker = Broker::start();
    let dest = q("nack-other");
    let mut a = broker.client(Version::V12).await;
    a.subscribe_with("a", &dest, "client-individual", &[("prefetch-count", "1")])
        .await;
    let mut p = broker.client(Version::V12).await;
    p.send_r(&dest, "x").await;
    let m = a.msg().await;
    // `a` now holds one unacked message: a second one would exceed its window. Add `b`.
    p.send_r(&dest, "y").await;
    let mut b = broker.client(Version::V12).await;
    b.subscribe_with("b", &dest, "client-individual", &[("prefetch-count", "1")])
        .await;
    let y = b.msg().await;
    assert_eq!(y.body_str(), "y");
    b.ack(&y).await;
    a.nack(&m).await;
    // Either consumer may get x again; exactly one does.
    let mut got = Vec::new();
    for c in [&mut a, &mut b] {
        match c.try_recv(QUIET * 2).await {
            Ok(f) => got.push(f),
            Err(RecvError::Timeout) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].body_str(), "x");
    assert_eq!(got[0].get("redelivered"), Some("true"));
}

#[tokio::test]
async fn nack_in_1_0_is_an_error() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    let (_dest, mut c, ms) = consumer_with(&broker, Version::V10, "client", 1).await;
    let nack = Frame::new("NACK").h("message-id", ms[0].must("message-id"));
    expect_refused(&mut c, nack, "n10", "NACK in 1.0").await;
    by.check().await;
}

#[tokio::test]
async fn ack_of_unknown_id_is_an_error() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for v in ALL_VERSIONS {
        for command in ["ACK", "NACK"] {
            if v == Version::V10 && command == "NACK" {
                continue;
            }
            let (_dest, mut c, _ms) = consumer_with(&broker, v, "client-individual", 1).await;
            let f = match v {
                Version::V10 => Frame::new(command).h("message-id", "no-such-id"),
                Version::V11 => Frame::new(command)
                    .h("message-id", "no-such-id")
                    .h("subscription", "s"),
                Version::V12 => Frame::new(command).h("id", "no-such-id"),
            };
            expect_refused(&mut c, f, "bad-ack", &format!("{v} {command}")).await;
        }
    }
    by.check().await;
}

/// Acking the same message twice: the second ACK names a settled message (an unknown id).
#[tokio::test]
async fn double_ack_is_an_error() {
    let broker = Broker::start();
    let (_dest, mut c, ms) = consumer_with(&broker, Version::V12, "client-individual", 1).await;
    c.ack(&ms[0]).await;
    c.write(&c.ack_frame("ACK", &ms[0])).await;
    c.expect_error_close().await;
}

/// An ACK without the id header of its version is an error.
#[tokio::test]
async fn ack_missing_id_header_is_an_error() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for v in ALL_VERSIONS {
        let (_dest, mut c, ms) = consumer_with(&broker, v, "client", 1).await;
        let f = match v {
            // 1.0/1.1 need message-id; 1.1 also subscription; 1.2 needs id.
            Version::V10 => Frame::new("ACK").h("subscription", "s"),
            Version::V11 => Frame::new("ACK").h("message-id", ms[0].must("message-id")),
            Version::V12 => Frame::new("ACK").h("message-id", ms[0].must("message-id")),
        };
        c.write(&f).await;
        c.expect_error_close().await;
    }
    by.check().await;
}

/// An ACK that carries every header of the MESSAGE (as PECL stomp does) is accepted (P29).
#[tokio::test]
async fn ack_with_copied_message_headers() {
    let broker = Broker::start();
    let (dest, mut c, ms) = consumer_with(&broker, Version::V12, "client-individual", 1).await;
    let m = &ms[0];
    let f = Frame::new("ACK")
        .h("id", m.must("ack"))
        .h("destination", m.must("destination"))
        .h("message-id", m.must("message-id"))
        .h("subscription", m.must("subscription"));
    c.roundtrip(f).await;
    assert!(leftovers(&broker, &dest, c).await.is_empty());
}

/// 1.1: ACK with the right message-id but a wrong subscription is an error.
#[tokio::test]
async fn ack_with_wrong_subscription_in_1_1() {
    let broker = Broker::start();
    let (_dest, mut c, ms) = consumer_with(&broker, Version::V11, "client-individual", 1).await;
    c.write(
        &Frame::new("ACK")
            .h("message-id", ms[0].must("message-id"))
            .h("subscription", "nope"),
    )
    .await;
    c.expect_error_close().await;
}

/// Auto-mode messages are settled on delivery: nothing comes back after a drop.
#[tokio::test]
async fn auto_mode_settles_on_delivery() {
    let broker = Broker::start();
    let (dest, c, _ms) = consumer_with(&broker, Version::V12, "auto", 3).await;
    assert!(leftovers(&broker, &dest, c).await.is_empty());
}

/// Many NACKs of the same message keep it alive and marked redelivered.
#[tokio::test]
async fn repeated_nack() {
    let broker = Broker::start();
    let (_dest, mut c, ms) = consumer_with(&broker, Version::V12, "client-individual", 1).await;
    let mut m = ms[0].clone();
    for _ in 0..5 {
        c.nack(&m).await;
        m = c.msg().await;
        assert_eq!(m.body_str(), "m0");
        assert_eq!(m.get("redelivered"), Some("true"));
    }
    c.ack(&m).await;
    c.expect_silence(QUIET).await;
}

/// An auto-ack queue message the client has already received never comes back when the
/// subscription ends right after: the writer settles auto deliveries before they reach the
/// socket (regression test: they used to be settled only after the write, so an UNSUBSCRIBE
/// handled in between requeued them).
#[tokio::test]
async fn auto_ack_message_is_not_redelivered_after_unsubscribe() {
    let broker = Broker::start();
    let mut duplicates = Vec::new();
    for round in 0..30 {
        let dest = q("auto-unsub");
        let mut c = broker.client(Version::V12).await;
        c.subscribe("s", &dest, "auto").await;
        c.send_r(&dest, "once").await;
        assert_eq!(c.msg().await.body_str(), "once");
        if round % 2 == 0 {
            c.unsubscribe("s").await;
        } else {
            c.disconnect().await;
        }
        let mut d = broker.client(Version::V12).await;
        d.subscribe("s", &dest, "auto").await;
        match d.try_recv(std::time::Duration::from_millis(100)).await {
            Err(RecvError::Timeout) => {}
            Ok(f) => duplicates.push(format!("round {round}: {f:?}")),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(
        duplicates.is_empty(),
        "auto-ack messages delivered twice:\n{}",
        duplicates.join("\n")
    );
}

/// A redelivered message keeps its destination, user headers, content-type and body.
#[tokio::test]
async fn redelivery_keeps_headers_and_body() {
    let broker = Broker::start();
    for v in [Version::V11, Version::V12] {
        let dest = q("redeliver-headers");
        let mut c = broker.client(v).await;
        c.subscribe("s", &dest, "client-individual").await;
        let body: Vec<u8> = vec![1, 0, 2, 0, 3];
        let send = Frame::new("SEND")
            .h("destination", &dest)
            .h("x-a", "1")
            .h("x-b", "two:2")
            .h("x-a", "3")
            .h("content-type", "application/x-test")
            .body_cl(body.clone());
        c.roundtrip(send).await;
        let m = c.msg().await;
        c.nack(&m).await;
        let again = c.msg().await;
        assert_eq!(again.get("redelivered"), Some("true"), "{v}: {again:?}");
        for frame in [&m, &again] {
            assert_eq!(frame.must("destination"), dest, "{v}");
            assert_eq!(frame.all("x-a"), vec!["1", "3"], "{v}: {frame:?}");
            assert_eq!(frame.get("x-b"), Some("two:2"), "{v}: {frame:?}");
            assert_eq!(
                frame.get("content-type"),
                Some("application/x-test"),
                "{v}: {frame:?}"
            );
            assert_eq!(frame.body, body, "{v}");
            assert_eq!(frame.must("content-length"), "5", "{v}");
        }
        c.ack(&again).await;
    }
}

/// A connection cannot ACK a message delivered to another connection.
#[tokio::test]
async fn ack_of_another_connections_message_is_an_error() {
    let broker = Broker::start();
    let (dest, mut a, ms) = consumer_with(&broker, Version::V12, "client-individual", 1).await;
    let mut b = broker.client(Version::V12).await;
    b.subscribe("s", &dest, "client-individual").await;
    b.write(&Frame::new("ACK").h("id", ms[0].must("ack"))).await;
    b.expect_error_close().await;
    // Still a's to settle.
    a.ack(&ms[0]).await;
    assert!(leftovers(&broker, &dest, a).await.is_empty());
}
