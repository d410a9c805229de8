//! Listeners: each turns accepted connections into sessions of the one session engine (a
//! [`Transport`] and a [`Peer`], see [`transport`]). Today plain TCP ([`tcp`]); the sockets are bound by the caller (so it can print the addresses it
//! got) and handed over in [`Listeners`].

pub mod identity;
pub mod tcp;
pub mod transport;

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
        Ok(Listeners { stomp, admin })
    }
}
