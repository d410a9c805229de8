//! The admin endpoint: loopback only unless a token is configured, the token required when it
//! is, no file paths for callers without one, and a cap on connections held at once.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use plugboard_test_support::broker::Launch;
use plugboard_test_support::BrokerBinary;

use crate::harness::*;
use crate::Plugboard;

const TOKEN: &str = "0123456789abcdef-admin";

/// `GET /status` with an optional bearer token: (status line, body).
async fn get_status(admin: std::net::SocketAddr, token: Option<&str>) -> (String, String) {
    let fetch = async {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        stream
            .write_all(format!("GET /status HTTP/1.0\r\n{auth}\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    };
    let text = tokio::time::timeout(T, fetch)
        .await
        .expect("status answered");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[test]
fn a_non_loopback_admin_listener_without_a_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_plugboard"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run plugboard");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin_token"), "{stderr}");
}

#[tokio::test]
async fn with_a_token_every_request_needs_it_and_gets_the_paths() {
    let broker = Launch::config_text(
        Plugboard::PATH,
        &format!("admin_listen = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n"),
    )
    .status_line()
    .start();
    for bad in [None, Some("wrong-token-of-enough-length"), Some("")] {
        let (line, _) = get_status(broker.admin(), bad).await;
        assert!(line.contains("401"), "{bad:?}: {line}");
    }
    let (line, body) = get_status(broker.admin(), Some(TOKEN)).await;
    assert!(line.contains("200"), "{line}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(status["store"]["data_dir"].is_string(), "{status}");
}

#[tokio::test]
async fn metrics_follow_the_same_access_rules() {
    use plugboard_test_support::metrics::{get, scrape};
    let broker = Launch::config_text(
        Plugboard::PATH,
        &format!("admin_listen = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n"),
    )
    .status_line()
    .start();
    for bad in [None, Some("wrong-token-of-enough-length"), Some("")] {
        let (line, _, body) = get(broker.admin(), "/metrics", bad).await;
        assert!(line.contains("401"), "{bad:?}: {line}");
        assert!(!body.contains("plugboard_"), "{body}");
    }
    let metrics = scrape(broker.admin(), Some(TOKEN)).await;
    assert_eq!(metrics.value("plugboard_queues", &[]), 0.0);
    // Only GET, and unknown paths are not found (behind the token too).
    let (line, _, _) = get(broker.admin(), "/nothing", Some(TOKEN)).await;
    assert!(line.contains("404"), "{line}");

    let open = Launch::config_text(Plugboard::PATH, "admin_listen = \"127.0.0.1:0\"\n")
        .status_line()
        .start();
    let metrics = scrape(open.admin(), None).await;
    assert_eq!(metrics.value("plugboard_topics", &[]), 0.0);
}

#[tokio::test]
async fn without_a_token_loopback_callers_get_no_paths() {
    let broker = Launch::config_text(Plugboard::PATH, "admin_listen = \"127.0.0.1:0\"\n")
        .status_line()
        .start();
    let (line, body) = get_status(broker.admin(), None).await;
    assert!(line.contains("200"), "{line}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(status["store"]["data_dir"].is_null(), "{status}");
    assert!(!body.contains("/tmp"), "a path leaked: {body}");
}

#[tokio::test]
async fn idle_connections_cannot_hold_more_than_the_cap() {
    let broker = Launch::config_text(Plugboard::PATH, "admin_listen = \"127.0.0.1:0\"\n")
        .status_line()
        .start();
    let mut idle = Vec::new();
    for _ in 0..48 {
        idle.push(TcpStream::connect(broker.admin()).await.unwrap());
    }
    // Those past the cap are closed at once.
    let mut closed = 0;
    for stream in &mut idle {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 48 - 16,
        "only {closed} of 48 idle connections were closed"
    );
    drop(idle);
    // Once they are gone the endpoint answers again, and STOMP was never affected.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (line, _) = get_status(broker.admin(), None).await;
    assert!(line.contains("200"), "{line}");
    let mut c = Client::connect(broker.addr, Version::V12).await;
    c.send_r("/queue/admin-cap", "fine").await;
}
