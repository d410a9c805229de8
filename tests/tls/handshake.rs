//! Handshakes: TLS 1.3 and 1.2 carry a whole STOMP session; a client that does not trust the
//! broker's CA refuses it; silence, plain STOMP and garbage on the TLS port are closed without
//! hurting anyone; a TLS-only broker (`--no-tcp`) prints the TLS line first.

use std::path::Path;
use std::time::Duration;

use plugboard_test_support::broker::Launch;
use plugboard_test_support::stomp::{unique, Client, Version};
use plugboard_test_support::tls::{connect, ClientOptions, Pki};
use rustls::ProtocolVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{start, stomp_connect, tls_session};

/// Generous bound on the broker closing a connection (the machine is loaded).
const CLOSE_WITHIN: Duration = Duration::from_secs(30);

async fn session_over(version: ProtocolVersion) {
    let pki = Pki::new();
    let broker = start(&pki, "", "");
    let options = ClientOptions::trusting(&pki.ca.pem).only(version);
    let (mut client, negotiated, _) = connect(broker.tls_addr(), &options)
        .await
        .expect("handshake");
    assert_eq!(negotiated, version);
    let reply = stomp_connect(&mut client, &[]).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    let queue = format!("/queue/{}", unique("tls"));
    client.subscribe("s", &queue, "client-individual").await;
    client.send_r(&queue, "over TLS").await;
    let msg = client.msg().await;
    assert_eq!(msg.body_str(), "over TLS");
    client.ack(&msg).await;
    // A plain client on the same broker sees the same queues.
    let mut plain = Client::connect(broker.addr, Version::V12).await;
    plain.send_r(&queue, "from plain TCP").await;
    let msg = client.msg().await;
    assert_eq!(msg.body_str(), "from plain TCP");
    client.disconnect().await;
    plain.disconnect().await;
}

#[tokio::test]
async fn tls_1_3_carries_a_stomp_session() {
    session_over(ProtocolVersion::TLSv1_3).await;
}

#[tokio::test]
async fn tls_1_2_carries_a_stomp_session() {
    session_over(ProtocolVersion::TLSv1_2).await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_refuses_the_broker() {
    let pki = Pki::new();
    let broker = start(&pki, "", "");
    let err = connect(broker.tls_addr(), &ClientOptions::trusting(&pki.rogue.pem))
        .await
        .err()
        .expect("the handshake must fail");
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    // The broker counted a failed handshake and carries on.
    tls_session(&broker, &ClientOptions::trusting(&pki.ca.pem))
        .await
        .disconnect()
        .await;
}

/// Reads until the broker closes the connection; what was read.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(CLOSE_WITHIN, stream.read(&mut buf)).await {
            Err(_) => panic!("the broker did not close the connection within {CLOSE_WITHIN:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_handshake_timeout() {
    let pki = Pki::new();
    let broker = start(&pki, "handshake_timeout_ms = 300", "");
    let mut silent = tokio::net::TcpStream::connect(broker.tls_addr())
        .await
        .unwrap();
    let got = read_until_closed(&mut silent).await;
    assert!(got.is_empty(), "a silent client is sent nothing: {got:?}");
    tls_session(&broker, &ClientOptions::trusting(&pki.ca.pem))
        .await
        .disconnect()
        .await;
}

#[tokio::test]
async fn plain_stomp_or_garbage_on_the_tls_port_is_closed() {
    let pki = Pki::new();
    let broker = start(&pki, "", "");
    for bytes in [
        &b"CONNECT\naccept-version:1.2\nhost:x\n\n\0"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0][..],
        &[0u8; 64][..],
    ] {
        let mut stream = tokio::net::TcpStream::connect(broker.tls_addr())
            .await
            .unwrap();
        stream.write_all(bytes).await.unwrap();
        let got = read_until_closed(&mut stream).await;
        assert!(
            !got.windows(9).any(|w| w == b"CONNECTED"),
            "no STOMP answer in the clear: {got:?}"
        );
    }
    let mut plain = Client::connect(broker.addr, Version::V12).await;
    plain.send_r("/queue/still-fine", "yes").await;
    tls_session(&broker, &ClientOptions::trusting(&pki.ca.pem))
        .await
        .disconnect()
        .await;
}

#[tokio::test]
async fn a_tls_only_broker_prints_its_tls_address_first() {
    let pki = Pki::new();
    let toml = pki.tls_section("");
    let broker = Launch::config_text(Path::new(env!("CARGO_BIN_EXE_plugboard")), &toml)
        .args(&["--no-tcp"])
        .tls_line()
        .start();
    assert_eq!(broker.addr.port(), 0, "no plain listener");
    tls_session(&broker, &ClientOptions::trusting(&pki.ca.pem))
        .await
        .disconnect()
        .await;
}

#[tokio::test]
async fn the_tls_listener_is_configured_from_the_command_line() {
    let pki = Pki::new();
    let path = |name: &str| pki.path(name).into_os_string();
    let args: Vec<std::ffi::OsString> = vec![
        "--tls-listen".into(),
        "127.0.0.1:0".into(),
        "--tls-cert".into(),
        path("server.pem"),
        "--tls-key".into(),
        path("server.key"),
        "--tls-client-ca".into(),
        path("ca.pem"),
    ];
    let broker = Launch::config_text(Path::new(env!("CARGO_BIN_EXE_plugboard")), "")
        .args(&args)
        .tls_line()
        .start();
    // --tls-client-ca: a certificate is required (client_auth's default).
    let with_cert = ClientOptions::trusting(&pki.ca.pem).with_identity(&pki.sensor);
    tls_session(&broker, &with_cert).await.disconnect().await;
    let without = ClientOptions::trusting(&pki.ca.pem);
    super::mutual::expect_refused(&broker, &without).await;
}

/// Slow handshakes hold their connection's address slot: over `max_connections_per_address` a
/// connection is closed at once, on the TLS port and the plain one alike (one cap over all
/// listeners); the handshakes that never finished are counted in the status.
#[tokio::test]
async fn slow_handshakes_count_against_the_per_address_cap() {
    use plugboard_test_support::broker::fetch_status;
    let pki = Pki::new();
    let toml = format!(
        "admin_listen = \"127.0.0.1:0\"\n{}\n[limits]\nmax_connections_per_address = 2\n",
        pki.tls_section("handshake_timeout_ms = 120000")
    );
    let broker = Launch::config_text(Path::new(env!("CARGO_BIN_EXE_plugboard")), &toml)
        .tls_line()
        .status_line()
        .start();
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(
            tokio::net::TcpStream::connect(broker.tls_addr())
                .await
                .unwrap(),
        );
    }
    // A third connection from the same address, mid-handshake or not, is closed at once.
    let mut third = tokio::net::TcpStream::connect(broker.tls_addr())
        .await
        .unwrap();
    third.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    assert!(read_until_closed(&mut third).await.is_empty());
    // The plain listener shares the cap: its refusal is a STOMP ERROR.
    let (mut plain, reply) =
        Client::connect_with(broker.addr, Client::connect_frame(Version::V12)).await;
    assert!(
        reply.is("ERROR") && reply.must("message").contains("too many connections"),
        "{reply:?}"
    );
    plain.expect_closed().await;
    let status = fetch_status(broker.admin()).await;
    assert!(
        status["connections"]["address_limit_refusals"].as_u64() >= Some(2),
        "{status}"
    );

    // Once the silent clients go, their slots come back (their handshakes fail and are counted).
    drop(silent);
    let options = ClientOptions::trusting(&pki.ca.pem);
    let deadline = std::time::Instant::now() + CLOSE_WITHIN;
    loop {
        if let Ok((mut client, _, _)) = connect(broker.tls_addr(), &options).await {
            if stomp_connect(&mut client, &[]).await.is("CONNECTED") {
                client.disconnect().await;
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slots never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = fetch_status(broker.admin()).await;
    let tls = &status["tls"];
    assert!(tls["handshake_failures"].as_u64() >= Some(2), "{status}");
    assert!(tls["handshakes"].as_u64() >= Some(1), "{status}");
}
