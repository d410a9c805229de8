//! Re-authentication (`reauth:true`) with the broker's built-in users, in every version: the
//! answer and what it keeps, a wrong passcode, another vhost, a CONNECT `receipt` (ignored),
//! and `max_reauth_per_minute = 0` (off, and not advertised). Expiry needs an authenticate
//! plugin that gives one: `tests/plugins/reauth.rs` (jwt-auth).

use std::time::Duration;

use crate::harness::*;

const USERS: &str = r#"
[[users]]
login = "alice"
passcode = "secret"

[[users]]
login = "bob"
passcode = "bob-secret"
"#;

fn reauth(login: &str, passcode: &str) -> Frame {
    Frame::new("CONNECT")
        .h("accept-version", "1.2")
        .h("login", login)
        .h("passcode", passcode)
        .h("reauth", "true")
}

async fn alice(broker: &Broker) -> Client {
    let connect = Client::connect_frame(Version::V12)
        .h("login", "alice")
        .h("passcode", "secret");
    let (c, reply) = Client::connect_with(broker.addr, connect).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    c
}

#[tokio::test]
async fn a_1_0_session_reauthenticates_with_the_headers_it_writes() {
    let broker = Broker::with_config(USERS);
    let mut c = Client::open(broker.addr).await;
    c.write_raw(b"CONNECT\nlogin: alice\npasscode: secret\n\n\0")
        .await;
    let first = c.expect("CONNECTED").await;
    c.write_raw(b"SUBSCRIBE\ndestination: /queue/old\nid: 1\n\n\0")
        .await;
    // 1.0 style: spaces after the colons, trimmed as in every later frame of the session.
    c.write_raw(b"CONNECT\nlogin: alice\npasscode: secret\nreauth: true\n\n\0")
        .await;
    let again = c.expect("CONNECTED").await;
    assert_eq!(again.get("session"), first.get("session"), "{again:?}");
    assert_eq!(again.get("version"), None, "still a 1.0 session: {again:?}");
    c.write_raw(b"SEND\ndestination: /queue/old\n\nkept\0")
        .await;
    assert_eq!(c.msg().await.body_str(), "kept");
}

#[tokio::test]
async fn a_receipt_on_the_reauth_connect_is_ignored_and_the_session_goes_on() {
    let broker = Broker::with_config(USERS);
    let mut c = alice(&broker).await;
    c.write(&reauth("alice", "secret").h("receipt", "r-1"))
        .await;
    c.expect("CONNECTED").await;
    c.expect_silence(Duration::from_millis(300)).await;
    c.send_r("/queue/after", "still here").await;
    c.disconnect().await;
}

#[tokio::test]
async fn a_wrong_passcode_or_another_user_is_refused_and_closes() {
    let broker = Broker::with_config(USERS);
    for (login, passcode, says) in [
        ("alice", "wrong", "bad login or passcode"),
        ("bob", "bob-secret", "same user"),
    ] {
        let mut c = alice(&broker).await;
        c.write(&reauth(login, passcode)).await;
        let err = c.expect_error_close().await;
        assert_eq!(err.get("error-code"), Some("auth.denied"), "{err:?}");
        assert!(err.must("message").contains(says), "{login}: {err:?}");
    }
}

#[tokio::test]
async fn reauth_stays_in_its_vhost() {
    let broker = Broker::with_config(&format!(
        "{USERS}\n[[vhosts]]\nname = \"a\"\n[[vhosts]]\nname = \"b\"\n"
    ));
    let connect = |host: &str| {
        Frame::new("CONNECT")
            .h("accept-version", "1.2")
            .h("login", "alice")
            .h("passcode", "secret")
            .h("host", host)
    };
    let (mut c, reply) = Client::connect_with(broker.addr, connect("a")).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    // Naming its own vhost is fine; another one is refused.
    c.write(&reauth("alice", "secret").h("host", "a")).await;
    c.expect("CONNECTED").await;
    c.write(&reauth("alice", "secret").h("host", "b")).await;
    let err = c.expect_error_close().await;
    assert_eq!(err.get("error-code"), Some("auth.denied"), "{err:?}");
    assert!(err.must("message").contains("virtual host"), "{err:?}");
}

#[tokio::test]
async fn reauth_can_be_turned_off() {
    let broker = Broker::with_config(&format!("[limits]\nmax_reauth_per_minute = 0\n{USERS}"));
    let mut c = alice(&broker).await;
    let capabilities = c
        .connected
        .as_ref()
        .unwrap()
        .must("capabilities")
        .to_string();
    assert!(
        !capabilities.split(',').any(|n| n == "reauth"),
        "{capabilities}"
    );
    c.write(&reauth("alice", "secret")).await;
    let err = c.expect_error_close().await;
    assert_eq!(err.get("error-code"), Some("limit.reauth-rate"), "{err:?}");
}
