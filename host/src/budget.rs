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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Bytes used against a limit, with the pause/resume state.
///
/// `used` changes with every frame read and every message freed, from every thread; it has a
/// cache line of its own so that the fields read on every message (`over`, the limits) and the
/// `Arc` count before it do not move between cores with it (measured: 4 % of the broker's CPU
/// per message with 4 producers and 4 consumers of one principal).
#[derive(Debug)]
struct Meter {
    used: OwnLine<AtomicU64>,
    limit: u64,
    resume: u64,
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
            used: OwnLine(AtomicU64::new(0)),
            over: AtomicBool::new(false),
            room: Notify::new(),
        }
    }

    /// Adds `bytes`; true when this made it cross its limit.
    fn add(&self, bytes: u64) -> bool {
        let used = self.used.0.fetch_add(bytes, Ordering::Relaxed) + bytes;
        used >= self.limit && !self.over.swap(true, Ordering::AcqRel)
    }

    /// Takes `bytes` off; true when this brought it below its resume mark.
    fn sub(&self, bytes: u64) -> bool {
        let used = self.used.0.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        if used < self.resume
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
        match self {
            Payer::Budget(budget) => budget.add(bytes),
            Payer::Account(account) => {
                account.budget.add(bytes);
                account.add(bytes);
            }
        }
    }

    fn release(&self, bytes: u64) {
        match self {
            Payer::Budget(budget) => budget.release(bytes),
            Payer::Account(account) => {
                if account.meter.sub(bytes) {
                    tracing::info!(principal = %account.name, "a principal is below its share of the memory budget: its producers resume");
                }
                account.budget.release(bytes);
            }
        }
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

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.total.used.0.load(Ordering::Relaxed)
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
                used = self.used(),
                limit = self.limit(),
                "memory budget reached: producers are paused until consumers catch up"
            );
        }
    }

    fn release(&self, bytes: u64) {
        if self.total.sub(bytes) {
            tracing::info!(
                used = self.used(),
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

    /// Bytes this principal holds now.
    pub fn used(&self) -> u64 {
        self.meter.used.0.load(Ordering::Relaxed)
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

    #[test]
    fn the_default_is_a_share_of_the_machine() {
        let limit = default_limit();
        assert!(limit >= 1 << 20, "{limit}");
        assert!(limit <= meminfo_total().unwrap_or(FALLBACK_BYTES));
        assert_eq!(MemoryBudget::new(1000, 0).per_principal(), 500);
    }
}
