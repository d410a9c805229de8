//! Connection slots: what an anonymous or idle connection can hold, how many one address can
//! open, and how fast one address can guess passwords.

use std::time::{Duration, Instant};

use crate::harness::*;

#[tokio::test]
async fn a_silent_connection_without_subscriptions_is_closed_when_idle() {
    let broker = Broker::with_config("[limits]\nidle_timeout_ms = 300\n");
    let mut by = Bystander::new(&broker).await;
    let connect = Client::connect_frame(Version::V12).h("heart-beat", "0,0");
    let (mut silent, _) = Client::connect_with(broker.addr, connect.clone()).await;
    let (mut listening, _) = Client::connect_with(broker.addr, connect).await;
    listening
        .subscribe("s", &format!("/queue/{}", unique("idle")), "auto")
        .await;
    let err = silent.expect_error_close().await;
    assert!(err.must("message").contains("idle"), "{err:?}");
    assert_eq!(err.get("error-code"), Some("flow.idle"), "{err:?}");
    // A subscriber waiting for messages is not idle.
    listening.expect_silence(Duration::from_millis(600)).await;
    listening.sync().await;
    by.check().await;
}

#[tokio::test]
async fn before_connect_only_a_small_frame_is_read() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    // 100 KiB of headers in CONNECT: refused before authentication.
    let mut connect = Client::connect_frame(Version::V12);
    for i in 0..50 {
        connect = connect.h(&format!("x-pad-{i}"), &"p".repeat(2000));
    }
    let mut c = Client::open(broker.addr).await;
    c.write_raw_lossy(&connect.encode(Version::V12)).await;
    let err = c.expect_error_close().await;
    assert!(err.must("message").contains("limit"), "{err:?}");
    // The same headers on a SEND after CONNECT are within the normal limits.
    let mut ok = broker.client(Version::V12).await;
    let mut send = send_frame(&format!("/queue/{}", unique("big-headers")), &[], "x");
    for i in 0..50 {
        send = send.h(&format!("x-pad-{i}"), &"p".repeat(2000));
    }
    ok.roundtrip(send).await;
    by.check().await;
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_connections() {
    let broker = Broker::with_config("[limits]\nmax_connections_per_address = 3\n");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(broker.client(Version::V12).await);
    }
    let mut refused = Client::open(broker.addr).await;
    let err = refused.expect_error_close().await;
    assert!(
        err.must("message").contains("too many connections"),
        "{err:?}"
    );
    assert_eq!(err.get("error-code"), Some("limit.connections"), "{err:?}");
    // One goes away: a new one fits (once its session has ended, a moment after the close).
    held.pop().unwrap().disconnect().await;
    let deadline = Instant::now() + T;
    let mut again = loop {
        let (c, reply) =
            Client::connect_with(broker.addr, Client::connect_frame(Version::V12)).await;
        if reply.is("CONNECTED") {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slot never came back: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    again.send_r("/queue/per-address", "fits").await;
}

#[tokio::test]
async fn failed_logins_from_an_address_slow_its_next_attempts() {
    let broker = Broker::with_config("[[users]]\nlogin = \"alice\"\npasscode = \"right\"\n");
    let attempt = |passcode: &str| {
        Client::connect_frame(Version::V12)
            .h("login", "alice")
            .h("passcode", passcode)
    };
    for _ in 0..3 {
        let (mut c, reply) = Client::connect_with(broker.addr, attempt("wrong")).await;
        assert!(reply.is("ERROR"), "{reply:?}");
        c.expect_closed().await;
    }
    // Three failures: the next attempt waits 100 * 2^2 = 400 ms before it is checked.
    let started = Instant::now();
    let (_, reply) = Client::connect_with(broker.addr, attempt("wrong")).await;
    assert!(reply.is("ERROR"));
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "answered after {:?}",
        started.elapsed()
    );
    // The right password still works (after its wait), and resets the back-off.
    let (_, reply) = Client::connect_with(broker.addr, attempt("right")).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    let started = Instant::now();
    let (_, reply) = Client::connect_with(broker.addr, attempt("right")).await;
    assert!(reply.is("CONNECTED"));
    assert!(started.elapsed() < Duration::from_secs(5));
}
