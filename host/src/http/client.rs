//! A minimal client of the admin surface for the CLI (`plugboard status`, `plugboard plugin
//! trace`): one HTTP/1.0 request per connection, bounded in time and in the size of the answer
//! it reads.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long connecting, and then reading the whole answer, may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read (10,000 decisions of a few hundred bytes fit).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// An answer: its status code and its JSON body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status code, e.g. 200.
    pub code: u16,
    /// The body, parsed as JSON (`null` when it is not JSON).
    pub body: serde_json::Value,
}

/// Sends `METHOD TARGET` (with a JSON `body` when given) to the admin listener at `address`,
/// with `Authorization: Bearer TOKEN` when a token is given.
pub async fn request(
    address: SocketAddr,
    token: Option<&str>,
    method: &str,
    target: &str,
    body: Option<&str>,
) -> anyhow::Result<Answer> {
    let mut stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(address))
        .await
        .context("connecting to the admin listener timed out")?
        .with_context(|| format!("connecting to the admin listener at {address}"))?;
    // The listener by its address: a loopback listener without a token answers only requests
    // whose `Host` names it by IP address (DNS-rebinding protection).
    let mut head = format!("{method} {target} HTTP/1.0\r\nhost: {address}\r\n");
    if let Some(token) = token {
        head.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or_default());
    stream.write_all(head.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(
        TIMEOUT,
        (&mut stream).take(MAX_ANSWER).read_to_end(&mut response),
    )
    .await
    .context("reading the answer timed out")??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed answer from the admin listener")?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("malformed status line from the admin listener")?;
    Ok(Answer {
        code,
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    })
}

/// What `plugboard plugin trace` does to the plugin's sampling before listing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TraceSwitch {
    /// Leave it as it is.
    Keep,
    /// Set it (0 to 1; 0 switches tracing off).
    Sample(f64),
}

/// `plugboard plugin trace NAME`: switches the plugin's sampling when asked to, then lists its
/// last `last` decisions, one per line (oldest first), after a line saying the rate in force.
pub async fn plugin_trace(
    address: SocketAddr,
    token: Option<&str>,
    plugin: &str,
    switch: TraceSwitch,
    last: usize,
) -> anyhow::Result<String> {
    let mut out = String::new();
    if let TraceSwitch::Sample(sample) = switch {
        let body = serde_json::json!({ "plugin": plugin, "sample": sample }).to_string();
        let answer = request(address, token, "POST", "/api/plugins/trace", Some(&body)).await?;
        ensure_ok(&answer)?;
    }
    let target = format!("/api/plugins/traces?plugin={plugin}&limit={last}");
    let answer = request(address, token, "GET", &target, None).await?;
    ensure_ok(&answer)?;
    let listed = answer.body["plugins"]
        .get(0)
        .context("the admin listener listed no such plugin")?;
    let sample = listed["sample"].as_f64().unwrap_or(0.0);
    let decisions = listed["decisions"].as_array().cloned().unwrap_or_default();
    out.push_str(&match sample {
        s if s <= 0.0 => format!("plugin {plugin}: tracing off"),
        s => format!("plugin {plugin}: tracing {s} of its calls"),
    });
    out.push_str(&format!(", {} decisions shown\n", decisions.len()));
    for decision in &decisions {
        out.push_str(&decision_line(decision));
        out.push('\n');
    }
    Ok(out)
}

fn ensure_ok(answer: &Answer) -> anyhow::Result<()> {
    if answer.code == 200 {
        return Ok(());
    }
    let reason = answer.body["error"].as_str().unwrap_or("no reason given");
    anyhow::bail!("the admin listener answered {}: {reason}", answer.code)
}

/// One decision on one line: `HH:MM:SS.mmm hook subject: verdict [notes] (N µs)`, where the
/// subject is the message id and destination, or the session and principal.
pub fn decision_line(decision: &serde_json::Value) -> String {
    let text = |key: &str| decision[key].as_str().unwrap_or_default();
    let at = decision["at_ms"].as_u64().unwrap_or(0) % 86_400_000;
    let (h, m, s, ms) = (at / 3_600_000, at / 60_000 % 60, at / 1000 % 60, at % 1000);
    let mut subject = Vec::new();
    match text("message_id") {
        "" => subject.push(format!("session {}", text("session"))),
        id => subject.push(id.to_string()),
    }
    for key in ["subscription", "principal"] {
        if !text(key).is_empty() && (text("message_id").is_empty() || key == "subscription") {
            subject.push(format!("{key} {}", text(key)));
        }
    }
    if !text("destination").is_empty() {
        subject.push(text("destination").to_string());
    }
    let notes: Vec<&str> = decision["notes"]
        .as_array()
        .map(|notes| notes.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" [{}]", notes.join("; "))
    };
    format!(
        "{h:02}:{m:02}:{s:02}.{ms:03} {} {}: {}{notes} ({} µs)",
        text("hook"),
        subject.join(" "),
        text("verdict"),
        decision["latency_us"].as_u64().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_reads_as_one_line() {
        let send = serde_json::json!({
            "at_ms": 86_400_000u64 * 20_000 + 3_723_123,
            "plugin": "router", "hook": "send", "vhost": "/", "session": "ab-1",
            "message_id": "ab-1-0", "destination": "/queue/orders",
            "verdict": "rewrite → /queue/orders.eu",
            "notes": ["rule 1: /queue/orders → /queue/orders.eu"], "latency_us": 42
        });
        assert_eq!(
            decision_line(&send),
            "01:02:03.123 send ab-1-0 /queue/orders: rewrite → /queue/orders.eu \
             [rule 1: /queue/orders → /queue/orders.eu] (42 µs)"
        );
        let auth = serde_json::json!({
            "at_ms": 0, "plugin": "auth", "hook": "authenticate", "vhost": "/",
            "session": "ab-2", "principal": "alice", "verdict": "authenticated alice",
            "notes": [], "latency_us": 7
        });
        assert_eq!(
            decision_line(&auth),
            "00:00:00.000 authenticate session ab-2 principal alice: authenticated alice (7 µs)"
        );
    }
}
