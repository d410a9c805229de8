//! Why a plugin chain refused a SEND or a SUBSCRIBE: which plugin, how, and the reason's text,
//! with the reason-code convention a plugin uses to give its refusal a machine-readable code.
//!
//! A plugin's reason may start with `[code] `, where `code` matches
//! `[a-z0-9][a-z0-9.-]{0,63}`: the client's ERROR then carries `error-code:
//! plugin.<plugin-name>.<code>` and the rest of the reason as its message (see
//! docs/protocol.md, "Error codes"). The WIT interface is unchanged: the code travels in the
//! reason string.

use std::fmt;
use std::sync::Arc;

/// The longest plugin reason code (after `[`, before `]`).
pub const MAX_REASON_CODE: usize = 64;

/// How a plugin chain came to refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCause {
    /// The plugin itself refused (`reject(reason)` on a SEND, an error from
    /// `prepare-subscription`).
    Verdict,
    /// The plugin routed the message to a destination the sender may not send to.
    Route,
    /// The plugin fanned out to more copies than the broker allows.
    FanOut,
    /// The call failed (trap, deadline, busy pool, bad answer) and the plugin fails closed.
    Failed,
}

/// A refusal by a plugin of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The plugin's configured name.
    pub plugin: Arc<str>,
    /// How it refused.
    pub cause: RejectCause,
    /// The reason, one line (a plugin's own reason is cleaned and cut by the host).
    pub reason: String,
}

impl Rejection {
    /// A refusal of `plugin` for `cause`.
    pub fn new(plugin: &Arc<str>, cause: RejectCause, reason: String) -> Rejection {
        Rejection {
            plugin: plugin.clone(),
            cause,
            reason,
        }
    }

    /// The plugin's own code and the rest of its reason, when it refused by itself with a
    /// reason that starts with `[code] ` (see the module documentation).
    pub fn reason_code(&self) -> Option<(&str, &str)> {
        if self.cause != RejectCause::Verdict {
            return None;
        }
        split_reason_code(&self.reason)
    }

    /// The reason as the client reads it: without the `[code] ` prefix when there is one.
    pub fn message(&self) -> &str {
        self.reason_code().map_or(&self.reason, |(_, rest)| rest)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Splits `[code] rest` into `(code, rest)`; `None` unless `code` is well formed (see
/// [`is_reason_code`]) and followed by `]` and one space.
pub fn split_reason_code(reason: &str) -> Option<(&str, &str)> {
    let inner = reason.strip_prefix('[')?;
    let (code, rest) = inner.split_once("] ")?;
    is_reason_code(code).then_some((code, rest))
}

/// `[a-z0-9][a-z0-9.-]{0,63}`: a plugin's reason code.
pub fn is_reason_code(code: &str) -> bool {
    let bytes = code.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REASON_CODE
        && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
        && bytes
            .iter()
            .all(|&b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(reason: &str) -> Rejection {
        Rejection::new(&Arc::from("router"), RejectCause::Verdict, reason.into())
    }

    #[test]
    fn a_well_formed_prefix_is_a_code() {
        let r = verdict("[no-route] no rule for region 'xx'");
        assert_eq!(
            r.reason_code(),
            Some(("no-route", "no rule for region 'xx'"))
        );
        assert_eq!(r.message(), "no rule for region 'xx'");
        assert_eq!(r.to_string(), "[no-route] no rule for region 'xx'");
        assert_eq!(
            verdict("[v2.quota-1] over").reason_code(),
            Some(("v2.quota-1", "over"))
        );
        assert_eq!(verdict("[a] ").reason_code(), Some(("a", "")));
    }

    #[test]
    fn anything_else_is_plain_text() {
        let long = format!("[{}] x", "a".repeat(65));
        for reason in [
            "no route",
            "[No-Route] upper case",
            "[-x] leading dash",
            "[.x] leading dot",
            "[] empty",
            "[a b] space",
            "[a]no space",
            "[a_b] underscore",
            " [a] leading space",
            long.as_str(),
        ] {
            let r = verdict(reason);
            assert_eq!(r.reason_code(), None, "{reason}");
            assert_eq!(r.message(), reason);
        }
        let max = format!("[{}] x", "a".repeat(64));
        assert!(verdict(&max).reason_code().is_some());
    }

    #[test]
    fn only_the_plugins_own_refusals_carry_codes() {
        for cause in [RejectCause::Route, RejectCause::FanOut, RejectCause::Failed] {
            let r = Rejection::new(&Arc::from("p"), cause, "[x] y".into());
            assert_eq!(r.reason_code(), None);
            assert_eq!(r.message(), "[x] y");
        }
    }
}
