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

/// At most this many segments of a topic name become tokens of its subject (more: hashed).
pub const MAX_TOPIC_SEGMENTS: usize = 64;
/// The longest segmented topic subject (longer: hashed), well within NATS's 4 KiB control
/// line.
pub const MAX_TOPIC_SUBJECT: usize = 1024;

const TOPIC_PREFIX: &[u8] = b"/topic/";

/// One segment of a topic name as a token: [`token`], and `_` for an empty segment.
fn segment_token(segment: &[u8]) -> String {
    if segment.is_empty() {
        "_".to_string()
    } else {
        token(segment)
    }
}

/// What a durable subscription's consumer filters on ([`Names::topic_filters`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilters {
    /// JetStream's `filter_subjects`, none overlapping another.
    pub subjects: Vec<String>,
    /// Whether every message they select is one the subscription takes (otherwise its edge
    /// checks each message's topic against the pattern).
    pub exact: bool,
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

    /// `/topic/NAME` → `CLUSTER.VHOST.t.s.SEG1.SEG2...`: each `.`-separated segment of `NAME`
    /// one token ([`token`]; an empty segment `_`, which no escaped name is), so that NATS
    /// wildcards select what topic wildcard patterns match ([`Names::topic_filters`]). A name
    /// of more than [`MAX_TOPIC_SEGMENTS`] segments, a subject longer than
    /// [`MAX_TOPIC_SUBJECT`], or a destination outside `/topic/` → `CLUSTER.VHOST.t.h.HASH`
    /// (the SHA-256 of the whole destination, as [`token`] hashes). Distinct destinations get
    /// distinct subjects: segment tokens decode back, and `s` and `h` keep the two forms apart.
    pub fn topic_subject(&self, destination: &[u8]) -> String {
        let segmented = destination
            .strip_prefix(TOPIC_PREFIX)
            .and_then(|name| self.segmented(name));
        segmented.unwrap_or_else(|| format!("{}.t.h.{}", self.prefix, hashed(destination)))
    }

    fn segmented(&self, name: &[u8]) -> Option<String> {
        let mut out = format!("{}.t.s", self.prefix);
        for (i, segment) in name.split(|&b| b == b'.').enumerate() {
            if i >= MAX_TOPIC_SEGMENTS {
                return None;
            }
            out.push('.');
            out.push_str(&segment_token(segment));
            if out.len() > MAX_TOPIC_SUBJECT {
                return None;
            }
        }
        Some(out)
    }

    /// The subject a topic message was published under by an edge of an earlier version:
    /// `CLUSTER.VHOST.t.TOKEN`, the whole destination one token. A durable subscription to a
    /// plain topic also takes it, so that nothing published by an edge not yet upgraded is
    /// missed during a rolling upgrade.
    pub fn legacy_topic_subject(&self, destination: &[u8]) -> String {
        format!("{}.t.{}", self.prefix, token(destination))
    }

    /// The filter subjects of a durable subscription to `destination` (a `/topic/` name or
    /// pattern, checked): together they select every message [`Names::topic_subject`] gives a
    /// topic the pattern matches (see [`crate::router::wildcard`]), and maybe some more: the
    /// subscriber's edge checks each message against the pattern (`exact` says when it need
    /// not). No two of them overlap, as JetStream requires.
    pub fn topic_filters(&self, destination: &[u8]) -> TopicFilters {
        let Some(name) = destination.strip_prefix(TOPIC_PREFIX) else {
            return TopicFilters {
                subjects: vec![self.topic_subject(destination)],
                exact: true,
            };
        };
        let segments: Vec<&[u8]> = name.split(|&b| b == b'.').collect();
        let wild = |s: &[u8]| matches!(s, b"*" | b"#" | b">");
        if !segments.iter().any(|s| wild(s)) {
            let subject = self.topic_subject(destination);
            let legacy = self.legacy_topic_subject(destination);
            return TopicFilters {
                subjects: vec![subject, legacy],
                exact: true,
            };
        }
        // Up to the first multi-segment wildcard, each segment is a token or `*`.
        let many = segments.iter().position(|s| matches!(*s, b"#" | b">"));
        let fixed = &segments[..many.unwrap_or(segments.len())];
        let mut prefix = format!("{}.t.s", self.prefix);
        for segment in fixed {
            prefix.push('.');
            if *segment == b"*" {
                prefix.push('*');
            } else {
                prefix.push_str(&segment_token(segment));
            }
        }
        // A pattern this long matches only topics too long for the segmented form.
        let fits = fixed.len() <= MAX_TOPIC_SEGMENTS && prefix.len() <= MAX_TOPIC_SUBJECT;
        let mut subjects = Vec::with_capacity(3);
        if fits {
            match many {
                None => subjects.push(prefix),
                Some(at) => {
                    // `a.#` and `a.>` match `a` itself (a topic has at least one segment).
                    let rest_is_many = segments[at..].iter().all(|s| matches!(*s, b"#" | b">"));
                    if rest_is_many && !fixed.is_empty() {
                        subjects.push(prefix.clone());
                    }
                    subjects.push(format!("{prefix}.>"));
                }
            }
        }
        // Topics too long for the segmented form are hashed: each one is checked on the edge,
        // as is every message of a pattern with a `#` before its end.
        subjects.push(format!("{}.t.h.*", self.prefix));
        TopicFilters {
            subjects,
            exact: false,
        }
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

    /// The work-queue stream of the `[[queues]]` entry with pattern `pattern` (a queue class:
    /// [`super::classes`]): `CLUSTER_VHOST_qc_PTOKEN` (with `""`: the start every class
    /// stream's name of the vhost has, which no other stream's has: `_q` is no escape).
    pub fn class_stream(&self, pattern: &str) -> String {
        format!("{}_qc_{}", self.base, token(pattern.as_bytes()))
    }

    /// The subjects that stream takes: `CLUSTER.VHOST.c.PTOKEN.>`.
    pub fn class_subjects(&self, pattern: &str) -> String {
        format!("{}.c.{}.>", self.prefix, token(pattern.as_bytes()))
    }

    /// Queue `destination` of that class → `CLUSTER.VHOST.c.PTOKEN.TOKEN`.
    pub fn class_queue_subject(&self, pattern: &str, destination: &[u8]) -> String {
        format!(
            "{}.c.{}.{}",
            self.prefix,
            token(pattern.as_bytes()),
            token(destination)
        )
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
        assert_eq!(names.topic_subject(b"/topic/x"), "pb._2F.t.s.x");
        assert_eq!(
            names.legacy_topic_subject(b"/topic/x"),
            "pb._2F.t._2Ftopic_2Fx"
        );
        assert_eq!(names.topic_wildcard(), "pb._2F.t.>");
        assert_eq!(names.topic_stream(), "pb__2F_topics");
        assert_eq!(names.lease_bucket(), "pb__2F_durables");
        assert_eq!(
            names.durable_consumer(b"durable:alice/app/orders"),
            "durable_3Aalice_2Fapp_2Forders"
        );
        assert_eq!(names.reply_subject("0a1b"), "pb._2F.r.0a1b");
        assert_eq!(
            names.class_stream("/queue/orders.*"),
            "pb__2F_qc__2Fqueue_2Forders_2E_2A"
        );
        assert_eq!(
            names.class_subjects("/queue/o.*"),
            "pb._2F.c._2Fqueue_2Fo_2E_2A.>"
        );
        assert_eq!(
            names.class_queue_subject("/queue/o.*", b"/queue/o.a"),
            "pb._2F.c._2Fqueue_2Fo_2E_2A._2Fqueue_2Fo_2Ea"
        );
    }

    /// NATS's rule: whether filter `filter` selects `subject` (`*` one token, a last `>` one
    /// or more).
    fn nats_matches(filter: &str, subject: &str) -> bool {
        let f: Vec<&str> = filter.split('.').collect();
        let s: Vec<&str> = subject.split('.').collect();
        for (i, token) in f.iter().enumerate() {
            match *token {
                ">" => return s.len() > i,
                "*" if i < s.len() => {}
                t if i < s.len() && s[i] == t => {}
                _ => return false,
            }
        }
        f.len() == s.len()
    }

    /// Whether some subject is selected by both filters.
    fn overlap(a: &str, b: &str) -> bool {
        let a: Vec<&str> = a.split('.').collect();
        let b: Vec<&str> = b.split('.').collect();
        for i in 0.. {
            match (a.get(i), b.get(i)) {
                (Some(&">"), Some(_)) | (Some(_), Some(&">")) => return true,
                (None, None) => return true,
                (Some(x), Some(y)) if *x == "*" || *y == "*" || x == y => {}
                _ => return false,
            }
        }
        unreachable!()
    }

    #[test]
    fn topic_segments_are_tokens_of_their_own() {
        let names = Names::new("pb", "v");
        assert_eq!(names.topic_subject(b"/topic/a.b"), "pb.v.t.s.a.b");
        assert_eq!(names.topic_subject(b"/topic/a..b."), "pb.v.t.s.a._.b._");
        assert_eq!(names.topic_subject(b"/topic/"), "pb.v.t.s._");
        assert_eq!(names.topic_subject(b"/topic/a*.>"), "pb.v.t.s.a_2A._3E");
        assert_eq!(names.topic_subject(b"/topic/_"), "pb.v.t.s._5F");
        // Too many segments, or too long: one hashed token.
        let deep = [b"/topic/".as_slice(), &b"x.".repeat(MAX_TOPIC_SEGMENTS)].concat();
        assert!(names.topic_subject(&deep).starts_with("pb.v.t.h._Z"));
        let long = [b"/topic/".as_slice(), &b"a.".repeat(60), &[b'.'; 400]].concat();
        assert!(names.topic_subject(&long).starts_with("pb.v.t.h._Z"));
        assert!(names.topic_subject(b"/queue/x").starts_with("pb.v.t.h._Z"));
    }

    #[test]
    fn pattern_filters() {
        let names = Names::new("pb", "v");
        let filters = |p: &[u8]| names.topic_filters(p);
        assert_eq!(
            filters(b"/topic/a.b"),
            TopicFilters {
                subjects: vec!["pb.v.t.s.a.b".into(), "pb.v.t._2Ftopic_2Fa_2Eb".into()],
                exact: true
            }
        );
        assert_eq!(
            filters(b"/topic/a.*.c").subjects,
            ["pb.v.t.s.a.*.c", "pb.v.t.h.*"]
        );
        assert_eq!(
            filters(b"/topic/a.>").subjects,
            ["pb.v.t.s.a", "pb.v.t.s.a.>", "pb.v.t.h.*"]
        );
        assert_eq!(
            filters(b"/topic/a.#.c").subjects,
            ["pb.v.t.s.a.>", "pb.v.t.h.*"]
        );
        assert_eq!(filters(b"/topic/#").subjects, ["pb.v.t.s.>", "pb.v.t.h.*"]);
        assert!(!filters(b"/topic/*").exact);
    }

    fn topic_name() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::sample::select(vec!["a", "b", "", "a_2E", "*x", "long-segment"]),
            1..6,
        )
        .prop_map(|segments| segments.join(".").into_bytes())
    }

    fn pattern() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::sample::select(vec!["a", "b", "", "*", "#", ">"]),
            1..5,
        )
        .prop_map(|segments| segments.join(".").into_bytes())
        .prop_filter("a valid pattern", |p| {
            crate::router::wildcard::check_pattern(p, 32).is_ok()
        })
    }

    proptest! {
        #[test]
        fn a_pattern_s_filters_select_every_topic_it_matches(topic in topic_name(), pattern in pattern()) {
            let names = Names::new("pb", "v");
            let destination = [b"/topic/".as_slice(), &topic].concat();
            let subject = names.topic_subject(&destination);
            let filters = names.topic_filters(&[b"/topic/".as_slice(), &pattern].concat());
            let selected = filters.subjects.iter().any(|f| nats_matches(f, &subject));
            if crate::router::wildcard::matches(&pattern, &topic) {
                prop_assert!(selected, "{:?} misses {}", filters, subject);
            }
            if filters.exact {
                prop_assert_eq!(selected, crate::router::wildcard::matches(&pattern, &topic));
            }
            for (i, a) in filters.subjects.iter().enumerate() {
                for b in &filters.subjects[i + 1..] {
                    prop_assert!(!overlap(a, b), "{} overlaps {}", a, b);
                }
            }
        }

        #[test]
        fn distinct_topics_get_distinct_subjects(a in topic_name(), b in topic_name()) {
            prop_assume!(a != b);
            let names = Names::new("pb", "v");
            let subject = |t: &[u8]| names.topic_subject(&[b"/topic/".as_slice(), t].concat());
            prop_assert_ne!(subject(&a), subject(&b));
        }

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
