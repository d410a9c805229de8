//! Expiring logins and re-authentication (`reauth:true`) over TCP, with the `jwt-auth` sample
//! (HS256, RS256 and ES256 tokens made here with the fixtures' keys): expiry closes with
//! `auth.expired`, a re-authentication extends the login and keeps subscriptions and
//! transactions, narrower rights end the uncovered subscription with `permission.revoked`
//! and keep the connection, a refusal closes, a plain second CONNECT is still an error.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use plugboard_test_support::metrics::scrape;
use plugboard_test_support::plugins::workspace_root;
use plugboard_test_support::stomp::{Client, Frame};
use serde_json::json;

const SECRET: &str = "reauth-test-secret-of-at-least-32-bytes";

fn fixture(name: &str) -> String {
    let path = workspace_root()
        .join("plugins/jwt-auth/fixtures")
        .join(name);
    std::fs::read_to_string(path).expect("jwt-auth fixture")
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A broker whose authenticator is jwt-auth (no leeway, so `exp` is the expiry), with `limits`
/// and an admin listener.
fn jwt_broker(limits: &str) -> (PluginBroker, TempConfig) {
    let config = temp_config(&format!(
        r#"
admin_listen = "127.0.0.1:0"

[limits]
{limits}

[[plugins]]
name = "jwt"
file = "{file}"
hooks = ["authenticate"]

[plugins.config]
issuer = "https://idp.test"
audience = "plugboard"
leeway_seconds = 0
keys = [
  {{ algorithm = "HS256", secret = "{SECRET}" }},
  {{ algorithm = "RS256", public_key = '''{rsa}''' }},
  {{ algorithm = "ES256", public_key = '''{ec}''' }},
]

[plugins.config.scopes.write]
may_send = ["/queue/*", "/topic/*"]

[plugins.config.scopes.read]
may_subscribe = ["/queue/*", "/topic/*"]

[plugins.config.scopes.news]
may_subscribe = ["/topic/news"]
"#,
        file = plugin("jwt-auth"),
        rsa = fixture("rs256-public.pem"),
        ec = fixture("es256-public.pem"),
    ));
    (start_with_status(&config.path), config)
}

/// A token for `sub` with `scope`, expiring `exp_in` seconds from now, signed with `alg`.
fn token(alg: Algorithm, sub: &str, scope: &str, exp_in: u64) -> String {
    let claims = json!({
        "sub": sub, "iss": "https://idp.test", "aud": "plugboard",
        "exp": now_s() + exp_in, "scope": scope,
    });
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::RS256 => {
            EncodingKey::from_rsa_pem(fixture("rs256-private.pem").as_bytes()).unwrap()
        }
        Algorithm::ES256 => {
            EncodingKey::from_ec_pem(fixture("es256-private.pem").as_bytes()).unwrap()
        }
        other => panic!("{other:?}"),
    };
    encode(&Header::new(alg), &claims, &key).unwrap()
}

/// Scrapes `/metrics` until `name` (no labels) reads `want`, or fails with the last value (the
/// broker's counters reach the endpoint within moments, not at once).
async fn expect_counter(broker: &PluginBroker, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = scrape(broker.admin(), None).await.value(name, labels);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}{labels:?} is {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn connect(token: &str) -> Frame {
    Frame::new("CONNECT")
        .h("accept-version", "1.2")
        .h("host", "localhost")
        .h("login", "ignored")
        .h("passcode", token)
}

fn reauth(token: &str) -> Frame {
    connect(token).h("reauth", "true")
}

async fn login(broker: &PluginBroker, token: &str) -> Client {
    let (c, reply) = Client::connect_with(broker.addr, connect(token)).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    assert!(
        reply.must("capabilities").split(',').any(|c| c == "reauth"),
        "{reply:?}"
    );
    c
}

#[tokio::test]
async fn a_login_ends_at_its_exp_with_auth_expired() {
    // The idle limit is armed too on the connection without a subscription: the one timer
    // fires for whichever comes first.
    let (broker, _config) = jwt_broker("idle_timeout_ms = 60000");
    let short = token(Algorithm::HS256, "alice", "read write", 2);
    let mut subscribed = login(&broker, &short).await;
    subscribed.subscribe("s-1", "/queue/expiring", "auto").await;
    let mut idle = login(&broker, &short).await;
    for c in [&mut subscribed, &mut idle] {
        let err = c.expect_error_close().await;
        assert_eq!(err.get("error-code"), Some("auth.expired"), "{err:?}");
        assert_eq!(err.get("message"), Some("credentials expired"), "{err:?}");
    }
    expect_counter(&broker, "plugboard_auth_expired_total", &[], 2.0).await;
    let auth = [("reason", "auth")];
    expect_counter(&broker, "plugboard_connections_closed_total", &auth, 2.0).await;
    // A token already expired is refused at CONNECT.
    let expired = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "iss": "https://idp.test", "aud": "plugboard", "exp": now_s() - 5}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let (mut c, reply) = Client::connect_with(broker.addr, connect(&expired)).await;
    assert!(reply.is("ERROR"), "{reply:?}");
    assert_eq!(reply.get("error-code"), Some("auth.denied"), "{reply:?}");
    assert!(reply.must("message").contains("token expired"), "{reply:?}");
    c.expect_closed().await;
}

#[tokio::test]
async fn reauth_before_exp_extends_the_login_and_keeps_subscriptions_and_transactions() {
    let (broker, _config) = jwt_broker("");
    let short = token(Algorithm::RS256, "alice", "read write", 2);
    let mut c = login(&broker, &short).await;
    let first = c.connected.clone().unwrap();
    c.subscribe("s-1", "/queue/kept", "client-individual").await;
    c.write(&Frame::new("BEGIN").h("transaction", "tx-1")).await;
    c.write(
        &Frame::new("SEND")
            .h("destination", "/queue/kept")
            .h("transaction", "tx-1")
            .body("in the transaction"),
    )
    .await;
    // A fresh token (another algorithm, the same user) before the first one expires.
    c.write(&reauth(&token(
        Algorithm::ES256,
        "alice",
        "read write",
        120,
    )))
    .await;
    let again = c.expect("CONNECTED").await;
    for header in ["session", "version", "heart-beat", "capabilities"] {
        assert_eq!(again.get(header), first.get(header), "{header}: {again:?}");
    }
    // Past the first token's exp, the connection is still open, its transaction too.
    c.expect_silence(Duration::from_secs(3)).await;
    let receipt = c.next_receipt();
    c.write(
        &Frame::new("COMMIT")
            .h("transaction", "tx-1")
            .h("receipt", &receipt),
    )
    .await;
    let msg = c.msg().await;
    assert_eq!(msg.body_str(), "in the transaction");
    assert_eq!(msg.get("subscription"), Some("s-1"));
    c.ack(&msg).await;
    c.disconnect().await;
    expect_counter(&broker, "plugboard_auth_reauthentications_total", &[], 1.0).await;
    // Counted with it, had the first token's expiry closed anything.
    expect_counter(&broker, "plugboard_auth_expired_total", &[], 0.0).await;
}

#[tokio::test]
async fn reauth_with_bad_credentials_or_another_user_closes() {
    let (broker, _config) = jwt_broker("");
    let good = token(Algorithm::HS256, "alice", "read write", 60);
    let mut c = login(&broker, &good).await;
    c.write(&reauth("not-a-token")).await;
    let err = c.expect_error_close().await;
    assert_eq!(err.get("error-code"), Some("auth.denied"), "{err:?}");
    let mut c = login(&broker, &good).await;
    c.write(&reauth(&token(
        Algorithm::HS256,
        "mallory",
        "read write",
        60,
    )))
    .await;
    let err = c.expect_error_close().await;
    assert_eq!(err.get("error-code"), Some("auth.denied"), "{err:?}");
    assert!(err.must("message").contains("same user"), "{err:?}");
    // Both count as failed logins, and close for `auth`.
    expect_counter(&broker, "plugboard_auth_attempts_failed_total", &[], 2.0).await;
    let auth = [("reason", "auth")];
    expect_counter(&broker, "plugboard_connections_closed_total", &auth, 2.0).await;
}

#[tokio::test]
async fn narrower_rights_end_the_uncovered_subscription_and_keep_the_connection() {
    let (broker, _config) = jwt_broker("");
    let mut c = login(&broker, &token(Algorithm::HS256, "alice", "read write", 60)).await;
    c.subscribe("audit", "/topic/audit", "auto").await;
    c.subscribe("news", "/topic/news", "auto").await;
    c.write(&reauth(&token(Algorithm::HS256, "alice", "news write", 60)))
        .await;
    let err = c.expect("ERROR").await;
    assert_eq!(err.get("subscription"), Some("audit"), "{err:?}");
    assert_eq!(err.get("error-code"), Some("permission.revoked"), "{err:?}");
    c.expect("CONNECTED").await;
    // The connection goes on: news still delivers, audit does not any more.
    c.send_r("/topic/audit", "secret").await;
    c.send_r("/topic/news", "hello").await;
    let msg = c.msg().await;
    assert_eq!(msg.get("subscription"), Some("news"), "{msg:?}");
    assert_eq!(msg.body_str(), "hello");
    c.expect_silence(Duration::from_millis(300)).await;
    // And subscribing to audit again is refused by the new rights.
    c.write(
        &Frame::new("SUBSCRIBE")
            .h("id", "again")
            .h("destination", "/topic/audit"),
    )
    .await;
    let err = c.expect_error_close().await;
    assert_eq!(
        err.get("error-code"),
        Some("permission.subscribe"),
        "{err:?}"
    );
}

#[tokio::test]
async fn connect_without_reauth_mid_session_is_still_an_error() {
    let (broker, _config) = jwt_broker("");
    let good = token(Algorithm::HS256, "alice", "read write", 60);
    let mut c = login(&broker, &good).await;
    c.write(&connect(&good)).await;
    let err = c.expect_error_close().await;
    assert_eq!(
        err.get("error-code"),
        Some("protocol.already-connected"),
        "{err:?}"
    );
}

#[tokio::test]
async fn pipelined_reauths_are_answered_in_order_and_capped_per_minute() {
    let (broker, _config) = jwt_broker("max_reauth_per_minute = 2");
    let good = token(Algorithm::HS256, "alice", "read write", 60);
    // The first CONNECT and two re-authentications in one write: each waits its turn.
    let mut c = Client::open(broker.addr).await;
    c.write_all(&[connect(&good), reauth(&good), reauth(&good)])
        .await;
    for _ in 0..3 {
        c.expect("CONNECTED").await;
    }
    c.write(&reauth(&good)).await;
    let err = c.expect_error_close().await;
    assert_eq!(err.get("error-code"), Some("limit.reauth-rate"), "{err:?}");
}
