//! Unit tests of the config checks, password and certificate login, and the token lookup.

use super::*;
use argon2::{Algorithm, PasswordHasher, Version};

/// An argon2id PHC string of `password` with m = 8 MiB (the floor), t = 1, p = 1.
fn phc(password: &str, salt: &[u8]) -> String {
    phc_with(
        Algorithm::Argon2id,
        Version::V0x13,
        MIN_M_KIB,
        1,
        password,
        salt,
    )
}

fn phc_with(
    algorithm: Algorithm,
    version: Version,
    m: u32,
    t: u32,
    password: &str,
    salt: &[u8],
) -> String {
    let params = Params::new(m, t, 1, None).unwrap();
    Argon2::new(algorithm, version, params)
        .hash_password_with_salt(password.as_bytes(), salt)
        .unwrap()
        .to_string()
}

fn user(name: &str, fields: &str) -> String {
    format!(r#"{{"users":[{{"name":"{name}",{fields}}}]}}"#)
}

fn config() -> Config {
    let hash = phc("pw", b"salt-of-a");
    parse_config(&user("a", &format!(r#""password_hash":"{hash}""#))).unwrap()
}

fn cert(subject: &str, cn: Option<&str>) -> ClientCertificate {
    ClientCertificate {
        subject: subject.into(),
        common_name: cn.map(str::to_string),
        subject_alt_names: Vec::new(),
        der: Vec::new(),
    }
}

#[test]
fn a_verified_certificate_logs_in_by_cn_or_dn_over_tls_only() {
    let c = parse_config(
        r#"{"certificates":[
            {"common_name":"sensor-7","may_send":["/queue/readings"]},
            {"subject":"CN=ops,O=Example","name":"operator"}]}"#,
    )
    .unwrap();
    let sensor = cert("CN=sensor-7,O=Example", Some("sensor-7"));
    let by_cn = check_certificate(&c, ListenerKind::Tls, Some(&sensor), None);
    assert_eq!(by_cn.unwrap().unwrap().principal_name(), "sensor-7");
    let ops = cert("CN=ops,O=Example", Some("ops"));
    let by_dn = check_certificate(&c, ListenerKind::SecureWebSocket, Some(&ops), None);
    assert_eq!(by_dn.unwrap().unwrap().principal_name(), "operator");
    // The same DN's CN alone does not match an entry that names the whole DN.
    let other = cert("CN=ops,O=Elsewhere", Some("ops"));
    assert!(check_certificate(&c, ListenerKind::Tls, Some(&other), None).is_none());
    // Not over TLS, or no certificate: login and passcode decide.
    assert!(check_certificate(&c, ListenerKind::Tcp, Some(&sensor), None).is_none());
    assert!(check_certificate(&c, ListenerKind::WebSocket, Some(&sensor), None).is_none());
    assert!(check_certificate(&c, ListenerKind::Tls, None, None).is_none());
    // A login naming someone else is refused; naming the same principal is fine.
    let other_login = check_certificate(&c, ListenerKind::Tls, Some(&sensor), Some("alice"));
    assert_eq!(other_login.unwrap().unwrap_err(), Refusal::Invalid);
    let same = check_certificate(&c, ListenerKind::Tls, Some(&sensor), Some("sensor-7"));
    assert!(same.unwrap().is_ok());
}

#[test]
fn a_bearer_token_logs_in_when_connect_has_no_login() {
    // `printf %s abc | sha256sum`
    let c = parse_config(
        r#"{"tokens":[{"token_sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "name":"svc","may_send":["/queue/jobs"]}]}"#,
    )
    .unwrap();
    let good = UpgradeCredentials::Bearer("abc".into());
    let entry = check_token(&c, Some(&good), None).unwrap().unwrap();
    assert_eq!(
        (entry.name.as_str(), &entry.may_send[..]),
        ("svc", &["/queue/jobs".to_string()][..])
    );
    let bad = UpgradeCredentials::Bearer("abd".into());
    assert_eq!(
        check_token(&c, Some(&bad), None).unwrap().unwrap_err(),
        Refusal::Invalid
    );
    // A login in CONNECT, Basic credentials or no upgrade at all: not the token's business.
    assert!(check_token(&c, Some(&good), Some("alice")).is_none());
    let basic = UpgradeCredentials::Basic(plugboard::plugin::types::BasicCredentials {
        login: "a".into(),
        passcode: "abc".into(),
    });
    assert!(check_token(&c, Some(&basic), None).is_none());
    assert!(check_token(&c, None, None).is_none());
    // Config errors name the entry.
    let e = parse_config(r#"{"tokens":[{"token_sha256":"00","name":"svc"}]}"#).unwrap_err();
    assert!(
        e.contains("tokens[0]") && e.contains("64 hex digits"),
        "{e}"
    );
    let e =
        parse_config(r#"{"tokens":[{"token_sha256":"00","name":"svc","pasword":1}]}"#).unwrap_err();
    assert!(e.contains("pasword"), "{e}");
}

#[test]
fn a_certificate_entry_must_match_something() {
    let err = parse_config(r#"{"certificates":[{"name":"x"}]}"#).unwrap_err();
    assert!(err.contains("common_name"), "{err}");
}

#[test]
fn accepts_right_password_only() {
    let c = config();
    assert_eq!(check(&c, Some("a"), Some("pw")).unwrap().name, "a");
    assert_eq!(
        check(&c, Some("a"), Some("px")).unwrap_err(),
        Refusal::Invalid
    );
    assert_eq!(
        check(&c, Some("a"), Some("pw ")).unwrap_err(),
        Refusal::Invalid
    );
    assert_eq!(
        check(&c, Some("a"), Some("")).unwrap_err(),
        Refusal::Invalid
    );
    assert_eq!(check(&c, Some("a"), None).unwrap_err(), Refusal::Invalid);
    assert_eq!(check(&c, None, Some("pw")).unwrap_err(), Refusal::Invalid);
    assert_eq!(
        check(&c, Some("b"), Some("pw")).unwrap_err(),
        Refusal::Invalid
    );
}

#[test]
fn huge_login_or_passcode_is_just_refused() {
    let c = config();
    let huge = "x".repeat(1 << 20);
    assert_eq!(
        check(&c, Some(&huge), Some("pw")).unwrap_err(),
        Refusal::Invalid
    );
    assert_eq!(
        check(&c, Some("a"), Some(&huge)).unwrap_err(),
        Refusal::Invalid
    );
}

#[test]
fn unknown_logins_are_hashed_with_the_users_parameters() {
    let c = config();
    assert!(same_cost(&c.dummy, &c.users[0].password_hash));
    assert_eq!(c.dummy.algorithm, ARGON2ID_IDENT);
    // Verifying against the dummy fails like a wrong password, not with another error.
    assert_eq!(
        Argon2::default().verify_password(b"pw", &c.dummy),
        Err(argon2::password_hash::Error::PasswordInvalid)
    );
    // With no users, the defaults (what `plugboard hash-password` uses).
    let empty = parse_config(r#"{"users":[]}"#).unwrap();
    let params = Params::try_from(&empty.dummy).unwrap();
    assert_eq!(
        (params.m_cost(), params.t_cost(), params.p_cost()),
        (19 * 1024, 2, 1)
    );
}

#[test]
fn the_dummy_takes_the_most_common_parameters() {
    let cheap = phc("pw", b"salt-of-a");
    let dear = phc_with(
        Algorithm::Argon2id,
        Version::V0x13,
        MIN_M_KIB,
        2,
        "pw",
        b"salt-of-b",
    );
    let json = format!(
        r#"{{"users":[{{"name":"a","password_hash":"{cheap}"}},{{"name":"b","password_hash":"{dear}"}},{{"name":"c","password_hash":"{dear}"}}]}}"#
    );
    let c = parse_config(&json).unwrap();
    assert!(same_cost(&c.dummy, &c.users[1].password_hash));
    assert!(!same_cost(&c.dummy, &c.users[0].password_hash));
}

#[test]
fn the_old_sha256_keys_are_refused_with_directions() {
    for fields in [
        r#""salt":"s1","password_sha256":"00""#,
        r#""password_sha256":"00""#,
        r#""salt":"s1""#,
    ] {
        let e = parse_config(&user("carol", fields)).unwrap_err();
        assert!(e.contains("`carol`"), "{e}");
        assert!(e.contains("password_sha256"), "{e}");
        assert!(e.contains("plugboard hash-password"), "{e}");
    }
    // Not even next to a good hash.
    let hash = phc("pw", b"salt-of-a");
    let e = parse_config(&user(
        "carol",
        &format!(r#""password_hash":"{hash}","salt":"s1""#),
    ))
    .unwrap_err();
    assert!(e.contains("no longer accepted"), "{e}");
}

#[test]
fn a_missing_or_malformed_hash_is_refused_without_quoting_it() {
    let e = parse_config(&user("carol", r#""groups":[]"#)).unwrap_err();
    assert!(
        e.contains("`carol`") && e.contains("missing `password_hash`"),
        "{e}"
    );
    for bad in [
        "carol-secret",
        "",
        "$",
        "$argon2id",
        "$argon2id$v=19$m=19456,t=2,p=1",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
        "$argon2id$v=19$m=19456,t=2,p=1$!!!!$!!!!",
        "$argon2id$v=19$m=99999999999999999999,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$argon2id$v=19$m=19456,t=0,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$argon2id$v=19$m=19456,t=2,p=0$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$argon2id$v=19$m=19456,t=2,p=1,x=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
    ] {
        let json = user("carol", &format!(r#""password_hash":"{bad}""#));
        let e = parse_config(&json).unwrap_err();
        assert!(
            e.contains("`carol`") && e.contains("password_hash"),
            "{bad}: {e}"
        );
        if !bad.is_empty() && !bad.starts_with('$') {
            assert!(!e.contains(bad), "the error must not quote the value: {e}");
        }
    }
}

#[test]
fn weak_variants_and_parameters_are_refused() {
    let cases = [
        (
            phc_with(
                Algorithm::Argon2i,
                Version::V0x13,
                MIN_M_KIB,
                2,
                "pw",
                b"saltsalt",
            ),
            "only argon2id",
        ),
        (
            phc_with(
                Algorithm::Argon2d,
                Version::V0x13,
                MIN_M_KIB,
                2,
                "pw",
                b"saltsalt",
            ),
            "only argon2id",
        ),
        (
            phc_with(
                Algorithm::Argon2id,
                Version::V0x10,
                MIN_M_KIB,
                2,
                "pw",
                b"saltsalt",
            ),
            "v=19",
        ),
        (
            phc_with(
                Algorithm::Argon2id,
                Version::V0x13,
                MIN_M_KIB - 1,
                4,
                "pw",
                b"saltsalt",
            ),
            "too cheap",
        ),
        (phc("pw", b"saltsalt").replace("$v=19$", "$"), "v=19"),
        (
            "$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_string(),
            "only argon2id",
        ),
    ];
    for (hash, why) in cases {
        let e = parse_config(&user("dave", &format!(r#""password_hash":"{hash}""#))).unwrap_err();
        assert!(e.contains("`dave`") && e.contains(why), "{hash}: {e}");
    }
    // The floor itself is fine.
    let ok = phc_with(
        Algorithm::Argon2id,
        Version::V0x13,
        MIN_M_KIB,
        MIN_T,
        "pw",
        b"saltsalt",
    );
    assert!(parse_config(&user("dave", &format!(r#""password_hash":"{ok}""#))).is_ok());
}

#[test]
fn unknown_keys_are_refused() {
    assert!(parse_config(r#"{"userz":[]}"#).is_err());
    let hash = phc("pw", b"salt-of-a");
    let e = parse_config(&user(
        "a",
        &format!(r#""password_hash":"{hash}","pasword":"x""#),
    ))
    .unwrap_err();
    assert!(e.contains("pasword"), "{e}");
}

#[test]
fn basic_upgrade_credentials_count_only_when_connect_names_no_login() {
    let basic = UpgradeCredentials::Basic(plugboard::plugin::types::BasicCredentials {
        login: "a".into(),
        passcode: "pw".into(),
    });
    assert_eq!(
        login_and_passcode(None, None, Some(&basic)),
        (Some("a"), Some("pw"))
    );
    // CONNECT's own pair wins, passcode or not.
    assert_eq!(
        login_and_passcode(Some("b"), None, Some(&basic)),
        (Some("b"), None)
    );
    assert_eq!(
        login_and_passcode(Some("b"), Some("x"), Some(&basic)),
        (Some("b"), Some("x"))
    );
    // A bearer token is not a password.
    let bearer = UpgradeCredentials::Bearer("t".into());
    assert_eq!(login_and_passcode(None, None, Some(&bearer)), (None, None));
    assert_eq!(login_and_passcode(None, Some("p"), None), (None, Some("p")));
    let c = config();
    let (login, passcode) = login_and_passcode(None, None, Some(&basic));
    assert_eq!(check(&c, login, passcode).unwrap().name, "a");
}
