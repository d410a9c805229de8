//! Bytes shown to people and numbers written as text, one way each: peer bytes made safe for an
//! ERROR message or a log line, hexadecimal, decimal digits written without allocating, and
//! the constant-time comparison of secrets.

/// Peer bytes made safe for an error message that quotes them exactly: lossy UTF-8, control
/// characters escaped (`\n`, `\u{1b}`), cut after `max_chars` with `...`.
pub fn printable(bytes: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Most characters of a name quoted by [`shown`]: longer than any destination seen in practice,
/// short enough that an ERROR quoting a hostile name stays one readable line.
const SHOWN_CHARS: usize = 200;

/// A name a client chose (a destination, a subscription id) as ERROR messages quote it: lossy
/// UTF-8, control characters dropped, at most 200 characters (`…` when cut).
pub fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(SHOWN_CHARS)
        .collect();
    if text
        .chars()
        .filter(|c| !c.is_control())
        .nth(SHOWN_CHARS)
        .is_some()
    {
        out.push('…');
    }
    out
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        let [high, low] = hex_byte(b);
        out.push(high as char);
        out.push(low as char);
    }
    out
}

/// The bytes [`hex`] wrote (either case); `None` for anything else (an odd length, a sign, a
/// non-digit).
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |d: u8| char::from(d).to_digit(16).map(|v| v as u8);
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// One byte as two lowercase hexadecimal digits.
pub fn hex_byte(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]
}

/// Compares secrets without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The decimal digits of a `u64`, formatted without allocating.
pub struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    /// The digits of `n`, held on the stack.
    pub fn new(n: u64) -> Decimal {
        let mut buf = [0u8; 20];
        let start = Decimal::write_before(n, &mut buf);
        Decimal { buf, start }
    }

    /// Writes the digits of `n` at the end of `out` (which must have room for them: 20 bytes
    /// always do) and returns where they start: for callers that put text in front of them
    /// in the same buffer.
    pub fn write_before(mut n: u64, out: &mut [u8]) -> usize {
        let mut i = out.len();
        loop {
            i -= 1;
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return i;
            }
        }
    }

    /// The ASCII digits, without leading zeros (`0` is one digit).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Whether `field` holds any of the four `targets` (repeat one to look for fewer). Short
/// fields are the rule here (header names and values, destinations), where a general byte
/// search costs more in set-up than in search; this one looks at eight bytes per step: a byte of the word
/// equals a target exactly when the same byte of `word ^ target-in-every-byte` is zero, and
/// `(x - 0x01..01) & !x & 0x80..80` is non-zero exactly when some byte of `x` is zero.
#[inline]
pub fn has_any(field: &[u8], targets: [u8; 4]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let spread = targets.map(|t| u64::from(t) * ONES);
    let mut words = field.chunks_exact(8);
    for word in words.by_ref() {
        let word = u64::from_ne_bytes(word.try_into().expect("chunks of eight"));
        if spread.iter().any(|&t| has_zero_byte(word ^ t)) {
            return true;
        }
    }
    words.remainder().iter().any(|b| targets.contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhex_reads_what_hex_writes_and_refuses_the_rest() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&all)).unwrap(), all);
        assert_eq!(unhex("00FFa0").unwrap(), [0, 255, 0xa0]);
        assert_eq!(unhex("").unwrap(), Vec::<u8>::new());
        for bad in ["0", "+f", "-1", "0g", "é0"] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn has_any_finds_a_target_at_every_position_and_length() {
        let targets = [b'\n', b'\r', b':', b'\\'];
        for len in 0..40 {
            let plain = vec![b'a'; len];
            assert!(!has_any(&plain, targets), "len {len}");
            for at in 0..len {
                for &t in &targets {
                    let mut field = plain.clone();
                    field[at] = t;
                    assert!(has_any(&field, targets), "len {len} at {at} byte {t}");
                }
            }
        }
        // Bytes next to the targets, and high bytes, are not mistaken for them.
        let near: Vec<u8> = (0..=255u8).filter(|b| !targets.contains(b)).collect();
        assert!(!has_any(&near, targets));
    }

    #[test]
    fn printable_escapes_and_cuts() {
        assert_eq!(printable(b"a\r\n\x1b\xffb", 40), "a\\r\\n\\u{1b}\u{fffd}b");
        assert_eq!(printable(b"abcdef", 3), "abc...");
    }

    #[test]
    fn shown_drops_control_characters_and_cuts_long_names() {
        assert_eq!(shown(b"/queue/a\nb"), "/queue/ab");
        let long = vec![b'x'; 300];
        let text = shown(&long);
        assert_eq!(text.chars().count(), SHOWN_CHARS + 1);
        assert!(text.ends_with('…'));
        assert_eq!(shown(&long[..SHOWN_CHARS]).chars().count(), SHOWN_CHARS);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn hex_and_decimal() {
        assert_eq!(hex(&[0, 0x7f, 0xff]), "007fff");
        for n in [0u64, 7, 10, 99, 1234567890, u64::MAX] {
            assert_eq!(Decimal::new(n).as_bytes(), n.to_string().as_bytes());
        }
    }
}
