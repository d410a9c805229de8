//! Plugin decision traces end to end: header-router traced at sample 1.0 (its rule notes and
//! the message ids read back over `GET /api/plugins/traces`), a live switch off → on → off that
//! survives a hot reload, the action rule of `POST /api/plugins/trace`, the WIT 0.1.2 `context`
//! import (probe), a plugin built against WIT 0.1.1 (legacy-router), and `plugboard plugin
//! trace` against a running broker.

use std::time::{Duration, Instant};

use plugboard::http::client::{request, Answer};
use plugboard_test_support::stomp::Frame;
use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "trace-test-token-0123456789";

/// header-router on `/queue/orders` as the demo has it, traced at `sample`.
fn router_config(sample: f64, extra_rule: &str) -> String {
    format!(
        r#"
admin_listen = "127.0.0.1:0"
admin_token = "{TOKEN}"

[[plugins]]
name = "router"
file = "{}"
hooks = ["send"]
destinations = ["/queue/orders"]
trace_sample = {sample}

[[plugins.config.rules]]
destination = "/queue/orders"
header = "region"
value = "eu"
to = ["/queue/orders.eu"]

[[plugins.config.rules]]
destination = "/queue/orders"
header = "region"
value = "all"
to = ["/queue/orders.eu", "/queue/orders.us"]
{extra_rule}"#,
        plugin("header-router")
    )
}

/// `GET /api/plugins/traces?plugin=NAME`: the decisions listed, oldest first.
async fn decisions(broker: &PluginBroker, name: &str) -> Vec<Value> {
    let target = format!("/api/plugins/traces?plugin={name}&limit=100");
    let answer = request(broker.admin(), Some(TOKEN), "GET", &target, None)
        .await
        .expect("the admin listener answers");
    assert_eq!(answer.code, 200, "{:?}", answer.body);
    answer.body["plugins"][0]["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn switch(broker: &PluginBroker, token: Option<&str>, body: &str) -> Answer {
    request(
        broker.admin(),
        token,
        "POST",
        "/api/plugins/trace",
        Some(body),
    )
    .await
    .expect("the admin listener answers")
}

fn field<'a>(decision: &'a Value, key: &str) -> &'a str {
    decision[key].as_str().unwrap_or_default()
}

fn notes(decision: &Value) -> Vec<&str> {
    decision["notes"]
        .as_array()
        .map(|n| n.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn traced_router_decisions_name_the_rule_and_the_message_ids() {
    let config = temp_config(&router_config(1.0, ""));
    let broker = start_with_status_args(&config.path, &["--log-format", "json"]);
    let mut eu = anonymous(broker.addr).await;
    eu.subscribe("eu", "/queue/orders.eu", "auto").await;
    let mut plain = anonymous(broker.addr).await;
    plain.subscribe("plain", "/queue/orders", "auto").await;

    let mut sender = anonymous(broker.addr).await;
    sender
        .roundtrip(send_frame("/queue/orders", &[("region", "eu")], "one"))
        .await;
    sender
        .roundtrip(send_frame("/queue/orders", &[("region", "xx")], "two"))
        .await;
    let routed = eu.msg().await;
    let kept = plain.msg().await;
    // A pipelined burst goes to the router in one batch: still one decision per message.
    let burst: Vec<Frame> = (0..3)
        .map(|i| {
            send_frame("/queue/orders", &[("region", "eu")], &format!("b{i}"))
                .h("receipt", &format!("r{i}"))
        })
        .collect();
    sender.write_all(&burst).await;
    let burst_ids: Vec<String> = eu
        .msgs(3)
        .await
        .iter()
        .map(|m| m.must("message-id").to_string())
        .collect();
    sender.wait_receipt("r2").await;

    let listed = decisions(&broker, "router").await;
    assert_eq!(listed.len(), 5, "{listed:#?}");
    let first = &listed[0];
    assert_eq!(field(first, "hook"), "send");
    assert_eq!(field(first, "plugin"), "router");
    assert_eq!(field(first, "vhost"), "/");
    assert_eq!(field(first, "destination"), "/queue/orders");
    assert_eq!(field(first, "verdict"), "rewrite → /queue/orders.eu");
    assert_eq!(
        notes(first),
        ["rule 1: /queue/orders → /queue/orders.eu (region = eu)"]
    );
    assert_eq!(field(first, "message_id"), routed.must("message-id"));
    let second = &listed[1];
    assert_eq!(field(second, "verdict"), "keep");
    assert_eq!(notes(second), ["no rule matched: the message stays"]);
    assert_eq!(field(second, "message_id"), kept.must("message-id"));
    for (decision, id) in listed[2..].iter().zip(&burst_ids) {
        assert_eq!(field(decision, "message_id"), id, "{decision:#}");
        assert_eq!(notes(decision).len(), 1, "{decision:#}");
    }
    // The same decisions are logged as events of target plugboard::trace, with their fields.
    let line = broker.wait_log_line(&["plugin decision", "rule 1"], Duration::from_secs(10));
    let event: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(event["target"], "plugboard::trace", "{line}");
    assert_eq!(event["level"], "INFO", "{line}");
    let fields = &event["fields"];
    assert_eq!(fields["plugin"], "router", "{line}");
    assert_eq!(fields["hook"], "send", "{line}");
    assert_eq!(fields["verdict"], "rewrite → /queue/orders.eu", "{line}");
    assert_eq!(fields["message_id"], routed.must("message-id"), "{line}");
}

#[tokio::test]
async fn a_live_switch_turns_tracing_on_and_off_and_survives_a_reload() {
    let config = temp_config(&router_config(0.0, ""));
    let broker = start_with_status(&config.path);
    let mut sender = anonymous(broker.addr).await;
    let send_eu = |i: usize| send_frame("/queue/orders", &[("region", "eu")], &format!("m{i}"));

    sender.roundtrip(send_eu(0)).await;
    assert!(
        decisions(&broker, "router").await.is_empty(),
        "off by default"
    );

    let on = r#"{"plugin": "router", "sample": 1.0}"#;
    assert_eq!(switch(&broker, None, on).await.code, 401, "no token");
    assert_eq!(
        switch(&broker, Some("wrong-token-but-long"), on).await.code,
        401
    );
    let bad = switch(&broker, Some(TOKEN), r#"{"plugin": "router", "sample": 2}"#).await;
    assert_eq!(bad.code, 400, "{:?}", bad.body);
    let unknown = switch(&broker, Some(TOKEN), r#"{"plugin": "nope", "sample": 1}"#).await;
    assert_eq!(unknown.code, 404, "{:?}", unknown.body);
    let answer = switch(&broker, Some(TOKEN), on).await;
    assert_eq!(answer.code, 200, "{:?}", answer.body);
    assert_eq!(answer.body["sample"], 1.0);

    sender.roundtrip(send_eu(1)).await;
    sender.roundtrip(send_eu(2)).await;
    assert_eq!(decisions(&broker, "router").await.len(), 2, "on");

    // A reload that changes the plugin's rules but not its trace_sample keeps the live rate.
    let extra = r#"
[[plugins.config.rules]]
destination = "/queue/orders"
header = "region"
value = "us"
to = ["/queue/orders.us"]
"#;
    let text = std::fs::read_to_string(&config.path).unwrap();
    let edited = text.replace(&router_config(0.0, ""), &router_config(0.0, extra));
    assert_ne!(edited, text);
    std::fs::write(&config.path, edited).unwrap();
    wait_generation(&broker, 2).await;
    sender
        .roundtrip(send_frame("/queue/orders", &[("region", "us")], "m3"))
        .await;
    let listed = decisions(&broker, "router").await;
    assert_eq!(listed.len(), 3, "still on after the reload: {listed:#?}");
    assert_eq!(
        notes(&listed[2]),
        ["rule 3: /queue/orders → /queue/orders.us (region = us)"],
        "decided by the reloaded rules"
    );

    let off = switch(&broker, Some(TOKEN), r#"{"plugin": "router", "sample": 0}"#).await;
    assert_eq!(off.code, 200, "{:?}", off.body);
    sender.roundtrip(send_eu(4)).await;
    assert_eq!(
        decisions(&broker, "router").await.len(),
        3,
        "off again: nothing new, the old ones stay"
    );
}

/// Waits (bounded) until the broker's plugin set is generation `generation`.
async fn wait_generation(broker: &PluginBroker, generation: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = request(broker.admin(), Some(TOKEN), "GET", "/status", None)
            .await
            .expect("the admin listener answers");
        let status = answer.body;
        if status["plugins"]["generation"].as_u64() == Some(generation) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no generation {generation}: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn switching_needs_a_configured_admin_token() {
    let config =
        temp_config(&router_config(0.0, "").replace(&format!("admin_token = \"{TOKEN}\"\n"), ""));
    let broker = start_with_status(&config.path);
    let on = r#"{"plugin": "router", "sample": 1.0}"#;
    let refused = switch(&broker, Some(TOKEN), on).await;
    assert_eq!(refused.code, 403, "{:?}", refused.body);
    // Reading stays open on loopback, as /metrics is.
    let listed = request(broker.admin(), None, "GET", "/api/plugins/traces", None)
        .await
        .unwrap();
    assert_eq!(listed.code, 200, "{:?}", listed.body);
    assert_eq!(listed.body["plugins"][0]["sample"], 0.0);
}

#[tokio::test]
async fn the_context_import_answers_the_vhost_and_traced_notes_reach_the_trace() {
    let config = temp_config(&format!(
        r#"
admin_listen = "127.0.0.1:0"
admin_token = "{TOKEN}"

[[plugins]]
name = "probe"
file = "{}"
hooks = ["send", "message"]
destinations = ["/queue/probe"]
trace_sample = 1.0

[plugins.config]
verdict = "context"
"#,
        plugin("probe")
    ));
    let broker = start_with_status(&config.path);
    let mut consumer = anonymous(broker.addr).await;
    consumer.subscribe("s1", "/queue/probe", "auto").await;
    let mut sender = anonymous(broker.addr).await;
    sender
        .roundtrip(send_frame("/queue/probe", &[], "hi"))
        .await;
    let m = consumer.msg().await;
    assert_eq!(m.get("x-probe-vhost"), Some("/"), "{m:?}");
    assert_eq!(m.get("x-probe-traced"), Some("true"), "{m:?}");

    let listed = decisions(&broker, "probe").await;
    let hooks: Vec<&str> = listed.iter().map(|d| field(d, "hook")).collect();
    assert_eq!(
        hooks,
        ["prepare-subscription", "send", "filter"],
        "{listed:#?}"
    );
    assert_eq!(field(&listed[0], "subscription"), "s1");
    assert_eq!(field(&listed[1], "message_id"), m.must("message-id"));
    assert_eq!(notes(&listed[1]), ["probe: send on /"]);
    let filter = &listed[2];
    assert_eq!(field(filter, "message_id"), m.must("message-id"));
    assert_eq!(field(filter, "subscription"), "s1");
    // The filter sets what the send hook already set: a rewrite that changes nothing.
    assert_eq!(field(filter, "verdict"), "rewrite");
    assert_eq!(notes(filter), ["probe: filter on /"]);
}

#[tokio::test]
async fn a_plugin_built_against_wit_0_1_1_still_loads_and_routes() {
    let config = temp_config(&format!(
        "[[plugins]]\nname = \"legacy\"\nfile = {:?}\nhooks = [\"send\"]\n",
        plugin("legacy-router")
    ));
    let broker = PluginBroker::start(&config.path);
    let mut consumer = anonymous(broker.addr).await;
    consumer.subscribe("out", "/queue/legacy.out", "auto").await;
    let mut sender = anonymous(broker.addr).await;
    sender.send_r("/queue/legacy.in", "old").await;
    let m = consumer.msg().await;
    assert_eq!(m.body_str(), "old");
    assert_eq!(m.must("destination"), "/queue/legacy.out");
    // Its 0.1.1 `log` import is served too.
    broker.wait_log_line(
        &["legacy-router: /queue/legacy.in"],
        Duration::from_secs(10),
    );
}

#[tokio::test]
async fn the_cli_switches_and_prints_decisions() {
    let config = temp_config(&router_config(0.0, ""));
    let broker = start_with_status(&config.path);
    let admin = broker.admin().to_string();
    let trace = |extra: &[&str]| {
        let mut args = vec![
            "plugin",
            "trace",
            "router",
            "--config",
            config.path.to_str().unwrap(),
            "--admin",
            &admin,
        ];
        args.extend_from_slice(extra);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let run = run_plugboard(&args);
        assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
        run.stdout
    };
    let on = trace(&["--sample", "1"]);
    assert!(
        on.starts_with("plugin router: tracing 1 of its calls, 0 decisions shown"),
        "{on}"
    );
    let mut sender = anonymous(broker.addr).await;
    for region in ["eu", "all"] {
        sender
            .roundtrip(send_frame("/queue/orders", &[("region", region)], "x"))
            .await;
    }
    let listed = trace(&["--last", "5"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(
        lines[1].contains("send ")
            && lines[1].contains("/queue/orders: rewrite → /queue/orders.eu [rule 1: "),
        "{listed}"
    );
    assert!(
        lines[2].contains("fan-out 2: /queue/orders.eu, /queue/orders.us [rule 2: "),
        "{listed}"
    );
    let last = trace(&["--last", "1"]);
    assert_eq!(last.lines().count(), 2, "{last}");
    let off = trace(&["--off"]);
    assert!(
        off.starts_with("plugin router: tracing off, 2 decisions shown"),
        "{off}"
    );
    // A rate out of range is refused before anything is sent.
    let words = [
        "plugin", "trace", "router", "--admin", &admin, "--sample", "3",
    ];
    let args: Vec<&std::ffi::OsStr> = words.iter().map(|a| a.as_ref()).collect();
    let refused = run_plugboard(&args);
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("between 0"), "{}", refused.stderr);
}

#[test]
fn a_sample_rate_out_of_range_is_refused_at_start() {
    let config = temp_config(&router_config(1.5, ""));
    let run = run_plugboard(&[
        "--check-config".as_ref(),
        "--config".as_ref(),
        config.path.as_os_str(),
    ]);
    assert!(!run.status.success(), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("plugin `router`: trace_sample: trace sample rate 1.5 is not between 0"),
        "{}",
        run.stderr
    );
}

/// The batched MESSAGE hook (`deliver-batch`, which the selector plugin exports): one traced
/// decision per delivery, with the delivered message's id.
#[tokio::test]
async fn batched_filter_decisions_carry_the_delivered_message_ids() {
    let config = temp_config(&format!(
        r#"
admin_listen = "127.0.0.1:0"
admin_token = "{TOKEN}"

[[plugins]]
name = "selector"
file = "{}"
hooks = ["message"]
trace_sample = 1.0
"#,
        plugin("selector")
    ));
    let broker = start_with_status(&config.path);
    let mut consumer = anonymous(broker.addr).await;
    consumer
        .subscribe_with("sel", "/queue/typed", "auto", &[("selector", "type = 'a'")])
        .await;
    let mut sender = anonymous(broker.addr).await;
    let burst: Vec<Frame> = (0..4)
        .map(|i| {
            send_frame("/queue/typed", &[("type", "a")], &format!("m{i}"))
                .h("receipt", &format!("r{i}"))
        })
        .collect();
    sender.write_all(&burst).await;
    sender.wait_receipt("r3").await;
    let ids: Vec<String> = consumer
        .msgs(4)
        .await
        .iter()
        .map(|m| m.must("message-id").to_string())
        .collect();
    let listed = decisions(&broker, "selector").await;
    assert_eq!(
        field(&listed[0], "hook"),
        "prepare-subscription",
        "{listed:#?}"
    );
    assert!(
        field(&listed[0], "verdict").starts_with("filter ("),
        "{listed:#?}"
    );
    let filters: Vec<&Value> = listed[1..].iter().collect();
    assert_eq!(filters.len(), 4, "{listed:#?}");
    for (decision, id) in filters.iter().zip(&ids) {
        assert_eq!(field(decision, "hook"), "filter");
        assert_eq!(field(decision, "verdict"), "deliver");
        assert_eq!(field(decision, "message_id"), id);
        assert_eq!(field(decision, "subscription"), "sel");
    }
}
