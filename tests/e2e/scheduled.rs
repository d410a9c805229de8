//! Scheduled delivery over TCP: every header spelling (ActiveMQ's `AMQ_SCHEDULED_DELAY`,
//! `AMQ_SCHEDULED_TIME`, `AMQ_SCHEDULED_PERIOD` + `AMQ_SCHEDULED_REPEAT`, RabbitMQ's `x-delay`,
//! `deliver-at`, Artemis' `_AMQ_SCHED_DELIVERY`), what a RECEIPT means, transactions, topics,
//! the caps, and persistent scheduled messages across restarts (delivered once when due, even
//! when the broker was down at the due time).
//!
//! No test asserts a duration: a scheduled message is shown to wait by a message sent after it
//! overtaking it, and generous timeouts cover a loaded machine.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::harness::*;

/// Long enough that a message sent right after a scheduled one arrives first on a loaded
/// machine.
const DELAY_MS: u64 = 2500;
/// Bound on waiting for a scheduled message.
const DUE: Duration = Duration::from_secs(30);

fn q(name: &str) -> String {
    format!("/queue/{}", unique(name))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn send(dest: &str, body: &str) -> Frame {
    Frame::new("SEND").h("destination", dest).body(body)
}

/// Sends `scheduled` and then an unscheduled message; the unscheduled one arrives first, the
/// scheduled one after it.
async fn assert_held_back(c: &mut Client, dest: &str, scheduled: Frame) {
    c.roundtrip(scheduled).await;
    c.send_r(dest, "now").await;
    assert_eq!(c.msg().await.body_str(), "now", "the scheduled one waits");
    let later = c.recv_within(DUE).await;
    assert!(later.is("MESSAGE"), "{later:?}");
    assert_eq!(later.body_str(), "later");
}

#[tokio::test]
async fn each_delay_spelling_holds_the_message_back_until_due() {
    let broker = Broker::start();
    for header in ["AMQ_SCHEDULED_DELAY", "x-delay"] {
        let dest = q("delay");
        let mut c = broker.client(Version::V12).await;
        c.subscribe("s", &dest, "auto").await;
        let frame = send(&dest, "later").h(header, &DELAY_MS.to_string());
        assert_held_back(&mut c, &dest, frame).await;
        c.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn each_absolute_time_spelling_holds_the_message_back_until_then() {
    let broker = Broker::start();
    for header in ["AMQ_SCHEDULED_TIME", "deliver-at", "_AMQ_SCHED_DELIVERY"] {
        let dest = q("at");
        let mut c = broker.client(Version::V12).await;
        c.subscribe("s", &dest, "auto").await;
        let at = now_ms() + DELAY_MS;
        let frame = send(&dest, "later").h(header, &at.to_string());
        assert_held_back(&mut c, &dest, frame).await;
    }
}

#[tokio::test]
async fn a_delay_in_the_past_or_zero_delivers_at_once_in_order() {
    let broker = Broker::start();
    let dest = q("zero");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    c.roundtrip(send(&dest, "a").h("x-delay", "0")).await;
    c.roundtrip(send(&dest, "b").h("x-delay", "-100")).await;
    c.roundtrip(send(&dest, "c").h("deliver-at", "1000")).await;
    c.send_r(&dest, "d").await;
    let bodies: Vec<String> = c
        .msgs(4)
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    assert_eq!(bodies, ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn the_receipt_of_a_scheduled_send_comes_before_its_delivery() {
    let broker = Broker::start();
    let dest = q("receipt");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    let receipt = c
        .roundtrip(send(&dest, "later").h("AMQ_SCHEDULED_DELAY", "1000"))
        .await;
    assert!(
        receipt.is("RECEIPT"),
        "accepted, not delivered: {receipt:?}"
    );
    let m = c.recv_within(DUE).await;
    assert_eq!(m.body_str(), "later");
    assert_eq!(m.get("AMQ_SCHEDULED_DELAY"), Some("1000"), "headers kept");
}

#[tokio::test]
async fn period_and_repeat_give_repeat_plus_one_deliveries_with_their_own_ids() {
    let broker = Broker::start();
    let dest = q("repeat");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    c.roundtrip(
        send(&dest, "tick")
            .h("AMQ_SCHEDULED_DELAY", "100")
            .h("AMQ_SCHEDULED_PERIOD", "200")
            .h("AMQ_SCHEDULED_REPEAT", "2"),
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let m = c.recv_within(DUE).await;
        assert_eq!(m.body_str(), "tick", "{m:?}");
        ids.push(m.must("message-id").to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        3,
        "each delivery has its own message-id: {ids:?}"
    );
    c.expect_silence(Duration::from_millis(1000)).await;
}

#[tokio::test]
async fn a_scheduled_send_to_a_topic_reaches_its_subscribers_when_due() {
    let broker = Broker::start();
    let topic = format!("/topic/{}", unique("sched"));
    let mut producer = broker.client(Version::V12).await;
    // Sent before anyone subscribed: the subscriber present when it is due gets it.
    producer
        .roundtrip(send(&topic, "later").h("x-delay", &DELAY_MS.to_string()))
        .await;
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &topic, "auto").await;
    let m = c.recv_within(DUE).await;
    assert_eq!(m.body_str(), "later");
}

#[tokio::test]
async fn a_scheduled_send_in_a_transaction_is_scheduled_at_commit_and_dropped_by_abort() {
    let broker = Broker::start();
    let dest = q("tx");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    c.roundtrip(Frame::new("BEGIN").h("transaction", "t1"))
        .await;
    c.roundtrip(
        send(&dest, "aborted")
            .h("transaction", "t1")
            .h("x-delay", "100"),
    )
    .await;
    c.roundtrip(Frame::new("ABORT").h("transaction", "t1"))
        .await;
    c.roundtrip(Frame::new("BEGIN").h("transaction", "t2"))
        .await;
    c.roundtrip(
        send(&dest, "later")
            .h("transaction", "t2")
            .h("x-delay", "100"),
    )
    .await;
    c.expect_silence(Duration::from_millis(800)).await;
    c.roundtrip(Frame::new("COMMIT").h("transaction", "t2"))
        .await;
    let m = c.recv_within(DUE).await;
    assert_eq!(m.body_str(), "later", "committed, then delivered when due");
    c.expect_silence(Duration::from_millis(800)).await;
}

#[tokio::test]
async fn bad_scheduling_headers_get_an_error_with_the_receipt() {
    let broker = Broker::with_config(
        "[schedule]\nmax_delay_ms = 60000\nmin_period_ms = 50\nmax_repeat = 5\n",
    );
    let dest = q("bad");
    for (header, value, says) in [
        ("x-delay", "soon", "whole number"),
        ("AMQ_SCHEDULED_DELAY", "60001", "max_delay_ms"),
        ("AMQ_SCHEDULED_REPEAT", "3", "AMQ_SCHEDULED_PERIOD"),
        ("AMQ_SCHEDULED_REPEAT", "-1", "between 0 and 5"),
        ("AMQ_SCHEDULED_CRON", "0 * * * *", "not supported"),
    ] {
        let mut c = broker.client(Version::V12).await;
        let frame = send(&dest, "x").h(header, value);
        let err = expect_refused(&mut c, frame, "r1", header).await;
        assert!(err.must("message").contains(says), "{header}: {err:?}");
    }
    let mut c = broker.client(Version::V12).await;
    let far = (now_ms() + 3_600_000).to_string();
    let err = expect_refused(&mut c, send(&dest, "x").h("deliver-at", &far), "r2", "far").await;
    assert!(err.must("message").contains("max_delay_ms"), "{err:?}");
    assert_healthy(&broker).await;
}

#[tokio::test]
async fn the_per_principal_and_global_caps_refuse_more_scheduled_messages() {
    let broker = Broker::with_config(
        r#"
[schedule]
max_per_principal = 2
max_messages = 3

[[users]]
login = "alice"
passcode = "a-long-enough-passcode"

[[users]]
login = "bob"
passcode = "b-long-enough-passcode"
"#,
    );
    let dest = q("cap");
    let login = |user: &str, pass: &str| {
        Client::connect_frame(Version::V12)
            .h("login", user)
            .h("passcode", pass)
    };
    let (mut alice, _) =
        Client::connect_with(broker.addr, login("alice", "a-long-enough-passcode")).await;
    for i in 0..2 {
        alice
            .roundtrip(send(&dest, &format!("a{i}")).h("x-delay", "600000"))
            .await;
    }
    let err = expect_refused(
        &mut alice,
        send(&dest, "a2").h("x-delay", "600000"),
        "over",
        "alice's cap",
    )
    .await;
    assert!(
        err.must("message").contains("'alice' has the maximum of 2"),
        "{err:?}"
    );
    let (mut bob, _) =
        Client::connect_with(broker.addr, login("bob", "b-long-enough-passcode")).await;
    bob.roundtrip(send(&dest, "b0").h("x-delay", "600000"))
        .await;
    let err = expect_refused(
        &mut bob,
        send(&dest, "b1").h("x-delay", "600000"),
        "full",
        "the global cap",
    )
    .await;
    assert!(
        err.must("message").contains("maximum of 3 scheduled"),
        "{err:?}"
    );
}

fn persistent(dest: &str, body: &str) -> Frame {
    send(dest, body).h("persistent", "true")
}

/// Every message of `dest` arriving within `quiet` of the previous one (and the first within
/// [`DUE`]), on a fresh auto-ack subscription.
async fn drain(broker: &Broker, dest: &str, quiet: Duration) -> Vec<String> {
    let mut c = broker.client(Version::V12).await;
    c.subscribe("drain", dest, "auto").await;
    let mut out = Vec::new();
    let mut wait = DUE;
    loop {
        match c.try_recv(wait).await {
            Ok(f) if f.is("MESSAGE") => out.push(f.body_str().to_string()),
            Ok(f) => panic!("draining {dest}: unexpected {f:?}"),
            Err(RecvError::Timeout) => break,
            Err(e) => panic!("draining {dest}: {e:?}"),
        }
        wait = quiet;
    }
    c.disconnect().await;
    out
}

#[tokio::test]
async fn a_persistent_scheduled_message_due_while_the_broker_was_down_is_delivered_once() {
    let data = tempfile::tempdir().unwrap();
    let dest = q("down");
    let mut broker = Broker::with_data_dir("", data.path());
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(persistent(&dest, "later").h("AMQ_SCHEDULED_DELAY", "500"))
        .await;
    c.roundtrip(send(&dest, "transient-later").h("x-delay", "500"))
        .await;
    broker.kill_hard();
    // Down past the due time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut broker = Broker::with_data_dir("", data.path());
    assert_eq!(
        drain(&broker, &dest, Duration::from_millis(1500)).await,
        ["later"]
    );
    broker.terminate(Duration::from_secs(10));
    let broker = Broker::with_data_dir("", data.path());
    let mut c = broker.client(Version::V12).await;
    c.subscribe("again", &dest, "auto").await;
    c.expect_silence(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn a_persistent_scheduled_message_survives_a_restart_before_it_is_due() {
    let data = tempfile::tempdir().unwrap();
    let dest = q("early");
    let mut broker = Broker::with_data_dir("", data.path());
    let mut c = broker.client(Version::V12).await;
    let at = now_ms() + 3000;
    c.roundtrip(persistent(&dest, "later").h("deliver-at", &at.to_string()))
        .await;
    broker.kill_hard();
    let broker = Broker::with_data_dir("", data.path());
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    c.send_r(&dest, "now").await;
    assert_eq!(
        c.msg().await.body_str(),
        "now",
        "still scheduled after the restart"
    );
    let m = c.recv_within(DUE).await;
    assert_eq!(m.body_str(), "later");
    assert_eq!(m.get("persistent"), Some("true"));
    c.expect_silence(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn a_persistent_repeating_message_keeps_its_remaining_repeats_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let dest = q("repeats");
    let mut broker = Broker::with_data_dir("", data.path());
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "client-individual").await;
    c.roundtrip(
        persistent(&dest, "tick")
            .h("AMQ_SCHEDULED_PERIOD", "1000")
            .h("AMQ_SCHEDULED_REPEAT", "2")
            .h("AMQ_SCHEDULED_DELAY", "100"),
    )
    .await;
    // The first delivery, acknowledged; two repeats remain.
    let first = c.recv_within(DUE).await;
    assert_eq!(first.body_str(), "tick");
    c.roundtrip(c.ack_frame("ACK", &first)).await;
    broker.terminate(Duration::from_secs(10));
    let broker = Broker::with_data_dir("", data.path());
    let got = drain(&broker, &dest, Duration::from_millis(2500)).await;
    assert_eq!(got, ["tick", "tick"], "the two repeats left, once each");
}

#[tokio::test]
async fn the_status_page_counts_scheduled_messages() {
    use plugboard_test_support::broker::{fetch_status, Launch};
    use plugboard_test_support::BrokerBinary;
    let broker = Launch::config_text(crate::Plugboard::PATH, "admin_listen = \"127.0.0.1:0\"\n")
        .status_line()
        .start();
    let dest = q("status");
    let mut c = Client::connect(broker.addr, Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    c.roundtrip(send(&dest, "far").h("x-delay", "600000")).await;
    c.roundtrip(send(&dest, "soon").h("x-delay", "10")).await;
    assert_eq!(c.recv_within(DUE).await.body_str(), "soon");
    let status = fetch_status(broker.admin()).await;
    let scheduler = &status["scheduler"];
    assert_eq!(scheduler["waiting"], 1, "{status}");
    assert_eq!(scheduler["scheduled"], 2, "{status}");
    assert_eq!(scheduler["delivered"], 1, "{status}");
}
