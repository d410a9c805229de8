//! Plugin verdicts summarised on one line, for decision traces ([`super::trace`]): `keep`,
//! `rewrite → /queue/x`, `fan-out 2: /a, /b`, `reject: reason`, `deliver`, `skip`,
//! `authenticated alice`, `refused: reason`.

use super::convert::{Edit, Verdict};
use crate::text::shown;

/// Destinations listed in a fan-out summary (the rest are counted).
const LISTED: usize = 8;

/// What an edit changes besides the destination, e.g. ` (set 2 headers, body)`.
fn changes(edit: &Edit) -> String {
    let mut parts = Vec::new();
    if !edit.set_headers.is_empty() {
        parts.push(format!("set {}", names(&edit.set_headers)));
    }
    if !edit.remove_headers.is_empty() {
        let removed: Vec<String> = edit.remove_headers.iter().map(|n| shown(n)).collect();
        parts.push(format!("removed {}", removed.join(", ")));
    }
    if edit.body.is_some() {
        parts.push("body".to_string());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

fn names(headers: &[(bytes::Bytes, bytes::Bytes)]) -> String {
    let names: Vec<String> = headers.iter().map(|(n, _)| shown(n)).collect();
    names.join(", ")
}

/// One edit: `→ /queue/x (set a, b)` or, without a new destination, `(set a)`.
fn edit(edit: &Edit) -> String {
    match &edit.destination {
        Some(to) => format!("→ {}{}", shown(to), changes(edit)),
        None => changes(edit).trim_start().to_string(),
    }
}

/// A send verdict.
pub fn send(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Keep => "keep".to_string(),
        Verdict::Rewrite(e) => format!("rewrite {}", edit(e)).trim_end().to_string(),
        Verdict::FanOut(edits) if edits.is_empty() => "fan-out 0: dropped".to_string(),
        Verdict::FanOut(edits) => {
            let listed: Vec<String> = edits
                .iter()
                .take(LISTED)
                .map(|e| match &e.destination {
                    Some(to) => shown(to),
                    None => "(same)".to_string(),
                })
                .collect();
            let more = edits.len().saturating_sub(LISTED);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("fan-out {}: {}{more}", edits.len(), listed.join(", "))
        }
        Verdict::Reject(reason) => format!("reject: {reason}"),
    }
}

/// A filter rewrite: the delivered copy's destination when it changed, else what changed.
pub fn filter_rewrite(from: &[u8], to: &[u8], headers_changed: bool, body_changed: bool) -> String {
    let mut text = if from == to {
        "rewrite".to_string()
    } else {
        format!("rewrite → {}", shown(to))
    };
    match (headers_changed, body_changed) {
        (true, true) => text.push_str(" (headers, body)"),
        (true, false) => text.push_str(" (headers)"),
        (false, true) => text.push_str(" (body)"),
        (false, false) => {}
    }
    text
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn to(destination: &str) -> Edit {
        Edit {
            destination: Some(Bytes::copy_from_slice(destination.as_bytes())),
            ..Edit::default()
        }
    }

    #[test]
    fn send_verdicts_read_as_one_line() {
        assert_eq!(send(&Verdict::Keep), "keep");
        assert_eq!(
            send(&Verdict::Rewrite(to("/queue/x"))),
            "rewrite → /queue/x"
        );
        let mut headers = to("/queue/y");
        headers.set_headers = vec![(Bytes::from("a"), Bytes::from("1"))];
        headers.remove_headers = vec![Bytes::from("b")];
        headers.body = Some(Bytes::from("new"));
        assert_eq!(
            send(&Verdict::Rewrite(headers)),
            "rewrite → /queue/y (set a; removed b; body)"
        );
        let only_headers = Edit {
            set_headers: vec![(Bytes::from("a"), Bytes::from("1"))],
            ..Edit::default()
        };
        assert_eq!(send(&Verdict::Rewrite(only_headers)), "rewrite (set a)");
        assert_eq!(
            send(&Verdict::FanOut(vec![to("/a"), to("/b")])),
            "fan-out 2: /a, /b"
        );
        assert_eq!(send(&Verdict::FanOut(vec![])), "fan-out 0: dropped");
        let many: Vec<Edit> = (0..10).map(|i| to(&format!("/q{i}"))).collect();
        assert!(send(&Verdict::FanOut(many)).ends_with("/q7 and 2 more"));
        assert_eq!(
            send(&Verdict::Reject("no route".into())),
            "reject: no route"
        );
    }

    #[test]
    fn filter_rewrites_say_what_changed() {
        assert_eq!(
            filter_rewrite(b"/a", b"/a", true, false),
            "rewrite (headers)"
        );
        assert_eq!(
            filter_rewrite(b"/a", b"/b", false, true),
            "rewrite → /b (body)"
        );
        assert_eq!(filter_rewrite(b"/a", b"/a", false, false), "rewrite");
    }
}
