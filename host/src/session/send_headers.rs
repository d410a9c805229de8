//! Which of the headers that change how a message is delivered a SEND carries, found in one
//! pass: delivery properties (`priority`, `JMSXGroupID`, `JMSXGroupSeq`, read by
//! [`Props`](crate::router::Props)), scheduling (`AMQ_SCHEDULED_*`, `x-delay`, `deliver-at`,
//! `_AMQ_SCHED_DELIVERY`, read by [`Schedule`](crate::router::Schedule)), queue arguments
//! (`x-*`, read by [`QueueArgs`](crate::router::QueueArgs)) and expiry (`expires`, `ttl`,
//! `expiration`).
//!
//! Every SEND goes through this, and most carry none of these headers: one look at each
//! header's length and first bytes answers for all four readers, which then run only for what
//! was seen. The look is a superset (a header it flags may still be none of the reader's: the
//! reader decides); the tests below check that it never misses a name a reader reads.

use crate::codec::Header;

/// The kinds of delivery headers present (possibly: see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Mentions {
    pub props: bool,
    pub schedule: bool,
    pub queue_args: bool,
    pub expiry: bool,
}

impl Mentions {
    /// Looks at every header name once.
    pub(super) fn of(headers: &[Header]) -> Mentions {
        let mut seen = Mentions::default();
        for (name, _) in headers {
            let (Some(&first), len) = (name.first(), name.len()) else {
                continue;
            };
            match (first, len) {
                (b'p', 8) | (b'J', 11 | 12) => seen.props = true,
                (b'A' | b'_', 18..=20) | (b'd', 10) => seen.schedule = true,
                (b'x', _) if name.get(1) == Some(&b'-') => {
                    // `x-delay` schedules; the other `x-` names are queue arguments.
                    seen.queue_args = true;
                    seen.schedule = true;
                }
                (b'e', 7 | 10) | (b't', 3) => seen.expiry = true,
                _ => {}
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn of(names: &[&'static str]) -> Mentions {
        let headers: Vec<Header> = names
            .iter()
            .map(|n| (Bytes::from_static(n.as_bytes()), Bytes::from_static(b"1")))
            .collect();
        Mentions::of(&headers)
    }

    #[test]
    fn plain_headers_mention_nothing() {
        let plain = [
            "content-type",
            "persistent",
            "reply-to",
            "correlation-id",
            "",
            "x",
            "custom",
        ];
        assert_eq!(of(&plain), Mentions::default());
    }

    #[test]
    fn every_name_a_reader_reads_is_seen() {
        for name in ["priority", "JMSXGroupID", "JMSXGroupSeq"] {
            assert!(of(&[name]).props, "{name}");
        }
        for name in [
            "AMQ_SCHEDULED_DELAY",
            "AMQ_SCHEDULED_TIME",
            "AMQ_SCHEDULED_PERIOD",
            "AMQ_SCHEDULED_REPEAT",
            "AMQ_SCHEDULED_CRON",
            "_AMQ_SCHED_DELIVERY",
            "x-delay",
            "deliver-at",
        ] {
            assert!(of(&[name]).schedule, "{name}");
        }
        for name in [
            "x-max-length",
            "x-max-length-bytes",
            "x-message-ttl",
            "x-overflow",
        ] {
            assert!(of(&[name]).queue_args, "{name}");
        }
        for name in ["expires", "ttl", "expiration"] {
            assert!(of(&[name]).expiry, "{name}");
        }
    }

    /// The readers themselves agree: a message with none of the flags set reads as defaults.
    #[test]
    fn unflagged_headers_read_as_defaults() {
        let headers: Vec<Header> = ["content-type", "persistent", "x", "custom-header"]
            .iter()
            .map(|n| (Bytes::from_static(n.as_bytes()), Bytes::from_static(b"5")))
            .collect();
        assert_eq!(Mentions::of(&headers), Mentions::default());
        assert_eq!(
            crate::router::Props::read(&headers).unwrap(),
            crate::router::Props::default()
        );
        assert!(crate::router::QueueArgs::from_headers(&headers)
            .unwrap()
            .is_none());
    }
}
