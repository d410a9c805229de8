use super::*;
use crate::config::Config;

fn settings(toml: &str) -> Settings {
    let config = Config::from_toml(toml).unwrap();
    Settings::new(&config, "127.0.0.1:15674".parse().unwrap()).unwrap()
}

const SOCKET: &str = "198.51.100.7:40000";

fn request(extra: &[(&str, &str)], uri: &str) -> Request {
    let mut builder = Request::builder()
        .method("GET")
        .uri(uri)
        .header("Host", "127.0.0.1:15674")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

fn check_default(extra: &[(&str, &str)]) -> Result<Upgrade, Refusal> {
    check(
        &request(extra, "/ws"),
        SOCKET.parse().unwrap(),
        &settings(""),
    )
}

#[test]
fn the_highest_offered_stomp_subprotocol_is_chosen() {
    let upgrade =
        check_default(&[("Sec-WebSocket-Protocol", "v10.stomp, v12.stomp, v11.stomp")]).unwrap();
    assert_eq!(upgrade.protocol, Some("v12.stomp"));
    let text = String::from_utf8(upgrade.response).unwrap();
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("sec-websocket-protocol: v12.stomp\r\n"),
        "{text}"
    );
    // RFC 6455's sample key.
    assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
    // Offered over several header lines, with unknown ones among them.
    let upgrade = check_default(&[
        ("Sec-WebSocket-Protocol", "mqtt"),
        ("Sec-WebSocket-Protocol", "v11.stomp"),
    ])
    .unwrap();
    assert_eq!(upgrade.protocol, Some("v11.stomp"));
    assert_eq!(
        check_default(&[("Sec-WebSocket-Protocol", "v10.stomp")])
            .unwrap()
            .protocol,
        Some("v10.stomp")
    );
}

#[test]
fn no_subprotocol_is_accepted_and_only_unknown_ones_are_refused() {
    let upgrade = check_default(&[]).unwrap();
    assert_eq!(upgrade.protocol, None);
    assert!(!String::from_utf8(upgrade.response)
        .unwrap()
        .to_ascii_lowercase()
        .contains("sec-websocket-protocol"));
    let refusal = check_default(&[("Sec-WebSocket-Protocol", "mqtt, V12.STOMP")]).unwrap_err();
    assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
    assert!(refusal.reason.contains("v12.stomp"), "{}", refusal.reason);
}

#[test]
fn path_upgrade_and_key_are_checked() {
    let socket = SOCKET.parse().unwrap();
    let refusal = check(&request(&[], "/other"), socket, &settings("")).unwrap_err();
    assert_eq!(refusal.status, StatusCode::NOT_FOUND);
    // The query does not take part in the path match.
    assert!(check(&request(&[], "/ws?x=1"), socket, &settings("")).is_ok());
    let custom = settings("[websocket]\npath = \"/stomp\"\n");
    assert!(check(&request(&[], "/stomp"), socket, &custom).is_ok());
    assert_eq!(
        check(&request(&[], "/ws"), socket, &custom)
            .unwrap_err()
            .status,
        StatusCode::NOT_FOUND
    );
    let plain = Request::builder().uri("/ws").body(()).unwrap();
    let refusal = check(&plain, socket, &settings("")).unwrap_err();
    assert_eq!(refusal.status, StatusCode::UPGRADE_REQUIRED);
    assert!(String::from_utf8(refusal.response())
        .unwrap()
        .contains("Sec-WebSocket-Version: 13"));
    let mut bad_key = request(&[], "/ws");
    bad_key
        .headers_mut()
        .insert("sec-websocket-key", "short".parse().unwrap());
    assert_eq!(
        check(&bad_key, socket, &settings("")).unwrap_err().status,
        StatusCode::BAD_REQUEST
    );
    let mut old_version = request(&[], "/ws");
    old_version
        .headers_mut()
        .insert("sec-websocket-version", "8".parse().unwrap());
    assert_eq!(
        check(&old_version, socket, &settings(""))
            .unwrap_err()
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn origins_are_checked() {
    assert!(check_default(&[("Origin", "http://localhost:8080")]).is_ok());
    let refusal = check_default(&[("Origin", "https://evil.example")]).unwrap_err();
    assert_eq!(refusal.status, StatusCode::FORBIDDEN);
    assert!(refusal.reason.contains("https://evil.example"));
    assert_eq!(
        check_default(&[
            ("Origin", "http://localhost"),
            ("Origin", "http://localhost")
        ])
        .unwrap_err()
        .status,
        StatusCode::BAD_REQUEST
    );
    let configured = settings("[websocket]\nallowed_origins = [\"https://app.example\"]\n");
    let socket = SOCKET.parse().unwrap();
    assert!(check(
        &request(&[("Origin", "https://app.example")], "/ws"),
        socket,
        &configured
    )
    .is_ok());
    assert!(check(
        &request(&[("Origin", "http://localhost")], "/ws"),
        socket,
        &configured
    )
    .is_err());
}

#[test]
fn listeners_beyond_loopback_need_allowed_origins() {
    let config = Config::default();
    assert!(Settings::new(&config, "0.0.0.0:15674".parse().unwrap()).is_err());
    assert!(Settings::new(&config, "[::1]:15674".parse().unwrap()).is_ok());
    let config = Config::from_toml("[websocket]\nallowed_origins = [\"*\"]\n").unwrap();
    assert!(Settings::new(&config, "0.0.0.0:15674".parse().unwrap()).is_ok());
    assert!(Config::from_toml("[websocket]\nlisten = \"0.0.0.0:15674\"\n").is_err());
    assert!(Config::from_toml("[websocket]\nallowed_origins = [\"app.example\"]\n").is_err());
    assert!(Config::from_toml("[websocket]\npath = \"ws\"\n").is_err());
}

#[test]
fn credentials_come_from_basic_bearer_or_the_query() {
    let basic = data_encoding::BASE64.encode(b"alice:s3cr:et");
    let upgrade = check_default(&[("Authorization", &format!("Basic {basic}"))]).unwrap();
    assert_eq!(
        upgrade.credentials,
        Some(Credentials::Basic {
            login: "alice".into(),
            passcode: "s3cr:et".into()
        })
    );
    let upgrade = check_default(&[("Authorization", "bearer abc.def")]).unwrap();
    assert_eq!(
        upgrade.credentials,
        Some(Credentials::Bearer("abc.def".into()))
    );
    let socket = SOCKET.parse().unwrap();
    let upgrade = check(
        &request(&[], "/ws?a=1&access_token=t%2Bk+n"),
        socket,
        &settings(""),
    )
    .unwrap();
    assert_eq!(
        upgrade.credentials,
        Some(Credentials::Bearer("t+k n".into()))
    );
    assert_eq!(check_default(&[]).unwrap().credentials, None);
    for bad in ["Basic !!!", "Basic YWxpY2U=", "Bearer", "Digest x"] {
        let refusal = check_default(&[("Authorization", bad)]).unwrap_err();
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let both = check(
        &request(&[("Authorization", "Bearer a")], "/ws?access_token=b"),
        socket,
        &settings(""),
    );
    assert!(both.is_err());
    assert!(check(&request(&[], "/ws?access_token=%zz"), socket, &settings("")).is_err());
    assert!(!format!("{:?}", Credentials::Bearer("secret".into())).contains("secret"));
    assert!(!format!(
        "{:?}",
        Credentials::Basic {
            login: "a".into(),
            passcode: "secret".into()
        }
    )
    .contains("secret"));
}

#[test]
fn forwarded_addresses_are_believed_from_trusted_proxies_only() {
    let proxied = settings("[websocket]\ntrusted_proxies = [\"10.0.0.1\", \"10.0.0.2\"]\n");
    let xff = [("X-Forwarded-For", "203.0.113.9, 192.0.2.5, 10.0.0.2")];
    let via_proxy = check(
        &request(&xff, "/ws"),
        "10.0.0.1:5000".parse().unwrap(),
        &proxied,
    )
    .unwrap();
    assert_eq!(
        via_proxy.client.ip(),
        "192.0.2.5".parse::<IpAddr>().unwrap()
    );
    let direct = check(&request(&xff, "/ws"), SOCKET.parse().unwrap(), &proxied).unwrap();
    assert_eq!(direct.client, SOCKET.parse().unwrap());
    let untrusted = check(
        &request(&xff, "/ws"),
        "10.0.0.1:5000".parse().unwrap(),
        &settings(""),
    )
    .unwrap();
    assert_eq!(untrusted.client, "10.0.0.1:5000".parse().unwrap());
    let no_header = check(
        &request(&[], "/ws"),
        "10.0.0.1:5000".parse().unwrap(),
        &proxied,
    )
    .unwrap();
    assert_eq!(no_header.client, "10.0.0.1:5000".parse().unwrap());
    let garbage = check(
        &request(&[("X-Forwarded-For", "unknown")], "/ws"),
        "10.0.0.1:5000".parse().unwrap(),
        &proxied,
    );
    assert_eq!(garbage.unwrap_err().status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn requests_are_read_within_their_size_limit_and_what_follows_is_kept() {
    let wire = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n\x81\x80abcd".to_vec();
    let (request, rest) = read_request(&mut &wire[..], 1024).await.unwrap();
    assert_eq!(request.uri().path(), "/ws");
    assert_eq!(&rest[..], b"\x81\x80abcd");
    let long = format!("GET /ws HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
    match read_request(&mut long.as_bytes(), 1024).await {
        Err(ReadFailure::Refused(refusal)) => {
            assert_eq!(refusal.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        other => panic!("{other:?}"),
    }
    match read_request(&mut &b"GET /ws HTTP/1.1\r\n"[..], 1024).await {
        Err(ReadFailure::Io(_)) => {}
        other => panic!("{other:?}"),
    }
    match read_request(&mut &b"\x00\x01 garbage\r\n\r\n"[..], 1024).await {
        Err(ReadFailure::Refused(refusal)) => assert_eq!(refusal.status, StatusCode::BAD_REQUEST),
        other => panic!("{other:?}"),
    }
}
