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
        Value::Priority => Some(header("priority").map_or(Val::Num(4.0), |s| Val::Str(s, true))),
        Value::DeliveryMode => Some(Val::Str(
            match header("persistent") {
                Some(p) if p.eq_ignore_ascii_case("true") => "PERSISTENT",
                _ => "NON_PERSISTENT",
            },
            true,
        )),
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

/// Whether `text` matches a LIKE pattern. Greedy with one restart point (the last `%` seen):
/// no recursion, no allocation, at most one pass over `text` per pattern element.
fn like(text: &str, pattern: &[LikePart]) -> bool {
    let first = |at: usize| text[at..].chars().next();
    let (mut t, mut p) = (0, 0);
    // After the last `%`: the pattern index following it and where in `text` it resumes.
    let mut restart: Option<(usize, usize)> = None;
    loop {
        let step = match pattern.get(p) {
            Some(LikePart::Any) => {
                restart = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(LikePart::One) => first(t).map(char::len_utf8),
            Some(LikePart::Char(c)) => first(t).filter(|x| x == c).map(char::len_utf8),
            None if t == text.len() => return true,
            None => None,
        };
        match (step, restart) {
            (Some(len), _) => {
                t += len;
                p += 1;
            }
            // Let the last `%` take one more character and try again from there.
            (None, Some((after, from))) => match first(from) {
                Some(c) => {
                    let from = from + c.len_utf8();
                    restart = Some((after, from));
                    (t, p) = (from, after);
                }
                None => return false,
            },
            (None, None) => return false,
        }
    }
}

fn not(v: Option<bool>) -> Option<bool> {
    v.map(|b| !b)
}

/// Evaluates `expr`; `header` returns a header's (first) value. `None` is SQL's unknown.
pub fn eval<'a>(expr: &'a Expr, header: &impl Fn(&str) -> Option<&'a str>) -> Option<bool> {
    match expr {
        // SQL's OR: true if any is true, else unknown if any is unknown; AND the same way round.
        Expr::Or(any) => {
            let mut result = Some(false);
            for e in any {
                match eval(e, header) {
                    Some(true) => return Some(true),
                    None => result = None,
                    Some(false) => {}
                }
            }
            result
        }
        Expr::And(all) => {
            let mut result = Some(true);
            for e in all {
                match eval(e, header) {
                    Some(false) => return Some(false),
                    None => result = None,
                    Some(true) => {}
                }
            }
            result
        }
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
            Some(like(s, pattern) != *negated)
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
