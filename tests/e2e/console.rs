//! The live console of the admin listener, over HTTP on loopback against the real binary: the
//! page and its Content-Security-Policy, `GET /api/overview` after STOMP traffic, the access
//! rules of the actions (403 without a configured token, 401 with a wrong one, the Host check),
//! and what purge, move and close do to queues and clients.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use plugboard_test_support::broker::{Broker as Process, Launch};
use plugboard_test_support::BrokerBinary;

use crate::harness::*;
use crate::Plugboard;

pub(super) const TOKEN: &str = "console-test-token-0123456789";

/// A broker with an admin listener (and a token, when `token`) and `extra` config, journaling
/// into `data` when given.
fn broker(token: bool, extra: &str, data: Option<&Path>) -> Process {
    let token = if token {
        format!("admin_token = \"{TOKEN}\"\n")
    } else {
        String::new()
    };
    let mut launch = Launch::config_text(
        Plugboard::PATH,
        &format!("admin_listen = \"127.0.0.1:0\"\n{token}{extra}"),
    )
    .status_line();
    if let Some(data) = data {
        launch = launch.args(&[std::ffi::OsStr::new("--data-dir"), data.as_os_str()]);
    }
    launch.start()
}

/// An HTTP response: status line, headers (lowercase names), body.
pub(super) struct Answer {
    line: String,
    headers: String,
    pub(super) body: String,
}

impl Answer {
    pub(super) fn code(&self) -> u16 {
        self.line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.body))
    }
}

/// One request to the admin listener (bounded), with `Host` set to its address unless `host`.
async fn http(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    host: Option<&str>,
) -> Answer {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
        host.map_or(admin.to_string(), str::to_string)
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(admin)
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the admin listener answered within 10 s");
    let text = String::from_utf8(response).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let (line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Answer {
        line: line.to_string(),
        headers: headers.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

pub(super) async fn overview(admin: SocketAddr, token: Option<&str>) -> Value {
    let answer = http(admin, "GET", "/api/overview", token, None, None).await;
    assert_eq!(answer.code(), 200, "{}: {}", answer.line, answer.body);
    answer.json()
}

/// Polls the overview until `check` holds (20 s at most).
pub(super) async fn overview_until(
    admin: SocketAddr,
    token: Option<&str>,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let doc = overview(admin, token).await;
        if check(&doc) {
            return doc;
        }
        assert!(Instant::now() < deadline, "{what}: not reached: {doc:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn queue<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    doc["queues"].as_array()?.iter().find(|q| q["name"] == name)
}

pub(super) async fn action(admin: SocketAddr, path: &str, body: &str) -> Answer {
    http(admin, "POST", path, Some(TOKEN), Some(body), None).await
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_content_security_policy() {
    let broker = broker(false, "", None);
    let page = http(broker.admin(), "GET", "/", None, None, None).await;
    assert_eq!(page.code(), 200, "{}", page.line);
    assert!(
        page.headers.contains("content-type: text/html"),
        "{}",
        page.headers
    );
    let csp = page
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("content-security-policy: "))
        .expect("a CSP header");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(page.headers.contains("x-frame-options: deny"));
    assert!(page.body.contains("/api/overview"));
    assert!(page.body.contains("<svg") || page.body.contains("createElementNS"));

    // A name that is no address (DNS rebinding) gets nothing; an address or localhost does.
    for path in ["/", "/api/overview", "/status", "/metrics"] {
        let rebound = http(
            broker.admin(),
            "GET",
            path,
            None,
            None,
            Some("evil.example:80"),
        )
        .await;
        assert_eq!(rebound.code(), 403, "{path}: {}", rebound.line);
    }
    let local = http(
        broker.admin(),
        "GET",
        "/api/overview",
        None,
        None,
        Some("localhost"),
    )
    .await;
    assert_eq!(local.code(), 200, "{}", local.line);

    // With a token the page is served to anyone (it holds no data), the JSON is not.
    let guarded = self::broker(true, "", None);
    let page = http(guarded.admin(), "GET", "/", None, None, None).await;
    assert_eq!(page.code(), 200);
    let json = http(guarded.admin(), "GET", "/api/overview", None, None, None).await;
    assert_eq!(json.code(), 401, "{}", json.line);
    let json = overview(guarded.admin(), Some(TOKEN)).await;
    assert_eq!(json["actions"], true);
}

#[tokio::test]
async fn the_overview_shows_queues_topics_and_connections_after_traffic() {
    let broker = broker(false, "", None);
    let dest = format!("/queue/{}", unique("console"));
    let topic = format!("/topic/{}", unique("console"));
    let mut producer = Client::connect(broker.addr, Version::V12).await;
    for n in 0..3 {
        producer.send(&dest, &format!("message {n}")).await;
    }
    producer.sync().await;
    let mut listener = Client::connect(broker.addr, Version::V11).await;
    listener.subscribe("t", &topic, "auto").await;
    listener.sync().await;

    let doc = overview_until(broker.admin(), None, "3 ready", |doc| {
        queue(doc, &dest).is_some_and(|q| q["ready"] == 3)
    })
    .await;
    let row = queue(&doc, &dest).unwrap();
    assert_eq!(row["unacked"], 0);
    assert_eq!(row["consumers"], 0);
    assert_eq!(row["published"], 3);
    assert_eq!(doc["actions"], false);
    let topic_row = doc["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic.as_str())
        .expect("the topic is listed");
    assert_eq!(topic_row["subscribers"], 1);

    let session = |c: &Client| c.connected.as_ref().unwrap().must("session").to_string();
    let connections = doc["connections"].as_array().unwrap();
    assert_eq!(doc["connections_total"], connections.len());
    let mine = connections
        .iter()
        .find(|c| c["session"] == session(&producer).as_str())
        .expect("the producer is listed");
    assert_eq!(mine["version"], "1.2");
    assert_eq!(mine["listener"], "tcp");
    assert_eq!(mine["vhost"], "/");
    assert!(mine["user"].is_string(), "{mine}");
    assert!(mine["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(mine["bytes_in"].as_u64().unwrap() > 0, "{mine}");
    assert!(mine["bytes_out"].as_u64().unwrap() > 0, "{mine}");
    let other = connections
        .iter()
        .find(|c| c["session"] == session(&listener).as_str())
        .expect("the subscriber is listed");
    assert_eq!(other["version"], "1.1");

    // The sampler runs every 5 s: within a few samples the rates have a history.
    let doc = overview_until(broker.admin(), None, "a rate history", |doc| {
        doc["rates"]["t"].as_array().is_some_and(|t| !t.is_empty())
            && queue(doc, &dest).is_some_and(|q| q["history"]["in"].is_array())
    })
    .await;
    assert_eq!(doc["rates"]["interval_ms"], 5000);
    assert_eq!(
        doc["rates"]["in"].as_array().unwrap().len(),
        doc["rates"]["t"].as_array().unwrap().len()
    );

    // A closed connection leaves the list.
    let gone = session(&listener);
    listener.disconnect().await;
    overview_until(broker.admin(), None, "the subscriber gone", |doc| {
        !doc["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["session"] == gone.as_str())
    })
    .await;
}

#[tokio::test]
async fn actions_need_a_configured_token_and_the_right_one() {
    let open = broker(false, "", None);
    let bodies = [
        ("/api/queues/purge", r#"{"queue":"/queue/a"}"#),
        ("/api/queues/move", r#"{"from":"/queue/DLQ.a"}"#),
        ("/api/connections/close", r#"{"id":1}"#),
    ];
    for (path, body) in bodies {
        let answer = http(open.admin(), "POST", path, Some(TOKEN), Some(body), None).await;
        assert_eq!(answer.code(), 403, "{path}: {}", answer.line);
        assert!(answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("admin_token"));
    }
    let guarded = broker(true, "", None);
    for (path, body) in bodies {
        for token in [None, Some("wrong-token-of-enough-length")] {
            let answer = http(guarded.admin(), "POST", path, token, Some(body), None).await;
            assert_eq!(answer.code(), 401, "{path} {token:?}: {}", answer.line);
        }
        let get = http(guarded.admin(), "GET", path, Some(TOKEN), None, None).await;
        assert_eq!(get.code(), 405, "{path}: {}", get.line);
    }
    // Bodies: small JSON objects with known fields only.
    let unknown = action(
        guarded.admin(),
        "/api/queues/purge",
        r#"{"queue":"/queue/a","x":1}"#,
    )
    .await;
    assert_eq!(unknown.code(), 400, "{}", unknown.body);
    let not_json = action(guarded.admin(), "/api/queues/purge", "queue=/queue/a").await;
    assert_eq!(not_json.code(), 400, "{}", not_json.body);
    let big = format!(r#"{{"queue":"/queue/{}"}}"#, "a".repeat(8 * 1024));
    let too_big = action(guarded.admin(), "/api/queues/purge", &big).await;
    assert_eq!(too_big.code(), 413, "{}", too_big.body);
    let missing = action(
        guarded.admin(),
        "/api/queues/purge",
        r#"{"queue":"/queue/none"}"#,
    )
    .await;
    assert_eq!(missing.code(), 404, "{}", missing.body);
    let topic = action(
        guarded.admin(),
        "/api/queues/move",
        r#"{"from":"/queue/none"}"#,
    )
    .await;
    assert_eq!(topic.code(), 404, "{}", topic.body);
}

#[tokio::test]
async fn purge_removes_ready_messages_for_good_and_leaves_unacked_ones() {
    let data = tempfile::tempdir().unwrap();
    let dest = format!("/queue/{}", unique("purge"));
    let mut first = broker(true, "", Some(data.path()));
    let mut producer = Client::connect(first.addr, Version::V12).await;
    for n in 0..5 {
        let frame = Frame::new("SEND")
            .h("destination", &dest)
            .h("persistent", "true")
            .body(format!("m{n}"));
        producer.roundtrip(frame).await;
    }
    // One delivered and not acknowledged: not purged.
    let mut consumer = Client::connect(first.addr, Version::V12).await;
    consumer
        .subscribe_with(
            "s",
            &dest,
            "client-individual",
            &[("activemq.prefetchSize", "1")],
        )
        .await;
    let held = consumer.msg().await;
    assert_eq!(held.body_str(), "m0");
    overview_until(first.admin(), Some(TOKEN), "4 ready, 1 unacked", |doc| {
        queue(doc, &dest).is_some_and(|q| q["ready"] == 4 && q["unacked"] == 1)
    })
    .await;
    let answer = action(
        first.admin(),
        "/api/queues/purge",
        &format!(r#"{{"queue":"{dest}"}}"#),
    )
    .await;
    assert_eq!(answer.code(), 200, "{}", answer.body);
    assert_eq!(answer.json()["purged"], 4);
    let doc = overview(first.admin(), Some(TOKEN)).await;
    let row = queue(&doc, &dest).unwrap();
    assert_eq!(
        (row["ready"].as_u64(), row["unacked"].as_u64()),
        (Some(0), Some(1))
    );
    consumer.expect_silence(QUIET).await;
    // A receipted persistent send after the purge: the journal has written what came before.
    let marker = format!("/queue/{}", unique("marker"));
    producer
        .roundtrip(
            Frame::new("SEND")
                .h("destination", &marker)
                .h("persistent", "true")
                .body("x"),
        )
        .await;
    first.kill_hard();
    drop(first);

    // After a restart only the unacknowledged message comes back.
    let second = broker(true, "", Some(data.path()));
    let mut drain = Client::connect(second.addr, Version::V12).await;
    drain.subscribe("d", &dest, "auto").await;
    let back = drain.msg().await;
    assert_eq!(back.body_str(), "m0");
    drain.expect_silence(QUIET).await;
}

#[tokio::test]
async fn dead_lettered_messages_move_back_to_their_queue_with_their_headers() {
    let broker = broker(true, "[dead_letter]\nmax_deliveries = 1\n", None);
    let name = unique("moveback");
    let dest = format!("/queue/{name}");
    let dlq = format!("/queue/DLQ.{name}");
    let mut c = Client::connect(broker.addr, Version::V12).await;
    c.subscribe("s", &dest, "client-individual").await;
    for body in ["poison 1", "poison 2"] {
        c.roundtrip(
            Frame::new("SEND")
                .h("destination", &dest)
                .h("region", "eu")
                .body(body),
        )
        .await;
        let m = c.msg().await;
        c.nack(&m).await;
    }
    c.unsubscribe("s").await;
    c.sync().await;
    overview_until(broker.admin(), Some(TOKEN), "2 in the DLQ", |doc| {
        queue(doc, &dlq).is_some_and(|q| q["ready"] == 2)
    })
    .await;

    // One back where the dead-letter headers say, with an explicit limit.
    let answer = action(
        broker.admin(),
        "/api/queues/move",
        &format!(r#"{{"from":"{dlq}","max":1}}"#),
    )
    .await;
    assert_eq!(answer.code(), 200, "{}", answer.body);
    let moved = answer.json();
    assert_eq!(moved["moved"], 1, "{moved}");
    assert_eq!(moved["targets"][&dest], 1, "{moved}");
    assert_eq!(moved["remaining"], 1, "{moved}");
    let mut d = Client::connect(broker.addr, Version::V12).await;
    d.subscribe("d", &dest, "auto").await;
    let back = d.msg().await;
    assert_eq!(back.body_str(), "poison 1");
    assert_eq!(back.get("region"), Some("eu"), "{back:?}");
    assert_eq!(back.get("dlq-reason"), None, "{back:?}");
    assert_eq!(back.get("destination"), Some(dest.as_str()));

    // The other to a queue named in the request.
    let elsewhere = format!("/queue/{}", unique("elsewhere"));
    let answer = action(
        broker.admin(),
        "/api/queues/move",
        &format!(r#"{{"from":"{dlq}","to":"{elsewhere}"}}"#),
    )
    .await;
    assert_eq!(answer.json()["moved"], 1, "{}", answer.body);
    let mut e = Client::connect(broker.addr, Version::V12).await;
    e.subscribe("e", &elsewhere, "auto").await;
    assert_eq!(e.msg().await.body_str(), "poison 2");
    let doc = overview(broker.admin(), Some(TOKEN)).await;
    assert_eq!(queue(&doc, &dlq).unwrap()["ready"], 0);

    // Not to a topic, nor onto itself.
    for body in [
        format!(r#"{{"from":"{dlq}","to":"/topic/x"}}"#),
        format!(r#"{{"from":"{dlq}","to":"{dlq}"}}"#),
    ] {
        let answer = action(broker.admin(), "/api/queues/move", &body).await;
        assert_eq!(answer.code(), 400, "{body}: {}", answer.body);
    }
}

#[tokio::test]
async fn a_closed_connection_gets_an_error_and_its_unacked_message_is_redelivered() {
    let broker = broker(true, "", None);
    let dest = format!("/queue/{}", unique("close"));
    let mut victim = Client::connect(broker.addr, Version::V12).await;
    victim.subscribe("s", &dest, "client-individual").await;
    let mut producer = Client::connect(broker.addr, Version::V12).await;
    producer.send_r(&dest, "held").await;
    assert_eq!(victim.msg().await.body_str(), "held");

    let session = victim
        .connected
        .as_ref()
        .unwrap()
        .must("session")
        .to_string();
    let doc = overview(broker.admin(), Some(TOKEN)).await;
    let id = doc["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["session"] == session.as_str())
        .expect("the victim is listed")["id"]
        .as_u64()
        .unwrap();
    let answer = action(
        broker.admin(),
        "/api/connections/close",
        &format!(r#"{{"id":{id}}}"#),
    )
    .await;
    assert_eq!(answer.code(), 200, "{}", answer.body);
    assert_eq!(answer.json()["closed"], id);
    let error = victim.expect_error_close().await;
    assert_eq!(error.get("message"), Some("closed by the administrator"));

    let mut next = Client::connect(broker.addr, Version::V12).await;
    next.subscribe("n", &dest, "auto").await;
    let again = next.msg().await;
    assert_eq!(again.body_str(), "held");
    assert_eq!(again.get("redelivered"), Some("true"), "{again:?}");

    // Gone from the list; closing it again finds nothing.
    overview_until(broker.admin(), Some(TOKEN), "the victim gone", |doc| {
        !doc["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id)
    })
    .await;
    let again = action(
        broker.admin(),
        "/api/connections/close",
        &format!(r#"{{"id":{id}}}"#),
    )
    .await;
    assert_eq!(again.code(), 404, "{}", again.body);
    let log = broker.log();
    assert!(log.contains("admin action"), "actions are logged");
}
