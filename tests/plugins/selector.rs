//! MESSAGE filtering by the demo's selector plugin (on every destination).

use std::collections::BTreeSet;

use crate::support::*;
use plugboard_test_support::stomp::{unique, Client, Frame, RecvError, QUIET};

/// A message of `/topic/t`-style tests: headers `type` and `n` (when given) and a body naming it.
fn typed(dest: &str, i: usize, kind: Option<&str>, n: Option<&str>) -> Frame {
    let mut headers = Vec::new();
    if let Some(kind) = kind {
        headers.push(("type", kind));
    }
    if let Some(n) = n {
        headers.push(("n", n));
    }
    send_frame(dest, &headers, &format!("m{i}"))
}

#[tokio::test]
async fn a_topic_subscriber_gets_only_matching_messages() {
    let broker = PluginBroker::start(&demo_config());
    let mut filtered = alice(broker.addr).await;
    filtered
        .subscribe_with(
            "s",
            "/topic/t",
            "auto",
            &[("selector", "type = 'a' AND n > 5")],
        )
        .await;
    let mut everything = alice(broker.addr).await;
    everything.subscribe("all", "/topic/t", "auto").await;

    // (type, n, matches): numeric-looking values compare as numbers ("10" > 5 although
    // "10" < "5" as strings); a missing or non-numeric n is not > 5.
    let cases: [(Option<&str>, Option<&str>, bool); 10] = [
        (Some("a"), Some("6"), true),
        (Some("a"), Some("5"), false),
        (Some("b"), Some("10"), false),
        (Some("a"), Some("10"), true),
        (Some("a"), Some("5.5"), true),
        (Some("a"), Some("abc"), false),
        (Some("a"), None, false),
        (None, Some("9"), false),
        (Some("A"), Some("9"), false),
        (Some("a"), Some("1e3"), true),
    ];
    let mut sender = alice(broker.addr).await;
    for (i, (kind, n, _)) in cases.iter().enumerate() {
        sender.roundtrip(typed("/topic/t", i, *kind, *n)).await;
    }
    let expected: Vec<String> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.2)
        .map(|(i, _)| format!("m{i}"))
        .collect();
    let got: Vec<String> = filtered
        .msgs(expected.len())
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    assert_eq!(
        got, expected,
        "selector `type = 'a' AND n > 5` (cases {cases:?})"
    );
    filtered.expect_silence(QUIET).await;
    // A subscriber without a selector is not filtered.
    let all = everything.msgs(cases.len()).await;
    assert_eq!(all.len(), cases.len());
    everything.expect_silence(QUIET).await;
}

#[tokio::test]
async fn selector_operators_over_tcp() {
    let broker = PluginBroker::start(&demo_config());
    let dest = format!("/topic/{}", unique("ops"));
    // Each selector with the bodies (of the messages below) it must receive.
    let selectors: [(&str, &[&str]); 6] = [
        ("type IN ('a', 'c')", &["m0", "m2"]),
        ("type LIKE 'a%' OR n BETWEEN 20 AND 30", &["m0", "m1", "m3"]),
        ("n IS NULL", &["m4"]),
        ("NOT (type = 'a') AND n IS NOT NULL", &["m1", "m2", "m3"]),
        ("n <> 7", &["m1", "m2", "m3"]),
        ("\"type\" = 'ab'", &["m3"]),
    ];
    let mut subs = Vec::new();
    for (i, (selector, _)) in selectors.iter().enumerate() {
        let mut c = alice(broker.addr).await;
        c.subscribe_with(&format!("s{i}"), &dest, "auto", &[("selector", selector)])
            .await;
        subs.push(c);
    }
    let messages = [
        (Some("a"), Some("7")),
        (Some("b"), Some("25")),
        (Some("c"), Some("1")),
        (Some("ab"), Some("-3")),
        (Some("z"), None),
    ];
    let mut sender = alice(broker.addr).await;
    for (i, (kind, n)) in messages.iter().enumerate() {
        sender.roundtrip(typed(&dest, i, *kind, *n)).await;
    }
    for ((selector, expected), c) in selectors.iter().zip(subs.iter_mut()) {
        let got: Vec<String> = c
            .msgs(expected.len())
            .await
            .iter()
            .map(|m| m.body_str().to_string())
            .collect();
        assert_eq!(got, *expected, "selector {selector:?}");
        c.expect_silence(QUIET).await;
    }
}

/// Reads whatever arrives on either client until `total` MESSAGEs were read (bounded).
async fn collect_two(a: &mut Client, b: &mut Client, total: usize) -> (Vec<Frame>, Vec<Frame>) {
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while got_a.len() + got_b.len() < total {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {total} messages arrived within 10 s: a got {:?}, b got {:?}",
            got_a.len() + got_b.len(),
            bodies(&got_a),
            bodies(&got_b)
        );
        for (c, got) in [(&mut *a, &mut got_a), (&mut *b, &mut got_b)] {
            match c.try_recv(std::time::Duration::from_millis(50)).await {
                Ok(f) => {
                    assert!(f.is("MESSAGE"), "expected MESSAGE, got {f:?}");
                    got.push(f);
                }
                Err(RecvError::Timeout) => {}
                Err(e) => panic!("consumer connection failed: {e:?}"),
            }
        }
    }
    (got_a, got_b)
}

fn bodies(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|m| m.body_str().to_string()).collect()
}

#[tokio::test]
async fn on_a_queue_messages_a_selector_skips_go_to_the_other_consumer() {
    let broker = PluginBroker::start(&demo_config());
    let queue = format!("/queue/{}", unique("sel"));
    let mut picky = alice(broker.addr).await;
    picky
        .subscribe_with("picky", &queue, "auto", &[("selector", "type = 'a'")])
        .await;
    let mut any = alice(broker.addr).await;
    any.subscribe("any", &queue, "auto").await;

    let mut sender = alice(broker.addr).await;
    let total = 20;
    for i in 0..total {
        let kind = if i % 2 == 0 { "a" } else { "b" };
        sender.roundtrip(typed(&queue, i, Some(kind), None)).await;
    }
    let (got_picky, got_any) = collect_two(&mut picky, &mut any, total).await;
    for m in &got_picky {
        assert_eq!(
            m.get("type"),
            Some("a"),
            "the selector consumer got a non-matching message: {m:?}"
        );
    }
    let mut all: Vec<String> = bodies(&got_picky);
    all.extend(bodies(&got_any));
    let unique_bodies: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique_bodies.len(), all.len(), "duplicates: {all:?}");
    let expected: BTreeSet<String> = (0..total).map(|i| format!("m{i}")).collect();
    assert_eq!(
        unique_bodies.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "every message is delivered once (picky {:?}, any {:?})",
        bodies(&got_picky),
        bodies(&got_any)
    );
    picky.expect_silence(QUIET).await;
    any.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_queue_message_no_consumer_selects_waits_for_one_that_does() {
    let broker = PluginBroker::start(&demo_config());
    let queue = format!("/queue/{}", unique("sel-wait"));
    let mut picky = alice(broker.addr).await;
    picky
        .subscribe_with("picky", &queue, "auto", &[("selector", "type = 'a'")])
        .await;
    let mut sender = alice(broker.addr).await;
    sender.roundtrip(typed(&queue, 0, Some("b"), None)).await;
    sender.roundtrip(typed(&queue, 1, Some("a"), None)).await;
    let m = picky.msg().await;
    assert_eq!(m.body_str(), "m1", "{m:?}");
    picky.expect_silence(QUIET).await;
    // The skipped message is still in the queue for a consumer that takes it.
    let mut any = alice(broker.addr).await;
    any.subscribe("any", &queue, "auto").await;
    let m = any.msg().await;
    assert_eq!(
        m.body_str(),
        "m0",
        "the skipped message must not be lost: {m:?}"
    );
    any.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_malformed_selector_is_refused_with_the_column() {
    let broker = PluginBroker::start(&demo_config());
    for (selector, receipt) in [
        ("type = ", Some("sub-bad")),
        ("type = 'a' AND", None),
        ("n > > 5", Some("r2")),
    ] {
        let mut c = alice(broker.addr).await;
        let mut f = Frame::new("SUBSCRIBE")
            .h("id", "0")
            .h("destination", "/topic/t")
            .h("selector", selector);
        if let Some(r) = receipt {
            f = f.h("receipt", r);
        }
        c.write(&f).await;
        let err = c.expect_error_close().await;
        let message = err.must("message");
        assert!(
            message.contains("selector") && message.contains("column"),
            "{selector:?}: the ERROR must say where the selector is wrong: {err:?}"
        );
        assert_eq!(err.get("receipt-id"), receipt, "{selector:?}: {err:?}");
    }
    // The broker carries on.
    let mut c = alice(broker.addr).await;
    c.subscribe_with("ok", "/topic/t", "auto", &[("selector", "type = 'a'")])
        .await;
    c.disconnect().await;
}

// Queue messages a consumer's filter skips keep their place (publish order): they were never
// delivered. Regression test: they used to be put back at the head one by one, so m0, m1, m3
// skipped reached the next consumer as m3, m1, m0.
#[tokio::test]
async fn skipped_queue_messages_free_the_window_and_keep_their_order() {
    let broker = PluginBroker::start(&demo_config());
    let queue = format!("/queue/{}", unique("sel-window"));
    let mut picky = alice(broker.addr).await;
    picky
        .subscribe_with(
            "picky",
            &queue,
            "client-individual",
            &[("selector", "type = 'a'"), ("prefetch-count", "1")],
        )
        .await;
    let mut sender = alice(broker.addr).await;
    for (i, kind) in ["b", "b", "a", "b", "a"].iter().enumerate() {
        sender.roundtrip(typed(&queue, i, Some(kind), None)).await;
    }
    let m = picky.msg().await;
    assert_eq!(m.body_str(), "m2", "{m:?}");
    picky.expect_silence(QUIET).await; // window of 1, unacked
    picky.ack(&m).await;
    let m = picky.msg().await;
    assert_eq!(m.body_str(), "m4", "{m:?}");
    picky.ack(&m).await;
    picky.expect_silence(QUIET).await;
    // The b's are all still there, in order.
    let mut any = alice(broker.addr).await;
    any.subscribe("any", &queue, "auto").await;
    let rest = any.msgs(3).await;
    for m in &rest {
        assert_eq!(m.get("redelivered"), None, "never delivered before: {m:?}");
    }
    assert_eq!(
        bodies(&rest),
        ["m0", "m1", "m3"],
        "skipped messages keep their order"
    );
}

#[tokio::test]
async fn a_repeated_header_is_judged_by_its_first_value() {
    let broker = PluginBroker::start(&demo_config());
    let mut c = alice(broker.addr).await;
    c.subscribe_with("s", "/topic/rep", "auto", &[("selector", "type = 'a'")])
        .await;
    let mut sender = alice(broker.addr).await;
    sender
        .roundtrip(send_frame(
            "/topic/rep",
            &[("type", "b"), ("type", "a")],
            "ba",
        ))
        .await;
    sender
        .roundtrip(send_frame(
            "/topic/rep",
            &[("type", "a"), ("type", "b")],
            "ab",
        ))
        .await;
    let m = c.msg().await;
    assert_eq!(m.body_str(), "ab", "{m:?}");
    assert_eq!(m.all("type"), ["a", "b"], "repeats are passed on: {m:?}");
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn on_a_topic_skipped_messages_do_not_use_up_a_client_ack_window() {
    let broker = PluginBroker::start(&demo_config());
    let topic = format!("/topic/{}", unique("sel-window"));
    let mut picky = alice(broker.addr).await;
    picky
        .subscribe_with(
            "picky",
            &topic,
            "client-individual",
            &[("selector", "type = 'a'"), ("prefetch-count", "1")],
        )
        .await;
    let mut sender = alice(broker.addr).await;
    for (i, kind) in ["b", "a", "b", "b", "a"].iter().enumerate() {
        sender.roundtrip(typed(&topic, i, Some(kind), None)).await;
    }
    let m = picky.msg().await;
    assert_eq!(m.body_str(), "m1", "{m:?}");
    picky.ack(&m).await;
    let m = picky.msg().await;
    assert_eq!(m.body_str(), "m4", "{m:?}");
    picky.ack(&m).await;
    picky.expect_silence(QUIET).await;
}

/// With the selector plugin loaded, the broker's native selector judges each delivery first:
/// a message it declines never reaches the plugin, and what it lets through the plugin judges
/// again (the same code, so the same answer); a selector both refuse is refused by the broker,
/// before the plugin is asked.
#[tokio::test]
async fn with_the_plugin_loaded_the_native_selector_judges_first() {
    let config = temp_config(&format!(
        r#"
admin_listen = "127.0.0.1:0"

[[plugins]]
name = "selector"
file = "{}"
hooks = ["message"]
destinations = ["*"]
"#,
        plugin("selector")
    ));
    let broker = start_with_status(&config.path);
    let queue = format!("/queue/{}", unique("both"));
    let mut c = anonymous(broker.addr).await;
    c.subscribe_with("s", &queue, "auto", &[("selector", "type = 'a'")])
        .await;
    // `prepare-subscription` was one call.
    let base = plugin_calls(&broker, "selector").await;
    assert!(base >= 1);
    let mut sender = anonymous(broker.addr).await;
    for i in 0..5 {
        sender.roundtrip(typed(&queue, i, Some("b"), None)).await;
    }
    c.expect_silence(QUIET).await;
    assert_eq!(
        plugin_calls(&broker, "selector").await,
        base,
        "declined by the native selector: the plugin was not called"
    );
    sender.roundtrip(typed(&queue, 5, Some("a"), None)).await;
    assert_eq!(c.msg().await.body_str(), "m5");
    assert_eq!(
        plugin_calls(&broker, "selector").await,
        base + 1,
        "what the native selector lets through, the plugin judges too"
    );

    // A malformed selector: the broker's refusal (the plugin's `prepare-subscription` is not
    // called; it would count as a call).
    let mut bad = anonymous(broker.addr).await;
    bad.write(
        &Frame::new("SUBSCRIBE")
            .h("id", "x")
            .h("destination", &queue)
            .h("selector", "type = "),
    )
    .await;
    let err = bad.expect_error_close().await;
    assert!(
        err.must("message").contains("selector: column 8"),
        "{err:?}"
    );
    assert_eq!(plugin_calls(&broker, "selector").await, base + 1);
}
