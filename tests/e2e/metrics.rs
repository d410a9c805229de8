//! `GET /metrics` after real traffic: every value is checked against what the test did, the
//! exposition is parsed strictly (`plugboard_test_support::metrics`), and the cap on labelled
//! destinations folds the rest into `other`. Also `--log-format json`.

use std::time::{Duration, Instant};

use plugboard_test_support::broker::{Broker as Process, Launch};
use plugboard_test_support::metrics::{scrape, Scrape};
use plugboard_test_support::BrokerBinary;

use crate::harness::*;
use crate::Plugboard;

/// A broker with an admin listener and `extra` config.
fn broker(extra: &str) -> Process {
    Launch::config_text(
        Plugboard::PATH,
        &format!("admin_listen = \"127.0.0.1:0\"\n{extra}"),
    )
    .status_line()
    .start()
}

/// Scrapes until `check` holds (deliveries and acks settle asynchronously), or fails with the
/// last scrape.
async fn eventually(broker: &Process, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = scrape(broker.admin(), None).await;
        if check(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within 20 s: {scrape:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn queue_value(scrape: &Scrape, metric: &str, queue: &str) -> f64 {
    scrape.value(metric, &[("vhost", "/"), ("queue", queue)])
}

#[tokio::test]
async fn queue_series_follow_sends_deliveries_and_acks() {
    let broker = broker("");
    let dest = format!("/queue/{}", unique("metrics"));
    let mut producer = Client::connect(broker.addr, Version::V12).await;
    for i in 0..10 {
        producer.send(&dest, &format!("m{i}")).await;
    }
    producer.sync().await;
    let scrape = eventually(&broker, "10 ready", |s| {
        s.matching("plugboard_queue_messages_ready", &[("queue", &dest)])
            .first()
            .is_some_and(|(_, v)| *v == 10.0)
    })
    .await;
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_messages_published_total", &dest),
        10.0
    );
    assert!(queue_value(&scrape, "plugboard_queue_messages_bytes", &dest) > 0.0);
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_consumers", &dest),
        0.0
    );

    // A consumer with a window of 4 takes 4 and acks 3: 3 more are delivered in their place.
    let mut consumer = Client::connect(broker.addr, Version::V12).await;
    consumer
        .subscribe_with("s", &dest, "client-individual", &[("prefetch-count", "4")])
        .await;
    let first = consumer.msgs(4).await;
    for message in &first[..3] {
        consumer.ack(message).await;
    }
    consumer.sync().await;
    let scrape = eventually(&broker, "3 acked", |s| {
        s.value("plugboard_queue_messages_acked_total", &[("queue", &dest)]) == 3.0
            && s.value(
                "plugboard_queue_messages_delivered_total",
                &[("queue", &dest)],
            ) == 7.0
    })
    .await;
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_messages_ready", &dest),
        3.0
    );
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_messages_unacked", &dest),
        4.0
    );
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_consumers", &dest),
        1.0
    );
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_messages_redelivered_total", &dest),
        0.0
    );

    // The consumer vanishes: its 4 unacked come back, and are redelivered to the next one.
    consumer.drop_abruptly();
    let mut drain = Client::connect(broker.addr, Version::V12).await;
    drain.subscribe("d", &dest, "auto").await;
    drain.msgs(7).await;
    let scrape = eventually(&broker, "all consumed", |s| {
        s.value("plugboard_queue_messages_acked_total", &[("queue", &dest)]) == 10.0
    })
    .await;
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_messages_ready", &dest),
        0.0
    );
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_messages_unacked", &dest),
        0.0
    );
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_messages_delivered_total", &dest),
        14.0
    );
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_messages_redelivered_total", &dest),
        4.0
    );
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_messages_bytes", &dest),
        0.0
    );
    assert_eq!(
        scrape.value(
            "plugboard_queue_messages_dead_lettered_total",
            &[("queue", &dest), ("reason", "expired")]
        ),
        0.0
    );
}

#[tokio::test]
async fn dead_lettering_is_counted_by_reason() {
    let broker = broker("[dead_letter]\nmax_deliveries = 1\n");
    let dest = format!("/queue/{}", unique("dl"));
    let mut c = Client::connect(broker.addr, Version::V12).await;
    c.subscribe("s", &dest, "client-individual").await;
    c.send_r(&dest, "poison").await;
    let m = c.msg().await;
    c.nack(&m).await;
    c.sync().await;
    let scrape = eventually(&broker, "dead-lettered", |s| {
        s.value(
            "plugboard_queue_messages_dead_lettered_total",
            &[("queue", &dest), ("reason", "max-deliveries")],
        ) == 1.0
    })
    .await;
    let dlq = dest.replace("/queue/", "/queue/DLQ.");
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_messages_ready", &dlq),
        1.0
    );
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_messages_published_total", &dlq),
        1.0
    );
}

#[tokio::test]
async fn topic_series_count_subscribers_and_copies() {
    let broker = broker("");
    let topic = format!("/topic/{}", unique("t"));
    let mut subscriber = Client::connect(broker.addr, Version::V12).await;
    subscriber.subscribe("s", &topic, "auto").await;
    let mut producer = Client::connect(broker.addr, Version::V12).await;
    for i in 0..3 {
        producer.send(&topic, &format!("m{i}")).await;
    }
    producer.sync().await;
    subscriber.msgs(3).await;
    let labels = [("vhost", "/"), ("topic", topic.as_str())];
    let scrape = eventually(&broker, "3 delivered", |s| {
        s.value("plugboard_topic_messages_delivered_total", &labels) == 3.0
    })
    .await;
    assert_eq!(scrape.value("plugboard_topic_subscribers", &labels), 1.0);
    assert_eq!(
        scrape.value("plugboard_topic_messages_published_total", &labels),
        3.0
    );
    assert_eq!(
        scrape.value("plugboard_topic_messages_dropped_total", &labels),
        0.0
    );
    assert_eq!(scrape.value("plugboard_topics", &[]), 1.0);
}

#[tokio::test]
async fn connections_are_counted_by_listener_and_closes_by_reason() {
    let broker = broker("");
    let scrape = scrape(broker.admin(), None).await;
    assert_eq!(scrape.value("plugboard_connections_opened_total", &[]), 0.0);

    let polite = Client::connect(broker.addr, Version::V12).await;
    let mut rude = Client::connect(broker.addr, Version::V12).await;
    let scrape = eventually(&broker, "2 open", |s| {
        s.matching("plugboard_connections", &[("listener", "tcp")])
            .first()
            .is_some_and(|(_, v)| *v == 2.0)
    })
    .await;
    assert_eq!(scrape.value("plugboard_connections_opened_total", &[]), 2.0);

    polite.disconnect().await;
    // An ACK of nothing: a well-formed frame the broker refuses with an ERROR.
    rude.write(&Frame::new("ACK").h("id", "nothing-pending"))
        .await;
    rude.expect_error_close().await;
    let scrape = eventually(&broker, "both closed", |s| {
        s.value("plugboard_connections", &[("listener", "tcp")]) == 0.0
    })
    .await;
    let closed = |reason| scrape.value("plugboard_connections_closed_total", &[("reason", reason)]);
    assert_eq!(closed("client"), 1.0);
    assert_eq!(closed("error"), 1.0);
    assert_eq!(closed("heart-beat"), 0.0);
    assert_eq!(
        scrape.value("plugboard_errors_total", &[("kind", "refused")]),
        1.0
    );
    let errors: f64 = scrape
        .matching("plugboard_errors_total", &[])
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(errors, 1.0, "one ERROR in all");
    assert_eq!(
        scrape.value(
            "plugboard_error_codes_total",
            &[("code", "protocol.unknown-ack")]
        ),
        1.0
    );
    assert!(scrape.value("plugboard_connection_incoming_bytes_total", &[]) > 0.0);
    assert!(scrape.value("plugboard_connection_outgoing_bytes_total", &[]) > 0.0);
    assert!(scrape.value("plugboard_memory_limit_bytes", &[]) > 0.0);
    assert_eq!(scrape.value("plugboard_producers_paused", &[]), 0.0);
}

#[tokio::test]
async fn a_silent_client_is_closed_for_its_heart_beats() {
    let broker =
        broker("[heartbeat]\nsend_min_ms = 100\nreceive_min_ms = 150\ngrace_factor = 2.0\n");
    let connect = Client::connect_frame(Version::V12).h("heart-beat", "100,0");
    let (mut silent, reply) = Client::connect_with(broker.addr, connect).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    silent.expect_closed().await;
    let scrape = eventually(&broker, "closed", |s| {
        s.value(
            "plugboard_connections_closed_total",
            &[("reason", "heart-beat")],
        ) == 1.0
    })
    .await;
    assert_eq!(
        scrape.value("plugboard_errors_total", &[("kind", "heart-beat")]),
        1.0
    );
    assert_eq!(
        scrape.value("plugboard_connections_closed_total", &[("reason", "error")]),
        0.0
    );
}

#[tokio::test]
async fn destinations_past_the_cap_are_summed_into_other() {
    let broker = broker("[metrics]\nmax_labelled_destinations = 2\n");
    let prefix = unique("cap");
    let mut producer = Client::connect(broker.addr, Version::V12).await;
    // Queue names sort a < b < c < d: a and b keep their labels, c and d become `other`.
    for (name, count) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        for _ in 0..count {
            producer.send(&format!("/queue/{prefix}-{name}"), "x").await;
        }
    }
    producer.sync().await;
    let scrape = eventually(&broker, "4 queues", |s| {
        s.value("plugboard_queues", &[]) == 4.0
            && s.value(
                "plugboard_queue_messages_published_total",
                &[("queue", "other")],
            ) == 7.0
    })
    .await;
    assert_eq!(
        scrape.label_values("plugboard_queue_messages_ready", "queue"),
        vec![
            format!("/queue/{prefix}-a"),
            format!("/queue/{prefix}-b"),
            "other".to_string()
        ]
    );
    assert_eq!(
        queue_value(&scrape, "plugboard_queue_messages_ready", "other"),
        7.0
    );
    assert_eq!(
        queue_value(
            &scrape,
            "plugboard_queue_messages_ready",
            &format!("/queue/{prefix}-b")
        ),
        2.0
    );
}

#[tokio::test]
async fn the_store_counts_fsyncs_and_times_them() {
    let broker = broker("[store]\nfsync = \"batch\"\n");
    let dest = format!("/queue/{}", unique("durable"));
    let mut producer = Client::connect(broker.addr, Version::V12).await;
    for i in 0..3 {
        let frame = send_frame(&dest, &[("persistent", "true")], &format!("m{i}"));
        let receipt = producer.next_receipt();
        producer.write(&frame.h("receipt", &receipt)).await;
        producer.wait_receipt(&receipt).await;
    }
    let scrape = eventually(&broker, "fsynced", |s| {
        s.value("plugboard_store_fsyncs_total", &[]) >= 1.0
    })
    .await;
    assert!(scrape.value("plugboard_store_fsync_duration_seconds_count", &[]) >= 1.0);
    assert!(scrape.value("plugboard_store_records_per_fsync_sum", &[]) >= 3.0);
    assert!(scrape.value("plugboard_store_live_bytes", &[]) > 0.0);
    assert!(scrape.value("plugboard_store_journal_bytes", &[]) > 0.0);
    assert_eq!(scrape.value("plugboard_store_live_messages", &[]), 3.0);
    assert_eq!(
        scrape.types["plugboard_store_fsync_duration_seconds"],
        "histogram"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_connection_events() {
    let broker = Launch::config_text(Plugboard::PATH, "")
        .args(&["--log-format", "json"])
        .start();
    let mut client = Client::connect(broker.addr, Version::V12).await;
    client
        .write(&Frame::new("ACK").h("id", "nothing-pending"))
        .await;
    client.expect_error_close().await;
    broker.wait_log_line(&["connection closed"], T);
    let events: Vec<serde_json::Value> = broker
        .log()
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {e}: {line:?}"))
        })
        .collect();
    let find = |message: &str| {
        events
            .iter()
            .find(|e| e["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} event in {events:#?}"))
    };
    for event in &events {
        assert!(
            event["timestamp"].is_string() && event["level"].is_string(),
            "{event}"
        );
    }
    let opened = find("connection opened");
    assert_eq!(opened["level"], "INFO");
    assert_eq!(opened["span"]["via"], "tcp", "{opened}");
    assert!(opened["span"]["peer"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let error = find("ERROR sent");
    assert_eq!(error["fields"]["kind"], "refused", "{error}");
    assert!(error["fields"]["error"].is_string(), "{error}");
    let closed = find("connection closed");
    assert_eq!(closed["fields"]["reason"], "error", "{closed}");
    // Every line a session logs names its connection, the same one.
    for event in [error, closed] {
        assert_eq!(event["span"], opened["span"], "{event}");
    }
    assert_eq!(opened["span"]["name"], "conn", "{opened}");
}

#[tokio::test]
async fn the_docs_and_the_dashboard_name_only_metrics_that_exist() {
    let broker = broker("");
    let scrape = scrape(broker.admin(), None).await;
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let dashboard = std::fs::read_to_string(docs.join("grafana-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("valid dashboard JSON");
    let operations = std::fs::read_to_string(docs.join("operations.md")).unwrap();
    let mut named = 0;
    for text in [&dashboard, &operations] {
        for start in text.match_indices("plugboard_").map(|(i, _)| i) {
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            if family == "plugboard_" || family.ends_with('_') {
                continue; // the prefix itself, in prose
            }
            assert!(
                scrape.types.contains_key(family),
                "{name} is named in the docs or dashboard but not served"
            );
            named += 1;
        }
    }
    assert!(named > 50, "{named}");
}
