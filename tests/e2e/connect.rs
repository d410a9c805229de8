//! Connecting: CONNECT/STOMP, version negotiation, CONNECTED headers, authentication, the
//! connection limits and graceful shutdown (checklist §1.5, C-01..C-12, P1..P3, P27).

use std::time::Duration;

use crate::harness::*;

fn connect_frame(command: &str, accept: Option<&str>) -> Frame {
    let mut f = Frame::new(command).h("host", "localhost");
    if let Some(a) = accept {
        f = f.h("accept-version", a);
    }
    f
}

#[tokio::test]
async fn connected_headers_for_each_version() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let c = broker.client(v).await;
        let f = c.connected.clone().unwrap();
        let session = f.must("session");
        assert!(
            is_safe_id(session),
            "session id {session:?} should be [A-Za-z0-9._-]"
        );
        let server = f.must("server");
        assert!(server.starts_with("plugboard/"), "server header {server:?}");
        let ver = server["plugboard/".len()..].split(' ').next().unwrap_or("");
        assert_eq!(
            ver,
            env!("CARGO_PKG_VERSION"),
            "server version in {server:?}"
        );
        if v == Version::V10 {
            // 1.0 CONNECTED carries `session`; a `version` header, if any, must say 1.0.
            if let Some(ver) = f.get("version") {
                assert_eq!(ver, "1.0", "{f:?}");
            }
            assert!(
                f.get("heart-beat").is_none_or(|h| h == "0,0"),
                "no heart-beats in 1.0: {f:?}"
            );
        } else {
            assert_eq!(f.must("version"), v.as_str());
            assert_eq!(f.must("heart-beat"), "0,0", "no heart-beat asked: {f:?}");
        }
    }
}

#[tokio::test]
async fn session_ids_are_unique() {
    let broker = Broker::start();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        let c = broker.client(Version::V12).await;
        let s = c.connected.as_ref().unwrap().must("session").to_string();
        assert!(seen.insert(s.clone()), "duplicate session id {s}");
    }
}

#[tokio::test]
async fn stomp_frame_connects() {
    let broker = Broker::start();
    for v in ["1.1", "1.2"] {
        let (mut c, f) = Client::connect_with(broker.addr, connect_frame("STOMP", Some(v))).await;
        assert!(f.is("CONNECTED"), "{f:?}");
        assert_eq!(f.must("version"), v);
        c.sync().await;
    }
}

#[tokio::test]
async fn accept_version_negotiation() {
    let broker = Broker::start();
    let cases = [
        ("1.0,1.1,1.2", "1.2"),
        ("1.2,1.1,1.0", "1.2"),
        ("1.1,1.0", "1.1"),
        ("1.0", "1.0"),
        ("1.1", "1.1"),
        ("1.2", "1.2"),
        ("1.1, 1.0", "1.1"),
        (" 1.2 , 1.1", "1.2"),
        ("1.0,1.1,2.0", "1.1"),
        ("2.0,1.0", "1.0"),
        ("1.1,bogus,1.0", "1.1"),
    ];
    for (accept, expected) in cases {
        for command in ["CONNECT", "STOMP"] {
            let (_c, f) =
                Client::connect_with(broker.addr, connect_frame(command, Some(accept))).await;
            assert!(
                f.is("CONNECTED"),
                "{command} accept-version:{accept:?} gave {f:?}"
            );
            let got = f.get("version").unwrap_or("1.0");
            assert_eq!(got, expected, "{command} accept-version:{accept:?}: {f:?}");
        }
    }
}

#[tokio::test]
async fn absent_accept_version_means_1_0() {
    let broker = Broker::start();
    let (mut c, f) = Client::connect_with(broker.addr, Frame::new("CONNECT")).await;
    assert!(f.is("CONNECTED"), "{f:?}");
    assert!(f.get("version").is_none_or(|v| v == "1.0"), "{f:?}");
    // A 1.0 session has no escaping: a raw colon in a value arrives raw.
    let dest = format!("/queue/{}", unique("v10"));
    c.subscribe("s", &dest, "auto").await;
    c.write(&Frame::new("SEND").h("destination", &dest).h("k", "a:b"))
        .await;
    let m = c.msg().await;
    assert_eq!(m.get("k"), Some("a:b"));
}

#[tokio::test]
async fn no_common_version_is_an_error() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for accept in ["2.0", "3.1,2.0", "0.9"] {
        let (mut c, f) =
            Client::connect_with(broker.addr, connect_frame("CONNECT", Some(accept))).await;
        assert!(f.is("ERROR"), "accept-version:{accept} gave {f:?}");
        assert_error_frame(&f);
        assert_eq!(f.get("version"), Some("1.0,1.1,1.2"), "{f:?}");
        assert!(f.get("message").is_some(), "{f:?}");
        let rest = c.expect_closed().await;
        assert!(rest.is_empty(), "{rest:?}");
    }
    by.check().await;
}

#[tokio::test]
async fn host_header_any_value_or_absent() {
    let broker = Broker::start();
    for host in [
        None,
        Some("localhost"),
        Some("/"),
        Some("127.0.0.1"),
        Some("some.vhost.example"),
    ] {
        for v in ["1.1", "1.2"] {
            let mut f = Frame::new("CONNECT").h("accept-version", v);
            if let Some(h) = host {
                f = f.h("host", h);
            }
            let (mut c, reply) = Client::connect_with(broker.addr, f).await;
            assert!(
                reply.is("CONNECTED"),
                "host {host:?} version {v}: {reply:?}"
            );
            c.sync().await;
        }
    }
}

#[tokio::test]
async fn receipt_on_connect_is_ignored() {
    let broker = Broker::start();
    let f = connect_frame("CONNECT", Some("1.2")).h("receipt", "conn-r");
    let (mut c, reply) = Client::connect_with(broker.addr, f).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    c.expect_silence(QUIET).await;
    c.sync().await;
}

#[tokio::test]
async fn frame_before_connect_is_an_error() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    let frames = [
        Frame::new("SEND")
            .h("destination", "/queue/early")
            .body("x"),
        Frame::new("SUBSCRIBE")
            .h("id", "1")
            .h("destination", "/queue/early"),
        Frame::new("BEGIN").h("transaction", "t"),
        Frame::new("SEND")
            .h("destination", "/queue/early")
            .h("receipt", "early-r")
            .body("x"),
    ];
    for f in frames {
        let mut c = Client::open(broker.addr).await;
        c.write(&f).await;
        let err = c.expect_error_close().await;
        if f.get("receipt").is_some() {
            assert_eq!(err.get("receipt-id"), Some("early-r"), "{err:?}");
        }
    }
    by.check().await;
    // Nothing was enqueued by the rejected frames.
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", "/queue/early", "auto").await;
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn second_connect_is_an_error() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for v in ALL_VERSIONS {
        for command in ["CONNECT", "STOMP"] {
            if v == Version::V10 && command == "STOMP" {
                continue;
            }
            let mut c = broker.client(v).await;
            c.write(&connect_frame(command, Some(v.as_str()))).await;
            c.expect_error_close().await;
        }
    }
    by.check().await;
}

// Failed logins in a row slow an address down (tests/hostile/slots.rs): kept short here.
const USERS: &str = r#"
[limits]
failed_login_delay_max_ms = 20

[[users]]
login = "alice"
passcode = "secret"

[[users]]
login = "bob"
passcode = 'p:a\ss'
"#;

#[tokio::test]
async fn users_are_checked() {
    let broker = Broker::with_config(USERS);
    let mut good = Frame::new("CONNECT")
        .h("accept-version", "1.2")
        .h("host", "x");
    good = good.h("login", "alice").h("passcode", "secret");
    let (mut c, f) = Client::connect_with(broker.addr, good).await;
    assert!(f.is("CONNECTED"), "{f:?}");
    c.sync().await;

    let bad_cases = [
        vec![("login", "alice"), ("passcode", "wrong")],
        vec![("login", "mallory"), ("passcode", "secret")],
        vec![("login", "alice")],
        vec![],
    ];
    for headers in bad_cases {
        for v in ALL_VERSIONS {
            let mut f = Client::connect_frame(v);
            for (k, val) in &headers {
                f = f.h(k, val);
            }
            let (mut c, reply) = Client::connect_with(broker.addr, f).await;
            assert!(reply.is("ERROR"), "{v} {headers:?}: {reply:?}");
            assert_error_frame(&reply);
            assert!(reply.get("message").is_some(), "{reply:?}");
            assert!(c.expect_closed().await.is_empty());
        }
    }
    c.sync().await;
}

/// CONNECT headers are never unescaped (E-04, P8): the passcode reaches the check verbatim.
#[tokio::test]
async fn connect_headers_are_not_unescaped() {
    let broker = Broker::with_config(USERS);
    for v in ALL_VERSIONS {
        let f = Client::connect_frame(v)
            .h("login", "bob")
            .h("passcode", r"p:a\ss");
        let (mut c, reply) = Client::connect_with(broker.addr, f).await;
        assert!(reply.is("CONNECTED"), "{v}: {reply:?}");
        c.sync().await;
    }
    // The escaped spelling is a different passcode.
    let f = Client::connect_frame(Version::V12)
        .h("login", "bob")
        .h("passcode", r"p\ca\\ss");
    let (_c, reply) = Client::connect_with(broker.addr, f).await;
    assert!(reply.is("ERROR"), "{reply:?}");
}

#[tokio::test]
async fn anonymous_when_no_users() {
    let broker = Broker::start();
    let f = Client::connect_frame(Version::V12)
        .h("login", "anyone")
        .h("passcode", "anything");
    let (mut c, reply) = Client::connect_with(broker.addr, f).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    c.sync().await;
}

#[tokio::test]
async fn connect_timeout_closes_silent_connections() {
    let broker = Broker::with_config("[limits]\nconnect_timeout_ms = 300\n");
    let mut c = Client::open(broker.addr).await;
    let start = std::time::Instant::now();
    let frames = c.expect_closed().await;
    assert!(frames.iter().all(|f| f.is("ERROR")), "{frames:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        start.elapsed()
    );
    // A client that connects in time is not affected.
    let mut ok = broker.client(Version::V12).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok.sync().await;
}

#[tokio::test]
async fn max_connections_makes_extra_connections_wait() {
    let broker = Broker::with_config("[limits]\nmax_connections = 2\n");
    let a = broker.client(Version::V12).await;
    let mut b = broker.client(Version::V12).await;
    let mut c = Client::open(broker.addr).await;
    c.write(&Client::connect_frame(Version::V12)).await;
    match c.try_recv(QUIET).await {
        Err(RecvError::Timeout) => {}
        other => panic!("third connection should wait, got {other:?}"),
    }
    a.disconnect().await;
    let f = c.recv().await;
    assert!(f.is("CONNECTED"), "{f:?}");
    c.version = Version::V12;
    c.sync().await;
    b.sync().await;
}

#[tokio::test]
async fn sigterm_exits_cleanly() {
    let mut broker = Broker::start();
    let mut c = broker.client(Version::V12).await;
    c.sync().await;
    let status = broker.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    // The client sees its connection end (possibly after an ERROR).
    let frames = c.expect_closed().await;
    assert!(frames.iter().all(|f| f.is("ERROR")), "{frames:?}");
}

#[tokio::test]
async fn malformed_heart_beat_header_is_an_error() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for hb in ["abc", "1,2,3", "-1,0", "10"] {
        let f = Client::connect_frame(Version::V12).h("heart-beat", hb);
        let (mut c, reply) = Client::connect_with(broker.addr, f).await;
        assert!(reply.is("ERROR"), "heart-beat:{hb} gave {reply:?}");
        assert_error_frame(&reply);
        assert!(c.expect_closed().await.is_empty());
    }
    by.check().await;
}

/// SIGTERM with a client that stopped reading (its socket full): the broker still exits 0
/// within the grace period, and stops accepting connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_stuck_client_exits_within_grace() {
    let mut broker = Broker::with_config("shutdown_grace_ms = 500\n");
    let topic = format!("/topic/{}", unique("stuck"));
    let mut stuck = Client::open_small_rcvbuf(broker.addr, 4096).await;
    stuck.write(&Client::connect_frame(Version::V12)).await;
    stuck.expect("CONNECTED").await;
    stuck.version = Version::V12;
    stuck.subscribe("s", &topic, "auto").await;
    let mut p = broker.client(Version::V12).await;
    let body = vec![b'x'; 64 * 1024];
    for _ in 0..40 {
        p.write(
            &Frame::new("SEND")
                .h("destination", &topic)
                .body_cl(body.clone()),
        )
        .await;
    }
    p.sync().await;
    let addr = broker.addr;
    let start = std::time::Instant::now();
    let status = broker.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?} with a 500 ms grace",
        start.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after exit"
    );
    drop(stuck);
}
