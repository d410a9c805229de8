//! Header escaping as defined by STOMP 1.1 (`\n` `\c` `\\`) and 1.2 (adds `\r`).
//!
//! STOMP 1.0 has no escaping at all, and CONNECT, STOMP and CONNECTED frames are never escaped in
//! any version (checklist E-04, E-05, P8, P30). Decoding is single-pass, left to right (E-06), so
//! `\\c` decodes to `\c`, never to `\:`.

use super::frame::{Command, Version};

/// How header names and values are escaped on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Escaping {
    /// No escaping: STOMP 1.0 sessions, and CONNECT / STOMP / CONNECTED frames in every version.
    None,
    /// STOMP 1.1: `\n` (LF), `\c` (`:`) and `\\` (`\`).
    V11,
    /// STOMP 1.2: the 1.1 escapes plus `\r` (CR).
    V12,
}

impl From<Version> for Escaping {
    fn from(version: Version) -> Escaping {
        match version {
            Version::V1_0 => Escaping::None,
            Version::V1_1 => Escaping::V11,
            Version::V1_2 => Escaping::V12,
        }
    }
}

impl Escaping {
    /// The escaping of one frame's headers: none for CONNECT, STOMP and CONNECTED, otherwise
    /// the session version's.
    pub fn for_frame(command: Command, version: Version) -> Escaping {
        if command.is_never_escaped() {
            Escaping::None
        } else {
            Escaping::from(version)
        }
    }

    /// Whether the byte must be written as an escape sequence.
    fn must_escape(self, b: u8) -> bool {
        match self {
            Escaping::None => false,
            Escaping::V11 => matches!(b, b'\n' | b':' | b'\\'),
            Escaping::V12 => matches!(b, b'\n' | b'\r' | b':' | b'\\'),
        }
    }

    /// Whether some byte of `field` must be escaped. Every header of every MESSAGE is asked,
    /// and almost none needs it, so eight bytes are looked at per step (see [`has_any`](crate::text::has_any)).
    fn needs_escaping(self, field: &[u8]) -> bool {
        match self {
            Escaping::None => false,
            Escaping::V11 => crate::text::has_any(field, [b'\n', b':', b'\\', b'\\']),
            Escaping::V12 => crate::text::has_any(field, [b'\n', b'\r', b':', b'\\']),
        }
    }

    /// Whether `field` (a header name, or a value when `is_value`) can be carried at all.
    ///
    /// - `None` cannot carry LF or CR anywhere, nor `:` in a name; an empty name is never valid.
    /// - `V11` has no escape for CR: a raw CR is data in 1.1, except a CR that ends a value,
    ///   which every lenient reader (ours included) takes as part of a CRLF line end.
    /// - `V12` can carry every byte.
    pub(crate) fn can_encode(self, field: &[u8], is_value: bool) -> bool {
        if !is_value && field.is_empty() {
            return false;
        }
        match self {
            Escaping::None => !field
                .iter()
                .any(|&b| b == b'\n' || b == b'\r' || (!is_value && b == b':')),
            Escaping::V11 => !(is_value && field.last() == Some(&b'\r')),
            Escaping::V12 => true,
        }
    }

    /// Appends `field`, escaped. Fast path: one copy when no byte needs escaping.
    pub(crate) fn escape_into(self, out: &mut bytes::BytesMut, field: &[u8]) {
        if !self.needs_escaping(field) {
            out.extend_from_slice(field);
            return;
        }
        let mut run_start = 0;
        for (i, &b) in field.iter().enumerate() {
            if !self.must_escape(b) {
                continue;
            }
            out.extend_from_slice(&field[run_start..i]);
            out.extend_from_slice(match b {
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b':' => b"\\c",
                _ => b"\\\\",
            });
            run_start = i + 1;
        }
        out.extend_from_slice(&field[run_start..]);
    }

    /// Decodes the escapes of one header name or value in a single left-to-right pass.
    ///
    /// Returns `Ok(None)` when the field has nothing to decode (the caller keeps the raw,
    /// zero-copy bytes), `Ok(Some(decoded))` otherwise, and `Err` for an escape this escaping
    /// does not define (including `\r` in 1.1 and a trailing lone `\`).
    #[inline]
    pub(crate) fn unescape(self, field: &[u8]) -> Result<Option<Vec<u8>>, BadEscape> {
        // Inlined into the decoder: most fields have nothing to decode, and this check is all
        // they cost (ten per frame, measured: the call alone was 2 % of a message's work).
        if self == Escaping::None || !field.contains(&b'\\') {
            return Ok(None);
        }
        self.decode_escapes(field).map(Some)
    }

    /// The decoded form of a field that contains a backslash.
    #[inline(never)]
    fn decode_escapes(self, field: &[u8]) -> Result<Vec<u8>, BadEscape> {
        let mut out = Vec::with_capacity(field.len());
        let mut iter = field.iter();
        while let Some(&b) = iter.next() {
            if b != b'\\' {
                out.push(b);
                continue;
            }
            let decoded = match iter.next() {
                Some(b'n') => b'\n',
                Some(b'c') => b':',
                Some(b'\\') => b'\\',
                Some(b'r') if self == Escaping::V12 => b'\r',
                other => {
                    return Err(BadEscape {
                        next: other.copied(),
                    })
                }
            };
            out.push(decoded);
        }
        Ok(out)
    }
}

/// An undefined escape sequence: the byte after the backslash, or `None` for a trailing `\`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadEscape {
    pub next: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn esc(e: Escaping, field: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        e.escape_into(&mut out, field);
        out.to_vec()
    }

    #[test]
    fn from_version_and_frame() {
        assert_eq!(Escaping::from(Version::V1_0), Escaping::None);
        assert_eq!(Escaping::from(Version::V1_1), Escaping::V11);
        assert_eq!(Escaping::from(Version::V1_2), Escaping::V12);
        for v in Version::ALL {
            for c in [Command::Connect, Command::Stomp, Command::Connected] {
                assert_eq!(Escaping::for_frame(c, v), Escaping::None);
            }
            assert_eq!(Escaping::for_frame(Command::Message, v), Escaping::from(v));
        }
    }

    #[test]
    fn escape_vectors() {
        assert_eq!(esc(Escaping::V12, b"plain"), b"plain");
        assert_eq!(esc(Escaping::V12, b"a:b\nc\rd\\e"), b"a\\cb\\nc\\rd\\\\e");
        assert_eq!(esc(Escaping::V11, b"a:b\nc\rd\\e"), b"a\\cb\\nc\rd\\\\e");
        assert_eq!(esc(Escaping::None, b"a:b\\e"), b"a:b\\e");
        // E-06 / P6: literal backslash sequences are escaped so they decode back verbatim.
        assert_eq!(esc(Escaping::V12, b"\\c\\n\\\\"), b"\\\\c\\\\n\\\\\\\\");
    }

    #[test]
    fn unescape_vectors() {
        let u = |e: Escaping, f: &[u8]| e.unescape(f);
        assert_eq!(u(Escaping::V12, b"plain"), Ok(None));
        assert_eq!(u(Escaping::V12, b"a\\cb"), Ok(Some(b"a:b".to_vec())));
        assert_eq!(
            u(Escaping::V12, b"\\n\\r\\c\\\\"),
            Ok(Some(b"\n\r:\\".to_vec()))
        );
        assert_eq!(u(Escaping::V11, b"\\n\\c\\\\"), Ok(Some(b"\n:\\".to_vec())));
        // E-06: single pass, left to right.
        assert_eq!(u(Escaping::V12, b"\\\\c"), Ok(Some(b"\\c".to_vec())));
        assert_eq!(u(Escaping::V12, b"\\\\n"), Ok(Some(b"\\n".to_vec())));
        assert_eq!(u(Escaping::V12, b"\\\\r"), Ok(Some(b"\\r".to_vec())));
        assert_eq!(u(Escaping::V12, b"\\\\\\\\"), Ok(Some(b"\\\\".to_vec())));
        // E-01, E-02: undefined escapes.
        assert_eq!(
            u(Escaping::V11, b"a\\rb"),
            Err(BadEscape { next: Some(b'r') })
        );
        assert_eq!(
            u(Escaping::V12, b"\\t"),
            Err(BadEscape { next: Some(b't') })
        );
        assert_eq!(u(Escaping::V12, b"ab\\"), Err(BadEscape { next: None }));
        assert_eq!(
            u(Escaping::V12, b"\\C"),
            Err(BadEscape { next: Some(b'C') })
        );
        // 1.0 and CONNECT: never decoded.
        assert_eq!(u(Escaping::None, b"p:a\\ss\\t"), Ok(None));
    }

    #[test]
    fn can_encode_rules() {
        let e = Escaping::None;
        assert!(e.can_encode(b"name", false));
        assert!(e.can_encode(b"a:b", true));
        assert!(e.can_encode(b"", true));
        assert!(!e.can_encode(b"", false));
        assert!(!e.can_encode(b"a:b", false));
        assert!(!e.can_encode(b"a\nb", true));
        assert!(!e.can_encode(b"a\rb", true));
        assert!(Escaping::V11.can_encode(b"a\rb", true));
        assert!(!Escaping::V11.can_encode(b"ab\r", true));
        assert!(Escaping::V11.can_encode(b"ab\r", false));
        assert!(Escaping::V12.can_encode(b"ab\r", true));
        assert!(!Escaping::V12.can_encode(b"", false));
    }
}
