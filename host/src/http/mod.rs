//! The admin surface: a minimal HTTP/1.0 server on `admin_listen`. It answers `GET /status`
//! with JSON ([`mod@status`]; `plugboard status` prints it) and `GET /metrics` with Prometheus /
//! OpenMetrics text ([`metrics`]). Plugin decision traces are read and switched under
//! `/api/plugins/` ([`traces`], with its own rule for actions).
//!
//! Access, the same for every path: on a loopback address it answers anyone on the machine
//! (the status document then without file paths); with `admin_token` set, every request must
//! carry `Authorization: Bearer TOKEN`. A non-loopback `admin_listen` without a token is
//! refused at start. At most [`MAX_CONNECTIONS`] requests are served at once (more are closed
//! at once), each head read within [`request::REQUEST_TIME`] and [`request::MAX_REQUEST`]
//! bytes; one request per connection.

pub mod client;
pub mod metrics;
pub mod request;
pub mod status;
pub mod traces;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use crate::broker::Broker;
use metrics::Metrics;
use request::Request;

pub use status::status;

/// Most requests served at once; a connection beyond it is closed without an answer.
pub const MAX_CONNECTIONS: usize = 16;
/// Shortest `admin_token` accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

const JSON: &str = "application/json";

/// Checks that the admin surface may listen on `address` with `token`.
pub fn check_access(address: std::net::SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    match token {
        Some(token) if token.chars().count() < MIN_TOKEN_CHARS => {
            anyhow::bail!("admin_token must be at least {MIN_TOKEN_CHARS} characters")
        }
        None if !address.ip().is_loopback() => anyhow::bail!(
            "admin_listen {address} is not a loopback address: set admin_token, or listen on \
             127.0.0.1"
        ),
        _ => Ok(()),
    }
}

/// Serves the admin surface until shutdown.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let metrics = Arc::new(Metrics::new(broker.clone()));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!("admin request refused: too many at once");
            continue; // dropped: closed at once
        };
        let (broker, metrics) = (broker.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Err(err) = answer(stream, &broker, &metrics).await {
                debug!(%err, "admin request failed");
            }
            drop(slot);
        });
    }
}

/// A response: status line, content type and body.
struct Response {
    code: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn json(code: &'static str, body: String) -> Response {
        Response {
            code,
            content_type: JSON,
            body,
        }
    }
}

async fn answer(mut stream: TcpStream, broker: &Broker, metrics: &Metrics) -> std::io::Result<()> {
    let head = request::read_head(&mut stream).await?;
    let response = match Request::parse(&head) {
        Some(request) if traces::handles(request.path) => {
            traces::answer(request, &head, &mut stream, broker).await
        }
        parsed => route(parsed, broker, metrics),
    };
    let mut out = format!(
        "HTTP/1.0 {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        response.code,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    out.extend_from_slice(response.body.as_bytes());
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// What a request gets: the access rule first, then the path.
fn route(request: Option<Request<'_>>, broker: &Broker, metrics: &Metrics) -> Response {
    let Some(request) = request else {
        return Response::json(
            "400 Bad Request",
            "{\"error\":\"malformed request line\"}\n".to_string(),
        );
    };
    // None: no token configured (loopback only); else whether the request carries it.
    let authorized = broker.config.admin_token.as_ref().map(|token| {
        request
            .bearer
            .is_some_and(|given| crate::text::constant_time_eq(given, token.as_bytes()))
    });
    if authorized == Some(false) {
        return Response::json(
            "401 Unauthorized",
            "{\"error\":\"send Authorization: Bearer <admin_token>\"}\n".to_string(),
        );
    }
    match (request.method, request.path) {
        (b"GET", b"/status" | b"/") => {
            let document = status(broker, authorized == Some(true));
            let mut body = serde_json::to_string_pretty(&document).unwrap_or_default();
            body.push('\n');
            Response::json("200 OK", body)
        }
        (b"GET", b"/metrics") => Response {
            code: "200 OK",
            content_type: metrics::CONTENT_TYPE,
            body: metrics.render(),
        },
        (_, b"/status" | b"/" | b"/metrics") => Response::json(
            "405 Method Not Allowed",
            "{\"error\":\"only GET\"}\n".to_string(),
        ),
        _ => Response::json(
            "404 Not Found",
            "{\"error\":\"try GET /status or GET /metrics\"}\n".to_string(),
        ),
    }
}

/// Fetches the status document from a running broker (`plugboard status`).
pub async fn fetch(address: std::net::SocketAddr, token: Option<&str>) -> anyhow::Result<Value> {
    use anyhow::Context;
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address))
        .await
        .context("connecting to the status endpoint timed out")?
        .with_context(|| format!("connecting to the status endpoint at {address}"))?;
    let authorization = token
        .map(|token| format!("authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET /status HTTP/1.0\r\nhost: plugboard\r\n{authorization}\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .context("reading the status timed out")??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed status response")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.0 200"),
        "status endpoint answered: {head}"
    );
    Ok(serde_json::from_str(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_a_long_enough_token() {
        let public: std::net::SocketAddr = "0.0.0.0:1".parse().unwrap();
        let local: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(check_access(local, None).is_ok());
        assert!(check_access(public, None).is_err());
        assert!(check_access(public, Some("short")).is_err());
        assert!(check_access(public, Some("0123456789abcdef")).is_ok());
    }
}
