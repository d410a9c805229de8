//! API tokens of static-auth over WebSocket: a bearer token in the HTTP upgrade
//! (`Authorization: Bearer` or `?access_token=`) reaches the plugin's `authenticate-peer` hook
//! and logs in as the token's entry, whose rights the host enforces; a wrong token is refused;
//! plain TCP has no token path.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::support::*;
use plugboard_test_support::broker::{Broker, Launch};

type Ws = WebSocketStream<TcpStream>;

const WAIT: Duration = Duration::from_secs(20);

/// The token of the `deployer` entry, and its SHA-256 (`printf %s TOKEN | sha256sum`).
const TOKEN: &str = "pbt_9f2c41d7e0a84b6f8a1c3e5d7b9f0a2c";
const TOKEN_SHA256: &str = "ed53ddbc59e309cd90572e0b49d39e95816940c6aa4a7ba0090e9d7a03a4cb42";

/// A broker with its WebSocket listener and static-auth knowing one token user, `deployer`,
/// who may send to and subscribe on `/queue/deploys` only.
fn broker() -> Broker {
    let auth = static_auth_plugin(&format!(
        "\n[[plugins.config.tokens]]\ntoken_sha256 = \"{TOKEN_SHA256}\"\nname = \"deployer\"\n\
         groups = [\"ci\"]\nmay_send = [\"/queue/deploys\"]\nmay_subscribe = [\"/queue/deploys\"]\n"
    ));
    Launch::config_text(broker_bin(), &auth).websocket().start()
}

/// Opens a WebSocket with a path suffix (a query) and extra upgrade headers.
async fn open(broker: &Broker, query: &str, headers: &[(&'static str, &str)]) -> Ws {
    let mut request = format!("{}{query}", broker.ws_url())
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, value.parse().expect("header value"));
    }
    let stream = TcpStream::connect(broker.ws_addr()).await.expect("connect");
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("handshake timed out")
        .expect("upgrade");
    ws
}

async fn send(ws: &mut Ws, frame: &str) {
    ws.send(Message::text(frame)).await.expect("send");
}

/// The next STOMP frame's command and headers (heart-beats and control messages skipped).
async fn recv(ws: &mut Ws) -> (String, Vec<(String, String)>) {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame within the wait")
            .expect("stream ended")
            .expect("read");
        let bytes = match message {
            Message::Text(text) if text.as_str() == "\n" => continue,
            Message::Text(text) => text.as_bytes().to_vec(),
            Message::Binary(bytes) => bytes.to_vec(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a STOMP frame, got {other:?}"),
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let head = text.split("\n\n").next().unwrap_or_default();
        let mut lines = head.lines();
        let command = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        return (command, headers);
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

const CONNECT: &str = "CONNECT\naccept-version:1.2\nhost:localhost\n\n\0";

/// CONNECTs without a login on `ws`, expects CONNECTED, then checks that the token user's
/// rights are enforced: a SEND and SUBSCRIBE on `/queue/deploys` work (the message comes
/// back), a SEND elsewhere gets an ERROR.
async fn logs_in_as_deployer(mut ws: Ws) {
    send(&mut ws, CONNECT).await;
    let (command, headers) = recv(&mut ws).await;
    assert_eq!(command, "CONNECTED", "{headers:?}");
    let queue = "/queue/deploys";
    send(
        &mut ws,
        &format!("SUBSCRIBE\nid:0\ndestination:{queue}\nreceipt:sub\n\n\0"),
    )
    .await;
    let (command, headers) = recv(&mut ws).await;
    assert_eq!(
        (command.as_str(), header(&headers, "receipt-id")),
        ("RECEIPT", "sub"),
        "{headers:?}"
    );
    send(&mut ws, &format!("SEND\ndestination:{queue}\n\nv42\0")).await;
    let (command, headers) = recv(&mut ws).await;
    assert_eq!(command, "MESSAGE", "{headers:?}");
    assert_eq!(header(&headers, "destination"), queue);
    send(
        &mut ws,
        "SEND\ndestination:/queue/elsewhere\nreceipt:s1\n\nno\0",
    )
    .await;
    let (command, headers) = recv(&mut ws).await;
    assert_eq!(command, "ERROR", "{headers:?}");
    assert!(
        header(&headers, "message").contains("may not send"),
        "{headers:?}"
    );
    assert_eq!(header(&headers, "receipt-id"), "s1", "{headers:?}");
}

#[tokio::test]
async fn a_bearer_token_in_the_authorization_header_logs_in_with_its_rights() {
    let broker = broker();
    let bearer = format!("Bearer {TOKEN}");
    let ws = open(&broker, "", &[("authorization", bearer.as_str())]).await;
    logs_in_as_deployer(ws).await;
}

#[tokio::test]
async fn a_token_in_the_access_token_parameter_logs_in_with_its_rights() {
    let broker = broker();
    let ws = open(&broker, &format!("?access_token={TOKEN}"), &[]).await;
    logs_in_as_deployer(ws).await;
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused() {
    let broker = broker();
    let wrong = format!("{TOKEN}x");
    for (query, bearer) in [
        (String::new(), format!("Bearer {wrong}")),
        (format!("?access_token={wrong}"), String::new()),
        // The hash itself is not the token.
        (format!("?access_token={TOKEN_SHA256}"), String::new()),
        // No credentials at all: not anonymous either.
        (String::new(), String::new()),
    ] {
        let headers: Vec<(&'static str, &str)> = if bearer.is_empty() {
            Vec::new()
        } else {
            vec![("authorization", bearer.as_str())]
        };
        let mut ws = open(&broker, &query, &headers).await;
        send(&mut ws, CONNECT).await;
        let (command, headers) = recv(&mut ws).await;
        assert_eq!(command, "ERROR", "{query} {bearer}: {headers:?}");
        let message = header(&headers, "message");
        assert!(message.contains("access refused"), "{headers:?}");
        if !(query.is_empty() && bearer.is_empty()) {
            assert!(message.contains("unknown access token"), "{headers:?}");
        }
        assert!(
            !message.contains(TOKEN),
            "the ERROR must not echo the token"
        );
    }
    // The refusals did not hurt anyone else.
    let bearer = format!("Bearer {TOKEN}");
    let mut ws = open(&broker, "", &[("authorization", bearer.as_str())]).await;
    send(&mut ws, CONNECT).await;
    assert_eq!(recv(&mut ws).await.0, "CONNECTED");
}

#[tokio::test]
async fn a_connect_login_wins_over_the_token_and_tcp_has_no_token_path() {
    let broker = broker();
    // With a login in CONNECT, login and passcode decide (there is no such user here).
    let bearer = format!("Bearer {TOKEN}");
    let mut ws = open(&broker, "", &[("authorization", bearer.as_str())]).await;
    send(
        &mut ws,
        "CONNECT\naccept-version:1.2\nlogin:deployer\npasscode:x\n\n\0",
    )
    .await;
    assert_eq!(recv(&mut ws).await.0, "ERROR");
    // Plain TCP: a CONNECT without a login is refused (the token is no passcode either).
    let (mut c, reply) = try_login(broker.addr, None, None).await;
    assert!(
        error_message(&reply).contains("access refused"),
        "{reply:?}"
    );
    c.expect_closed().await;
    let (mut c, reply) = try_login(broker.addr, Some("deployer"), Some(TOKEN)).await;
    assert!(
        error_message(&reply).contains("access refused"),
        "{reply:?}"
    );
    c.expect_closed().await;
}

/// HTTP Basic credentials in the upgrade log a user in when CONNECT names no `login` (its
/// rights enforced); a wrong password there is refused; CONNECT's own pair wins over them.
#[tokio::test]
async fn basic_credentials_in_the_upgrade_log_a_user_in_when_connect_names_none() {
    let phc = phc_of("deploy-pass\n", &[]);
    let auth = static_auth_plugin(&format!(
        "\n[[plugins.config.users]]\nname = \"deployer\"\npassword_hash = '{phc}'\n\
         may_send = [\"/queue/deploys\"]\nmay_subscribe = [\"/queue/deploys\"]\n"
    ));
    let broker = Launch::config_text(broker_bin(), &auth).websocket().start();
    // base64("deployer:deploy-pass") and base64("deployer:wrong")
    let good = "Basic ZGVwbG95ZXI6ZGVwbG95LXBhc3M=";
    let bad = "Basic ZGVwbG95ZXI6d3Jvbmc=";
    let ws = open(&broker, "", &[("authorization", good)]).await;
    logs_in_as_deployer(ws).await;
    let mut ws = open(&broker, "", &[("authorization", bad)]).await;
    send(&mut ws, CONNECT).await;
    let (command, headers) = recv(&mut ws).await;
    assert_eq!(command, "ERROR", "{headers:?}");
    assert!(
        header(&headers, "message").contains("access refused"),
        "{headers:?}"
    );
    // CONNECT's pair is the client's explicit statement: a wrong one is refused even with good
    // Basic credentials in the upgrade.
    let mut ws = open(&broker, "", &[("authorization", good)]).await;
    send(
        &mut ws,
        "CONNECT\naccept-version:1.2\nlogin:deployer\npasscode:wrong\n\n\0",
    )
    .await;
    assert_eq!(recv(&mut ws).await.0, "ERROR");
}
