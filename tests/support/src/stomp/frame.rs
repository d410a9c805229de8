//! STOMP frames as the tests see them: [`Frame`] and its wire encoding, [`parse_frame`] (a parser
//! of its own, deliberately independent of the broker's codec), the protocol [`Version`]s, and
//! the frame checks and builders the suites share.

use std::fmt;

/// A STOMP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// STOMP 1.0 (no header escaping).
    V10,
    /// STOMP 1.1 (header escaping without `\r`).
    V11,
    /// STOMP 1.2.
    V12,
}

/// Every version, oldest first.
pub const ALL_VERSIONS: [Version; 3] = [Version::V10, Version::V11, Version::V12];

impl Version {
    /// `"1.0"`, `"1.1"` or `"1.2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V10 => "1.0",
            Version::V11 => "1.1",
            Version::V12 => "1.2",
        }
    }

    /// The version named `"1.0"`, `"1.1"` or `"1.2"`.
    pub fn parse(s: &str) -> Option<Version> {
        match s {
            "1.0" => Some(Version::V10),
            "1.1" => Some(Version::V11),
            "1.2" => Some(Version::V12),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A STOMP frame with decoded (unescaped) headers, in order, repeats kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// `SEND`, `MESSAGE`, `ERROR`, ...
    pub command: String,
    /// `(name, value)` pairs in wire order.
    pub headers: Vec<(String, String)>,
    /// The body, without the terminating NUL.
    pub body: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.command)?;
        for (k, v) in &self.headers {
            write!(f, " [{k:?}: {v:?}]")?;
        }
        let body = String::from_utf8_lossy(&self.body);
        let shown: String = body.chars().take(200).collect();
        write!(f, " body({} bytes)={shown:?}", self.body.len())
    }
}

impl Frame {
    /// A frame with no headers and an empty body.
    pub fn new(command: &str) -> Frame {
        Frame {
            command: command.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (kept in order, repeats allowed).
    pub fn h(mut self, name: &str, value: &str) -> Frame {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body (no `content-length`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Frame {
        self.body = body.into();
        self
    }

    /// Sets the body and a matching `content-length` header.
    pub fn body_cl(self, body: impl Into<Vec<u8>>) -> Frame {
        let body = body.into();
        let len = body.len().to_string();
        self.h("content-length", &len).body(body)
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of a header, which must be present.
    pub fn must(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("header {name:?} missing in {self:?}"))
    }

    /// The body as text, which must be UTF-8.
    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or_else(|_| panic!("body is not UTF-8 in {self:?}"))
    }

    /// Whether the frame's command is `command`.
    pub fn is(&self, command: &str) -> bool {
        self.command == command
    }

    /// Wire bytes for a session of `version` (CONNECT/STOMP are never escaped).
    pub fn encode(&self, version: Version) -> Vec<u8> {
        let escape =
            version >= Version::V11 && self.command != "CONNECT" && self.command != "STOMP";
        let mut out = Vec::with_capacity(64 + self.body.len());
        out.extend_from_slice(self.command.as_bytes());
        out.push(b'\n');
        for (k, v) in &self.headers {
            if escape {
                escape_into(&mut out, k, version);
                out.push(b':');
                escape_into(&mut out, v, version);
            } else {
                out.extend_from_slice(k.as_bytes());
                out.push(b':');
                out.extend_from_slice(v.as_bytes());
            }
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out.push(0);
        out
    }
}

fn escape_into(out: &mut Vec<u8>, s: &str, version: Version) {
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b':' => out.extend_from_slice(b"\\c"),
            b'\r' if version >= Version::V12 => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn unescape(raw: &[u8], version: Version) -> Result<String, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            let next = raw.get(i + 1).copied();
            match next {
                Some(b'\\') => out.push(b'\\'),
                Some(b'n') => out.push(b'\n'),
                Some(b'c') => out.push(b':'),
                Some(b'r') if version >= Version::V12 => out.push(b'\r'),
                _ => {
                    return Err(format!(
                        "undefined escape in header {:?} (version {version})",
                        String::from_utf8_lossy(raw)
                    ))
                }
            }
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| format!("header not UTF-8: {:?}", String::from_utf8_lossy(raw)))
}

/// Parses one frame from the front of `buf` (leading EOLs must already be skipped).
/// Returns the frame and the bytes consumed (including one optional EOL after the NUL),
/// `Ok(None)` when more bytes are needed.
pub fn parse_frame(buf: &[u8], version: Version) -> Result<Option<(Frame, usize)>, String> {
    let mut pos = 0;
    let mut lines: Vec<&[u8]> = Vec::new();
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let mut line = &buf[pos..pos + nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        pos += nl + 1;
        if line.is_empty() {
            if lines.is_empty() {
                // Still an EOL before the command: callers skip these, be lenient.
                continue;
            }
            break;
        }
        lines.push(line);
    }
    let command =
        String::from_utf8(lines[0].to_vec()).map_err(|_| "command not UTF-8".to_string())?;
    if command.bytes().any(|b| b == 0) {
        return Err(format!("NUL in command {command:?}"));
    }
    let raw_headers = command != "CONNECTED" && command != "CONNECT";
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| {
            format!(
                "header line without colon: {:?}",
                String::from_utf8_lossy(line)
            )
        })?;
        let (k, v) = (&line[..colon], &line[colon + 1..]);
        let (k, v) = if raw_headers && version >= Version::V11 {
            (unescape(k, version)?, unescape(v, version)?)
        } else {
            (
                String::from_utf8(k.to_vec()).map_err(|_| "header not UTF-8".to_string())?,
                String::from_utf8(v.to_vec()).map_err(|_| "header not UTF-8".to_string())?,
            )
        };
        headers.push((k, v));
    }
    let content_length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.clone());
    let (body, end) = match content_length {
        Some(cl) => {
            let n: usize = cl
                .parse()
                .map_err(|_| format!("bad content-length {cl:?}"))?;
            if buf.len() < pos + n + 1 {
                return Ok(None);
            }
            if buf[pos + n] != 0 {
                return Err(format!(
                    "content-length {n} body not followed by NUL in {command}"
                ));
            }
            (buf[pos..pos + n].to_vec(), pos + n + 1)
        }
        None => match buf[pos..].iter().position(|&b| b == 0) {
            Some(z) => (buf[pos..pos + z].to_vec(), pos + z + 1),
            None => return Ok(None),
        },
    };
    let mut consumed = end;
    if buf.get(consumed) == Some(&b'\n') {
        consumed += 1;
    } else if buf.get(consumed) == Some(&b'\r') && buf.get(consumed + 1) == Some(&b'\n') {
        consumed += 2;
    }
    Ok(Some((
        Frame {
            command,
            headers,
            body,
        },
        consumed,
    )))
}

// ---------------------------------------------------------------------------------------------
// Checks and builders
// ---------------------------------------------------------------------------------------------

/// An ERROR frame as decided: a non-empty `message`, a well-formed `error-code`, text/plain,
/// content-length with a body.
pub fn assert_error_frame(f: &Frame) {
    assert!(f.is("ERROR"), "expected ERROR, got {f:?}");
    assert!(
        f.get("message").is_some_and(|m| !m.is_empty()),
        "ERROR without message: {f:?}"
    );
    assert!(
        f.get("error-code").is_some_and(is_error_code),
        "ERROR without a well-formed error-code: {f:?}"
    );
    let ct = f.get("content-type").unwrap_or("");
    assert!(
        ct.starts_with("text/plain"),
        "ERROR content-type should be text/plain: {f:?}"
    );
    if !f.body.is_empty() {
        assert!(
            f.get("content-length").is_some(),
            "ERROR with a body has content-length: {f:?}"
        );
    }
}

/// `code` has the shape of an `error-code`: `namespace.name` (lower-case letters, digits, `-`,
/// and more dots in a plugin's own `plugin.<name>.<code>`), in one of the documented
/// namespaces.
pub fn is_error_code(code: &str) -> bool {
    const NAMESPACES: [&str; 10] = [
        "auth",
        "limit",
        "protocol",
        "destination",
        "permission",
        "plugin",
        "store",
        "flow",
        "server",
        "cluster",
    ];
    let Some((namespace, name)) = code.split_once('.') else {
        return false;
    };
    NAMESPACES.contains(&namespace)
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.'))
}

/// `s` is non-empty and made only of `[A-Za-z0-9._-]`.
pub fn is_safe_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A SEND with these extra headers and a body.
pub fn send_frame(dest: &str, headers: &[(&str, &str)], body: &str) -> Frame {
    let mut f = Frame::new("SEND").h("destination", dest);
    for (k, v) in headers {
        f = f.h(k, v);
    }
    f.body(body.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], version: Version) -> (Frame, usize) {
        parse_frame(bytes, version)
            .expect("valid frame")
            .expect("a whole frame")
    }

    #[test]
    fn a_frame_survives_encoding_in_every_version() {
        let frame = Frame::new("SEND")
            .h("destination", "/queue/a")
            .h("k", "v1")
            .h("k", "v2")
            .body("hello");
        for version in ALL_VERSIONS {
            let bytes = frame.encode(version);
            assert_eq!(
                parse(&bytes, version),
                (frame.clone(), bytes.len()),
                "{version}"
            );
        }
    }

    #[test]
    fn headers_are_escaped_per_version() {
        let frame = Frame::new("MESSAGE").h("a:b", "x\\y\nz\r");
        assert_eq!(
            frame.encode(Version::V10),
            b"MESSAGE\na:b:x\\y\nz\r\n\n\0".to_vec()
        );
        assert_eq!(
            frame.encode(Version::V11),
            b"MESSAGE\na\\cb:x\\\\y\\nz\r\n\n\0".to_vec()
        );
        let v12 = frame.encode(Version::V12);
        assert_eq!(v12, b"MESSAGE\na\\cb:x\\\\y\\nz\\r\n\n\0".to_vec());
        assert_eq!(parse(&v12, Version::V12).0, frame);
    }

    #[test]
    fn connect_and_connected_headers_are_never_escaped() {
        let connect = Frame::new("CONNECT").h("login", "a:b");
        assert_eq!(
            connect.encode(Version::V12),
            b"CONNECT\nlogin:a:b\n\n\0".to_vec()
        );
        let (connected, _) = parse(b"CONNECTED\nserver:x\\cy\n\n\0", Version::V12);
        assert_eq!(connected.get("server"), Some("x\\cy"));
    }

    #[test]
    fn undefined_escapes_are_errors() {
        assert!(parse_frame(b"MESSAGE\nk:a\\tb\n\n\0", Version::V12).is_err());
        // `\r` is only defined from 1.2 on.
        assert!(parse_frame(b"MESSAGE\nk:a\\rb\n\n\0", Version::V11).is_err());
        assert_eq!(
            parse(b"MESSAGE\nk:a\\tb\n\n\0", Version::V10).0.get("k"),
            Some("a\\tb")
        );
    }

    #[test]
    fn content_length_bodies_may_hold_nuls() {
        let bytes = b"MESSAGE\ncontent-length:3\n\na\0b\0";
        let (frame, used) = parse(bytes, Version::V12);
        assert_eq!(frame.body, b"a\0b");
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn one_trailing_eol_is_consumed() {
        let (_, used) = parse(b"RECEIPT\n\n\0\n\n", Version::V12);
        assert_eq!(used, 11);
        let (_, used) = parse(b"RECEIPT\r\n\r\n\0\r\nX", Version::V12);
        assert_eq!(used, 14);
    }

    #[test]
    fn a_partial_frame_needs_more_bytes() {
        let whole = b"MESSAGE\ncontent-length:5\n\nhello\0";
        for end in 0..whole.len() {
            assert_eq!(
                parse_frame(&whole[..end], Version::V12),
                Ok(None),
                "{end} bytes"
            );
        }
        assert_eq!(
            parse_frame(b"MESSAGE\n\nno nul yet", Version::V12),
            Ok(None)
        );
    }

    #[test]
    fn bad_content_lengths_are_errors() {
        assert!(parse_frame(b"MESSAGE\ncontent-length:x\n\n\0", Version::V12).is_err());
        assert!(parse_frame(b"MESSAGE\ncontent-length:1\n\nab\0", Version::V12).is_err());
        assert!(parse_frame(b"MESSAGE\nno colon\n\n\0", Version::V12).is_err());
    }
}
