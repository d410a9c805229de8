//! The redeliver hook (WIT 0.1.3) end to end, with the `backoff` sample: a NACKed message comes
//! back after the configured delay (not at once), then goes to its dead-letter queue with the
//! consumer's last error; a message left by its consumer and an expired one go through the
//! hook too; a trapping or looping plugin falls back to the built-in `[dead_letter]` policy;
//! and without a redeliver plugin nothing changes.

use std::time::Duration;

use plugboard_test_support::metrics::scrape;
use plugboard_test_support::stomp::{send_frame, unique, Client, Frame};

use crate::support::*;

/// Longest a test waits for a redelivery that is due (generous: a loaded machine).
pub(crate) const DUE: Duration = Duration::from_secs(10);

/// A config with the `backoff` sample (`delays_ms`) for `/queue/retry.*`, and `extra` lines
/// before its plugin table.
pub(crate) fn backoff_config(delays_ms: &str, extra: &str) -> TempConfig {
    temp_config(&format!(
        r#"admin_listen = "127.0.0.1:0"
{extra}
[[plugins]]
name = "backoff"
file = "{}"
hooks = ["redeliver"]
destinations = ["/queue/retry.*"]
[plugins.config]
delays_ms = {delays_ms}
"#,
        plugin("backoff")
    ))
}

/// NACK of `m` with an `error` header, waiting for the receipt.
pub(crate) async fn nack_with_error(client: &mut Client, m: &Frame, error: &str) {
    let f = client.ack_frame("NACK", m).h("error", error);
    client.roundtrip(f).await;
}

async fn verdicts(broker: &PluginBroker, verdict: &str) -> f64 {
    scrape(broker.admin(), None).await.value(
        "plugboard_redelivery_verdicts_total",
        &[("vhost", "/"), ("verdict", verdict)],
    )
}

#[tokio::test]
async fn a_nacked_message_backs_off_then_goes_to_its_dlq_with_the_last_error() {
    let config = backoff_config("[1000, 300]", "");
    let broker = start_with_status(&config.path);
    let queue = format!("/queue/retry.{}", unique("nack"));
    let dlq = queue.replacen("/queue/", "/queue/DLQ.", 1);
    let mut consumer = anonymous(broker.addr).await;
    consumer.subscribe("c", &queue, "client-individual").await;
    let mut sender = anonymous(broker.addr).await;
    sender.send_r(&queue, "poison").await;

    let first = consumer.msg().await;
    assert_eq!(first.body_str(), "poison");
    nack_with_error(&mut consumer, &first, "timeout talking to db").await;
    // First step: 1 s. Not back at once (the built-in policy would redeliver it now) ...
    consumer.expect_silence(Duration::from_millis(500)).await;
    // ... but back within a bounded time.
    let second = consumer.recv_within(DUE).await;
    assert!(second.is("MESSAGE"), "{second:?}");
    assert_eq!(second.body_str(), "poison");
    assert_eq!(second.get("redelivered"), Some("true"), "{second:?}");

    // Second step, shortened by the config to 300 ms.
    nack_with_error(&mut consumer, &second, "still failing").await;
    let third = consumer.recv_within(DUE).await;
    assert_eq!(third.body_str(), "poison");

    // Steps used up: to the DLQ, with the last error as its reason.
    nack_with_error(&mut consumer, &third, "db down").await;
    let mut dead = anonymous(broker.addr).await;
    dead.subscribe("d", &dlq, "auto").await;
    let m = dead.recv_within(DUE).await;
    assert_eq!(m.body_str(), "poison");
    assert_eq!(m.get("dlq-reason"), Some("db down"), "{m:?}");
    assert_eq!(m.get("dlq-original-destination"), Some(queue.as_str()));
    assert_eq!(m.get("dlq-delivery-count"), Some("3"), "{m:?}");
    consumer.expect_silence(QUIET_TIME).await;

    assert_eq!(verdicts(&broker, "redeliver_after").await, 2.0);
    assert_eq!(verdicts(&broker, "dead_letter").await, 1.0);
    assert_eq!(verdicts(&broker, "fallback").await, 0.0);
}

const QUIET_TIME: Duration = plugboard_test_support::stomp::QUIET;

#[tokio::test]
async fn a_message_its_consumer_left_comes_back_after_the_delay() {
    let config = backoff_config("[800]", "");
    let broker = start_with_status(&config.path);
    let queue = format!("/queue/retry.{}", unique("gone"));
    let mut first = anonymous(broker.addr).await;
    first.subscribe("c", &queue, "client-individual").await;
    let mut sender = anonymous(broker.addr).await;
    sender.send_r(&queue, "work").await;
    assert_eq!(first.msg().await.body_str(), "work");
    // Leaves without acknowledging it.
    first.unsubscribe("c").await;

    let mut second = anonymous(broker.addr).await;
    second.subscribe("c", &queue, "client-individual").await;
    second.expect_silence(Duration::from_millis(300)).await;
    let m = second.recv_within(DUE).await;
    assert_eq!(m.body_str(), "work");
    assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
    assert_eq!(verdicts(&broker, "redeliver_after").await, 1.0);
}

#[tokio::test]
async fn an_expired_message_goes_through_the_hook() {
    // The built-in policy would drop it (`expired = false`): the sample dead-letters it.
    let config = backoff_config("[1000]", "[dead_letter]\nexpired = false\n");
    let broker = start_with_status(&config.path);
    let queue = format!("/queue/retry.{}", unique("ttl"));
    let dlq = queue.replacen("/queue/", "/queue/DLQ.", 1);
    let mut sender = anonymous(broker.addr).await;
    sender
        .roundtrip(send_frame(&queue, &[("ttl", "50")], "stale"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Its turn comes when a consumer is there: it has expired by then.
    let mut consumer = anonymous(broker.addr).await;
    consumer.subscribe("c", &queue, "auto").await;
    let mut dead = anonymous(broker.addr).await;
    dead.subscribe("d", &dlq, "auto").await;
    let m = dead.recv_within(DUE).await;
    assert_eq!(m.body_str(), "stale");
    assert_eq!(m.get("dlq-reason"), Some("expired"), "{m:?}");
    consumer.expect_silence(QUIET_TIME).await;
}

/// A redeliver plugin that traps, or loops until its deadline, never loses a message: the
/// built-in `[dead_letter]` policy applies (redelivered at once, dead-lettered after
/// `max_deliveries`), and the fallbacks are counted.
#[tokio::test]
async fn a_failing_redeliver_plugin_falls_back_to_the_built_in_policy() {
    for hostile in ["hostile-trap", "hostile-loop"] {
        let config = temp_config(&format!(
            r#"admin_listen = "127.0.0.1:0"
[dead_letter]
max_deliveries = 2

[[plugins]]
name = "hostile"
file = "{}"
hooks = ["redeliver"]
deadline_ms = 50
"#,
            plugin(hostile)
        ));
        let broker = start_with_status(&config.path);
        let queue = format!("/queue/{}", unique("fallback"));
        let dlq = queue.replacen("/queue/", "/queue/DLQ.", 1);
        let mut consumer = anonymous(broker.addr).await;
        consumer.subscribe("c", &queue, "client-individual").await;
        let mut sender = anonymous(broker.addr).await;
        sender.send_r(&queue, "m").await;
        let first = consumer.msg().await;
        consumer.nack(&first).await;
        let again = consumer.recv_within(DUE).await;
        assert_eq!(again.body_str(), "m", "{hostile}: {again:?}");
        consumer.nack(&again).await;
        let mut dead = anonymous(broker.addr).await;
        dead.subscribe("d", &dlq, "auto").await;
        let m = dead.recv_within(DUE).await;
        assert_eq!(m.body_str(), "m", "{hostile}");
        assert_eq!(
            m.get("dlq-reason"),
            Some("max-deliveries"),
            "{hostile}: {m:?}"
        );
        assert_eq!(verdicts(&broker, "fallback").await, 2.0, "{hostile}");
    }
}

#[tokio::test]
async fn without_a_redeliver_plugin_a_nack_redelivers_at_once() {
    // The backoff plugin serves only /queue/retry.*: other queues keep the built-in policy.
    let config = backoff_config("[5000]", "");
    let broker = start_with_status(&config.path);
    let queue = format!("/queue/{}", unique("plain"));
    let mut consumer = anonymous(broker.addr).await;
    consumer.subscribe("c", &queue, "client-individual").await;
    let mut sender = anonymous(broker.addr).await;
    sender.send_r(&queue, "m").await;
    let first = consumer.msg().await;
    consumer.nack(&first).await;
    let again = consumer.recv_within(Duration::from_secs(2)).await;
    assert_eq!(again.body_str(), "m");
    assert_eq!(again.get("redelivered"), Some("true"));
    for verdict in [
        "redeliver",
        "redeliver_after",
        "dead_letter",
        "drop",
        "fallback",
    ] {
        assert_eq!(verdicts(&broker, verdict).await, 0.0, "{verdict}");
    }
}

/// A persistent message waiting out a redeliver plugin's delay stays journaled in its queue:
/// after a kill -9 it is back, delivered at once (the delay is not journaled).
#[tokio::test]
async fn a_persistent_message_waiting_out_a_delay_survives_a_crash() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = backoff_config("[60000]", "");
    let data_dir = data.path().to_str().expect("UTF-8 path");
    let mut broker = start_with_status_args(&config.path, &["--data-dir", data_dir]);
    let queue = format!("/queue/retry.{}", unique("crash"));
    let mut consumer = anonymous(broker.addr).await;
    consumer.subscribe("c", &queue, "client-individual").await;
    let mut sender = anonymous(broker.addr).await;
    sender
        .roundtrip(send_frame(&queue, &[("persistent", "true")], "durable"))
        .await;
    let m = consumer.msg().await;
    nack_with_error(&mut consumer, &m, "boom").await;
    consumer.expect_silence(QUIET_TIME).await;
    assert_eq!(verdicts(&broker, "redeliver_after").await, 1.0);
    broker.kill_hard();

    let broker = start_with_status_args(&config.path, &["--data-dir", data_dir]);
    let mut consumer = anonymous(broker.addr).await;
    consumer.subscribe("c", &queue, "client-individual").await;
    let back = consumer.recv_within(DUE).await;
    assert_eq!(back.body_str(), "durable");
    assert_eq!(back.get("redelivered"), Some("true"), "{back:?}");
}

/// A NACK inside a transaction reaches the hook at COMMIT with its own headers (the consumer's
/// error becomes the `dlq-reason`), and a traced plugin records the redeliver decision.
#[tokio::test]
async fn a_transactional_nack_carries_its_headers_and_the_decision_is_traced() {
    const TOKEN: &str = "redeliver-trace-token-0123456789";
    let config = temp_config(&format!(
        r#"admin_listen = "127.0.0.1:0"
admin_token = "{TOKEN}"
[[plugins]]
name = "backoff"
file = "{}"
hooks = ["redeliver"]
destinations = ["/queue/retry.*"]
trace_sample = 1.0
[plugins.config]
delays_ms = []
"#,
        plugin("backoff")
    ));
    let broker = start_with_status(&config.path);
    let queue = format!("/queue/retry.{}", unique("txnack"));
    let dlq = queue.replacen("/queue/", "/queue/DLQ.", 1);
    let mut consumer = anonymous(broker.addr).await;
    consumer.subscribe("c", &queue, "client-individual").await;
    let mut sender = anonymous(broker.addr).await;
    sender.send_r(&queue, "poison").await;
    let m = consumer.msg().await;

    consumer
        .roundtrip(Frame::new("BEGIN").h("transaction", "tx"))
        .await;
    let nack = consumer
        .ack_frame("NACK", &m)
        .h("transaction", "tx")
        .h("error", "bad payload");
    consumer.write(&nack).await;
    consumer
        .roundtrip(Frame::new("COMMIT").h("transaction", "tx"))
        .await;

    let mut dead = anonymous(broker.addr).await;
    dead.subscribe("d", &dlq, "auto").await;
    let dead_letter = dead.recv_within(DUE).await;
    assert_eq!(dead_letter.body_str(), "poison");
    assert_eq!(
        dead_letter.get("dlq-reason"),
        Some("bad payload"),
        "{dead_letter:?}"
    );

    let answer = plugboard::http::client::request(
        broker.admin(),
        Some(TOKEN),
        "GET",
        "/api/plugins/traces?plugin=backoff&limit=10",
        None,
    )
    .await
    .expect("the admin listener answers");
    assert_eq!(answer.code, 200, "{:?}", answer.body);
    let decisions = answer.body["plugins"][0]["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let decision = &decisions[0];
    assert_eq!(decision["hook"], "redeliver", "{decision}");
    assert_eq!(decision["destination"], queue.as_str(), "{decision}");
    let verdict = decision["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict.starts_with("nacked, 1 deliveries: dead-letter to /queue/DLQ."),
        "{verdict}"
    );
    assert!(verdict.ends_with("(bad payload)"), "{verdict}");
    assert!(decision["message_id"].as_str().is_some(), "{decision}");
}
