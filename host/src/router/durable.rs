//! Who owns a durable topic subscription, and the name of the queue that holds its messages.
//!
//! A durable subscription belongs to the authenticated principal that made it; CONNECT's
//! `client-id` (JMS's client id) and the subscription name only tell apart the subscriptions of
//! one principal. Neither is ever identity on its own: a client that claims another's
//! `client-id` reaches only its own principal's subscriptions.
//!
//! The queue name is `durable:` followed by the three parts, each percent-escaped so that it
//! holds no `/`, `:` or control byte, joined by `/`: no choice of parts can make two keys share
//! a name. Journals written before this scheme named the queue `durable:CLIENT:NAME` (CLIENT
//! being the client-id, or else the login); [`DurableKey::from_legacy`] reads such a name as
//! owned by the principal named CLIENT.

use bytes::{BufMut, Bytes, BytesMut};

use super::DURABLE_PREFIX;

/// A durable subscription's owner and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DurableKey {
    /// The principal's name.
    pub owner: String,
    /// CONNECT's `client-id` (empty when none was given).
    pub client_id: Bytes,
    /// The subscription name (or the SUBSCRIBE `id` for `durable:true`).
    pub name: Bytes,
}

impl DurableKey {
    /// The name of the queue holding this subscription's messages.
    pub fn queue_name(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(
            DURABLE_PREFIX.len() + self.owner.len() + self.client_id.len() + self.name.len() + 2,
        );
        out.put_slice(DURABLE_PREFIX);
        escape(self.owner.as_bytes(), &mut out);
        out.put_u8(b'/');
        escape(&self.client_id, &mut out);
        out.put_u8(b'/');
        escape(&self.name, &mut out);
        out.freeze()
    }

    /// Reads a queue name made by [`queue_name`](Self::queue_name).
    pub fn parse(queue: &[u8]) -> Option<DurableKey> {
        let rest = queue.strip_prefix(DURABLE_PREFIX)?;
        if rest.contains(&b':') {
            return None;
        }
        let mut parts = rest.split(|&b| b == b'/');
        let (owner, client_id, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(DurableKey {
            owner: String::from_utf8(unescape(owner)?).ok()?,
            client_id: Bytes::from(unescape(client_id)?),
            name: Bytes::from(unescape(name)?),
        })
    }

    /// Reads a queue name of the scheme before this one, `durable:CLIENT:NAME`.
    pub fn from_legacy(queue: &[u8]) -> Option<DurableKey> {
        let rest = queue.strip_prefix(DURABLE_PREFIX)?;
        let colon = rest.iter().position(|&b| b == b':')?;
        Some(DurableKey {
            owner: String::from_utf8_lossy(&rest[..colon]).into_owned(),
            client_id: Bytes::new(),
            name: Bytes::copy_from_slice(&rest[colon + 1..]),
        })
    }

    /// The owner and name for messages and logs (control bytes dropped).
    pub fn describe(&self) -> String {
        let name: String = String::from_utf8_lossy(&self.name)
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        format!("'{name}' of '{}'", self.owner)
    }
}

fn escape(part: &[u8], out: &mut BytesMut) {
    for &b in part {
        if b == b'%' || b == b'/' || b == b':' || b.is_ascii_control() || b >= 0x7f {
            out.put_u8(b'%');
            out.put_slice(&crate::text::hex_byte(b));
        } else {
            out.put_u8(b);
        }
    }
}

fn unescape(part: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(part.len());
    let mut i = 0;
    while i < part.len() {
        if part[i] == b'%' {
            let hex = part.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(part[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(owner: &str, client: &[u8], name: &[u8]) -> DurableKey {
        DurableKey {
            owner: owner.to_string(),
            client_id: Bytes::copy_from_slice(client),
            name: Bytes::copy_from_slice(name),
        }
    }

    #[test]
    fn names_do_not_collide_whatever_the_parts_hold() {
        // Joined with ':' these were all `durable:a:b:c`.
        let keys = [
            key("a", b"b:c", b""),
            key("a", b"b", b"c"),
            key("a:b", b"", b"c"),
            key("a", b"", b"b:c"),
            key("a/b", b"", b"c"),
            key("a", b"b/c", b""),
        ];
        let names: std::collections::HashSet<Bytes> = keys.iter().map(|k| k.queue_name()).collect();
        assert_eq!(names.len(), keys.len());
        assert_eq!(
            key("alice", b"app", b"orders").queue_name().as_ref(),
            b"durable:alice/app/orders"
        );
    }

    #[test]
    fn legacy_names_are_read_as_owned_by_their_client_part() {
        let legacy = key("bob", b"", b"news:eu");
        assert_eq!(
            DurableKey::from_legacy(b"durable:bob:news:eu"),
            Some(legacy)
        );
        assert_eq!(
            DurableKey::parse(b"durable:bob:news"),
            None,
            "not the new scheme"
        );
        assert_eq!(DurableKey::from_legacy(b"durable:nocolon"), None);
    }

    proptest! {
        #[test]
        fn queue_names_round_trip(owner in ".{0,20}", client in proptest::collection::vec(any::<u8>(), 0..20), name in proptest::collection::vec(any::<u8>(), 0..20)) {
            let k = key(&owner, &client, &name);
            let queue = k.queue_name();
            prop_assert!(!queue[DURABLE_PREFIX.len()..].contains(&b':'));
            prop_assert_eq!(DurableKey::parse(&queue), Some(k));
        }
    }
}
