//! The console's access to queues by name: the queue an administrator moves messages into
//! (created if it went away), and the copy of a moved message addressed to it.

use std::sync::Arc;

use bytes::Bytes;

use super::{classify, shown, wildcard_name, Kind, Message, Queue, Router};

/// Headers the broker adds to a dead-lettered message; a message moved out of a dead-letter
/// queue loses them (it would get them afresh if it were dead-lettered again).
pub const DEAD_LETTER_HEADERS: [&[u8]; 3] = [
    b"dlq-reason",
    b"dlq-original-destination",
    b"dlq-delivery-count",
];

/// A name an administrator may move messages to is not a plain `/queue/` destination.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a queue: messages can be moved to /queue/ destinations only")]
pub struct NotAQueue(pub String);

impl Router {
    /// The `/queue/` destination `name`, created if missing.
    pub fn queue_for_admin(&self, name: &[u8]) -> Result<Arc<Queue>, NotAQueue> {
        match classify(name) {
            Ok(Kind::Queue) if wildcard_name(name).is_none() && !name.contains(&b',') => {
                Ok(self.queue(&Bytes::copy_from_slice(name)))
            }
            _ => Err(NotAQueue(shown(name))),
        }
    }

    /// The copy of `original` that enters `destination` when an administrator moves it: the
    /// same id, body, headers (but the dead-letter ones), persistence and priority, charged to
    /// the memory budget.
    pub fn moved_copy(&self, original: &Message, destination: Bytes) -> Arc<Message> {
        let headers: Vec<_> = original
            .headers
            .iter()
            .filter(|(name, _)| !DEAD_LETTER_HEADERS.contains(&name.as_ref()))
            .cloned()
            .collect();
        Arc::new(
            original.copy_as(destination, headers, original.expires_at, |size| {
                self.budget.charge(size)
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::RouterSettings;

    #[test]
    fn only_plain_queues_are_move_targets() {
        let router = Router::new(RouterSettings::default());
        assert!(router.queue_for_admin(b"/queue/orders").is_ok());
        assert_eq!(router.counts().0, 1);
        for bad in [
            &b"/topic/x"[..],
            b"/queue/",
            b"/queue/a,/queue/b",
            b"/temp-queue/t",
            b"orders",
        ] {
            assert!(router.queue_for_admin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_moved_copy_keeps_its_headers_but_the_dead_letter_ones() {
        let router = Router::new(RouterSettings::default());
        let header = |n: &'static str, v: &'static str| (Bytes::from(n), Bytes::from(v));
        let original = Message {
            destination: Bytes::from_static(b"/queue/DLQ.orders"),
            headers: vec![
                header("region", "eu"),
                header("dlq-reason", "expired"),
                header("dlq-original-destination", "/queue/orders"),
            ],
            body: Bytes::from_static(b"body"),
            id_prefix: Arc::from("s"),
            id_seq: 4,
            expires_at: None,
            persistent: true,
            props: Default::default(),
            charge: Default::default(),
        };
        let copy = router.moved_copy(&original, Bytes::from_static(b"/queue/orders"));
        assert_eq!(copy.destination, Bytes::from_static(b"/queue/orders"));
        assert_eq!(copy.headers, vec![header("region", "eu")]);
        assert_eq!((copy.id_seq, copy.persistent), (4, true));
        assert_eq!(copy.body, original.body);
    }
}
