//! Tokenizer and recursive-descent parser for the JMS/ActiveMQ selector subset.
//!
//! Grammar (keywords are case-insensitive):
//! ```text
//! or        := and ("OR" and)*
//! and       := not ("AND" not)*
//! not       := "NOT" not | predicate
//! predicate := "(" or ")" | value [ cmp value | ["NOT"] "IN" "(" literal ("," literal)* ")"
//!              | ["NOT"] "LIKE" string ["ESCAPE" string] | ["NOT"] "BETWEEN" value "AND" value
//!              | "IS" ["NOT"] "NULL" ]
//! value     := identifier | "quoted-identifier" | 'string' | number | TRUE | FALSE
//! cmp       := "=" | "<>" | "<" | ">" | "<=" | ">="
//! ```
//! Errors say at which column (1-based, in characters) the selector is wrong.
//!
//! AND and OR chains are parsed into flat lists, so only NOT and parentheses nest; they may
//! nest [`MAX_NESTING`] deep. A selector has at most [`MAX_OPERANDS`] operands (header names
//! and literals) and its LIKE patterns at most [`MAX_LIKE_CHARS`] characters in all.
//! Identifiers are header names, except the JMS header names ActiveMQ maps STOMP headers to,
//! which name those headers here ([`JMS_HEADERS`], [`Value::Priority`],
//! [`Value::DeliveryMode`]).

use std::fmt;

use crate::{MAX_LIKE_CHARS, MAX_NESTING, MAX_OPERANDS};

/// The JMS header names a selector may use for the STOMP headers ActiveMQ maps them from, read
/// as they are (`JMSPriority` and `JMSDeliveryMode` are [`Value`]s of their own).
pub const JMS_HEADERS: [(&str, &str); 4] = [
    ("JMSCorrelationID", "correlation-id"),
    ("JMSExpiration", "expires"),
    ("JMSReplyTo", "reply-to"),
    ("JMSType", "type"),
];

/// A parsed selector.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// True when any is true (two or more).
    Or(Vec<Expr>),
    /// True when all are true (two or more).
    And(Vec<Expr>),
    Not(Box<Expr>),
    Cmp(Value, Op, Value),
    In {
        value: Value,
        list: Vec<Value>,
        negated: bool,
    },
    Like {
        value: Value,
        pattern: Vec<LikePart>,
        negated: bool,
    },
    Between {
        value: Value,
        low: Value,
        high: Value,
        negated: bool,
    },
    IsNull {
        value: Value,
        negated: bool,
    },
    /// A bare value used as a condition: true when it is `TRUE` or the header's value is `true`.
    Truth(Value),
}

/// An operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Header(String),
    /// `JMSPriority`: the `priority` header, or JMS's default 4 when the message has none.
    Priority,
    /// `JMSDeliveryMode`: `'PERSISTENT'` when the `persistent` header is `true` (any case),
    /// else `'NON_PERSISTENT'`.
    DeliveryMode,
    Str(String),
    Num(f64),
    Bool(bool),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

/// One element of a compiled LIKE pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum LikePart {
    /// `%`: any run of characters.
    Any,
    /// `_`: exactly one character.
    One,
    /// A literal character.
    Char(char),
}

/// A malformed selector: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based character column.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Quoted(String),
    Str(String),
    Num(f64),
    Sym(&'static str),
    Kw(&'static str),
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier `{s}`"),
            Tok::Quoted(s) => format!("identifier \"{s}\""),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Num(n) => format!("number {n}"),
            Tok::Sym(s) => format!("`{s}`"),
            Tok::Kw(k) => k.to_string(),
            Tok::End => "end of selector".to_string(),
        }
    }
}

const KEYWORDS: [&str; 11] = [
    "AND", "OR", "NOT", "IN", "LIKE", "ESCAPE", "BETWEEN", "IS", "NULL", "TRUE", "FALSE",
];

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        column,
        message: message.into(),
    })
}

fn tokenize(input: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return err(col, "unterminated quote"),
                    Some(&q) if q == c && chars.get(i + 1) == Some(&c) => {
                        text.push(c);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        text.push(other);
                        i += 1;
                    }
                }
            }
            out.push((
                if c == '\'' {
                    Tok::Str(text)
                } else {
                    Tok::Quoted(text)
                },
                col,
            ));
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().collect();
            match text.parse::<f64>() {
                Ok(n) if n.is_finite() => out.push((Tok::Num(n), col)),
                _ => return err(col, format!("malformed number `{text}`")),
            }
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '$' | '.'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let upper = word.to_ascii_uppercase();
            match KEYWORDS.iter().find(|k| **k == upper) {
                Some(k) => out.push((Tok::Kw(k), col)),
                None => out.push((Tok::Ident(word), col)),
            }
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let sym = match two.as_str() {
                "<>" => Some("<>"),
                "<=" => Some("<="),
                ">=" => Some(">="),
                "!=" => Some("<>"),
                _ => None,
            };
            if let Some(s) = sym {
                out.push((Tok::Sym(s), col));
                i += 2;
                continue;
            }
            let sym = match c {
                '=' => "=",
                '<' => "<",
                '>' => ">",
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '-' => "-",
                '+' => "+",
                _ => return err(col, format!("unexpected character `{c}`")),
            };
            out.push((Tok::Sym(sym), col));
            i += 1;
        }
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

/// Parses a selector.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(input)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
        like_chars: 0,
        operands: 0,
    };
    if p.peek() == &Tok::End {
        return err(1, "empty selector");
    }
    let expr = p.or()?;
    match p.peek() {
        Tok::End => Ok(expr),
        other => err(
            p.col(),
            format!("expected AND, OR or the end, found {}", other.describe()),
        ),
    }
}

struct Parser {
    tokens: Vec<(Tok, usize)>,
    pos: usize,
    /// Open parentheses and NOTs around the current token.
    depth: usize,
    /// LIKE pattern characters so far.
    like_chars: usize,
    /// Operands (header names and literals) so far.
    operands: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.pos].0
    }

    fn col(&self) -> usize {
        self.tokens[self.pos].1
    }

    fn next(&mut self) -> Tok {
        let t = self.tokens[self.pos].0.clone();
        if t != Tok::End {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), ParseError> {
        if self.eat(&tok) {
            Ok(())
        } else {
            err(
                self.col(),
                format!("expected {what}, found {}", self.peek().describe()),
            )
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let first = self.and()?;
        if self.peek() != &Tok::Kw("OR") {
            return Ok(first);
        }
        let mut any = vec![first];
        while self.eat(&Tok::Kw("OR")) {
            any.push(self.and()?);
        }
        Ok(Expr::Or(any))
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let first = self.not()?;
        if self.peek() != &Tok::Kw("AND") {
            return Ok(first);
        }
        let mut all = vec![first];
        while self.eat(&Tok::Kw("AND")) {
            all.push(self.not()?);
        }
        Ok(Expr::And(all))
    }

    /// Enters a NOT or a parenthesis, refusing to nest deeper than [`MAX_NESTING`].
    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return err(
                self.col(),
                format!("parentheses and NOT nested too deeply (the limit is {MAX_NESTING})"),
            );
        }
        Ok(())
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.peek() == &Tok::Kw("NOT") {
            self.enter()?;
            self.next();
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr, ParseError> {
        if self.peek() == &Tok::Sym("(") {
            self.enter()?;
            self.next();
            let inner = self.or()?;
            self.expect(Tok::Sym(")"), "`)`")?;
            self.depth -= 1;
            return Ok(inner);
        }
        let value = self.value()?;
        let negated = self.eat(&Tok::Kw("NOT"));
        let col = self.col();
        let before = self.pos;
        match self.next() {
            Tok::Sym(s @ ("=" | "<>" | "<" | ">" | "<=" | ">=")) if !negated => {
                let op = match s {
                    "=" => Op::Eq,
                    "<>" => Op::Ne,
                    "<" => Op::Lt,
                    ">" => Op::Gt,
                    "<=" => Op::Le,
                    _ => Op::Ge,
                };
                Ok(Expr::Cmp(value, op, self.value()?))
            }
            Tok::Kw("IN") => {
                self.expect(Tok::Sym("("), "`(` after IN")?;
                let mut list = vec![self.literal()?];
                while self.eat(&Tok::Sym(",")) {
                    list.push(self.literal()?);
                }
                self.expect(Tok::Sym(")"), "`,` or `)` in the IN list")?;
                Ok(Expr::In {
                    value,
                    list,
                    negated,
                })
            }
            Tok::Kw("LIKE") => {
                let pattern_col = self.col();
                let Tok::Str(pattern) = self.next() else {
                    return err(pattern_col, "expected a string pattern after LIKE");
                };
                let escape = if self.eat(&Tok::Kw("ESCAPE")) {
                    let esc_col = self.col();
                    match self.next() {
                        Tok::Str(e) if e.chars().count() == 1 => e.chars().next(),
                        _ => return err(esc_col, "expected a one-character string after ESCAPE"),
                    }
                } else {
                    None
                };
                let pattern = like_pattern(&pattern, escape).map_err(|m| ParseError {
                    column: pattern_col,
                    message: m,
                })?;
                self.like_chars += pattern.len();
                if self.like_chars > MAX_LIKE_CHARS {
                    return err(
                        pattern_col,
                        format!("LIKE patterns longer than {MAX_LIKE_CHARS} characters in all"),
                    );
                }
                Ok(Expr::Like {
                    value,
                    pattern,
                    negated,
                })
            }
            Tok::Kw("BETWEEN") => {
                let low = self.value()?;
                self.expect(Tok::Kw("AND"), "AND in BETWEEN")?;
                let high = self.value()?;
                Ok(Expr::Between {
                    value,
                    low,
                    high,
                    negated,
                })
            }
            Tok::Kw("IS") if !negated => {
                let negated = self.eat(&Tok::Kw("NOT"));
                self.expect(Tok::Kw("NULL"), "NULL after IS")?;
                Ok(Expr::IsNull { value, negated })
            }
            _ if negated => err(col, "expected IN, LIKE or BETWEEN after NOT"),
            _ => {
                // A bare value used as a condition; give the token back.
                self.pos = before;
                if matches!(value, Value::Header(_) | Value::Bool(_)) {
                    Ok(Expr::Truth(value))
                } else {
                    err(
                        col,
                        format!("expected a comparison, found {}", self.peek().describe()),
                    )
                }
            }
        }
    }

    fn literal(&mut self) -> Result<Value, ParseError> {
        let col = self.col();
        match self.value()? {
            Value::Header(_) | Value::Priority | Value::DeliveryMode => {
                err(col, "expected a literal in the IN list")
            }
            v => Ok(v),
        }
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        let col = self.col();
        self.operands += 1;
        if self.operands > MAX_OPERANDS {
            return err(
                col,
                format!("more than {MAX_OPERANDS} operands (header names and literals)"),
            );
        }
        match self.next() {
            Tok::Ident(s) if s == "JMSPriority" => Ok(Value::Priority),
            Tok::Ident(s) if s == "JMSDeliveryMode" => Ok(Value::DeliveryMode),
            Tok::Ident(s) => Ok(Value::Header(
                match JMS_HEADERS.iter().find(|(j, _)| *j == s) {
                    Some((_, header)) => header.to_string(),
                    None => s,
                },
            )),
            Tok::Quoted(s) => Ok(Value::Header(s)),
            Tok::Str(s) => Ok(Value::Str(s)),
            Tok::Num(n) => Ok(Value::Num(n)),
            Tok::Kw("TRUE") => Ok(Value::Bool(true)),
            Tok::Kw("FALSE") => Ok(Value::Bool(false)),
            Tok::Sym(sign @ ("-" | "+")) => match self.next() {
                Tok::Num(n) => Ok(Value::Num(if sign == "-" { -n } else { n })),
                _ => err(col, format!("expected a number after `{sign}`")),
            },
            other => err(
                col,
                format!(
                    "expected a header name or a literal, found {}",
                    other.describe()
                ),
            ),
        }
    }
}

fn like_pattern(pattern: &str, escape: Option<char>) -> Result<Vec<LikePart>, String> {
    let mut parts = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            match chars.next() {
                Some(next) => parts.push(LikePart::Char(next)),
                None => return Err("LIKE pattern ends with its escape character".into()),
            }
        } else if c == '%' {
            parts.push(LikePart::Any);
        } else if c == '_' {
            parts.push(LikePart::One);
        } else {
            parts.push(LikePart::Char(c));
        }
    }
    Ok(parts)
}

/// The header names a selector reads (the plugin asks the host for exactly these).
pub fn headers_used(expr: &Expr, out: &mut Vec<String>) {
    let mut add = |v: &Value| {
        let name = match v {
            Value::Header(h) => h.as_str(),
            Value::Priority => "priority",
            Value::DeliveryMode => "persistent",
            Value::Str(_) | Value::Num(_) | Value::Bool(_) => return,
        };
        if !out.iter().any(|h| h == name) {
            out.push(name.to_string());
        }
    };
    match expr {
        Expr::Or(list) | Expr::And(list) => {
            for e in list {
                headers_used(e, out);
            }
        }
        Expr::Not(a) => headers_used(a, out),
        Expr::Cmp(a, _, b) => {
            add(a);
            add(b);
        }
        Expr::In { value, .. }
        | Expr::Like { value, .. }
        | Expr::IsNull { value, .. }
        | Expr::Truth(value) => add(value),
        Expr::Between {
            value, low, high, ..
        } => {
            add(value);
            add(low);
            add(high);
        }
    }
}
