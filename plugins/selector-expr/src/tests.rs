//! Tests of what the shared crate adds to the selector plugin's own tests
//! (`plugins/selector/src/tests.rs`, which run on this parser and evaluator): flat AND/OR
//! chains, the nesting and LIKE bounds, LIKE without backtracking, JMS header names.

use crate::parse::Expr;
use crate::{Selector, MAX_LIKE_CHARS, MAX_NESTING, MAX_OPERANDS, MAX_SELECTOR_BYTES};

fn matches(selector: &str, headers: &[(&str, &str)]) -> bool {
    let selector = Selector::compile(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
    selector.matches(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
}

fn error(selector: &str) -> String {
    Selector::compile(selector).expect_err(selector).to_string()
}

#[test]
fn long_or_chains_are_flat() {
    let alternatives: Vec<String> = (0..128).map(|i| format!("n = {i}")).collect();
    let text = alternatives.join(" OR ");
    let selector = Selector::compile(&text).unwrap();
    let Expr::Or(list) = selector.expr() else {
        panic!("{:?}", selector.expr());
    };
    assert_eq!(list.len(), 128);
    assert!(matches(&text, &[("n", "127")]));
    assert!(!matches(&text, &[("n", "128")]));
    let all = (0..200)
        .map(|i| format!("h{i} IS NULL"))
        .collect::<Vec<_>>()
        .join(" AND ");
    assert!(matches(&all, &[("x", "1")]));
    assert!(!matches(&all, &[("h199", "1")]));
    assert_eq!(Selector::compile(&all).unwrap().headers_used().len(), 200);
}

#[test]
fn operands_are_bounded() {
    // The parsed form of a selector stays small: about 16 KiB at most.
    let list = vec!["1"; MAX_OPERANDS - 1].join(",");
    assert!(matches(&format!("a IN ({list})"), &[("a", "1")]));
    let err = error(&format!("a IN ({list},2)"));
    assert!(err.contains("more than 256 operands"), "{err}");
    assert!(
        err.starts_with(&format!("selector: column {}:", 7 + list.len() + 1)),
        "{err}"
    );
    let cmp = vec!["a = 1"; MAX_OPERANDS / 2 + 1].join(" OR ");
    assert!(error(&cmp).contains("more than 256 operands"));
}

#[test]
fn three_valued_logic_over_lists() {
    let h = [("a", "1")];
    assert!(matches("missing = 1 OR a = 1 OR missing = 2", &h));
    assert!(!matches("missing = 1 OR a = 2", &h), "unknown OR false");
    assert!(
        matches("NOT (a = 2 AND missing = 1)", &h),
        "false AND unknown"
    );
    assert!(
        !matches("NOT (a = 1 AND missing = 1)", &h),
        "true AND unknown"
    );
}

#[test]
fn nesting_is_bounded() {
    let deep = |n: usize| format!("{}a = 1{}", "(".repeat(n), ")".repeat(n));
    assert!(matches(&deep(MAX_NESTING), &[("a", "1")]));
    assert!(error(&deep(MAX_NESTING + 1)).contains("nested too deeply"));
    let nots = |n: usize| format!("{}a = 1", "NOT ".repeat(n));
    assert!(matches(&nots(MAX_NESTING), &[("a", "1")]), "an even count");
    assert!(error(&nots(MAX_NESTING + 1)).contains("nested too deeply"));
    assert!(error(&"NOT ".repeat(1000)).contains("nested too deeply"));
    // Nesting counts what is open, not what was: many groups one after the other are fine.
    let groups = vec!["(a = 1)"; 100].join(" AND ");
    assert!(matches(&groups, &[("a", "1")]));
}

#[test]
fn like_patterns_are_bounded_in_all() {
    let pattern = "x".repeat(MAX_LIKE_CHARS / 2);
    let two = format!("a LIKE '{pattern}' OR b LIKE '{pattern}'");
    assert!(Selector::compile(&two).is_ok());
    let three = format!("{two} OR c LIKE 'y'");
    assert!(
        error(&three).contains("LIKE patterns longer than"),
        "{}",
        error(&three)
    );
}

#[test]
fn like_matches_without_backtracking_blowup() {
    let cases = [
        ("ab%", "abc", true),
        ("%bc", "abc", true),
        ("%b%", "abc", true),
        ("a_c", "abc", true),
        ("a_c", "ac", false),
        ("%", "", true),
        ("_", "", false),
        ("", "", true),
        ("a%b%c", "aXbYbZc", true),
        ("a%b%c", "aXbYbZ", false),
        ("%aa", "aaa", true),
        ("%ab%ab", "abxabyab", true),
        ("_ö_", "zöz", true),
        ("%ö", "ööö", true),
        ("%%a%%", "bab", true),
    ];
    for (pattern, text, want) in cases {
        let selector = format!("v LIKE '{pattern}'");
        assert_eq!(matches(&selector, &[("v", text)]), want, "{pattern} {text}");
    }
    // The classic exponential case for a backtracking matcher: done in n * m steps.
    let pattern = format!("{}b", "%a".repeat(100));
    let text = "a".repeat(16 * 1024);
    assert!(!matches(&format!("v LIKE '{pattern}'"), &[("v", &text)]));
}

#[test]
fn jms_header_names_read_the_stomp_headers() {
    let h = [
        ("type", "order"),
        ("priority", "7"),
        ("correlation-id", "c-1"),
        ("reply-to", "/queue/r"),
        ("expires", "0"),
    ];
    assert!(matches("JMSType = 'order' AND JMSPriority > 4", &h));
    assert!(matches(
        "JMSCorrelationID = 'c-1' AND JMSReplyTo LIKE '/queue/%'",
        &h
    ));
    assert!(matches("JMSExpiration = 0", &h));
    let used = Selector::compile("JMSPriority > 4 AND JMSType IS NOT NULL")
        .unwrap()
        .headers_used()
        .to_vec();
    assert_eq!(used, ["priority", "type"]);
    assert!(
        !matches("\"JMSType\" = 'order'", &h),
        "a quoted name is the header of that name"
    );
    assert!(
        matches("JMSPriority = 4", &[]),
        "no priority header: JMS's default 4"
    );
    assert!(
        !matches("JMSPriority > 4", &[("priority", "x")]),
        "not a number: unknown"
    );
    assert!(matches("JMSPriority IS NOT NULL", &[]));
    assert!(matches(
        "JMSDeliveryMode = 'PERSISTENT'",
        &[("persistent", "TRUE")]
    ));
    assert!(matches(
        "JMSDeliveryMode = 'NON_PERSISTENT'",
        &[("persistent", "false")]
    ));
    assert!(matches("JMSDeliveryMode = 'NON_PERSISTENT'", &[]));
    let used = Selector::compile("JMSDeliveryMode = 'PERSISTENT' OR JMSPriority = 4")
        .unwrap()
        .headers_used()
        .to_vec();
    assert_eq!(used, ["persistent", "priority"]);
    assert!(error("JMSPriority").contains("expected a comparison"));
}

#[test]
fn the_length_is_bounded() {
    let long = format!("a = '{}'", "x".repeat(MAX_SELECTOR_BYTES));
    assert_eq!(
        error(&long),
        format!("selector: longer than {MAX_SELECTOR_BYTES} bytes")
    );
}
