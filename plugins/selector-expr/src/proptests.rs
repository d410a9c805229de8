//! Property tests: a selector is untrusted text, so compiling any text and evaluating whatever
//! compiles never panics and stays within the bounds; LIKE agrees with a plain recursive
//! reference matcher.

use proptest::prelude::*;

use crate::parse::{Expr, LikePart};
use crate::{Selector, MAX_NESTING, MAX_SELECTOR_BYTES};

/// Selector-shaped text: tokens of the grammar, mixed with arbitrary characters.
fn selector_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        4 => prop::sample::select(vec![
            "a", "b", "JMSType", "\"x-y\"", "'s'", "'it''s'", "1", "-2.5", "1e3", "TRUE", "FALSE",
            "=", "<>", "!=", "<", ">=", "(", ")", ",", "AND", "or", "NOT", "IN", "LIKE", "'%a_'",
            "ESCAPE", "'!'", "BETWEEN", "IS", "NULL", "+", "-", " ",
        ]).prop_map(str::to_string),
        1 => any::<char>().prop_map(|c| c.to_string()),
        1 => "[ -~]{0,6}",
    ];
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.join(" "))
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["a", "b", "type", "x-y", "c"]).prop_map(str::to_string),
            prop_oneof![
                Just("1".to_string()),
                Just("true".to_string()),
                Just("s".to_string()),
                "[a-z%_ 0-9.]{0,8}",
            ],
        ),
        0..5,
    )
}

fn depth(expr: &Expr) -> usize {
    1 + match expr {
        Expr::Or(list) | Expr::And(list) => list.iter().map(depth).max().unwrap_or(0),
        Expr::Not(inner) => depth(inner),
        _ => 0,
    }
}

/// The obvious recursive LIKE (exponential in the worst case; fine on small inputs).
fn reference(text: &[char], pattern: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('%', rest)) => (0..=text.len()).any(|i| reference(&text[i..], rest)),
        Some(('_', rest)) => !text.is_empty() && reference(&text[1..], rest),
        Some((c, rest)) => text.first() == Some(c) && reference(&text[1..], rest),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_compiles_or_is_refused_and_evaluates_without_panic(
        text in selector_text(),
        headers in headers(),
    ) {
        match Selector::compile(&text) {
            Ok(selector) => {
                prop_assert!(text.len() <= MAX_SELECTOR_BYTES);
                // OR/AND/NOT levels stay within a small multiple of the nesting limit.
                prop_assert!(depth(selector.expr()) <= 3 * (MAX_NESTING + 1));
                let _ = selector.matches(|name| {
                    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
                });
                let used = selector.headers_used();
                for name in used {
                    prop_assert_eq!(used.iter().filter(|n| *n == name).count(), 1);
                }
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(text.starts_with("selector: "), "{}", text);
                prop_assert!(!text.contains('\n'), "{}", text);
            }
        }
    }

    #[test]
    fn like_agrees_with_the_reference(
        pattern in "[ab%_]{0,8}",
        text in "[abö]{0,10}",
    ) {
        let selector = Selector::compile(&format!("v LIKE '{pattern}'")).unwrap();
        let Expr::Like { pattern: parts, .. } = selector.expr() else {
            panic!("{:?}", selector.expr());
        };
        prop_assert_eq!(parts.len(), pattern.chars().count());
        prop_assert!(parts.iter().all(|p| !matches!(p, LikePart::Char('%' | '_'))));
        let want = reference(
            &text.chars().collect::<Vec<_>>(),
            &pattern.chars().collect::<Vec<_>>(),
        );
        prop_assert_eq!(selector.matches(|_| Some(text.as_str())), want, "{} {}", pattern, text);
    }
}
