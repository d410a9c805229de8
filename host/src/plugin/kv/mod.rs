//! The host side of the WIT `kv` and `clock` imports: a small key-value store per plugin and
//! virtual host, and the time.
//!
//! Scope: a [`Registry`] holds one [`PluginKv`] per configured plugin name, which holds one
//! [`Space`] per virtual host, each behind its own lock (an operation takes that lock once: it
//! is atomic, and plugins or vhosts never wait for each other). A plugin reaches only its own
//! `PluginKv` (its store state is handed the one of its name) and only the space of the call's
//! vhost, so it can never read another plugin's or vhost's keys. Plugins without a `kv` table
//! in their config get `disabled` from every call and cost nothing: their store state holds no
//! handle and no lock is ever taken for them. Calls from `init` are refused (`not-in-call`):
//! there is no vhost yet.
//!
//! The registry outlives plugin sets: a reload hands it to the new set, so a plugin reloaded
//! under the same name keeps its entries, and its new caps apply to later writes (entries above
//! lowered caps stay until they are deleted or expire). A plugin that is no longer configured
//! loses its store (memory at once; a persisted store is cleared in the journal).
//!
//! Persistence (`persist = true`): every change is journaled as it is made (under the space's
//! lock, so the journal's order is the store's), as records of kinds 7 to 9 (see
//! [`crate::store::record`]); they are durable when the journal syncs them (its `fsync`
//! policy), but a call does not wait for that. At start-up the entries are put back
//! ([`Registry::restore`]).
//!
//! Memory: the stores live in the broker, outside the guests' memory caps, so their caps are
//! what bounds them; their accounted bytes are also charged to the broker's memory budget
//! ([`Registry::attach_budget`]): a broker whose plugins hold much state pauses producers
//! sooner rather than growing past its budget.

mod imports;
pub mod space;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::budget::{BufferCharge, MemoryBudget};
use crate::store::{RecoveredKv, Store};

use super::bindings::kv::KvError;
use space::{Nowhere, Sink};
pub use space::{Refusal, Space};

/// Default longest key, bytes.
pub const DEFAULT_MAX_KEY_BYTES: usize = 256;
/// Default longest value, bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 4096;
/// Default most entries per plugin per vhost.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Default most accounted bytes per plugin per vhost (keys, values and
/// [`space::ENTRY_OVERHEAD`] per entry).
pub const DEFAULT_MAX_BYTES: usize = 4 << 20;
/// Ceilings on what a config may set (refused above them).
const CEILING_KEY_BYTES: usize = 4096;
const CEILING_VALUE_BYTES: usize = 1 << 20;
const CEILING_ENTRIES: usize = 1_000_000;
const CEILING_BYTES: usize = 1 << 30;

/// A plugin's `kv` table in the broker's config: present, it enables the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSpec {
    /// Longest key in bytes (default 256, at most 4096).
    pub max_key_bytes: Option<usize>,
    /// Longest value in bytes (default 4096, at most 1 MiB).
    pub max_value_bytes: Option<usize>,
    /// Most entries per vhost (default 10,000, at most 1,000,000).
    pub max_entries: Option<usize>,
    /// Most accounted bytes per vhost (default 4 MiB, at most 1 GiB).
    pub max_bytes: Option<usize>,
    /// Journal every change and put entries back at start-up (default false: memory only).
    #[serde(default)]
    pub persist: bool,
}

/// The caps of one plugin's store (per vhost), and whether it is persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvSettings {
    /// Longest key, bytes.
    pub max_key_bytes: usize,
    /// Longest value, bytes.
    pub max_value_bytes: usize,
    /// Most entries per vhost.
    pub max_entries: usize,
    /// Most accounted bytes per vhost.
    pub max_bytes: usize,
    /// Changes are journaled and entries come back at start-up.
    pub persist: bool,
}

impl KvSpec {
    /// The settings, defaults filled in; `Err` names a value out of range.
    pub fn settings(&self) -> Result<KvSettings, String> {
        let pick = |name: &str, value: Option<usize>, default: usize, ceiling: usize| {
            let value = value.unwrap_or(default);
            if value == 0 || value > ceiling {
                return Err(format!("kv.{name} must be between 1 and {ceiling}"));
            }
            Ok(value)
        };
        Ok(KvSettings {
            max_key_bytes: pick(
                "max_key_bytes",
                self.max_key_bytes,
                DEFAULT_MAX_KEY_BYTES,
                CEILING_KEY_BYTES,
            )?,
            max_value_bytes: pick(
                "max_value_bytes",
                self.max_value_bytes,
                DEFAULT_MAX_VALUE_BYTES,
                CEILING_VALUE_BYTES,
            )?,
            max_entries: pick(
                "max_entries",
                self.max_entries,
                DEFAULT_MAX_ENTRIES,
                CEILING_ENTRIES,
            )?,
            max_bytes: pick(
                "max_bytes",
                self.max_bytes,
                DEFAULT_MAX_BYTES,
                CEILING_BYTES,
            )?,
            persist: self.persist,
        })
    }
}

/// Wall-clock time, unix ms (`clock.now-ms`, and the time kv expiry is measured in).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the first call in this process (`clock.monotonic-ms`).
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The journal's name of vhost `vhost` (empty for the default `/`).
fn journal_vhost(vhost: &str) -> &[u8] {
    if vhost == super::DEFAULT_VHOST {
        b""
    } else {
        vhost.as_bytes()
    }
}

/// What the broker gives the stores once it exists (shared by the registry and every
/// plugin's store): the journal, when the message store is on, and the memory budget.
#[derive(Default)]
struct Attached {
    journal: OnceLock<Arc<Store>>,
    budget: OnceLock<Arc<MemoryBudget>>,
}

/// Charges the space's accounted bytes to the broker's memory budget (adjusting its charge
/// when they changed; released when the space is dropped).
fn charge(space: &mut Space, budget: Option<&Arc<MemoryBudget>>) {
    let Some(budget) = budget else {
        return;
    };
    let bytes = space.bytes() as u64;
    match &mut space.charge {
        Some(charge) if charge.bytes() == bytes => {}
        Some(charge) => match Arc::get_mut(charge) {
            Some(charge) => charge.reset(bytes),
            // Never shared; should it be, a new charge replaces it (the old one is released).
            None => space.charge = Some(BufferCharge::to_budget(budget, bytes)),
        },
        None if bytes == 0 => {}
        None => space.charge = Some(BufferCharge::to_budget(budget, bytes)),
    }
}

/// Every plugin's store, by plugin name; shared by successive plugin sets.
#[derive(Default)]
pub struct Registry {
    plugins: Mutex<HashMap<Arc<str>, Arc<PluginKv>>>,
    attached: Arc<Attached>,
}

/// Gauges and counters of one plugin's store (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvStats {
    /// Entries held over every vhost (expired ones not evicted yet included).
    pub entries: u64,
    /// Accounted bytes held over every vhost.
    pub bytes: u64,
    /// Operations refused for a cap (key, value, entries, bytes).
    pub refused: u64,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Registry> {
        Arc::default()
    }

    fn plugins(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<PluginKv>>> {
        self.plugins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store of plugin `name`, made empty if it has none yet.
    pub fn plugin(&self, name: &Arc<str>) -> Arc<PluginKv> {
        self.plugins()
            .entry(name.clone())
            .or_insert_with(|| {
                Arc::new(PluginKv {
                    name: name.clone(),
                    spaces: Mutex::default(),
                    attached: self.attached.clone(),
                    entries: AtomicUsize::new(0),
                    bytes: AtomicUsize::new(0),
                    refused: AtomicU64::new(0),
                    journaled: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// The store of plugin `name`, when it has one.
    pub fn stats(&self, name: &str) -> Option<KvStats> {
        let plugin = self.plugins().get(name).cloned()?;
        Some(KvStats {
            entries: plugin.entries.load(Relaxed) as u64,
            bytes: plugin.bytes.load(Relaxed) as u64,
            refused: plugin.refused.load(Relaxed),
        })
    }

    /// Journals persisted stores from now on (at start-up, once the store is open).
    pub fn attach(&self, store: Arc<Store>) {
        let _ = self.attached.journal.set(store);
    }

    /// Charges every store's bytes to the broker's memory budget from now on (at start-up),
    /// those restored from the journal included.
    pub fn attach_budget(&self, budget: Arc<MemoryBudget>) {
        let _ = self.attached.budget.set(budget);
        let budget = self.attached.budget.get();
        let plugins: Vec<_> = self.plugins().values().cloned().collect();
        for plugin in plugins {
            for space in plugin.spaces() {
                charge(&mut lock(&space), budget);
            }
        }
    }

    /// Puts back the entries read from the journal for the plugins of `configured` (name and
    /// kv settings) that persist their store, within their caps; clears from the journal the
    /// entries of every other plugin, and deletes those that expired or no longer fit. Returns
    /// the entries put back.
    pub fn restore(
        &self,
        entries: Vec<RecoveredKv>,
        configured: &[(Arc<str>, KvSettings)],
    ) -> usize {
        let now = now_ms();
        let journal = self.attached.journal.get();
        let mut cleared: Vec<Vec<u8>> = Vec::new();
        let mut restored = 0;
        for entry in entries {
            let settings = std::str::from_utf8(&entry.plugin).ok().and_then(|name| {
                configured
                    .iter()
                    .find(|(n, s)| &**n == name && s.persist)
                    .map(|(n, s)| (n, *s))
            });
            let Some((name, settings)) = settings else {
                if !cleared.contains(&entry.plugin.to_vec()) {
                    cleared.push(entry.plugin.to_vec());
                }
                continue;
            };
            let vhost = match &entry.vhost[..] {
                b"" => super::DEFAULT_VHOST,
                other => std::str::from_utf8(other).unwrap_or(""),
            };
            let key = std::str::from_utf8(&entry.key).ok();
            let plugin = self.plugin(name);
            let put = match key {
                Some(key) if !vhost.is_empty() => {
                    let space = plugin.space(&Arc::from(vhost));
                    let mut space = lock(&space);
                    let (len, bytes) = (space.len(), space.bytes());
                    let put =
                        space.restore(&settings, key, entry.value.to_vec(), entry.expires_at, now);
                    plugin.account((len, bytes), (space.len(), space.bytes()));
                    put
                }
                _ => false,
            };
            if put {
                restored += 1;
            } else if let Some(journal) = journal {
                journal.kv_delete(&entry.vhost, &entry.plugin, &entry.key);
            }
        }
        if let Some(journal) = journal {
            for plugin in cleared {
                journal.kv_clear(&plugin);
            }
        }
        for (name, settings) in configured {
            if settings.persist {
                self.plugin(name).journaled.store(true, Relaxed);
            }
        }
        restored
    }

    /// After a plugin set with `configured` (name and kv settings, `None` without a `kv`
    /// table) took over: drops the stores of plugins no longer configured with one, clears
    /// from the journal the stores that were persisted and no longer are, and journals every
    /// entry of those that just started to persist.
    pub fn retain(&self, configured: &[(Arc<str>, Option<KvSettings>)]) {
        let journal = self.attached.journal.get();
        let mut plugins = self.plugins();
        plugins.retain(|name, plugin| {
            let settings = configured
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, s)| *s);
            let persist = settings.is_some_and(|s| s.persist);
            if let Some(journal) = journal {
                let was = plugin.journaled.swap(persist, Relaxed);
                if was && !persist {
                    journal.kv_clear(name.as_bytes());
                } else if persist && !was {
                    plugin.journal_all(journal);
                }
            }
            settings.is_some()
        });
    }
}

/// The kv settings of every plugin of `specs` (`None` without a `kv` table, or with one out of
/// range, which a set that loaded does not have).
pub fn configured(specs: &[super::PluginSpec]) -> Vec<(Arc<str>, Option<KvSettings>)> {
    specs
        .iter()
        .map(|spec| {
            let settings = spec.kv.as_ref().and_then(|kv| kv.settings().ok());
            (Arc::from(spec.name.as_str()), settings)
        })
        .collect()
}

fn lock(space: &Mutex<Space>) -> MutexGuard<'_, Space> {
    // A space is only changed by code that does not panic midway; a poisoned lock still holds
    // a consistent map.
    space.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One plugin's store: a space per vhost.
pub struct PluginKv {
    name: Arc<str>,
    spaces: Mutex<HashMap<Arc<str>, Arc<Mutex<Space>>>>,
    attached: Arc<Attached>,
    /// Gauges over every vhost (changed by the difference each operation makes).
    entries: AtomicUsize,
    bytes: AtomicUsize,
    refused: AtomicU64,
    /// The journal may hold entries of this plugin (its store was persisted).
    journaled: AtomicBool,
}

impl PluginKv {
    /// The space of vhost `vhost`, made empty if it has none yet.
    fn space(&self, vhost: &Arc<str>) -> Arc<Mutex<Space>> {
        self.spaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(vhost.clone())
            .or_default()
            .clone()
    }

    fn account(&self, before: (usize, usize), after: (usize, usize)) {
        self.entries
            .fetch_add(after.0.wrapping_sub(before.0), Relaxed);
        self.bytes
            .fetch_add(after.1.wrapping_sub(before.1), Relaxed);
    }

    /// Every vhost's space.
    fn spaces(&self) -> Vec<Arc<Mutex<Space>>> {
        self.vhost_spaces().into_iter().map(|(_, s)| s).collect()
    }

    fn vhost_spaces(&self) -> Vec<(Arc<str>, Arc<Mutex<Space>>)> {
        self.spaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(v, s)| (v.clone(), s.clone()))
            .collect()
    }

    /// Journals every live entry of every vhost (when persistence is switched on).
    fn journal_all(&self, journal: &Store) {
        let now = now_ms();
        for (vhost, space) in self.vhost_spaces() {
            let vhost = journal_vhost(&vhost);
            lock(&space).each_live(now, |key, value, expires_at| {
                journal.kv_put(
                    vhost,
                    self.name.as_bytes(),
                    key.as_bytes(),
                    value,
                    expires_at,
                );
            });
        }
    }
}

/// Journals the changes of one operation of a persisted store.
struct Journaled<'a> {
    store: &'a Store,
    vhost: &'a [u8],
    plugin: &'a [u8],
}

impl Sink for Journaled<'_> {
    fn put(&mut self, key: &str, value: &[u8], expires_at: u64) {
        self.store
            .kv_put(self.vhost, self.plugin, key.as_bytes(), value, expires_at);
    }

    fn remove(&mut self, key: &str) {
        self.store
            .kv_delete(self.vhost, self.plugin, key.as_bytes());
    }
}

/// What one instance's store state holds of its plugin's kv store: the store, this plugin
/// version's settings, and the space of the last call's vhost (looked up again only when the
/// vhost changes).
pub struct CallKv {
    plugin: Arc<PluginKv>,
    settings: KvSettings,
    space: Option<(Arc<str>, Arc<Mutex<Space>>)>,
}

impl CallKv {
    /// The handle of an instance of a plugin whose store is `plugin`, under `settings`.
    pub fn new(plugin: Arc<PluginKv>, settings: KvSettings) -> CallKv {
        CallKv {
            plugin,
            settings,
            space: None,
        }
    }

    /// Runs `op` on the space of `vhost` under its lock, journaling its changes when the store
    /// is persisted.
    pub fn run<T>(
        &mut self,
        vhost: &Arc<str>,
        op: impl FnOnce(&mut Space, &KvSettings, u64, &mut dyn Sink) -> Result<T, Refusal>,
    ) -> Result<T, KvError> {
        let space = match &self.space {
            Some((v, space)) if Arc::ptr_eq(v, vhost) || **v == **vhost => space.clone(),
            _ => {
                let space = self.plugin.space(vhost);
                self.space = Some((vhost.clone(), space.clone()));
                space
            }
        };
        let now = now_ms();
        let mut space = lock(&space);
        let before = (space.len(), space.bytes());
        let journal = self
            .settings
            .persist
            .then(|| self.plugin.attached.journal.get())
            .flatten();
        let result = match journal {
            Some(store) => {
                let mut sink = Journaled {
                    store,
                    vhost: journal_vhost(vhost),
                    plugin: self.plugin.name.as_bytes(),
                };
                op(&mut space, &self.settings, now, &mut sink)
            }
            None => op(&mut space, &self.settings, now, &mut Nowhere),
        };
        self.plugin.account(before, (space.len(), space.bytes()));
        charge(&mut space, self.plugin.attached.budget.get());
        drop(space);
        result.map_err(|refusal| {
            let error = match refusal {
                Refusal::KeyTooLong => KvError::KeyTooLong,
                Refusal::ValueTooLarge => KvError::ValueTooLarge,
                Refusal::TooManyEntries => KvError::TooManyEntries,
                Refusal::TooManyBytes => KvError::TooManyBytes,
                Refusal::NotANumber => return KvError::NotANumber,
                Refusal::Overflow => return KvError::Overflow,
            };
            self.plugin.refused.fetch_add(1, Relaxed);
            error
        })
    }
}

#[cfg(test)]
mod tests;
