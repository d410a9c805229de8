//! Reject reasons with a machine-readable code.
//!
//! A reason that starts with `[code] ` (where `code` matches `[a-z0-9][a-z0-9.-]{0,63}`) gives
//! the client's ERROR `error-code:plugin.<plugin-name>.<code>`, and the rest of the reason as
//! its `message`; any other reason gets `error-code:plugin.rejected` (see the broker's
//! docs/protocol.md, "Error codes"). [`coded_reason`] writes such a reason.

/// The longest code the broker accepts in a reason.
pub const MAX_CODE_LEN: usize = 64;

/// Whether `code` is a valid reason code: `[a-z0-9][a-z0-9.-]{0,63}`.
pub fn is_valid_code(code: &str) -> bool {
    let bytes = code.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_CODE_LEN
        && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
        && bytes
            .iter()
            .all(|&b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
}

/// A reject reason carrying `code`: `[code] reason`. A `code` that is not valid (see
/// [`is_valid_code`]) is left out, so the reason is never misread: the client then sees
/// `plugin.rejected` and `reason` as it is.
///
/// ```
/// assert_eq!(
///     plugboard_sdk::coded_reason("no-route", "nothing for region 'xx'"),
///     "[no-route] nothing for region 'xx'"
/// );
/// assert_eq!(plugboard_sdk::coded_reason("No Route", "x"), "x");
/// ```
pub fn coded_reason(code: &str, reason: &str) -> String {
    if is_valid_code(code) {
        format!("[{code}] {reason}")
    } else {
        reason.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes_prefix_the_reason() {
        assert_eq!(coded_reason("quota.daily", "over"), "[quota.daily] over");
        assert_eq!(coded_reason("0", ""), "[0] ");
        assert_eq!(coded_reason(&"a".repeat(64), "r").len(), 64 + 4);
    }

    #[test]
    fn invalid_codes_are_left_out() {
        for code in ["", "-a", ".a", "A", "a b", "a_b", "a]", &"a".repeat(65)] {
            assert_eq!(coded_reason(code, "reason"), "reason", "{code:?}");
        }
    }
}
