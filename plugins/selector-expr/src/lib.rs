//! JMS/ActiveMQ message selectors: the parser ([`parse`]) and evaluator ([`eval`]) that the
//! broker uses for its native `selector` header and the `selector` plugin uses in its guest.
//!
//! A selector is compiled once, when a SUBSCRIBE carries it ([`Selector::compile`]); each
//! delivery is then judged against the message's headers ([`Selector::matches`]), which reads
//! only the headers the selector names and allocates nothing.
//!
//! Bounds (hostile subscribers): a selector is at most [`MAX_SELECTOR_BYTES`] bytes and
//! [`MAX_OPERANDS`] operands (so its parsed form stays small); NOT and parentheses nest at most
//! [`MAX_NESTING`] deep, so parsing and evaluation recurse a bounded
//! number of times (AND and OR chains are flat lists, not nested); the LIKE patterns of one
//! selector have at most [`MAX_LIKE_CHARS`] characters in all, and a LIKE reads its value at
//! most once per pattern character, so one evaluation costs at most a few hundred passes over
//! the headers it names.

pub mod eval;
pub mod parse;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::fmt;

/// Longest selector accepted, in bytes.
pub const MAX_SELECTOR_BYTES: usize = 4096;
/// Deepest nesting of parentheses and NOT accepted.
pub const MAX_NESTING: usize = 32;
/// Most characters in all the LIKE patterns of one selector.
pub const MAX_LIKE_CHARS: usize = 256;
/// Most operands (header names and literals, IN list items included) in one selector: this
/// bounds the parsed form to about 16 KiB, whatever the text.
pub const MAX_OPERANDS: usize = 256;

/// Why a selector was refused. Its `Display` is what the subscriber sees:
/// `selector: column N: ...` (1-based, in characters) or `selector: longer than ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError(String);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SelectorError {}

/// A compiled selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    expr: parse::Expr,
    headers: Vec<String>,
}

impl Selector {
    /// Parses `text`, or says where it is wrong.
    pub fn compile(text: &str) -> Result<Selector, SelectorError> {
        if text.len() > MAX_SELECTOR_BYTES {
            return Err(SelectorError(format!(
                "selector: longer than {MAX_SELECTOR_BYTES} bytes"
            )));
        }
        let expr = parse::parse(text).map_err(|e| SelectorError(format!("selector: {e}")))?;
        let mut headers = Vec::new();
        parse::headers_used(&expr, &mut headers);
        Ok(Selector { expr, headers })
    }

    /// Whether a message matches: `header(name)` gives the first value of a header, `None`
    /// when the message has none. Unknown (a comparison with a missing header) is no match.
    pub fn matches<'a>(&'a self, header: impl Fn(&str) -> Option<&'a str>) -> bool {
        eval::eval(&self.expr, &header) == Some(true)
    }

    /// The header names the selector reads (JMS names already turned into the STOMP headers
    /// they stand for), each once.
    pub fn headers_used(&self) -> &[String] {
        &self.headers
    }

    /// The parsed expression.
    pub fn expr(&self) -> &parse::Expr {
        &self.expr
    }
}
