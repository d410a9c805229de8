//! STOMP over WebSocket against the real binary (`--ws-listen 127.0.0.1:0`), with
//! tokio-tungstenite as the client, plus raw sockets for what a well-behaved client library
//! never sends (unmasked frames, text that is not UTF-8): the upgrade (subprotocols, origin,
//! path, per-address cap), framing both ways (split frames, several frames per message, text
//! or binary, heart-beats), the close codes, and that WebSocket and TCP clients share queues.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::harness::*;
use plugboard_test_support::broker::{Broker as Process, Launch};

type Ws = WebSocketStream<TcpStream>;

const WAIT: Duration = Duration::from_secs(10);

/// Opens a WebSocket to the broker, offering `protocols`, with `origin` if given.
async fn open(
    broker: &Process,
    protocols: &str,
    origin: Option<&str>,
) -> Result<(Ws, Option<String>), WsError> {
    let mut request = broker.ws_url().into_client_request()?;
    if !protocols.is_empty() {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
    }
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    let stream = TcpStream::connect(broker.ws_addr()).await.expect("connect");
    let (ws, response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
            .await
            .expect("handshake timed out")?;
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    Ok((ws, protocol))
}

/// A connected STOMP 1.2 session over WebSocket.
async fn connected(broker: &Process) -> Ws {
    let (mut ws, protocol) = open(broker, "v10.stomp, v11.stomp, v12.stomp", None)
        .await
        .expect("upgrade");
    assert_eq!(protocol.as_deref(), Some("v12.stomp"));
    send_text(&mut ws, "CONNECT\naccept-version:1.2\nhost:localhost\n\n\0").await;
    let (command, _, _) = recv_frame(&mut ws).await;
    assert_eq!(command, "CONNECTED");
    ws
}

async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// The next message that is not a heart-beat, and whether it came as text.
async fn recv_message(ws: &mut Ws) -> (Vec<u8>, bool) {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message within the wait")
            .expect("stream ended")
            .expect("read");
        match message {
            Message::Text(text) if text.as_str() == "\n" => continue,
            Message::Text(text) => return (text.as_bytes().to_vec(), true),
            Message::Binary(bytes) => return (bytes.to_vec(), false),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a STOMP frame, got {other:?}"),
        }
    }
}

/// The next STOMP frame (one per message): command, headers, body.
async fn recv_frame(ws: &mut Ws) -> (String, Vec<(String, String)>, Vec<u8>) {
    let (bytes, _) = recv_message(ws).await;
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> (String, Vec<(String, String)>, Vec<u8>) {
    let split = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("a frame head");
    let head = String::from_utf8(bytes[..split].to_vec()).unwrap();
    let mut lines = head.lines();
    let command = lines.next().unwrap().to_string();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    // The broker ends frames with NUL and an EOL (allowed after any frame).
    let body = bytes[split + 2..]
        .strip_suffix(b"\n")
        .unwrap_or(&bytes[split + 2..]);
    assert_eq!(body.last(), Some(&0), "one whole frame per message");
    (command, headers, body[..body.len() - 1].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The close frame's code, once the broker closes.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no close within the wait")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test]
async fn a_websocket_client_and_a_tcp_client_share_a_queue() {
    let broker = Broker::with_websocket("");
    let mut ws = connected(&broker).await;
    send_text(
        &mut ws,
        "SUBSCRIBE\nid:s1\ndestination:/queue/ws-shared\n\n\0",
    )
    .await;
    send_text(&mut ws, "SEND\ndestination:/queue/probe\nreceipt:r1\n\n\0").await;
    assert_eq!(recv_frame(&mut ws).await.0, "RECEIPT");
    let mut tcp = broker.client(Version::V12).await;
    tcp.send_r("/queue/ws-shared", "from tcp, h\u{e9}").await;
    let (bytes, text) = recv_message(&mut ws).await;
    assert!(text, "a UTF-8 frame goes out as a text message");
    let (command, headers, body) = parse(&bytes);
    assert_eq!(command, "MESSAGE");
    assert_eq!(header(&headers, "subscription"), Some("s1"));
    assert_eq!(body, "from tcp, h\u{e9}".as_bytes());
    // And the other way.
    tcp.subscribe("t1", "/queue/ws-back", "auto").await;
    send_text(&mut ws, "SEND\ndestination:/queue/ws-back\n\nfrom ws\0").await;
    assert_eq!(tcp.msg().await.body, b"from ws");
}

#[tokio::test]
async fn frames_split_over_messages_and_many_frames_in_one_message_both_work() {
    let broker = Broker::with_websocket("");
    let mut ws = connected(&broker).await;
    send_text(
        &mut ws,
        "SUBSCRIBE\nid:s\ndestination:/queue/ws-split\n\n\0",
    )
    .await;
    // One SEND in three messages, text and binary mixed, split inside a header and the body.
    send_text(&mut ws, "SEND\ndesti").await;
    ws.send(Message::binary(
        b"nation:/queue/ws-split\n\nsplit bo".to_vec(),
    ))
    .await
    .unwrap();
    send_text(&mut ws, "dy\0").await;
    // Three SENDs and heart-beat EOLs in one message.
    let batch: String = (0..3)
        .map(|i| format!("SEND\ndestination:/queue/ws-split\n\nbatch {i}\0\n"))
        .collect();
    send_text(&mut ws, &batch).await;
    let mut bodies = Vec::new();
    for _ in 0..4 {
        bodies.push(String::from_utf8(recv_frame(&mut ws).await.2).unwrap());
    }
    assert_eq!(bodies, ["split body", "batch 0", "batch 1", "batch 2"]);
}

#[tokio::test]
async fn binary_bodies_go_out_as_binary_messages_and_large_ones_arrive_whole() {
    let broker = Broker::with_websocket("");
    let mut ws = connected(&broker).await;
    send_text(&mut ws, "SUBSCRIBE\nid:s\ndestination:/queue/ws-bin\n\n\0").await;
    let mut send = b"SEND\ndestination:/queue/ws-bin\ncontent-length:4\n\n".to_vec();
    send.extend_from_slice(&[0, 0xff, 0xfe, 1]);
    send.push(0);
    ws.send(Message::binary(send)).await.unwrap();
    let (bytes, text) = recv_message(&mut ws).await;
    assert!(
        !text,
        "a frame that is not UTF-8 goes out as a binary message"
    );
    assert_eq!(parse(&bytes).2, [0, 0xff, 0xfe, 1]);
    // 1 MiB, one message each way.
    let big = "x".repeat(1024 * 1024);
    send_text(
        &mut ws,
        &format!("SEND\ndestination:/queue/ws-bin\n\n{big}\0"),
    )
    .await;
    let (bytes, text) = recv_message(&mut ws).await;
    assert!(text);
    assert_eq!(parse(&bytes).2.len(), big.len());
}

#[tokio::test]
async fn message_type_binary_sends_every_frame_as_binary() {
    let broker = Broker::with_websocket("[websocket]\nmessage_type = \"binary\"\n");
    let (mut ws, _) = open(&broker, "", None).await.unwrap();
    send_text(&mut ws, "CONNECT\naccept-version:1.2\n\n\0").await;
    let (bytes, text) = recv_message(&mut ws).await;
    assert!(!text);
    assert_eq!(parse(&bytes).0, "CONNECTED");
}

#[tokio::test]
async fn heart_beats_are_newline_messages_both_ways() {
    let broker = Broker::with_websocket("[heartbeat]\nsend_min_ms = 100\nreceive_min_ms = 100\n");
    let (mut ws, _) = open(&broker, "v12.stomp", None).await.unwrap();
    send_text(
        &mut ws,
        "CONNECT\naccept-version:1.2\nheart-beat:300,300\n\n\0",
    )
    .await;
    assert_eq!(recv_frame(&mut ws).await.0, "CONNECTED");
    // Beats arrive as lone "\n" text messages; ours keep the connection open well past the
    // 300 ms x grace the broker would allow a silent client.
    let mut beats = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < deadline {
        send_text(&mut ws, "\n").await;
        if let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(100), ws.next()).await
        {
            assert_eq!(
                message,
                Message::text("\n"),
                "only heart-beats are expected"
            );
            beats += 1;
        }
    }
    assert!(beats > 0, "the broker sent no heart-beat");
    send_text(
        &mut ws,
        "SEND\ndestination:/queue/ws-alive\nreceipt:alive\n\n\0",
    )
    .await;
    assert_eq!(recv_frame(&mut ws).await.0, "RECEIPT");
}

#[tokio::test]
async fn pings_are_answered_and_a_client_close_is_echoed() {
    let broker = Broker::with_websocket("");
    let mut ws = connected(&broker).await;
    ws.send(Message::Ping(b"hello".to_vec().into()))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"hello");
                break;
            }
            Message::Text(text) if text.as_str() == "\n" => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    ws.close(None).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1000));
}

#[tokio::test]
async fn a_stomp_error_is_an_error_frame_then_a_normal_close() {
    let broker = Broker::with_websocket("");
    let mut ws = connected(&broker).await;
    send_text(&mut ws, "BOGUS\n\n\0").await;
    let (command, headers, _) = recv_frame(&mut ws).await;
    assert_eq!(command, "ERROR");
    assert!(header(&headers, "message").is_some());
    assert_eq!(close_code(&mut ws).await, Some(1000));
    // DISCONNECT: the RECEIPT, then a normal close.
    let mut ws = connected(&broker).await;
    send_text(&mut ws, "DISCONNECT\nreceipt:bye\n\n\0").await;
    let (command, headers, _) = recv_frame(&mut ws).await;
    assert_eq!(
        (command.as_str(), header(&headers, "receipt-id")),
        ("RECEIPT", Some("bye"))
    );
    assert_eq!(close_code(&mut ws).await, Some(1000));
}

#[tokio::test]
async fn the_connect_frame_limit_applies_before_authentication() {
    let broker = Broker::with_websocket("[limits]\nmax_connect_frame_bytes = 1024\n");
    let (mut ws, _) = open(&broker, "", None).await.unwrap();
    let padding = "p".repeat(4096);
    send_text(
        &mut ws,
        &format!("CONNECT\naccept-version:1.2\nx:{padding}\n\n\0"),
    )
    .await;
    let (command, headers, _) = recv_frame(&mut ws).await;
    assert_eq!(command, "ERROR", "{headers:?}");
}

#[tokio::test]
async fn a_message_larger_than_a_frame_may_be_closes_with_1009() {
    let broker =
        Broker::with_websocket("[limits]\nmax_frame_bytes = 65536\nmax_body_bytes = 60000\n");
    let mut ws = connected(&broker).await;
    let big = "x".repeat(70_000);
    let _ = ws.send(Message::text(big)).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
    assert_healthy(&broker).await;
}

/// A raw upgraded socket (no client library in the way).
async fn raw_upgrade(broker: &Process, extra: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(broker.ws_addr()).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        match tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .unwrap()
        {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// Reads what the broker sends until it closes: the close frame's code, if one came.
async fn raw_close_code(stream: &mut TcpStream) -> Option<u16> {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut all)).await;
    // Walk the server's (unmasked) frames.
    let mut at = 0;
    while at + 2 <= all.len() {
        let opcode = all[at] & 0x0f;
        let (len, skip) = match all[at + 1] & 0x7f {
            126 => (u16::from_be_bytes([all[at + 2], all[at + 3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(all[at + 2..at + 10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        if opcode == 0x8 {
            return Some(u16::from_be_bytes([all[at + skip], all[at + skip + 1]]));
        }
        at += skip + len;
    }
    None
}

fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[tokio::test]
async fn bad_framing_closes_with_1002_and_bad_text_with_1007() {
    let broker = Broker::with_websocket("");
    let (mut stream, head) = raw_upgrade(&broker, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // An unmasked client frame.
    stream.write_all(b"\x81\x02\n\n").await.unwrap();
    assert_eq!(raw_close_code(&mut stream).await, Some(1002));
    let (mut stream, _) = raw_upgrade(&broker, "").await;
    stream
        .write_all(&masked(0x81, b"CONNECT\n\n\xff\0"))
        .await
        .unwrap();
    assert_eq!(raw_close_code(&mut stream).await, Some(1007));
    // A reserved opcode, after a good CONNECT.
    let (mut stream, _) = raw_upgrade(&broker, "").await;
    stream
        .write_all(&masked(0x81, b"CONNECT\naccept-version:1.2\n\n\0"))
        .await
        .unwrap();
    stream.write_all(&masked(0x83, b"x")).await.unwrap();
    assert_eq!(raw_close_code(&mut stream).await, Some(1002));
    assert_healthy(&broker).await;
}

#[tokio::test]
async fn upgrades_are_refused_for_unknown_subprotocols_foreign_origins_and_wrong_paths() {
    let broker = Broker::with_websocket("");
    // No subprotocol at all is fine (RabbitMQ accepts it too).
    let (_, protocol) = open(&broker, "", None).await.unwrap();
    assert_eq!(protocol, None);
    let status = |err: WsError| match err {
        WsError::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    };
    assert_eq!(
        status(open(&broker, "mqtt, v13.stomp", None).await.unwrap_err()),
        400
    );
    assert_eq!(
        status(
            open(&broker, "", Some("https://evil.example"))
                .await
                .unwrap_err()
        ),
        403
    );
    assert!(open(&broker, "v11.stomp", Some("http://localhost:8000"))
        .await
        .is_ok());
    let (_, head) = raw_upgrade(&broker, "").await;
    assert!(head.starts_with("HTTP/1.1 101"));
    let mut stream = TcpStream::connect(broker.ws_addr()).await.unwrap();
    stream
        .write_all(
            b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    // A browser simply opening the address.
    let mut stream = TcpStream::connect(broker.ws_addr()).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
    assert_healthy(&broker).await;
}

#[tokio::test]
async fn the_per_address_cap_counts_websocket_connections() {
    let broker = Broker::with_websocket("[limits]\nmax_connections_per_address = 2\n");
    let first = connected(&broker).await;
    let second = connected(&broker).await;
    let status = match open(&broker, "", None).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    };
    assert_eq!(status, 429);
    drop((first, second));
    // Slots come back when connections end.
    let deadline = tokio::time::Instant::now() + WAIT;
    while open(&broker, "", None).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_silent_upgrade_times_out() {
    let broker = Broker::with_websocket("[websocket]\nhandshake_timeout_ms = 300\n");
    let mut stream = TcpStream::connect(broker.ws_addr()).await.unwrap();
    stream.write_all(b"GET /ws HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the broker kept a silent upgrade open");
    assert_healthy(&broker).await;
}

/// Opens a WebSocket with extra request headers and a path suffix (a query).
async fn open_with(
    broker: &Process,
    query: &str,
    headers: &[(&'static str, &str)],
) -> Result<Ws, WsError> {
    let mut request = format!("{}{query}", broker.ws_url()).into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let stream = TcpStream::connect(broker.ws_addr()).await.expect("connect");
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("handshake timed out")?;
    Ok(ws)
}

#[tokio::test]
async fn basic_credentials_of_the_upgrade_log_in_when_connect_has_none() {
    let broker = Broker::with_websocket("[[users]]\nlogin = \"alice\"\npasscode = \"s3cret\"\n");
    // "alice:s3cret" and "alice:wrong" in base64.
    let good = [("authorization", "Basic YWxpY2U6czNjcmV0")];
    let bad = [("authorization", "Basic YWxpY2U6d3Jvbmc=")];
    let mut ws = open_with(&broker, "", &good).await.unwrap();
    send_text(&mut ws, "CONNECT\naccept-version:1.2\n\n\0").await;
    assert_eq!(recv_frame(&mut ws).await.0, "CONNECTED");
    let mut ws = open_with(&broker, "", &bad).await.unwrap();
    send_text(&mut ws, "CONNECT\naccept-version:1.2\n\n\0").await;
    let (command, headers, _) = recv_frame(&mut ws).await;
    assert_eq!(command, "ERROR");
    assert!(
        header(&headers, "message")
            .unwrap()
            .contains("access refused"),
        "{headers:?}"
    );
    // CONNECT's own login wins over the upgrade's.
    let mut ws = open_with(&broker, "", &bad).await.unwrap();
    send_text(
        &mut ws,
        "CONNECT\naccept-version:1.2\nlogin:alice\npasscode:s3cret\n\n\0",
    )
    .await;
    assert_eq!(recv_frame(&mut ws).await.0, "CONNECTED");
    // A bearer token means nothing to the built-in users (only a plugin can check one).
    let mut ws = open_with(&broker, "?access_token=abc", &[]).await.unwrap();
    send_text(&mut ws, "CONNECT\naccept-version:1.2\n\n\0").await;
    assert_eq!(recv_frame(&mut ws).await.0, "ERROR");
    // Malformed credentials are refused at the upgrade.
    match open_with(&broker, "", &[("authorization", "Basic !!!")]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 400),
        other => panic!("expected 400, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_websocket_only_broker_serves_without_its_tcp_listener() {
    let broker = Launch::config_text(env!("CARGO_BIN_EXE_plugboard"), "")
        .args(&["--no-tcp"])
        .websocket()
        .start_within(Duration::from_secs(30))
        .start();
    assert_eq!(broker.addr.port(), 0, "no plain listener line");
    let mut ws = connected(&broker).await;
    send_text(&mut ws, "SUBSCRIBE\nid:s\ndestination:/queue/ws-only\n\n\0").await;
    send_text(&mut ws, "SEND\ndestination:/queue/ws-only\n\nalone\0").await;
    assert_eq!(recv_frame(&mut ws).await.2, b"alone");
    // Without any listener the broker refuses to start.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_plugboard"))
        .args(["--no-tcp", "--check-config"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no STOMP listener"));
}

#[tokio::test]
async fn wss_serves_stomp_over_websocket_over_tls_with_the_tls_certificates() {
    use plugboard_test_support::tls::{open as open_tls, ClientOptions, Pki};
    let pki = Pki::new();
    // A WSS listener alone: the [tls] section gives the certificates, no STOMP-over-TLS port.
    let toml = pki
        .tls_section("")
        .replace("listen = \"127.0.0.1:0\"\n", "");
    let toml = format!("{toml}\n[websocket]\ntls_listen = \"127.0.0.1:0\"\n");
    let broker = Launch::config_text(env!("CARGO_BIN_EXE_plugboard"), &toml)
        .wss_line()
        .start_within(Duration::from_secs(60))
        .start();
    assert!(broker.wss_url().starts_with("wss://127.0.0.1:") && broker.wss_url().ends_with("/ws"));
    let tls = open_tls(broker.wss_addr(), &ClientOptions::trusting(&pki.ca.pem))
        .await
        .expect("TLS handshake");
    let mut request = broker.wss_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "v12.stomp".parse().unwrap());
    let (mut ws, response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tls))
            .await
            .expect("upgrade timed out")
            .expect("upgrade");
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "v12.stomp"
    );
    ws.send(Message::text("CONNECT\naccept-version:1.2\n\n\0"))
        .await
        .unwrap();
    assert!(next_text(&mut ws).await.starts_with("CONNECTED\n"));
    ws.send(Message::text(
        "SUBSCRIBE\nid:s\ndestination:/queue/wss\n\n\0SEND\ndestination:/queue/wss\n\nsecure\0",
    ))
    .await
    .unwrap();
    let message = next_text(&mut ws).await;
    assert!(
        message.starts_with("MESSAGE\n") && message.contains("\n\nsecure\0"),
        "{message:?}"
    );
    // A client that does not trust the broker's CA gets no session.
    let stranger = Pki::new();
    assert!(open_tls(
        broker.wss_addr(),
        &ClientOptions::trusting(&stranger.ca.pem)
    )
    .await
    .is_err());
}

/// The next text message that is not a heart-beat, on any stream (WSS included).
async fn next_text<S>(ws: &mut WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(t) if t.as_str() == "\n" => continue,
            Message::Text(t) => return t.as_str().to_string(),
            other => panic!("unexpected {other:?}"),
        }
    }
}
