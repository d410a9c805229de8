//! What flows through the router: a published [`Message`] (shared, immutable, its body a `Bytes`
//! that is never copied between SEND and MESSAGE) and a [`Delivery`] of it to one subscription.

use std::sync::Arc;

use bytes::Bytes;

use crate::budget::Charge;
use crate::codec::Header;

use super::props::Props;
use super::subscription::Subscription;

/// A message as published by a SEND (after plugins), shared by every delivery of it.
#[derive(Debug)]
pub struct Message {
    /// The `destination` exactly as the SEND carried it (decoded), echoed byte-identical.
    pub destination: Bytes,
    /// User headers in the order sent, repeats kept. Server-owned headers are not here.
    pub headers: Vec<Header>,
    /// The body, shared zero-copy with the SEND's read buffer.
    pub body: Bytes,
    /// `message-id` = `<id_prefix>-<id_seq>`: the sender's session id and a per-session counter,
    /// so ids are unique without a counter shared by all connections.
    pub id_prefix: Arc<str>,
    /// The per-session counter part of `message-id` (see `id_prefix`).
    pub id_seq: u64,
    /// When the message expires (unix ms), from `expires`, `ttl` or `expiration` on SEND.
    pub expires_at: Option<u64>,
    /// `persistent:true` on SEND: journaled in queues when the store is on.
    pub persistent: bool,
    /// Its priority and message group, as its headers give them (see [`Props::read`]).
    pub props: Props,
    /// Its share of the memory budget, released when the last copy is dropped.
    pub charge: Charge,
}

/// What a message costs beyond its bytes: the `Arc`, the `Message`, its place in a queue.
const MESSAGE_OVERHEAD: u64 = 256;
/// What a header costs beyond its bytes (two `Bytes` handles).
const HEADER_OVERHEAD: u64 = 64;

/// Milliseconds since the unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Message {
    /// The same message (id, body, persistence, priority and group) under another destination
    /// and headers, and with its own expiry and budget charge (`charge` is given the copy's
    /// [`size`](Self::size)): a dead-lettered or moved copy, or a subscriber's rewritten view.
    pub fn copy_as(
        &self,
        destination: Bytes,
        headers: Vec<Header>,
        expires_at: Option<u64>,
        charge: impl FnOnce(u64) -> Charge,
    ) -> Message {
        let charge = charge(Message::size_of(&destination, &headers, &self.body));
        Message {
            destination,
            headers,
            body: self.body.clone(),
            id_prefix: self.id_prefix.clone(),
            id_seq: self.id_seq,
            expires_at,
            persistent: self.persistent,
            props: self.props.clone(),
            charge,
        }
    }

    /// About how much memory the message takes: its bytes and the structures around them.
    pub fn size(&self) -> u64 {
        Message::size_of(&self.destination, &self.headers, &self.body)
    }

    /// [`Message::size`] of a message with these parts.
    pub fn size_of(destination: &[u8], headers: &[Header], body: &[u8]) -> u64 {
        let headers: u64 = headers
            .iter()
            .map(|(n, v)| (n.len() + v.len()) as u64 + HEADER_OVERHEAD)
            .sum();
        MESSAGE_OVERHEAD + destination.len() as u64 + headers + body.len() as u64
    }

    /// Whether the message has expired at `now` (unix ms).
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Writes the `message-id` value into `out`.
    pub fn write_id(&self, out: &mut bytes::BytesMut) {
        out.extend_from_slice(self.id_prefix.as_bytes());
        out.extend_from_slice(b"-");
        out.extend_from_slice(crate::text::Decimal::new(self.id_seq).as_bytes());
    }

    /// True when `id` is this message's `message-id`.
    pub fn has_id(&self, id: &[u8]) -> bool {
        match parse_message_id(id) {
            Some((prefix, seq)) => seq == self.id_seq && prefix == self.id_prefix.as_bytes(),
            None => false,
        }
    }

    /// The first value of a user header.
    pub fn header(&self, name: &[u8]) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v)
    }
}

/// Splits a `message-id` into its session prefix and sequence number.
pub fn parse_message_id(id: &[u8]) -> Option<(&[u8], u64)> {
    let dash = id.iter().rposition(|&b| b == b'-')?;
    let seq = std::str::from_utf8(&id[dash + 1..]).ok()?.parse().ok()?;
    Some((&id[..dash], seq))
}

/// One message on its way to one subscription. Pushed into the subscriber's outbox by the
/// router; the connection's writer turns it into a MESSAGE frame.
#[derive(Debug)]
pub struct Delivery {
    /// The message, shared with its other deliveries and the queue that holds it.
    pub message: Arc<Message>,
    /// The subscription it is delivered to.
    pub subscription: Arc<Subscription>,
    /// Per-subscription delivery number; the 1.2 `ack` header is `<subscription key>.<seq>`.
    pub seq: u64,
    /// How many times the message was delivered before this delivery (0: first delivery; the
    /// MESSAGE then carries `redelivered:true` and `redelivery-count`).
    pub redeliveries: u32,
    /// The first message of its group this subscription gets (the group was just assigned to
    /// it): the MESSAGE carries `JMSXGroupFirstForConsumer:true`.
    pub first_in_group: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip() {
        let msg = Message {
            destination: Bytes::from_static(b"/queue/a"),
            headers: vec![],
            body: Bytes::new(),
            id_prefix: Arc::from("ab12-7"),
            id_seq: 99,
            expires_at: None,
            persistent: false,
            props: Props::default(),
            charge: Charge::default(),
        };
        let mut out = bytes::BytesMut::new();
        msg.write_id(&mut out);
        assert_eq!(&out[..], b"ab12-7-99");
        assert!(msg.has_id(&out));
        assert!(!msg.has_id(b"ab12-7-98"));
        assert!(!msg.has_id(b"garbage"));
    }
}
