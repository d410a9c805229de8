//! The accept loop every TCP-based listener shares (plain STOMP, WebSocket): caps concurrent
//! connections with a semaphore taken *before* `accept` (so excess clients wait in the backlog
//! instead of costing memory), counts connections per source address (over the cap: refused
//! the listener's way), spawns a task per connection, and on shutdown stops accepting and
//! gives open connections a grace period to flush and close. A connection task that panics is
//! reaped like any other (logged and counted); the session's own teardown has released what
//! it held.
//!
//! What a listener does with a connection is its [`Protocol`]: everything it does before the
//! session starts (a WebSocket upgrade) runs inside the connection's task, never in this loop,
//! and counts against the same caps.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::limits::AddressSlot;

/// One accepted connection, with what it counts against.
pub struct Accepted {
    /// The socket.
    pub stream: TcpStream,
    /// The address the socket connected from.
    pub address: SocketAddr,
    /// Its place under the per-address cap (`None` when the listener exempted the address:
    /// a trusted proxy, whose clients are counted once their address is known).
    pub slot: Option<AddressSlot>,
    /// The connection's number (for logs and session ids).
    pub number: u64,
}

/// What a listener does with its connections.
pub trait Protocol: Send + Sync + 'static {
    /// Serves one connection to its end (inside its own task).
    fn serve(
        self: Arc<Self>,
        accepted: Accepted,
        broker: Arc<Broker>,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send;

    /// Turns away a connection over the per-address cap, telling the client `message`.
    fn refuse(
        self: Arc<Self>,
        stream: TcpStream,
        message: String,
    ) -> impl Future<Output = ()> + Send;

    /// Whether connections from `address` skip the per-address cap at accept (the listener
    /// then applies it itself).
    fn exempt(&self, _address: IpAddr) -> bool {
        false
    }
}

/// Accepts connections until `shutdown` fires, then drains.
pub async fn serve<P: Protocol>(
    listener: TcpListener,
    protocol: Arc<P>,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(broker.config.limits.max_connections));
    let mut sessions = JoinSet::new();
    let mut number: u64 = 0;
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
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
        number += 1;
        let slot = if protocol.exempt(address.ip()) {
            None
        } else {
            match broker.addresses.connect(address.ip()) {
                Some(slot) => Some(slot),
                None => {
                    // Over the per-address cap: told so, and closed (on a task of its own, so
                    // that a client that does not read cannot hold up the accept loop).
                    tokio::spawn(
                        protocol
                            .clone()
                            .refuse(stream, over_cap(&broker, address.ip())),
                    );
                    drop(permit);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            stream,
            address,
            slot,
            number,
        };
        let task = protocol
            .clone()
            .serve(accepted, broker.clone(), shutdown.clone());
        sessions.spawn(async move {
            task.await;
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

/// Counts a refusal under the per-address cap and says why, for the client.
pub fn over_cap(broker: &Broker, address: IpAddr) -> String {
    broker
        .stats
        .address_limit_refusals
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let limit = broker.config.limits.max_connections_per_address;
    format!("too many connections from {address}: the limit is {limit} per address")
}

/// Notes how a session task ended. A session that panicked has already handed back what it
/// held (its state is dropped with the task); the panic is logged and counted, and the broker
/// carries on.
fn reaped(ended: Result<(), tokio::task::JoinError>, broker: &Broker) {
    if let Err(err) = ended {
        if err.is_panic() {
            broker
                .stats
                .session_panics
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!("a session task panicked; its connection was closed and what it held was handed back");
        }
    }
}
