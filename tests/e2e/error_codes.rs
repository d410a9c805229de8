//! Machine-readable errors and capabilities (issue 18 item 3): every ERROR carries a stable
//! `error-code` (a representative ERROR of each namespace is checked here; the harness checks
//! that every ERROR of every test has a well-formed one), and CONNECTED advertises what the
//! broker supports in `capabilities`, in STOMP 1.2 and 1.0 alike.

use crate::harness::*;

/// Small enough limits and fast heart-beats, for the cases below.
const CONFIG: &str = "[limits]\nmax_body_bytes = 1000\n\n\
    [heartbeat]\nsend_min_ms = 100\nreceive_min_ms = 150\ngrace_factor = 2.0\n";

/// A fresh 1.2 connection writes `frames` (the last one with a receipt) and must get an ERROR
/// with `code`, then the close.
async fn expect_code(broker: &Broker, frames: &[Frame], code: &str) -> Frame {
    let mut c = broker.client(Version::V12).await;
    let (last, before) = frames.split_last().expect("a frame");
    for frame in before {
        c.write(frame).await;
    }
    let err = expect_refused(&mut c, last.clone(), "r-bad", code).await;
    assert_eq!(err.get("error-code"), Some(code), "{err:?}");
    err
}

fn send(dest: &str) -> Frame {
    Frame::new("SEND").h("destination", dest).body("x")
}

#[tokio::test]
async fn each_namespace_has_its_codes_on_the_wire() {
    let broker = Broker::with_config(CONFIG);
    let queue = format!("/queue/{}", unique("codes"));
    // protocol.*
    expect_code(
        &broker,
        &[Frame::new("SEND").body("x")],
        "protocol.missing-header",
    )
    .await;
    expect_code(
        &broker,
        &[Frame::new("COMMIT").h("transaction", "tx-none")],
        "protocol.unknown-transaction",
    )
    .await;
    expect_code(
        &broker,
        &[Frame::new("ACK").h("id", "nothing-pending")],
        "protocol.unknown-ack",
    )
    .await;
    let bad_priority = send(&queue).h("priority", "urgent");
    let err = expect_code(&broker, &[bad_priority], "protocol.invalid-header").await;
    // The English message is unchanged: the code is an addition.
    assert!(
        err.must("message").contains("invalid priority 'urgent'"),
        "{err:?}"
    );
    let bad_delay = send(&queue).h("AMQ_SCHEDULED_DELAY", "soon");
    expect_code(&broker, &[bad_delay], "protocol.invalid-schedule").await;
    let bad_selector = Frame::new("SUBSCRIBE")
        .h("id", "s")
        .h("destination", &queue)
        .h("selector", "price >");
    expect_code(&broker, &[bad_selector], "protocol.invalid-selector").await;
    let second_connect = Client::connect_frame(Version::V12);
    expect_code(&broker, &[second_connect], "protocol.already-connected").await;
    // destination.*
    expect_code(&broker, &[send("/foo/x")], "destination.unknown-prefix").await;
    expect_code(&broker, &[send("/topic/a.*")], "destination.wildcard-send").await;
    // limit.*
    let big = Frame::new("SEND")
        .h("destination", &queue)
        .body_cl(vec![b'x'; 2000]);
    expect_code(&broker, &[big], "limit.body-size").await;
    // flow.*
    let limited = format!("/queue/{}", unique("full"));
    let capped = |body: &str| {
        Frame::new("SEND")
            .h("destination", &limited)
            .h("x-max-length", "1")
            .h("x-overflow", "reject-publish")
            .body(body)
    };
    expect_code(&broker, &[capped("one"), capped("two")], "flow.queue-full").await;
    assert_healthy(&broker).await;
}

#[tokio::test]
async fn decode_errors_and_connect_problems_have_codes() {
    let broker = Broker::with_config(CONFIG);
    let err = bad_frame_gives_error(&broker, Version::V12, b"FOO\n\n\0").await;
    assert_eq!(
        err.get("error-code"),
        Some("protocol.unknown-command"),
        "{err:?}"
    );
    let err = bad_frame_gives_error(
        &broker,
        Version::V12,
        b"SEND\ndestination:/queue/x\nk:a\\tb\n\nx\0",
    )
    .await;
    assert_eq!(
        err.get("error-code"),
        Some("protocol.invalid-escape"),
        "{err:?}"
    );
    // No common version: the ERROR keeps its `version` header and gets its code.
    let (mut c, reply) = Client::connect_with(
        broker.addr,
        Frame::new("CONNECT").h("accept-version", "2.0"),
    )
    .await;
    assert_error_frame(&reply);
    assert_eq!(
        reply.get("error-code"),
        Some("protocol.version"),
        "{reply:?}"
    );
    assert_eq!(reply.get("version"), Some("1.0,1.1,1.2"), "{reply:?}");
    c.expect_closed().await;
    // (Without a body: before CONNECT, a frame may not have one.)
    let not_connect = Frame::new("SEND").h("destination", "/queue/x");
    let (mut c, reply) = Client::connect_with(broker.addr, not_connect).await;
    assert_eq!(
        reply.get("error-code"),
        Some("protocol.expected-connect"),
        "{reply:?}"
    );
    c.expect_closed().await;
    // A client that promised heart-beats and went silent.
    let connect = Client::connect_frame(Version::V12).h("heart-beat", "100,0");
    let (mut silent, reply) = Client::connect_with(broker.addr, connect).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    let err = silent.expect_error_close().await;
    assert_eq!(
        err.get("error-code"),
        Some("flow.heartbeat-timeout"),
        "{err:?}"
    );
}

#[tokio::test]
async fn refused_logins_and_unknown_vhosts_have_auth_codes() {
    let broker = Broker::with_config(
        "[[vhosts]]\nname = \"a\"\n\n[[users]]\nlogin = \"ann\"\npasscode = \"pw\"\n",
    );
    let connect = |host: &str, passcode: &str| {
        Frame::new("CONNECT")
            .h("accept-version", "1.2")
            .h("host", host)
            .h("login", "ann")
            .h("passcode", passcode)
    };
    let (mut c, reply) = Client::connect_with(broker.addr, connect("a", "wrong")).await;
    assert_error_frame(&reply);
    assert_eq!(reply.get("error-code"), Some("auth.denied"), "{reply:?}");
    assert!(
        reply.must("message").starts_with("access refused"),
        "{reply:?}"
    );
    c.expect_closed().await;
    let (mut c, reply) = Client::connect_with(broker.addr, connect("nowhere", "pw")).await;
    assert_eq!(
        reply.get("error-code"),
        Some("auth.unknown-vhost"),
        "{reply:?}"
    );
    c.expect_closed().await;
    // The vhosts are configured: CONNECTED says so.
    let (_c, reply) = Client::connect_with(broker.addr, connect("a", "pw")).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    let capabilities: Vec<&str> = reply.must("capabilities").split(',').collect();
    assert!(capabilities.contains(&"vhosts"), "{reply:?}");
}

#[tokio::test]
async fn shutdown_tells_connected_clients_why() {
    let broker = Broker::start();
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", "/queue/shutdown", "auto").await;
    broker.signal("TERM");
    let err = c.expect_error_close().await;
    assert_eq!(err.get("error-code"), Some("server.shutdown"), "{err:?}");
}

/// The capabilities every broker of this build has, whatever its configuration.
const ALWAYS: [&str; 10] = [
    "wildcards",
    "priority",
    "selectors",
    "exclusive",
    "groups",
    "browse",
    "queue-limits",
    "expiry",
    "error-codes",
    "temp-queues",
];

#[tokio::test]
async fn connected_advertises_capabilities_in_1_2_and_1_0() {
    let broker = Broker::start();
    let mut seen = Vec::new();
    for version in [Version::V12, Version::V10] {
        let (c, reply) = Client::connect_with(broker.addr, Client::connect_frame(version)).await;
        assert!(reply.is("CONNECTED"), "{version}: {reply:?}");
        let value = reply.must("capabilities").to_string();
        let list: Vec<&str> = value.split(',').collect();
        for name in
            ALWAYS
                .iter()
                .chain(&["persistent", "durable", "composite", "scheduled", "reauth"])
        {
            assert!(list.contains(name), "{version}: {name} missing in {value}");
        }
        // Not configured.
        assert!(
            !list.contains(&"vhosts"),
            "{version}: vhosts listed in {value}"
        );
        assert!(
            list.iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')),
            "{value}"
        );
        seen.push(value);
        c.disconnect().await;
    }
    assert_eq!(seen[0], seen[1], "the same list in every version");
}

/// (The harness always gives the broker a data directory, which turns the store on: a broker
/// without `persistent` is checked by the unit test of `session::connect`.)
#[tokio::test]
async fn capabilities_follow_the_configuration() {
    let broker =
        Broker::with_config("[schedule]\nmax_messages = 0\n\n[durable]\nmax_per_principal = 0\n");
    let (_c, reply) = Client::connect_with(broker.addr, Client::connect_frame(Version::V12)).await;
    let value = reply.must("capabilities");
    let list: Vec<&str> = value.split(',').collect();
    for name in ["scheduled", "durable"] {
        assert!(!list.contains(&name), "{name} listed in {value}");
    }
    for name in ALWAYS {
        assert!(list.contains(&name), "{name} missing in {value}");
    }
}
