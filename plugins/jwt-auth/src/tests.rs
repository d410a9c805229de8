//! Tokens made here with the same crate (keys: the fixtures, generated once with openssl).

use super::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use plugboard_sdk::ListenerKind;
use serde_json::json;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
const RS_PRIVATE: &str = include_str!("../fixtures/rs256-private.pem");
const RS_PUBLIC: &str = include_str!("../fixtures/rs256-public.pem");
const ES_PRIVATE: &str = include_str!("../fixtures/es256-private.pem");
const ES_PUBLIC: &str = include_str!("../fixtures/es256-public.pem");
const NOW_S: u64 = 1_800_000_000;

fn plugin(extra: serde_json::Value) -> JwtAuth {
    let mut config = json!({
        "issuer": "https://idp.test",
        "audience": "plugboard",
        "keys": [
            {"algorithm": "HS256", "secret": SECRET},
            {"algorithm": "RS256", "kid": "rsa-1", "public_key": RS_PUBLIC},
            {"algorithm": "ES256", "public_key": ES_PUBLIC},
        ],
        "scopes": {
            "orders.write": {"may_send": ["/queue/orders*"]},
            "orders.read": {"may_subscribe": ["/queue/orders*", "/topic/orders.*"]},
        },
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    plugboard_sdk::init::<JwtAuth>(&config.to_string()).unwrap()
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut claims = json!({
        "sub": "alice", "iss": "https://idp.test", "aud": "plugboard",
        "exp": NOW_S + 600, "scope": "orders.write orders.read unknown",
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

fn hs(claims: &serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn rs(claims: &serde_json::Value, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(RS_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn es(claims: &serde_json::Value) -> String {
    let key = EncodingKey::from_ec_pem(ES_PRIVATE.as_bytes()).unwrap();
    encode(&Header::new(Algorithm::ES256), claims, &key).unwrap()
}

fn request(passcode: &str) -> ExpiringAuthRequest {
    ExpiringAuthRequest {
        login: Some("ignored".into()),
        passcode: Some(passcode.into()),
        host: None,
        client_addr: "127.0.0.1:1".into(),
        headers: vec![plugboard_sdk::Header::new("x-token", passcode)],
        listener: ListenerKind::Tcp,
        client_certificate: None,
        upgrade: None,
        now_ms: NOW_S * 1000,
        reauth: false,
    }
}

#[test]
fn each_algorithm_admits_with_the_scopes_rights_until_exp() {
    let p = plugin(json!({}));
    for token in [
        hs(&claims(json!({}))),
        rs(&claims(json!({})), Some("rsa-1")),
        es(&claims(json!({}))),
    ] {
        let (principal, expires) = p.admit(&request(&token)).unwrap();
        assert_eq!(principal.name, "alice");
        assert_eq!(principal.groups, ["orders.read", "orders.write"]);
        assert_eq!(principal.may_send, ["/queue/orders*"]);
        assert_eq!(
            principal.may_subscribe,
            ["/queue/orders*", "/topic/orders.*"]
        );
        assert_eq!(expires, (NOW_S + 600 + 30) * 1000);
    }
    // An array of scopes works too; no known scope: no rights.
    let token = hs(&claims(json!({"scope": ["orders.read"]})));
    let (principal, _) = p.admit(&request(&token)).unwrap();
    assert!(principal.may_send.is_empty());
    let token = hs(&claims(json!({"scope": "admin"})));
    let (principal, _) = p.admit(&request(&token)).unwrap();
    assert!(principal.may_send.is_empty() && principal.may_subscribe.is_empty());
}

#[test]
fn exp_nbf_iss_aud_are_checked_with_leeway() {
    let p = plugin(json!({"leeway_seconds": 10}));
    let refused = |c: serde_json::Value| p.admit(&request(&hs(&claims(c)))).unwrap_err();
    assert_eq!(refused(json!({"exp": NOW_S - 10})), "token expired");
    assert!(p
        .admit(&request(&hs(&claims(json!({"exp": NOW_S - 9})))))
        .is_ok());
    assert_eq!(refused(json!({"nbf": NOW_S + 11})), "token not valid yet");
    assert!(p
        .admit(&request(&hs(&claims(json!({"nbf": NOW_S + 10})))))
        .is_ok());
    assert!(refused(json!({"iss": "https://evil.test"})).contains("wrong issuer"));
    assert!(refused(json!({"aud": "other"})).contains("wrong audience"));
    let mut no_exp = claims(json!({}));
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(p.admit(&request(&hs(&no_exp))).is_err());
    assert!(refused(json!({"sub": 7})).contains("'sub'"));
}

#[test]
fn signatures_keys_and_algorithms_must_match() {
    let p = plugin(json!({}));
    let token = hs(&claims(json!({})));
    // A flipped signature byte.
    let mut bad = token.clone().into_bytes();
    let last = bad.len() - 2;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    assert!(p
        .admit(&request(std::str::from_utf8(&bad).unwrap()))
        .is_err());
    // The RSA key answers to kid rsa-1 only.
    assert!(p.admit(&request(&rs(&claims(json!({})), None))).is_err());
    assert!(p
        .admit(&request(&rs(&claims(json!({})), Some("rsa-2"))))
        .is_err());
    // HS256 signed with the RSA public key as secret (algorithm confusion) is refused.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(RS_PUBLIC.as_bytes()),
    )
    .unwrap();
    assert!(p.admit(&request(&forged)).is_err());
    assert_eq!(p.admit(&request("")).unwrap_err(), "no token");
    assert_eq!(
        p.admit(&request("not.a.jwt")).unwrap_err(),
        "malformed token"
    );
    assert_eq!(
        p.admit(&request(&"x".repeat(20_000))).unwrap_err(),
        "token too large"
    );
}

#[test]
fn the_token_can_come_from_login_or_a_header() {
    let token = hs(&claims(json!({})));
    let p = plugin(json!({"token_from": "header:x-token"}));
    assert!(p.admit(&request(&token)).is_ok());
    let p = plugin(json!({"token_from": "login"}));
    assert!(p.admit(&request(&token)).is_err());
    let mut req = request("");
    req.login = Some(token);
    assert!(p.admit(&req).is_ok());
}

#[test]
fn bad_configs_are_refused_at_init() {
    let base =
        |keys: serde_json::Value| json!({"issuer": "i", "audience": "a", "keys": keys}).to_string();
    let init = |json: String| {
        plugboard_sdk::init::<JwtAuth>(&json)
            .err()
            .unwrap_or_default()
    };
    assert!(init(base(json!([]))).contains("keys"));
    assert!(init(base(json!([{"algorithm": "HS256", "secret": "short"}]))).contains("32 bytes"));
    assert!(init(base(json!([{"algorithm": "none", "secret": SECRET}]))).contains("not supported"));
    assert!(init(base(
        json!([{"algorithm": "RS256", "public_key": "garbage"}])
    ))
    .contains("keys[0]"));
    assert!(init(base(json!([{"algorithm": "RS256", "secret": SECRET}]))).contains("public_key"));
    let bad_source = json!({"issuer": "i", "audience": "a", "token_from": "cookie",
        "keys": [{"algorithm": "HS256", "secret": SECRET}]});
    assert!(init(bad_source.to_string()).contains("token_from"));
}
