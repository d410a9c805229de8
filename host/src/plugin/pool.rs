//! Warm instances of one plugin: the per-store state and limits, checkout/return, recycling after
//! a failure or N calls, and the per-plugin counters.
//!
//! A call checks an instance out (waiting for one of `max_instances` permits until its deadline),
//! arms the deadline, calls with `call_async`, and hands the instance back. The epoch callback
//! yields to tokio on every tick (so a running guest never holds a worker thread for more than one
//! tick) and traps once the call has used up its deadline in ticks it was running for. Any failure discards the instance: wasmtime
//! leaves an instance unusable after a trap, and a plugin that returned garbage is not trusted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::{ComponentExportIndex, Func, InstancePre, TypedFunc};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};

use super::bindings::deliver::FilterVerdict;
use super::bindings::send::SendVerdict;
use super::bindings::{authenticate, deliver, lifecycle, log, send, types::Manifest};
use super::engine::{engine, running, Running};
use super::Hook;

/// Longest log line a plugin may write.
const MAX_LOG_LINE: usize = 2048;

/// Per-store data: the plugin's name for logs, the memory limiter and the current deadline.
pub struct State {
    plugin: Arc<str>,
    max_memory: usize,
    /// Linear memory the guest has grown to (bytes), for the soft cap.
    memory_used: usize,
    memory_hit: bool,
    /// Epoch ticks (1 ms each) the current call may still run for. Counting the ticks the
    /// guest itself observes, not wall time, means a broker that the OS deschedules for a
    /// while does not fail short calls that happened to span the pause.
    ticks_left: u64,
}

/// The tick budget of a call that may run for `budget` (no clock read: a tick is 1 ms).
fn ticks_for(budget: Duration) -> u64 {
    u64::try_from(budget.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl State {
    /// A state without limits or deadline, for the raw-call benchmark.
    pub(super) fn for_bench() -> State {
        State {
            plugin: "bench".into(),
            max_memory: usize::MAX,
            memory_used: 0,
            memory_hit: false,
            ticks_left: u64::MAX,
        }
    }
}

impl ResourceLimiter for State {
    fn memory_growing(
        &mut self,
        _: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_memory;
        self.memory_hit |= !ok;
        if ok {
            self.memory_used = desired;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl log::Host for State {
    fn log(&mut self, level: log::Level, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = &*self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// Export lookups done once per plugin, before any instance exists.
pub struct Exports {
    pub lifecycle: lifecycle::GuestIndices,
    pub auth: Option<authenticate::GuestIndices>,
    pub send: Option<send::GuestIndices>,
    pub deliver: Option<deliver::GuestIndices>,
    /// `send-packed.on-send-packed`, when the component exports it (optional).
    pub send_packed: Option<ComponentExportIndex>,
    /// `send-batch.on-send-batch`, when the component exports it (optional).
    pub send_batch: Option<ComponentExportIndex>,
    /// `deliver-batch.filter-batch`, when the component exports it (optional).
    pub deliver_batch: Option<ComponentExportIndex>,
}

/// The typed exports of one instance.
pub struct Guest {
    pub lifecycle: lifecycle::Guest,
    pub auth: Option<authenticate::Guest>,
    pub send: Option<send::Guest>,
    pub deliver: Option<deliver::Guest>,
    pub send_packed: Option<PackedSend>,
    pub send_batch: Option<BatchSend>,
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
    /// Every instance stayed busy until the deadline.
    Busy,
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
    pub calls: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub memory: AtomicU64,
    pub invalid: AtomicU64,
    pub oversize: AtomicU64,
    pub busy: AtomicU64,
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

/// The warm instances of one plugin.
pub struct Pool {
    pub name: Arc<str>,
    pre: InstancePre<State>,
    exports: Exports,
    config_json: String,
    pub limits: Limits,
    idle: Mutex<Vec<Warm>>,
    permits: Semaphore,
    pub counters: Counters,
}

/// An instance checked out for one call.
pub struct Lease<'a> {
    pub warm: Warm,
    _permit: SemaphorePermit<'a>,
    /// The epoch ticks while the lease lives (the call's deadline needs it).
    _running: Running,
}

impl Pool {
    pub fn new(
        name: Arc<str>,
        pre: InstancePre<State>,
        exports: Exports,
        config_json: String,
        limits: Limits,
    ) -> Pool {
        let permits = Semaphore::new(limits.max_instances);
        Pool {
            name,
            pre,
            exports,
            config_json,
            limits,
            idle: Mutex::new(Vec::new()),
            permits,
            counters: Counters::default(),
        }
    }

    /// Instantiates and initialises a fresh instance; returns its manifest too.
    pub async fn instantiate(&self) -> Result<(Warm, Manifest), String> {
        // The component's start-up code runs under the init deadline.
        let _running = running();
        let state = State {
            plugin: self.name.clone(),
            max_memory: self.limits.max_memory,
            memory_used: 0,
            memory_hit: false,
            ticks_left: ticks_for(self.limits.init_deadline),
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
                deliver_batch: e
                    .deliver_batch
                    .as_ref()
                    .map(|i| BatchFilter::load(&mut *store, &instance, i))
                    .transpose()?,
            })
        };
        let guest = load(&mut store).map_err(|e| format!("{e:#}"))?;
        let mut warm = Warm {
            store,
            guest,
            calls: 0,
        };
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

    /// Adds a fresh instance to the idle set.
    pub fn put_back(&self, warm: Warm) {
        self.idle.lock().expect("pool lock").push(warm);
    }

    /// Whether instances serve `send-packed.on-send-packed`.
    pub fn packs_send(&self) -> bool {
        self.exports.send_packed.is_some()
    }

    /// Whether instances serve `send-batch.on-send-batch`.
    pub fn batches_send(&self) -> bool {
        self.exports.send_batch.is_some()
    }

    /// Whether instances serve `deliver-batch.filter-batch`.
    pub fn batches(&self) -> bool {
        self.exports.deliver_batch.is_some()
    }

    /// Takes an idle instance (or makes one), waiting for a free slot for at most `budget`.
    /// The common case (a free slot) reads no clock and arms no timer.
    pub async fn checkout(&self, hook: Hook, budget: Duration) -> Result<Lease<'_>, Failure> {
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => tokio::time::timeout(budget, self.permits.acquire())
                .await
                .map_err(|_| {
                    self.fail(
                        hook,
                        Failure::new(FailureKind::Busy, "no free instance before the deadline"),
                    )
                })?
                .expect("the pool's semaphore is never closed"),
        };
        let idle = self.idle.lock().expect("pool lock").pop();
        let warm = match idle {
            Some(warm) => warm,
            None => {
                self.instantiate()
                    .await
                    .map_err(|e| {
                        self.fail(
                            hook,
                            Failure::new(FailureKind::Trap, format!("instantiating: {e}")),
                        )
                    })?
                    .0
            }
        };
        Ok(Lease {
            warm,
            _permit: permit,
            _running: running(),
        })
    }

    /// Ends a call: returns the instance to the pool on success, discards it on failure (logged
    /// and counted).
    pub fn finish<T>(
        &self,
        hook: Hook,
        lease: Lease<'_>,
        result: Result<T, Failure>,
    ) -> Result<T, Failure> {
        self.counters.calls.fetch_add(1, Relaxed);
        let mut warm = lease.warm;
        match result {
            Ok(value) => {
                warm.calls += 1;
                // Guest heaps rarely shrink: replace an instance that grew past 3/4 of its cap
                // before it fails a call, and one that served its configured number of calls.
                let grown = warm.store.data().memory_used > self.limits.max_memory / 4 * 3;
                if grown || self.limits.recycle_after.is_some_and(|n| warm.calls >= n) {
                    self.counters.recycled.fetch_add(1, Relaxed);
                } else {
                    self.idle.lock().expect("pool lock").push(warm);
                }
                Ok(value)
            }
            Err(failure) => {
                self.counters.recycled.fetch_add(1, Relaxed);
                Err(self.fail(hook, failure))
            }
        }
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
        };
        counter.fetch_add(1, Relaxed);
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
