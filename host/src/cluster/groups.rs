//! Message groups on a cluster queue (`JMSXGroupID` on SEND): on a queue that `[cluster]
//! group_queues` names, the messages of one group go to one subscription at a time, whichever
//! edge it is on, in the order they were stored.
//!
//! JetStream gives a consumer's messages to whichever pull asks first, so one consumer per
//! queue cannot keep a group on one subscription. Such a queue therefore keeps its grouped
//! messages in **partitions**: a message of group `G` goes to subject `QUEUE_SUBJECT.gP`, with
//! `P` the FNV-1a hash of `G` modulo `group_partitions` (the same on every edge), each partition
//! with a durable consumer of its own (`TOKEN_gP`). A message without a group goes to the
//! queue's own subject, which every subscription pulls as before. No token holds `.` and no
//! token has `_` before a lower-case letter ([`super::bands`]), so these names are nobody
//! else's and the filters do not overlap.
//!
//! **Who pulls a partition.** Each subscription of such a queue is a *member*: it holds the
//! lease `g.TOKEN.m.MEMBER` in the vhost's lease bucket ([`super::lease`]) while it lives. A
//! partition is pulled only by the member holding its lease `g.TOKEN.p.P`, so all of a
//! group's messages go to that subscription. Every [`BALANCE_EVERY`], a member ([`Membership`])
//! counts the live members `n` (from this edge's watch of the queue's `g.` keys,
//! [`GroupView`]) and keeps `ceil(partitions / n)` partitions:
//!
//! - it takes free partitions (not held as far as the watch knows) up to that share, trying
//!   them in an order of its own (rendezvous hashing of member and partition), so members do
//!   not all try the same ones;
//! - beyond that share (a member joined), it stops pulling the extra ones and gives their
//!   leases up once the messages it was given from them are settled (acked, or handed back)
//!   and its waiting pull there ended by itself (it is never left: see `pull_parts` in
//!   [`super::queue`]), or after [`HANDOVER_WAIT`]: the next holder then starts with what
//!   comes after them, so a group's messages are not processed by two subscriptions at once;
//! - a member that ends gives its partitions up at once, after handing back what it held;
//!   one whose edge died loses them after [`LEASE_TTL`] (its unacknowledged messages come
//!   back after `ack_wait_ms`).
//!
//! An exclusive subscription is no member: while it is the active one it pulls every
//! partition, as it receives every message.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tokio::sync::Notify;

use super::lease::{Lease, LEASE_TTL};
use crate::plugin::glob;

/// Most partitions per queue (each a durable consumer, a Raft group).
pub const MAX_PARTITIONS: u32 = 64;
/// `group_partitions` when not set.
pub const DEFAULT_PARTITIONS: u32 = 8;
/// How often a member looks at its share of the partitions.
pub const BALANCE_EVERY: Duration = Duration::from_secs(1);
/// Longest a member keeps a partition it gives up while its messages are not settled.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(30);
/// Most members and partitions of one queue the watch follows.
pub const MAX_KEYS: usize = 16_384;
/// The pause before a watch NATS ended is made again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Which queues keep message groups across edges: `[cluster] group_queues`, patterns of queue
/// names as `[[queues]]` writes them, with `group_partitions` partitions each.
#[derive(Debug, Clone, Default)]
pub struct GroupedQueues {
    patterns: Vec<String>,
    partitions: u32,
}

impl GroupedQueues {
    /// The queues `patterns` match, with `partitions` partitions each.
    pub fn new(patterns: &[String], partitions: u32) -> GroupedQueues {
        GroupedQueues {
            patterns: patterns.to_vec(),
            partitions: partitions.clamp(1, MAX_PARTITIONS),
        }
    }

    /// The number of partitions of queue `destination` when it keeps groups.
    pub fn partitions_of(&self, destination: &[u8]) -> Option<u32> {
        self.patterns
            .iter()
            .any(|pattern| glob::matches(pattern.as_bytes(), destination))
            .then_some(self.partitions)
    }
}

/// The partition of group `group` among `partitions` (FNV-1a, 64 bits: the same on every
/// edge and every version).
pub fn partition_of(group: &[u8], partitions: u32) -> u32 {
    (fnv(group) % u64::from(partitions.max(1))) as u32
}

/// Partition `partition`'s subject, for the queue on `queue_subject`.
pub fn subject(queue_subject: &str, partition: u32) -> String {
    format!("{queue_subject}.g{partition}")
}

/// Partition `partition`'s durable consumer, for the queue's `queue_consumer`.
pub fn consumer(queue_consumer: &str, partition: u32) -> String {
    format!("{queue_consumer}_g{partition}")
}

/// The partition a message pulled on `subject` came from, for the queue on `queue_subject`.
pub fn partition_of_subject(queue_subject: &str, subject: &str) -> Option<u32> {
    subject
        .strip_prefix(queue_subject)?
        .strip_prefix(".g")?
        .parse()
        .ok()
}

/// Checks `[cluster] group_queues` and `group_partitions`.
pub fn validate(patterns: &[String], partitions: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_PARTITIONS).contains(&partitions),
        "[cluster] group_partitions = {partitions}; from 1 to {MAX_PARTITIONS}"
    );
    super::config::check_queue_patterns("group_queues", patterns)
}

/// The key of member `member`'s lease of queue `token`.
fn member_key(token: &str, member: &str) -> String {
    format!("g.{token}.m.{member}")
}

/// The key of partition `partition`'s lease of queue `token`.
fn partition_key(token: &str, partition: u32) -> String {
    format!("g.{token}.p.{partition}")
}

/// The members and held partitions of one queue as this edge last heard of them (one watch of
/// the queue's `g.` keys per queue and edge, started by its first member).
#[derive(Default)]
pub struct GroupView {
    started: AtomicBool,
    state: Arc<Mutex<ViewState>>,
}

#[derive(Default)]
struct ViewState {
    /// Members by id, with when their lease was last taken or renewed.
    members: HashMap<String, Instant>,
    /// Held partitions, with when their lease was last taken or renewed.
    held: HashMap<u32, Instant>,
}

impl GroupView {
    /// Starts following queue `token`'s keys in `leases` (once).
    fn start(&self, leases: kv::Store, token: &str) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let state = Arc::downgrade(&self.state);
        tokio::spawn(watch(leases, format!("g.{token}."), state));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ViewState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live members other than `member`.
    fn others(&self, member: &str, now: Instant) -> usize {
        self.lock()
            .members
            .iter()
            .filter(|(id, at)| id.as_str() != member && alive(**at, now))
            .count()
    }

    /// Whether some member holds `partition`, as far as the watch knows.
    fn is_held(&self, partition: u32, now: Instant) -> bool {
        self.lock()
            .held
            .get(&partition)
            .is_some_and(|at| alive(*at, now))
    }
}

/// Whether a lease last taken or renewed `at` is still held.
fn alive(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) < LEASE_TTL
}

/// Follows the keys under `prefix` until the view is gone (made again when NATS ends it).
async fn watch(leases: kv::Store, prefix: String, state: Weak<Mutex<ViewState>>) {
    while state.strong_count() > 0 {
        match leases.watch_with_history(format!("{prefix}>")).await {
            Ok(mut watch) => loop {
                match tokio::time::timeout(RETRY_AFTER, watch.next()).await {
                    Err(_) => {
                        if state.strong_count() == 0 {
                            return;
                        }
                    }
                    Ok(Some(Ok(entry))) => {
                        let Some(state) = state.upgrade() else { return };
                        apply(&state, &prefix, &entry);
                    }
                    Ok(Some(Err(err))) => {
                        tracing::debug!(error = %err, "cluster: a message group watch failed; making it again");
                        break;
                    }
                    Ok(None) => break,
                }
            },
            Err(err) => {
                tracing::debug!(error = %err, "cluster: cannot watch a queue's message group leases");
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Records one event of the watch.
fn apply(state: &Mutex<ViewState>, prefix: &str, entry: &kv::Entry) {
    let Some(rest) = entry.key.strip_prefix(prefix) else {
        return;
    };
    let now = Instant::now();
    let at = super::lease_watch::seen_at(entry, now, LEASE_TTL);
    let put = entry.operation == kv::Operation::Put;
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    if state.members.len() + state.held.len() >= MAX_KEYS {
        state.members.retain(|_, seen| alive(*seen, now));
        state.held.retain(|_, seen| alive(*seen, now));
    }
    let full = state.members.len() + state.held.len() >= MAX_KEYS;
    if let Some(member) = rest.strip_prefix("m.") {
        match put {
            true if !full || state.members.contains_key(member) => {
                state.members.insert(member.to_string(), at);
            }
            true => {}
            false => {
                state.members.remove(member);
            }
        }
    } else if let Some(partition) = rest.strip_prefix("p.").and_then(|p| p.parse().ok()) {
        match put {
            true if !full || state.held.contains_key(&partition) => {
                state.held.insert(partition, at);
            }
            true => {}
            false => {
                state.held.remove(&partition);
            }
        }
    }
}

/// One subscription's membership of a queue's groups: its lease as a member, and the
/// partitions it holds.
pub struct Membership {
    view: Arc<GroupView>,
    leases: kv::Store,
    token: String,
    member: String,
    partitions: u32,
    state: Mutex<MemberState>,
    /// Wakes the subscription's pull loop when the partitions it pulls changed.
    regroup: Notify,
    left: AtomicBool,
}

#[derive(Default)]
struct MemberState {
    member_lease: Option<Lease>,
    held: BTreeMap<u32, Holding>,
}

/// A partition this member holds.
struct Holding {
    lease: Lease,
    /// Deliveries from it not settled yet.
    in_flight: Arc<AtomicUsize>,
    /// Since when it is being given up (not pulled any more).
    releasing: Option<Instant>,
}

/// One delivery from a partition, counted until it is settled (dropped).
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Membership {
    /// Joins queue `token`'s groups as `member` (unique), with the edge's `view` of the
    /// queue: balances its share every [`BALANCE_EVERY`] until it leaves (or is dropped).
    pub fn join(
        view: Arc<GroupView>,
        leases: kv::Store,
        token: &str,
        member: String,
        partitions: u32,
    ) -> Arc<Membership> {
        view.start(leases.clone(), token);
        let membership = Arc::new(Membership {
            view,
            leases,
            token: token.to_string(),
            member,
            partitions: partitions.clamp(1, MAX_PARTITIONS),
            state: Mutex::new(MemberState::default()),
            regroup: Notify::new(),
            left: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&membership);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(BALANCE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(membership) = weak.upgrade() else {
                    return;
                };
                if membership.left.load(Ordering::Acquire) {
                    return;
                }
                membership.balance().await;
            }
        });
        membership
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemberState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The partitions to pull now (held, not being given up).
    pub fn pulling(&self) -> Vec<u32> {
        self.lock()
            .held
            .iter()
            .filter(|(_, holding)| holding.releasing.is_none())
            .map(|(partition, _)| *partition)
            .collect()
    }

    /// Whether `partition` is one to pull now (held, not being given up).
    pub fn pulls(&self, partition: u32) -> bool {
        self.lock()
            .held
            .get(&partition)
            .is_some_and(|holding| holding.releasing.is_none())
    }

    /// Counts one delivery from `partition` until it is settled.
    pub fn in_flight(&self, partition: u32) -> Option<InFlight> {
        let state = self.lock();
        let holding = state.held.get(&partition)?;
        holding.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(InFlight(holding.in_flight.clone()))
    }

    /// Completes when the partitions to pull changed since the last call.
    pub async fn regrouped(&self) {
        self.regroup.notified().await;
    }

    /// Leaves: every lease given up (the subscription handed its messages back first).
    pub fn leave(&self) {
        self.left.store(true, Ordering::Release);
        let mut state = self.lock();
        state.held.clear();
        state.member_lease = None;
    }

    /// Takes or gives up partitions to keep this member's share (see the module docs).
    async fn balance(&self) {
        {
            // Renewals failed (NATS unreachable) long enough for it to lapse: taken again.
            let mut state = self.lock();
            if state
                .member_lease
                .as_ref()
                .is_some_and(|lease| !lease.is_fresh(BALANCE_EVERY))
            {
                state.member_lease = None;
            }
        }
        if self.lock().member_lease.is_none() {
            let key = member_key(&self.token, &self.member);
            match Lease::take(&self.leases, None, &key).await {
                Ok(Some(lease)) => self.lock().member_lease = Some(lease),
                Ok(None) => return,
                Err(err) => {
                    tracing::debug!(key = %key, error = %err, "cluster: a message group membership not taken; trying again");
                    return;
                }
            }
        }
        let now = Instant::now();
        let members = self.view.others(&self.member, now) + 1;
        let share = self.partitions.div_ceil(members as u32) as usize;
        let order = preference(&self.member, self.partitions);
        let mut changed = false;
        let wanted: Vec<u32> = {
            let mut state = self.lock();
            if self.left.load(Ordering::Acquire) {
                return;
            }
            // Given up: once its messages are settled, or after HANDOVER_WAIT.
            let member = &self.member;
            state.held.retain(|partition, holding| match holding.releasing {
                Some(since) => {
                    let keep = holding.in_flight.load(Ordering::Acquire) > 0
                        && since.elapsed() < HANDOVER_WAIT;
                    if !keep {
                        tracing::debug!(%member, partition, "cluster: a message group partition given up");
                    }
                    keep
                }
                None => true,
            });
            // A lease whose renewals failed may be another member's soon: stop pulling.
            let stale: Vec<u32> = state
                .held
                .iter()
                .filter(|(_, h)| h.releasing.is_none() && !h.lease.is_fresh(BALANCE_EVERY))
                .map(|(p, _)| *p)
                .collect();
            for partition in stale {
                tracing::warn!(partition, "cluster: a message group partition's lease was not renewed in time; giving it up");
                state.held.remove(&partition);
                changed = true;
            }
            let active: Vec<u32> = order
                .iter()
                .copied()
                .filter(|p| state.held.get(p).is_some_and(|h| h.releasing.is_none()))
                .collect();
            if active.len() > share {
                for partition in &active[share..] {
                    if let Some(holding) = state.held.get_mut(partition) {
                        tracing::debug!(member = %self.member, partition, members, "cluster: giving a message group partition up (beyond this member's share)");
                        holding.releasing = Some(now);
                        changed = true;
                    }
                }
            }
            let room = share.saturating_sub(active.len());
            order
                .iter()
                .copied()
                .filter(|p| !state.held.contains_key(p) && !self.view.is_held(*p, now))
                .take(room)
                .collect()
        };
        for partition in wanted {
            let key = partition_key(&self.token, partition);
            match Lease::take(&self.leases, None, &key).await {
                Ok(Some(lease)) => {
                    let mut state = self.lock();
                    if self.left.load(Ordering::Acquire) {
                        return;
                    }
                    tracing::debug!(member = %self.member, partition, members, "cluster: a message group partition taken");
                    state.held.insert(
                        partition,
                        Holding {
                            lease,
                            in_flight: Arc::new(AtomicUsize::new(0)),
                            releasing: None,
                        },
                    );
                    changed = true;
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(key = %key, error = %err, "cluster: a message group partition not taken");
                }
            }
        }
        if changed {
            self.regroup.notify_one();
        }
    }
}

/// The order in which `member` tries partitions (rendezvous hashing: each member its own,
/// so members joining together try different ones first).
fn preference(member: &str, partitions: u32) -> Vec<u32> {
    let mut order: Vec<(u64, u32)> = (0..partitions)
        .map(|partition| {
            let mut key = member.as_bytes().to_vec();
            key.extend_from_slice(&partition.to_be_bytes());
            (fnv(&key), partition)
        })
        .collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    order.into_iter().map(|(_, partition)| partition).collect()
}

/// FNV-1a, 64 bits, of `bytes`.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_always_falls_in_the_same_partition() {
        assert_eq!(
            partition_of(b"customer-17", 8),
            partition_of(b"customer-17", 8)
        );
        assert!(partition_of(b"x", 8) < 8);
        assert_eq!(partition_of(b"anything", 1), 0);
        // FNV-1a of "a" (fixed across edges and versions).
        assert_eq!(
            partition_of(b"a", 1 << 31),
            (0xaf63_dc4c_8601_ec8c_u64 % (1 << 31)) as u32
        );
        // The groups spread over the partitions.
        let mut used = [0usize; 8];
        for i in 0..800 {
            used[partition_of(format!("group-{i}").as_bytes(), 8) as usize] += 1;
        }
        assert!(used.iter().all(|n| *n > 50), "{used:?}");
    }

    #[test]
    fn partition_names_read_back_and_stay_apart_from_the_queue_s() {
        let subject = "pb.V.q.orders";
        assert_eq!(self::subject(subject, 3), "pb.V.q.orders.g3");
        assert_eq!(consumer("orders", 3), "orders_g3");
        assert_eq!(partition_of_subject(subject, "pb.V.q.orders.g3"), Some(3));
        assert_eq!(partition_of_subject(subject, subject), None);
        assert_eq!(partition_of_subject(subject, "pb.V.q.orders.h"), None);
        assert_eq!(partition_of_subject(subject, "pb.V.q.ordersx.g3"), None);
    }

    #[test]
    fn only_named_queues_keep_groups_and_the_settings_are_checked() {
        let grouped = GroupedQueues::new(&["/queue/orders.*".into()], 4);
        assert_eq!(grouped.partitions_of(b"/queue/orders.eu"), Some(4));
        assert_eq!(grouped.partitions_of(b"/queue/other"), None);
        assert!(validate(&["/queue/a".into()], 8).is_ok());
        assert!(validate(&["/queue/a".into()], 0).is_err());
        assert!(validate(&["/queue/a".into()], MAX_PARTITIONS + 1).is_err());
        assert!(validate(&["/topic/a".into()], 8).is_err());
        use crate::cluster::config::{MAX_QUEUE_PATTERNS, MAX_QUEUE_PATTERN_LEN};
        assert!(validate(&vec!["/queue/a".to_string(); MAX_QUEUE_PATTERNS + 1], 8).is_err());
        let long = format!("/queue/{}", "a".repeat(MAX_QUEUE_PATTERN_LEN));
        assert!(validate(&[long], 8).is_err());
    }

    #[test]
    fn members_prefer_different_partitions() {
        let a = preference("edge-a.1", 8);
        let b = preference("edge-b.1", 8);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..8).collect::<Vec<u32>>());
        assert_ne!(a, b);
        assert_eq!(a, preference("edge-a.1", 8));
    }

    #[test]
    fn the_view_counts_live_members_and_held_partitions() {
        let view = GroupView::default();
        let now = Instant::now();
        {
            let mut state = view.lock();
            state.members.insert("me".into(), now);
            state.members.insert("other".into(), now);
            state
                .members
                .insert("lapsed".into(), now - LEASE_TTL - Duration::from_secs(1));
            state.held.insert(2, now);
        }
        assert_eq!(view.others("me", now), 1);
        assert!(view.is_held(2, now));
        assert!(!view.is_held(3, now));
        assert!(!view.is_held(2, now + LEASE_TTL));
    }

    #[test]
    fn an_in_flight_delivery_counts_until_dropped() {
        let count = Arc::new(AtomicUsize::new(1));
        let delivery = InFlight(count.clone());
        drop(delivery);
        assert_eq!(count.load(Ordering::Acquire), 0);
    }
}
