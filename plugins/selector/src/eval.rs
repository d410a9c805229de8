//! Evaluates a parsed selector against a message's headers with SQL three-valued logic: a
//! missing header makes a comparison unknown, and a message is delivered only when the whole
//! selector is true.
//!
//! A header compared with a number is compared numerically when its value looks like a number
//! (else the comparison is unknown); two headers are compared numerically when both look numeric;
//! everything else compares as strings.

use crate::parse::{Expr, LikePart, Op, Value};
use std::cmp::Ordering;

/// A resolved operand.
#[derive(Debug, Clone, PartialEq)]
enum Val<'a> {
    Str(&'a str, bool),
    Num(f64),
    Bool(bool),
}

fn resolve<'a>(v: &'a Value, header: &impl Fn(&str) -> Option<&'a str>) -> Option<Val<'a>> {
    match v {
        Value::Header(name) => header(name).map(|s| Val::Str(s, true)),
        Value::Str(s) => Some(Val::Str(s, false)),
        Value::Num(n) => Some(Val::Num(*n)),
        Value::Bool(b) => Some(Val::Bool(*b)),
    }
}

fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn compare(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Num(x), Val::Str(s, true)) => number(s).and_then(|y| x.partial_cmp(&y)),
        (Val::Str(s, true), Val::Num(y)) => number(s).and_then(|x| x.partial_cmp(y)),
        (Val::Str(x, true), Val::Str(y, true)) => match (number(x), number(y)) {
            (Some(p), Some(q)) => p.partial_cmp(&q),
            _ => Some(x.cmp(y)),
        },
        (Val::Str(x, _), Val::Str(y, _)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Str(s, true)) | (Val::Str(s, true), Val::Bool(x)) => {
            let b = if s.eq_ignore_ascii_case("true") {
                true
            } else if s.eq_ignore_ascii_case("false") {
                false
            } else {
                return None;
            };
            Some(b.cmp(x))
        }
        _ => None,
    }
}

fn like(text: &[char], pattern: &[LikePart]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((LikePart::Any, rest)) => (0..=text.len()).any(|i| like(&text[i..], rest)),
        Some((LikePart::One, rest)) => !text.is_empty() && like(&text[1..], rest),
        Some((LikePart::Char(c), rest)) => text.first() == Some(c) && like(&text[1..], rest),
    }
}

fn not(v: Option<bool>) -> Option<bool> {
    v.map(|b| !b)
}

/// Evaluates `expr`; `header` returns a header's (first) value. `None` is SQL's unknown.
pub fn eval<'a>(expr: &'a Expr, header: &impl Fn(&str) -> Option<&'a str>) -> Option<bool> {
    match expr {
        Expr::Or(a, b) => match (eval(a, header), eval(b, header)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Expr::And(a, b) => match (eval(a, header), eval(b, header)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Expr::Not(a) => not(eval(a, header)),
        Expr::Cmp(a, op, b) => {
            let ord = compare(&resolve(a, header)?, &resolve(b, header)?)?;
            Some(match op {
                Op::Eq => ord == Ordering::Equal,
                Op::Ne => ord != Ordering::Equal,
                Op::Lt => ord == Ordering::Less,
                Op::Gt => ord == Ordering::Greater,
                Op::Le => ord != Ordering::Greater,
                Op::Ge => ord != Ordering::Less,
            })
        }
        Expr::In {
            value,
            list,
            negated,
        } => {
            let v = resolve(value, header)?;
            let found = list.iter().any(|item| {
                resolve(item, header).is_some_and(|i| compare(&v, &i) == Some(Ordering::Equal))
            });
            Some(found != *negated)
        }
        Expr::Like {
            value,
            pattern,
            negated,
        } => {
            let Val::Str(s, _) = resolve(value, header)? else {
                return None;
            };
            let chars: Vec<char> = s.chars().collect();
            Some(like(&chars, pattern) != *negated)
        }
        Expr::Between {
            value,
            low,
            high,
            negated,
        } => {
            let v = resolve(value, header)?;
            let above = compare(&v, &resolve(low, header)?)? != Ordering::Less;
            let below = compare(&v, &resolve(high, header)?)? != Ordering::Greater;
            Some((above && below) != *negated)
        }
        Expr::IsNull { value, negated } => Some(resolve(value, header).is_none() != *negated),
        Expr::Truth(value) => match resolve(value, header)? {
            Val::Bool(b) => Some(b),
            Val::Str(s, _) => Some(s.eq_ignore_ascii_case("true")),
            Val::Num(_) => None,
        },
    }
}
