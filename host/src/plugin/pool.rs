//! Warm instances of one plugin: the per-store state and limits, checkout/return, recycling after
//! a failure or N calls, back-off of re-instantiation, and the per-plugin counters.
//!
//! A call checks an instance out (an idle one, or a new one while fewer than `max_instances`
//! exist; when all are busy it waits, as backpressure, up to [`BUSY_WAIT`]), arms the deadline,
//! calls with `call_async`, and hands the instance back. The epoch callback yields to tokio on
//! every tick (so a running guest never holds a worker thread for more than one tick) and traps
//! once the call has used up its deadline in ticks it was running for. Any failure discards the
//! instance: wasmtime leaves an instance unusable after a trap, and a plugin that returned
//! garbage is not trusted. After [`BACKOFF_AFTER`] failed calls in a row, replacement instances
//! are made at most one per back-off interval (doubling up to [`BACKOFF_MAX`]): callers wait for
//! their turn rather than the broker instantiating in a loop; a successful call resets it.
//!
//! Limits per store (one instance of the component): the sum of all its linear memories
//! (`memory_mb`), and bounded counts of core instances, tables and memories ([`MAX_CORE_INSTANCES`],
//! [`MAX_TABLES`], [`MAX_MEMORIES`]). The `log` import is rate limited per plugin ([`LogLimit`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use wasmtime::component::{ComponentExportIndex, Func, InstancePre, TypedFunc};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};

use super::auth::{AuthGuest, AuthIndices};
use super::bindings::deliver::FilterVerdict;
use super::bindings::send::SendVerdict;
use super::bindings::{context, deliver, lifecycle, log, redeliver, send, types::Manifest};
use super::engine::{engine, running, Running};
use super::hook_stats::{HookCounters, LATENCY_SAMPLE_EVERY};
use super::kv::{CallKv, KvSettings, PluginKv};
use super::trace::Notes;
use super::Hook;

/// Longest log line a plugin may write.
const MAX_LOG_LINE: usize = 2048;
/// Log lines a plugin may write per second, over all its instances (more are dropped, counted
/// and summed up in one line when logging resumes).
const LOG_LINES_PER_SECOND: f64 = 100.0;
/// Log lines a plugin may write in a burst (e.g. at start-up) before the rate applies.
const LOG_BURST: f64 = 200.0;

/// Longest a call waits for an instance while all `max_instances` are busy. A busy pool is
/// backpressure (the connection waits), not a failure: only a wait past this is one (`Busy`).
/// Independent of the call's deadline, and generous: a pool whose every instance runs into its
/// deadline (at most seconds) frees one long before.
pub const BUSY_WAIT: Duration = Duration::from_secs(5);
/// Failed calls in a row after which replacement instances are spaced out.
pub const BACKOFF_AFTER: u32 = 2;
/// The first spacing between replacement instances; it doubles with every further failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(10);
/// The largest spacing, and the longest a caller waits for its turn to instantiate (a caller
/// whose turn is further away fails as `Backoff` at once).
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Most core instances one store (one instance of the component) may create; wasmtime's
/// default is 10,000. Measured: the sample Python components (componentize-py: a dozen linked
/// modules plus their shims) create 38, the JavaScript ones 4, Rust ones 3.
pub const MAX_CORE_INSTANCES: usize = 64;
/// Most tables one store may create (every sample component creates 2).
pub const MAX_TABLES: usize = 16;
/// Most linear memories one store may create (every sample component creates 1). Each reserves
/// address space (4 GiB plus guard pages), whatever its size.
pub const MAX_MEMORIES: usize = 4;
/// Most elements of one table (wasmtime's default is unbounded).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The `log` import's rate limit of one plugin: a token bucket shared by its instances.
pub struct LogLimit {
    bucket: Mutex<Bucket>,
    /// Lines dropped so far (monotonic).
    pub dropped: AtomicU64,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    /// Lines dropped since the last one written.
    dropped: u64,
}

impl LogLimit {
    fn new() -> LogLimit {
        LogLimit {
            bucket: Mutex::new(Bucket {
                tokens: LOG_BURST,
                last: Instant::now(),
                dropped: 0,
            }),
            dropped: AtomicU64::new(0),
        }
    }

    /// Takes a token for one line: `Some(n)` when it may be written, `n` being the lines dropped
    /// before it (to report once); `None` when it is dropped.
    fn admit(&self) -> Option<u64> {
        // The broker's lock policy: a poisoned lock is used as it is (see `router` module docs).
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(bucket.last).as_secs_f64() * LOG_LINES_PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(LOG_BURST);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.dropped))
        } else {
            bucket.dropped += 1;
            self.dropped.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Per-store data: the plugin's name for logs, the limiter, the current deadline and what the
/// `context` import answers for the current call.
pub struct State {
    plugin: Arc<str>,
    /// The virtual host of the connection the current call is for (`context.vhost`).
    pub(super) vhost: Arc<str>,
    /// The notes of the current call while it is traced (`context.tracing`, `context.note`).
    notes: Option<Notes>,
    log: Arc<LogLimit>,
    max_memory: usize,
    /// The sum of the sizes of every linear memory of the store (bytes): the cap applies to it,
    /// and an instance grown past 3/4 of it is replaced.
    memory_used: usize,
    memory_hit: bool,
    /// Epoch ticks (1 ms each) the current call may still run for. Counting the ticks the
    /// guest itself observes, not wall time, means a broker that the OS deschedules for a
    /// while does not fail short calls that happened to span the pause.
    ticks_left: u64,
    /// The plugin's kv store (`kv` import), when its config enables one.
    pub(super) kv: Option<CallKv>,
    /// A hook call is running (false during `init`): what `kv` needs a vhost for.
    pub(super) in_call: bool,
}

/// The tick budget of a call that may run for `budget` (no clock read: a tick is 1 ms).
fn ticks_for(budget: Duration) -> u64 {
    u64::try_from(budget.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
impl State {
    /// A state without limits or deadline, for unit tests.
    fn for_test() -> State {
        State {
            plugin: "test".into(),
            vhost: super::default_vhost(),
            notes: None,
            log: Arc::new(LogLimit::new()),
            max_memory: usize::MAX,
            memory_used: 0,
            memory_hit: false,
            ticks_left: u64::MAX,
            kv: None,
            in_call: true,
        }
    }
}

impl ResourceLimiter for State {
    /// Called for every new memory (`current` 0) and every growth of one: the cap applies to the
    /// sum over all memories of the store. A growth allowed here that then fails anyway (beyond
    /// the memory's own maximum) stays counted: conservative, and such an instance is replaced.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_used
            .saturating_add(desired.saturating_sub(current));
        let ok = total <= self.max_memory;
        self.memory_hit |= !ok;
        if ok {
            self.memory_used = total;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

impl log::Host for State {
    fn log(&mut self, level: log::Level, mut message: String) {
        let enabled = match level {
            log::Level::Trace => tracing::enabled!(tracing::Level::TRACE),
            log::Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            log::Level::Info => tracing::enabled!(tracing::Level::INFO),
            log::Level::Warn => tracing::enabled!(tracing::Level::WARN),
            log::Level::Error => tracing::enabled!(tracing::Level::ERROR),
        };
        if !enabled {
            return; // filtered out anyway: costs no token
        }
        let Some(dropped) = self.log.admit() else {
            return;
        };
        let plugin = &*self.plugin;
        if dropped > 0 {
            tracing::warn!(
                plugin,
                dropped,
                "plugin log rate limit ({LOG_LINES_PER_SECOND} lines/s, bursts of {LOG_BURST}): \
                 {dropped} lines dropped"
            );
        }
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl context::Host for State {
    fn vhost(&mut self) -> String {
        self.vhost.to_string()
    }

    fn tracing(&mut self) -> bool {
        self.notes.is_some()
    }

    fn note(&mut self, text: String) {
        if let Some(notes) = &mut self.notes {
            notes.push(text);
        }
    }
}

/// Export lookups done once per plugin, before any instance exists.
pub struct Exports {
    pub lifecycle: lifecycle::GuestIndices,
    pub auth: Option<AuthIndices>,
    pub send: Option<send::GuestIndices>,
    pub deliver: Option<deliver::GuestIndices>,
    pub redeliver: Option<redeliver::GuestIndices>,
    /// `send-packed.on-send-packed`, when the component exports it (optional).
    pub send_packed: Option<ComponentExportIndex>,
    /// `send-batch.on-send-batch`, when the component exports it (optional).
    pub send_batch: Option<ComponentExportIndex>,
    /// `send-batch-packed.on-send-batch-packed`, when the component exports it (optional).
    pub send_batch_packed: Option<ComponentExportIndex>,
    /// `deliver-batch.filter-batch`, when the component exports it (optional).
    pub deliver_batch: Option<ComponentExportIndex>,
}

/// The typed exports of one instance.
pub struct Guest {
    pub lifecycle: lifecycle::Guest,
    pub auth: Option<AuthGuest>,
    pub send: Option<send::Guest>,
    pub deliver: Option<deliver::Guest>,
    pub redeliver: Option<redeliver::Guest>,
    pub send_packed: Option<PackedSend>,
    pub send_batch: Option<BatchSend>,
    pub send_batch_packed: Option<PackedBatchSend>,
    pub deliver_batch: Option<BatchFilter>,
}

/// The parameters and results of `send-packed.on-send-packed`: packed input, verdict.
type PackedSignature<'a> = TypedFunc<(&'a [u8],), (SendVerdict,)>;

/// `send-packed.on-send-packed` of one instance, its type checked when the instance was made.
pub struct PackedSend(Func);

impl PackedSend {
    fn load(
        store: &mut Store<State>,
        instance: &wasmtime::component::Instance,
        index: &ComponentExportIndex,
    ) -> wasmtime::Result<PackedSend> {
        let typed: PackedSignature<'_> = instance.get_typed_func(store, index)?;
        Ok(PackedSend(*typed.func()))
    }

    /// Calls `on-send-packed(input)`.
    pub async fn call(
        &self,
        store: &mut Store<State>,
        input: &[u8],
    ) -> wasmtime::Result<SendVerdict> {
        // SAFETY: `load` checked the function against exactly this signature (`get_typed_func`);
        // only the lifetime of the borrowed parameter differs, which does not change the type.
        #[allow(unsafe_code)]
        let typed: PackedSignature<'_> = unsafe { TypedFunc::new_unchecked(self.0) };
        let (verdict,) = typed.call_async(store, (input,)).await?;
        Ok(verdict)
    }
}

/// The parameters and results of `send-batch.on-send-batch`: packed input, verdicts.
type SendBatchSignature<'a> = TypedFunc<(&'a [u8],), (Vec<SendVerdict>,)>;

/// `send-batch.on-send-batch` of one instance, its type checked when the instance was made.
pub struct BatchSend(Func);

impl BatchSend {
    fn load(
        store: &mut Store<State>,
        instance: &wasmtime::component::Instance,
        index: &ComponentExportIndex,
    ) -> wasmtime::Result<BatchSend> {
        let typed: SendBatchSignature<'_> = instance.get_typed_func(store, index)?;
        Ok(BatchSend(*typed.func()))
    }

    /// Calls `on-send-batch(input)`.
    pub async fn call(
        &self,
        store: &mut Store<State>,
        input: &[u8],
    ) -> wasmtime::Result<Vec<SendVerdict>> {
        // SAFETY: `load` checked the function against exactly this signature (`get_typed_func`);
        // only the lifetime of the borrowed parameter differs, which does not change the type.
        #[allow(unsafe_code)]
        let typed: SendBatchSignature<'_> = unsafe { TypedFunc::new_unchecked(self.0) };
        let (verdicts,) = typed.call_async(store, (input,)).await?;
        Ok(verdicts)
    }
}

/// The parameters and results of `send-batch-packed.on-send-batch-packed`: packed input, packed
/// verdicts.
type PackedBatchSignature<'a> = TypedFunc<(&'a [u8],), (Vec<u8>,)>;

/// `send-batch-packed.on-send-batch-packed` of one instance, its type checked when the instance
/// was made.
pub struct PackedBatchSend(Func);

impl PackedBatchSend {
    fn load(
        store: &mut Store<State>,
        instance: &wasmtime::component::Instance,
        index: &ComponentExportIndex,
    ) -> wasmtime::Result<PackedBatchSend> {
        let typed: PackedBatchSignature<'_> = instance.get_typed_func(store, index)?;
        Ok(PackedBatchSend(*typed.func()))
    }

    /// Calls `on-send-batch-packed(input)`.
    pub async fn call(&self, store: &mut Store<State>, input: &[u8]) -> wasmtime::Result<Vec<u8>> {
        // SAFETY: `load` checked the function against exactly this signature (`get_typed_func`);
        // only the lifetime of the borrowed parameter differs, which does not change the type.
        #[allow(unsafe_code)]
        let typed: PackedBatchSignature<'_> = unsafe { TypedFunc::new_unchecked(self.0) };
        let (output,) = typed.call_async(store, (input,)).await?;
        Ok(output)
    }
}

/// The parameters and results of `deliver-batch.filter-batch`: token, packed messages, verdicts.
type BatchSignature<'a> = TypedFunc<(&'a [u8], &'a [u8]), (Vec<FilterVerdict>,)>;

/// `deliver-batch.filter-batch` of one instance, its type checked when the instance was made.
pub struct BatchFilter(Func);

impl BatchFilter {
    fn load(
        store: &mut Store<State>,
        instance: &wasmtime::component::Instance,
        index: &ComponentExportIndex,
    ) -> wasmtime::Result<BatchFilter> {
        let typed: BatchSignature<'_> = instance.get_typed_func(store, index)?;
        Ok(BatchFilter(*typed.func()))
    }

    /// Calls `filter-batch(token, msgs)`.
    pub async fn call(
        &self,
        store: &mut Store<State>,
        token: &[u8],
        msgs: &[u8],
    ) -> wasmtime::Result<Vec<FilterVerdict>> {
        // SAFETY: `load` checked the function against exactly this signature (`get_typed_func`);
        // only the lifetime of the borrowed parameters differs, which does not change the type.
        #[allow(unsafe_code)]
        let typed: BatchSignature<'_> = unsafe { TypedFunc::new_unchecked(self.0) };
        let (verdicts,) = typed.call_async(store, (token, msgs)).await?;
        Ok(verdicts)
    }
}

/// One live instance and its store.
pub struct Warm {
    pub store: Store<State>,
    pub guest: Guest,
    calls: u64,
}

impl Warm {
    /// Arms the deadline for the next call, which may run for `budget`.
    pub fn arm(&mut self, budget: Duration) {
        let state = self.store.data_mut();
        state.ticks_left = ticks_for(budget);
        state.memory_hit = false;
        self.store.set_epoch_deadline(1);
    }

    /// Sets what the `context` import answers for the next call: its virtual host (cloned only
    /// when it differs from the last call's, so no shared counter is touched per call) and
    /// whether it is traced.
    pub fn enter(&mut self, vhost: &Arc<str>, traced: bool) {
        let state = self.store.data_mut();
        if !Arc::ptr_eq(&state.vhost, vhost) {
            state.vhost = vhost.clone();
        }
        state.notes = traced.then(Notes::default);
        state.in_call = true;
    }

    /// The notes the call just made wrote (empty unless it was traced).
    pub fn take_notes(&mut self) -> Notes {
        self.store.data_mut().notes.take().unwrap_or_default()
    }
}

/// Why a call did not produce a usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (panic, `unreachable`, failed allocation, ...).
    Trap,
    /// The deadline passed.
    Timeout,
    /// The guest hit its memory cap.
    Memory,
    /// The guest answered with something the host refuses.
    Invalid,
    /// The input was larger than the guest could take.
    Oversize,
    /// Every instance stayed busy for the busy-pool wait (5 s).
    Busy,
    /// After failures in a row, no replacement instance could be made within the back-off limit.
    Backoff,
}

/// A failed call: what happened, in detail for the log.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        Failure {
            kind,
            detail: detail.into(),
        }
    }
}

/// Counters of one plugin (monotonic).
#[derive(Default)]
pub struct Counters {
    /// Calls and failures per hook (indexed by `Hook as usize`); the plugin's calls are their
    /// sum.
    pub hooks: [HookCounters; 4],
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub memory: AtomicU64,
    pub invalid: AtomicU64,
    pub oversize: AtomicU64,
    pub busy: AtomicU64,
    pub backoff: AtomicU64,
    /// Calls that waited for a busy pool (and then got an instance or failed as `busy`).
    pub busy_waits: AtomicU64,
    /// Routes to destinations the sender may not send to, refused (send hook).
    pub routes_refused: AtomicU64,
    pub instances_created: AtomicU64,
    pub recycled: AtomicU64,
}

/// Limits applied to every instance and call of a plugin.
pub struct Limits {
    pub max_memory: usize,
    pub max_instances: usize,
    pub recycle_after: Option<u64>,
    pub init_deadline: Duration,
}

/// The instances of one plugin: idle ones, and how many exist.
struct Slots {
    // Boxed: an instance moves between this list and a lease on every call, and a `Warm` (the
    // store and every typed export) is a few hundred bytes to copy each time.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<Warm>>,
    /// Instances that exist or are being made (idle, checked out, instantiating); at most
    /// `max_instances`.
    live: usize,
    /// Failed calls in a row (reset by a successful call).
    failures: u32,
    /// While backing off: when the next replacement instance may be made.
    next_instantiate: Option<Instant>,
}

/// The warm instances of one plugin.
pub struct Pool {
    pub name: Arc<str>,
    pre: InstancePre<State>,
    exports: Exports,
    config_json: String,
    pub limits: Limits,
    slots: Mutex<Slots>,
    /// Signalled when an instance is handed back or one fewer exists.
    freed: Notify,
    pub log: Arc<LogLimit>,
    pub counters: Counters,
    /// The plugin's kv store and this version's settings, when its config enables one.
    kv: Option<(Arc<PluginKv>, KvSettings)>,
}

/// An instance checked out for one call; handed back by [`Pool::finish`], or discarded (and
/// its slot freed) when dropped before, e.g. with a call cancelled mid-way.
pub struct Lease<'a> {
    /// Taken by [`Pool::finish`].
    warm: Option<Box<Warm>>,
    pool: &'a Pool,
    /// The epoch ticks while the lease lives (the call's deadline needs it).
    _running: Running,
    /// When the call began, for the one call in [`LATENCY_SAMPLE_EVERY`] that is timed.
    started: Option<Instant>,
}

impl Lease<'_> {
    /// The instance.
    pub fn warm(&mut self) -> &mut Warm {
        self.warm
            .as_mut()
            .expect("a lease holds its instance until finished")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // An instance `finish` did not take (the call was cancelled): not trusted any more.
        if let Some(warm) = self.warm.take() {
            self.pool.discard(warm);
        }
    }
}

impl Pool {
    pub fn new(
        name: Arc<str>,
        pre: InstancePre<State>,
        exports: Exports,
        config_json: String,
        limits: Limits,
    ) -> Pool {
        Pool {
            name,
            pre,
            exports,
            config_json,
            limits,
            slots: Mutex::new(Slots {
                idle: Vec::new(),
                live: 0,
                failures: 0,
                next_instantiate: None,
            }),
            freed: Notify::new(),
            log: Arc::new(LogLimit::new()),
            counters: Counters::default(),
            kv: None,
        }
    }

    /// Gives every instance made from now on the kv store `plugin` under `settings`.
    pub fn with_kv(mut self, plugin: Arc<PluginKv>, settings: KvSettings) -> Pool {
        self.kv = Some((plugin, settings));
        self
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        // Slots are only changed in place by short, non-panicking code; a poisoned lock still
        // holds a consistent table.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Instantiates and initialises a fresh instance; returns its manifest too. The caller
    /// accounts for it in `live` (see [`put_back`](Self::put_back) and `checkout`).
    pub async fn instantiate(&self) -> Result<(Box<Warm>, Manifest), String> {
        // The component's start-up code runs under the init deadline.
        let _running = running();
        let state = State {
            plugin: self.name.clone(),
            vhost: super::default_vhost(),
            notes: None,
            log: self.log.clone(),
            max_memory: self.limits.max_memory,
            memory_used: 0,
            memory_hit: false,
            ticks_left: ticks_for(self.limits.init_deadline),
            kv: self
                .kv
                .as_ref()
                .map(|(plugin, settings)| CallKv::new(plugin.clone(), *settings)),
            in_call: false,
        };
        let mut store = Store::new(engine(), state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            state.ticks_left = state.ticks_left.saturating_sub(1);
            if state.ticks_left == 0 {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // tokio's own yield lets the runtime poll its timers and I/O before the guest
                // resumes (a plain wake-up could starve them on a busy worker).
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store.set_epoch_deadline(1);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| describe(&store, &e))?;
        let load = |store: &mut Store<State>| -> wasmtime::Result<Guest> {
            let e = &self.exports;
            Ok(Guest {
                lifecycle: e.lifecycle.load(&mut *store, &instance)?,
                auth: e
                    .auth
                    .as_ref()
                    .map(|i| i.load(&mut *store, &instance))
                    .transpose()?,
                send: e
                    .send
                    .as_ref()
                    .map(|i| i.load(&mut *store, &instance))
                    .transpose()?,
                deliver: e
                    .deliver
                    .as_ref()
                    .map(|i| i.load(&mut *store, &instance))
                    .transpose()?,
                redeliver: e
                    .redeliver
                    .as_ref()
                    .map(|i| i.load(&mut *store, &instance))
                    .transpose()?,
                send_packed: e
                    .send_packed
                    .as_ref()
                    .map(|i| PackedSend::load(&mut *store, &instance, i))
                    .transpose()?,
                send_batch: e
                    .send_batch
                    .as_ref()
                    .map(|i| BatchSend::load(&mut *store, &instance, i))
                    .transpose()?,
                send_batch_packed: e
                    .send_batch_packed
                    .as_ref()
                    .map(|i| PackedBatchSend::load(&mut *store, &instance, i))
                    .transpose()?,
                deliver_batch: e
                    .deliver_batch
                    .as_ref()
                    .map(|i| BatchFilter::load(&mut *store, &instance, i))
                    .transpose()?,
            })
        };
        let guest = load(&mut store).map_err(|e| format!("{e:#}"))?;
        let mut warm = Box::new(Warm {
            store,
            guest,
            calls: 0,
        });
        warm.arm(self.limits.init_deadline);
        let init = warm
            .guest
            .lifecycle
            .call_init(&mut warm.store, &self.config_json)
            .await;
        let manifest = match init {
            Ok(Ok(manifest)) => manifest,
            Ok(Err(reason)) => return Err(format!("init: {reason}")),
            Err(e) => return Err(format!("init: {}", describe(&warm.store, &e))),
        };
        self.counters.instances_created.fetch_add(1, Relaxed);
        Ok((warm, manifest))
    }

    /// Adds the instance made at load (by [`instantiate`](Self::instantiate)) to the idle set.
    pub fn put_back(&self, warm: Box<Warm>) {
        let mut slots = self.slots();
        slots.live += 1;
        slots.idle.push(warm);
    }

    /// Whether instances serve `send-packed.on-send-packed`.
    pub fn packs_send(&self) -> bool {
        self.exports.send_packed.is_some()
    }

    /// Whether instances serve `send-batch.on-send-batch`.
    pub fn batches_send(&self) -> bool {
        self.exports.send_batch.is_some()
    }

    /// Whether instances serve `send-batch-packed.on-send-batch-packed`.
    pub fn batches_send_packed(&self) -> bool {
        self.exports.send_batch_packed.is_some()
    }

    /// Whether instances serve `deliver-batch.filter-batch`.
    pub fn batches(&self) -> bool {
        self.exports.deliver_batch.is_some()
    }

    /// Takes an idle instance, or makes one while fewer than `max_instances` exist (spaced out
    /// after failures in a row), or waits for one to be handed back, up to [`BUSY_WAIT`]. The
    /// common case (an idle instance) takes one lock and reads no clock.
    pub async fn checkout(&self, hook: Hook) -> Result<Lease<'_>, Failure> {
        let mut busy_since: Option<Instant> = None;
        loop {
            let turn = {
                let mut slots = self.slots();
                if let Some(warm) = slots.idle.pop() {
                    drop(slots);
                    return Ok(self.lease(warm));
                }
                if slots.live < self.limits.max_instances {
                    slots.live += 1;
                    Some(self.instantiation_turn(&mut slots))
                } else {
                    None
                }
            };
            match turn {
                Some(turn) => return self.make(hook, turn).await,
                None => self.wait_for_instance(hook, &mut busy_since).await?,
            }
        }
    }

    fn lease(&self, warm: Box<Warm>) -> Lease<'_> {
        let timed = warm.calls.is_multiple_of(LATENCY_SAMPLE_EVERY);
        Lease {
            started: timed.then(Instant::now),
            warm: Some(warm),
            pool: self,
            _running: running(),
        }
    }

    /// When a new instance may be made: now, or (backing off after failures in a row) the
    /// caller's turn, reserved here; `Err` when that turn is further away than [`BACKOFF_MAX`].
    fn instantiation_turn(&self, slots: &mut Slots) -> Result<Option<Instant>, ()> {
        if slots.failures < BACKOFF_AFTER {
            return Ok(None);
        }
        let doublings = (slots.failures - BACKOFF_AFTER).min(16);
        let spacing = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX);
        let now = Instant::now();
        let at = slots.next_instantiate.map_or(now, |at| at.max(now));
        if at.duration_since(now) > BACKOFF_MAX {
            return Err(());
        }
        slots.next_instantiate = Some(at + spacing);
        Ok((at > now).then_some(at))
    }

    /// Makes an instance in a slot already counted in `live`, at its turn.
    async fn make(
        &self,
        hook: Hook,
        turn: Result<Option<Instant>, ()>,
    ) -> Result<Lease<'_>, Failure> {
        let at = match turn {
            Ok(at) => at,
            Err(()) => {
                self.release_slot();
                return Err(self.fail(
                    hook,
                    Failure::new(
                        FailureKind::Backoff,
                        "failing in a row: no new instance within the back-off limit",
                    ),
                ));
            }
        };
        if let Some(at) = at {
            tokio::time::sleep_until(at.into()).await;
            // Someone may have handed an instance back meanwhile: take it rather than make one.
            let idle = {
                let mut slots = self.slots();
                let warm = slots.idle.pop();
                if warm.is_some() {
                    slots.live -= 1;
                }
                warm
            };
            if let Some(warm) = idle {
                return Ok(self.lease(warm));
            }
        }
        match self.instantiate().await {
            Ok((warm, _)) => Ok(self.lease(warm)),
            Err(e) => {
                self.release_slot();
                self.note_failure();
                Err(self.fail(
                    hook,
                    Failure::new(FailureKind::Trap, format!("instantiating: {e}")),
                ))
            }
        }
    }

    /// Frees a slot that never got an instance.
    fn release_slot(&self) {
        self.slots().live -= 1;
        self.freed.notify_one();
    }

    /// Waits until an instance may be free (backpressure), or fails as `Busy` once the pool has
    /// stayed busy for [`BUSY_WAIT`] since the caller started waiting.
    async fn wait_for_instance(
        &self,
        hook: Hook,
        busy_since: &mut Option<Instant>,
    ) -> Result<(), Failure> {
        let since = *busy_since.get_or_insert_with(|| {
            self.counters.busy_waits.fetch_add(1, Relaxed);
            Instant::now()
        });
        let freed = self.freed.notified();
        tokio::pin!(freed);
        // Registered before looking again, so a hand-back in between is not missed.
        freed.as_mut().enable();
        {
            let slots = self.slots();
            if !slots.idle.is_empty() || slots.live < self.limits.max_instances {
                return Ok(());
            }
        }
        match tokio::time::timeout_at((since + BUSY_WAIT).into(), freed).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.fail(
                hook,
                Failure::new(
                    FailureKind::Busy,
                    format!("no free instance for {} s", BUSY_WAIT.as_secs()),
                ),
            )),
        }
    }

    /// Discards an instance: one fewer exists.
    fn discard(&self, warm: Box<Warm>) {
        self.counters.recycled.fetch_add(1, Relaxed);
        // Dropping a store takes microseconds: not under the lock.
        drop(warm);
        self.release_slot();
    }

    /// Counts a failed call towards the back-off.
    fn note_failure(&self) {
        let mut slots = self.slots();
        slots.failures = slots.failures.saturating_add(1);
    }

    /// Ends a call: returns the instance to the pool on success, discards it on failure (logged
    /// and counted).
    pub fn finish<T>(
        &self,
        hook: Hook,
        mut lease: Lease<'_>,
        result: Result<T, Failure>,
    ) -> Result<T, Failure> {
        let counters = &self.counters.hooks[hook as usize];
        counters.calls.fetch_add(1, Relaxed);
        if let Some(started) = lease.started {
            counters
                .latency_ns
                .observe(started.elapsed().as_nanos() as u64);
        }
        let mut warm = lease.warm.take().expect("a lease is finished once");
        drop(lease);
        match result {
            Ok(value) => {
                warm.calls += 1;
                // Guest heaps rarely shrink: replace an instance that grew past 3/4 of its cap
                // before it fails a call, and one that served its configured number of calls.
                let grown = warm.store.data().memory_used > self.limits.max_memory / 4 * 3;
                let worn = self.limits.recycle_after.is_some_and(|n| warm.calls >= n);
                if grown || worn {
                    self.succeeded(None);
                    self.discard(warm);
                } else {
                    self.succeeded(Some(warm));
                    self.freed.notify_one();
                }
                Ok(value)
            }
            Err(failure) => {
                self.note_failure();
                self.discard(warm);
                Err(self.fail(hook, failure))
            }
        }
    }

    /// After a successful call: resets the back-off and hands `warm` back.
    fn succeeded(&self, warm: Option<Box<Warm>>) {
        let mut slots = self.slots();
        slots.failures = 0;
        slots.next_instantiate = None;
        slots.idle.extend(warm);
    }

    /// Classifies an error that came out of wasm.
    pub fn classify(&self, warm: &Warm, error: &wasmtime::Error) -> Failure {
        let kind = if warm.store.data().memory_hit {
            FailureKind::Memory
        } else if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            FailureKind::Timeout
        } else {
            FailureKind::Trap
        };
        Failure::new(kind, describe(&warm.store, error))
    }

    /// Counts and logs a failure.
    pub fn fail(&self, hook: Hook, failure: Failure) -> Failure {
        let c = &self.counters;
        let counter = match failure.kind {
            FailureKind::Trap => &c.traps,
            FailureKind::Timeout => &c.timeouts,
            FailureKind::Memory => &c.memory,
            FailureKind::Invalid => &c.invalid,
            FailureKind::Oversize => &c.oversize,
            FailureKind::Busy => &c.busy,
            FailureKind::Backoff => &c.backoff,
        };
        counter.fetch_add(1, Relaxed);
        c.hooks[hook as usize].failures[failure.kind as usize].fetch_add(1, Relaxed);
        tracing::error!(plugin = &*self.name, hook = hook.as_str(), kind = ?failure.kind, "plugin call failed: {}", failure.detail);
        failure
    }
}

fn describe(store: &Store<State>, error: &wasmtime::Error) -> String {
    if store.data().memory_hit {
        format!(
            "memory cap of {} bytes reached: {error:#}",
            store.data().max_memory
        )
    } else if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        "deadline exceeded".to_string()
    } else {
        format!("{error:#}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cap_applies_to_the_sum_of_a_stores_memories() {
        const MIB: usize = 1 << 20;
        let mut state = State::for_test();
        state.max_memory = 4 * MIB;
        // Two memories created at 2 MiB each: together at the cap.
        assert!(state.memory_growing(0, 2 * MIB, None).unwrap());
        assert!(state.memory_growing(0, 2 * MIB, None).unwrap());
        assert_eq!(state.memory_used, 4 * MIB);
        // Growing either by one page goes over it.
        assert!(!state
            .memory_growing(2 * MIB, 2 * MIB + 65536, None)
            .unwrap());
        assert!(state.memory_hit);
        assert_eq!(
            state.memory_used,
            4 * MIB,
            "a refused growth is not counted"
        );
        assert_eq!(state.memories(), MAX_MEMORIES);
    }

    #[test]
    fn the_log_bucket_admits_a_burst_then_the_rate_and_reports_what_it_dropped() {
        let limit = LogLimit::new();
        let burst = LOG_BURST as usize;
        assert!((0..burst).all(|_| limit.admit() == Some(0)));
        assert_eq!(limit.admit(), None);
        assert_eq!(limit.admit(), None);
        assert_eq!(limit.dropped.load(Relaxed), 2);
        // After a refill, the next line written carries the count of those dropped before it.
        limit.bucket.lock().unwrap().tokens = 1.0;
        assert_eq!(limit.admit(), Some(2));
        assert_eq!(limit.dropped.load(Relaxed), 2);
    }
}
