//! What a message's headers tell a queue about delivering it: its priority (`priority`, 0–9,
//! JMS's default 4) and its message group (`JMSXGroupID`, and `JMSXGroupSeq:-1` closing the
//! group). Read once per message, after the send plugins (which see and may rewrite these
//! as ordinary headers), and again from the journaled headers when a persistent message is
//! recovered: the journal keeps the headers, so it keeps the priority and the group.

use bytes::Bytes;

use crate::codec::Header;
use crate::text::shown;

/// The priority of a message without a `priority` header (JMS's default).
pub const DEFAULT_PRIORITY: u8 = 4;
/// The highest priority; larger numbers are taken as this one (as RabbitMQ does for
/// priorities above a queue's maximum).
pub const MAX_PRIORITY: u8 = 9;
/// Longest `JMSXGroupID` accepted: queues keep group ids in their group table.
pub const MAX_GROUP_ID_BYTES: usize = 256;

/// The message group a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The `JMSXGroupID` value.
    pub id: Bytes,
    /// `JMSXGroupSeq:-1`: the group ends with this message (its consumer is free of it).
    pub closes: bool,
}

/// A message's delivery properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Props {
    /// 0 (lowest) to 9 (highest).
    pub priority: u8,
    /// The message group, if any.
    pub group: Option<Group>,
}

impl Default for Props {
    fn default() -> Props {
        Props {
            priority: DEFAULT_PRIORITY,
            group: None,
        }
    }
}

/// A delivery header the broker cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PropsError {
    /// `priority` is not a whole number (the value as [`shown`]).
    #[error("invalid priority '{0}': expected a whole number from 0 to 9")]
    Priority(String),
    /// `JMSXGroupSeq` is not a whole number (the value as [`shown`]).
    #[error("invalid JMSXGroupSeq '{0}': expected a whole number (-1 closes the group)")]
    GroupSeq(String),
    /// `JMSXGroupID` is longer than [`MAX_GROUP_ID_BYTES`] (its length).
    #[error("JMSXGroupID of {0} bytes is longer than the limit of {MAX_GROUP_ID_BYTES} bytes")]
    GroupIdTooLong(usize),
}

/// The delivery headers' values (the first of each name), not yet checked.
struct Found<'h> {
    priority: Option<&'h Bytes>,
    group_id: Option<&'h Bytes>,
    group_seq: Option<&'h Bytes>,
}

impl<'h> Found<'h> {
    /// One pass over the headers, by length first: most names have none of these lengths.
    fn scan(headers: &'h [Header]) -> Found<'h> {
        let mut found = Found {
            priority: None,
            group_id: None,
            group_seq: None,
        };
        for (name, value) in headers {
            let slot = match name.len() {
                8 if name.as_ref() == b"priority" => &mut found.priority,
                11 if name.as_ref() == b"JMSXGroupID" => &mut found.group_id,
                12 if name.as_ref() == b"JMSXGroupSeq" => &mut found.group_seq,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        found
    }

    fn priority(&self) -> Result<u8, PropsError> {
        self.priority
            .map_or(Ok(DEFAULT_PRIORITY), |v| parse_priority(v))
    }

    fn group(&self) -> Result<Option<Group>, PropsError> {
        let Some(id) = self.group_id.filter(|id| !id.is_empty()) else {
            return Ok(None);
        };
        if id.len() > MAX_GROUP_ID_BYTES {
            return Err(PropsError::GroupIdTooLong(id.len()));
        }
        let closes = match self.group_seq {
            Some(seq) => number(seq).ok_or_else(|| PropsError::GroupSeq(shown(seq)))? == -1,
            None => false,
        };
        Ok(Some(Group {
            id: id.clone(),
            closes,
        }))
    }
}

impl Props {
    /// Reads and checks the delivery headers (the first of each name counts, as for every
    /// header).
    pub fn read(headers: &[Header]) -> Result<Props, PropsError> {
        let found = Found::scan(headers);
        Ok(Props {
            priority: found.priority()?,
            group: found.group()?,
        })
    }

    /// Reads the delivery headers of a message recovered from the journal: what cannot be
    /// read is left at its default, each property on its own (journals written before these
    /// headers were checked may hold any value).
    pub fn recovered(headers: &[Header]) -> Props {
        let found = Found::scan(headers);
        Props {
            priority: found.priority().unwrap_or(DEFAULT_PRIORITY),
            group: found.group().unwrap_or(None),
        }
    }
}

/// A whole number, spaces around it allowed.
fn number(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// `priority`: 0–9; a larger whole number is 9.
fn parse_priority(value: &[u8]) -> Result<u8, PropsError> {
    let trimmed = std::str::from_utf8(value).map(str::trim).unwrap_or("");
    let digits = !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit());
    if !digits {
        return Err(PropsError::Priority(shown(value)));
    }
    // All digits: anything that does not fit a u64 is far above the maximum.
    let n = trimmed.parse::<u64>().unwrap_or(u64::MAX);
    Ok(n.min(u64::from(MAX_PRIORITY)) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(headers: &[(&str, &str)]) -> Result<Props, PropsError> {
        let headers: Vec<Header> = headers
            .iter()
            .map(|(n, v)| (Bytes::from(n.to_string()), Bytes::from(v.to_string())))
            .collect();
        Props::read(&headers)
    }

    #[test]
    fn no_headers_is_the_default() {
        assert_eq!(read(&[("x", "y")]).unwrap(), Props::default());
        assert_eq!(Props::default().priority, 4);
    }

    #[test]
    fn priorities_are_read_and_clamped() {
        for (value, expected) in [("0", 0), ("9", 9), (" 7 ", 7), ("10", 9), ("255", 9)] {
            assert_eq!(read(&[("priority", value)]).unwrap().priority, expected);
        }
        assert_eq!(
            read(&[("priority", "99999999999999999999999")])
                .unwrap()
                .priority,
            9
        );
        for bad in ["", "-1", "high", "4.5", "+3", "0x5"] {
            assert!(
                matches!(read(&[("priority", bad)]), Err(PropsError::Priority(_))),
                "{bad:?}"
            );
        }
        // The first header counts.
        assert_eq!(
            read(&[("priority", "2"), ("priority", "x")])
                .unwrap()
                .priority,
            2
        );
    }

    #[test]
    fn groups_and_closing() {
        let props = read(&[("JMSXGroupID", "g1")]).unwrap();
        assert_eq!(
            props.group,
            Some(Group {
                id: Bytes::from_static(b"g1"),
                closes: false
            })
        );
        let closing = read(&[("JMSXGroupID", "g1"), ("JMSXGroupSeq", "-1")]).unwrap();
        assert!(closing.group.unwrap().closes);
        let numbered = read(&[("JMSXGroupID", "g1"), ("JMSXGroupSeq", "3")]).unwrap();
        assert!(!numbered.group.unwrap().closes);
        assert_eq!(read(&[("JMSXGroupID", "")]).unwrap().group, None);
        assert_eq!(read(&[("JMSXGroupSeq", "x")]).unwrap().group, None);
        assert!(matches!(
            read(&[("JMSXGroupID", "g"), ("JMSXGroupSeq", "last")]),
            Err(PropsError::GroupSeq(_))
        ));
        let long = "g".repeat(MAX_GROUP_ID_BYTES + 1);
        assert_eq!(
            read(&[("JMSXGroupID", &long)]),
            Err(PropsError::GroupIdTooLong(MAX_GROUP_ID_BYTES + 1))
        );
    }

    #[test]
    fn recovered_messages_keep_what_can_be_read() {
        let headers = |pairs: &[(&'static str, &'static str)]| -> Vec<Header> {
            pairs
                .iter()
                .map(|(n, v)| {
                    (
                        Bytes::from_static(n.as_bytes()),
                        Bytes::from_static(v.as_bytes()),
                    )
                })
                .collect()
        };
        let props = Props::recovered(&headers(&[("priority", "urgent"), ("JMSXGroupID", "g")]));
        assert_eq!(props.priority, DEFAULT_PRIORITY);
        assert_eq!(props.group.map(|g| g.id), Some(Bytes::from_static(b"g")));
        let props = Props::recovered(&headers(&[
            ("priority", "7"),
            ("JMSXGroupID", "g"),
            ("JMSXGroupSeq", "end"),
        ]));
        assert_eq!((props.priority, props.group), (7, None));
    }

    proptest::proptest! {
        #[test]
        fn any_priority_value_is_read_or_refused_never_a_panic(value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24)) {
            let headers = vec![(Bytes::from_static(b"priority"), Bytes::from(value.clone()))];
            match Props::read(&headers) {
                Ok(props) => {
                    let text = std::str::from_utf8(&value).unwrap().trim();
                    proptest::prop_assert!(text.bytes().all(|b| b.is_ascii_digit()));
                    let expected = text.parse::<u64>().map_or(MAX_PRIORITY, |n| n.min(9) as u8);
                    proptest::prop_assert_eq!(props.priority, expected);
                }
                Err(err) => proptest::prop_assert!(matches!(err, PropsError::Priority(_))),
            }
        }

        #[test]
        fn digit_strings_clamp_to_nine(n in proptest::prelude::any::<u64>()) {
            let headers = vec![(Bytes::from_static(b"priority"), Bytes::from(n.to_string()))];
            proptest::prop_assert_eq!(Props::read(&headers).unwrap().priority, n.min(9) as u8);
        }
    }
}
