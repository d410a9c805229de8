//! Native tests of the selector parser and evaluator (`cargo test -p selector`).

use crate::{compile, matches};

const MSG: &[(&str, &str)] = &[
    ("type", "order"),
    ("region", "eu"),
    ("price", "42.5"),
    ("qty", "10"),
    ("code", "A_1%"),
    ("content-type", "application/json"),
    ("flag", "true"),
    ("name", "Zoë"),
    ("region", "us"),
];

fn check(selector: &str) -> bool {
    let expr = compile(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
    matches(&expr, MSG)
}

fn error(selector: &str) -> String {
    compile(selector).expect_err(selector)
}

#[test]
fn comparisons_strings_and_numbers() {
    assert!(check("type = 'order'"));
    assert!(!check("type = 'Order'"));
    assert!(check("type <> 'trade'"));
    assert!(check("type != 'trade'"));
    assert!(
        check("region = 'eu'"),
        "the first occurrence of a repeated header wins"
    );
    assert!(check("price > 42"));
    assert!(check("price >= 42.5"));
    assert!(check("price < 100"));
    assert!(check("price <= 42.5"));
    assert!(!check("price > 42.5"));
    assert!(check("qty = 10"));
    assert!(check("qty = 10.0"), "numeric comparison, not textual");
    assert!(
        check("qty > 9"),
        "10 > 9 numerically although '10' < '9' as text"
    );
    assert!(check("qty < 1e2"));
    assert!(check("-5 < qty"));
    assert!(
        !check("type > 5"),
        "a non-numeric header compared with a number is unknown"
    );
    assert!(!check("NOT (type > 5)"), "NOT unknown is unknown");
    assert!(
        check("qty < price"),
        "two numeric-looking headers compare numerically"
    );
    assert!(check("name = 'Zoë'"));
    assert!(check("'order' = type"));
    assert!(!check("type = 'it''s'"));
    assert!(matches(&compile("t = 'it''s'").unwrap(), &[("t", "it's")]));
}

#[test]
fn logic_and_precedence() {
    assert!(check("type = 'order' AND region = 'eu'"));
    assert!(!check("type = 'order' AND region = 'us'"));
    assert!(check("type = 'x' OR region = 'eu'"));
    assert!(check("type = 'x' OR type = 'y' OR qty = 10"));
    assert!(check("NOT type = 'x'"));
    assert!(
        check("not type = 'x' and region = 'eu'"),
        "keywords are case-insensitive"
    );
    // AND binds tighter than OR.
    assert!(check("type = 'x' AND qty = 1 OR region = 'eu'"));
    assert!(!check("type = 'x' AND (qty = 1 OR region = 'eu')"));
    assert!(check("((type = 'order'))"));
    assert!(check("TRUE"));
    assert!(!check("FALSE"));
    assert!(check("flag"));
    assert!(check("flag = TRUE"));
}

#[test]
fn in_like_between_null() {
    assert!(check("region IN ('us', 'eu')"));
    assert!(!check("region IN ('us', 'asia')"));
    assert!(check("region NOT IN ('us', 'asia')"));
    assert!(check("qty IN (5, 10)"));
    assert!(check("type LIKE 'ord%'"));
    assert!(check("type LIKE '_rder'"));
    assert!(!check("type LIKE '_der'"));
    assert!(check("type LIKE '%'"));
    assert!(check("type NOT LIKE 'x%'"));
    assert!(check("code LIKE 'A\\_1\\%' ESCAPE '\\'"));
    assert!(!check("code LIKE 'AB1%' ESCAPE '\\'"));
    assert!(check("code LIKE 'A!_%' ESCAPE '!'"));
    assert!(check("qty BETWEEN 5 AND 10"));
    assert!(!check("qty BETWEEN 11 AND 20"));
    assert!(check("qty NOT BETWEEN 11 AND 20"));
    assert!(check("price BETWEEN 42 AND 43 AND type = 'order'"));
    assert!(check("missing IS NULL"));
    assert!(!check("type IS NULL"));
    assert!(check("type IS NOT NULL"));
    assert!(!check("missing = 'x'"));
    assert!(
        !check("missing <> 'x'"),
        "comparisons with a missing header are unknown"
    );
    assert!(check("missing = 'x' OR type = 'order'"));
    assert!(!check("missing IN ('x')") && !check("missing NOT IN ('x')"));
}

#[test]
fn quoted_identifiers() {
    assert!(check("\"content-type\" = 'application/json'"));
    assert!(check("\"content-type\" LIKE 'application/%'"));
    assert!(!check("\"content-type\" = 'text/plain'"));
}

#[test]
fn errors_say_where() {
    assert_eq!(
        error("type = "),
        "selector: column 8: expected a header name or a literal, found end of selector"
    );
    assert_eq!(
        error("type == 'a'"),
        "selector: column 7: expected a header name or a literal, found `=`"
    );
    assert!(error("type = 'abc").starts_with("selector: column 8: unterminated quote"));
    assert!(error("(type = 'a'").contains("column 12: expected `)`"));
    assert!(error("type = 'a' AND").contains("column 15"));
    assert!(error("type = 'a' region = 'b'").contains("column 12: expected AND, OR or the end"));
    assert!(error("type IN 'a'").contains("column 9: expected `(` after IN"));
    assert!(error("type IN ()").contains("column 10"));
    assert!(error("type IN (region)").contains("column 10: expected a literal"));
    assert!(error("type LIKE 5").contains("column 11: expected a string pattern"));
    assert!(error("type LIKE 'a' ESCAPE 'ab'").contains("column 22: expected a one-character"));
    assert!(error("qty BETWEEN 1 10").contains("column 15: expected AND in BETWEEN"));
    assert!(error("type IS 'x'").contains("column 9: expected NULL"));
    assert!(error("type NOT = 'a'").contains("column 10: expected IN, LIKE or BETWEEN"));
    assert!(error("type = 'a' # x").contains("column 12: unexpected character `#`"));
    assert!(error("").contains("column 1: empty selector"));
    assert!(error("'a'").contains("column 4: expected a comparison"));
    assert!(error(&"(".repeat(100)).contains("nested too deeply"));
    assert!(error(&"a".repeat(5000)).contains("longer than"));
}

#[test]
fn columns_count_characters_not_bytes() {
    assert!(error("name = 'Zoë' #").contains("column 14"));
}
