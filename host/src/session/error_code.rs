//! The stable, machine-readable `error-code` of every ERROR frame the broker sends, and which
//! code each refusal of the codec, router, store and plugins gets.
//!
//! Codes are public API (listed in docs/protocol.md, "Error codes"): a code never changes
//! meaning once released; a new situation gets a new code. They are dotted and lower-case,
//! `namespace.name`, in the namespaces `auth`, `limit`, `protocol`, `destination`,
//! `permission`, `plugin`, `store`, `flow`, `server` and `cluster`. A plugin's own code is
//! `plugin.<plugin-name>.<code>` (see [`plugin_code`]); it is not one of [`ErrorCode::ALL`].

use crate::codec::{DecodeErrorKind, ReadBufferError};
use crate::plugin::{RejectCause, Rejection};
use crate::router::{DurableError, QueueArgsError, RouteError, ScheduleError, SubscribeError};
use crate::store::Refused;

/// Declares [`ErrorCode`], its [`ErrorCode::ALL`] and [`ErrorCode::as_str`] from one table, so
/// a code cannot exist without its string.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])+ $variant:ident = $code:literal,)+) => {
        /// The code of an ERROR frame (its `error-code` header).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as sent in the `error-code` header.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }
        }
    };
}

error_codes! {
    /// The login was refused (bad credentials, none given, a plugin denied it, or the
    /// authenticator is unavailable and fails closed).
    AuthDenied = "auth.denied",
    /// CONNECT's `host` names no virtual host (and there is no default one).
    AuthUnknownVhost = "auth.unknown-vhost",
    /// No CONNECT frame arrived within `limits.connect_timeout_ms`.
    ProtocolConnectTimeout = "protocol.connect-timeout",
    /// The client accepts no protocol version this broker speaks.
    ProtocolVersion = "protocol.version",
    /// The first frame was not CONNECT or STOMP.
    ProtocolExpectedConnect = "protocol.expected-connect",
    /// A second CONNECT on a connected session.
    ProtocolAlreadyConnected = "protocol.already-connected",
    /// The client sent a frame only a server may send (CONNECTED, MESSAGE, RECEIPT, ERROR).
    ProtocolServerFrame = "protocol.server-frame",
    /// The command line is not a STOMP command.
    ProtocolUnknownCommand = "protocol.unknown-command",
    /// The bytes do not form a frame (header syntax, content-length, NUL, a body where none
    /// is allowed).
    ProtocolMalformedFrame = "protocol.malformed-frame",
    /// A header holds an escape sequence the negotiated version does not define.
    ProtocolInvalidEscape = "protocol.invalid-escape",
    /// A required header is missing.
    ProtocolMissingHeader = "protocol.missing-header",
    /// A header's value is invalid (heart-beat, ack mode, priority, group, consumer options,
    /// queue argument numbers...).
    ProtocolInvalidHeader = "protocol.invalid-header",
    /// A `selector` is malformed.
    ProtocolInvalidSelector = "protocol.invalid-selector",
    /// Scheduling headers are invalid or out of range.
    ProtocolInvalidSchedule = "protocol.invalid-schedule",
    /// The frame asks for something this broker or version does not do (NACK in 1.0, cron).
    ProtocolUnsupported = "protocol.unsupported",
    /// The frame names a subscription this connection does not have.
    ProtocolUnknownSubscription = "protocol.unknown-subscription",
    /// A SUBSCRIBE reuses a subscription id of this connection.
    ProtocolDuplicateSubscription = "protocol.duplicate-subscription",
    /// The frame names a transaction that is not open.
    ProtocolUnknownTransaction = "protocol.unknown-transaction",
    /// BEGIN of a transaction that is already open.
    ProtocolDuplicateTransaction = "protocol.duplicate-transaction",
    /// ACK or NACK of a message that is not pending (unknown id, already acknowledged).
    ProtocolUnknownAck = "protocol.unknown-ack",
    /// ACK or NACK on a subscription in `auto` ack mode.
    ProtocolAckNotExpected = "protocol.ack-not-expected",
    /// The frame is larger than `limits.max_frame_bytes`.
    LimitFrameSize = "limit.frame-size",
    /// The frame has more headers than `limits.max_headers`.
    LimitHeaderCount = "limit.header-count",
    /// A header line (or a SUBSCRIBE's headers) is longer than allowed.
    LimitHeaderSize = "limit.header-size",
    /// The body is larger than `limits.max_body_bytes`.
    LimitBodySize = "limit.body-size",
    /// Too many connections from one address.
    LimitConnections = "limit.connections",
    /// Too many subscriptions on the connection.
    LimitSubscriptions = "limit.subscriptions",
    /// Too many open transactions on the connection.
    LimitTransactions = "limit.transactions",
    /// A transaction holds too many frames, or transactions too many bytes.
    LimitTransactionSize = "limit.transaction-size",
    /// Too many temporary queues on the connection.
    LimitTempQueues = "limit.temp-queues",
    /// The broker holds the maximum number of destinations.
    LimitDestinations = "limit.destinations",
    /// The connection creates new destinations too fast.
    LimitDestinationRate = "limit.destination-rate",
    /// A composite destination has too many parts.
    LimitCompositeParts = "limit.composite-parts",
    /// The scheduler (or the principal's share of it) is full.
    LimitScheduled = "limit.scheduled",
    /// The principal has the maximum number of durable subscriptions.
    LimitDurables = "limit.durables",
    /// The broker could not allocate memory to read the frame.
    LimitMemory = "limit.memory",
    /// The destination starts with no known prefix.
    DestinationUnknownPrefix = "destination.unknown-prefix",
    /// The destination's name is empty (a bare prefix, an empty composite part).
    DestinationInvalidName = "destination.invalid-name",
    /// A SEND to a wildcard pattern.
    DestinationWildcardSend = "destination.wildcard-send",
    /// A wildcard pattern on something other than a topic.
    DestinationWildcardNotTopic = "destination.wildcard-not-topic",
    /// A wildcard pattern that is not well formed.
    DestinationInvalidPattern = "destination.invalid-pattern",
    /// Queue arguments or `browser:true` on something other than a `/queue/`.
    DestinationNotAQueue = "destination.not-a-queue",
    /// The queue exists with other arguments.
    DestinationPreconditionFailed = "destination.precondition-failed",
    /// A composite destination with an option that needs a single destination.
    DestinationCompositeUnsupported = "destination.composite-unsupported",
    /// The durable subscription has another subscriber attached.
    DestinationDurableActive = "destination.durable-active",
    /// No durable subscription has this name.
    DestinationUnknownDurable = "destination.unknown-durable",
    /// The login may not send to the destination.
    PermissionSend = "permission.send",
    /// The login may not subscribe to (read) the destination.
    PermissionSubscribe = "permission.subscribe",
    /// A plugin rejected the SEND or SUBSCRIBE (a reason without a code of its own).
    PluginRejected = "plugin.rejected",
    /// A plugin routed the message to a destination the sender may not send to.
    PluginRouteRefused = "plugin.route-refused",
    /// A plugin fanned out to more copies than allowed.
    PluginFanoutLimit = "plugin.fanout-limit",
    /// A plugin routed the message to an invalid destination or set an invalid header.
    PluginInvalidOutput = "plugin.invalid-output",
    /// A plugin call failed (trap, deadline, busy, bad answer) and the plugin fails closed.
    PluginFailed = "plugin.failed",
    /// The message store is full.
    StoreFull = "store.full",
    /// The message store cannot write now.
    StoreUnavailable = "store.unavailable",
    /// A queue at its length limit refused the message (`x-overflow: reject-publish`).
    FlowQueueFull = "flow.queue-full",
    /// The connection could not keep up with its deliveries and was disconnected.
    FlowSlowConsumer = "flow.slow-consumer",
    /// No heart-beat arrived from the client in time.
    FlowHeartbeatTimeout = "flow.heartbeat-timeout",
    /// Nothing arrived for the idle limit and no subscription was held.
    FlowIdle = "flow.idle",
    /// The client stopped reading a queue browse.
    FlowBrowseAbandoned = "flow.browse-abandoned",
    /// The broker is shutting down.
    ServerShutdown = "server.shutdown",
    /// An administrator closed the connection.
    ServerAdminClose = "server.admin-close",
    /// The login's credentials expired (the authenticate plugin gave them an end) and the
    /// client did not re-authenticate in time; or they had expired already at CONNECT.
    AuthExpired = "auth.expired",
    /// A re-authentication's rights no longer cover this subscription: it ended (the ERROR
    /// names it in `subscription`; the connection stays open).
    PermissionRevoked = "permission.revoked",
    /// The connection re-authenticates more often than `limits.max_reauth_per_minute`.
    LimitReauthRate = "limit.reauth-rate",
    /// Cluster mode: the NATS JetStream cluster did not acknowledge the message within
    /// `[cluster] publish_timeout_ms` (NATS unreachable, no stream leader, or it refused it);
    /// the message may or may not have been stored. Also a durable subscription that could
    /// not be claimed or removed because JetStream did not answer.
    ClusterUnavailable = "cluster.unavailable",
}

/// The code of a frame the decoder refused.
pub fn decode_code(kind: &DecodeErrorKind) -> ErrorCode {
    use DecodeErrorKind as K;
    match kind {
        K::UnknownCommand(_) => ErrorCode::ProtocolUnknownCommand,
        K::HeaderLineTooLong { .. } => ErrorCode::LimitHeaderSize,
        K::TooManyHeaders { .. } => ErrorCode::LimitHeaderCount,
        K::FrameTooLarge { .. } => ErrorCode::LimitFrameSize,
        K::BodyTooLarge { .. } => ErrorCode::LimitBodySize,
        K::InvalidEscape { .. } => ErrorCode::ProtocolInvalidEscape,
        K::MissingColon
        | K::EmptyHeaderName
        | K::BareCr
        | K::InvalidContentLength(_)
        | K::MissingNul
        | K::BodyNotAllowed(_) => ErrorCode::ProtocolMalformedFrame,
    }
}

/// The code of a frame the read buffer could not take.
pub fn read_buffer_code(err: &ReadBufferError) -> ErrorCode {
    match err {
        ReadBufferError::OutOfMemory { .. } => ErrorCode::LimitMemory,
        ReadBufferError::TooLarge { .. } => ErrorCode::LimitFrameSize,
    }
}

/// The code of a destination the router refused.
pub fn route_code(err: &RouteError) -> ErrorCode {
    match err {
        RouteError::UnknownPrefix(_) => ErrorCode::DestinationUnknownPrefix,
        RouteError::EmptyName(_) | RouteError::EmptyPart(_) => ErrorCode::DestinationInvalidName,
        RouteError::TooManyTempQueues(_) => ErrorCode::LimitTempQueues,
        RouteError::TooManyDestinations(..) => ErrorCode::LimitDestinations,
        RouteError::CreatingTooFast(..) => ErrorCode::LimitDestinationRate,
        RouteError::WildcardSend(_) => ErrorCode::DestinationWildcardSend,
        RouteError::WildcardNotTopic(_) => ErrorCode::DestinationWildcardNotTopic,
        RouteError::BadPattern(..) => ErrorCode::DestinationInvalidPattern,
        RouteError::TooManyParts(..) => ErrorCode::LimitCompositeParts,
        RouteError::Arguments(err) => queue_args_code(err),
    }
}

/// The code of refused queue arguments.
pub fn queue_args_code(err: &QueueArgsError) -> ErrorCode {
    match err {
        QueueArgsError::NotANumber(..) | QueueArgsError::Overflow(_) => {
            ErrorCode::ProtocolInvalidHeader
        }
        QueueArgsError::NotAQueue(_) => ErrorCode::DestinationNotAQueue,
        QueueArgsError::Inequivalent(..) => ErrorCode::DestinationPreconditionFailed,
    }
}

/// The code of a SUBSCRIBE the router refused.
pub fn subscribe_code(err: &SubscribeError) -> ErrorCode {
    match err {
        SubscribeError::Route(err) => route_code(err),
        SubscribeError::DuplicateId(_) => ErrorCode::ProtocolDuplicateSubscription,
        SubscribeError::NotOwner(_)
        | SubscribeError::DurableMoveRefused(..)
        | SubscribeError::DurablePatternNotCovered(..) => ErrorCode::PermissionSubscribe,
        SubscribeError::DurableActive(_) => ErrorCode::DestinationDurableActive,
        SubscribeError::TooManyDurables(..) => ErrorCode::LimitDurables,
        SubscribeError::ClusterUnavailable(..) => ErrorCode::ClusterUnavailable,
    }
}

/// The code of a durable subscription that could not be removed.
pub fn durable_code(err: &DurableError) -> ErrorCode {
    match err {
        DurableError::Unknown(_) => ErrorCode::DestinationUnknownDurable,
        DurableError::Active(_) => ErrorCode::DestinationDurableActive,
        DurableError::NotPermitted(..) => ErrorCode::PermissionSubscribe,
        DurableError::ClusterUnavailable(..) => ErrorCode::ClusterUnavailable,
    }
}

/// The code of refused scheduling headers or a full scheduler.
pub fn schedule_code(err: &ScheduleError) -> ErrorCode {
    match err {
        ScheduleError::NotANumber(..)
        | ScheduleError::TooFar(..)
        | ScheduleError::PeriodTooShort(..)
        | ScheduleError::BadRepeat(..) => ErrorCode::ProtocolInvalidSchedule,
        ScheduleError::Cron => ErrorCode::ProtocolUnsupported,
        ScheduleError::Full(_) | ScheduleError::PrincipalFull(..) => ErrorCode::LimitScheduled,
    }
}

/// The code of a persistent message the store refused.
pub fn store_code(refused: &Refused) -> ErrorCode {
    match refused {
        Refused::Full { .. } => ErrorCode::StoreFull,
        Refused::Failed(_) => ErrorCode::StoreUnavailable,
    }
}

/// The broker's code of a plugin refusal (what metrics count it as).
pub fn rejection_code(rejection: &Rejection) -> ErrorCode {
    match rejection.cause {
        RejectCause::Verdict => ErrorCode::PluginRejected,
        RejectCause::Route => ErrorCode::PluginRouteRefused,
        RejectCause::FanOut => ErrorCode::PluginFanoutLimit,
        RejectCause::Failed => ErrorCode::PluginFailed,
    }
}

/// `plugin.<plugin-name>.<code>` when the plugin refused with a reason of the form
/// `[code] rest` (see [`crate::plugin::Rejection::reason_code`]) and its configured name is a
/// valid code segment (lower-case letters, digits, `-`); `None` otherwise (the ERROR then
/// carries `plugin.rejected`).
pub fn plugin_code(rejection: &Rejection) -> Option<String> {
    let (code, _) = rejection.reason_code()?;
    let name = &*rejection.plugin;
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'));
    name_ok.then(|| format!("plugin.{name}.{code}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;

    /// Namespaces a code may be in.
    const NAMESPACES: [&str; 10] = [
        "auth",
        "limit",
        "protocol",
        "destination",
        "permission",
        "plugin",
        "store",
        "flow",
        "server",
        "cluster",
    ];

    fn well_formed(code: &str) -> bool {
        let Some((namespace, name)) = code.split_once('.') else {
            return false;
        };
        NAMESPACES.contains(&namespace)
            && !name.is_empty()
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
    }

    #[test]
    fn every_code_is_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(well_formed(text), "{text} is not namespace.lower-case-name");
            assert!(seen.insert(text), "{text} is listed twice");
        }
    }

    #[test]
    fn every_code_is_documented_in_the_protocol_doc() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
                .expect("docs/protocol.md");
        let table = doc
            .split_once("## Error codes")
            .expect("docs/protocol.md has an 'Error codes' section")
            .1;
        for code in ErrorCode::ALL {
            let cell = format!("| `{}` |", code.as_str());
            assert!(
                table.contains(&cell),
                "{cell} is missing from docs/protocol.md"
            );
        }
        // And the table lists no code the broker does not have.
        let known: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        for line in table.lines().take_while(|l| !l.starts_with("## ")) {
            if let Some(code) = line.strip_prefix("| `").and_then(|l| l.split('`').next()) {
                if !code.contains('<') {
                    assert!(known.contains(code), "{code} is documented but not a code");
                }
            }
        }
    }

    #[test]
    fn plugin_codes_follow_the_reason_convention() {
        let rejection = |plugin: &str, cause, reason: &str| Rejection {
            plugin: Arc::from(plugin),
            cause,
            reason: reason.into(),
        };
        let coded = rejection("header-router", RejectCause::Verdict, "[no-route] none");
        assert_eq!(
            plugin_code(&coded).as_deref(),
            Some("plugin.header-router.no-route")
        );
        assert_eq!(rejection_code(&coded), ErrorCode::PluginRejected);
        let plain = rejection("header-router", RejectCause::Verdict, "no route");
        assert_eq!(plugin_code(&plain), None);
        // A name that is not a code segment falls back to the generic code.
        let odd = rejection("Router 1", RejectCause::Verdict, "[x] y");
        assert_eq!(plugin_code(&odd), None);
        let failed = rejection("p", RejectCause::Failed, "[x] y");
        assert_eq!(plugin_code(&failed), None);
        assert_eq!(rejection_code(&failed), ErrorCode::PluginFailed);
    }
}
