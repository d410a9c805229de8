//! SEND routing by header-router: the demo's region routes, and fan-out from a temp config.

use crate::support::*;
use plugboard_test_support::stomp::{Client, Frame, QUIET};

/// Alice subscribed (with a receipt) to each of the order queues.
async fn order_subscribers(addr: std::net::SocketAddr) -> [Client; 3] {
    let mut subs = [alice(addr).await, alice(addr).await, alice(addr).await];
    for (c, dest) in subs
        .iter_mut()
        .zip(["/queue/orders", "/queue/orders.eu", "/queue/orders.us"])
    {
        c.subscribe("orders", dest, "auto").await;
    }
    subs
}

#[tokio::test]
async fn region_header_routes_orders() {
    let broker = PluginBroker::start(&demo_config());
    let [mut plain, mut eu, mut us] = order_subscribers(broker.addr).await;
    let mut sender = alice(broker.addr).await;

    let cases: [(Option<&str>, &str); 5] = [
        (Some("eu"), "/queue/orders.eu"),
        (Some("us"), "/queue/orders.us"),
        (Some("xx"), "/queue/orders"),
        (None, "/queue/orders"),
        (Some("EU"), "/queue/orders"),
    ];
    for (i, (region, expected)) in cases.iter().enumerate() {
        let body = format!("order {i}");
        let mut headers = vec![("order", "yes")];
        if let Some(region) = region {
            headers.push(("region", region));
        }
        sender
            .roundtrip(send_frame("/queue/orders", &headers, &body))
            .await;
        let receiver = match *expected {
            "/queue/orders.eu" => &mut eu,
            "/queue/orders.us" => &mut us,
            _ => &mut plain,
        };
        let m = receiver.msg().await;
        assert_eq!(
            m.must("destination"),
            *expected,
            "region {region:?}: MESSAGE destination must be the routed one: {m:?}"
        );
        assert_eq!(m.body_str(), body, "region {region:?}: {m:?}");
        if let Some(region) = region {
            assert_eq!(m.get("region"), Some(*region), "headers kept: {m:?}");
        }
        assert_eq!(m.get("order"), Some("yes"), "headers kept: {m:?}");
        assert_eq!(
            m.get("content-length"),
            Some(body.len().to_string().as_str()),
            "{m:?}"
        );
    }
    // Each message went to exactly one place.
    for c in [&mut plain, &mut eu, &mut us] {
        c.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn a_selector_sees_the_routed_message() {
    let broker = PluginBroker::start(&demo_config());
    let mut c = alice(broker.addr).await;
    c.subscribe_with(
        "big-eu",
        "/queue/orders.eu",
        "auto",
        &[("selector", "region = 'eu' AND qty >= 10")],
    )
    .await;
    let mut sender = alice(broker.addr).await;
    for (i, qty) in ["3", "12", "10"].iter().enumerate() {
        sender
            .roundtrip(send_frame(
                "/queue/orders",
                &[("region", "eu"), ("qty", qty)],
                &format!("o{i}"),
            ))
            .await;
    }
    let got: Vec<String> = c
        .msgs(2)
        .await
        .iter()
        .map(|m| format!("{} {}", m.must("destination"), m.body_str()))
        .collect();
    assert_eq!(got, ["/queue/orders.eu o1", "/queue/orders.eu o2"]);
    c.expect_silence(QUIET).await;
    // The skipped one waits in /queue/orders.eu for a consumer that takes it.
    let mut other = alice(broker.addr).await;
    other.subscribe("any", "/queue/orders.eu", "auto").await;
    assert_eq!(other.msg().await.body_str(), "o0");
}

#[tokio::test]
async fn routed_sends_in_a_transaction_are_delivered_at_commit() {
    let broker = PluginBroker::start(&demo_config());
    let mut eu = alice(broker.addr).await;
    eu.subscribe("eu", "/queue/orders.eu", "auto").await;
    let mut sender = alice(broker.addr).await;
    sender
        .roundtrip(Frame::new("BEGIN").h("transaction", "tx"))
        .await;
    sender
        .roundtrip(send_frame(
            "/queue/orders",
            &[("region", "eu"), ("transaction", "tx")],
            "in tx",
        ))
        .await;
    eu.expect_silence(QUIET).await;
    sender
        .roundtrip(Frame::new("COMMIT").h("transaction", "tx"))
        .await;
    let m = eu.msg().await;
    assert_eq!(
        (m.must("destination"), m.body_str()),
        ("/queue/orders.eu", "in tx"),
        "{m:?}"
    );
    assert_eq!(m.get("transaction"), None, "{m:?}");
}

#[tokio::test]
async fn routing_applies_only_to_the_configured_destination() {
    let broker = PluginBroker::start(&demo_config());
    let mut c = alice(broker.addr).await;
    // Same header, another destination: not routed.
    c.subscribe("o", "/queue/orders-other", "auto").await;
    c.subscribe("eu", "/queue/orders.eu", "auto").await;
    c.roundtrip(send_frame("/queue/orders-other", &[("region", "eu")], "x"))
        .await;
    let m = c.msg().await;
    assert_eq!(m.must("destination"), "/queue/orders-other", "{m:?}");
    assert_eq!(m.must("subscription"), "o", "{m:?}");
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_rule_with_several_targets_fans_out() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "fanout-router"
file = "{}"
hooks = ["send"]
destinations = ["/queue/in"]

[[plugins.config.rules]]
destination = "/queue/in"
header = "kind"
value = "both"
to = ["/queue/out.a", "/topic/out.b"]
"#,
        plugin("header-router")
    ));
    let broker = PluginBroker::start(&config.path);
    let mut a = anonymous(broker.addr).await;
    a.subscribe("a", "/queue/out.a", "auto").await;
    let mut b = anonymous(broker.addr).await;
    b.subscribe("b", "/topic/out.b", "auto").await;
    let mut rest = anonymous(broker.addr).await;
    rest.subscribe("in", "/queue/in", "auto").await;

    let mut sender = anonymous(broker.addr).await;
    sender
        .roundtrip(send_frame(
            "/queue/in",
            &[("kind", "both"), ("content-type", "text/plain")],
            "copy me",
        ))
        .await;
    let ma = a.msg().await;
    let mb = b.msg().await;
    for (m, dest) in [(&ma, "/queue/out.a"), (&mb, "/topic/out.b")] {
        assert_eq!(m.must("destination"), dest, "{m:?}");
        assert_eq!(m.body_str(), "copy me", "{m:?}");
        assert_eq!(m.get("kind"), Some("both"), "{m:?}");
        assert_eq!(m.get("content-type"), Some("text/plain"), "{m:?}");
    }
    assert_ne!(
        ma.must("message-id"),
        mb.must("message-id"),
        "each copy is its own message"
    );
    // Nothing stayed on the original destination, and each target got one copy.
    rest.expect_silence(QUIET).await;
    a.expect_silence(QUIET).await;
    b.expect_silence(QUIET).await;

    // An unmatched message stays where it was sent.
    sender
        .roundtrip(send_frame("/queue/in", &[("kind", "one")], "stay"))
        .await;
    let m = rest.msg().await;
    assert_eq!((m.must("destination"), m.body_str()), ("/queue/in", "stay"));
    a.expect_silence(QUIET).await;
}

#[tokio::test]
async fn reject_unmatched_gives_the_sender_an_error_with_its_receipt() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "strict-router"
file = "{}"
hooks = ["send"]
destinations = ["/queue/strict"]

[plugins.config]
reject_unmatched = true

[[plugins.config.rules]]
destination = "/queue/strict"
header = "region"
value = "eu"
to = ["/queue/strict.eu"]
"#,
        plugin("header-router")
    ));
    let broker = PluginBroker::start(&config.path);
    let mut c = anonymous(broker.addr).await;
    c.subscribe("eu", "/queue/strict.eu", "auto").await;
    c.roundtrip(send_frame("/queue/strict", &[("region", "eu")], "ok"))
        .await;
    assert_eq!(c.msg().await.must("destination"), "/queue/strict.eu");

    let mut bad = anonymous(broker.addr).await;
    bad.write(&send_frame("/queue/strict", &[("region", "mars")], "nope").h("receipt", "r-mars"))
        .await;
    let err = bad.expect_error_close().await;
    assert!(
        err.must("message").contains("no route"),
        "the plugin's reason reaches the client: {err:?}"
    );
    // header-router gives its refusal a code (`[no-route] ...`): the ERROR carries it, named
    // after the plugin, and the message does not show the prefix.
    assert_eq!(
        err.get("error-code"),
        Some("plugin.strict-router.no-route"),
        "{err:?}"
    );
    assert_eq!(
        err.must("message"),
        "message rejected: no route for this message on /queue/strict"
    );
    assert_eq!(err.get("receipt-id"), Some("r-mars"), "{err:?}");
    c.expect_silence(QUIET).await;
}

/// A pipelined burst of SENDs reaches the router as one batch (header-router exports
/// `send-batch`): each frame keeps its own semantics. The frames before the rejected one are
/// delivered with their RECEIPTs, in order; the ERROR names the rejected frame's receipt; nothing
/// after it is delivered.
#[tokio::test]
async fn a_rejected_send_in_a_pipelined_burst_stops_the_burst_there() {
    let config = temp_config(&format!(
        r#"
admin_listen = "127.0.0.1:0"

[[plugins]]
name = "strict-router"
file = "{}"
hooks = ["send"]
destinations = ["/queue/burst"]

[plugins.config]
reject_unmatched = true

[[plugins.config.rules]]
destination = "/queue/burst"
header = "region"
value = "eu"
to = ["/queue/burst.eu"]

[[plugins.config.rules]]
destination = "/queue/burst"
header = "region"
value = "all"
to = ["/queue/burst.eu", "/queue/burst.all"]
"#,
        plugin("header-router")
    ));
    let broker = start_with_status(&config.path);
    let mut eu = anonymous(broker.addr).await;
    eu.subscribe("eu", "/queue/burst.eu", "auto").await;
    let mut all = anonymous(broker.addr).await;
    all.subscribe("all", "/queue/burst.all", "auto").await;

    const BAD: usize = 7;
    let frames: Vec<Frame> = (0..12)
        .map(|i| {
            let region = match i {
                BAD => "mars",
                i if i % 3 == 0 => "all",
                _ => "eu",
            };
            send_frame("/queue/burst", &[("region", region)], &format!("m{i}"))
                .h("receipt", &format!("r{i}"))
        })
        .collect();
    let mut sender = anonymous(broker.addr).await;
    sender.write_all(&frames).await;
    let got = sender.expect_closed().await;
    let (error, receipts) = got.split_last().expect("frames before the close");
    let receipts: Vec<&str> = receipts
        .iter()
        .map(|f| {
            assert!(f.is("RECEIPT"), "{f:?}");
            f.must("receipt-id")
        })
        .collect();
    let expected: Vec<String> = (0..BAD).map(|i| format!("r{i}")).collect();
    assert_eq!(
        receipts, expected,
        "the receipts of the frames before it, in order"
    );
    assert!(error.is("ERROR"), "{error:?}");
    assert!(error.must("message").contains("no route"), "{error:?}");
    // The batch path knows which plugin rejected, too.
    assert_eq!(
        error.get("error-code"),
        Some("plugin.strict-router.no-route"),
        "{error:?}"
    );
    assert_eq!(error.get("receipt-id"), Some("r7"), "{error:?}");

    let bodies: Vec<String> = eu
        .msgs(BAD)
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    let expected: Vec<String> = (0..BAD).map(|i| format!("m{i}")).collect();
    assert_eq!(
        bodies, expected,
        "every frame before the rejected one, in order"
    );
    let fanned: Vec<String> = all
        .msgs(3)
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    assert_eq!(fanned, ["m0", "m3", "m6"], "fan-out copies, in order");
    eu.expect_silence(QUIET).await;
    all.expect_silence(QUIET).await;
    // The burst went through the router in batches (one write: usually a single call), not a
    // call per frame.
    let calls = plugin_calls(&broker, "strict-router").await;
    assert!(calls < 8, "{calls} calls for 8 frames");
}

/// Persistent SENDs pipelined through the router (so handled in batches): the RECEIPTs come
/// back in order, each only once what its frame journaled is durable, so after `kill -9` every
/// receipted message is in its routed queue.
#[tokio::test]
async fn pipelined_persistent_sends_through_the_router_survive_kill_9() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "router"
file = "{}"
hooks = ["send"]
destinations = ["/queue/pin"]

[[plugins.config.rules]]
destination = "/queue/pin"
header = "region"
value = "eu"
to = ["/queue/pin.eu"]
"#,
        plugin("header-router")
    ));
    let data = tempfile::tempdir().expect("tempdir");
    let start = || {
        plugboard_test_support::broker::Launch::config_file(broker_bin(), &config.path)
            .args(&[std::ffi::OsStr::new("--data-dir"), data.path().as_os_str()])
            .start()
    };
    let mut broker = start();
    let mut sender = anonymous(broker.addr).await;
    const N: usize = 40;
    let frames: Vec<Frame> = (0..N)
        .map(|i| {
            send_frame(
                "/queue/pin",
                &[("region", "eu"), ("persistent", "true")],
                &format!("p{i}"),
            )
            .h("receipt", &format!("r{i}"))
        })
        .collect();
    sender.write_all(&frames).await;
    for i in 0..N {
        let f = sender.recv().await;
        assert!(f.is("RECEIPT"), "{f:?}");
        assert_eq!(f.must("receipt-id"), format!("r{i}"), "in order");
    }
    broker.kill_hard();

    let broker = start();
    let mut c = anonymous(broker.addr).await;
    c.subscribe("eu", "/queue/pin.eu", "auto").await;
    let bodies: Vec<String> = c
        .msgs(N)
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    let expected: Vec<String> = (0..N).map(|i| format!("p{i}")).collect();
    assert_eq!(bodies, expected);
    c.expect_silence(QUIET).await;
}

/// A route the plugin lets the client choose (hostile-puppet's `route-to` header, which its
/// authenticator pairs with the rights of the CONNECT's `x-may-send`) is checked against the
/// sender's rights: outside them, the sender gets an ERROR naming the destination and nothing is
/// delivered. A router configured with `routes_bypass_sender_rights` is trusted.
#[tokio::test]
async fn a_route_outside_the_senders_rights_is_refused_with_an_error_naming_it() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "puppet"
file = "{0}"
hooks = ["authenticate", "send"]
destinations = ["/queue/in"]

[[plugins]]
name = "trusted"
file = "{0}"
hooks = ["send"]
destinations = ["/queue/trusted"]
routes_bypass_sender_rights = true
"#,
        plugin("hostile-puppet")
    ));
    let broker = PluginBroker::start(&config.path);
    let connect = |may_send: &str| {
        connect_frame(Some("carol"), Some("x"))
            .h("x-may-send", may_send)
            .h("x-may-subscribe", "*")
    };
    let (mut secret, _) = Client::connect_with(broker.addr, connect("")).await;
    secret.subscribe("s", "/queue/secret", "auto").await;

    let (mut carol, reply) = Client::connect_with(
        broker.addr,
        connect("/queue/in,/queue/trusted,/queue/out.*"),
    )
    .await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    carol
        .roundtrip(send_frame(
            "/queue/in",
            &[("route-to", "/queue/out.a")],
            "ok",
        ))
        .await;
    carol
        .roundtrip(send_frame(
            "/queue/trusted",
            &[("route-to", "/queue/secret")],
            "trusted",
        ))
        .await;
    assert_eq!(secret.msg().await.body_str(), "trusted");
    carol
        .write(&send_frame("/queue/in", &[("route-to", "/queue/secret")], "no").h("receipt", "r"))
        .await;
    let err = carol.expect_error_close().await;
    let message = error_message(&err);
    assert!(
        message.contains("'/queue/secret'") && message.contains("may not send"),
        "the ERROR names the destination: {err:?}"
    );
    assert_eq!(
        err.get("error-code"),
        Some("plugin.route-refused"),
        "{err:?}"
    );
    assert_eq!(err.get("receipt-id"), Some("r"), "{err:?}");
    secret.expect_silence(QUIET).await;
}

/// A route may name a composite destination (a copy per part) and a topic only wildcard
/// subscribers listen to; a composite route needs the sender's rights on every part.
#[tokio::test]
async fn a_route_to_a_composite_reaches_each_part_and_wildcard_subscribers() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "composite-router"
file = "{}"
hooks = ["send"]
destinations = ["/queue/in"]

[[plugins.config.rules]]
destination = "/queue/in"
header = "kind"
value = "split"
to = ["/queue/split.a,/topic/split.b"]
"#,
        plugin("header-router")
    ));
    let broker = PluginBroker::start(&config.path);
    let mut a = anonymous(broker.addr).await;
    a.subscribe("a", "/queue/split.a", "auto").await;
    let mut wild = anonymous(broker.addr).await;
    wild.subscribe("w", "/topic/split.*", "auto").await;
    let mut sender = anonymous(broker.addr).await;
    sender
        .roundtrip(send_frame("/queue/in", &[("kind", "split")], "parts"))
        .await;
    let ma = a.msg().await;
    assert_eq!(
        (ma.must("destination"), ma.body_str()),
        ("/queue/split.a", "parts")
    );
    let mw = wild.msg().await;
    assert_eq!(
        (
            mw.must("destination"),
            mw.must("subscription"),
            mw.body_str()
        ),
        ("/topic/split.b", "w", "parts")
    );
    a.expect_silence(QUIET).await;
    wild.expect_silence(QUIET).await;
}

/// Each part of a composite SEND meets the send plugins that serve it, as a SEND to that part
/// alone would (a plugin on one destination is not bypassed by naming it in a composite).
#[tokio::test]
async fn each_part_of_a_composite_send_goes_through_its_own_plugins() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "part-router"
file = "{}"
hooks = ["send"]
destinations = ["/queue/guarded"]

[[plugins.config.rules]]
destination = "/queue/guarded"
header = "kind"
value = "move"
to = ["/queue/moved"]
"#,
        plugin("header-router")
    ));
    let broker = PluginBroker::start(&config.path);
    let mut clients = Vec::new();
    for dest in ["/queue/guarded", "/queue/moved", "/queue/plain"] {
        let mut c = anonymous(broker.addr).await;
        c.subscribe("s", dest, "auto").await;
        clients.push(c);
    }
    let mut sender = anonymous(broker.addr).await;
    sender
        .roundtrip(send_frame(
            "/queue/guarded,/queue/plain",
            &[("kind", "move")],
            "split",
        ))
        .await;
    let moved = clients[1].msg().await;
    assert_eq!(
        (moved.must("destination"), moved.body_str()),
        ("/queue/moved", "split")
    );
    let plain = clients[2].msg().await;
    assert_eq!(plain.must("destination"), "/queue/plain");
    for c in &mut clients {
        c.expect_silence(QUIET).await;
    }
}
