//! `GET /metrics` for plugins: calls per plugin and hook, failures by kind, the sampled call
//! latency, instances and the reload state; and logins the plugin refused, as closes and
//! ERRORs of kind `auth`.

use std::time::{Duration, Instant};

use plugboard_test_support::metrics::{scrape, Scrape};

use crate::support::*;

/// Scrapes until `check` holds, or fails with the last scrape.
async fn eventually(broker: &PluginBroker, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = scrape(broker.admin(), None).await;
        if check(&scrape) || Instant::now() > deadline {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn authenticate_calls_and_refused_logins_are_counted() {
    let config = temp_config(&format!("admin_listen = \"127.0.0.1:0\"\n{}", demo_auth()));
    let broker = start_with_status(&config.path);
    let alice = alice(broker.addr).await;
    alice.disconnect().await;
    let (mut refused, reply) = try_login(broker.addr, Some("alice"), Some("wrong")).await;
    assert!(reply.is("ERROR"), "{reply:?}");
    refused.expect_closed().await;

    let scrape = eventually(&broker, |s| {
        s.value("plugboard_connections_closed_total", &[("reason", "auth")]) == 1.0
            && s.value(
                "plugboard_connections_closed_total",
                &[("reason", "client")],
            ) == 1.0
    })
    .await;
    let hook = [("plugin", "auth"), ("hook", "authenticate")];
    assert_eq!(scrape.value("plugboard_plugin_calls_total", &hook), 2.0);
    let failures: Vec<_> = scrape.matching("plugboard_plugin_failures_total", &hook);
    assert_eq!(failures.len(), 7, "every kind listed: {failures:?}");
    assert!(failures.iter().all(|(_, n)| *n == 0.0), "{failures:?}");
    assert_eq!(
        scrape.label_values("plugboard_plugin_failures_total", "kind"),
        [
            "backoff",
            "busy",
            "invalid_output",
            "memory",
            "oversize",
            "timeout",
            "trap"
        ]
    );
    // The first call of every instance is timed.
    let timed = scrape.value("plugboard_plugin_call_duration_seconds_count", &hook);
    assert!((1.0..=2.0).contains(&timed), "{timed}");
    assert!(scrape.value("plugboard_plugin_call_duration_seconds_sum", &hook) > 0.0);
    assert!(scrape.value("plugboard_plugin_instances", &[("plugin", "auth")]) >= 1.0);
    assert_eq!(scrape.value("plugboard_plugin_generation", &[]), 1.0);
    assert_eq!(
        scrape.value("plugboard_plugin_last_reload_success", &[]),
        1.0
    );
    assert_eq!(
        scrape.value("plugboard_plugin_reloads_total", &[("result", "ok")]),
        0.0
    );
    assert_eq!(
        scrape.value("plugboard_errors_total", &[("kind", "auth")]),
        1.0
    );
    assert_eq!(
        scrape.value("plugboard_auth_attempts_failed_total", &[]),
        1.0
    );
    // /status counts the same calls.
    assert_eq!(plugin_calls(&broker, "auth").await, 2);
}

#[tokio::test]
async fn send_hook_calls_are_counted_per_hook() {
    let config = temp_config(&format!(
        r#"admin_listen = "127.0.0.1:0"

[[plugins]]
name = "router"
file = "{}"
hooks = ["send"]
destinations = ["/queue/orders"]

[[plugins.config.rules]]
destination = "/queue/orders"
header = "region"
value = "eu"
to = ["/queue/orders.eu"]
"#,
        plugin("header-router")
    ));
    let broker = start_with_status(&config.path);
    let mut client = anonymous(broker.addr).await;
    for _ in 0..3 {
        let frame =
            plugboard_test_support::stomp::send_frame("/queue/orders", &[("region", "eu")], "x");
        let receipt = client.next_receipt();
        client.write(&frame.h("receipt", &receipt)).await;
        client.wait_receipt(&receipt).await;
    }
    let hook = [("plugin", "router"), ("hook", "send")];
    let scrape = eventually(&broker, |s| {
        s.value("plugboard_plugin_calls_total", &hook) == 3.0
    })
    .await;
    assert_eq!(scrape.value("plugboard_plugin_calls_total", &hook), 3.0);
    assert_eq!(
        scrape.value(
            "plugboard_queue_messages_ready",
            &[("queue", "/queue/orders.eu")]
        ),
        3.0
    );
}
