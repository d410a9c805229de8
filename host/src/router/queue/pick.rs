//! Which waiting message goes to which consumer next.
//!
//! Messages are considered in delivery order (priority, then arrival: see
//! [`Ready`](crate::router::ready::Ready)); the first one some consumer can take goes. Who
//! takes it, in this order of precedence:
//!
//! 1. **Exclusive mode** (some consumer subscribed with `activemq.exclusive:true` or
//!    `x-single-active-consumer:true`): only the *active* consumer, the first exclusive one
//!    chosen and kept until it goes away; then the next exclusive one, highest consumer
//!    priority first and in subscribe order among equals. Its groups follow it.
//! 2. **Message groups**: a message of a live group goes to the group's consumer, and waits
//!    for it while its window is full (the messages behind it, of other groups, go on). A
//!    message of a group with no consumer yet is given as an ungrouped one is, and claims
//!    the group for that consumer.
//! 3. **Consumer priority**: the consumers with window space that have not declined the
//!    message; the highest `activemq.priority` / `x-priority` among them, round-robin among
//!    equals. When every consumer has the same priority (the plain case) the first in
//!    round-robin order is taken without looking further.

use crate::router::ready::Slot;

use super::{Consumer, Pending, State, DECLINED_SCAN};

/// A waiting message and the consumer it goes to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Choice {
    /// Where the message waits.
    pub slot: Slot,
    /// The consumer's index in `State::consumers`.
    pub consumer: usize,
    /// The message's group is (re)assigned to that consumer with it.
    pub claims_group: bool,
}

/// The next message to deliver and its consumer: from the head, looking past it (up to
/// [`DECLINED_SCAN`] messages) only when some message was declined or a group may be waiting
/// for its consumer.
pub(super) fn pick(state: &State) -> Option<Choice> {
    let scan = if state.declined_pending == 0 && state.groups.is_empty() {
        1
    } else {
        DECLINED_SCAN
    };
    state.pending.iter().take(scan).find_map(|(slot, pending)| {
        let (consumer, claims_group) = consumer_for(state, pending)?;
        Some(Choice {
            slot,
            consumer,
            claims_group,
        })
    })
}

/// Whether `consumer` can take `pending` now: window space, and no earlier decline.
fn takes(consumer: &Consumer, pending: &Pending) -> bool {
    consumer.credit > 0 && !declined(consumer, pending)
}

fn declined(consumer: &Consumer, pending: &Pending) -> bool {
    !pending.declined.is_empty()
        && pending
            .declined
            .contains(&consumer.subscription.consumer_id)
}

/// The consumer for `pending` and whether it claims the message's group.
fn consumer_for(state: &State, pending: &Pending) -> Option<(usize, bool)> {
    let group = pending.message.props.group.as_ref();
    let owner = group.and_then(|group| state.groups.owner(&group.id));
    if let Some(active) = state.active {
        let consumer = &state.consumers[active];
        let claims = group.is_some() && owner != Some(consumer.subscription.consumer_id);
        return takes(consumer, pending).then_some((active, claims));
    }
    if group.is_none() {
        return next_in_turn(state, pending).map(|index| (index, false));
    }
    let pinned = owner.and_then(|owner| {
        state
            .consumers
            .iter()
            .position(|c| c.subscription.consumer_id == owner)
    });
    match pinned {
        None => next_in_turn(state, pending).map(|index| (index, true)),
        // Its consumer's filter declined it: another may take it, the group stays put.
        Some(index) if declined(&state.consumers[index], pending) => {
            next_in_turn(state, pending).map(|index| (index, false))
        }
        // Waits for its consumer's window, so the group stays in order.
        Some(index) => (state.consumers[index].credit > 0).then_some((index, false)),
    }
}

/// The consumer whose turn it is: round-robin from the cursor among those that can take
/// `pending`, the highest consumer priority first.
fn next_in_turn(state: &State, pending: &Pending) -> Option<usize> {
    let n = state.consumers.len();
    let mut in_turn = (0..n)
        .map(|i| (state.cursor + i) % n)
        .filter(|&i| takes(&state.consumers[i], pending));
    if !state.ranked {
        return in_turn.next();
    }
    in_turn.fold(None, |best: Option<usize>, i| match best {
        Some(b) if state.consumers[b].priority >= state.consumers[i].priority => Some(b),
        _ => Some(i),
    })
}

/// The exclusive consumer to make active: the highest consumer priority, the earliest
/// subscribed among equals; `None` when no consumer asked for exclusivity.
pub(super) fn choose_active(consumers: &[Consumer]) -> Option<usize> {
    consumers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.exclusive)
        .fold(None, |best: Option<(usize, i32)>, (i, c)| match best {
            Some((_, p)) if p >= c.priority => best,
            _ => Some((i, c.priority)),
        })
        .map(|(i, _)| i)
}

/// Whether the consumers' priorities differ (consumer priority then matters).
pub(super) fn ranked(consumers: &[Consumer]) -> bool {
    consumers
        .first()
        .is_some_and(|first| consumers.iter().any(|c| c.priority != first.priority))
}
