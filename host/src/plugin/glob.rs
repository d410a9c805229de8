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

/// A pattern prepared for matching many texts: most are `*` or have no `*` at all.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Only `*`s: matches everything.
    Any,
    /// No `*`: matches exactly itself.
    Exact(Box<[u8]>),
    /// Anything else.
    Wildcard(Box<[u8]>),
}

impl Pattern {
    pub fn new(pattern: &str) -> Pattern {
        let bytes = pattern.as_bytes();
        if !bytes.is_empty() && bytes.iter().all(|&b| b == b'*') {
            Pattern::Any
        } else if !bytes.contains(&b'*') {
            Pattern::Exact(bytes.into())
        } else {
            Pattern::Wildcard(bytes.into())
        }
    }

    /// Whether the pattern matches all of `text` (as [`matches`]).
    pub fn matches(&self, text: &[u8]) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(exact) => **exact == *text,
            Pattern::Wildcard(pattern) => matches(pattern, text),
        }
    }
}

/// Whether any of `patterns` matches `text`.
pub fn any_matches<S: AsRef<str>>(patterns: &[S], text: &[u8]) -> bool {
    patterns.iter().any(|p| {
        let p = p.as_ref().as_bytes();
        p == b"*" || matches(p, text)
    })
}

#[cfg(test)]
mod tests {
    use super::{matches, Pattern};

    #[test]
    fn prepared_patterns_match_as_the_plain_ones() {
        let patterns = [
            "*",
            "**",
            "",
            "/queue/a",
            "/queue/*",
            "*a*b",
            "/topic/public.*",
        ];
        let texts = [
            "",
            "/queue/a",
            "/queue/ab",
            "xaxb",
            "/topic/public.",
            "/topic/x",
        ];
        for p in patterns {
            for t in texts {
                let expected = matches(p.as_bytes(), t.as_bytes());
                assert_eq!(
                    Pattern::new(p).matches(t.as_bytes()),
                    expected,
                    "{p:?} {t:?}"
                );
            }
        }
    }

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
