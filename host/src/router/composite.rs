//! Composite destinations (ActiveMQ): one `destination` naming several, separated by commas.
//! `SEND destination:/queue/a,/topic/b` delivers a copy to each part; `SUBSCRIBE
//! destination:/queue/a,/queue/b` is one subscription (one `id`) consuming from every part.
//!
//! A part without a `/` takes the prefix of the part before it, as ActiveMQ reads
//! `/queue/a,b` (both queues). Empty parts are refused, parts named twice count once, and a
//! destination may have at most `limits.max_composite_parts` parts. Each part is then checked
//! as any destination is (the caller's job: rights, wildcards).
//!
//! A composite subscription is one subscription per part, all with the SUBSCRIBE's `id`; the
//! connection keeps them together ([`Router::attach_composite`]) so that the `id` names all of
//! them: UNSUBSCRIBE ends every part, and an ACK naming the `id` and a `message-id` finds the
//! part that delivered the message.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::text::shown;

use super::connection::{table_key, Connection};
use super::subscription::Subscription;
use super::{PreparedSubscription, RouteError, Router};
use super::{QUEUE_PREFIX, REPLY_QUEUE_PREFIX, TEMP_QUEUE_PREFIX, TOPIC_PREFIX};

/// Separates the parts of a composite destination.
pub const SEPARATOR: u8 = b',';

/// Whether `destination` names several destinations.
pub fn is_composite(destination: &[u8]) -> bool {
    crate::text::has_any(destination, [SEPARATOR; 4])
}

/// The parts of a composite destination, in order, each once.
pub fn parts(destination: &Bytes, max_parts: usize) -> Result<Vec<Bytes>, RouteError> {
    let count = destination.iter().filter(|&&b| b == SEPARATOR).count() + 1;
    if count > max_parts {
        return Err(RouteError::TooManyParts(
            shown(destination),
            count,
            max_parts,
        ));
    }
    let mut parts: Vec<Bytes> = Vec::with_capacity(count);
    let mut prefix: &[u8] = &[];
    let mut start = 0;
    for raw in destination.split(|&b| b == SEPARATOR) {
        let range = start..start + raw.len();
        start = range.end + 1;
        if raw.is_empty() {
            return Err(RouteError::EmptyPart(shown(destination)));
        }
        let part = if raw.starts_with(b"/") {
            prefix = known_prefix(raw);
            destination.slice(range)
        } else {
            let mut full = BytesMut::with_capacity(prefix.len() + raw.len());
            full.extend_from_slice(prefix);
            full.extend_from_slice(raw);
            full.freeze()
        };
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    Ok(parts)
}

fn known_prefix(part: &[u8]) -> &'static [u8] {
    [
        QUEUE_PREFIX,
        TOPIC_PREFIX,
        TEMP_QUEUE_PREFIX,
        REPLY_QUEUE_PREFIX,
    ]
    .into_iter()
    .find(|prefix| part.starts_with(prefix))
    .unwrap_or_default()
}

impl Router {
    /// Attaches the parts of a composite subscription (prepared in order) as one: the
    /// SUBSCRIBE `id` (or, for 1.0 without one, the whole `destination`) names the first part,
    /// and the connection knows the others belong with it.
    pub fn attach_composite(
        &self,
        conn: &mut Connection,
        wire_id: Option<&Bytes>,
        destination: &Bytes,
        prepared: Vec<PreparedSubscription>,
    ) -> Vec<Arc<Subscription>> {
        let attached: Vec<Arc<Subscription>> = prepared
            .into_iter()
            .map(|part| self.attach(conn, part))
            .collect();
        for part in &attached {
            conn.by_wire_id
                .remove(&table_key(part.wire_id.as_ref(), &part.destination));
        }
        let Some(head) = attached.first() else {
            return attached;
        };
        let name = table_key(wire_id, destination);
        conn.by_wire_id.insert(name.clone(), head.key);
        let keys = attached.iter().map(|part| part.key).collect();
        conn.composites.insert(head.key, (name, keys));
        attached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(destination: &str, max: usize) -> Result<Vec<String>, RouteError> {
        parts(&Bytes::copy_from_slice(destination.as_bytes()), max).map(|parts| {
            parts
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        })
    }

    #[test]
    fn parts_keep_their_order_and_inherit_a_missing_prefix() {
        assert_eq!(
            split("/queue/a,/topic/b", 16).unwrap(),
            vec!["/queue/a", "/topic/b"]
        );
        assert_eq!(
            split("/queue/a,b,/topic/c,d", 16).unwrap(),
            vec!["/queue/a", "/queue/b", "/topic/c", "/topic/d"]
        );
        assert_eq!(
            split("/queue/a,/queue/a,a", 16).unwrap(),
            vec!["/queue/a"],
            "each part once"
        );
        // A part with an unknown prefix is kept as written (and refused by the name check).
        assert_eq!(split("/nope/a,b", 16).unwrap(), vec!["/nope/a", "b"]);
    }

    #[test]
    fn empty_parts_and_too_many_parts_are_refused() {
        for bad in ["/queue/a,", ",/queue/a", "/queue/a,,/queue/b", ","] {
            assert!(
                matches!(split(bad, 16), Err(RouteError::EmptyPart(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            split("/queue/a,b,c", 2),
            Err(RouteError::TooManyParts(_, 3, 2))
        ));
        assert_eq!(split("/queue/a,b", 2).unwrap().len(), 2);
    }
}
