//! CONNECT (static-auth in the demo config) and the permissions the host enforces from the
//! principal it returns.

use crate::common::stomp::{unique, Client, Frame, QUIET};
use crate::support::*;

#[tokio::test]
async fn demo_users_connect_with_their_passwords() {
    let broker = PluginBroker::start(&demo_config());
    for (user, pass) in [("alice", "alice-secret"), ("bob", "bob-secret")] {
        let (c, reply) = try_login(broker.addr, Some(user), Some(pass)).await;
        assert!(reply.is("CONNECTED"), "{user}: {reply:?}");
        assert_eq!(reply.get("version"), Some("1.2"), "{reply:?}");
        c.disconnect().await;
    }
}

#[tokio::test]
async fn connect_without_login_is_refused() {
    let broker = PluginBroker::start(&demo_config());
    let (mut c, reply) = try_login(broker.addr, None, None).await;
    let message = error_message(&reply).to_string();
    assert!(
        message.contains("access refused"),
        "ERROR should say access refused: {reply:?}"
    );
    c.expect_closed().await;
    // A login without a passcode is no better.
    let (mut c, reply) = try_login(broker.addr, Some("alice"), None).await;
    assert!(
        error_message(&reply).contains("access refused"),
        "{reply:?}"
    );
    c.expect_closed().await;
}

#[tokio::test]
async fn wrong_password_or_unknown_user_is_refused() {
    let broker = PluginBroker::start(&demo_config());
    for (user, pass) in [
        ("alice", "bob-secret"),
        ("alice", "alice-secret "),
        ("bob", "alice-secret"),
        ("mallory", "alice-secret"),
    ] {
        let (mut c, reply) = try_login(broker.addr, Some(user), Some(pass)).await;
        let message = error_message(&reply);
        assert!(
            message.contains("access refused"),
            "{user}/{pass}: ERROR should say access refused: {reply:?}"
        );
        assert!(
            !message.contains(pass.trim()),
            "the ERROR must not echo the passcode: {reply:?}"
        );
        c.expect_closed().await;
    }
    // The refusals did not hurt anyone else.
    let c = alice(broker.addr).await;
    c.disconnect().await;
}

#[tokio::test]
async fn bob_may_not_send() {
    let broker = PluginBroker::start(&demo_config());
    for dest in ["/queue/x", "/topic/public.news"] {
        let mut bob = bob(broker.addr).await;
        bob.write(
            &Frame::new("SEND")
                .h("destination", dest)
                .h("receipt", "s1")
                .body("hi"),
        )
        .await;
        let err = bob.expect_error_close().await;
        assert!(
            err.must("message").contains("may not send"),
            "bob SEND {dest}: {err:?}"
        );
        assert_eq!(err.get("receipt-id"), Some("s1"), "{err:?}");
    }
}

#[tokio::test]
async fn bob_may_not_subscribe_outside_public_topics() {
    let broker = PluginBroker::start(&demo_config());
    for dest in ["/queue/x", "/topic/private", "/topic/public"] {
        let mut bob = bob(broker.addr).await;
        bob.write(
            &Frame::new("SUBSCRIBE")
                .h("id", "0")
                .h("destination", dest)
                .h("receipt", "sub"),
        )
        .await;
        let err = bob.expect_error_close().await;
        assert!(
            err.must("message").contains("may not subscribe"),
            "bob SUBSCRIBE {dest}: {err:?}"
        );
        assert_eq!(err.get("receipt-id"), Some("sub"), "{err:?}");
    }
}

#[tokio::test]
async fn bob_receives_what_alice_publishes_on_public_topics() {
    let broker = PluginBroker::start(&demo_config());
    let mut bob = bob(broker.addr).await;
    bob.subscribe("news", "/topic/public.news", "auto").await;
    let mut alice = alice(broker.addr).await;
    alice.send_r("/topic/public.news", "extra! extra!").await;
    let m = bob.msg().await;
    assert_eq!(m.must("destination"), "/topic/public.news");
    assert_eq!(m.must("subscription"), "news");
    assert_eq!(m.body_str(), "extra! extra!");
    // Bob still may only read: his connection keeps working after that.
    alice.send_r("/topic/public.news", "second").await;
    assert_eq!(bob.msg().await.body_str(), "second");
    bob.disconnect().await;
}

#[tokio::test]
async fn alice_may_do_everything() {
    let broker = PluginBroker::start(&demo_config());
    let mut alice = alice(broker.addr).await;
    let queue = format!("/queue/{}", unique("alice"));
    let topic = format!("/topic/{}", unique("alice"));
    alice.subscribe("q", &queue, "client-individual").await;
    alice.subscribe("t", &topic, "auto").await;
    alice.subscribe("p", "/topic/public.news", "auto").await;
    alice.send_r(&queue, "to the queue").await;
    let m = alice.msg().await;
    assert_eq!(
        (m.must("subscription"), m.body_str()),
        ("q", "to the queue")
    );
    alice.ack(&m).await;
    alice.send_r(&topic, "to the topic").await;
    let m = alice.msg().await;
    assert_eq!(
        (m.must("subscription"), m.body_str()),
        ("t", "to the topic")
    );
    alice.send_r("/topic/public.news", "news").await;
    let m = alice.msg().await;
    assert_eq!((m.must("subscription"), m.body_str()), ("p", "news"));
    alice.expect_silence(QUIET).await;
    alice.disconnect().await;
}

#[tokio::test]
async fn the_stomp_command_is_authenticated_too() {
    let broker = PluginBroker::start(&demo_config());
    let stomp = |login: Option<&str>, pass: Option<&str>| {
        let mut f = Frame::new("STOMP")
            .h("accept-version", "1.2")
            .h("host", "localhost");
        if let Some(l) = login {
            f = f.h("login", l);
        }
        if let Some(p) = pass {
            f = f.h("passcode", p);
        }
        f
    };
    let (mut c, reply) = Client::connect_with(broker.addr, stomp(None, None)).await;
    assert!(
        error_message(&reply).contains("access refused"),
        "{reply:?}"
    );
    c.expect_closed().await;
    let (c, reply) =
        Client::connect_with(broker.addr, stomp(Some("bob"), Some("bob-secret"))).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    c.disconnect().await;
}

/// An authenticator with `failure = "open"` that a client makes fail on purpose (CONNECT headers
/// larger than the plugin's input cap, or a trap) admits the client as `anonymous` with no
/// rights, never under the login it claimed. probe admits every login with every permission
/// when it runs; hostile-puppet traps on a `trap` header.
#[tokio::test]
async fn forcing_an_open_authenticator_to_fail_never_yields_the_claimed_login() {
    for (component, force) in [("probe", "oversize"), ("hostile-puppet", "trap")] {
        let config = temp_config(&format!(
            r#"
[[plugins]]
name = "auth"
file = "{}"
hooks = ["authenticate"]
failure = "open"
memory_mb = 2
"#,
            plugin(component)
        ));
        let broker = PluginBroker::start(&config.path);
        let forced = || {
            let mut connect = connect_frame(Some("mallory"), Some("x"))
                .h("x-may-send", "*")
                .h("x-may-subscribe", "*");
            if force == "trap" {
                connect = connect.h("trap", "1");
            } else {
                // 40 headers of 15 KiB: more than a quarter of 2 MiB, the plugin's input cap.
                let pad = "p".repeat(15 * 1024);
                for i in 0..40 {
                    connect = connect.h(&format!("x-pad-{i}"), &pad);
                }
            }
            connect
        };
        let (mut c, reply) = Client::connect_with(broker.addr, forced()).await;
        assert!(reply.is("CONNECTED"), "{component}: fails open: {reply:?}");
        let queue = format!("/queue/{}", unique("mallory"));
        c.write(&send_frame(&queue, &[], "as whom?").h("receipt", "s"))
            .await;
        let err = c.expect_error_close().await;
        assert!(
            err.must("message").contains("'anonymous' may not send"),
            "{component}: the client is anonymous, without rights: {err:?}"
        );
        let (mut c, _) = Client::connect_with(broker.addr, forced()).await;
        c.write(
            &Frame::new("SUBSCRIBE")
                .h("id", "0")
                .h("destination", &queue)
                .h("receipt", "sub"),
        )
        .await;
        let err = c.expect_error_close().await;
        assert!(
            err.must("message").contains("may not subscribe"),
            "{component}: {err:?}"
        );
    }
}
