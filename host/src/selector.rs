//! Native message selectors: the `selector` header of a SUBSCRIBE, compiled once when the
//! subscription is made and judged against each delivery by the connection's writer, before any
//! message filter plugin (a delivery it declines never reaches a plugin).
//!
//! The syntax and its bounds are those of the crate `plugboard-selector`, which the `selector`
//! plugin runs too (JMS/ActiveMQ: comparisons, `AND OR NOT`, `IN`, `LIKE … ESCAPE`, `BETWEEN`,
//! `IS [NOT] NULL`; at most [`MAX_SELECTOR_BYTES`] bytes and [`MAX_OPERANDS`] operands; the JMS
//! header names ActiveMQ maps STOMP headers to, such as `JMSType` and `JMSPriority`, read those
//! headers). A message is judged on its own headers, first occurrence of a repeated one; a value
//! that is not UTF-8 counts as absent. A declined delivery is a filter's `Skip`: a queue offers
//! the message to its other consumers (and keeps it for a later one when every consumer declined
//! it); a topic subscription, durable or not, does without it.

use bytes::Bytes;
pub use plugboard_selector::{
    Selector, MAX_LIKE_CHARS, MAX_NESTING, MAX_OPERANDS, MAX_SELECTOR_BYTES,
};

use crate::router::Message;

/// The SUBSCRIBE header that carries a selector (ActiveMQ's, Artemis's and Apollo's spelling;
/// RabbitMQ has none).
pub const HEADER: &[u8] = b"selector";

/// The selector of a SUBSCRIBE with these headers (its first `selector` header), compiled;
/// `Err` says why it is refused (`selector: column N: ...`).
pub fn from_subscribe(headers: &[(Bytes, Bytes)]) -> Result<Option<Selector>, String> {
    let Some((_, value)) = headers.iter().find(|(name, _)| name.as_ref() == HEADER) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(value).map_err(|_| "selector: not UTF-8".to_string())?;
    Selector::compile(text).map(Some).map_err(|e| e.to_string())
}

/// Whether `message` matches `selector` (reads only the headers the selector names; no
/// allocation).
pub fn matches(selector: &Selector, message: &Message) -> bool {
    selector.matches(|name| {
        message
            .headers
            .iter()
            .find(|(n, _)| n.as_ref() == name.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
        list.iter()
            .map(|(n, v)| (Bytes::from(n.to_string()), Bytes::from(v.to_string())))
            .collect()
    }

    fn message(list: &[(&str, &str)]) -> Message {
        Message {
            destination: Bytes::from_static(b"/queue/q"),
            headers: headers(list),
            body: Bytes::new(),
            id_prefix: "s-1".into(),
            id_seq: 1,
            expires_at: None,
            persistent: false,
            charge: Default::default(),
            props: Default::default(),
        }
    }

    #[test]
    fn a_subscribe_without_selector_has_none() {
        assert_eq!(from_subscribe(&headers(&[("id", "1")])), Ok(None));
        assert_eq!(
            from_subscribe(&headers(&[("Selector", "a = 1")])),
            Ok(None),
            "header names are case-sensitive"
        );
    }

    #[test]
    fn the_first_selector_header_is_compiled_or_refused() {
        let selector = from_subscribe(&headers(&[("selector", "a = 1"), ("selector", "b")]))
            .unwrap()
            .unwrap();
        assert!(matches(&selector, &message(&[("a", "1")])));
        assert!(!matches(&selector, &message(&[("a", "2"), ("a", "1")])));
        assert!(!matches(&selector, &message(&[("b", "true")])));
        let err = from_subscribe(&headers(&[("selector", "a = ")])).unwrap_err();
        assert!(err.starts_with("selector: column 5: "), "{err}");
        let raw = vec![(
            Bytes::from_static(HEADER),
            Bytes::from_static(b"a = '\xff'"),
        )];
        assert_eq!(from_subscribe(&raw).unwrap_err(), "selector: not UTF-8");
    }

    #[test]
    fn a_value_that_is_not_utf8_is_absent() {
        let selector = Selector::compile("a IS NULL").unwrap();
        let mut m = message(&[]);
        m.headers
            .push((Bytes::from_static(b"a"), Bytes::from_static(b"\xff")));
        assert!(matches(&selector, &m));
    }
}
