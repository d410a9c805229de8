//! The admin surface: a minimal HTTP/1.0 server on `admin_listen`. It answers `GET /status`
//! with JSON ([`mod@status`]; `plugboard status` prints it), `GET /metrics` with Prometheus /
//! OpenMetrics text ([`metrics`]), and serves the live console ([`console`]): the page at
//! `GET /`, its JSON at `GET /api/overview`, and its actions (`POST /api/...`).
//! Plugin decision traces are read and switched under `/api/plugins/` ([`traces`]).
//!
//! Access: on a loopback address it answers anyone on the machine (the status document then
//! without file paths), provided the `Host` header names it by an IP address or `localhost`
//! (DNS-rebinding protection); with `admin_token` set, every request but the page itself (which
//! holds no data) must carry `Authorization: Bearer TOKEN`. Actions are refused (403) unless a
//! token is set, and then need it like everything else: a bearer header, never a cookie, so a
//! page of another site cannot forge one. A non-loopback `admin_listen` without a token is
//! refused at start. At most [`MAX_CONNECTIONS`] requests are served at once (more are closed
//! at once), each read within [`request::REQUEST_TIME`], its head within
//! [`request::MAX_REQUEST`] bytes and its body within [`request::MAX_BODY`]; one request per
//! connection.

pub mod client;
pub mod console;
pub mod metrics;
pub mod request;
pub mod status;
pub mod traces;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use crate::broker::Broker;
use console::rates::Rates;
use metrics::Metrics;
use request::Request;
use std::net::SocketAddr;

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
    let rates = Arc::new(Rates::default());
    {
        let (rates, broker, shutdown) = (rates.clone(), broker.clone(), shutdown.clone());
        let cap = broker.config.metrics.max_labelled_destinations;
        tokio::spawn(async move { rates.run(&broker.vhosts, cap, shutdown).await });
    }
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!("admin request refused: too many at once");
            continue; // dropped: closed at once
        };
        let (broker, metrics, rates) = (broker.clone(), metrics.clone(), rates.clone());
        tokio::spawn(async move {
            let shared = Shared {
                broker: &broker,
                metrics: &metrics,
                rates: &rates,
                peer,
            };
            if let Err(err) = answer(stream, shared).await {
                debug!(%err, "admin request failed");
            }
            drop(slot);
        });
    }
}

/// What every request of one listener shares, and who sent this one.
#[derive(Clone, Copy)]
struct Shared<'a> {
    broker: &'a Broker,
    metrics: &'a Metrics,
    rates: &'a Rates,
    peer: SocketAddr,
}

/// A response: status line, content type, extra header lines and body.
struct Response {
    code: &'static str,
    content_type: &'static str,
    /// Extra header lines, each ending in CRLF.
    headers: String,
    body: String,
}

impl Response {
    fn json(code: &'static str, body: String) -> Response {
        Response {
            code,
            content_type: JSON,
            headers: "cache-control: no-store\r\n".to_string(),
            body,
        }
    }

    /// A JSON error `{"error": message}`.
    fn error(code: &'static str, message: &str) -> Response {
        Response::json(
            code,
            format!("{}\n", serde_json::json!({ "error": message })),
        )
    }

    fn value(code: &'static str, value: &Value) -> Response {
        let mut body = serde_json::to_string(value).unwrap_or_default();
        body.push('\n');
        Response::json(code, body)
    }
}

async fn answer(mut stream: TcpStream, shared: Shared<'_>) -> std::io::Result<()> {
    let response = match request::read_request(&mut stream).await {
        Ok(raw) => route(Request::parse(&raw.head), &raw.body, shared).await,
        Err(request::ReadError::Io(err)) => return Err(err),
        Err(err @ request::ReadError::BadLength) => {
            Response::error("413 Payload Too Large", &err.to_string())
        }
        Err(err @ request::ReadError::Encoded) => {
            Response::error("411 Length Required", &err.to_string())
        }
    };
    let mut out = format!(
        "HTTP/1.0 {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nx-content-type-options: \
         nosniff\r\n{}connection: close\r\n\r\n",
        response.code,
        response.content_type,
        response.body.len(),
        response.headers,
    )
    .into_bytes();
    out.extend_from_slice(response.body.as_bytes());
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// The console's actions.
const ACTIONS: [&[u8]; 3] = [
    b"/api/queues/purge",
    b"/api/queues/move",
    b"/api/connections/close",
];

/// What a request gets: the access rules first, then the path.
async fn route(request: Option<Request<'_>>, body: &[u8], shared: Shared<'_>) -> Response {
    let broker = shared.broker;
    let Some(request) = request else {
        return Response::error("400 Bad Request", "malformed request line");
    };
    let token = broker.config.admin_token.as_ref();
    if token.is_none() && !console::host_allowed(request.host) {
        return Response::error(
            "403 Forbidden",
            "the Host header must name this listener by IP address or localhost (DNS-rebinding \
             protection; set admin_token to serve other names)",
        );
    }
    if (request.method, request.path) == (&b"GET"[..], &b"/"[..]) {
        // The console page holds no data: it asks for the token itself when one is needed.
        return Response {
            code: "200 OK",
            content_type: "text/html; charset=utf-8",
            headers: format!(
                "content-security-policy: {}\r\nreferrer-policy: no-referrer\r\n\
                 x-frame-options: DENY\r\ncache-control: no-store\r\n",
                console::content_security_policy()
            ),
            body: console::page().to_string(),
        };
    }
    // None: no token configured (loopback only); else whether the request carries it.
    let authorized = token.map(|token| {
        request
            .bearer
            .is_some_and(|given| crate::text::constant_time_eq(given, token.as_bytes()))
    });
    if authorized == Some(false) {
        return Response::error(
            "401 Unauthorized",
            "send Authorization: Bearer <admin_token>",
        );
    }
    match (request.method, request.path) {
        (b"GET", b"/status") => {
            // Cluster mode: the live edges are read from JetStream (at most every few seconds).
            metrics::cluster::refresh_edges(broker).await;
            let document = status(broker, authorized == Some(true));
            let mut body = serde_json::to_string_pretty(&document).unwrap_or_default();
            body.push('\n');
            Response::json("200 OK", body)
        }
        (b"GET", b"/metrics") => {
            Metrics::refresh(broker).await;
            Response {
                code: "200 OK",
                content_type: metrics::CONTENT_TYPE,
                headers: String::new(),
                body: shared.metrics.render(),
            }
        }
        (b"GET", b"/api/overview") => {
            // Cluster queues' depths are JetStream's (read at most every few seconds).
            Metrics::refresh(broker).await;
            Response::value(
                "200 OK",
                &console::overview::overview(broker, shared.rates, token.is_some()),
            )
        }
        (b"POST", path) if ACTIONS.contains(&path) => {
            if token.is_none() {
                return Response::error(
                    "403 Forbidden",
                    "actions are disabled: set admin_token in the configuration and send it as \
                     Authorization: Bearer <admin_token>",
                );
            }
            let (code, value) = console::actions::run(path, body, broker, shared.peer).await;
            Response::value(code, &value)
        }
        (b"GET", traces::TRACES_PATH) => traces::list(broker, &request),
        (b"POST", traces::TRACE_PATH) => {
            if token.is_none() {
                return Response::error(
                    "403 Forbidden",
                    "actions need admin_token in the configuration (sent as Authorization: \
                     Bearer <admin_token>)",
                );
            }
            traces::switch(broker, body)
        }
        (_, path) if ACTIONS.contains(&path) || path == traces::TRACE_PATH => {
            Response::error("405 Method Not Allowed", "only POST")
        }
        (_, traces::TRACES_PATH) => Response::error("405 Method Not Allowed", "only GET"),
        (_, b"/status" | b"/" | b"/metrics" | b"/api/overview") => {
            Response::error("405 Method Not Allowed", "only GET")
        }
        _ => Response::error(
            "404 Not Found",
            "try GET / (the console), GET /status or GET /metrics",
        ),
    }
}

/// Fetches the status document from a running broker (`plugboard status`).
pub async fn fetch(address: std::net::SocketAddr, token: Option<&str>) -> anyhow::Result<Value> {
    let answer = client::request(address, token, "GET", "/status", None).await?;
    anyhow::ensure!(
        answer.code == 200,
        "status endpoint answered {}: {}",
        answer.code,
        answer.body
    );
    Ok(answer.body)
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
