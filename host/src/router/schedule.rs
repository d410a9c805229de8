//! Scheduled delivery: messages sent with a delay, an absolute time or a period wait here,
//! outside their queue or topic, until due (the headers are read in
//! [`schedule_headers`](super::schedule_headers)).
//!
//! One binary heap ordered by due time holds them all, behind one lock, and one task
//! ([`Scheduler::run`]) drives it: it pops what is due (at most [`BATCH`] per turn), publishes
//! it, and sleeps until the next due time (at most [`MAX_SLEEP`], so a change of the wall
//! clock is noticed) or until a message due earlier arrives. A turn costs O(k log n) for the
//! k messages due among n scheduled, nothing per message not due: no timer per message.
//!
//! Scheduled messages keep their memory charge (they count against the memory budget like
//! queued ones) and count against `schedule.max_messages` and `schedule.max_per_principal`.
//! A persistent one bound for a `/queue/` or `/topic/` is journaled as a scheduled enqueue
//! record when it is scheduled (so its RECEIPT means "stored", not "delivered") and settled
//! once its queue journaled it on delivery; after a restart it is due at the same time, and
//! delivered at once if that passed while the broker was down. A crash in the instant between
//! the queue's record and the settle can deliver it twice, never not at all.
//!
//! Repeats (`AMQ_SCHEDULED_PERIOD` + `AMQ_SCHEDULED_REPEAT`, as ActiveMQ: repeat N means N + 1
//! deliveries) re-enter the heap once the previous delivery is published, due one period after
//! the previous due time (or after now, when the broker was down meanwhile: missed repeats are
//! not delivered in a burst); a persistent one's record is replaced by the next one's in the
//! same journal batch. Each repeat is a copy with its own `message-id` (`<id>` then
//! `<prefix>.r<k>-<seq>`).
//!
//! The heap also times a redeliver plugin's delays ([`Scheduler::schedule_return`]): such an
//! entry names a message that waits in its queue's deciding set (held, journaled there) and,
//! when due, puts it back in its place; it is not counted against the scheduler's caps.
//!
//! A due message goes to its queue without waiting when the queue has room; a full queue (or a
//! topic, whose slow subscribers may hold a publisher up) gets it from a task of its own, so
//! one full queue never holds up the others' scheduled messages. In cluster mode a due message
//! the cluster does not take (NATS unreachable) stays scheduled, journal record and all, and is
//! tried again with a growing pause (`Scheduler::retry`).

use std::cmp::Ordering as Order;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::budget::MemoryBudget;
use crate::config::ScheduleConfig;
use crate::store::record::{Enqueue, ScheduledFields};
use crate::store::Store;
use crate::text::shown;

use super::message::{now_ms, Message};
use super::schedule_headers::{Schedule, ScheduleError};
use super::{publish, Destination, Published, QUEUE_PREFIX, TOPIC_PREFIX};

/// Most messages published per turn of the driver before it yields to other tasks.
pub const BATCH: usize = 1024;
/// Longest sleep of the driver, in ms.
pub const MAX_SLEEP: Duration = Duration::from_secs(1);
/// The first wait before a due message the cluster did not take is tried again (doubling).
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries of a due message the cluster did not take.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A message waiting in the scheduler.
#[derive(Debug)]
struct Entry {
    due: u64,
    /// Arrival order: entries due at the same ms leave in the order they came.
    seq: u64,
    target: Destination,
    /// The message as sent; repeats are copies of it.
    message: Arc<Message>,
    period_ms: u64,
    repeats_left: u32,
    /// Deliveries made so far.
    delivered: u32,
    /// Its journal id (0: not journaled).
    journal: u64,
    owner: Arc<str>,
    /// A redeliver plugin's delay: the token of the message in its queue's deciding set.
    returns: Option<u64>,
    /// Publishes of this delivery the cluster did not acknowledge (see [`Scheduler::retry`]).
    attempts: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<Order> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed: the heap's top is the earliest due.
    fn cmp(&self, other: &Entry) -> Order {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

#[derive(Debug, Default)]
struct State {
    heap: BinaryHeap<Entry>,
    /// Messages scheduled per principal.
    per_owner: HashMap<Arc<str>, usize>,
    next_seq: u64,
}

/// Counters for status output.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Messages taken in (a SEND's, a transaction's at COMMIT, read back from the journal).
    pub scheduled: AtomicU64,
    /// Deliveries made (each repeat counts).
    pub delivered: AtomicU64,
    /// Scheduled messages read back from the journal at start-up.
    pub recovered: AtomicU64,
    /// Due messages the cluster did not take (cluster mode: NATS unreachable), kept and tried
    /// again later.
    pub retried: AtomicU64,
}

/// The broker's scheduler.
#[derive(Debug)]
pub struct Scheduler {
    state: Mutex<State>,
    /// Wakes the driver when a message due before the earliest one arrives.
    wake: Notify,
    config: ScheduleConfig,
    store: Option<Arc<Store>>,
    budget: Arc<MemoryBudget>,
    /// Counters, for status output.
    pub stats: SchedulerStats,
}

/// A message and the schedule it is to be delivered on, as [`Scheduler::restore`] takes it.
#[derive(Debug)]
pub struct Restored {
    /// Where it goes when due.
    pub target: Destination,
    /// The message as sent.
    pub message: Arc<Message>,
    /// Its schedule as journaled.
    pub fields: ScheduledFields,
    /// Its journal id.
    pub journal: u64,
}

impl Scheduler {
    /// An empty scheduler within `config`, journaling in `store`, charging repeats' copies to
    /// `budget`.
    pub fn new(
        config: ScheduleConfig,
        store: Option<Arc<Store>>,
        budget: Arc<MemoryBudget>,
    ) -> Scheduler {
        Scheduler {
            state: Mutex::default(),
            wake: Notify::new(),
            config,
            store,
            budget,
            stats: SchedulerStats::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.lock().heap.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that `owner` may schedule `count` more messages now.
    pub fn check_room(&self, owner: &str, count: usize) -> Result<(), ScheduleError> {
        check_room(&self.lock(), &self.config, owner, count)
    }

    /// Takes `plan` (a SEND's routed copies) in, to be delivered on `schedule`. With
    /// `enforce_caps`, refused (nothing taken) when it would take the scheduler or `owner`
    /// past their caps; a COMMIT schedules what its SENDs were admitted with, caps or not.
    pub fn schedule(
        &self,
        plan: Vec<(Destination, Arc<Message>)>,
        schedule: Schedule,
        owner: &str,
        enforce_caps: bool,
    ) -> Result<(), ScheduleError> {
        let mut state = self.lock();
        if enforce_caps {
            check_room(&state, &self.config, owner, plan.len())?;
        }
        let earliest = state.heap.peek().map(|e| e.due);
        let owner = intern(&mut state, owner);
        for (target, message) in plan {
            let mut fields = ScheduledFields {
                deliver_at: schedule.deliver_at,
                period_ms: schedule.period_ms,
                repeats_left: schedule.repeat,
                delivered: 0,
                owner: Bytes::new(),
            };
            let journal = self.journal(&target, &message, &mut fields, &owner);
            self.push(&mut state, target, message, &fields, journal, owner.clone());
        }
        drop(state);
        if earliest.is_none_or(|at| schedule.deliver_at < at) {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Puts back a scheduled message read from the journal (no cap applies: it was admitted).
    pub fn restore(&self, restored: Restored) {
        let mut state = self.lock();
        let owner = intern(&mut state, &String::from_utf8_lossy(&restored.fields.owner));
        let Restored {
            target,
            message,
            fields,
            journal,
        } = restored;
        self.push(&mut state, target, message, &fields, journal, owner);
        self.stats.recovered.fetch_add(1, Ordering::Relaxed);
        drop(state);
        self.wake.notify_one();
    }

    fn push(
        &self,
        state: &mut State,
        target: Destination,
        message: Arc<Message>,
        fields: &ScheduledFields,
        journal: u64,
        owner: Arc<str>,
    ) {
        let seq = state.next_seq;
        state.next_seq += 1;
        *state.per_owner.entry(owner.clone()).or_insert(0) += 1;
        state.heap.push(Entry {
            due: fields.deliver_at,
            seq,
            target,
            message,
            period_ms: fields.period_ms,
            repeats_left: fields.repeats_left,
            delivered: fields.delivered,
            journal,
            owner,
            returns: None,
            attempts: 0,
        });
        self.stats.scheduled.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts message `token` of `queue`'s deciding set back in its place at `due` (unix ms):
    /// a redeliver plugin's `redeliver-after`. O(log n); no cap applies (the queue holds and
    /// counts the message meanwhile, within its own limits).
    pub fn schedule_return(
        &self,
        queue: Arc<super::Queue>,
        token: u64,
        message: Arc<Message>,
        due: u64,
    ) {
        let mut state = self.lock();
        let earliest = state.heap.peek().map(|e| e.due);
        let seq = state.next_seq;
        state.next_seq += 1;
        state.heap.push(Entry {
            due,
            seq,
            target: Destination::Queue(queue),
            message,
            period_ms: 0,
            repeats_left: 0,
            delivered: 0,
            journal: 0,
            owner: Arc::from(""),
            returns: Some(token),
            attempts: 0,
        });
        drop(state);
        if earliest.is_none_or(|at| due < at) {
            self.wake.notify_one();
        }
    }

    /// Journals a persistent message bound for a `/queue/` or `/topic/` (temporary queues
    /// are not journaled, as elsewhere); its journal id, 0 when not journaled.
    fn journal(
        &self,
        target: &Destination,
        message: &Message,
        fields: &mut ScheduledFields,
        owner: &str,
    ) -> u64 {
        let Some(store) = self.store.as_ref().filter(|_| message.persistent) else {
            return 0;
        };
        let name = target_name(target);
        if !(name.starts_with(QUEUE_PREFIX) || name.starts_with(TOPIC_PREFIX)) {
            return 0;
        }
        if fields.owner.is_empty() {
            fields.owner = Bytes::copy_from_slice(owner.as_bytes());
        }
        store.enqueue_scheduled(name, message, fields)
    }

    /// Pops the messages due at `now` (at most `max`). Returns what to deliver now and when
    /// the next one is due. A message leaves the heap until its delivery is published
    /// ([`Scheduler::delivered`] then puts a repeating one back for the next delivery); it
    /// stays counted against its principal meanwhile.
    fn take_due(&self, now: u64, max: usize) -> (Vec<Due>, Option<u64>) {
        let mut state = self.lock();
        let mut due = Vec::new();
        while due.len() < max && state.heap.peek().is_some_and(|e| e.due <= now) {
            let entry = state.heap.pop().expect("peeked");
            if let Some(token) = entry.returns {
                due.push(Due {
                    target: entry.target,
                    message: entry.message,
                    entry: None,
                    returns: Some(token),
                });
                continue;
            }
            let message = self.copy_for(&entry);
            due.push(Due {
                target: entry.target.clone(),
                message,
                entry: Some(entry),
                returns: None,
            });
        }
        let next = state.heap.peek().map(|e| e.due);
        (due, next)
    }

    /// A due message was published: its scheduled record is settled and its principal's place
    /// freed, or, when repeats are left, the record is replaced by the record of the next one
    /// in the same journal batch (so a crash leaves either the old record, delivered once more
    /// after a restart, or the new one: never both, never neither), and the message goes back
    /// into the heap.
    fn delivered(&self, entry: Entry, now: u64) {
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        let settle = entry.journal;
        if entry.repeats_left == 0 {
            if let Some(store) = self.store.as_ref().filter(|_| settle != 0) {
                store.settle(settle);
            }
            release(&mut self.lock(), &entry.owner);
            return;
        }
        let after = entry.due.saturating_add(entry.period_ms);
        let fields = ScheduledFields {
            deliver_at: if after > now {
                after
            } else {
                now.saturating_add(entry.period_ms)
            },
            period_ms: entry.period_ms,
            repeats_left: entry.repeats_left - 1,
            delivered: entry.delivered + 1,
            owner: Bytes::copy_from_slice(entry.owner.as_bytes()),
        };
        let journal = match self.store.as_ref().filter(|_| settle != 0) {
            Some(store) => {
                store.replace_scheduled(settle, target_name(&entry.target), &entry.message, &fields)
            }
            None => 0,
        };
        let mut state = self.lock();
        let earliest = state.heap.peek().map(|e| e.due);
        release(&mut state, &entry.owner);
        self.push(
            &mut state,
            entry.target,
            entry.message,
            &fields,
            journal,
            entry.owner,
        );
        drop(state);
        if earliest.is_none_or(|at| fields.deliver_at < at) {
            self.wake.notify_one();
        }
    }

    /// A due message the cluster did not take (cluster mode, NATS unreachable or not answering
    /// within `publish_timeout_ms`): it goes back into the heap, the same delivery with the
    /// same `message-id` (JetStream drops a second copy of one it did store after all), tried
    /// again after 1 s, doubling up to [`RETRY_MAX`]. Its journal record and its principal's
    /// place stay, so a receipted scheduled message is never lost to an outage.
    fn retry(&self, mut entry: Entry, now: u64) {
        self.stats.retried.fetch_add(1, Ordering::Relaxed);
        let delay = RETRY_FIRST
            .saturating_mul(1 << entry.attempts.min(16))
            .min(RETRY_MAX);
        entry.attempts = entry.attempts.saturating_add(1);
        entry.due = now.saturating_add(delay.as_millis() as u64);
        if entry.attempts == 1 {
            tracing::warn!(destination = %shown(target_name(&entry.target)), "scheduled message due but the cluster did not take it: kept, tried again");
        }
        let mut state = self.lock();
        let earliest = state.heap.peek().map(|e| e.due);
        entry.seq = state.next_seq;
        state.next_seq += 1;
        let due = entry.due;
        state.heap.push(entry);
        drop(state);
        if earliest.is_none_or(|at| due < at) {
            self.wake.notify_one();
        }
    }

    /// The message of an entry's next delivery: the one sent, then copies with their own id.
    fn copy_for(&self, entry: &Entry) -> Arc<Message> {
        if entry.delivered == 0 {
            return entry.message.clone();
        }
        let original = &entry.message;
        Arc::new(Message {
            destination: original.destination.clone(),
            headers: original.headers.clone(),
            body: original.body.clone(),
            id_prefix: Arc::from(format!("{}.r{}", original.id_prefix, entry.delivered)),
            id_seq: original.id_seq,
            expires_at: original.expires_at,
            persistent: original.persistent,
            props: original.props.clone(),
            charge: self.budget.charge(original.size()),
        })
    }

    /// Delivers due messages until shutdown: the one driver of the scheduler.
    pub async fn run(
        self: Arc<Self>,
        patience: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let (due, next) = self.take_due(now_ms(), BATCH);
            let more = due.len() == BATCH;
            for due in due {
                self.deliver(due, patience);
            }
            if more {
                tokio::task::yield_now().await;
                continue;
            }
            let sleep = next.map_or(MAX_SLEEP, |at| {
                Duration::from_millis(at.saturating_sub(now_ms())).min(MAX_SLEEP)
            });
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Publishes one due message: at once when its queue has room, else from a task of its
    /// own; then [`Scheduler::delivered`] settles or replaces its scheduled record.
    fn deliver(self: &Arc<Self>, due: Due, patience: Duration) {
        let Due {
            target,
            message,
            entry,
            returns,
        } = due;
        let Some(entry) = entry else {
            if let (Some(token), Destination::Queue(queue)) = (returns, &target) {
                queue.resolve(token, super::Resolution::Redeliver);
            }
            return;
        };
        if let Destination::Queue(queue) = &target {
            if let Some(published) = poll_once(queue.publish(message.clone())) {
                self.published(published, entry);
                return;
            }
        }
        let scheduler = self.clone();
        tokio::spawn(async move {
            let published = publish(&target, message, patience).await;
            scheduler.published(published, entry);
        });
    }

    /// What became of a due message's publish: delivered (into its queue, or dropped or
    /// refused there by the queue's own overflow policy, as a SEND would be), or not taken by
    /// the cluster and tried again.
    fn published(&self, published: Published, entry: Entry) {
        match published {
            Published::Unavailable => self.retry(entry, now_ms()),
            Published::Queued | Published::Dropped | Published::Rejected => {
                self.delivered(entry, now_ms())
            }
        }
    }
}

/// A message due now.
struct Due {
    target: Destination,
    message: Arc<Message>,
    /// Its entry: settled, put back for the next repeat, or retried, once published (`None`
    /// for a redeliver plugin's delay).
    entry: Option<Entry>,
    /// A redeliver plugin's delay that is over: the message's token in its queue.
    returns: Option<u64>,
}

fn check_room(
    state: &State,
    config: &ScheduleConfig,
    owner: &str,
    count: usize,
) -> Result<(), ScheduleError> {
    if state.heap.len() + count > config.max_messages {
        return Err(ScheduleError::Full(config.max_messages));
    }
    let mine = state.per_owner.get(owner).copied().unwrap_or(0);
    if mine + count > config.max_per_principal {
        return Err(ScheduleError::PrincipalFull(
            owner.to_string(),
            config.max_per_principal,
        ));
    }
    Ok(())
}

/// The map's own `Arc` of `owner` (one allocation per principal, not per message).
fn intern(state: &mut State, owner: &str) -> Arc<str> {
    match state.per_owner.get_key_value(owner) {
        Some((key, _)) => key.clone(),
        None => Arc::from(owner),
    }
}

fn release(state: &mut State, owner: &Arc<str>) {
    if let Some(count) = state.per_owner.get_mut(owner) {
        *count -= 1;
        if *count == 0 {
            state.per_owner.remove(owner);
        }
    }
}

fn target_name(target: &Destination) -> &Bytes {
    match target {
        Destination::Queue(queue) => &queue.name,
        Destination::Topic(topic) => &topic.name,
    }
}

/// Polls `future` once: its output if it is ready without waiting.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

impl super::Router {
    /// Resolves the destination of a scheduled SEND: as [`Router::resolve`](super::Router::resolve),
    /// except that a topic nobody subscribed to yet is created (it may have subscribers when
    /// the message is due).
    pub fn resolve_scheduled(
        &self,
        conn: &mut super::Connection,
        name: &Bytes,
    ) -> Result<Option<Destination>, super::RouteError> {
        if super::classify(name)? == super::Kind::Topic {
            return Ok(Some(Destination::Topic(self.topic_for(conn, name)?)));
        }
        self.resolve(conn, name)
    }

    /// Puts a scheduled message read from the journal back into the scheduler; one whose
    /// target is no longer a valid `/queue/` or `/topic/` is settled and dropped.
    pub(super) fn restore_scheduled(&self, enqueue: Enqueue, fields: ScheduledFields) {
        let target = match super::classify(&enqueue.queue) {
            Ok(super::Kind::Queue) => Destination::Queue(self.queue(&enqueue.queue)),
            Ok(super::Kind::Topic) => Destination::Topic(self.topic(&enqueue.queue)),
            _ => {
                tracing::warn!(target = %shown(&enqueue.queue), "journaled scheduled message for an unknown destination dropped");
                if let Some(store) = &self.store {
                    store.settle(enqueue.id);
                }
                return;
            }
        };
        let journal = enqueue.id;
        let message = self.journaled_message(enqueue);
        self.scheduler.restore(Restored {
            target,
            message,
            fields,
            journal,
        });
    }
}

#[cfg(test)]
mod tests;
