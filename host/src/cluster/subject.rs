//! Destination names → NATS subject tokens, stream and consumer names.
//!
//! A STOMP destination may hold any byte; a NATS subject token may not hold `.` (the token
//! separator), `*` or `>` (wildcards), whitespace, and stream and consumer names may not hold
//! `/` or `\` either. [`token`] maps a name to one token of `[A-Za-z0-9_-]` only:
//!
//! - letters, digits and `-` stay as they are;
//! - every other byte (including `_` itself, `.`, `/`, `*`, `>`, spaces and each byte of a
//!   non-ASCII character) becomes `_` and two upper-case hex digits: `orders.eu` →
//!   `orders_2Eeu`, `a_b` → `a_5Fb`;
//! - a result longer than [`MAX_TOKEN`] becomes `_Z` and the SHA-256 of the name in hex (66
//!   characters).
//!
//! Distinct names give distinct tokens: the escaped form decodes back unambiguously
//! ([`untoken`]), and `_Z` never starts an escape (`Z` is no hex digit), so a hashed token
//! cannot equal an escaped one; two long names share a token only if SHA-256 collides.

use sha2::{Digest, Sha256};

/// The longest escaped token kept as it is; longer ones are hashed. NATS allows much longer
/// subjects, but every queue's token is also its consumer's name, and the shorter, the cheaper
/// each message's subject.
pub const MAX_TOKEN: usize = 128;

/// The token of `name` (see the module docs): `[A-Za-z0-9_-]`, at most [`MAX_TOKEN`] bytes, or
/// `_Z` + 64 hex digits.
pub fn token(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len().min(MAX_TOKEN + 2));
    for &b in name {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push('_');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0xf));
        }
        if out.len() > MAX_TOKEN {
            return hashed(name);
        }
    }
    out
}

fn hashed(name: &[u8]) -> String {
    let digest = Sha256::digest(name);
    let mut out = String::with_capacity(66);
    out.push_str("_Z");
    for b in digest {
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b & 0xf));
    }
    out
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(nibble & 0xf)])
}

/// The name an escaped (not hashed) token stands for; `None` for a hashed token or anything
/// [`token`] never makes.
pub fn untoken(token: &str) -> Option<Vec<u8>> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let high = hex_value(hex[0])?;
                let low = hex_value(hex[1])?;
                out.push(high << 4 | low);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The subjects, stream and consumer names of one virtual host in one cluster.
#[derive(Debug, Clone)]
pub struct Names {
    /// `CLUSTER.VHOST`: the first two tokens of every subject of this vhost.
    prefix: String,
    /// The vhost's work-queue stream.
    stream: String,
    /// `CLUSTER_VHOST`: the start of the vhost's stream and bucket names.
    base: String,
}

impl Names {
    /// The names of vhost `vhost` in cluster `cluster` (a name already validated as a token).
    pub fn new(cluster: &str, vhost: &str) -> Names {
        let vhost = token(vhost.as_bytes());
        Names {
            prefix: format!("{cluster}.{vhost}"),
            stream: format!("{cluster}_{vhost}_queues"),
            base: format!("{cluster}_{vhost}"),
        }
    }

    /// The work-queue stream holding every `/queue/` of the vhost.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The subjects the queue stream takes: `CLUSTER.VHOST.q.>`.
    pub fn queue_subjects(&self) -> String {
        format!("{}.q.>", self.prefix)
    }

    /// `/queue/NAME` (the whole destination) → `CLUSTER.VHOST.q.TOKEN`.
    pub fn queue_subject(&self, destination: &[u8]) -> String {
        format!("{}.q.{}", self.prefix, token(destination))
    }

    /// The durable consumer every edge shares for queue `destination`.
    pub fn queue_consumer(&self, destination: &[u8]) -> String {
        token(destination)
    }

    /// `/topic/NAME` → `CLUSTER.VHOST.t.TOKEN` (core NATS, nothing stored).
    pub fn topic_subject(&self, destination: &[u8]) -> String {
        format!("{}.t.{}", self.prefix, token(destination))
    }

    /// What an edge subscribes to for the vhost's topics: `CLUSTER.VHOST.t.>`.
    pub fn topic_wildcard(&self) -> String {
        format!("{}.t.>", self.prefix)
    }

    /// The interest stream on the topic subjects, holding messages for the durable
    /// subscriptions: `CLUSTER_VHOST_topics`.
    pub fn topic_stream(&self) -> String {
        format!("{}_topics", self.base)
    }

    /// The key-value bucket of the durable subscriptions' attachment leases:
    /// `CLUSTER_VHOST_durables`.
    pub fn lease_bucket(&self) -> String {
        format!("{}_durables", self.base)
    }

    /// The durable consumer of a durable subscription whose router queue name is `queue`
    /// (`durable:OWNER/CLIENT/NAME`, itself escaped without collisions): its token.
    pub fn durable_consumer(&self, queue: &[u8]) -> String {
        token(queue)
    }

    /// The core subject edge `edge` takes the replies to its temporary queues on:
    /// `CLUSTER.VHOST.r.EDGE`.
    pub fn reply_subject(&self, edge: &str) -> String {
        format!("{}.r.{edge}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid(token: &str) -> bool {
        !token.is_empty()
            && token.len() <= MAX_TOKEN.max(66)
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn reserved_characters_are_escaped() {
        assert_eq!(token(b"/queue/orders.eu"), "_2Fqueue_2Forders_2Eeu");
        assert_eq!(token(b"a_b"), "a_5Fb");
        assert_eq!(token(b"a*b>c d"), "a_2Ab_3Ec_20d");
        assert_eq!(token("é".as_bytes()), "_C3_A9");
        assert_eq!(token(b"plain-Name9"), "plain-Name9");
    }

    #[test]
    fn names_that_look_alike_stay_apart() {
        // '.' and '/' and '_' are each their own escape; an escaped '_' never reads as '.'.
        let names: [&[u8]; 6] = [b"a.b", b"a/b", b"a_b", b"a_2Eb", b"a2Eb", b"a-b"];
        let tokens: std::collections::HashSet<String> = names.iter().map(|n| token(n)).collect();
        assert_eq!(tokens.len(), names.len());
    }

    #[test]
    fn long_names_are_hashed_and_bounded() {
        let long = vec![b'x'; 500];
        let t = token(&long);
        assert!(t.starts_with("_Z") && t.len() == 66, "{t}");
        assert_eq!(untoken(&t), None);
        let mut other = long.clone();
        other[499] = b'y';
        assert_ne!(token(&other), t);
        // Exactly at the bound: kept; one escape more: hashed.
        assert_eq!(token(&[b'a'; MAX_TOKEN]).len(), MAX_TOKEN);
        assert!(token(&[b'.'; 43]).starts_with("_Z"));
    }

    #[test]
    fn subjects_and_stream_names() {
        let names = Names::new("pb", "/");
        assert_eq!(names.stream(), "pb__2F_queues");
        assert_eq!(names.queue_subjects(), "pb._2F.q.>");
        assert_eq!(
            names.queue_subject(b"/queue/a.b"),
            "pb._2F.q._2Fqueue_2Fa_2Eb"
        );
        assert_eq!(names.topic_subject(b"/topic/x"), "pb._2F.t._2Ftopic_2Fx");
        assert_eq!(names.topic_wildcard(), "pb._2F.t.>");
        assert_eq!(names.topic_stream(), "pb__2F_topics");
        assert_eq!(names.lease_bucket(), "pb__2F_durables");
        assert_eq!(
            names.durable_consumer(b"durable:alice/app/orders"),
            "durable_3Aalice_2Fapp_2Forders"
        );
        assert_eq!(names.reply_subject("0a1b"), "pb._2F.r.0a1b");
    }

    proptest! {
        #[test]
        fn tokens_are_valid_and_round_trip(name in proptest::collection::vec(any::<u8>(), 1..200)) {
            let t = token(&name);
            prop_assert!(valid(&t), "invalid token {}", t);
            match untoken(&t) {
                Some(back) => prop_assert_eq!(back, name),
                None => prop_assert!(t.starts_with("_Z") && t.len() == 66),
            }
        }

        #[test]
        fn distinct_names_give_distinct_tokens(
            a in proptest::collection::vec(any::<u8>(), 1..80),
            b in proptest::collection::vec(any::<u8>(), 1..80),
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(token(&a), token(&b));
        }

        #[test]
        fn printable_names_round_trip(name in "[ -~]{1,40}") {
            let t = token(name.as_bytes());
            prop_assert!(valid(&t));
            prop_assert_eq!(untoken(&t).unwrap(), name.into_bytes());
        }
    }
}
