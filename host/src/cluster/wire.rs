//! A message as it travels through NATS: the whole STOMP message (destination, headers in
//! order with repeats, any bytes in names and values, body) in the NATS payload, so nothing is
//! lost to NATS header rules (ASCII names without `:`, values without line breaks, UTF-8).
//!
//! Layout (integers big-endian):
//!
//! ```text
//! "PB" 1                        magic and version
//! u8  flags                     bit 0: persistent, bit 1: expires_at follows
//! u64 expires_at                (only with bit 1; unix ms)
//! u16 len, id_prefix            message-id = id_prefix "-" id_seq
//! u64 id_seq
//! u32 len, destination
//! u32 count, count × (u32 len, name, u32 len, value)
//! body                          the rest
//! ```
//!
//! [`decode`] trusts nothing: every length is checked against what is left before anything is
//! allocated, so a payload from a foreign publisher on our subjects is refused, not obeyed.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use std::sync::Arc;

use crate::budget::MemoryBudget;
use crate::codec::Header;
use crate::router::{Message, Props};

const MAGIC: &[u8; 3] = b"PB\x01";
const PERSISTENT: u8 = 1;
const HAS_EXPIRY: u8 = 2;

/// The parts of a message that travel (the receiving edge makes its `Message` from them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireMessage {
    /// The destination as the SEND carried it.
    pub destination: Bytes,
    /// User headers in order, repeats kept.
    pub headers: Vec<Header>,
    /// The body.
    pub body: Bytes,
    /// The sending session's part of `message-id`.
    pub id_prefix: Bytes,
    /// The per-session counter part of `message-id`.
    pub id_seq: u64,
    /// When it expires (unix ms).
    pub expires_at: Option<u64>,
    /// `persistent:true` on SEND.
    pub persistent: bool,
}

/// Why a payload is not a message of ours.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// It does not start with our magic and version.
    #[error("not a Plugboard message (unknown magic or version)")]
    Magic,
    /// A length points past the end of the payload.
    #[error("truncated at {0}")]
    Truncated(&'static str),
}

/// Encodes a message's parts into one NATS payload.
pub fn encode(
    destination: &[u8],
    headers: &[Header],
    body: &[u8],
    id_prefix: &[u8],
    id_seq: u64,
    expires_at: Option<u64>,
    persistent: bool,
) -> Bytes {
    let header_bytes: usize = headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
    let mut out = BytesMut::with_capacity(
        32 + id_prefix.len() + destination.len() + header_bytes + body.len(),
    );
    out.put_slice(MAGIC);
    let flags =
        if persistent { PERSISTENT } else { 0 } | if expires_at.is_some() { HAS_EXPIRY } else { 0 };
    out.put_u8(flags);
    if let Some(at) = expires_at {
        out.put_u64(at);
    }
    // A session id is short (instance and counter); cut at u16 in any case.
    let prefix = &id_prefix[..id_prefix.len().min(usize::from(u16::MAX))];
    out.put_u16(prefix.len() as u16);
    out.put_slice(prefix);
    out.put_u64(id_seq);
    put_bytes(&mut out, destination);
    out.put_u32(headers.len() as u32);
    for (name, value) in headers {
        put_bytes(&mut out, name);
        put_bytes(&mut out, value);
    }
    out.put_slice(body);
    out.freeze()
}

/// Encodes `message` into one NATS payload.
pub fn encode_message(message: &Message) -> Bytes {
    encode(
        &message.destination,
        &message.headers,
        &message.body,
        message.id_prefix.as_bytes(),
        message.id_seq,
        message.expires_at,
        message.persistent,
    )
}

/// The router's message for one decoded from the wire, charged to `budget`.
pub fn into_message(parts: WireMessage, budget: &Arc<MemoryBudget>) -> Message {
    let size = Message::size_of(&parts.destination, &parts.headers, &parts.body);
    Message {
        props: Props::recovered(&parts.headers),
        destination: parts.destination,
        headers: parts.headers,
        body: parts.body,
        id_prefix: Arc::from(String::from_utf8_lossy(&parts.id_prefix).as_ref()),
        id_seq: parts.id_seq,
        expires_at: parts.expires_at,
        persistent: parts.persistent,
        charge: budget.charge(size),
    }
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

/// Decodes a payload [`encode`] made; the parts share the payload's buffer (no copies).
pub fn decode(mut payload: Bytes) -> Result<WireMessage, WireError> {
    if payload.len() < MAGIC.len() + 1 || &payload[..MAGIC.len()] != MAGIC {
        return Err(WireError::Magic);
    }
    payload.advance(MAGIC.len());
    let flags = payload.get_u8();
    let expires_at = if flags & HAS_EXPIRY != 0 {
        Some(take_u64(&mut payload, "expiry")?)
    } else {
        None
    };
    let prefix_len = usize::from(take_u16(&mut payload, "message-id")?);
    let id_prefix = take(&mut payload, prefix_len, "message-id")?;
    let id_seq = take_u64(&mut payload, "message-id")?;
    let destination = take_sized(&mut payload, "destination")?;
    let count = take_u32(&mut payload, "headers")? as usize;
    // Each header takes at least 8 bytes: a count the payload cannot hold is refused before
    // anything is allocated for it.
    if count > payload.len() / 8 {
        return Err(WireError::Truncated("headers"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = take_sized(&mut payload, "header name")?;
        let value = take_sized(&mut payload, "header value")?;
        headers.push((name, value));
    }
    Ok(WireMessage {
        destination,
        headers,
        body: payload,
        id_prefix,
        id_seq,
        expires_at,
        persistent: flags & PERSISTENT != 0,
    })
}

fn take(payload: &mut Bytes, len: usize, what: &'static str) -> Result<Bytes, WireError> {
    if payload.len() < len {
        return Err(WireError::Truncated(what));
    }
    Ok(payload.split_to(len))
}

fn take_sized(payload: &mut Bytes, what: &'static str) -> Result<Bytes, WireError> {
    let len = take_u32(payload, what)? as usize;
    take(payload, len, what)
}

fn take_u16(payload: &mut Bytes, what: &'static str) -> Result<u16, WireError> {
    if payload.len() < 2 {
        return Err(WireError::Truncated(what));
    }
    Ok(payload.get_u16())
}

fn take_u32(payload: &mut Bytes, what: &'static str) -> Result<u32, WireError> {
    if payload.len() < 4 {
        return Err(WireError::Truncated(what));
    }
    Ok(payload.get_u32())
}

fn take_u64(payload: &mut Bytes, what: &'static str) -> Result<u64, WireError> {
    if payload.len() < 8 {
        return Err(WireError::Truncated(what));
    }
    Ok(payload.get_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_message_round_trips_with_repeats_and_odd_bytes() {
        let headers = vec![
            (Bytes::from_static(b"a"), Bytes::from_static(b"1")),
            (Bytes::from_static(b"a"), Bytes::from_static(b"2")),
            (
                Bytes::from_static(b"we:ird\n"),
                Bytes::from(vec![0u8, 255, 10, 13]),
            ),
        ];
        let payload = encode(b"/queue/x", &headers, b"body\0", b"ab-1", 7, Some(99), true);
        let back = decode(payload).unwrap();
        assert_eq!(back.destination, "/queue/x");
        assert_eq!(back.headers, headers);
        assert_eq!(back.body, &b"body\0"[..]);
        assert_eq!((&back.id_prefix[..], back.id_seq), (&b"ab-1"[..], 7));
        assert_eq!(back.expires_at, Some(99));
        assert!(back.persistent);
    }

    #[test]
    fn foreign_and_truncated_payloads_are_refused() {
        assert_eq!(decode(Bytes::from_static(b"hello")), Err(WireError::Magic));
        let payload = encode(b"/queue/x", &[], b"", b"p", 1, None, false);
        for cut in 0..payload.len() - 1 {
            assert!(decode(payload.slice(..cut)).is_err(), "cut at {cut}");
        }
        // A header count far beyond what the payload holds allocates nothing.
        let mut bomb = BytesMut::new();
        bomb.put_slice(MAGIC);
        bomb.put_u8(0);
        bomb.put_u16(0);
        bomb.put_u64(0);
        bomb.put_u32(0);
        bomb.put_u32(u32::MAX);
        assert_eq!(decode(bomb.freeze()), Err(WireError::Truncated("headers")));
    }

    proptest! {
        #[test]
        fn any_message_round_trips(
            destination in proptest::collection::vec(any::<u8>(), 0..40),
            headers in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..12), proptest::collection::vec(any::<u8>(), 0..12)),
                0..8,
            ),
            body in proptest::collection::vec(any::<u8>(), 0..100),
            expires in proptest::option::of(any::<u64>()),
            persistent in any::<bool>(),
        ) {
            let headers: Vec<Header> = headers
                .into_iter()
                .map(|(n, v)| (Bytes::from(n), Bytes::from(v)))
                .collect();
            let payload = encode(&destination, &headers, &body, b"i-3", 42, expires, persistent);
            let back = decode(payload).unwrap();
            prop_assert_eq!(&back.destination[..], &destination[..]);
            prop_assert_eq!(back.headers, headers);
            prop_assert_eq!(&back.body[..], &body[..]);
            prop_assert_eq!(back.expires_at, expires);
            prop_assert_eq!(back.persistent, persistent);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut payload = MAGIC.to_vec();
            payload.extend(bytes);
            let _ = decode(Bytes::from(payload));
        }
    }
}
