//! BEGIN / COMMIT / ABORT covering SEND, ACK and NACK; implicit abort on disconnect; errors
//! (checklist T-01..T-04, P26).

use crate::harness::*;

fn q(name: &str) -> String {
    format!("/queue/{}", unique(name))
}

fn begin(tx: &str) -> Frame {
    Frame::new("BEGIN").h("transaction", tx)
}
fn commit(tx: &str) -> Frame {
    Frame::new("COMMIT").h("transaction", tx)
}
fn abort(tx: &str) -> Frame {
    Frame::new("ABORT").h("transaction", tx)
}
fn tx_send(dest: &str, tx: &str, body: &str) -> Frame {
    Frame::new("SEND")
        .h("destination", dest)
        .h("transaction", tx)
        .body(body)
}

/// A `client-individual` consumer at `version` that has received `a` from `dest` and sent
/// `command` (ACK or NACK) for it in the open transaction `t`; returns it and the message.
async fn settled_in_transaction(
    broker: &Broker,
    version: Version,
    dest: &str,
    command: &str,
) -> (Client, Frame) {
    let mut c = broker.client(version).await;
    c.subscribe("s", dest, "client-individual").await;
    c.send_r(dest, "a").await;
    let m = c.msg().await;
    c.roundtrip(begin("t")).await;
    c.roundtrip(c.ack_frame(command, &m).h("transaction", "t"))
        .await;
    (c, m)
}

/// A new auto-ack subscriber on `dest` gets nothing: the queue is empty.
async fn assert_queue_empty(broker: &Broker, dest: &str) {
    let mut d = broker.client(Version::V12).await;
    d.subscribe("s", dest, "auto").await;
    d.expect_silence(QUIET).await;
}

/// `m` is the message `a` again, marked redelivered.
fn assert_redelivered(m: &Frame, context: &str) {
    assert_eq!(m.body_str(), "a", "{context}");
    assert_eq!(m.get("redelivered"), Some("true"), "{context}: {m:?}");
}

#[tokio::test]
async fn send_in_transaction_is_invisible_until_commit() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let dest = q("txsend");
        let mut rx = broker.client(Version::V12).await;
        rx.subscribe("s", &dest, "auto").await;
        let mut c = broker.client(v).await;
        c.roundtrip(begin("t1")).await;
        for i in 0..3 {
            c.roundtrip(tx_send(&dest, "t1", &format!("m{i}"))).await;
        }
        // A non-transactional SEND overtakes them.
        c.send_r(&dest, "plain").await;
        assert_eq!(rx.msg().await.body_str(), "plain", "{v}");
        rx.expect_silence(QUIET).await;
        c.roundtrip(commit("t1")).await;
        let ms = rx.msgs(3).await;
        let bodies: Vec<&str> = ms.iter().map(|m| m.body_str()).collect();
        assert_eq!(bodies, vec!["m0", "m1", "m2"], "{v}: committed in order");
        for m in &ms {
            assert!(m.get("transaction").is_none(), "{m:?}");
        }
    }
}

#[tokio::test]
async fn abort_discards_sends() {
    let broker = Broker::start();
    let dest = q("txabort");
    let mut rx = broker.client(Version::V12).await;
    rx.subscribe("s", &dest, "auto").await;
    let mut c = broker.client(Version::V11).await;
    c.roundtrip(begin("t")).await;
    c.roundtrip(tx_send(&dest, "t", "never")).await;
    c.roundtrip(abort("t")).await;
    c.send_r(&dest, "after").await;
    assert_eq!(rx.msg().await.body_str(), "after");
    rx.expect_silence(QUIET).await;
}

#[tokio::test]
async fn two_transactions_are_independent() {
    let broker = Broker::start();
    let dest = q("txtwo");
    let mut rx = broker.client(Version::V12).await;
    rx.subscribe("s", &dest, "auto").await;
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(begin("a")).await;
    c.roundtrip(begin("b")).await;
    c.roundtrip(tx_send(&dest, "a", "from a")).await;
    c.roundtrip(tx_send(&dest, "b", "from b")).await;
    c.roundtrip(abort("a")).await;
    c.roundtrip(commit("b")).await;
    assert_eq!(rx.msg().await.body_str(), "from b");
    rx.expect_silence(QUIET).await;
}

/// Transactions are per connection: another connection cannot commit mine.
#[tokio::test]
async fn transactions_are_per_connection() {
    let broker = Broker::start();
    let mut a = broker.client(Version::V12).await;
    a.roundtrip(begin("shared-name")).await;
    let mut b = broker.client(Version::V12).await;
    b.write(&commit("shared-name")).await;
    b.expect_error_close().await;
    // And the same id can be used by both at once.
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(begin("shared-name")).await;
    c.roundtrip(commit("shared-name")).await;
    a.roundtrip(commit("shared-name")).await;
}

#[tokio::test]
async fn ack_in_transaction_applies_at_commit() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let dest = q("txack");
        let (mut c, _) = settled_in_transaction(&broker, v, &dest, "ACK").await;
        c.roundtrip(commit("t")).await;
        c.drop_abruptly();
        assert_queue_empty(&broker, &dest).await;
    }
}

/// An ACK in a transaction that is never committed does not settle the message.
#[tokio::test]
async fn ack_in_uncommitted_transaction_is_not_applied() {
    let broker = Broker::start();
    let dest = q("txack-open");
    let (c, _) = settled_in_transaction(&broker, Version::V12, &dest, "ACK").await;
    c.drop_abruptly();
    let mut d = broker.client(Version::V12).await;
    d.subscribe("s", &dest, "auto").await;
    assert_redelivered(&d.msg().await, "after the drop");
}

/// ABORT makes a message ACKed in the transaction deliverable again (decided): it is not lost
/// and comes back marked redelivered, whether to the same consumer or, after that consumer
/// leaves, to another.
#[tokio::test]
async fn abort_of_transactional_ack_makes_message_deliverable_again() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let dest = q("txack-abort");
        let (mut c, _) = settled_in_transaction(&broker, v, &dest, "ACK").await;
        c.roundtrip(abort("t")).await;
        let mut d = broker.client(Version::V12).await;
        d.subscribe("s", &dest, "client-individual").await;
        match c.try_recv(QUIET).await {
            Ok(again) => {
                assert_redelivered(&again, &v.to_string());
                c.ack(&again).await;
                d.expect_silence(QUIET).await;
            }
            Err(RecvError::Timeout) => {
                c.drop_abruptly();
                let again = d.msg().await;
                assert_redelivered(&again, &v.to_string());
                d.ack(&again).await;
            }
            Err(e) => panic!("{v}: {e:?}"),
        }
    }
}

#[tokio::test]
async fn nack_in_transaction_applies_at_commit() {
    let broker = Broker::start();
    for v in [Version::V11, Version::V12] {
        let dest = q("txnack");
        let (mut c, _) = settled_in_transaction(&broker, v, &dest, "NACK").await;
        c.expect_silence(QUIET).await;
        c.roundtrip(commit("t")).await;
        let again = c.msg().await;
        assert_redelivered(&again, &v.to_string());
        c.ack(&again).await;
    }
}

#[tokio::test]
async fn disconnect_aborts_open_transactions() {
    let broker = Broker::start();
    for graceful in [true, false] {
        let dest = q("txdisc");
        let mut rx = broker.client(Version::V12).await;
        rx.subscribe("s", &dest, "auto").await;
        let mut c = broker.client(Version::V12).await;
        c.roundtrip(begin("t")).await;
        c.roundtrip(tx_send(&dest, "t", "never")).await;
        if graceful {
            c.disconnect().await;
        } else {
            c.drop_abruptly();
        }
        rx.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn transaction_id_reusable_after_commit() {
    let broker = Broker::start();
    let dest = q("txreuse");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    for round in 0..3 {
        c.roundtrip(begin("t")).await;
        c.roundtrip(tx_send(&dest, "t", &format!("r{round}"))).await;
        c.roundtrip(commit("t")).await;
        assert_eq!(c.msg().await.body_str(), format!("r{round}"));
    }
}

/// Every transaction error: ERROR (with receipt-id) + close, others unaffected.
#[tokio::test]
async fn transaction_errors() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    let dest = q("txerr");
    type Case = (&'static str, Vec<Frame>, Frame);
    let cases: Vec<Case> = vec![
        ("COMMIT unknown", vec![], commit("nope")),
        ("ABORT unknown", vec![], abort("nope")),
        ("SEND unknown", vec![], tx_send(&dest, "nope", "x")),
        ("BEGIN existing", vec![begin("t")], begin("t")),
        ("BEGIN without id", vec![], Frame::new("BEGIN")),
        ("COMMIT without id", vec![begin("t")], Frame::new("COMMIT")),
        ("COMMIT twice", vec![begin("t"), commit("t")], commit("t")),
        (
            "ABORT after COMMIT",
            vec![begin("t"), commit("t")],
            abort("t"),
        ),
    ];
    for v in ALL_VERSIONS {
        for (name, setup, bad) in &cases {
            let mut c = broker.client(v).await;
            for f in setup {
                c.roundtrip(f.clone()).await;
            }
            expect_refused(&mut c, bad.clone(), "bad-tx", &format!("{v} {name}")).await;
        }
    }
    // ACK/NACK naming an unknown transaction.
    for (v, command) in [
        (Version::V10, "ACK"),
        (Version::V11, "ACK"),
        (Version::V12, "ACK"),
        (Version::V12, "NACK"),
    ] {
        let mut c = broker.client(v).await;
        let d = q("txerr-ack");
        c.subscribe("s", &d, "client-individual").await;
        c.send_r(&d, "x").await;
        let m = c.msg().await;
        let bad = c.ack_frame(command, &m).h("transaction", "nope");
        expect_refused(&mut c, bad, "bad-ack", &format!("{v} {command}")).await;
    }
    by.check().await;
    // Nothing from the failed SENDs reached the queue.
    assert_queue_empty(&broker, &dest).await;
}

#[tokio::test]
async fn max_transactions_per_connection() {
    let broker = Broker::with_config("[limits]\nmax_transactions_per_connection = 2\n");
    let mut by = Bystander::new(&broker).await;
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(begin("a")).await;
    c.roundtrip(begin("b")).await;
    expect_refused(&mut c, begin("c"), "too-many", "third BEGIN").await;
    by.check().await;
}

#[tokio::test]
async fn max_transaction_frames() {
    let broker = Broker::with_config("[limits]\nmax_transaction_frames = 5\n");
    let mut by = Bystander::new(&broker).await;
    let dest = q("txframes");
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(begin("t")).await;
    for i in 0..5 {
        c.roundtrip(tx_send(&dest, "t", &i.to_string())).await;
    }
    let over = tx_send(&dest, "t", "one too many");
    expect_refused(&mut c, over, "over", "sixth SEND").await;
    by.check().await;
    // The transaction died with its connection: nothing was delivered.
    assert_queue_empty(&broker, &dest).await;
}

/// ABORT also undoes a NACK made in the transaction: the message is not redelivered by the
/// NACK, and it stays the consumer's to ACK (or comes back once, marked redelivered).
#[tokio::test]
async fn abort_of_transactional_nack() {
    let broker = Broker::start();
    let dest = q("txnack-abort");
    let (mut c, m) = settled_in_transaction(&broker, Version::V12, &dest, "NACK").await;
    c.roundtrip(abort("t")).await;
    let settle = match c.try_recv(QUIET).await {
        Ok(again) => {
            assert_redelivered(&again, "after ABORT");
            again
        }
        Err(RecvError::Timeout) => m,
        Err(e) => panic!("{e:?}"),
    };
    c.ack(&settle).await;
    c.drop_abruptly();
    assert_queue_empty(&broker, &dest).await;
}

/// An ACK held in a transaction whose subscription is gone by COMMIT: RECEIPT or ERROR are
/// both fine, but the broker stays healthy and the message (requeued by the UNSUBSCRIBE) is
/// not lost.
#[tokio::test]
async fn transactional_ack_after_unsubscribe_is_safe() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for command in ["ACK", "NACK"] {
        let dest = q("txack-unsub");
        let (mut c, _) = settled_in_transaction(&broker, Version::V12, &dest, command).await;
        c.unsubscribe("s").await;
        c.write(&commit("t").h("receipt", "commit")).await;
        let f = c.recv().await;
        if f.is("ERROR") {
            assert_error_frame(&f);
            c.expect_closed().await;
        } else {
            assert!(f.is("RECEIPT"), "{command}: {f:?}");
        }
        let mut d = broker.client(Version::V12).await;
        d.subscribe("s", &dest, "client-individual").await;
        let again = d.msg().await;
        assert_eq!(again.body_str(), "a", "{command}");
        d.ack(&again).await;
        d.expect_silence(QUIET).await;
    }
    by.check().await;
}
