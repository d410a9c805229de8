//! The SUBSCRIBE headers that say how a queue consumer wants to be served, in the spellings of
//! both peers: consumer priority (ActiveMQ's `activemq.priority`, RabbitMQ's `x-priority`) and
//! exclusivity (ActiveMQ's `activemq.exclusive`, RabbitMQ's `x-single-active-consumer`).
//! Where a SUBSCRIBE carries both spellings, the ActiveMQ one counts. A value the broker
//! cannot read is an ERROR, never a silent default.

use bytes::Bytes;

use crate::codec::Frame;
use crate::router::ConsumerOptions;
use crate::text::shown;

use super::error::{client_error, SessionError};
use super::ErrorCode;

/// Consumer priority headers, the first present counts.
const PRIORITY: [&[u8]; 2] = [b"activemq.priority", b"x-priority"];
/// Exclusive-consumer headers, the first present counts.
const EXCLUSIVE: [&[u8]; 2] = [b"activemq.exclusive", b"x-single-active-consumer"];

/// Reads a SUBSCRIBE's consumer priority and exclusivity (defaults: 0, not exclusive).
pub(super) fn consumer_options(frame: &Frame) -> Result<ConsumerOptions, SessionError> {
    let mut options = ConsumerOptions::default();
    if let Some((name, value)) = first_of(frame, &PRIORITY) {
        options.priority = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse::<i32>().ok())
            .ok_or_else(|| invalid(name, value, "a whole number"))?;
    }
    if let Some((name, value)) = first_of(frame, &EXCLUSIVE) {
        options.exclusive = match value.trim_ascii() {
            v if v.eq_ignore_ascii_case(b"true") => true,
            v if v.eq_ignore_ascii_case(b"false") => false,
            _ => return Err(invalid(name, value, "true or false")),
        };
    }
    Ok(options)
}

fn first_of<'f>(frame: &'f Frame, names: &[&'static [u8]]) -> Option<(&'static [u8], &'f Bytes)> {
    names
        .iter()
        .find_map(|&name| frame.get(name).map(|value| (name, value)))
}

fn invalid(name: &[u8], value: &[u8], expected: &str) -> SessionError {
    client_error(
        ErrorCode::ProtocolInvalidHeader,
        format!(
            "invalid {} '{}': expected {expected}",
            shown(name),
            shown(value)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Command;

    fn options(headers: &[(&'static str, &'static str)]) -> Result<ConsumerOptions, String> {
        let frame = headers
            .iter()
            .fold(Frame::new(Command::Subscribe), |f, (n, v)| {
                f.header(*n, Bytes::from_static(v.as_bytes()))
            });
        consumer_options(&frame).map_err(|e| e.to_string())
    }

    #[test]
    fn both_spellings_and_defaults() {
        assert_eq!(options(&[]).unwrap(), ConsumerOptions::default());
        for name in ["activemq.priority", "x-priority"] {
            assert_eq!(options(&[(name, "7")]).unwrap().priority, 7);
            assert_eq!(options(&[(name, "-3")]).unwrap().priority, -3);
        }
        for name in ["activemq.exclusive", "x-single-active-consumer"] {
            assert!(options(&[(name, "true")]).unwrap().exclusive);
            assert!(options(&[(name, "TRUE")]).unwrap().exclusive);
            assert!(!options(&[(name, "false")]).unwrap().exclusive);
        }
        let both = options(&[("x-priority", "1"), ("activemq.priority", "2")]).unwrap();
        assert_eq!(both.priority, 2, "the ActiveMQ spelling counts");
    }

    #[test]
    fn bad_values_are_errors() {
        let err = options(&[("x-priority", "high")]).unwrap_err();
        assert!(err.contains("invalid x-priority 'high'"), "{err}");
        assert!(options(&[("activemq.priority", "99999999999")]).is_err());
        let err = options(&[("activemq.exclusive", "yes")]).unwrap_err();
        assert!(err.contains("expected true or false"), "{err}");
        assert!(options(&[("x-single-active-consumer", "")]).is_err());
    }
}
