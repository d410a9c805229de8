//! The status endpoint: a minimal HTTP/1.0 server on `admin_listen` answering `GET /status`
//! with JSON (loaded plugins with their content hashes, load time, call/trap/timeout counters,
//! the last reload error, settings waiting for a restart, connection and destination counts).
//! `plugboard status` prints it. Bound to loopback by default; it exposes no control, only state.

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

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The status document.
pub fn status(broker: &Broker) -> Value {
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
                "file": file.path.display().to_string(),
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
        },
        "destinations": { "queues": queues, "topics": topics },
        "store": broker.router.store().map(|store| {
            let s = store.stats();
            json!({
                "data_dir": store.dir().display().to_string(),
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

/// Serves `GET /status` until shutdown.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            if let Err(err) = answer(stream, &broker).await {
                debug!(%err, "status request failed");
            }
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
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let (code, body) = if line.starts_with(b"GET /status ") || line.starts_with(b"GET / ") {
        (
            "200 OK",
            serde_json::to_string_pretty(&status(broker)).unwrap_or_default(),
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

/// Fetches the status document from a running broker (`plugboard status`).
pub async fn fetch(address: std::net::SocketAddr) -> anyhow::Result<Value> {
    use anyhow::Context;
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address))
        .await
        .context("connecting to the status endpoint timed out")?
        .with_context(|| format!("connecting to the status endpoint at {address}"))?;
    stream
        .write_all(b"GET /status HTTP/1.0\r\nhost: plugboard\r\n\r\n")
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
