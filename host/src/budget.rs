//! The broker-wide memory budget, in bytes (`[limits] max_memory_bytes`), and each principal's
//! share of it (`max_memory_bytes_per_principal`).
//!
//! What clients make the broker hold is charged to one [`MemoryBudget`]: every byte a
//! connection reads is charged as it arrives; when a frame is complete its charge moves to the
//! frame, and from a SEND's frame to the message it becomes, which may then sit in queues,
//! outboxes, transactions and dead-letter queues: the charge lives as long as the message and
//! is released when its last copy is gone. A [`Charge`] releases its bytes when dropped. Once a
//! connection is authenticated its charges also count against its principal's [`Account`], so
//! that one principal filling queues nobody reads cannot take the whole budget.
//!
//! Producers are paused before a limit is exceeded, with nothing dropped: a SEND that arrives
//! while the broker (or the sender's principal) is over its limit waits (its connection stops
//! being read: TCP backpressure on the producer) until usage is back below the resume mark,
//! and so does a connection in the middle of a large frame. Consumers are never paused, so the
//! ACKs that free memory keep flowing. RabbitMQ's memory high watermark and ActiveMQ's
//! `memoryUsage` are the peers' broker-wide equivalents.
//!
//! The meters are shared by every thread, and a byte count written from two cores on every
//! read and every release moves its cache line between them for each message (a build
//! without the updates took 0.80 of the CPU per message with 4 producers and 4 acking
//! consumers on 2 cores, in a run that resolves no better than ±15 %: docs/benchmarks.md).
//! So each thread batches its changes while a meter is below half its limit: up to
//! [`BATCH_MAX`] (or a 1024th of the limit, if smaller) is kept in the thread's own
//! `Pending` batch before it is added to the meter. At or above half the limit every change goes
//! straight to the meter (and takes the thread's batch with it), so pausing and resuming
//! producers near the limit see exact counts, except for what other threads still hold in
//! their batches: at most a batch per thread, in either direction. Reading a meter takes the
//! reading thread's own batch with it first, and the broker's workers hand theirs over
//! whenever they run out of work ([`flush_thread`]), so an idle broker's count is exact.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::config::defaults;

/// Producers paused at a limit resume once usage is below this fraction of it (hysteresis,
/// so a broker at its limit does not pause and resume producers on every message).
const RESUME_PERCENT: u64 = 95;
/// When the machine's memory cannot be read.
const FALLBACK_BYTES: u64 = 1 << 30;
/// The account table is pruned of accounts nobody holds once it has this many entries more
/// than at the last pruning.
const PRUNE_EVERY: usize = 1024;
/// The most a thread keeps in its batch for one meter before adding it to the meter.
pub const BATCH_MAX: u64 = 256 * 1024;

/// Bytes used against a limit, with the pause/resume state.
///
/// `used` changes with every frame read and every message freed, from every thread; it has a
/// cache line of its own so that the fields read on every message (`over`, the limits) and the
/// `Arc` count before it do not move between cores with it (measured: 4 % of the broker's CPU
/// per message with 4 producers and 4 consumers of one principal).
#[derive(Debug)]
struct Meter {
    /// Signed: with batches (see the module doc) a release can reach it before the addition
    /// it undoes, taking it below zero for a while; reads count that as 0.
    used: OwnLine<AtomicI64>,
    limit: u64,
    resume: u64,
    /// Changes smaller than this are batched per thread while usage is below `direct_from`.
    batch: u64,
    /// From here (half the limit) every change goes straight to `used`.
    direct_from: u64,
    /// Set when usage reached the limit; cleared below the resume mark.
    over: AtomicBool,
    /// Wakes paused producers.
    room: Notify,
}

impl Meter {
    fn new(limit: u64) -> Meter {
        let limit = limit.max(1);
        Meter {
            limit,
            resume: limit / 100 * RESUME_PERCENT,
            batch: (limit / 1024).min(BATCH_MAX),
            direct_from: limit / 2,
            used: OwnLine(AtomicI64::new(0)),
            over: AtomicBool::new(false),
            room: Notify::new(),
        }
    }

    /// Adds `bytes`; true when this made it cross its limit.
    fn add(&self, bytes: u64) -> bool {
        let bytes = to_signed(bytes);
        let used = self
            .used
            .0
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes);
        u64::try_from(used).is_ok_and(|used| used >= self.limit)
            && !self.over.swap(true, Ordering::AcqRel)
    }

    /// Takes `bytes` off; true when this brought it below its resume mark.
    fn sub(&self, bytes: u64) -> bool {
        let bytes = to_signed(bytes);
        let used = self
            .used
            .0
            .fetch_sub(bytes, Ordering::Relaxed)
            .saturating_sub(bytes);
        if u64::try_from(used).map_or(true, |used| used < self.resume)
            && self.over.load(Ordering::Relaxed)
            && self.over.swap(false, Ordering::AcqRel)
        {
            self.room.notify_waiters();
            return true;
        }
        false
    }

    fn is_over(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// Whether a change of `delta` may wait in a thread's batch.
    fn may_batch(&self, delta: i64) -> bool {
        delta.unsigned_abs() < self.batch && self.read() < self.direct_from
    }

    /// Bytes used (a transient negative count as 0).
    fn read(&self) -> u64 {
        u64::try_from(self.used.0.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

/// A byte count as a change of a meter (no count comes near `i64::MAX`).
fn to_signed(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// A value alone in its cache line (128 bytes: adjacent-line prefetching pairs 64-byte lines).
#[derive(Debug)]
#[repr(align(128))]
struct OwnLine<T>(T);

/// The broker-wide memory budget.
#[derive(Debug)]
pub struct MemoryBudget {
    total: Meter,
    per_principal: u64,
    accounts: Mutex<Accounts>,
    /// Producers waiting now (a gauge).
    pub paused: AtomicU64,
    /// Producer pauses since start (a counter).
    pub pauses: AtomicU64,
}

#[derive(Debug, Default)]
struct Accounts {
    by_name: HashMap<String, Weak<Account>>,
    pruned_at: usize,
}

/// One principal's share of the budget.
#[derive(Debug)]
pub struct Account {
    name: String,
    meter: Meter,
    budget: Arc<MemoryBudget>,
}

/// Memory held against the budget, released when dropped: bytes charged directly (a
/// plugin's fan-out copy, a dead-letter copy, a recovered message), or a frame's share of the
/// read buffer it is a slice of.
#[derive(Debug, Default)]
pub struct Charge(Option<Held>);

#[derive(Debug)]
enum Held {
    Bytes {
        payer: Payer,
        bytes: u64,
    },
    /// Held for its drop: the buffer is released when its last share goes.
    Buffer {
        _buffer: Arc<BufferCharge>,
    },
}

/// What bytes count against: the budget alone, or a principal's account (and so the budget
/// too).
#[derive(Debug)]
enum Payer {
    Budget(Arc<MemoryBudget>),
    Account(Arc<Account>),
}

impl Payer {
    fn add(&self, bytes: u64) {
        self.change(to_signed(bytes));
    }

    fn release(&self, bytes: u64) {
        self.change(-to_signed(bytes));
    }

    /// Adds `delta` to the meters, through this thread's batch while they are far from their
    /// limits.
    fn change(&self, delta: i64) {
        let may_batch = match self {
            Payer::Budget(budget) => budget.total.may_batch(delta),
            Payer::Account(account) => {
                account.meter.may_batch(delta) && account.budget.total.may_batch(delta)
            }
        };
        let batched = PENDING
            .try_with(|pending| match pending.try_borrow_mut() {
                Ok(mut pending) => pending.note(self, delta, may_batch),
                // Re-entered while flushing (cannot happen today): straight to the meters.
                Err(_) => false,
            })
            .unwrap_or(false);
        if !batched {
            self.apply(delta);
        }
    }

    /// Adds `delta` to the meters themselves.
    fn apply(&self, delta: i64) {
        let bytes = delta.unsigned_abs();
        match (self, delta > 0) {
            (_, _) if delta == 0 => {}
            (Payer::Budget(budget), true) => budget.add(bytes),
            (Payer::Budget(budget), false) => budget.release(bytes),
            (Payer::Account(account), true) => {
                account.budget.add(bytes);
                account.add(bytes);
            }
            (Payer::Account(account), false) => {
                if account.meter.sub(bytes) {
                    tracing::info!(principal = %account.name, "a principal is below its share of the memory budget: its producers resume");
                }
                account.budget.release(bytes);
            }
        }
    }
}

thread_local! {
    /// This thread's batched changes (see the module doc).
    static PENDING: RefCell<Pending> = const {
        RefCell::new(Pending {
            budget: None,
            account: None,
        })
    };
}

/// Hands this thread's batch to the meters (a worker about to wait for work calls it).
pub fn flush_thread() {
    Pending::with_this_thread(|pending| {
        Pending::flush(&mut pending.budget, Payer::Budget);
        Pending::flush(&mut pending.account, Payer::Account);
    });
}

/// A thread's changes not yet added to the meters: one slot for the budget alone, one for a
/// principal's account (and the budget through it). A change for another budget or account
/// first empties the slot.
struct Pending {
    budget: Option<(Arc<MemoryBudget>, i64)>,
    account: Option<(Arc<Account>, i64)>,
}

impl Pending {
    /// Takes `delta` for `payer` into its slot; false when it is to be applied directly (the
    /// slot, if it held the same payer, has been applied first, so the order is kept).
    fn note(&mut self, payer: &Payer, delta: i64, may_batch: bool) -> bool {
        match payer {
            Payer::Budget(budget) => Self::note_in(
                &mut self.budget,
                budget,
                delta,
                may_batch,
                |b| b.total.batch,
                Payer::Budget,
            ),
            Payer::Account(account) => Self::note_in(
                &mut self.account,
                account,
                delta,
                may_batch,
                |a| a.meter.batch.min(a.budget.total.batch),
                Payer::Account,
            ),
        }
    }

    fn note_in<T>(
        slot: &mut Option<(Arc<T>, i64)>,
        owner: &Arc<T>,
        delta: i64,
        may_batch: bool,
        batch: impl Fn(&T) -> u64,
        payer: fn(Arc<T>) -> Payer,
    ) -> bool {
        let same = slot
            .as_ref()
            .is_some_and(|(held, _)| Arc::ptr_eq(held, owner));
        if !may_batch {
            if same {
                Self::flush(slot, payer);
            }
            return false;
        }
        if !same {
            Self::flush(slot, payer);
            *slot = Some((owner.clone(), 0));
        }
        let (held, pending) = slot.as_mut().expect("filled above");
        *pending += delta;
        if pending.unsigned_abs() >= batch(held) {
            let whole = std::mem::take(pending);
            payer(held.clone()).apply(whole);
        }
        true
    }

    /// Applies and empties `slot`.
    fn flush<T>(slot: &mut Option<(Arc<T>, i64)>, payer: fn(Arc<T>) -> Payer) {
        if let Some((held, pending)) = slot.take() {
            payer(held).apply(pending);
        }
    }

    /// Runs `f` on this thread's batch (not while it is being flushed, nor once the thread's
    /// locals are gone).
    fn with_this_thread(f: impl FnOnce(&mut Pending)) {
        let _ = PENDING.try_with(|pending| {
            if let Ok(mut pending) = pending.try_borrow_mut() {
                f(&mut pending);
            }
        });
    }

    /// Applies this thread's batch for the budget at `budget`, and for any account of it.
    fn flush_budget(budget: *const MemoryBudget) {
        Self::with_this_thread(|pending| {
            if let Some((b, _)) = &pending.budget {
                if Arc::as_ptr(b) == budget {
                    Self::flush(&mut pending.budget, Payer::Budget);
                }
            }
            if let Some((a, _)) = &pending.account {
                if Arc::as_ptr(&a.budget) == budget {
                    Self::flush(&mut pending.account, Payer::Account);
                }
            }
        });
    }

    /// Applies this thread's batch for the account at `account`.
    fn flush_account(account: *const Account) {
        Self::with_this_thread(|pending| {
            if let Some((a, _)) = &pending.account {
                if Arc::as_ptr(a) == account {
                    Self::flush(&mut pending.account, Payer::Account);
                }
            }
        });
    }
}

impl Drop for Pending {
    /// A thread that ends hands its batch to the meters.
    fn drop(&mut self) {
        Self::flush(&mut self.budget, Payer::Budget);
        Self::flush(&mut self.account, Payer::Account);
    }
}

/// The bytes read into one read buffer, charged as they arrive and released together when the
/// buffer's memory is freed: when the reader has moved on to another buffer and the last frame
/// that is a slice of it is gone. That is the memory the buffer really holds (a frame kept in a
/// queue keeps its whole buffer), and it keeps the shared counters off the per-message path:
/// each frame holds the buffer's charge by one reference, local to its connection, and the
/// budget and the account are written once per read and once per buffer.
#[derive(Debug)]
pub struct BufferCharge {
    payer: Payer,
    bytes: AtomicU64,
}

impl BufferCharge {
    /// A buffer charged to the budget alone (its principal not known yet).
    pub fn to_budget(budget: &Arc<MemoryBudget>, bytes: u64) -> Arc<BufferCharge> {
        BufferCharge::new(Payer::Budget(budget.clone()), bytes)
    }

    /// A buffer charged to `account` (and the budget).
    pub fn to_account(account: &Arc<Account>, bytes: u64) -> Arc<BufferCharge> {
        BufferCharge::new(Payer::Account(account.clone()), bytes)
    }

    fn new(payer: Payer, bytes: u64) -> Arc<BufferCharge> {
        if bytes > 0 {
            payer.add(bytes);
        }
        Arc::new(BufferCharge {
            payer,
            bytes: AtomicU64::new(bytes),
        })
    }

    /// Charges `bytes` more read into this buffer.
    pub fn grow(&self, bytes: u64) {
        self.payer.add(bytes);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The buffer is reused in place (nothing else refers to it): only its `bytes` remain
    /// charged.
    pub fn reset(&mut self, bytes: u64) {
        let held = self.bytes.get_mut();
        if *held > bytes {
            self.payer.release(*held - bytes);
        } else if bytes > *held {
            self.payer.add(bytes - *held);
        }
        *held = bytes;
    }

    /// Bytes charged.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A frame's share: a reference to this buffer's charge.
    pub fn share(self: &Arc<Self>) -> Charge {
        Charge(Some(Held::Buffer {
            _buffer: self.clone(),
        }))
    }
}

impl Drop for BufferCharge {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        if bytes > 0 {
            self.payer.release(bytes);
        }
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes, of which one principal may hold `per_principal` (0: half).
    pub fn new(limit: u64, per_principal: u64) -> Arc<MemoryBudget> {
        let per_principal = match per_principal {
            0 => limit / 100 * defaults::PRINCIPAL_MEMORY_PERCENT,
            bytes => bytes,
        };
        Arc::new(MemoryBudget {
            total: Meter::new(limit),
            per_principal,
            accounts: Mutex::default(),
            paused: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
        })
    }

    /// A budget that never pauses anyone (tests).
    pub fn unlimited() -> Arc<MemoryBudget> {
        MemoryBudget::new(u64::MAX, u64::MAX)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.total.limit
    }

    /// What one principal may hold.
    pub fn per_principal(&self) -> u64 {
        self.per_principal
    }

    /// Bytes charged now (this thread's batch included; other threads' batches not: see the
    /// module doc).
    pub fn used(&self) -> u64 {
        Pending::flush_budget(self);
        self.total.read()
    }

    /// Whether producers are to be paused now.
    pub fn is_over(&self) -> bool {
        self.total.is_over()
    }

    /// Charges `bytes` whatever the usage (the caller has already been admitted, or cannot
    /// wait: bytes read from a socket, a message read back from the journal).
    pub fn charge(self: &Arc<Self>, bytes: u64) -> Charge {
        if bytes == 0 {
            return Charge::default();
        }
        let payer = Payer::Budget(self.clone());
        payer.add(bytes);
        Charge(Some(Held::Bytes { payer, bytes }))
    }

    fn add(&self, bytes: u64) {
        if self.total.add(bytes) {
            tracing::warn!(
                used = self.total.read(),
                limit = self.limit(),
                "memory budget reached: producers are paused until consumers catch up"
            );
        }
    }

    fn release(&self, bytes: u64) {
        if self.total.sub(bytes) {
            tracing::info!(
                used = self.total.read(),
                limit = self.limit(),
                "memory below the resume mark: producers resume"
            );
        }
    }

    /// The account of principal `name` (the one all its connections share).
    pub fn account(self: &Arc<Self>, name: &str) -> Arc<Account> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(account) = accounts.by_name.get(name).and_then(Weak::upgrade) {
            return account;
        }
        if accounts.by_name.len() >= accounts.pruned_at + PRUNE_EVERY {
            accounts.by_name.retain(|_, weak| weak.strong_count() > 0);
            accounts.pruned_at = accounts.by_name.len();
        }
        let account = Arc::new(Account {
            name: name.to_string(),
            meter: Meter::new(self.per_principal),
            budget: self.clone(),
        });
        accounts
            .by_name
            .insert(name.to_string(), Arc::downgrade(&account));
        account
    }

    /// Waits while the budget, or `account`, is over its limit (a producer paused by
    /// backpressure).
    pub async fn wait_for_room(&self, account: Option<&Account>) {
        let over = || self.is_over() || account.is_some_and(|a| a.meter.is_over());
        if !over() {
            return;
        }
        self.paused.fetch_add(1, Ordering::Relaxed);
        self.pauses.fetch_add(1, Ordering::Relaxed);
        loop {
            let total = self.total.room.notified();
            tokio::pin!(total);
            total.as_mut().enable();
            let own = account.map(|a| a.meter.room.notified());
            tokio::pin!(own);
            if let Some(own) = own.as_mut().as_pin_mut() {
                own.enable();
            }
            if !over() {
                break;
            }
            match own.as_mut().as_pin_mut() {
                Some(own) => {
                    tokio::select! {
                        _ = total => {}
                        _ = own => {}
                    }
                }
                None => total.await,
            }
        }
        self.paused.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Account {
    /// Charges `bytes` to the budget and to this account.
    pub fn charge(self: &Arc<Self>, bytes: u64) -> Charge {
        if bytes == 0 {
            return Charge::default();
        }
        let payer = Payer::Account(self.clone());
        payer.add(bytes);
        Charge(Some(Held::Bytes { payer, bytes }))
    }

    /// Adds `bytes` to this principal's meter (not to the budget's).
    fn add(&self, bytes: u64) {
        if self.meter.add(bytes) {
            tracing::info!(
                principal = %self.name,
                limit = self.meter.limit,
                "a principal reached its share of the memory budget: its producers are paused"
            );
        }
    }

    /// Bytes this principal holds now (this thread's batch included, as for the budget).
    pub fn used(&self) -> u64 {
        Pending::flush_account(self);
        self.meter.read()
    }
}

impl Charge {
    /// Bytes held by this charge itself (a frame's share of its read buffer holds none: the
    /// buffer's charge holds them).
    pub fn bytes(&self) -> u64 {
        match &self.0 {
            Some(Held::Bytes { bytes, .. }) => *bytes,
            Some(Held::Buffer { .. }) | None => 0,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        // A buffer's share releases nothing itself: the buffer does when its last share goes.
        if let Some(Held::Bytes { payer, bytes }) = &self.0 {
            payer.release(*bytes);
        }
    }
}

/// The default `max_memory_bytes`: 40 % of the machine's memory, or of the cgroup limit when
/// that is lower.
pub fn default_limit() -> u64 {
    let machine = meminfo_total().unwrap_or(FALLBACK_BYTES);
    let available = cgroup_limit().map_or(machine, |cgroup| cgroup.min(machine));
    available / 100 * defaults::MEMORY_PERCENT
}

fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn cgroup_limit() -> Option<u64> {
    // cgroup v2, then v1; "max" or a huge number mean no limit.
    for path in [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(bytes) = text.trim().parse::<u64>() {
                if bytes < (1 << 60) {
                    return Some(bytes);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn charges_are_released_when_dropped() {
        let budget = MemoryBudget::new(1000, 0);
        let a = budget.charge(300);
        let b = budget.charge(100);
        assert_eq!((a.bytes(), b.bytes(), budget.used()), (300, 100, 400));
        drop(b);
        assert_eq!(budget.used(), 300);
        drop(a);
        assert_eq!(budget.used(), 0);
        assert_eq!(budget.charge(0).bytes(), 0);
    }

    #[test]
    fn a_principals_charges_count_against_its_account_too() {
        let budget = MemoryBudget::new(1000, 400);
        let account = budget.account("mallory");
        assert!(Arc::ptr_eq(&account, &budget.account("mallory")));
        let charge = account.charge(50);
        let other = budget.charge(25);
        assert_eq!((account.used(), budget.used()), (50, 75));
        drop((charge, other));
        assert_eq!((account.used(), budget.used()), (0, 0));
    }

    #[test]
    fn a_buffer_is_released_when_its_last_frame_is_gone() {
        let budget = MemoryBudget::new(1000, 400);
        let account = budget.account("carol");
        let early = BufferCharge::to_budget(&budget, 10);
        early.grow(20);
        assert_eq!((early.bytes(), budget.used(), account.used()), (30, 30, 0));
        let buffer = BufferCharge::to_account(&account, 5);
        buffer.grow(15);
        assert_eq!((budget.used(), account.used()), (50, 20));
        // Frames hold shares; the buffer's bytes stay charged while one of them lives.
        let (first, second) = (buffer.share(), buffer.share());
        assert_eq!(first.bytes(), 0);
        drop(first);
        let mut reader_only = buffer.clone();
        drop(buffer);
        assert_eq!((budget.used(), account.used()), (50, 20));
        drop(second);
        assert_eq!(account.used(), 20, "the reader still holds it");
        // Reused in place: only what is still buffered stays charged.
        Arc::get_mut(&mut reader_only).unwrap().reset(4);
        assert_eq!((budget.used(), account.used()), (34, 4));
        drop((early, reader_only));
        assert_eq!((budget.used(), account.used()), (0, 0));
    }

    #[tokio::test]
    async fn producers_pause_at_the_limit_and_resume_below_the_mark() {
        let budget = MemoryBudget::new(1000, 0);
        let held = budget.charge(990);
        budget.wait_for_room(None).await; // under the limit: no wait
        let more = budget.charge(20);
        assert!(budget.is_over());
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.wait_for_room(None).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert_eq!(budget.paused.load(Ordering::Relaxed), 1);
        drop(more); // 990: above the resume mark (950)
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("resumed")
            .unwrap();
        assert_eq!(budget.paused.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_principal_over_its_share_is_paused_alone() {
        let budget = MemoryBudget::new(1000, 300);
        let greedy = budget.account("greedy");
        let honest = budget.account("honest");
        let hoard = greedy.charge(310);
        assert!(!budget.is_over());
        // The honest principal is not paused...
        tokio::time::timeout(
            Duration::from_millis(100),
            budget.wait_for_room(Some(&honest)),
        )
        .await
        .expect("not paused");
        // ...the greedy one is, until its own messages are consumed.
        let waiter = {
            let (budget, greedy) = (budget.clone(), greedy.clone());
            tokio::spawn(async move { budget.wait_for_room(Some(&greedy)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(hoard);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("resumed")
            .unwrap();
    }

    /// Runs `work` on a thread of its own that stays alive until the returned sender is
    /// dropped (so its batch is not handed over by its end).
    fn on_other_thread(
        work: impl FnOnce() -> Vec<Charge> + Send + 'static,
    ) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let held = work();
            ready.send(()).unwrap();
            let _ = wait.recv();
            drop(held);
        });
        started.recv().unwrap();
        (done, thread)
    }

    #[test]
    fn small_changes_wait_in_their_threads_batch_far_from_the_limit() {
        let budget = MemoryBudget::new(1 << 30, 0); // batches of 256 KiB below 512 MiB
        let account = budget.account("alice");
        let (b, a) = (budget.clone(), account.clone());
        let (done, thread) = on_other_thread(move || vec![b.charge(1000), a.charge(2000)]);
        // Still in the other thread's batches: not on the shared meters yet.
        assert_eq!((budget.used(), account.used()), (0, 0));
        // The thread releases its charges and ends: nothing is left over, nothing counted twice.
        drop(done);
        thread.join().unwrap();
        assert_eq!((budget.used(), account.used()), (0, 0));
        // A batch that reaches its size goes to the meters at once.
        let (b, a) = (budget.clone(), account.clone());
        let (done, thread) = on_other_thread(move || {
            (0..300)
                .map(|_| a.charge(1024))
                .chain([b.charge(7)])
                .collect()
        });
        let used = account.used();
        assert!((BATCH_MAX..=300 * 1024).contains(&used), "{used}");
        assert_eq!(
            budget.used(),
            used,
            "the account's bytes count for the budget too"
        );
        drop(done);
        thread.join().unwrap();
        assert_eq!((budget.used(), account.used()), (0, 0));
        // The reading thread's own batch is read with the meter.
        let own = account.charge(10);
        assert_eq!((budget.used(), account.used()), (10, 10));
        drop(own);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_release_that_reaches_the_meter_before_its_addition_pauses_no_one() {
        let budget = MemoryBudget::new(1 << 30, 0);
        let account = budget.account("bob");
        let (sent, received) = std::sync::mpsc::channel();
        let a = account.clone();
        // Charged on one thread (still in its batch), released on this one and read here
        // first: the meters go below zero for a while.
        let (done, thread) = on_other_thread(move || {
            sent.send(a.charge(1000)).unwrap();
            Vec::new()
        });
        drop(received.recv().unwrap());
        assert_eq!((budget.used(), account.used()), (0, 0));
        let more = account.charge(10);
        assert_eq!((budget.used(), account.used()), (0, 0));
        assert!(!budget.is_over() && !account.meter.is_over());
        drop(done);
        thread.join().unwrap();
        assert_eq!((budget.used(), account.used()), (10, 10));
        drop(more);
        assert_eq!((budget.used(), account.used()), (0, 0));
        assert!(!budget.is_over() && !account.meter.is_over());
    }

    #[test]
    fn a_thread_hands_its_batch_over_when_it_runs_out_of_work() {
        let budget = MemoryBudget::new(1 << 30, 0);
        let account = budget.account("carol");
        let (b, a) = (budget.clone(), account.clone());
        // What a broker worker does before it parks (`on_thread_park`).
        let (done, thread) = on_other_thread(move || {
            let held = vec![b.charge(100), a.charge(200)];
            flush_thread();
            held
        });
        assert_eq!((budget.used(), account.used()), (300, 200));
        drop(done);
        thread.join().unwrap();
        assert_eq!((budget.used(), account.used()), (0, 0));
    }

    #[test]
    fn changes_near_the_limit_go_straight_to_the_meter() {
        let budget = MemoryBudget::new(1 << 30, 1 << 30);
        let bulk = budget.charge(600 << 20); // above half the limit; and larger than a batch
        assert_eq!(budget.used(), 600 << 20);
        let b = budget.clone();
        let (done, thread) = on_other_thread(move || vec![b.charge(10)]);
        assert_eq!(
            budget.used(),
            (600 << 20) + 10,
            "seen at once from another thread"
        );
        drop(done);
        thread.join().unwrap();
        drop(bulk);
        assert_eq!(budget.used(), 0);
        // A small limit has no batches at all.
        let small = MemoryBudget::new(1000, 0);
        let s = small.clone();
        let (done, thread) = on_other_thread(move || vec![s.charge(1)]);
        assert_eq!(small.used(), 1);
        drop(done);
        thread.join().unwrap();
        assert_eq!(small.used(), 0);
    }

    #[test]
    fn the_default_is_a_share_of_the_machine() {
        let limit = default_limit();
        assert!(limit >= 1 << 20, "{limit}");
        assert!(limit <= meminfo_total().unwrap_or(FALLBACK_BYTES));
        assert_eq!(MemoryBudget::new(1000, 0).per_principal(), 500);
    }
}
