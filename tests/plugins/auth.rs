//! CONNECT (static-auth in the demo config) and the permissions the host enforces from the
//! principal it returns; `plugboard hash-password` and the argon2id hashes static-auth checks.

use crate::support::*;
use plugboard_test_support::stomp::{unique, Client, Frame, QUIET};

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
    assert_eq!(reply.get("error-code"), Some("auth.denied"), "{reply:?}");
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
        assert_eq!(err.get("error-code"), Some("permission.send"), "{err:?}");
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
        assert_eq!(
            err.get("error-code"),
            Some("permission.subscribe"),
            "{err:?}"
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

#[test]
fn hash_password_output_verifies_in_static_auth() {
    let password = "correct horse battery staple";
    for (args, prefix) in [
        (&[][..], "$argon2id$v=19$m=19456,t=2,p=1$"),
        (
            &["--memory-kib", "8192", "--passes", "3", "--lanes", "2"][..],
            "$argon2id$v=19$m=8192,t=3,p=2$",
        ),
        (
            &["-m", "9216", "-t", "4"][..],
            "$argon2id$v=19$m=9216,t=4,p=1$",
        ),
    ] {
        // As `echo` would send it: the line break is not part of the password.
        let phc = phc_of(&format!("{password}\n"), args);
        assert!(phc.starts_with(prefix), "{args:?}: {phc}");
        let json = serde_json::json!({ "users": [{ "name": "erin", "password_hash": phc }] });
        let config = static_auth::parse_config(&json.to_string()).expect("static-auth accepts it");
        let user = static_auth::check(&config, Some("erin"), Some(password));
        assert_eq!(user.map(|u| u.name.as_str()), Ok("erin"), "{args:?}");
        for wrong in [
            "correct horse battery stapl",
            "correct horse battery staple\n",
            "Correct horse battery staple",
            "",
        ] {
            assert_eq!(
                static_auth::check(&config, Some("erin"), Some(wrong)).err(),
                Some(static_auth::Refusal::Invalid),
                "{wrong:?}"
            );
        }
    }
    // A fresh salt each time: the same password never gives the same string.
    assert_ne!(phc_of(password, &[]), phc_of(password, &[]));
}

#[test]
fn hash_password_refuses_what_static_auth_could_not_use() {
    for (input, args, reason) in [
        ("pw", &["--memory-kib", "4096"][..], "8192"),
        ("pw", &["--passes", "0"][..], "argon2 parameters"),
        ("two\nlines\n", &[][..], "one line"),
        ("", &[][..], "no password"),
        ("\n", &[][..], "no password"),
    ] {
        let run = hash_password(input, args);
        assert!(!run.status.success(), "{input:?} {args:?}: {}", run.stdout);
        assert!(run.stdout.is_empty(), "nothing on stdout: {:?}", run.stdout);
        assert!(
            run.stderr.contains(reason),
            "{input:?} {args:?}: {}",
            run.stderr
        );
    }
    // The password has no command-line argument to go in.
    let run = hash_password("pw", &["pw"]);
    assert!(
        !run.status.success() && run.stdout.is_empty(),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn a_password_hashed_by_plugboard_connects_and_a_wrong_one_is_refused() {
    let phc = phc_of("erin-secret\n", &[]);
    let config = temp_config(&format!(
        "admin_listen = \"127.0.0.1:0\"\n{}",
        static_auth_plugin(&format!(
            "\n[[plugins.config.users]]\nname = \"erin\"\npassword_hash = '{phc}'\n\
             may_send = [\"*\"]\nmay_subscribe = [\"*\"]\n"
        ))
    ));
    let broker = start_with_status(&config.path);
    let (c, reply) = try_login(broker.addr, Some("erin"), Some("erin-secret")).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    c.disconnect().await;
    for (user, pass) in [
        ("erin", Some("erin-secreT")),
        ("erin", Some("erin-secret ")),
        ("erin", Some("")),
        ("erin", None),
        ("frank", Some("erin-secret")),
    ] {
        let (mut c, reply) = try_login(broker.addr, Some(user), pass).await;
        let message = error_message(&reply);
        assert!(
            message.contains("access refused"),
            "{user}/{pass:?}: ERROR should say access refused: {reply:?}"
        );
        assert!(
            !message.contains("erin-secret"),
            "the ERROR must not echo the passcode: {reply:?}"
        );
        c.expect_closed().await;
    }
    // Still admitted after the refusals.
    let (c, reply) = try_login(broker.addr, Some("erin"), Some("erin-secret")).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    c.disconnect().await;
    // Every verification ran to the end in one instance: the sandbox fits the hash.
    assert_eq!(plugin_counter(&broker, "auth", "calls").await, 7);
    for counter in ["timeouts", "memory_limit", "traps", "recycled", "busy"] {
        assert_eq!(
            plugin_counter(&broker, "auth", counter).await,
            0,
            "{counter}: {}",
            broker.log_tail()
        );
    }
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
# CONNECT frames large enough to exceed the plugin's input cap (before authentication a
# frame may only be 64 KiB by default).
[limits]
max_connect_frame_bytes = 1048576

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

/// A plugin built against WIT 0.1.0 (before `authenticate-peer`) still loads, is called through
/// its 0.1.0 `authenticate` export, and the rights of the principal it returns are enforced.
#[tokio::test]
async fn a_plugin_built_against_wit_0_1_0_still_authenticates() {
    let config = temp_config(&format!(
        "[[plugins]]\nname = \"legacy\"\nfile = {:?}\nhooks = [\"authenticate\"]\n",
        plugin("legacy-auth")
    ));
    let broker = PluginBroker::start(&config.path);
    let (mut refused, reply) = try_login(broker.addr, Some("legacy"), Some("wrong")).await;
    assert!(
        error_message(&reply).contains("legacy-auth knows only"),
        "{reply:?}"
    );
    refused.expect_closed().await;

    let mut c = login(broker.addr, "legacy", "old-plugin").await;
    c.send_r("/queue/legacy.in", "hi").await;
    c.write(
        &Frame::new("SEND")
            .h("destination", "/queue/elsewhere")
            .h("receipt", "no")
            .body("hi"),
    )
    .await;
    let err = c.expect_error_close().await;
    assert!(err.must("message").contains("may not send"), "{err:?}");
}
