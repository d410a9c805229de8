//! Framing, headers, escaping, MESSAGE contents and receipts (checklist §1.2, §1.3, §1.4,
//! §1.8, P4..P6, P9, P10, P13..P15, P19..P21).

use std::collections::HashSet;

use crate::harness::*;

/// A queue destination unique to this call.
fn q(name: &str) -> String {
    format!("/queue/{}", unique(name))
}

#[tokio::test]
async fn message_carries_destination_id_subscription_headers_and_length() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let mut c = broker.client(v).await;
        let dest = q("msg");
        c.subscribe("sub-1", &dest, "auto").await;
        let send = Frame::new("SEND")
            .h("destination", &dest)
            .h("foo", "1")
            .h("bar", "x")
            .h("foo", "2")
            .h("content-type", "text/plain;charset=utf-8")
            .body("hello");
        c.write(&send).await;
        let m = c.msg().await;
        assert_eq!(m.must("destination"), dest, "{v}");
        assert!(is_safe_id(m.must("message-id")), "{v} message-id: {m:?}");
        assert_eq!(m.must("subscription"), "sub-1", "{v}");
        assert_eq!(
            m.all("foo"),
            vec!["1", "2"],
            "{v}: repeats kept in order: {m:?}"
        );
        assert_eq!(m.get("bar"), Some("x"));
        assert_eq!(m.get("content-type"), Some("text/plain;charset=utf-8"));
        assert_eq!(m.all("content-length"), vec!["5"], "{v}: {m:?}");
        assert_eq!(m.body, b"hello");
        // The user headers keep their relative order.
        let user: Vec<(&str, &str)> = m
            .headers
            .iter()
            .filter(|(k, _)| k == "foo" || k == "bar")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(user, vec![("foo", "1"), ("bar", "x"), ("foo", "2")], "{v}");
        assert!(
            m.get("ack").is_none(),
            "{v}: no ack header in auto mode: {m:?}"
        );
    }
}

#[tokio::test]
async fn message_ids_are_unique() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V12).await;
    let dest = q("ids");
    let topic = format!("/topic/{}", unique("ids"));
    c.subscribe("q", &dest, "client-individual").await;
    c.subscribe("t", &topic, "client").await;
    for i in 0..50 {
        c.send(&dest, &i.to_string()).await;
        c.send(&topic, &i.to_string()).await;
    }
    let ms = c.msgs(100).await;
    let mut ids = HashSet::new();
    let mut acks = HashSet::new();
    for m in &ms {
        assert!(is_safe_id(m.must("message-id")), "{m:?}");
        assert!(
            ids.insert(m.must("message-id").to_string()),
            "duplicate message-id: {m:?}"
        );
        let ack = m.must("ack");
        assert!(is_safe_id(ack), "ack header {ack:?} must be [A-Za-z0-9._-]");
        assert!(acks.insert(ack.to_string()), "duplicate ack id: {m:?}");
    }
}

#[tokio::test]
async fn destination_is_byte_identical_utf8_and_colon() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let mut c = broker.client(v).await;
        for dest in [
            format!("/queue/caf\u{e9}-{}", unique("d")),
            format!("/queue/a:b:c-{}", unique("d")),
            format!("/topic/\u{65e5}\u{672c}:x-{}", unique("d")),
            format!("/queue/sp ace-{}", unique("d")),
        ] {
            c.subscribe("s", &dest, "auto").await;
            c.send(&dest, "x").await;
            let m = c.msg().await;
            assert_eq!(
                m.must("destination").as_bytes(),
                dest.as_bytes(),
                "{v}: {m:?}"
            );
            c.unsubscribe("s").await;
        }
    }
}

#[tokio::test]
async fn body_with_nul_bytes_round_trips() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let mut c = broker.client(v).await;
        let dest = q("nul");
        c.subscribe("s", &dest, "auto").await;
        let body: Vec<u8> = vec![0, 1, 2, 0, 0, 255, b'a', 0];
        c.write(
            &Frame::new("SEND")
                .h("destination", &dest)
                .body_cl(body.clone()),
        )
        .await;
        let m = c.msg().await;
        assert_eq!(m.body, body, "{v}");
        assert_eq!(m.must("content-length"), "8");
        // A body of only NULs, and an empty body with content-length:0.
        c.write(
            &Frame::new("SEND")
                .h("destination", &dest)
                .body_cl(vec![0u8; 1000]),
        )
        .await;
        let m = c.msg().await;
        assert_eq!(m.body, vec![0u8; 1000]);
        c.write(
            &Frame::new("SEND")
                .h("destination", &dest)
                .body_cl(Vec::new()),
        )
        .await;
        let m = c.msg().await;
        assert!(m.body.is_empty());
        assert_eq!(m.must("content-length"), "0");
    }
}

#[tokio::test]
async fn utf8_body_gets_a_byte_count_content_length() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V12).await;
    let dest = q("utf8");
    c.subscribe("s", &dest, "auto").await;
    let body = "h\u{e9}llo w\u{f6}rld \u{2713} \u{1f680}";
    // Sent without content-length: the body ends at the NUL (F-07).
    c.send(&dest, body).await;
    let m = c.msg().await;
    assert_eq!(m.body_str(), body);
    assert_eq!(m.must("content-length"), body.len().to_string());
    assert_ne!(body.len(), body.chars().count());
}

#[tokio::test]
async fn content_length_on_every_message() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V11).await;
    let dest = q("cl");
    c.subscribe("s", &dest, "auto").await;
    for body in ["", "a", "abc def"] {
        c.send(&dest, body).await;
        let m = c.msg().await;
        assert_eq!(
            m.all("content-length"),
            vec![body.len().to_string().as_str()],
            "{m:?}"
        );
    }
}

#[tokio::test]
async fn server_owned_headers_are_not_passed_through() {
    let broker = Broker::start();
    for ack in ["auto", "client-individual"] {
        let mut c = broker.client(Version::V12).await;
        let dest = q("owned");
        c.subscribe("real-sub", &dest, ack).await;
        c.roundtrip(Frame::new("BEGIN").h("transaction", "tx-1"))
            .await;
        let send = Frame::new("SEND")
            .h("destination", &dest)
            .h("message-id", "fake-id")
            .h("subscription", "fake-sub")
            .h("ack", "fake-ack")
            .h("transaction", "tx-1")
            .h("user", "kept")
            .body_cl(b"body".to_vec());
        c.roundtrip(send).await;
        c.roundtrip(Frame::new("COMMIT").h("transaction", "tx-1"))
            .await;
        let m = c.msg().await;
        assert_eq!(m.all("message-id").len(), 1, "{m:?}");
        assert_ne!(m.must("message-id"), "fake-id", "{m:?}");
        assert_eq!(m.all("subscription"), vec!["real-sub"], "{m:?}");
        if ack == "auto" {
            assert!(m.get("ack").is_none(), "{m:?}");
        } else {
            assert_eq!(m.all("ack").len(), 1, "{m:?}");
            assert_ne!(m.must("ack"), "fake-ack", "{m:?}");
        }
        assert!(m.get("transaction").is_none(), "{m:?}");
        assert!(m.get("receipt").is_none(), "{m:?}");
        assert_eq!(m.all("content-length"), vec!["4"], "{m:?}");
        assert_eq!(m.get("user"), Some("kept"));
        if ack != "auto" {
            c.ack(&m).await;
        }
    }
}

/// Header names and values with LF, `:` and `\` arrive escaped (and decode back) in 1.1/1.2;
/// the decoder is single-pass (E-01..E-03, E-06, P6, P15).
#[tokio::test]
async fn escaping_round_trips_in_1_1_and_1_2() {
    let broker = Broker::start();
    let tricky = [
        ("colon:name", "a:b"),
        ("lf", "line1\nline2"),
        ("backslash", r"c:\dir\n"),
        ("literal-escapes", r"\n\c\\\r"),
        ("mixed", "x\\\n:y"),
        ("empty", ""),
        ("spaces", " padded value "),
        ("utf8-\u{e9}", "\u{65e5}\u{672c}\u{8a9e}"),
    ];
    for sender_v in [Version::V11, Version::V12] {
        for receiver_v in [Version::V11, Version::V12] {
            let mut rx = broker.client(receiver_v).await;
            let mut tx = broker.client(sender_v).await;
            let dest = q("esc");
            rx.subscribe("s", &dest, "auto").await;
            let mut send = Frame::new("SEND").h("destination", &dest);
            for (k, v) in tricky {
                send = send.h(k, v);
            }
            tx.roundtrip(send.body("b")).await;
            let m = rx.msg().await;
            for (k, v) in tricky {
                assert_eq!(
                    m.get(k),
                    Some(v),
                    "{sender_v}->{receiver_v} header {k:?}: {m:?}"
                );
            }
        }
    }
}

/// CR in a value is escaped as `\r` for a 1.2 receiver.
#[tokio::test]
async fn carriage_return_escape_in_1_2() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V12).await;
    let dest = q("cr");
    c.subscribe("s", &dest, "auto").await;
    c.roundtrip(Frame::new("SEND").h("destination", &dest).h("cr", "a\rb"))
        .await;
    let m = c.msg().await;
    assert_eq!(m.get("cr"), Some("a\rb"), "{m:?}");
}

/// 1.0 sessions have no escaping: a colon arrives raw, a value with LF is omitted (E-05, P30).
#[tokio::test]
async fn no_escaping_for_1_0_subscribers() {
    let broker = Broker::start();
    let mut old = broker.client(Version::V10).await;
    let mut new = broker.client(Version::V12).await;
    let dest = q("v10");
    old.subscribe("s", &dest, "auto").await;
    let send = Frame::new("SEND")
        .h("destination", &dest)
        .h("colon", "a:b")
        .h("backslash", r"x\y")
        .h("lf", "one\ntwo")
        .h("after", "kept");
    new.roundtrip(send.body("b")).await;
    // `old.version` is 1.0, so the harness parses without unescaping: raw bytes.
    let m = old.msg().await;
    assert_eq!(m.get("colon"), Some("a:b"), "{m:?}");
    assert_eq!(m.get("backslash"), Some(r"x\y"), "{m:?}");
    assert!(
        m.get("lf").is_none(),
        "a value with LF cannot be sent to 1.0: {m:?}"
    );
    assert_eq!(m.get("after"), Some("kept"), "{m:?}");
}

/// A 1.0 sender's raw colon and backslash reach a 1.1+ subscriber intact (escaped on the wire).
#[tokio::test]
async fn raw_1_0_values_reach_1_2_subscribers() {
    let broker = Broker::start();
    let mut old = broker.client(Version::V10).await;
    let mut new = broker.client(Version::V12).await;
    let dest = q("v10in");
    new.subscribe("s", &dest, "auto").await;
    old.roundtrip(
        Frame::new("SEND")
            .h("destination", &dest)
            .h("colon", "a:b")
            .h("bs", r"x\y"),
    )
    .await;
    let m = new.msg().await;
    assert_eq!(m.get("colon"), Some("a:b"), "{m:?}");
    assert_eq!(m.get("bs"), Some(r"x\y"), "{m:?}");
}

/// A raw `:` in a value (which stomp.py sends) is accepted in 1.1+: split on the first colon.
#[tokio::test]
async fn raw_colon_in_value_is_tolerated() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V11).await;
    let dest = q("rawcolon");
    c.subscribe("s", &dest, "auto").await;
    let raw = format!("SEND\ndestination:{dest}\nurl:http://x:80/\nreceipt:r1\n\nbody\0");
    c.write_raw(raw.as_bytes()).await;
    c.wait_receipt("r1").await;
    let m = c.msg().await;
    assert_eq!(m.get("url"), Some("http://x:80/"), "{m:?}");
}

/// All-CRLF frames parse in 1.2 (F-12, P10).
#[tokio::test]
async fn crlf_frames_in_1_2() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V12).await;
    let dest = q("crlf");
    let raw = format!(
        "SUBSCRIBE\r\nid:s\r\ndestination:{dest}\r\nreceipt:r-sub\r\n\r\n\0\r\n\
         SEND\r\ndestination:{dest}\r\nk:v\r\nreceipt:r-send\r\n\r\ncrlf body\0\r\n"
    );
    c.write_raw(raw.as_bytes()).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(c.recv().await);
    }
    assert!(
        got.iter()
            .any(|f| f.is("RECEIPT") && f.get("receipt-id") == Some("r-sub")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|f| f.is("RECEIPT") && f.get("receipt-id") == Some("r-send")),
        "{got:?}"
    );
    let m = got.iter().find(|f| f.is("MESSAGE")).expect("message");
    assert_eq!(m.get("k"), Some("v"), "no CR left in values: {m:?}");
    assert_eq!(m.body_str(), "crlf body");
    assert_eq!(m.must("destination"), dest);
}

/// EOLs between frames are ignored (F-11), many frames in one write, and a frame split into
/// single bytes across writes.
#[tokio::test]
async fn eols_between_frames_batches_and_split_frames() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V12).await;
    let dest = q("split");
    c.subscribe("s", &dest, "auto").await;
    let mut raw = Vec::new();
    for i in 0..20 {
        raw.extend_from_slice(b"\n\n\r\n");
        raw.extend_from_slice(
            &Frame::new("SEND")
                .h("destination", &dest)
                .body(format!("m{i}"))
                .encode(Version::V12),
        );
    }
    raw.extend_from_slice(b"\r\n\n");
    c.write_raw(&raw).await;
    for (i, m) in c.msgs(20).await.iter().enumerate() {
        assert_eq!(m.body_str(), format!("m{i}"));
    }
    let frame = Frame::new("SEND")
        .h("destination", &dest)
        .h("receipt", "byte-by-byte")
        .body_cl(b"split\0body".to_vec())
        .encode(Version::V12);
    for b in frame {
        c.write_raw(&[b]).await;
    }
    let mut got = vec![c.recv().await, c.recv().await];
    got.sort_by(|a, b| a.command.cmp(&b.command));
    assert!(
        got[0].is("MESSAGE") && got[0].body == b"split\0body",
        "{got:?}"
    );
    assert!(
        got[1].is("RECEIPT") && got[1].get("receipt-id") == Some("byte-by-byte"),
        "{got:?}"
    );
}

/// `content-length:0` and a `content-type` on frames without a body are accepted (F-10, P13).
#[tokio::test]
async fn content_length_zero_on_any_frame() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V12).await;
    let dest = q("cl0");
    let sub = Frame::new("SUBSCRIBE")
        .h("id", "s")
        .h("destination", &dest)
        .h("ack", "client-individual")
        .h("content-length", "0")
        .h("content-type", "text/plain; charset=UTF-8");
    c.roundtrip(sub).await;
    c.send(&dest, "x").await;
    let m = c.msg().await;
    let ack = Frame::new("ACK")
        .h("id", m.must("ack"))
        .h("content-length", "0");
    c.roundtrip(ack).await;
    c.roundtrip(
        Frame::new("BEGIN")
            .h("transaction", "t")
            .h("content-length", "0"),
    )
    .await;
    c.roundtrip(
        Frame::new("ABORT")
            .h("transaction", "t")
            .h("content-length", "0"),
    )
    .await;
    c.roundtrip(
        Frame::new("UNSUBSCRIBE")
            .h("id", "s")
            .h("content-length", "0"),
    )
    .await;
}

/// A RECEIPT for every client frame that asks for one; ids needing escapes round-trip (H-03, P15).
#[tokio::test]
async fn receipts_for_every_frame() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let mut c = broker.client(v).await;
        let dest = q("rcpt");
        let rid = |s: &str| {
            if v == Version::V10 {
                format!("{s}-plain")
            } else {
                format!("{s}:with\\escapes")
            }
        };
        let mut frames = vec![
            Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", &dest)
                .h("ack", "client"),
            Frame::new("SEND").h("destination", &dest).body("a"),
            Frame::new("BEGIN").h("transaction", "t1"),
            Frame::new("SEND")
                .h("destination", &dest)
                .h("transaction", "t1")
                .body("b"),
            Frame::new("COMMIT").h("transaction", "t1"),
            Frame::new("BEGIN").h("transaction", "t2"),
            Frame::new("ABORT").h("transaction", "t2"),
        ];
        for (i, f) in frames.drain(..).enumerate() {
            let id = rid(&format!("r{i}"));
            c.write(&f.h("receipt", &id)).await;
            let r = c.wait_receipt(&id).await;
            assert!(r.body.is_empty(), "{r:?}");
        }
        let m1 = c.msg().await;
        let m2 = c.msg().await;
        if v >= Version::V11 {
            let id = rid("nack");
            c.write(&c.ack_frame("NACK", &m1).h("receipt", &id)).await;
            c.wait_receipt(&id).await;
            let again = c.msg().await;
            assert_eq!(again.body, m1.body, "{v}: the NACKed message comes back");
            let id = rid("ack");
            c.write(&c.ack_frame("ACK", &again).h("receipt", &id)).await;
            c.wait_receipt(&id).await;
            let _ = &m2;
        } else {
            let id = rid("ack");
            c.write(&c.ack_frame("ACK", &m2).h("receipt", &id)).await;
            c.wait_receipt(&id).await;
        }
        let id = rid("unsub");
        c.write(&Frame::new("UNSUBSCRIBE").h("id", "s").h("receipt", &id))
            .await;
        c.wait_receipt(&id).await;
        let id = rid("disc");
        c.write(&Frame::new("DISCONNECT").h("receipt", &id)).await;
        let rest = c.expect_closed().await;
        assert!(
            rest.iter()
                .any(|f| f.get("receipt-id") == Some(id.as_str())),
            "{v}: {rest:?}"
        );
    }
}

/// The RECEIPT for a SUBSCRIBE comes before the first MESSAGE of that subscription (R-03, P19).
#[tokio::test]
async fn subscribe_receipt_precedes_first_message() {
    let broker = Broker::start();
    let mut producer = broker.client(Version::V12).await;
    let dest = q("rfirst");
    for i in 0..20 {
        producer.send(&dest, &i.to_string()).await;
    }
    producer.sync().await;
    for ack in ["client", "client-individual", "auto"] {
        let mut c = broker.client(Version::V12).await;
        c.write(
            &Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", &dest)
                .h("ack", ack)
                .h("receipt", "sub-r"),
        )
        .await;
        let first = c.recv().await;
        assert!(
            first.is("RECEIPT") && first.get("receipt-id") == Some("sub-r"),
            "{ack}: {first:?}"
        );
        let m = c.msg().await;
        assert!(m.is("MESSAGE"));
        drop(c);
    }
    // Same for a topic being published to continuously.
    let topic = format!("/topic/{}", unique("rfirst"));
    let pump = {
        let addr = broker.addr;
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut p = Client::connect(addr, Version::V12).await;
            for i in 0..400 {
                p.send(&topic, &i.to_string()).await;
                if i % 20 == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
            p.sync().await;
        })
    };
    for _ in 0..5 {
        let mut c = broker.client(Version::V12).await;
        c.write(
            &Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", &topic)
                .h("receipt", "sub-t"),
        )
        .await;
        let first = c.recv().await;
        assert!(first.is("RECEIPT"), "{first:?}");
    }
    pump.await.unwrap();
}

/// DISCONNECT with a receipt: earlier receipts first and in order, DISCONNECT's RECEIPT last,
/// then the socket closes (D-01, P19).
#[tokio::test]
async fn disconnect_receipt_is_last() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V12).await;
    let dest = q("disc");
    let mut frames = vec![Frame::new("SUBSCRIBE")
        .h("id", "s")
        .h("destination", &dest)
        .h("receipt", "sub")];
    for i in 0..50 {
        frames.push(
            Frame::new("SEND")
                .h("destination", &dest)
                .h("receipt", &format!("s{i}"))
                .body(format!("{i}")),
        );
    }
    frames.push(Frame::new("DISCONNECT").h("receipt", "bye"));
    c.write_all(&frames).await;
    let got = c.expect_closed().await;
    let receipts: Vec<&str> = got
        .iter()
        .filter(|f| f.is("RECEIPT"))
        .map(|f| f.must("receipt-id"))
        .collect();
    let mut expected = vec!["sub".to_string()];
    expected.extend((0..50).map(|i| format!("s{i}")));
    expected.push("bye".to_string());
    assert_eq!(receipts, expected, "receipts in order, DISCONNECT's last");
    assert!(
        got.last().unwrap().is("RECEIPT"),
        "nothing after the DISCONNECT receipt: {got:?}"
    );
    assert!(
        got.iter().all(|f| f.is("RECEIPT") || f.is("MESSAGE")),
        "{got:?}"
    );
}

/// DISCONNECT without a receipt just closes.
#[tokio::test]
async fn disconnect_without_receipt_closes() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let mut c = broker.client(v).await;
        c.write(&Frame::new("DISCONNECT")).await;
        let rest = c.expect_closed().await;
        assert!(rest.is_empty(), "{rest:?}");
    }
    assert_healthy(&broker).await;
}

/// Repeated headers on SEND: all passed on in order (checked above); CONNECT with repeated
/// `accept-version` uses the first (H-04).
#[tokio::test]
async fn repeated_connect_header_first_wins() {
    let broker = Broker::start();
    let f = Frame::new("CONNECT")
        .h("accept-version", "1.1")
        .h("accept-version", "1.2")
        .h("host", "h");
    let (_c, reply) = Client::connect_with(broker.addr, f).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    assert_eq!(reply.get("version"), Some("1.1"), "{reply:?}");
}

/// CRLF line endings are accepted in 1.0 and 1.1 too (checklist §1.10 default: lenient).
#[tokio::test]
async fn crlf_frames_in_1_0_and_1_1() {
    let broker = Broker::start();
    for v in [Version::V10, Version::V11] {
        let mut c = broker.client(v).await;
        let dest = q("crlf-old");
        let raw = format!(
            "SUBSCRIBE\r\nid:s\r\ndestination:{dest}\r\n\r\n\0\
             SEND\r\ndestination:{dest}\r\nk:v\r\nreceipt:r-send\r\n\r\nbody\0"
        );
        c.write_raw(raw.as_bytes()).await;
        c.wait_receipt("r-send").await;
        let m = c.msg().await;
        assert_eq!(m.must("destination"), dest, "{v}");
        assert_eq!(m.get("k"), Some("v"), "{v}: {m:?}");
    }
}

/// The first value of a repeated header is the one the broker uses (H-04, P9).
#[tokio::test]
async fn repeated_headers_first_wins_for_the_broker() {
    let broker = Broker::start();
    let first = q("first");
    let second = q("second");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("a", &first, "auto").await;
    c.subscribe("b", &second, "auto").await;
    c.roundtrip(
        Frame::new("SEND")
            .h("destination", &first)
            .h("destination", &second)
            .body("x"),
    )
    .await;
    let m = c.msg().await;
    assert_eq!(
        m.must("subscription"),
        "a",
        "routed by the first destination: {m:?}"
    );
    assert_eq!(m.must("destination"), first);
    c.expect_silence(QUIET).await;
    // SUBSCRIBE with ack repeated: the first (client-individual) applies, so an ACK is needed.
    let third = q("third");
    c.roundtrip(
        Frame::new("SUBSCRIBE")
            .h("id", "c")
            .h("destination", &third)
            .h("ack", "client-individual")
            .h("ack", "auto"),
    )
    .await;
    c.send_r(&third, "y").await;
    let m = c.msg().await;
    assert!(
        m.get("ack").is_some(),
        "first ack header (client-individual) applies: {m:?}"
    );
    c.ack(&m).await;
}

/// Frames sent after DISCONNECT are not processed (D-02).
#[tokio::test]
async fn frames_after_disconnect_are_ignored() {
    let broker = Broker::start();
    let dest = q("afterdisc");
    let mut c = broker.client(Version::V12).await;
    let frames = [
        Frame::new("DISCONNECT").h("receipt", "bye"),
        Frame::new("SEND").h("destination", &dest).body("too late"),
    ];
    c.write_all(&frames).await;
    let got = c.expect_closed().await;
    assert!(
        got.first()
            .is_some_and(|f| f.is("RECEIPT") && f.get("receipt-id") == Some("bye")),
        "{got:?}"
    );
    let mut d = broker.client(Version::V12).await;
    d.subscribe("s", &dest, "auto").await;
    d.expect_silence(QUIET).await;
}

/// Server frames end with NUL and one LF (checklist §1.10 default: what clients expect).
#[tokio::test]
async fn server_frames_end_with_nul_and_lf() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = Broker::start();
    let dest = q("trailing");
    let mut s = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let mut out = Client::connect_frame(Version::V12).encode(Version::V12);
    out.extend(
        Frame::new("SUBSCRIBE")
            .h("id", "s")
            .h("destination", &dest)
            .encode(Version::V12),
    );
    out.extend(
        Frame::new("SEND")
            .h("destination", &dest)
            .h("receipt", "r")
            .body("b")
            .encode(Version::V12),
    );
    out.extend(
        Frame::new("DISCONNECT")
            .h("receipt", "bye")
            .encode(Version::V12),
    );
    s.write_all(&out).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut bytes))
        .await
        .expect("closed")
        .unwrap();
    let nuls: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == 0)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        nuls.len(),
        4,
        "CONNECTED, MESSAGE, RECEIPT, RECEIPT: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    for i in nuls {
        assert_eq!(
            bytes.get(i + 1),
            Some(&b'\n'),
            "LF after NUL at {i}: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

/// Large bodies (several MiB, partial socket writes on both sides) round-trip intact through
/// a queue and a topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_round_trip() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V12).await;
    let queue = q("large");
    let topic = format!("/topic/{}", unique("large"));
    c.subscribe("q", &queue, "auto").await;
    c.subscribe("t", &topic, "auto").await;
    let body: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    for dest in [&queue, &topic] {
        c.write(
            &Frame::new("SEND")
                .h("destination", dest)
                .body_cl(body.clone()),
        )
        .await;
        let m = c.msg().await;
        assert_eq!(m.must("destination"), dest.as_str());
        assert_eq!(m.must("content-length"), body.len().to_string());
        assert!(m.body == body, "large body corrupted");
    }
}

/// Subscription ids needing escapes round-trip in `subscription`, and ACKs work with them.
#[tokio::test]
async fn subscription_ids_with_special_characters() {
    let broker = Broker::start();
    for v in [Version::V11, Version::V12] {
        let mut c = broker.client(v).await;
        let dest = q("subid");
        let id = "sub:1\\x y";
        c.subscribe(id, &dest, "client-individual").await;
        c.send_r(&dest, "x").await;
        let m = c.msg().await;
        assert_eq!(m.must("subscription"), id, "{v}: {m:?}");
        c.ack(&m).await;
        c.unsubscribe(id).await;
    }
}
