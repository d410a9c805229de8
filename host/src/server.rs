//! A broker's lifetime: [`Server::start`] assembles the broker from its configuration (plugins,
//! message store) and installs live reload; [`Server::run`] serves its listeners and the admin
//! surface until shutdown, then drains the connections and closes the store.
//!
//! Start and run are two steps so that a caller can announce readiness in between: once
//! `start` returned, a SIGHUP or an edit of the watched files is never missed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::Config;
use crate::listen::{self, Listeners};
use crate::reload;

/// Where a running broker re-reads its configuration from on a change or SIGHUP.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    /// The config file.
    pub path: PathBuf,
    /// Settings given on the command line, which win over the file's.
    pub overrides: reload::Overrides,
}

/// A broker assembled and ready to serve.
pub struct Server {
    broker: Arc<Broker>,
    listeners: Listeners,
    shutdown: watch::Receiver<bool>,
}

impl Server {
    /// Loads the plugins, opens the message store (reading its journal back) and, with a
    /// `reload` source, starts watching it. Serves nothing yet.
    pub async fn start(
        config: Config,
        listeners: Listeners,
        reload: Option<ReloadSource>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Server> {
        let broker = Broker::start(Arc::new(config)).await?;
        if let Some(source) = reload {
            reload::start(
                broker.clone(),
                source.path,
                source.overrides,
                shutdown.clone(),
            )
            .map_err(|err| anyhow::anyhow!("starting the reload watcher: {err}"))?;
        }
        let server = Server {
            broker,
            listeners,
            shutdown,
        };
        server.warn_if_exposed();
        Ok(server)
    }

    /// The assembled broker.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The plain STOMP listener's address, unless it is off.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .stomp
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The STOMP-over-TLS listener's address, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .tls
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The admin surface's address, when it has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .admin
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The WebSocket listener's address, when it has one.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .websocket
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
    }

    /// The WSS listener's address, when it has one.
    pub fn secure_websocket_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .secure_websocket
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until the shutdown signal, then lets connections flush within the grace period
    /// and makes the journal durable.
    pub async fn run(self) -> anyhow::Result<()> {
        let Server {
            broker,
            listeners,
            shutdown,
        } = self;
        if let Some(admin) = listeners.admin {
            tokio::spawn(crate::http::serve(admin, broker.clone(), shutdown.clone()));
        }
        tokio::spawn(crate::memory::release_periodically(shutdown.clone()));
        for vhost in broker.vhosts.iter() {
            let (vhost, shutdown) = (vhost.clone(), shutdown.clone());
            tokio::spawn(async move { vhost.router.sweep_periodically(shutdown).await });
        }
        crate::redelivery::start(&broker, &shutdown);
        for vhost in broker.vhosts.iter() {
            let scheduler = vhost.router.scheduler().clone();
            let patience = Duration::from_millis(broker.config.flow.slow_consumer_patience_ms);
            tokio::spawn(scheduler.run(patience, shutdown.clone()));
        }
        info!(
            address = ?listeners.stomp.as_ref().and_then(|l| l.local_addr().ok()),
            tls = ?listeners.tls.as_ref().and_then(|l| l.local_addr().ok()),
            plugins = broker.config.plugins.len(),
            "plugboard started"
        );
        // One connection cap over every listener.
        let gate = listen::accept::Gate::new(broker.config.limits.max_connections);
        let mut serving = tokio::task::JoinSet::new();
        if let Some(stomp) = listeners.stomp {
            serving.spawn(listen::tcp::serve(
                stomp,
                broker.clone(),
                shutdown.clone(),
                gate.clone(),
            ));
        }
        if let (Some(tls), Some(acceptor)) = (listeners.tls, broker.tls.clone()) {
            serving.spawn(listen::tls::serve(
                tls,
                broker.clone(),
                shutdown.clone(),
                gate.clone(),
                acceptor,
            ));
        }
        if let Some((listener, settings)) = listeners.websocket {
            serving.spawn(listen::ws::serve(
                listener,
                settings,
                broker.clone(),
                shutdown.clone(),
                gate.clone(),
                None,
            ));
        }
        if let (Some((listener, settings)), Some(acceptor)) =
            (listeners.secure_websocket, broker.tls.clone())
        {
            serving.spawn(listen::ws::serve(
                listener,
                settings,
                broker.clone(),
                shutdown.clone(),
                gate.clone(),
                Some(acceptor),
            ));
        }
        while let Some(served) = serving.join_next().await {
            served??;
        }
        broker.close();
        info!("stopped");
        Ok(())
    }

    /// A listener reachable from other machines without an authenticator admits anyone.
    fn warn_if_exposed(&self) {
        // Every vhost must authenticate: one whose plugins leave the authenticator out admits
        // anyone when there are no [[users]].
        let authenticated = !self.broker.config.users.is_empty()
            || (0..self.broker.vhosts.len())
                .all(|vhost| self.broker.policy.host_for(vhost).has_authenticator());
        for address in [self.local_addr(), self.tls_addr()].into_iter().flatten() {
            if !exposed_without_authentication(address, authenticated) {
                continue;
            }
            warn!(
                %address,
                "THE BROKER LISTENS BEYOND LOOPBACK WITHOUT AUTHENTICATION: anyone who can reach \
                 this address may connect with every right. Configure an authenticate plugin \
                 (or [[users]]), or listen on 127.0.0.1."
            );
        }
    }
}

/// Whether a STOMP listener on `address` admits anyone from other machines: it is not on
/// loopback and nothing authenticates (then the broker warns loudly at start).
fn exposed_without_authentication(address: SocketAddr, authenticated: bool) -> bool {
    !address.ip().is_loopback() && !authenticated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listener_beyond_loopback_without_authentication_is_exposed() {
        let exposed = |address: &str, authenticated| {
            exposed_without_authentication(address.parse().unwrap(), authenticated)
        };
        assert!(exposed("0.0.0.0:61613", false));
        assert!(exposed("[::]:61613", false));
        assert!(exposed("192.0.2.7:61613", false));
        assert!(!exposed("0.0.0.0:61613", true));
        assert!(!exposed("127.0.0.1:61613", false));
        assert!(!exposed("127.0.0.2:61613", false));
        assert!(!exposed("[::1]:61613", false));
    }
}
