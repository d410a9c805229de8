//! Plugins per virtual host: a `[[vhosts]]` entry's `plugins` chooses the chains its
//! connections go through, the authenticate hook included (the vhost is chosen from CONNECT's
//! `host` before anyone authenticates).

use crate::support::*;
use plugboard_test_support::stomp::{Client, Frame, QUIET};

const CARD: &str = "4111 1111 1111 1111";

/// CONNECT (1.2) to vhost `host` with an optional login.
fn connect_to(host: &str, login: Option<(&str, &str)>) -> Frame {
    let mut frame = Frame::new("CONNECT")
        .h("accept-version", "1.2")
        .h("host", host);
    if let Some((login, passcode)) = login {
        frame = frame.h("login", login).h("passcode", passcode);
    }
    frame
}

async fn client_in(addr: std::net::SocketAddr, host: &str, login: Option<(&str, &str)>) -> Client {
    let (client, reply) = Client::connect_with(addr, connect_to(host, login)).await;
    assert!(reply.is("CONNECTED"), "{host}: {reply:?}");
    client
}

/// The redact plugin (SEND, /queue/payments) and the demo's authenticator, each applied in
/// one vhost only.
fn config() -> TempConfig {
    temp_config(&format!(
        r#"{auth}
[[plugins]]
name = "redact"
file = "{redact}"
hooks = ["send"]
destinations = ["/queue/payments"]

[plugins.config]
fields = ["card"]
mode = "send"

[[vhosts]]
name = "masked"
plugins = ["redact"]

[[vhosts]]
name = "secure"
plugins = ["auth"]
"#,
        auth = demo_auth(),
        redact = plugin("redact"),
    ))
}

#[tokio::test]
async fn a_send_plugin_applies_only_in_the_vhosts_that_select_it() {
    let config = config();
    let broker = PluginBroker::start(&config.path);
    let body = format!(r#"{{"card":"{CARD}"}}"#);
    let payment = || {
        Frame::new("SEND")
            .h("destination", "/queue/payments")
            .h("content-type", "application/json")
            .body_cl(body.as_bytes().to_vec())
    };

    let mut masked = client_in(broker.addr, "masked", None).await;
    masked.subscribe("p", "/queue/payments", "auto").await;
    masked.roundtrip(payment()).await;
    let m = masked.msg().await;
    assert!(
        !m.body_str().contains("4111"),
        "redact applies in `masked`: {m:?}"
    );

    let mut secure = client_in(broker.addr, "secure", Some(("alice", "alice-secret"))).await;
    secure.subscribe("p", "/queue/payments", "auto").await;
    secure.roundtrip(payment()).await;
    let m = secure.msg().await;
    assert_eq!(
        m.body_str(),
        body,
        "redact does not apply in `secure`: {m:?}"
    );
    masked.expect_silence(QUIET).await;
}

#[tokio::test]
async fn the_authenticator_of_the_selected_vhost_decides() {
    let config = config();
    let broker = PluginBroker::start(&config.path);
    // `secure` has the authenticator: a bad password is refused, alice gets in.
    let (_, reply) =
        Client::connect_with(broker.addr, connect_to("secure", Some(("alice", "wrong")))).await;
    assert!(reply.is("ERROR"), "{reply:?}");
    let (_, reply) = Client::connect_with(broker.addr, connect_to("secure", None)).await;
    assert!(
        reply.is("ERROR"),
        "anonymous refused in `secure`: {reply:?}"
    );
    client_in(broker.addr, "secure", Some(("alice", "alice-secret"))).await;
    // `masked` has none: anyone is admitted, as without plugins.
    client_in(broker.addr, "masked", None).await;
    client_in(broker.addr, "masked", Some(("alice", "wrong"))).await;
}
