//! Any expiry an authenticate plugin may return, with the `expiry-puppet` test plugin (the
//! client's CONNECT headers choose it, to the millisecond): past, `u64::MAX`, moved earlier or
//! removed by a re-authentication; and the `reauth` flag the plugin is given.

use std::time::Duration;

use crate::support::*;
use plugboard_test_support::stomp::{Client, Frame};

fn puppet_broker() -> (PluginBroker, TempConfig) {
    let config = temp_config(&format!(
        "[[plugins]]\nname = \"puppet\"\nfile = \"{}\"\nhooks = [\"authenticate\"]\n",
        plugin("expiry-puppet")
    ));
    (PluginBroker::start(&config.path), config)
}

fn connect(extra: &[(&str, &str)]) -> Frame {
    extra.iter().fold(
        Frame::new("CONNECT")
            .h("accept-version", "1.2")
            .h("host", "localhost")
            .h("login", "alice")
            .h("x-may-send", "/queue/*")
            .h("x-may-subscribe", "/queue/*"),
        |f, (n, v)| f.h(n, v),
    )
}

fn reauth(extra: &[(&str, &str)]) -> Frame {
    connect(extra).h("reauth", "true")
}

async fn open(broker: &PluginBroker, extra: &[(&str, &str)]) -> Client {
    let (c, reply) = Client::connect_with(broker.addr, connect(extra)).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    c
}

#[tokio::test]
async fn an_expiry_already_past_refuses_the_login_and_the_farthest_one_is_no_expiry() {
    let (broker, _config) = puppet_broker();
    for past in ["0", "1"] {
        let (mut c, reply) =
            Client::connect_with(broker.addr, connect(&[("x-expires-at-ms", past)])).await;
        assert!(reply.is("ERROR"), "{past}: {reply:?}");
        assert_eq!(reply.get("error-code"), Some("auth.expired"), "{reply:?}");
        assert_eq!(
            reply.get("message"),
            Some("access refused: credentials expired")
        );
        c.expect_closed().await;
    }
    let max = u64::MAX.to_string();
    let mut c = open(&broker, &[("x-expires-at-ms", &max)]).await;
    c.send_r("/queue/far", "no overflow").await;
    c.disconnect().await;
}

#[tokio::test]
async fn a_reauth_moves_the_expiry_earlier_or_removes_it() {
    let (broker, _config) = puppet_broker();
    // Earlier: the timer is set again for the new, nearer time.
    let mut c = open(&broker, &[("x-expires-in-ms", "600000")]).await;
    c.write(&reauth(&[("x-expires-in-ms", "300")])).await;
    c.expect("CONNECTED").await;
    let err = c.expect_error_close().await;
    assert_eq!(err.get("error-code"), Some("auth.expired"), "{err:?}");
    // Removed: a login without an end lasts past the old one.
    let mut c = open(&broker, &[("x-expires-in-ms", "500")]).await;
    c.write(&reauth(&[])).await;
    c.expect("CONNECTED").await;
    c.expect_silence(Duration::from_millis(1500)).await;
    c.send_r("/queue/still", "open").await;
    c.disconnect().await;
    // A re-authentication whose expiry is already past is refused like a login.
    let mut c = open(&broker, &[]).await;
    c.write(&reauth(&[("x-expires-at-ms", "1")])).await;
    let err = c.expect_error_close().await;
    assert_eq!(err.get("error-code"), Some("auth.expired"), "{err:?}");
}

#[tokio::test]
async fn the_plugin_is_told_which_call_is_a_reauth() {
    let (broker, _config) = puppet_broker();
    // The same header admits a CONNECT and refuses a re-authentication.
    let mut c = open(&broker, &[("x-deny-reauth", "")]).await;
    c.write(&reauth(&[("x-deny-reauth", "")])).await;
    let err = c.expect_error_close().await;
    assert_eq!(err.get("error-code"), Some("auth.denied"), "{err:?}");
    assert!(err.must("message").contains("told to refuse"), "{err:?}");
}
