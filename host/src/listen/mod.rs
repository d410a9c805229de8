//! Listeners: each turns accepted connections into sessions of the one session engine (a
//! [`Transport`] and a [`Peer`], see [`transport`]). Plain TCP ([`tcp`]) and WebSocket ([`ws`]) share one accept loop ([`accept`]); the sockets are bound by the caller (so it can print the addresses it
//! got) and handed over in [`Listeners`].

pub mod accept;
pub mod identity;
pub mod tcp;
pub mod transport;
pub mod ws;

pub use identity::{ClientCertificate, UpgradeCredentials};
pub use transport::{ByteStream, FrameWriter, ListenerKind, Peer, Transport};

use tokio::net::TcpListener;

/// The sockets a broker serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// STOMP over TCP.
    pub stomp: TcpListener,
    /// The admin surface (`GET /status`), when configured.
    pub admin: Option<TcpListener>,
    /// STOMP over WebSocket, when configured.
    pub websocket: Option<(TcpListener, ws::Settings)>,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &crate::Config) -> anyhow::Result<Listeners> {
        use anyhow::Context;
        let stomp = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let admin = match config.admin_listen {
            Some(address) => {
                crate::admin::check_access(address, config.admin_token.as_deref())?;
                Some(
                    TcpListener::bind(address)
                        .await
                        .with_context(|| format!("binding the status endpoint {address}"))?,
                )
            }
            None => None,
        };
        let websocket = match config.websocket.listen {
            Some(address) => {
                let settings = ws::Settings::new(config, address)?;
                let listener = TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding the WebSocket listener {address}"))?;
                Some((listener, settings))
            }
            None => None,
        };
        Ok(Listeners {
            stomp,
            admin,
            websocket,
        })
    }
}
