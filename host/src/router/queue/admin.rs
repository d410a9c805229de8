//! What an administrator can do to a queue from the console: purge its waiting messages, and
//! take them out one at a time to move them elsewhere (a dead-letter queue's messages back to
//! where they came from).
//!
//! Only *waiting* messages are touched (parked ones included); what is delivered and not yet
//! acknowledged stays with its consumer. A purged persistent message is settled in the journal
//! as it leaves, so it does not come back after a restart. A message being moved stays counted
//! (and journaled) here until the caller confirms it entered its new queue
//! ([`Queue::finish_move`]): a crash in between keeps both copies, never neither.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{reinsert, Message, Pending, Queue};

/// A waiting message taken out of its queue to be moved, still counted there.
#[derive(Debug)]
pub struct Taken {
    pending: Pending,
}

impl Taken {
    /// The message.
    pub fn message(&self) -> &Arc<Message> {
        &self.pending.message
    }
}

impl Queue {
    /// Removes every waiting message (not the delivered, unacknowledged ones) and returns how
    /// many there were. Counted as dropped.
    pub fn purge(&self) -> usize {
        let mut state = self.lock();
        let mut gone: Vec<Pending> = state.pending.take_all();
        gone.append(&mut state.parked);
        state.declined_pending = 0;
        for pending in &gone {
            self.leave(&mut state, pending);
        }
        self.stats
            .dropped
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        drop(state);
        // Producers paused on a full queue may go on.
        self.room.notify_waiters();
        gone.len()
    }

    /// Takes the next waiting message out to move it (parked ones after the others).
    pub fn take_for_move(&self) -> Option<Taken> {
        let mut state = self.lock();
        let pending = match state.pending.pop() {
            Some(pending) => {
                if !pending.declined.is_empty() {
                    state.declined_pending -= 1;
                }
                pending
            }
            None => state.parked.pop()?,
        };
        Some(Taken { pending })
    }

    /// The taken message is in its new queue: it leaves this one (settled in the journal).
    pub fn finish_move(&self, taken: Taken) {
        let mut state = self.lock();
        self.leave(&mut state, &taken.pending);
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        drop(state);
        self.room.notify_waiters();
    }

    /// The taken message could not be moved: it goes back to its place.
    pub fn put_back(&self, taken: Taken) {
        let mut state = self.lock();
        reinsert(&mut state, taken.pending);
        self.dispatch(&mut state);
    }
}

#[cfg(test)]
mod tests {
    use super::super::QueueLimits;
    use super::*;
    use bytes::Bytes;

    fn message(n: u64) -> Arc<Message> {
        let destination = Bytes::from_static(b"/queue/q");
        let body = Bytes::from(format!("m{n}"));
        Arc::new(Message {
            destination,
            headers: Vec::new(),
            body,
            id_prefix: Arc::from("t"),
            id_seq: n,
            expires_at: None,
            persistent: false,
            props: Default::default(),
            charge: Default::default(),
        })
    }

    #[tokio::test]
    async fn purge_empties_the_waiting_messages_and_frees_their_room() {
        let queue = Queue::new(Bytes::from_static(b"/queue/q"), QueueLimits::messages(10));
        for n in 0..3 {
            queue.publish(message(n)).await;
        }
        assert_eq!(queue.purge(), 3);
        assert_eq!(queue.depth(), 0);
        assert_eq!(queue.held(), (0, 0));
        assert_eq!(queue.purge(), 0);
    }

    #[tokio::test]
    async fn a_taken_message_stays_counted_until_moved_or_put_back() {
        let queue = Queue::new(Bytes::from_static(b"/queue/q"), QueueLimits::messages(10));
        for n in 0..2 {
            queue.publish(message(n)).await;
        }
        let first = queue.take_for_move().unwrap();
        assert_eq!(first.message().id_seq, 0);
        assert_eq!((queue.depth(), queue.held().0), (1, 2));
        queue.put_back(first);
        let again = queue.take_for_move().unwrap();
        assert_eq!(again.message().id_seq, 0, "put back at its place");
        queue.finish_move(again);
        assert_eq!((queue.depth(), queue.held().0), (1, 1));
        let last = queue.take_for_move().unwrap();
        queue.finish_move(last);
        assert!(queue.take_for_move().is_none());
        assert_eq!(queue.held(), (0, 0));
    }
}
