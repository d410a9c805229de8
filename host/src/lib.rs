//! Plugboard: a STOMP 1.0/1.1/1.2 message broker whose policy lives in WebAssembly components.
//!
//! How a message flows, in the types that carry it:
//!
//! ```text
//! TcpStream ─► codec::Decoder (bytes → Frame, size limits)
//!    ─► session (one task per connection: CONNECT → auth hook → Principal → CONNECTED)
//!         SEND ─► plugin send hook ─► router::Queue::publish / Topic::publish
//!         SUBSCRIBE / UNSUBSCRIBE / ACK / NACK / BEGIN / COMMIT / ABORT ─► router, transactions
//!    router ─► store (persistent messages journaled; RECEIPTs wait until they are durable)
//!    router ─► Delivery into the subscriber's Outbox (bounded by window / slow-consumer policy)
//!    ─► session::writer (message filter hook ─► MESSAGE encoding ─► coalesced socket writes)
//! ```
//!
//! The plugin set is a [`policy::Policy`], swapped atomically by [`reload`] when the config or a
//! component file changes; [`admin`] serves its status.
//!
//! [`run`] is what `main` calls once the listener is bound.

pub mod admin;
pub mod codec;
pub mod config;
pub mod memory;
pub mod plugin;
pub mod policy;
pub mod private_fs;
pub mod reload;
pub mod router;
pub mod server;
pub mod session;
pub mod store;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
pub use session::Broker;

/// Serves STOMP on `listener` until `shutdown` turns true, then drains within the grace period.
pub async fn run(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    server::serve(listener, broker, shutdown).await
}
