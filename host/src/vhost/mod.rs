//! Virtual hosts: a CONNECT's `host` header picks one, and a connection lives in it for its
//! whole life. Each vhost has its own [`Router`] (its own name table of queues, topics, temp
//! and durable subscriptions, wildcard patterns, scheduler and dead-letter queues), so nothing
//! of one vhost is visible from another; all of them share the message store (each journals
//! under its own name), the memory budget and the broker-wide destination cap.
//!
//! The vhost is resolved once, at CONNECT, before authentication ([`Vhosts::select`]); the
//! session holds its [`Vhost`] and routes through its router from then on, so no message pays
//! for a vhost lookup. Without `[[vhosts]]` there is one vhost, `/`, that every `host` enters
//! (as before vhosts existed). The list is fixed while the broker runs.

pub mod config;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::budget::MemoryBudget;
use crate::config::Config;
use crate::router::{Router, RouterSettings, RouterShared};
use crate::store::{Recovered, Store};
use crate::text::shown;

pub use config::{VhostConfig, DEFAULT_NAME, MAX_VHOSTS};

/// One virtual host.
#[derive(Debug)]
pub struct Vhost {
    /// Its name (`/` for the default one); what plugins, logs, metrics and status show.
    pub name: Arc<str>,
    /// Its position in the vhost list: selects its plugin chains in the plugin set.
    pub index: usize,
    /// Its destinations.
    pub router: Router,
    /// Connections in it now (see [`Member`]).
    connections: AtomicU64,
}

impl Vhost {
    /// Connections in it now.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// One connection counted in its vhost's [`Vhost::connections`] for as long as it lives.
#[derive(Debug)]
pub struct Member(Arc<Vhost>);

impl Member {
    /// Counts a connection into `vhost`.
    pub fn enter(vhost: &Arc<Vhost>) -> Member {
        vhost.connections.fetch_add(1, Ordering::Relaxed);
        Member(vhost.clone())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Vhost {
    /// The name its journal records carry: none for `/` (so journals written before vhosts
    /// existed are `/`'s), else its name.
    pub fn journal_name(name: &str) -> Bytes {
        if name == DEFAULT_NAME {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(name.as_bytes())
        }
    }
}

/// Why a CONNECT's `host` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    /// No `[[vhosts]]` entry has this name and there is no `default_vhost`; the name as
    /// [`shown`].
    #[error("unknown virtual host '{0}'")]
    Unknown(String),
    /// CONNECT had no `host` header and there is no `default_vhost`.
    #[error("unknown virtual host: CONNECT has no host header and this broker has no default virtual host")]
    Absent,
}

/// Every virtual host of the broker.
#[derive(Debug)]
pub struct Vhosts {
    list: Vec<Arc<Vhost>>,
    by_name: HashMap<Box<[u8]>, usize>,
    /// The vhost an unknown or absent `host` enters (`default_vhost`; `/` without
    /// `[[vhosts]]`), if any.
    fallback: Option<usize>,
}

/// The names of the vhosts `config` lists (or the one vhost `/`), in order.
pub fn names(config: &Config) -> Vec<&str> {
    if config.vhosts.is_empty() {
        vec![DEFAULT_NAME]
    } else {
        config.vhosts.iter().map(|v| v.name.as_str()).collect()
    }
}

impl Vhosts {
    /// The vhosts `config` lists (or the one vhost `/`), their routers journaling in `store`
    /// and charging `budget`.
    pub fn build(config: &Config, store: Option<Arc<Store>>, budget: Arc<MemoryBudget>) -> Vhosts {
        Vhosts::build_in_cluster(config, store, budget, Vec::new())
    }

    /// [`Vhosts::build`] in cluster mode: `cluster` holds each vhost's link, in the order of
    /// [`names`] (empty: single-node).
    pub fn build_in_cluster(
        config: &Config,
        store: Option<Arc<Store>>,
        budget: Arc<MemoryBudget>,
        cluster: Vec<Arc<crate::cluster::VhostLink>>,
    ) -> Vhosts {
        let names = names(config);
        let mut links = cluster.into_iter();
        let settings = RouterSettings::from_config(config);
        let shared = Arc::new(RouterShared::default());
        let list: Vec<Arc<Vhost>> = names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let store = store
                    .as_ref()
                    .map(|store| store.in_vhost(Vhost::journal_name(name)));
                let mut router =
                    Router::sharing(settings.clone(), store, budget.clone(), shared.clone());
                if let Some(link) = links.next() {
                    router.join_cluster(link);
                }
                Arc::new(Vhost {
                    name: Arc::from(*name),
                    index,
                    router,
                    connections: AtomicU64::new(0),
                })
            })
            .collect();
        let by_name = names
            .iter()
            .enumerate()
            .map(|(index, name)| (Box::from(name.as_bytes()), index))
            .collect();
        let fallback = match &config.default_vhost {
            _ if config.vhosts.is_empty() => Some(0),
            Some(default) => names.iter().position(|name| name == default),
            None => None,
        };
        Vhosts {
            list,
            by_name,
            fallback,
        }
    }

    /// The vhost a CONNECT with this `host` header enters: the one of that exact name, else
    /// the fallback (`default_vhost`, or `/` without `[[vhosts]]`), else refused.
    pub fn select(&self, host: Option<&[u8]>) -> Result<&Arc<Vhost>, SelectError> {
        if let Some(&index) = host.and_then(|host| self.by_name.get(host)) {
            return Ok(&self.list[index]);
        }
        match (self.fallback, host) {
            (Some(index), _) => Ok(&self.list[index]),
            (None, Some(host)) => Err(SelectError::Unknown(shown(host))),
            (None, None) => Err(SelectError::Absent),
        }
    }

    /// Every vhost, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Vhost>> {
        self.list.iter()
    }

    /// How many vhosts there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Never: a broker has at least one vhost.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The vhost named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Vhost>> {
        self.by_name.get(name.as_bytes()).map(|&i| &self.list[i])
    }

    /// The first vhost (`/` without `[[vhosts]]`): for what every router shares.
    fn first(&self) -> &Router {
        &self.list[0].router
    }

    /// The memory budget every vhost charges.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        self.first().budget()
    }

    /// The message store every vhost journals in (a handle of one of them: counters, syncs
    /// and closing are the store's, whichever handle asks); `None` when persistence is off.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.first().store()
    }

    /// Queues and topics of every vhost together.
    pub fn counts(&self) -> (usize, usize) {
        self.list.iter().fold((0, 0), |(q, t), vhost| {
            let (queues, topics) = vhost.router.counts();
            (q + queues, t + topics)
        })
    }

    /// Messages waiting in every vhost's scheduler.
    pub fn scheduled(&self) -> usize {
        self.list.iter().map(|v| v.router.scheduler().len()).sum()
    }

    /// Puts what the journal held back into the vhosts it was journaled in. What belongs to
    /// a vhost no longer configured is left in the journal, untouched (it comes back when the
    /// vhost is configured again), and counted in the returned [`Restored`].
    pub fn restore(&self, recovered: Recovered) -> Restored {
        let mut restored = Restored::default();
        let journal_names: HashMap<Bytes, &Arc<Vhost>> = self
            .list
            .iter()
            .map(|vhost| (Vhost::journal_name(&vhost.name), vhost))
            .collect();
        let by_journal_name = |name: &Bytes| journal_names.get(name).copied();
        for durable in &recovered.durables {
            match by_journal_name(&durable.vhost) {
                Some(vhost) => {
                    vhost.router.restore_durable(&durable.queue, &durable.topic);
                    restored.durables += 1;
                }
                None => restored.skipped_durables += 1,
            }
        }
        for message in recovered.messages {
            match by_journal_name(&message.vhost) {
                Some(vhost) => {
                    vhost.router.restore_message(message);
                    restored.messages += 1;
                }
                None => restored.skipped_messages += 1,
            }
        }
        restored
    }
}

/// What [`Vhosts::restore`] put back and left alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Messages put back into their vhost's queues or scheduler.
    pub messages: usize,
    /// Durable subscriptions put back.
    pub durables: usize,
    /// Messages of vhosts not configured now (left in the journal).
    pub skipped_messages: usize,
    /// Durable subscriptions of vhosts not configured now (left in the journal).
    pub skipped_durables: usize,
}

#[cfg(test)]
mod tests;
