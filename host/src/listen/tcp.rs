//! The plain TCP listener: STOMP straight on the socket, served by the shared accept loop
//! ([`accept`]); a client over the per-address cap gets an ERROR and a close.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::listen::accept::{self, Accepted, Protocol};
use crate::listen::Peer;
use crate::session;

/// STOMP over plain TCP.
#[derive(Debug)]
pub struct PlainStomp;

impl Protocol for PlainStomp {
    async fn serve(
        self: Arc<Self>,
        accepted: Accepted,
        broker: Arc<Broker>,
        shutdown: watch::Receiver<bool>,
    ) {
        let Accepted {
            stream,
            address,
            slot,
            number,
        } = accepted;
        session::serve(stream, Peer::tcp(address), broker, number, shutdown).await;
        drop(slot);
    }

    async fn refuse(self: Arc<Self>, stream: TcpStream, message: String) {
        session::refuse(stream, message).await;
    }
}

/// Accepts connections until `shutdown` fires, then drains.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    accept::serve(listener, Arc::new(PlainStomp), broker, shutdown).await
}
