//! Wildcard topic patterns and the index that finds, for one published topic, every pattern
//! that matches it.
//!
//! A topic name (what follows `/topic/`) is a list of segments separated by `.`. In a
//! pattern, a segment that is exactly `*` matches one segment (ActiveMQ and RabbitMQ), a
//! segment that is exactly `#` matches zero or more segments (RabbitMQ), and `>` as the last
//! segment matches zero or more segments (ActiveMQ: `a.>` matches `a`, `a.b`, `a.b.c`). A `*`,
//! `#` or `>` inside a longer segment (`a*`) is an ordinary character, as in both brokers.
//!
//! [`WildcardIndex`] keeps the patterns in a trie keyed by segment. Matching a topic walks the
//! trie once, segment by segment, carrying the set of trie nodes still alive (a `#` node stays
//! alive over any number of segments): the cost grows with the topic's segments and the
//! patterns that share its prefix, not with the number of patterns. A broker without wildcard
//! subscriptions never takes the index's lock: [`WildcardIndex::is_empty`] is one relaxed load
//! of a counter written only when a pattern is added or removed.
//!
//! It also holds the router's rules for wildcard destinations: a SEND may not name one
//! ([`check_send_name`]), a SUBSCRIBE may only on `/topic/`, and which rights a wildcard
//! subscription checks per delivered topic ([`may_read_all`], `Router::pattern_rights`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use bytes::Bytes;

use crate::plugin::Principal;
use crate::text::shown;

use super::{RouteError, QUEUE_PREFIX, REPLY_QUEUE_PREFIX, TEMP_QUEUE_PREFIX, TOPIC_PREFIX};

/// Segments of topic names are separated by this byte.
pub const SEPARATOR: u8 = b'.';

/// Why a wildcard pattern was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    /// `>` is only meaningful as the last segment.
    #[error("'>' matches the rest of a topic name: it may only be the last segment")]
    GreaterNotLast,
    /// The pattern has more segments than allowed: how many, and the limit.
    #[error("the pattern has {0} segments: at most {1} are allowed")]
    TooManySegments(usize, usize),
}

/// One segment of a pattern, as the trie reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    Literal(&'a [u8]),
    /// `*`: exactly one segment.
    One,
    /// `#` anywhere, or `>` at the end: zero or more segments.
    Many,
}

fn segments(name: &[u8]) -> impl Iterator<Item = &[u8]> {
    name.split(|&b| b == SEPARATOR)
}

fn segment(raw: &[u8]) -> Segment<'_> {
    match raw {
        b"*" => Segment::One,
        b"#" | b">" => Segment::Many,
        literal => Segment::Literal(literal),
    }
}

/// Whether a topic name (without its `/topic/` prefix) has a wildcard segment.
pub fn is_pattern(name: &[u8]) -> bool {
    // Every SEND asks: a name without any of the three bytes (the usual case) is answered by
    // one scan, before splitting it into segments.
    crate::text::has_any(name, [b'*', b'#', b'>', b'>'])
        && segments(name).any(|s| matches!(s, b"*" | b"#" | b">"))
}

/// Checks a pattern (without its `/topic/` prefix): `>` last if anywhere, at most
/// `max_segments` segments.
pub fn check_pattern(name: &[u8], max_segments: usize) -> Result<(), PatternError> {
    let count = segments(name).count();
    if count > max_segments {
        return Err(PatternError::TooManySegments(count, max_segments));
    }
    let mut parts = segments(name).peekable();
    while let Some(part) = parts.next() {
        if part == b">" && parts.peek().is_some() {
            return Err(PatternError::GreaterNotLast);
        }
    }
    Ok(())
}

/// Whether `pattern` matches `topic` (both without their prefix): the reference the index is
/// tested against, and fine for one-off checks.
pub fn matches(pattern: &[u8], topic: &[u8]) -> bool {
    let pattern: Vec<Segment<'_>> = segments(pattern).map(segment).collect();
    let topic: Vec<&[u8]> = segments(topic).collect();
    matches_from(&pattern, &topic)
}

fn matches_from(pattern: &[Segment<'_>], topic: &[&[u8]]) -> bool {
    match pattern.split_first() {
        None => topic.is_empty(),
        Some((Segment::Many, rest)) => {
            (0..=topic.len()).any(|skip| matches_from(rest, &topic[skip..]))
        }
        Some((first, rest)) => match topic.split_first() {
            None => false,
            Some((head, tail)) => {
                let fits = match first {
                    Segment::Literal(literal) => literal == head,
                    _ => true,
                };
                fits && matches_from(rest, tail)
            }
        },
    }
}

/// A destination glob (as `plugin::glob` reads them: `*` matches any run of bytes)
/// that matches every topic `pattern` matches: each wildcard segment becomes `*`, and a `#` or
/// `>` takes its neighbouring `.`s with it (it may match no segment at all). Used to check a
/// pattern against read rights conservatively.
pub fn covering_glob(pattern: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut after_many = false;
    for (i, part) in segments(pattern).enumerate() {
        let kind = segment(part);
        let many = kind == Segment::Many;
        if i > 0 && !many && !after_many {
            out.push(SEPARATOR);
        }
        match kind {
            Segment::Literal(literal) => out.extend_from_slice(literal),
            _ if out.ends_with(b"*") => {}
            _ => out.push(b'*'),
        }
        after_many = many;
    }
    out
}

/// Whether every text `inner` (a glob) matches is also matched by `outer` (a glob): a
/// sufficient test (a `*` of `inner` must be swallowed by a `*` of `outer`).
pub fn glob_covers(outer: &[u8], inner: &[u8]) -> bool {
    // covered[j]: outer[..i] covers inner[..j], row by row over i.
    let mut covered = vec![false; inner.len() + 1];
    covered[0] = true;
    for &o in outer {
        let mut next = vec![false; inner.len() + 1];
        if o == b'*' {
            // A `*` swallows any run of inner, stars included.
            let mut any = false;
            for j in 0..=inner.len() {
                any |= covered[j];
                next[j] = any;
            }
        } else {
            for j in 1..=inner.len() {
                next[j] = covered[j - 1] && inner[j - 1] == o && o != b'*';
            }
        }
        covered = next;
    }
    covered[inner.len()]
}

/// Checks that `destination` names something a client may SEND to: a known prefix, and no
/// wildcard pattern.
pub fn check_send_name(destination: &[u8]) -> Result<(), RouteError> {
    super::check_name(destination)?;
    if wildcard_name(destination).is_some() {
        return Err(RouteError::WildcardSend(shown(destination)));
    }
    Ok(())
}

/// Whether `destination` is a wildcard pattern (a segment of its name is `*`, `#` or `>`).
pub fn is_wildcard(destination: &[u8]) -> bool {
    wildcard_name(destination).is_some()
}

/// The name after the prefix, when it is a wildcard pattern.
pub(super) fn wildcard_name(destination: &[u8]) -> Option<&[u8]> {
    let name = [
        QUEUE_PREFIX,
        TOPIC_PREFIX,
        TEMP_QUEUE_PREFIX,
        REPLY_QUEUE_PREFIX,
    ]
    .iter()
    .find_map(|prefix| destination.strip_prefix(*prefix))?;
    is_pattern(name).then_some(name)
}

/// Whether `principal` may read every topic `destination` names: a concrete topic by its
/// read rights; a pattern only when one of them covers every topic the pattern can match
/// (checked conservatively, see [`glob_covers`]).
pub fn may_read_all(principal: &Principal, destination: &[u8]) -> bool {
    let Some(name) = destination
        .strip_prefix(TOPIC_PREFIX)
        .filter(|name| is_pattern(name))
    else {
        return principal.may_subscribe(destination);
    };
    let mut glob = TOPIC_PREFIX.to_vec();
    glob.extend_from_slice(&covering_glob(name));
    principal
        .may_subscribe
        .iter()
        .any(|right| right == "*" || glob_covers(right.as_bytes(), &glob))
}

impl super::Router {
    /// For a wildcard SUBSCRIBE: the pattern checked (a topic, well formed) and the rights its
    /// subscription must check per delivered topic (`None` when the principal's rights cover
    /// the whole pattern, or for a SUBSCRIBE by name). A durable one must be covered.
    pub(super) fn pattern_rights(
        &self,
        request: &super::SubscribeRequest<'_>,
    ) -> Result<Option<Box<[String]>>, super::SubscribeError> {
        let name = &request.destination;
        let Some(pattern) = wildcard_name(name) else {
            return Ok(None);
        };
        self.check_pattern_destination(name, pattern)?;
        if may_read_all(request.principal, name) {
            return Ok(None);
        }
        if request.durable.is_some() {
            return Err(super::SubscribeError::DurablePatternNotCovered(
                request.principal.name.clone(),
                shown(name),
            ));
        }
        Ok(Some(
            request.principal.may_subscribe.clone().into_boxed_slice(),
        ))
    }

    /// For a durable SUBSCRIBE to `destination` before it is claimed in the cluster: a pattern
    /// must be a well-formed topic pattern its principal may read all of (as
    /// [`Router::pattern_rights`] checks when it is attached).
    pub(super) fn check_durable_pattern(
        &self,
        destination: &[u8],
        principal: &Principal,
    ) -> Result<(), super::SubscribeError> {
        let Some(pattern) = wildcard_name(destination) else {
            return Ok(());
        };
        self.check_pattern_destination(destination, pattern)?;
        if !may_read_all(principal, destination) {
            return Err(super::SubscribeError::DurablePatternNotCovered(
                principal.name.clone(),
                shown(destination),
            ));
        }
        Ok(())
    }

    fn check_pattern_destination(&self, name: &[u8], pattern: &[u8]) -> Result<(), RouteError> {
        if !name.starts_with(TOPIC_PREFIX) {
            return Err(RouteError::WildcardNotTopic(shown(name)));
        }
        check_pattern(pattern, self.settings.limits.max_pattern_segments)
            .map_err(|err| RouteError::BadPattern(shown(name), err))
    }

    /// A stand-in for a topic nobody subscribes to by name, when some wildcard subscription
    /// matches it (`None` otherwise, and always without wildcard subscriptions).
    pub(super) fn unnamed_topic(&self, name: &Bytes) -> Option<std::sync::Arc<super::Topic>> {
        let bare = name.strip_prefix(TOPIC_PREFIX)?;
        if self.patterns.is_empty() || !self.patterns.any_match(bare) {
            return None;
        }
        let topic = super::Topic::new(name.clone(), self.settings.flow.slow_consumer_policy);
        Some(std::sync::Arc::new(
            topic.with_patterns(self.patterns.clone()),
        ))
    }

    /// How many wildcard patterns are subscribed to (for status output and tests).
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }
}

#[derive(Debug)]
struct Node<T> {
    literal: HashMap<Bytes, Node<T>>,
    one: Option<Box<Node<T>>>,
    many: Option<Box<Node<T>>>,
    /// Reached over a `#`/`>` edge: stays alive over any number of segments.
    is_many: bool,
    /// The patterns that end here (`a.#` and `a.>` end at the same node).
    values: Vec<T>,
}

impl<T> Node<T> {
    fn new(is_many: bool) -> Node<T> {
        Node {
            literal: HashMap::new(),
            one: None,
            many: None,
            is_many,
            values: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.literal.is_empty()
            && self.one.is_none()
            && self.many.is_none()
    }
}

/// Patterns and what each stands for (`T`: a pattern topic in the router, numbers in tests).
#[derive(Debug)]
pub struct WildcardIndex<T> {
    root: RwLock<Node<T>>,
    count: AtomicUsize,
}

impl<T> Default for WildcardIndex<T> {
    fn default() -> Self {
        WildcardIndex {
            root: RwLock::new(Node::new(false)),
            count: AtomicUsize::new(0),
        }
    }
}

impl<T: Clone> WildcardIndex<T> {
    /// Whether no pattern is indexed (the exact-topic fast path: no lock taken).
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0
    }

    /// How many patterns are indexed.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Adds `value` under `pattern` (without its prefix).
    pub fn insert(&self, pattern: &[u8], value: T) {
        let mut root = self.root.write().unwrap_or_else(|e| e.into_inner());
        let mut node = &mut *root;
        for part in segments(pattern) {
            node = match segment(part) {
                Segment::Literal(literal) => node
                    .literal
                    .entry(Bytes::copy_from_slice(literal))
                    .or_insert_with(|| Node::new(false)),
                Segment::One => node.one.get_or_insert_with(|| Box::new(Node::new(false))),
                Segment::Many => node.many.get_or_insert_with(|| Box::new(Node::new(true))),
            };
        }
        node.values.push(value);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes the values under `pattern` for which `is_it` holds; returns how many went.
    pub fn remove(&self, pattern: &[u8], is_it: impl Fn(&T) -> bool) -> usize {
        let mut root = self.root.write().unwrap_or_else(|e| e.into_inner());
        let parts: Vec<Segment<'_>> = segments(pattern).map(segment).collect();
        let removed = remove_at(&mut root, &parts, &is_it);
        self.count.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Every value whose pattern matches `topic` (without its prefix), appended to `out`.
    pub fn matching(&self, topic: &[u8], out: &mut Vec<T>) {
        if self.is_empty() {
            return;
        }
        let root = self.root.read().unwrap_or_else(|e| e.into_inner());
        let mut alive: Vec<&Node<T>> = Vec::new();
        enter(&root, &mut alive);
        let mut next: Vec<&Node<T>> = Vec::new();
        for part in segments(topic) {
            next.clear();
            for node in &alive {
                if let Some(child) = node.literal.get(part) {
                    enter(child, &mut next);
                }
                if let Some(child) = &node.one {
                    enter(child, &mut next);
                }
                if node.is_many {
                    enter(node, &mut next);
                }
            }
            std::mem::swap(&mut alive, &mut next);
            if alive.is_empty() {
                return;
            }
        }
        for node in alive {
            out.extend(node.values.iter().cloned());
        }
    }

    /// Whether any pattern matches `topic` (without its prefix).
    pub fn any_match(&self, topic: &[u8]) -> bool {
        let mut out = Vec::new();
        self.matching(topic, &mut out);
        !out.is_empty()
    }
}

/// Adds `node` and what it reaches without consuming a segment (its `#` child) to `alive`,
/// once each.
fn enter<'a, T>(node: &'a Node<T>, alive: &mut Vec<&'a Node<T>>) {
    let mut node = node;
    loop {
        if alive.iter().any(|n| std::ptr::eq(*n, node)) {
            return;
        }
        alive.push(node);
        match &node.many {
            Some(many) => node = many,
            None => return,
        }
    }
}

fn remove_at<T>(node: &mut Node<T>, parts: &[Segment<'_>], is_it: &impl Fn(&T) -> bool) -> usize {
    let Some((first, rest)) = parts.split_first() else {
        let before = node.values.len();
        node.values.retain(|v| !is_it(v));
        return before - node.values.len();
    };
    match first {
        Segment::Literal(literal) => {
            let Some(child) = node.literal.get_mut(*literal) else {
                return 0;
            };
            let removed = remove_at(child, rest, is_it);
            if child.is_empty() {
                node.literal.remove(*literal);
            }
            removed
        }
        Segment::One | Segment::Many => {
            let slot = if *first == Segment::One {
                &mut node.one
            } else {
                &mut node.many
            };
            let Some(child) = slot else {
                return 0;
            };
            let removed = remove_at(child, rest, is_it);
            if child.is_empty() {
                *slot = None;
            }
            removed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn found(index: &WildcardIndex<u32>, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        index.matching(topic.as_bytes(), &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn both_brokers_spellings_match_as_documented() {
        let cases: &[(&str, &str, bool)] = &[
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
            ("a.>", "a", true),
            ("a.>", "a.b.c", true),
            ("a.>", "b.c", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("a.#.c", "a.c", true),
            ("a.#.c", "a.b.d.c", true),
            ("a.#.c", "a.c.d", false),
            ("#", "x", true),
            ("#", "x.y.z", true),
            (">", "x.y", true),
            ("*.b", "a.b", true),
            ("*.b", "b", false),
            ("#.b", "b", true),
            ("a*", "ab", false),
            ("a*", "a*", true),
            ("*", "", true),
            ("a.*.c", "a..c", true),
        ];
        for &(pattern, topic, expected) in cases {
            assert_eq!(
                matches(pattern.as_bytes(), topic.as_bytes()),
                expected,
                "{pattern} {topic}"
            );
            let index = WildcardIndex::default();
            index.insert(pattern.as_bytes(), 1);
            assert_eq!(
                index.any_match(topic.as_bytes()),
                expected,
                "index: {pattern} {topic}"
            );
        }
    }

    #[test]
    fn patterns_are_recognised_and_checked() {
        assert!(is_pattern(b"a.*"));
        assert!(is_pattern(b"#"));
        assert!(is_pattern(b"a.>"));
        assert!(!is_pattern(b"a*.b"));
        assert!(!is_pattern(b"prices"));
        assert_eq!(
            check_pattern(b"a.>.b", 32),
            Err(PatternError::GreaterNotLast)
        );
        assert_eq!(
            check_pattern(b"a.b.c", 2),
            Err(PatternError::TooManySegments(3, 2))
        );
        assert_eq!(check_pattern(b"a.*.>", 32), Ok(()));
    }

    #[test]
    fn removal_prunes_and_keeps_the_others() {
        let index = WildcardIndex::default();
        index.insert(b"a.#", 1);
        index.insert(b"a.>", 2);
        index.insert(b"a.*", 3);
        assert_eq!(found(&index, "a.b"), vec![1, 2, 3]);
        assert_eq!(index.remove(b"a.#", |v| *v == 1), 1);
        assert_eq!(found(&index, "a.b"), vec![2, 3]);
        assert_eq!(index.remove(b"a.>", |v| *v == 2), 1);
        assert_eq!(index.remove(b"a.*", |v| *v == 3), 1);
        assert_eq!(index.remove(b"a.*", |v| *v == 3), 0);
        assert!(index.is_empty());
        assert!(index.root.read().unwrap().is_empty(), "every node pruned");
    }

    #[test]
    fn covering_globs_cover_what_the_pattern_matches() {
        assert_eq!(covering_glob(b"a.*"), b"a.*");
        assert_eq!(covering_glob(b"a.#"), b"a*");
        assert_eq!(covering_glob(b"a.>"), b"a*");
        assert_eq!(covering_glob(b"#.b"), b"*b");
        assert_eq!(covering_glob(b"a.#.b"), b"a*b");
        assert_eq!(covering_glob(b"*.#"), b"*");
        assert!(glob_covers(b"/topic/a.*", b"/topic/a.*"));
        assert!(glob_covers(b"/topic/*", b"/topic/a*"));
        assert!(glob_covers(b"*", b"/topic/a*.b"));
        assert!(
            !glob_covers(b"/topic/a.*", b"/topic/a*"),
            "a.# also matches a"
        );
        assert!(!glob_covers(b"/topic/a.b", b"/topic/a.*"));
        assert!(!glob_covers(b"/topic/a.*.x", b"/topic/a.*"));
    }

    fn topic_strategy() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(
            (0usize..4).prop_map(|i| ["a", "b", "c", ""][i].to_string()),
            0..6,
        )
    }

    fn pattern_strategy() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(
            (0usize..5).prop_map(|i| ["a", "b", "*", "#", ""][i].to_string()),
            1..6,
        )
        .prop_flat_map(|parts| {
            (Just(parts), any::<bool>()).prop_map(|(mut parts, gt)| {
                if gt {
                    parts.push(">".into());
                }
                parts
            })
        })
    }

    proptest! {
        #[test]
        fn the_index_finds_exactly_the_matching_patterns(
            patterns in proptest::collection::vec(pattern_strategy(), 1..20),
            topics in proptest::collection::vec(topic_strategy(), 1..10),
        ) {
            let index = WildcardIndex::default();
            let patterns: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
            for (i, p) in patterns.iter().enumerate() {
                index.insert(p.as_bytes(), i as u32);
            }
            for topic in &topics {
                let topic = topic.join(".");
                let expected: Vec<u32> = patterns
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| matches(p.as_bytes(), topic.as_bytes()))
                    .map(|(i, _)| i as u32)
                    .collect();
                prop_assert_eq!(found(&index, &topic), expected);
            }
            for (i, p) in patterns.iter().enumerate() {
                prop_assert_eq!(index.remove(p.as_bytes(), |v| *v == i as u32), 1);
            }
            prop_assert!(index.is_empty());
            prop_assert!(index.root.read().unwrap().is_empty());
        }

        #[test]
        fn a_covering_glob_matches_every_topic_the_pattern_matches(
            pattern in pattern_strategy(),
            topic in topic_strategy(),
        ) {
            let pattern = pattern.join(".");
            let topic = topic.join(".");
            if matches(pattern.as_bytes(), topic.as_bytes()) {
                let glob = covering_glob(pattern.as_bytes());
                prop_assert!(crate::plugin::glob::matches(&glob, topic.as_bytes()), "{} {}", String::from_utf8_lossy(&glob), topic);
            }
        }

        #[test]
        fn glob_covers_is_sound(
            outer in "[ab*.]{0,6}",
            inner in "[ab*.]{0,6}",
            text in "[ab.]{0,6}",
        ) {
            if glob_covers(outer.as_bytes(), inner.as_bytes())
                && crate::plugin::glob::matches(inner.as_bytes(), text.as_bytes())
            {
                prop_assert!(crate::plugin::glob::matches(outer.as_bytes(), text.as_bytes()));
            }
        }
    }
}
