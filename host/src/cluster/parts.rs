//! The bookkeeping of a subscription that pulls several *parts* of one queue: a priority
//! queue's bands ([`super::bands`]) or a grouped queue's own consumer and partitions
//! ([`super::groups`]). Each part has at most one waiting pull of one message (kept by
//! `pull_parts` in [`super::queue`]); [`Parts`] holds the parts without one, until their
//! turn:
//!
//! - **idle**: to be asked again once the window has room (first taking, without waiting, what
//!   else waits there when a message just came from it: *busy*);
//! - **parked**: its pull brought a message while the window was full. The message is kept,
//!   not shown, and delivered first in its part's turn once the window has room; at most
//!   [`MAX_PARKED`] at once, each at most the park limit (then handed back). A pull is never
//!   left because another delivered: a message the server was sending a pull that is left can
//!   be dropped on its way, unacknowledged until `ack_wait`. Handing a message back at once
//!   would count one more delivery of a message no client saw (`redelivered`, and a step
//!   towards the dead-letter queue);
//! - **resting**: its pull failed; asked again after a pause.
//!
//! Turns go in the parts' order: a priority queue's highest band first, a grouped queue's
//! parts from another one each round.

use std::time::Duration;

use tokio::time::Instant;

/// Most messages a subscription keeps parked at once; beyond, one is handed back at once.
pub const MAX_PARKED: usize = 4;
/// Longest a message stays parked (and at most half the consumers' `ack_wait`, so that
/// JetStream does not give it to another subscription meanwhile).
pub const MAX_PARK: Duration = Duration::from_secs(5);

/// A message a part's pull brought while the window was full.
#[derive(Debug)]
pub struct Parked<M> {
    /// The part whose pull brought it.
    pub part: usize,
    /// The message.
    pub message: M,
    /// When it came.
    pub since: Instant,
}

/// The parts of one subscription's round that have no waiting pull (see the module docs).
#[derive(Debug)]
pub struct Parts<M> {
    /// Each part's turn (its place in the order the parts are served), by part.
    rank: Vec<usize>,
    /// The next turn for a part that joins the round (a partition gained meanwhile).
    next_rank: usize,
    idle: Vec<(usize, bool)>,
    parked: Vec<Parked<M>>,
    resting: Vec<(usize, Instant)>,
}

impl<M> Parts<M> {
    /// A round of `parts` parts (0 to `parts - 1`), those of `order` idle, served in that
    /// order.
    pub fn new(order: &[usize], parts: usize) -> Parts<M> {
        let mut rank = vec![usize::MAX; parts];
        for (turn, part) in order.iter().enumerate() {
            if let Some(slot) = rank.get_mut(*part) {
                *slot = turn;
            }
        }
        Parts {
            rank,
            next_rank: order.len(),
            idle: order.iter().map(|part| (*part, false)).collect(),
            parked: Vec::new(),
            resting: Vec::new(),
        }
    }

    /// `part` is to be asked again once the window has room (`busy`: a message just came
    /// from it).
    pub fn set_idle(&mut self, part: usize, busy: bool) {
        if let Some(rank) = self.rank.get_mut(part) {
            if *rank == usize::MAX {
                *rank = self.next_rank;
                self.next_rank += 1;
            }
        }
        match self.idle.iter_mut().find(|(idle, _)| *idle == part) {
            Some((_, was_busy)) => *was_busy |= busy,
            None => self.idle.push((part, busy)),
        }
    }

    /// Takes `part` out of the idle ones: whether it was busy; `None` when it was not idle.
    pub fn take_idle(&mut self, part: usize) -> Option<bool> {
        let at = self.idle.iter().position(|(idle, _)| *idle == part)?;
        Some(self.idle.swap_remove(at).1)
    }

    /// Whether `part` is idle, parked or resting.
    pub fn knows(&self, part: usize) -> bool {
        self.idle.iter().any(|(idle, _)| *idle == part)
            || self.parked.iter().any(|parked| parked.part == part)
            || self.resting.iter().any(|(resting, _)| *resting == part)
    }

    /// Parks `message`, brought by `part`'s pull while the window was full; given back when
    /// [`MAX_PARKED`] are parked already.
    pub fn park(&mut self, part: usize, message: M, now: Instant) -> Result<(), M> {
        if self.parked.len() >= MAX_PARKED {
            return Err(message);
        }
        self.parked.push(Parked {
            part,
            message,
            since: now,
        });
        Ok(())
    }

    /// `part`'s parked message, taken out.
    pub fn unpark(&mut self, part: usize) -> Option<M> {
        let at = self.parked.iter().position(|parked| parked.part == part)?;
        Some(self.parked.remove(at).message)
    }

    /// The parked messages `stale` picks, taken out (to be handed back).
    pub fn unpark_where(&mut self, stale: impl Fn(&Parked<M>) -> bool) -> Vec<M> {
        let (gone, kept) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|parked| stale(parked));
        self.parked = kept;
        gone.into_iter().map(|parked| parked.message).collect()
    }

    /// Every parked message, taken out (the round ends).
    pub fn unpark_all(&mut self) -> Vec<M> {
        self.unpark_where(|_| true)
    }

    /// `part`'s pull failed: asked again from `until` on.
    pub fn rest(&mut self, part: usize, until: Instant) {
        self.take_idle(part);
        self.resting.push((part, until));
    }

    /// The resting parts whose pause is over at `now` become idle.
    pub fn wake(&mut self, now: Instant) {
        let (due, resting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.resting)
            .into_iter()
            .partition(|(_, until)| *until <= now);
        self.resting = resting;
        for (part, _) in due {
            self.set_idle(part, false);
        }
    }

    /// `part` leaves the round (a partition given up): its parked message, if any.
    pub fn forget(&mut self, part: usize) -> Option<M> {
        self.take_idle(part);
        self.resting.retain(|(resting, _)| *resting != part);
        self.unpark(part)
    }

    /// The idle and parked parts, in the order their turns come.
    pub fn turns(&self) -> Vec<usize> {
        let mut turns: Vec<usize> = self
            .idle
            .iter()
            .map(|(part, _)| *part)
            .chain(self.parked.iter().map(|parked| parked.part))
            .collect();
        turns.sort_by_key(|part| (self.rank.get(*part).copied().unwrap_or(usize::MAX), *part));
        turns.dedup();
        turns
    }

    /// Whether a part waits for the window's room.
    pub fn has_turns(&self) -> bool {
        !self.idle.is_empty() || !self.parked.is_empty()
    }

    /// Whether a part is parked or resting: the round goes on even without a waiting pull.
    pub fn holds_on(&self) -> bool {
        !self.parked.is_empty() || !self.resting.is_empty()
    }

    /// When the next parked message is due back (parked `park_limit` before) or the next
    /// resting part is asked again.
    pub fn next_deadline(&self, park_limit: Duration) -> Option<Instant> {
        self.parked
            .iter()
            .map(|parked| parked.since + park_limit)
            .chain(self.resting.iter().map(|(_, until)| *until))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_follow_the_order_with_parked_and_idle_parts_once_each() {
        let now = Instant::now();
        let mut parts: Parts<&str> = Parts::new(&[2, 0, 1], 3);
        assert_eq!(parts.turns(), [2, 0, 1]);
        assert_eq!(parts.take_idle(0), Some(false));
        assert_eq!(parts.take_idle(0), None);
        parts.park(0, "m", now).unwrap();
        parts.set_idle(0, true);
        assert_eq!(parts.turns(), [2, 0, 1]);
        assert_eq!(parts.take_idle(2), Some(false));
        assert_eq!(parts.turns(), [0, 1]);
        assert_eq!(parts.unpark(0), Some("m"));
        assert_eq!(parts.unpark(0), None);
        assert_eq!(parts.take_idle(0), Some(true));
        // A part that joins later takes its turn after the others.
        let mut grown: Parts<&str> = Parts::new(&[1], 4);
        grown.set_idle(3, true);
        grown.set_idle(2, false);
        assert_eq!(grown.turns(), [1, 3, 2]);
    }

    #[test]
    fn idle_keeps_busy_once_set() {
        let mut parts: Parts<()> = Parts::new(&[0], 1);
        parts.set_idle(0, true);
        parts.set_idle(0, false);
        assert_eq!(parts.take_idle(0), Some(true));
        assert!(!parts.has_turns());
    }

    #[test]
    fn parking_is_capped_and_stale_messages_are_taken_out() {
        let now = Instant::now();
        let mut parts: Parts<usize> = Parts::new(&[], 8);
        for part in 0..MAX_PARKED {
            parts
                .park(part, part, now + Duration::from_secs(part as u64))
                .unwrap();
        }
        assert_eq!(parts.park(7, 7, now), Err(7));
        assert!(parts.holds_on());
        let limit = Duration::from_secs(5);
        assert_eq!(parts.next_deadline(limit), Some(now + limit));
        let stale = parts.unpark_where(|parked| parked.since + limit <= now + limit);
        assert_eq!(stale, [0]);
        assert_eq!(
            parts.next_deadline(limit),
            Some(now + Duration::from_secs(6))
        );
        assert_eq!(parts.forget(2), Some(2));
        let mut rest = parts.unpark_all();
        rest.sort();
        assert_eq!(rest, [1, 3]);
        assert!(!parts.holds_on());
        assert_eq!(parts.next_deadline(limit), None);
    }

    #[test]
    fn a_resting_part_is_idle_once_its_pause_is_over() {
        let now = Instant::now();
        let mut parts: Parts<()> = Parts::new(&[0, 1], 2);
        parts.rest(1, now + Duration::from_millis(500));
        assert_eq!(parts.turns(), [0]);
        assert!(parts.knows(1));
        assert_eq!(
            parts.next_deadline(MAX_PARK),
            Some(now + Duration::from_millis(500))
        );
        parts.wake(now);
        assert_eq!(parts.turns(), [0]);
        parts.wake(now + Duration::from_millis(500));
        assert_eq!(parts.turns(), [0, 1]);
        assert!(!parts.holds_on());
        parts.rest(0, now);
        assert_eq!(parts.forget(0), None);
        assert!(!parts.knows(0));
    }
}
