//! The plain TCP listener: STOMP straight on the socket. The accept loop (caps, drain) is the
//! shared one of [`super::accept`]; this is what it does with each connection.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::accept::{self, Accepted, Gate, Handler};
use crate::broker::Broker;
use crate::listen::Peer;
use crate::session;

/// Accepts plain STOMP connections until `shutdown` fires, then drains.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
    gate: Arc<Gate>,
) -> std::io::Result<()> {
    accept::serve(listener, broker, shutdown, gate, Plain).await
}

/// Starts a session on the socket as it is.
#[derive(Debug, Clone, Copy)]
struct Plain;

impl Handler for Plain {
    async fn serve(self, c: Accepted) {
        let _ = c.stream.set_nodelay(true);
        session::serve(
            c.stream,
            Peer::tcp(c.address),
            c.broker,
            c.number,
            c.shutdown,
        )
        .await;
    }

    async fn refuse(self, stream: TcpStream, message: String) {
        session::refuse(stream, message).await;
    }
}
