//! Plugboard: a STOMP 1.0/1.1/1.2 message broker whose policy lives in WebAssembly components.
//!
//! How a message flows, in the types that carry it:
//!
//! ```text
//! TcpStream ─► codec::Decoder (bytes → Frame, size limits)
//!    ─► session (one task per connection: CONNECT → vhost::Vhosts::select (`host`) → auth hook
//!               → Principal → CONNECTED; the session routes through its vhost's router)
//!         SEND ─► plugin send hook ─► router::Queue::publish / Topic::publish
//!         SUBSCRIBE / UNSUBSCRIBE / ACK / NACK / BEGIN / COMMIT / ABORT ─► router, transactions
//!    router ─► store (persistent messages journaled; RECEIPTs wait until they are durable)
//!    router ─► Delivery into the subscriber's Outbox (bounded by window / slow-consumer policy)
//!    ─► session::writer (message filter hook ─► MESSAGE encoding ─► coalesced socket writes)
//! ```
//!
//! The plugin set is a [`policy::Policy`], swapped atomically by [`reload`] when the config or a
//! component file changes; [`http`] serves its status and metrics.
//!
//! [`Server`] assembles a broker ([`broker`]) and serves its [`listen`]ers; [`run`] is both in
//! one call.

#![warn(missing_docs)]

pub mod broker;
pub mod budget;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod connection_registry;
pub mod connection_stats;
pub mod histogram;
pub mod http;
pub mod limits;
pub mod listen;
pub mod logging;
pub mod memory;
pub mod password;
pub mod plugin;
pub mod policy;
pub mod private_fs;
pub mod redelivery;
pub mod reload;
pub mod router;
pub mod selector;
pub mod server;
pub mod session;
pub mod store;
pub mod text;
pub mod vhost;

use tokio::sync::watch;

pub use broker::Broker;
pub use config::Config;
pub use listen::Listeners;
pub use server::{ReloadSource, Server};

/// Assembles a broker from `config` and serves `listeners` until `shutdown` turns true, then
/// drains within the grace period. The same path `main` takes, so a test can run a whole broker
/// in process.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    Server::start(config, listeners, None, shutdown)
        .await?
        .run()
        .await
}
