//! Queue arguments (RabbitMQ's `x-` arguments): a queue's own length limits, what it does when
//! full, and a time-to-live for its messages.
//!
//! | header | `[[queues]]` key | meaning |
//! |---|---|---|
//! | `x-max-length` | `max_length` | most messages held |
//! | `x-max-length-bytes` | `max_length_bytes` | most bytes of messages held |
//! | `x-overflow` | `overflow` | `drop-head` (default), `reject-publish`, `reject-publish-dlx` |
//! | `x-message-ttl` | `message_ttl_ms` | a message expires this many ms after it was sent |
//!
//! They are read from the SEND or SUBSCRIBE that creates a `/queue/` (as RabbitMQ declares a
//! queue from these headers) and from the first `[[queues]]` entry of the configuration whose
//! `pattern` matches its name; a header overrides the entry key by key. The queue's arguments
//! are fixed when it is created: a later frame with arguments that differ is refused (as
//! RabbitMQ's `PRECONDITION_FAILED - inequivalent arg`); a frame without arguments uses the
//! queue as it is. The broker-wide `flow.queue_max_messages` and `flow.queue_max_bytes` still
//! bound every queue: a larger `x-max-length` is lowered to them.
//!
//! As the broker's other queue bounds, the limits count the messages a queue holds: waiting
//! and delivered-but-unacknowledged (RabbitMQ counts only the waiting ones), so a consumer
//! with a large window cannot drain a queue past its limit. `drop-head` makes room by dropping
//! the oldest *waiting* messages (not dead-lettered); when all are out with consumers the new
//! one is dropped. `reject-publish` refuses the new message: its SEND gets an ERROR (with its
//! `receipt-id`). `reject-publish-dlx` also sends it to the dead-letter queue when
//! `[dead_letter]` is on (without a dead-letter queue it is `reject-publish`).

use std::sync::Arc;

use bytes::Bytes;

use crate::codec::Header;
use crate::config::QueuePolicy;
use crate::text::shown;

use super::queue::{Overflow, QueueLimits};
use super::{Destination, RouteError, QUEUE_PREFIX};

/// What a full queue with arguments does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArgOverflow {
    /// The oldest waiting message is dropped to make room.
    DropHead,
    /// The new message is refused: its SEND gets an ERROR.
    RejectPublish,
    /// The new message is refused and dead-lettered.
    RejectPublishDlx,
}

impl ArgOverflow {
    fn parse(value: &[u8]) -> Option<ArgOverflow> {
        match value {
            b"drop-head" => Some(ArgOverflow::DropHead),
            b"reject-publish" => Some(ArgOverflow::RejectPublish),
            b"reject-publish-dlx" => Some(ArgOverflow::RejectPublishDlx),
            _ => None,
        }
    }

    /// The queue's overflow policy.
    fn overflow(self) -> Overflow {
        match self {
            ArgOverflow::DropHead => Overflow::DropOldest,
            ArgOverflow::RejectPublish => Overflow::Reject,
            ArgOverflow::RejectPublishDlx => Overflow::RejectDeadLetter,
        }
    }
}

/// Queue arguments as a frame or a `[[queues]]` entry gives them (each one optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueArgs {
    /// `x-max-length`.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Option<ArgOverflow>,
    /// `x-message-ttl`, in ms.
    pub message_ttl_ms: Option<u64>,
}

/// Why a frame's queue arguments were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueArgsError {
    /// The header (named) is not a whole number of at least 0; its value.
    #[error("queue argument '{0}' must be a whole number, not '{1}'")]
    NotANumber(&'static str, String),
    /// `x-overflow` names no policy; its value.
    #[error("x-overflow must be drop-head, reject-publish or reject-publish-dlx, not '{0}'")]
    Overflow(String),
    /// Arguments on a destination that is not a `/queue/`; its name.
    #[error("queue arguments (x-max-length, x-overflow, x-message-ttl...) apply to /queue/ destinations only, not '{0}'")]
    NotAQueue(String),
    /// The queue exists with other arguments: its name, those it has, those asked for.
    #[error("precondition failed: queue '{0}' exists with arguments {1}, not {2}")]
    Inequivalent(String, String, String),
}

impl QueueArgs {
    /// The arguments among `headers` (the first occurrence of each), `None` when there are
    /// none.
    pub fn from_headers(headers: &[Header]) -> Result<Option<QueueArgs>, QueueArgsError> {
        let mut args = QueueArgs::default();
        let mut any = false;
        for (name, value) in headers {
            if !name.starts_with(b"x-") {
                continue;
            }
            let number = |spelled: &'static str| {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.trim().parse::<u64>().ok())
                    .ok_or_else(|| QueueArgsError::NotANumber(spelled, shown(value)))
            };
            match name.as_ref() {
                b"x-max-length" if args.max_length.is_none() => {
                    args.max_length = Some(number("x-max-length")?)
                }
                b"x-max-length-bytes" if args.max_length_bytes.is_none() => {
                    args.max_length_bytes = Some(number("x-max-length-bytes")?)
                }
                b"x-message-ttl" if args.message_ttl_ms.is_none() => {
                    args.message_ttl_ms = Some(number("x-message-ttl")?)
                }
                b"x-overflow" if args.overflow.is_none() => {
                    args.overflow = Some(
                        ArgOverflow::parse(value.trim_ascii())
                            .ok_or_else(|| QueueArgsError::Overflow(shown(value)))?,
                    )
                }
                _ => continue,
            }
            any = true;
        }
        Ok(any.then_some(args))
    }

    /// These arguments over `base`'s, key by key.
    fn over(self, base: QueueArgs) -> QueueArgs {
        QueueArgs {
            max_length: self.max_length.or(base.max_length),
            max_length_bytes: self.max_length_bytes.or(base.max_length_bytes),
            overflow: self.overflow.or(base.overflow),
            message_ttl_ms: self.message_ttl_ms.or(base.message_ttl_ms),
        }
    }

    fn describe(args: Option<&QueueArgs>) -> String {
        let Some(args) = args else {
            return "none".to_string();
        };
        let mut parts = Vec::new();
        if let Some(n) = args.max_length {
            parts.push(format!("x-max-length={n}"));
        }
        if let Some(n) = args.max_length_bytes {
            parts.push(format!("x-max-length-bytes={n}"));
        }
        if let Some(o) = args.overflow {
            parts.push(format!("x-overflow={o:?}"));
        }
        if let Some(n) = args.message_ttl_ms {
            parts.push(format!("x-message-ttl={n}"));
        }
        format!("[{}]", parts.join(", "))
    }
}

impl From<&QueuePolicy> for QueueArgs {
    fn from(policy: &QueuePolicy) -> QueueArgs {
        QueueArgs {
            max_length: policy.max_length,
            max_length_bytes: policy.max_length_bytes,
            overflow: policy.overflow,
            message_ttl_ms: policy.message_ttl_ms,
        }
    }
}

/// What a queue keeps of its arguments.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueArguments {
    /// The arguments the creating frame declared (what later declarations must match).
    pub declared: Option<QueueArgs>,
    /// Messages entering the queue expire this long after they were sent, at the latest.
    pub message_ttl_ms: Option<u64>,
}

impl QueueArguments {
    /// Whether a frame declaring `args` may use a queue created with these arguments.
    fn check(&self, name: &[u8], args: &QueueArgs) -> Result<(), QueueArgsError> {
        if self.declared.as_ref() == Some(args) {
            return Ok(());
        }
        Err(QueueArgsError::Inequivalent(
            shown(name),
            QueueArgs::describe(self.declared.as_ref()),
            QueueArgs::describe(Some(args)),
        ))
    }
}

/// When a message sent with expiry `expires_at` (unix ms) to `target` expires: the queue's
/// `x-message-ttl` may bring it forward.
pub fn expiry_in(target: &Destination, expires_at: Option<u64>) -> Option<u64> {
    let Destination::Queue(queue) = target else {
        return expires_at;
    };
    match queue.arguments().message_ttl_ms {
        None => expires_at,
        Some(ttl) => {
            let by_queue = super::message::now_ms().saturating_add(ttl);
            Some(expires_at.map_or(by_queue, |at| at.min(by_queue)))
        }
    }
}

impl super::Router {
    /// The limits and arguments of a new queue `name` declared with `declared`: the first
    /// matching `[[queues]]` entry, overridden by `declared`, within the broker-wide caps.
    pub(super) fn queue_settings(
        &self,
        name: &[u8],
        declared: Option<&QueueArgs>,
    ) -> (QueueLimits, QueueArguments) {
        let global = self.queue_limits();
        let policy = self
            .settings
            .queues
            .iter()
            .find(|p| crate::plugin::glob::matches(p.pattern.as_bytes(), name))
            .map(QueueArgs::from)
            .unwrap_or_default();
        let args = declared.copied().unwrap_or_default().over(policy);
        if args == QueueArgs::default() {
            return (global, QueueArguments::default());
        }
        let limited = args.max_length.is_some() || args.max_length_bytes.is_some();
        let limits = QueueLimits {
            max_messages: args.max_length.map_or(global.max_messages, |n| {
                (n as usize).min(global.max_messages)
            }),
            max_bytes: args
                .max_length_bytes
                .map_or(global.max_bytes, |n| n.min(global.max_bytes)),
            overflow: match args.overflow {
                Some(overflow) => overflow.overflow(),
                // RabbitMQ's default for a queue with a length limit.
                None if limited => Overflow::DropOldest,
                None => global.overflow,
            },
        };
        let arguments = QueueArguments {
            declared: declared.copied(),
            message_ttl_ms: args.message_ttl_ms,
        };
        (limits, arguments)
    }

    /// Resolves a SEND destination whose frame carries queue arguments or a schedule: a
    /// `/queue/` is created with `args` (or checked against the arguments it was created
    /// with), a topic is created for a scheduled message (see
    /// [`Router::resolve_scheduled`](super::Router::resolve_scheduled)).
    pub fn resolve_declaring(
        &self,
        conn: &mut super::Connection,
        name: &Bytes,
        args: Option<&QueueArgs>,
        scheduled: bool,
    ) -> Result<Option<Destination>, RouteError> {
        if let Some(args) = args {
            return Ok(Some(Destination::Queue(
                self.declare_queue(conn, name, args)?,
            )));
        }
        if scheduled {
            return self.resolve_scheduled(conn, name);
        }
        self.resolve(conn, name)
    }

    /// The `/queue/` `name` for a frame declaring `args`: created with them (within the
    /// limits on creating destinations), or an existing one created with the same arguments.
    pub fn declare_queue(
        &self,
        conn: &mut super::Connection,
        name: &Bytes,
        args: &QueueArgs,
    ) -> Result<Arc<super::Queue>, RouteError> {
        if super::classify(name)? != super::Kind::Queue || !name.starts_with(QUEUE_PREFIX) {
            return Err(QueueArgsError::NotAQueue(shown(name)).into());
        }
        let queue = match self.existing_queue(name) {
            Some(queue) => queue,
            None => {
                self.may_create(conn, name)?;
                self.queue_with(name, Some(args))
            }
        };
        queue.arguments().check(name, args)?;
        Ok(queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(headers: &[(&str, &str)]) -> Result<Option<QueueArgs>, QueueArgsError> {
        let headers: Vec<Header> = headers
            .iter()
            .map(|(n, v)| (Bytes::from(n.to_string()), Bytes::from(v.to_string())))
            .collect();
        QueueArgs::from_headers(&headers)
    }

    #[test]
    fn every_argument_is_read_and_others_ignored() {
        assert_eq!(read(&[("x-delay", "5"), ("persistent", "true")]), Ok(None));
        assert_eq!(
            read(&[
                ("x-max-length", "10"),
                ("x-max-length-bytes", "4096"),
                ("x-overflow", "reject-publish-dlx"),
                ("x-message-ttl", "60000"),
                ("x-max-length", "99"),
            ]),
            Ok(Some(QueueArgs {
                max_length: Some(10),
                max_length_bytes: Some(4096),
                overflow: Some(ArgOverflow::RejectPublishDlx),
                message_ttl_ms: Some(60000),
            }))
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(matches!(
            read(&[("x-max-length", "-1")]),
            Err(QueueArgsError::NotANumber("x-max-length", _))
        ));
        assert!(matches!(
            read(&[("x-message-ttl", "soon")]),
            Err(QueueArgsError::NotANumber("x-message-ttl", _))
        ));
        assert!(matches!(
            read(&[("x-overflow", "drop-tail")]),
            Err(QueueArgsError::Overflow(_))
        ));
    }

    #[test]
    fn settings_merge_the_pattern_and_stay_within_the_global_caps() {
        use crate::config::{FlowConfig, QueuePolicy};
        let router = super::super::Router::new(super::super::RouterSettings {
            flow: FlowConfig {
                queue_max_messages: 100,
                ..FlowConfig::default()
            },
            queues: vec![QueuePolicy {
                pattern: "/queue/orders.*".into(),
                max_length: Some(10),
                max_length_bytes: None,
                overflow: Some(ArgOverflow::RejectPublish),
                message_ttl_ms: Some(5000),
            }],
            ..Default::default()
        });
        let (limits, arguments) = router.queue_settings(b"/queue/orders.eu", None);
        assert_eq!(limits.max_messages, 10);
        assert_eq!(limits.overflow, Overflow::Reject);
        assert_eq!(arguments.message_ttl_ms, Some(5000));
        assert_eq!(arguments.declared, None);
        let declared = QueueArgs {
            max_length: Some(1_000),
            overflow: Some(ArgOverflow::DropHead),
            ..QueueArgs::default()
        };
        let (limits, arguments) = router.queue_settings(b"/queue/orders.eu", Some(&declared));
        assert_eq!(
            limits.max_messages, 100,
            "lowered to flow.queue_max_messages"
        );
        assert_eq!(limits.overflow, Overflow::DropOldest);
        assert_eq!(arguments.message_ttl_ms, Some(5000), "from the pattern");
        assert_eq!(arguments.declared, Some(declared));
        let (limits, arguments) = router.queue_settings(b"/queue/other", None);
        assert_eq!(limits.max_messages, 100);
        assert_eq!(limits.overflow, Overflow::Block, "no arguments: as before");
        assert_eq!(arguments.message_ttl_ms, None);
    }

    #[test]
    fn frame_arguments_override_the_policy_key_by_key() {
        let policy = QueueArgs {
            max_length: Some(5),
            message_ttl_ms: Some(100),
            ..QueueArgs::default()
        };
        let frame = QueueArgs {
            max_length: Some(7),
            ..QueueArgs::default()
        };
        assert_eq!(
            frame.over(policy),
            QueueArgs {
                max_length: Some(7),
                message_ttl_ms: Some(100),
                ..QueueArgs::default()
            }
        );
    }
}
