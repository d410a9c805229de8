//! STOMP over WebSocket (`[websocket]`, RabbitMQ Web-STOMP's model): the shared accept loop
//! ([`accept`]) hands each connection to [`WebSocket`], whose task reads and
//! answers the HTTP upgrade ([`handshake`]) within `handshake_timeout_ms`, then serves a
//! session over the upgraded socket ([`stream`]).
//!
//! Every limit of the plain listener applies: the connection semaphore and per-address cap
//! are taken before the upgrade is read (behind a trusted proxy, the per-address cap counts
//! the forwarded address once the request names it), and STOMP frames are decoded by the same
//! reader with the same limits and memory charges, the WebSocket layer buffering nothing but
//! a frame header.

pub mod decode;
pub mod handshake;
pub mod origin;
pub mod stream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use crate::broker::Broker;
use crate::config::{Config, WebSocketMessageType};
use crate::listen::accept::{self, Accepted, Gate, Handler};
use crate::listen::{ListenerKind, Peer};
use crate::session;

use crate::listen::tls::Acceptor;
use handshake::{ReadFailure, Refusal};
use origin::OriginRule;
use stream::{Halves, WsConnection};
use tungstenite::http::StatusCode;

/// A refusal is written within this long (the client may not read it).
const REFUSAL_WRITE: Duration = Duration::from_secs(2);

/// The WebSocket listener's settings, from `[websocket]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The upgrade path.
    pub path: String,
    /// Which origins may connect.
    pub origins: OriginRule,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Every frame as a binary message.
    pub binary_only: bool,
    /// Bound on reading and answering the upgrade.
    pub handshake_timeout: Duration,
    /// Largest upgrade request.
    pub max_request_bytes: usize,
    /// Largest WebSocket message (the largest STOMP frame).
    pub max_message_bytes: usize,
}

impl Settings {
    /// The settings of `config` for a listener bound to `address`: one beyond loopback must
    /// name its allowed origins.
    pub fn new(config: &Config, address: SocketAddr) -> anyhow::Result<Settings> {
        let ws = &config.websocket;
        anyhow::ensure!(
            address.ip().is_loopback() || !ws.allowed_origins.is_empty(),
            "the WebSocket listener {address} is reachable from other machines: set \
             [websocket] allowed_origins to the origins of the pages that may connect \
             (or [\"*\"] to allow any, knowingly)"
        );
        Ok(Settings {
            path: ws.path.clone(),
            origins: OriginRule::new(&ws.allowed_origins),
            trusted_proxies: ws.trusted_proxies.clone(),
            binary_only: ws.message_type == WebSocketMessageType::Binary,
            handshake_timeout: Duration::from_millis(ws.handshake_timeout_ms),
            max_request_bytes: ws.max_request_bytes,
            max_message_bytes: config.limits.max_frame_bytes,
        })
    }
}

/// The WebSocket listener's way with connections (over TLS, with `tls`: WSS).
#[derive(Debug, Clone)]
pub struct WebSocket {
    settings: Arc<Settings>,
    tls: Option<Arc<Acceptor>>,
}

impl Handler for WebSocket {
    async fn serve(self, accepted: Accepted) {
        let Accepted {
            stream,
            address,
            broker,
            number,
            shutdown,
        } = accepted;
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            address,
            broker,
            number,
            shutdown,
        };
        let Some(acceptor) = self.tls.clone() else {
            return self
                .serve_stream(stream, connection, ListenerKind::WebSocket, None)
                .await;
        };
        // The TLS handshake first (bounded by [tls] handshake_timeout_ms), then the upgrade.
        let Ok(stream) = acceptor.accept(stream).await else {
            return;
        };
        let Ok(certificate) = crate::listen::tls::client_certificate(&stream) else {
            return;
        };
        self.serve_stream(
            stream,
            connection,
            ListenerKind::SecureWebSocket,
            certificate,
        )
        .await;
    }

    async fn refuse(self, mut stream: TcpStream, message: String) {
        if self.tls.is_some() {
            // An HTTP answer would be garbage before a TLS handshake: just closed.
            debug!(%message, "WSS connection refused");
            return;
        }
        // The request is read first, so that closing does not reset the answer away.
        let read = handshake::read_request(&mut stream, self.settings.max_request_bytes);
        if let Ok(Ok(_)) = tokio::time::timeout(REFUSAL_WRITE, read).await {
            let refusal = Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                reason: message,
            };
            write_refusal(stream, &refusal).await;
        }
    }

    fn exempt(&self, address: IpAddr) -> bool {
        self.settings.trusted_proxies.contains(&address)
    }
}

/// What the accept loop gave a connection, besides its stream.
struct Connection {
    address: SocketAddr,
    broker: Arc<Broker>,
    number: u64,
    shutdown: watch::Receiver<bool>,
}

/// What a successful upgrade leaves: the checked request, the bytes after it, and the
/// forwarded client's slot under the per-address cap (behind a trusted proxy).
type Upgraded = (
    handshake::Upgrade,
    bytes::Bytes,
    Option<crate::limits::AddressSlot>,
);

impl WebSocket {
    /// The listener for `settings`; over TLS with `tls` (WSS).
    pub fn new(settings: Settings, tls: Option<Arc<Acceptor>>) -> WebSocket {
        WebSocket {
            settings: Arc::new(settings),
            tls,
        }
    }

    /// The upgrade, then a session on the upgraded stream.
    async fn serve_stream<S>(
        &self,
        mut stream: S,
        connection: Connection,
        kind: ListenerKind,
        certificate: Option<Arc<crate::listen::ClientCertificate>>,
    ) where
        S: Halves + AsyncRead + AsyncWrite + Unpin,
    {
        let Connection {
            address,
            broker,
            number,
            mut shutdown,
        } = connection;
        let upgrade = tokio::select! {
            upgrade = tokio::time::timeout(
                self.settings.handshake_timeout,
                self.upgrade(&mut stream, address, &broker),
            ) => upgrade,
            _ = shutdown.changed() => return,
        };
        let (upgrade, rest, forwarded_slot) = match upgrade {
            Ok(Ok(upgraded)) => upgraded,
            Ok(Err(Some(refusal))) => {
                debug!(peer = %address, status = refusal.status.as_u16(), reason = %refusal.reason, "WebSocket upgrade refused");
                write_refusal(stream, &refusal).await;
                return;
            }
            Ok(Err(None)) => return,
            Err(_) => {
                debug!(peer = %address, "WebSocket upgrade timed out");
                return;
            }
        };
        debug!(peer = %address, client = %upgrade.client, protocol = upgrade.protocol.unwrap_or("-"), "WebSocket upgraded");
        let connection = WsConnection::new(
            stream,
            rest,
            self.settings.max_message_bytes,
            self.settings.binary_only,
        );
        let peer = Peer::new(upgrade.client, kind)
            .with_certificate(certificate)
            .with_upgrade(upgrade.credentials);
        session::serve(connection, peer, broker, number, shutdown).await;
        drop(forwarded_slot);
    }

    /// Reads, checks and answers the upgrade. `Err(None)`: the connection failed.
    async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        address: SocketAddr,
        broker: &Broker,
    ) -> Result<Upgraded, Option<Refusal>> {
        let (request, rest) =
            match handshake::read_request(stream, self.settings.max_request_bytes).await {
                Ok(read) => read,
                Err(ReadFailure::Io(_)) => return Err(None),
                Err(ReadFailure::Refused(refusal)) => return Err(Some(refusal)),
            };
        let upgrade = handshake::check(&request, address, &self.settings).map_err(Some)?;
        // A trusted proxy's connections skipped the per-address cap: it applies to the
        // client the proxy names.
        let slot = if self.exempt(address.ip()) {
            let client = upgrade.client.ip();
            match broker.addresses.connect(client) {
                Some(slot) => Some(slot),
                None => {
                    broker
                        .stats
                        .address_limit_refusals
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let limit = broker.config.limits.max_connections_per_address;
                    return Err(Some(Refusal {
                        status: StatusCode::TOO_MANY_REQUESTS,
                        reason: format!(
                            "too many connections from {client}: the limit is {limit} per address"
                        ),
                    }));
                }
            }
        } else {
            None
        };
        stream
            .write_all(&upgrade.response)
            .await
            .map_err(|_| None)?;
        Ok((upgrade, rest, slot))
    }
}

/// Writes an HTTP refusal and closes.
async fn write_refusal<S: AsyncWrite + Unpin>(mut stream: S, refusal: &Refusal) {
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        stream.write_all(&refusal.response()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves a WebSocket listener (WSS with `tls`) until `shutdown` fires, then drains.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
    gate: Arc<Gate>,
    tls: Option<Arc<Acceptor>>,
) -> std::io::Result<()> {
    accept::serve(
        listener,
        broker,
        shutdown,
        gate,
        WebSocket::new(settings, tls),
    )
    .await
}
