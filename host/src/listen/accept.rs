//! The accept loop every TCP-based listener shares (plain STOMP, STOMP over TLS, WebSocket):
//! caps concurrent connections with a semaphore taken *before* `accept` (so excess clients wait
//! in the backlog instead of costing memory; one semaphore for all listeners, see [`Gate`]),
//! caps connections per source address (over the cap the [`Handler`] refuses the connection),
//! spawns a task per connection, and on shutdown stops accepting and gives open sessions a grace
//! period to flush and close. A session task that panics is reaped like any other (logged and
//! counted); the session's own teardown has released what it held.
//!
//! What a listener does with an accepted socket is its [`Handler`]: the plain listener starts a
//! session on it; the TLS listener first runs the handshake, inside the connection's own task
//! and holding its connection slot and address slot, so a slow handshake never holds up the
//! accept loop and every handshake in progress counts against the same caps.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::broker::Broker;

/// What all listeners of a broker share: the connection cap (`limits.max_connections`) and the
/// numbering of connections (for logs).
#[derive(Debug)]
pub struct Gate {
    connections: Arc<Semaphore>,
    numbers: AtomicU64,
}

impl Gate {
    /// A gate letting `max_connections` connections in at a time, over all listeners.
    pub fn new(max_connections: usize) -> Arc<Gate> {
        Arc::new(Gate {
            connections: Arc::new(Semaphore::new(max_connections)),
            numbers: AtomicU64::new(0),
        })
    }
}

/// A connection the accept loop took, handed to its listener's [`Handler`].
pub struct Accepted {
    /// The socket.
    pub stream: TcpStream,
    /// The client's address.
    pub address: SocketAddr,
    /// The broker.
    pub broker: Arc<Broker>,
    /// The connection's number (unique over all listeners, for logs).
    pub number: u64,
    /// Fires at shutdown.
    pub shutdown: watch::Receiver<bool>,
}

/// What a listener does with the connections its accept loop takes.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Serves one connection, in its own task (a TLS handshake runs here, bounded in time).
    fn serve(self, connection: Accepted) -> impl Future<Output = ()> + Send;

    /// Turns away a connection over the per-address cap with `message` (in its own task, so a
    /// client that does not read cannot hold up the accept loop).
    fn refuse(self, stream: TcpStream, message: String) -> impl Future<Output = ()> + Send;

    /// Whether connections from `address` skip the per-address cap here: a trusted reverse
    /// proxy, whose clients the handler counts by the address the proxy names.
    fn exempt(&self, _address: IpAddr) -> bool {
        false
    }
}

/// Accepts connections on `listener` until `shutdown` fires, then drains.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    gate: Arc<Gate>,
    handler: H,
) -> std::io::Result<()> {
    let mut sessions = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = gate.connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        // Reap finished sessions so the set does not grow with history.
        while let Some(ended) = sessions.try_join_next() {
            reaped(ended, &broker);
        }
        let (stream, address) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let number = gate.numbers.fetch_add(1, Relaxed) + 1;
        let slot = if handler.exempt(address.ip()) {
            None
        } else if let Some(slot) = broker.addresses.connect(address.ip()) {
            Some(slot)
        } else {
            broker.stats.address_limit_refusals.fetch_add(1, Relaxed);
            let limit = broker.config.limits.max_connections_per_address;
            let message = format!(
                "too many connections from {}: the limit is {limit} per address",
                address.ip()
            );
            tokio::spawn(handler.clone().refuse(stream, message));
            drop(permit);
            continue;
        };
        let connection = Accepted {
            stream,
            address,
            broker: broker.clone(),
            number,
            shutdown: shutdown.clone(),
        };
        let handler = handler.clone();
        sessions.spawn(async move {
            handler.serve(connection).await;
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    let open = sessions.len();
    info!(open, "shutting down: no longer accepting connections");
    let grace = Duration::from_millis(broker.config.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async {
        while let Some(ended) = sessions.join_next().await {
            reaped(ended, &broker);
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            remaining = sessions.len(),
            "grace period over: closing the remaining connections"
        );
        sessions.shutdown().await;
    }
    Ok(())
}

/// Notes how a session task ended. A session that panicked has already handed back what it
/// held (its state is dropped with the task); the panic is logged and counted, and the broker
/// carries on.
fn reaped(ended: Result<(), tokio::task::JoinError>, broker: &Broker) {
    if let Err(err) = ended {
        if err.is_panic() {
            broker.stats.session_panics.fetch_add(1, Relaxed);
            tracing::error!("a session task panicked; its connection was closed and what it held was handed back");
        }
    }
}
