//! Destination patterns: `*` matches any run of bytes (including `/` and none at all); every
//! other byte matches itself. `**` is the same as `*`, so `*` and `**` both mean "everything".

/// Whether `pattern` matches all of `text`.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative wildcard matching with single backtracking point: O(len(pattern) * len(text)).
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Whether any of `patterns` matches `text`.
pub fn any_matches<S: AsRef<str>>(patterns: &[S], text: &[u8]) -> bool {
    patterns
        .iter()
        .any(|p| matches(p.as_ref().as_bytes(), text))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards() {
        assert!(matches(b"*", b"/queue/a"));
        assert!(matches(b"**", b"/queue/a"));
        assert!(matches(b"*", b""));
        assert!(matches(b"/queue/orders", b"/queue/orders"));
        assert!(!matches(b"/queue/orders", b"/queue/orders.eu"));
        assert!(matches(b"/topic/public.*", b"/topic/public.news"));
        assert!(matches(b"/topic/public.*", b"/topic/public."));
        assert!(!matches(b"/topic/public.*", b"/topic/private.news"));
        assert!(matches(b"/queue/*.eu", b"/queue/orders.eu"));
        assert!(!matches(b"/queue/*.eu", b"/queue/orders.us"));
        assert!(matches(b"*a*b*", b"xxaxxbxx"));
        assert!(!matches(b"*a*b", b"xxaxxbxxc"));
    }
}
