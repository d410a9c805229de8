//! Listeners: each turns accepted connections into sessions of the one session engine (a
//! [`Transport`] and a [`Peer`], see [`transport`]): plain TCP ([`tcp`]), STOMP over TLS
//! ([`tls`]) and STOMP over WebSocket ([`ws`]), sharing one accept loop and its caps
//! ([`accept`]). The sockets are bound by the caller (so it can print the addresses it got) and
//! handed over in [`Listeners`].

pub mod accept;
pub mod identity;
pub mod tcp;
pub mod tls;
pub mod transport;
pub mod ws;

pub use identity::{ClientCertificate, UpgradeCredentials};
pub use transport::{ByteStream, FrameWriter, ListenerKind, Peer, Transport};

use tokio::net::TcpListener;

/// The sockets a broker serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// STOMP over TCP, unless `listen` is off.
    pub stomp: Option<TcpListener>,
    /// STOMP over TLS, when `[tls] listen` is set.
    pub tls: Option<TcpListener>,
    /// The admin surface (`GET /status`), when configured.
    pub admin: Option<TcpListener>,
    /// STOMP over WebSocket, when configured.
    pub websocket: Option<(TcpListener, ws::Settings)>,
    /// STOMP over WebSocket over TLS (WSS), when configured.
    pub secure_websocket: Option<(TcpListener, ws::Settings)>,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &crate::Config) -> anyhow::Result<Listeners> {
        use anyhow::Context;
        let bind = |address: Option<std::net::SocketAddr>, what: &'static str| async move {
            match address {
                None => Ok(None),
                Some(address) => TcpListener::bind(address)
                    .await
                    .map(Some)
                    .with_context(|| format!("binding {what}{address}")),
            }
        };
        let stomp = bind(config.listen, "").await?;
        let tls = bind(config.tls.listen, "the TLS listener ").await?;
        let admin = match config.admin_listen {
            Some(address) => {
                crate::http::check_access(address, config.admin_token.as_deref())?;
                bind(Some(address), "the status endpoint ").await?
            }
            None => None,
        };
        let websocket = match config.websocket.listen {
            Some(address) => {
                let settings = ws::Settings::new(config, address)?;
                let listener = bind(Some(address), "the WebSocket listener ").await?;
                listener.map(|listener| (listener, settings))
            }
            None => None,
        };
        let secure_websocket = match config.websocket.tls_listen {
            Some(address) => {
                let settings = ws::Settings::new(config, address)?;
                let listener = bind(Some(address), "the WSS listener ").await?;
                listener.map(|listener| (listener, settings))
            }
            None => None,
        };
        Ok(Listeners {
            stomp,
            tls,
            admin,
            websocket,
            secure_websocket,
        })
    }
}
