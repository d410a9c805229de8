//! The delivery headers (`priority`, `JMSXGroupID`) are ordinary headers to a send plugin: it
//! sees them and may rewrite them, and the queue orders by what the plugin left (a value it
//! made invalid is an ERROR to the sender). `hostile-puppet` sets the headers a SEND names in
//! its `set: NAME=VALUE` headers.

use crate::support::*;
use plugboard_test_support::harness::expect_refused;
use plugboard_test_support::stomp::QUIET;

fn config() -> TempConfig {
    temp_config(&format!(
        r#"
[[plugins]]
name = "puppet"
file = "{}"
hooks = ["send"]
destinations = ["/queue/prio.*"]
"#,
        plugin("hostile-puppet")
    ))
}

#[tokio::test]
async fn a_plugin_rewritten_priority_decides_the_order() {
    let config = config();
    let broker = PluginBroker::start(&config.path);
    let mut sender = anonymous(broker.addr).await;
    let dest = "/queue/prio.rewrite";
    let sends: [(&str, &[(&str, &str)]); 3] = [
        ("low", &[("priority", "1")]),
        ("raised", &[("priority", "1"), ("set", "priority=9")]),
        ("default", &[]),
    ];
    for (body, headers) in sends {
        sender.roundtrip(send_frame(dest, headers, body)).await;
    }
    let mut sub = anonymous(broker.addr).await;
    sub.subscribe("s", dest, "auto").await;
    let got = sub.msgs(3).await;
    let bodies: Vec<&str> = got.iter().map(|m| m.body_str()).collect();
    assert_eq!(bodies, ["raised", "default", "low"]);
    assert_eq!(got[0].all("priority"), ["9"], "{:?}", got[0]);
    sub.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_priority_a_plugin_made_invalid_is_an_error_to_the_sender() {
    let config = config();
    let broker = PluginBroker::start(&config.path);
    let mut sender = anonymous(broker.addr).await;
    let frame = send_frame("/queue/prio.bad", &[("set", "priority=urgent")], "x");
    let err = expect_refused(&mut sender, frame, "r", "plugin-set priority").await;
    let message = error_message(&err);
    assert!(
        message.contains("a plugin set an invalid delivery header")
            && message.contains("invalid priority 'urgent'"),
        "{err:?}"
    );
    // The client's own invalid value is refused before any plugin runs.
    let mut sender = anonymous(broker.addr).await;
    let frame = send_frame("/queue/prio.bad", &[("priority", "urgent")], "x");
    let err = expect_refused(&mut sender, frame, "r2", "client priority").await;
    let message = error_message(&err);
    assert!(message.starts_with("invalid priority 'urgent'"), "{err:?}");
}
