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

impl Props {
    /// Reads the delivery headers (the first of each name counts, as for every header).
    /// One pass over the headers, by length first: most names have neither length.
    pub fn read(headers: &[Header]) -> Result<Props, PropsError> {
        let mut priority = None;
        let mut group_id = None;
        let mut group_seq = None;
        for (name, value) in headers {
            match name.len() {
                8 if name.as_ref() == b"priority" => {
                    priority.get_or_insert(value);
                }
                11 if name.as_ref() == b"JMSXGroupID" => {
                    group_id.get_or_insert(value);
                }
                12 if name.as_ref() == b"JMSXGroupSeq" => {
                    group_seq.get_or_insert(value);
                }
                _ => {}
            }
        }
        let mut props = Props::default();
        if let Some(value) = priority {
            props.priority = parse_priority(value)?;
        }
        if let Some(id) = group_id.filter(|id| !id.is_empty()) {
            if id.len() > MAX_GROUP_ID_BYTES {
                return Err(PropsError::GroupIdTooLong(id.len()));
            }
            let closes = match group_seq {
                Some(seq) => number(seq).ok_or_else(|| PropsError::GroupSeq(shown(seq)))? == -1,
                None => false,
            };
            props.group = Some(Group {
                id: id.clone(),
                closes,
            });
        }
        Ok(props)
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
}
