//! The broker's shared state and how it is assembled: the configuration, the virtual hosts
//! (each with its router) and the message store they share (the journal read back at start),
//! the plugin set in force and the broker-wide counters. Every connection's session holds an `Arc<Broker>`; listeners, the reload watcher
//! and the admin surface reach the state only through it.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::info;

use crate::budget::MemoryBudget;
use crate::config::Config;
use crate::limits::AddressTable;
use crate::plugin::PluginHost;
use crate::policy::{PluginFile, Policy};
use crate::store::{Store, StoreSettings};
use crate::vhost::Vhosts;

/// Counters for the whole broker.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Connections served since start (not those refused for their address).
    pub connections_total: AtomicU64,
    /// Connections being served now.
    pub connections_open: AtomicU64,
    /// Sessions ended by the client's doing: a frame that did not decode or was refused (a
    /// refused login included), no CONNECT in time, a frame the read buffer could not take.
    pub client_errors: AtomicU64,
    /// Connections closed as slow consumers (a topic's `disconnect` policy).
    pub slow_consumer_disconnects: AtomicU64,
    /// Connections closed because the client's heart-beats stopped.
    pub heartbeat_timeouts: AtomicU64,
    /// Session tasks that panicked (a broker bug; their connections were closed and what they
    /// held was handed back).
    pub session_panics: AtomicU64,
    /// Connections refused because their address had too many.
    pub address_limit_refusals: AtomicU64,
    /// CONNECTs refused by authentication (re-authentications included).
    pub failed_logins: AtomicU64,
    /// Successful re-authentications (`reauth:true` on an open session).
    pub reauthentications: AtomicU64,
    /// Connections closed because their credentials expired.
    pub credential_expiries: AtomicU64,
    /// Connections closed for being idle without subscriptions.
    pub idle_closes: AtomicU64,
    /// Connections per listener, closes by reason, ERRORs by kind, bytes in and out.
    pub connections: crate::connection_stats::ConnectionCounters,
}

/// Everything sessions share.
pub struct Broker {
    /// The configuration the broker started with (a reload swaps the plugin set, not this).
    pub config: Arc<Config>,
    /// The virtual hosts, each with its queues, topics and durable subscriptions; the memory
    /// budget and the message store they share.
    pub vhosts: Vhosts,
    /// The plugin set in force (swapped on reload).
    pub policy: Policy,
    /// Broker-wide counters, for status output.
    pub stats: BrokerStats,
    /// Makes session ids unique across broker restarts.
    pub instance: String,
    /// Connections and failed logins per source address.
    pub addresses: Arc<AddressTable>,
    /// The TLS certificates and handshake in force, when `[tls]` has a listener (reloaded with
    /// the plugin set); the WebSocket listener's `wss` uses it too.
    pub tls: Option<Arc<crate::listen::tls::Acceptor>>,
    /// The open connections (the console lists them and can close one).
    pub registry: crate::connection_registry::ConnectionRegistry,
    /// CONNECTED's `capabilities` value, built once (see [`crate::session::capabilities`]).
    pub capabilities: bytes::Bytes,
}

impl Broker {
    /// A broker without a message store (`persistent:true` is then kept in memory only).
    pub fn new(config: Arc<Config>, policy: Policy) -> Broker {
        Broker::with_store(config, policy, None, Vec::new())
    }

    /// `cluster`: in cluster mode, each vhost's link (in vhost order); empty single-node.
    fn with_store(
        config: Arc<Config>,
        policy: Policy,
        store: Option<Arc<Store>>,
        cluster: Vec<Arc<crate::cluster::VhostLink>>,
    ) -> Broker {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let capabilities = crate::session::capabilities(&config, store.is_some()).into();
        let budget = MemoryBudget::new(
            config.memory_budget(),
            config.limits.max_memory_bytes_per_principal,
        );
        // The plugins' kv stores are held by the broker: their bytes count in its budget.
        policy.current().host.kv().attach_budget(budget.clone());
        Broker {
            capabilities,
            addresses: Arc::new(AddressTable::new(
                config.limits.max_connections_per_address,
                Duration::from_millis(config.limits.failed_login_delay_max_ms),
            )),
            vhosts: Vhosts::build_in_cluster(&config, store, budget, cluster),
            config,
            policy,
            stats: BrokerStats::default(),
            instance: format!("{:x}", (nanos as u64) & 0xffff_ffff),
            tls: None,
            registry: Default::default(),
        }
    }

    /// Assembles a broker from its configuration: loads the plugins, opens the message store
    /// and reads its journal back.
    pub async fn start(config: Arc<Config>) -> anyhow::Result<Arc<Broker>> {
        let tls = crate::listen::tls::Acceptor::from_config(&config)?;
        let policy = load_policy(&config).await?;
        let cluster = match &config.cluster {
            Some(settings) => join_cluster(&config, settings).await?,
            None => Vec::new(),
        };
        let mut broker = Broker::open_in_cluster(config, policy, cluster.clone())
            .context("opening the message store")?;
        broker.tls = tls;
        let broker = Arc::new(broker);
        if let Some(link) = cluster.first() {
            let weak = Arc::downgrade(&broker);
            let started_ms = crate::router::message::now_ms();
            let edge = link.edges().edge().to_string();
            let queue_settings = link.edges().queue_settings().to_string();
            link.keep_edge_entry(move || {
                let broker = weak.upgrade()?;
                let set = broker.policy.current();
                Some(crate::cluster::edges::EdgeEntry {
                    edge: edge.clone(),
                    server: broker.config.server_name.chars().take(128).collect(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    started_ms,
                    generation: set.generation,
                    policy: set.policy_digest.clone(),
                    queue_settings: queue_settings.clone(),
                })
            });
        }
        let patience = Duration::from_millis(broker.config.flow.slow_consumer_patience_ms);
        for (vhost, link) in broker.vhosts.iter().zip(cluster) {
            let subscriber = crate::cluster::topic::subscribe_inbound(&link)
                .await
                .context("cluster mode: subscribing to the topics")?;
            tokio::spawn(crate::cluster::topic::run_inbound(
                vhost.clone(),
                subscriber,
                patience,
            ));
            let replies = crate::cluster::reply::subscribe_inbound(&link)
                .await
                .context("cluster mode: subscribing to the replies to this edge")?;
            tokio::spawn(crate::cluster::reply::run_inbound(vhost.clone(), replies));
        }
        Ok(broker)
    }

    /// A broker with the message store the configuration asks for, its journal read back:
    /// durable subscriptions and unsettled persistent messages are in their queues again.
    pub fn open(config: Arc<Config>, policy: Policy) -> Result<Broker, crate::store::OpenError> {
        Broker::open_in_cluster(config, policy, Vec::new())
    }

    /// [`Broker::open`] in cluster mode: `cluster` holds each vhost's link (in vhost order),
    /// in place before the journal is read back.
    pub fn open_in_cluster(
        config: Arc<Config>,
        policy: Policy,
        cluster: Vec<Arc<crate::cluster::VhostLink>>,
    ) -> Result<Broker, crate::store::OpenError> {
        if !config.store.enabled {
            let persisting = crate::plugin::kv::configured(&config.plugins)
                .into_iter()
                .filter(|(_, settings)| settings.is_some_and(|s| s.persist))
                .map(|(name, _)| name.to_string())
                .collect::<Vec<_>>();
            if !persisting.is_empty() {
                tracing::warn!(
                    plugins = ?persisting,
                    "the message store is off: these plugins' kv stores are memory only \
                     (their `persist = true` needs [store] enabled)"
                );
            }
            return Ok(Broker::with_store(config, policy, None, cluster));
        }
        let settings = StoreSettings {
            dir: config.data_dir(),
            fsync: config.store.fsync,
            fsync_interval: Duration::from_millis(config.store.fsync_interval_ms),
            max_bytes: config.store.max_bytes,
            segment_bytes: config.store.segment_bytes,
        };
        let (store, mut recovered) = Store::open(&settings)?;
        // Plugins' persisted kv entries go back into their stores before any call is made.
        let kv = policy.current().host.kv().clone();
        kv.attach(store.clone());
        let configured: Vec<_> = crate::plugin::kv::configured(&config.plugins)
            .into_iter()
            .filter_map(|(name, settings)| Some((name, settings?)))
            .collect();
        let kv_entries = kv.restore(std::mem::take(&mut recovered.kv), &configured);
        if kv_entries > 0 {
            info!(
                entries = kv_entries,
                "plugin kv entries recovered from the journal"
            );
        }
        let broker = Broker::with_store(config, policy, Some(store), cluster);
        let restored = broker.vhosts.restore(recovered);
        if restored.messages > 0 || restored.durables > 0 {
            info!(
                messages = restored.messages,
                durable_subscriptions = restored.durables,
                "recovered from the journal"
            );
        }
        if restored.skipped_messages > 0 || restored.skipped_durables > 0 {
            tracing::warn!(
                messages = restored.skipped_messages,
                durable_subscriptions = restored.skipped_durables,
                "the journal holds messages of virtual hosts not configured now: they stay in \
                 the journal and come back when their vhost is configured again"
            );
        }
        Ok(broker)
    }

    /// Makes everything journaled durable and stops the store (at shutdown).
    pub fn close(&self) {
        if let Some(store) = self.vhosts.store() {
            store.close();
        }
    }
}

/// Cluster mode: connects to NATS and makes (or finds) each vhost's stream, in vhost order.
async fn join_cluster(
    config: &Config,
    settings: &crate::cluster::ClusterConfig,
) -> anyhow::Result<Vec<Arc<crate::cluster::VhostLink>>> {
    let cluster = crate::cluster::Cluster::connect(settings, &config.base_dir)
        .await
        .context("cluster mode")?;
    cluster
        .edges()
        .set_queue_settings(crate::cluster::edges::queue_settings_digest(
            &config.queues,
            settings,
        ));
    let mut links = Vec::new();
    for name in crate::vhost::names(config) {
        links.push(
            cluster
                .join_vhost(name, &config.queues)
                .await
                .context("cluster mode")?,
        );
    }
    info!(
        nats = ?settings.nats,
        cluster = %settings.name,
        vhosts = links.len(),
        "cluster mode: joined the NATS JetStream cluster"
    );
    Ok(links)
}

/// Loads the plugin set the configuration names (compiling or reading the compiled-plugin
/// cache); any failure names the plugin. An unsafe data directory is refused first, before
/// plugins compile into the cache in it.
pub async fn load_policy(config: &Config) -> anyhow::Result<Policy> {
    if config.store.enabled {
        crate::store::check_data_dir(&config.data_dir()).context("opening the message store")?;
    }
    let host = if config.plugins.is_empty() {
        PluginHost::empty()
    } else {
        PluginHost::load(
            &config.plugins,
            &config.base_dir,
            &config.plugin_cache_dir(),
        )
        .await
        .context("loading plugins")?
    };
    let files = PluginFile::hash_all(&config.plugins, &config.base_dir);
    Ok(Policy::new(host, config.plugins.clone(), files).with_vhosts(vhost_plugins(config)))
}

/// Which plugins apply in each vhost, in vhost order (`None`: every plugin); one entry, `None`,
/// without `[[vhosts]]`.
pub fn vhost_plugins(config: &Config) -> Vec<Option<Vec<String>>> {
    if config.vhosts.is_empty() {
        return vec![None];
    }
    config.vhosts.iter().map(|v| v.plugins.clone()).collect()
}
