//! A plugin's refusal without a code of its own: the ERROR carries the generic
//! `plugin.rejected` and the reason as it is (header-router's coded refusal, the route check's
//! and the permission codes are checked in `routing.rs` and `auth.rs`).

use crate::support::*;
use plugboard_test_support::stomp::Frame;

#[tokio::test]
async fn a_reason_without_a_code_gets_plugin_rejected() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "probe"
file = "{}"
hooks = ["send"]
destinations = ["/queue/probe"]

[plugins.config]
verdict = "report"
"#,
        plugin("probe")
    ));
    let broker = PluginBroker::start(&config.path);
    let mut sender = anonymous(broker.addr).await;
    sender
        .write(
            &Frame::new("SEND")
                .h("destination", "/queue/probe")
                .h("receipt", "r-1")
                .body("hello"),
        )
        .await;
    let err = sender.expect_error_close().await;
    assert_eq!(err.get("error-code"), Some("plugin.rejected"), "{err:?}");
    assert!(
        error_message(&err).starts_with("message rejected: saw dest=/queue/probe"),
        "the reason as the plugin wrote it: {err:?}"
    );
    assert_eq!(err.get("receipt-id"), Some("r-1"), "{err:?}");
}
