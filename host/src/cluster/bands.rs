//! Message priority on a cluster queue (`priority` on SEND): a queue that `[cluster]
//! priority_queues` names keeps its messages in three **bands**, each a subject of the queue
//! stream with a durable consumer of its own, and its subscriptions take from the highest band
//! that has messages.
//!
//! JetStream delivers a consumer's messages in stream order and cannot order them by a header,
//! so one consumer per queue cannot give a later priority-9 message before an earlier
//! priority-4 one. The bands are ActiveMQ's (its KahaDB store keeps three priority indexes the
//! same way):
//!
//! | band | priorities | subject | consumer |
//! |---|---|---|---|
//! | high | 5 to 9 | `CLUSTER.VHOST.q.TOKEN.h` | `TOKEN_h` |
//! | normal | 4 (the default) | `CLUSTER.VHOST.q.TOKEN` | `TOKEN` |
//! | low | 0 to 3 | `CLUSTER.VHOST.q.TOKEN.l` | `TOKEN_l` |
//!
//! The normal band is the queue's subject and consumer as they are without bands, so a queue
//! named later keeps what it holds. No token has `_` before a lower-case letter (escapes are
//! `_` and two upper-case hex digits, hashed tokens start `_Z`) and no token holds `.`, so the
//! band names are nobody else's, and the three filters do not overlap (a work-queue stream
//! refuses consumers whose filters do).
//!
//! How a subscription pulls from the bands is [`super::queue`]'s (`pull_parts`, with
//! [`super::parts`]); which queues have bands is [`BandedQueues`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::plugin::glob;

/// One band of a priority queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    /// Priorities 5 to 9.
    High,
    /// Priority 4, JMS's default (a message without `priority`).
    Normal,
    /// Priorities 0 to 3.
    Low,
}

/// The bands in the order their messages are delivered.
pub const ORDER: [Band; 3] = [Band::High, Band::Normal, Band::Low];

impl Band {
    /// The band of message priority `priority` (0 to 9).
    pub fn of(priority: u8) -> Band {
        match priority {
            0..=3 => Band::Low,
            4 => Band::Normal,
            _ => Band::High,
        }
    }

    /// Its place in [`ORDER`].
    pub fn index(self) -> usize {
        match self {
            Band::High => 0,
            Band::Normal => 1,
            Band::Low => 2,
        }
    }

    /// Its subject, for a queue whose subject (the normal band's) is `queue_subject`.
    pub fn subject(self, queue_subject: &str) -> String {
        match self {
            Band::High => format!("{queue_subject}.h"),
            Band::Normal => queue_subject.to_string(),
            Band::Low => format!("{queue_subject}.l"),
        }
    }

    /// Its durable consumer, for a queue whose consumer (the normal band's) is `queue_consumer`.
    pub fn consumer(self, queue_consumer: &str) -> String {
        match self {
            Band::High => format!("{queue_consumer}_h"),
            Band::Normal => queue_consumer.to_string(),
            Band::Low => format!("{queue_consumer}_l"),
        }
    }
}

/// Which queues have bands: `[cluster] priority_queues`, patterns of queue names as
/// `[[queues]]` writes them (`/queue/jobs.*`).
#[derive(Debug, Clone, Default)]
pub struct BandedQueues {
    patterns: Vec<String>,
}

impl BandedQueues {
    /// The queues `patterns` match.
    pub fn new(patterns: &[String]) -> BandedQueues {
        BandedQueues {
            patterns: patterns.to_vec(),
        }
    }

    /// Whether queue `destination` (`/queue/NAME`) has bands.
    pub fn has(&self, destination: &[u8]) -> bool {
        self.patterns
            .iter()
            .any(|pattern| glob::matches(pattern.as_bytes(), destination))
    }
}

/// The deliveries a priority queue's subscription handed back (NACK, declined, expired) that
/// JetStream has not confirmed taking back yet: the subscription's next round waits for them
/// (bounded), or the band of a handed-back message could look empty to it and a lower band's
/// message go first.
#[derive(Debug, Default)]
pub struct Returning {
    count: AtomicUsize,
    done: Notify,
}

/// One delivery on its way back (see [`Returning`]); released when dropped.
#[derive(Debug)]
pub struct ReturningGuard(Arc<Returning>);

impl Drop for ReturningGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

impl Returning {
    /// Counts one delivery on its way back, until the guard is dropped.
    pub fn guard(self: &Arc<Self>) -> ReturningGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        ReturningGuard(self.clone())
    }

    /// Waits until none is on its way back, at most `bound`.
    pub async fn settled(&self, bound: Duration) {
        let wait = async {
            loop {
                let done = self.done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if self.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                done.await;
            }
        };
        let _ = tokio::time::timeout(bound, wait).await;
    }
}

/// Checks `[cluster] priority_queues`.
pub fn validate(patterns: &[String]) -> anyhow::Result<()> {
    super::config::check_queue_patterns("priority_queues", patterns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::subject::{token, Names};
    use proptest::prelude::*;

    #[test]
    fn priorities_fall_into_activemq_s_three_bands() {
        let bands: Vec<Band> = (0..=9).map(Band::of).collect();
        assert_eq!(&bands[..4], &[Band::Low; 4]);
        assert_eq!(bands[4], Band::Normal);
        assert_eq!(&bands[5..], &[Band::High; 5]);
        assert_eq!(ORDER.map(Band::index), [0, 1, 2]);
    }

    #[test]
    fn the_normal_band_is_the_queue_itself() {
        let names = Names::new("pb", "/");
        let subject = names.queue_subject(b"/queue/jobs");
        let consumer = names.queue_consumer(b"/queue/jobs");
        assert_eq!(Band::Normal.subject(&subject), subject);
        assert_eq!(Band::Normal.consumer(&consumer), consumer);
        assert_eq!(Band::High.subject(&subject), format!("{subject}.h"));
        assert_eq!(Band::Low.consumer(&consumer), format!("{consumer}_l"));
    }

    #[test]
    fn patterns_select_queues() {
        let banded = BandedQueues::new(&["/queue/jobs.*".to_string()]);
        assert!(banded.has(b"/queue/jobs.eu"));
        assert!(!banded.has(b"/queue/orders"));
        assert!(BandedQueues::default().patterns.is_empty());
        assert!(validate(&["/queue/jobs.*".into()]).is_ok());
        assert!(validate(&["/topic/x".into()]).is_err());
        assert!(validate(&["/queue/".into()]).is_err());
        let too_many = vec!["/queue/a".to_string(); crate::cluster::config::MAX_QUEUE_PATTERNS + 1];
        assert!(validate(&too_many).is_err());
    }

    #[tokio::test]
    async fn a_round_waits_for_what_is_on_its_way_back() {
        let returning = Arc::new(Returning::default());
        // Nothing on its way: at once.
        tokio::time::timeout(Duration::from_millis(100), returning.settled(Duration::MAX))
            .await
            .unwrap();
        let guard = returning.guard();
        let second = returning.guard();
        let waiter = {
            let returning = returning.clone();
            tokio::spawn(async move { returning.settled(Duration::from_secs(30)).await })
        };
        drop(guard);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "one is still on its way");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        // Bounded when a guard is never released.
        let _kept = returning.guard();
        tokio::time::timeout(
            Duration::from_secs(5),
            returning.settled(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    }

    proptest! {
        /// No band's consumer or subject is another queue's (or another band's).
        #[test]
        fn band_names_are_nobody_else_s(
            a in proptest::collection::vec(any::<u8>(), 1..80),
            b in proptest::collection::vec(any::<u8>(), 1..80),
        ) {
            let (ta, tb) = (token(&a), token(&b));
            for band in [Band::High, Band::Low] {
                prop_assert_ne!(band.consumer(&ta), tb.clone());
                prop_assert_ne!(band.subject(&ta), tb.clone());
                for other in ORDER {
                    if (a != b) || (band != other) {
                        prop_assert_ne!(band.consumer(&ta), other.consumer(&tb));
                        prop_assert_ne!(band.subject(&ta), other.subject(&tb));
                    }
                }
            }
        }
    }
}
