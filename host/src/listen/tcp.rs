//! The plain TCP listener's accept loop: caps concurrent connections with a semaphore taken
//! *before* `accept`, and connections per source address (refused with an ERROR) (so excess clients wait in the backlog instead of costing memory), spawns
//! a session per connection, and on shutdown stops accepting and gives open sessions a grace
//! period to flush and close. A session task that panics is reaped like any other (logged and
//! counted); the session's own teardown has released what it held.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::listen::Peer;
use crate::session;

/// Accepts connections until `shutdown` fires, then drains.
pub async fn serve(
    listener: TcpListener,
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
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        number += 1;
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        let Some(slot) = broker.addresses.connect(peer.ip()) else {
            // Over the per-address cap: told so, and closed (on a task of its own, so that a
            // client that does not read cannot hold up the accept loop).
            broker
                .stats
                .address_limit_refusals
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let limit = broker.config.limits.max_connections_per_address;
            tokio::spawn(session::refuse(
                stream,
                format!(
                    "too many connections from {}: the limit is {limit} per address",
                    peer.ip()
                ),
            ));
            drop(permit);
            continue;
        };
        let _ = stream.set_nodelay(true);
        sessions.spawn(async move {
            session::serve(stream, Peer::tcp(peer), broker, number, shutdown).await;
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
            broker
                .stats
                .session_panics
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!("a session task panicked; its connection was closed and what it held was handed back");
        }
    }
}
