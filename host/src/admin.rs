//! The status endpoint: a minimal HTTP/1.0 server on `admin_listen` answering `GET /status`
//! with JSON (loaded plugins with their content hashes, load time, call/trap/timeout counters,
//! the last reload error, settings waiting for a restart, connection and destination counts).
//! `plugboard status` prints it. It exposes no control, only state.
//!
//! Access: on a loopback address it answers anyone on the machine, without file paths; with
//! `admin_token` set, every request must carry `Authorization: Bearer TOKEN` and gets the full
//! document. A non-loopback `admin_listen` without a token is refused at start. At most
//! [`MAX_CONNECTIONS`] requests are served at once (more are closed at once), each read within
//! 5 s and 8 KiB.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use crate::broker::Broker;

/// Largest request read.
const MAX_REQUEST: usize = 8 * 1024;
/// Most requests served at once; a connection beyond it is closed without an answer.
pub const MAX_CONNECTIONS: usize = 16;
/// A request must arrive whole within this time.
const REQUEST_TIME: Duration = Duration::from_secs(5);
/// Shortest `admin_token` accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The status document; `with_paths` includes file and directory paths (authenticated callers).
pub fn status(broker: &Broker, with_paths: bool) -> Value {
    let path = |p: &std::path::Path| with_paths.then(|| p.display().to_string());
    let set = broker.policy.current();
    let reload = broker.policy.status();
    let stats = set.host.stats();
    let plugins: Vec<Value> = set
        .files
        .iter()
        .zip(&set.specs)
        .map(|(file, spec)| {
            let counters = stats.iter().find(|s| s.name == file.name);
            json!({
                "name": file.name,
                "file": path(&file.path),
                "sha256": file.sha256,
                "hooks": spec.hooks.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
                "destinations": spec.destinations,
                "calls": counters.map(|c| c.calls),
                "traps": counters.map(|c| c.traps),
                "timeouts": counters.map(|c| c.timeouts),
                "memory_limit": counters.map(|c| c.memory_limit),
                "invalid_output": counters.map(|c| c.invalid_output),
                "busy_waits": counters.map(|c| c.busy_waits),
                "busy": counters.map(|c| c.busy),
                "backoff": counters.map(|c| c.backoff),
                "routes_refused": counters.map(|c| c.routes_refused),
                "log_dropped": counters.map(|c| c.log_dropped),
                "instances_created": counters.map(|c| c.instances_created),
                "recycled": counters.map(|c| c.recycled),
            })
        })
        .collect();
    let (queues, topics) = broker.router.counts();
    let stats = &broker.stats;
    json!({
        "server": format!("{}/{}", broker.config.server_name, env!("CARGO_PKG_VERSION")),
        "connections": {
            "open": stats.connections_open.load(Relaxed),
            "total": stats.connections_total.load(Relaxed),
            "client_errors": stats.client_errors.load(Relaxed),
            "slow_consumer_disconnects": stats.slow_consumer_disconnects.load(Relaxed),
            "heartbeat_timeouts": stats.heartbeat_timeouts.load(Relaxed),
            "session_panics": stats.session_panics.load(Relaxed),
            "address_limit_refusals": stats.address_limit_refusals.load(Relaxed),
            "failed_logins": stats.failed_logins.load(Relaxed),
            "idle_closes": stats.idle_closes.load(Relaxed),
        },
        "tls": broker.tls.as_ref().map(|tls| {
            let s = &tls.stats;
            json!({
                "handshakes": s.handshakes.load(Relaxed),
                "handshake_failures": s.handshake_failures.load(Relaxed),
                "handshake_timeouts": s.handshake_timeouts.load(Relaxed),
                "certificate_reloads": s.reloads.load(Relaxed),
                "certificate_reload_failures": s.reload_failures.load(Relaxed),
            })
        }),
        "destinations": { "queues": queues, "topics": topics },
        "store": broker.router.store().map(|store| {
            let s = store.stats();
            json!({
                "data_dir": path(store.dir()),
                "fsync": format!("{:?}", broker.config.store.fsync).to_lowercase(),
                "live_messages": s.live_messages.load(Relaxed),
                "live_bytes": s.live_bytes.load(Relaxed),
                "max_bytes": broker.config.store.max_bytes,
                "disk_bytes": s.disk_bytes.load(Relaxed),
                "segments": s.segments.load(Relaxed),
                "records_appended": s.records_appended.load(Relaxed),
                "records_written": s.records_written.load(Relaxed),
                "bytes_written": s.bytes_written.load(Relaxed),
                "batches": s.batches.load(Relaxed),
                "fsyncs": s.fsyncs.load(Relaxed),
                "settled_before_written": s.cancelled.load(Relaxed),
                "relocated": s.relocated.load(Relaxed),
                "failed": store.failure(),
            })
        }),
        "plugins": {
            "generation": set.generation,
            "loaded_at_unix_ms": unix_ms(set.loaded_at),
            "loaded": plugins,
            "reloads": reload.reloads,
            "reload_failures": reload.failures,
            "last_reload_ms": reload.last_reload_ms,
            "last_error": reload.last_error.as_ref().map(|(at, reason)| json!({
                "at_unix_ms": unix_ms(*at),
                "reason": reason,
            })),
            "needs_restart": reload.needs_restart,
        },
    })
}

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

/// Serves `GET /status` until shutdown.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
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
            debug!("status request refused: too many at once");
            continue; // dropped: closed at once
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            if let Err(err) = answer(stream, &broker).await {
                debug!(%err, "status request failed");
            }
            drop(slot);
        });
    }
}

async fn answer(mut stream: TcpStream, broker: &Broker) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n")
            && !request.windows(2).any(|w| w == b"\n\n")
        {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || request.len() > MAX_REQUEST {
                break;
            }
            request.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(REQUEST_TIME, read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    // None: no token configured (loopback only); else whether the request carries it.
    let authorized = broker.config.admin_token.as_ref().map(|token| {
        bearer(&request).is_some_and(|given| crate::text::constant_time_eq(given, token.as_bytes()))
    });
    let (code, body) = if authorized == Some(false) {
        (
            "401 Unauthorized",
            "{\"error\":\"send Authorization: Bearer <admin_token>\"}".to_string(),
        )
    } else if line.starts_with(b"GET /status ") || line.starts_with(b"GET / ") {
        let document = status(broker, authorized == Some(true));
        (
            "200 OK",
            serde_json::to_string_pretty(&document).unwrap_or_default(),
        )
    } else {
        (
            "404 Not Found",
            "{\"error\":\"try GET /status\"}".to_string(),
        )
    };
    let response = format!(
        "HTTP/1.0 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}\n",
        body.len() + 1
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The token of an `Authorization: Bearer TOKEN` header line of `request`.
fn bearer(request: &[u8]) -> Option<&[u8]> {
    request.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if !name.eq_ignore_ascii_case(b"authorization") {
            return None;
        }
        let scheme = value.get(..7)?;
        scheme
            .eq_ignore_ascii_case(b"bearer ")
            .then(|| value[7..].trim_ascii())
    })
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
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let request = b"GET /status HTTP/1.0\r\nHost: x\r\nAUTHORIZATION:  bearer  s3cret \r\n\r\n";
        assert_eq!(bearer(request), Some(&b"s3cret"[..]));
        assert_eq!(
            bearer(b"GET / HTTP/1.0\r\nauthorization: Basic abc\r\n\r\n"),
            None
        );
        assert_eq!(bearer(b"GET / HTTP/1.0\r\n\r\n"), None);
        assert_eq!(
            bearer(b"GET /?authorization: Bearer x HTTP/1.0\r\n\r\n"),
            None
        );
    }

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
