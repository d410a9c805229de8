//! SEND transform: the demo's redact plugin masks `card` on /queue/payments.

use crate::support::*;
use plugboard_test_support::stomp::{Frame, QUIET};

const CARD: &str = "4111 1111 1111 1111";

/// A SEND to /queue/payments with a `content-length` (which the masked body must not keep).
fn payment(body: &str, content_type: &str) -> Frame {
    Frame::new("SEND")
        .h("destination", "/queue/payments")
        .h("content-type", content_type)
        .body_cl(body.as_bytes().to_vec())
}

#[tokio::test]
async fn card_digits_never_reach_the_subscriber() {
    let broker = PluginBroker::start(&demo_config());
    let mut sub = alice(broker.addr).await;
    sub.subscribe("pay", "/queue/payments", "auto").await;
    let mut sender = alice(broker.addr).await;
    let body = format!(r#"{{"card":"{CARD}","amount":12}}"#);
    sender
        .roundtrip(payment(&body, "application/json").h("order-id", "o-7"))
        .await;

    let m = sub.msg().await;
    assert_eq!(m.must("destination"), "/queue/payments", "{m:?}");
    assert_eq!(m.get("order-id"), Some("o-7"), "other headers kept: {m:?}");
    let lengths = m.all("content-length");
    assert_eq!(
        lengths,
        [m.body.len().to_string()],
        "one content-length, matching the rewritten body: {m:?}"
    );
    assert_eq!(m.all("content-type"), ["application/json"], "{m:?}");
    let text = m.body_str();
    assert!(!text.contains("4111"), "card digits leaked: {text}");
    let json: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"));
    let card = json["card"]
        .as_str()
        .unwrap_or_else(|| panic!("`card` is still a string field: {text}"));
    assert!(
        !card.bytes().any(|b| b.is_ascii_digit()),
        "no digit of the card may reach the subscriber: {text}"
    );
    assert_eq!(
        json["amount"],
        serde_json::json!(12),
        "amount untouched: {text}"
    );
    assert_eq!(
        json.as_object().map(|o| o.len()),
        Some(2),
        "no field added or removed: {text}"
    );
    sub.expect_silence(QUIET).await;
}

#[tokio::test]
async fn json_with_a_charset_is_masked_other_content_is_untouched() {
    let broker = PluginBroker::start(&demo_config());
    let mut sub = alice(broker.addr).await;
    sub.subscribe("pay", "/queue/payments", "auto").await;
    let mut sender = alice(broker.addr).await;

    // A parameter on the content type still makes it JSON.
    let body = format!(r#"{{"amount":3,"card":"{CARD}","note":"ok"}}"#);
    sender
        .roundtrip(payment(&body, "application/json; charset=utf-8"))
        .await;
    let m = sub.msg().await;
    assert!(!m.body_str().contains("4111"), "card leaked: {m:?}");
    let json: serde_json::Value = serde_json::from_str(m.body_str()).expect("JSON");
    assert_eq!(json["amount"], serde_json::json!(3), "{m:?}");
    assert_eq!(json["note"], serde_json::json!("ok"), "{m:?}");
    assert_eq!(m.must("content-length"), m.body.len().to_string(), "{m:?}");

    // Not JSON: passed on byte for byte.
    let plain = "card 4111 1111 1111 1111 (text, not JSON)";
    sender.roundtrip(payment(plain, "text/plain")).await;
    let m = sub.msg().await;
    assert_eq!(m.body_str(), plain, "{m:?}");

    // Other destinations are not transformed.
    sub.subscribe("other", "/queue/payments-archive", "auto")
        .await;
    let body = format!(r#"{{"card":"{CARD}"}}"#);
    sender
        .roundtrip(send_frame(
            "/queue/payments-archive",
            &[("content-type", "application/json")],
            &body,
        ))
        .await;
    let m = sub.msg().await;
    assert_eq!(m.body_str(), body, "{m:?}");
    sub.expect_silence(QUIET).await;
}

#[tokio::test]
async fn deliver_mode_masks_per_subscriber_except_exempt_groups() {
    // The demo's users, and redact on MESSAGE for /topic/public.* with `admins` exempt.
    let auth = demo_auth();
    let config = temp_config(&format!(
        r#"{auth}
[[plugins]]
name = "redact-deliver"
file = "{}"
hooks = ["message"]
destinations = ["/topic/public.*"]

[plugins.config]
fields = ["card"]
mode = "deliver"
mask = "[masked]"
exempt_groups = ["admins"]
"#,
        plugin("redact")
    ));
    let broker = PluginBroker::start(&config.path);
    let mut admin = alice(broker.addr).await;
    admin.subscribe("a", "/topic/public.pay", "auto").await;
    let mut reader = bob(broker.addr).await;
    reader.subscribe("b", "/topic/public.pay", "auto").await;
    let mut sender = alice(broker.addr).await;
    let body = format!(r#"{{"amount":5,"card":"{CARD}"}}"#);
    sender
        .roundtrip(
            Frame::new("SEND")
                .h("destination", "/topic/public.pay")
                .h("content-type", "application/json")
                .body_cl(body.as_bytes().to_vec()),
        )
        .await;
    let m = admin.msg().await;
    assert_eq!(m.body_str(), body, "admins are exempt: {m:?}");
    assert_eq!(m.all("content-length"), [body.len().to_string()], "{m:?}");
    let m = reader.msg().await;
    let json: serde_json::Value = serde_json::from_str(m.body_str()).expect("JSON");
    assert_eq!(json["card"], serde_json::json!("[masked]"), "{m:?}");
    assert_eq!(json["amount"], serde_json::json!(5), "{m:?}");
    assert_eq!(m.all("content-length"), [m.body.len().to_string()], "{m:?}");
    admin.expect_silence(QUIET).await;
    reader.expect_silence(QUIET).await;
}
