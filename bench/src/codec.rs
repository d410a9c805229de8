//! A minimal STOMP 1.2 frame codec, independent of the broker's own codec on purpose: the
//! benchmark should exercise the broker as an outside client would.
//!
//! Decoding handles `\n` and `\r\n` line endings, EOLs (heart-beats) between frames,
//! `content-length` bodies (which may contain NUL) and NUL-terminated bodies, and the 1.2 header
//! escapes (`\\`, `\c`, `\n`, `\r`) except in CONNECTED, where 1.2 does not escape. The first
//! occurrence of a repeated header wins. Encoding escapes header names and values the same way.

use anyhow::{bail, Context};
use bytes::{Buf, Bytes, BytesMut};

/// Largest frame the decoder accepts before it gives up (a guard against a runaway stream).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// One decoded frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    /// The first value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A one-line description of an ERROR (or any unexpected) frame for diagnostics.
    pub fn describe(&self) -> String {
        let message = self.header("message").unwrap_or("");
        let body = String::from_utf8_lossy(&self.body);
        let body = body.trim();
        format!("{} message={message:?} body={body:?}", self.command)
    }
}

/// Tries to take one complete frame from the front of `buf`. Leading EOLs are consumed.
/// Returns `Ok(None)` when more bytes are needed.
pub fn decode(buf: &mut BytesMut) -> anyhow::Result<Option<Frame>> {
    let skip = buf
        .iter()
        .position(|&b| b != b'\n' && b != b'\r')
        .unwrap_or(buf.len());
    buf.advance(skip);
    if buf.is_empty() {
        return Ok(None);
    }
    // End of the header block: the first empty line.
    let Some(head_end) = find_blank_line(buf) else {
        if buf.len() > MAX_FRAME {
            bail!("frame header larger than {MAX_FRAME} bytes");
        }
        return Ok(None);
    };
    let (head_len, body_start) = head_end;
    let head = std::str::from_utf8(&buf[..head_len]).context("frame header is not UTF-8")?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let command = lines.next().unwrap_or_default().to_string();
    let escaped = command != "CONNECTED";
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .with_context(|| format!("header line without ':' in {command}: {line:?}"))?;
        let (k, v) = if escaped {
            (unescape(k)?, unescape(v)?)
        } else {
            (k.to_string(), v.to_string())
        };
        headers.push((k, v));
    }
    let content_length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .context("bad content-length")?;
    let frame_end = match content_length {
        Some(len) => {
            if len > MAX_FRAME {
                bail!("content-length {len} too large");
            }
            let end = body_start + len;
            if buf.len() <= end {
                return Ok(None);
            }
            if buf[end] != 0 {
                bail!("{command}: body of content-length {len} not followed by NUL");
            }
            end
        }
        None => match buf[body_start..].iter().position(|&b| b == 0) {
            Some(p) => body_start + p,
            None if buf.len() > MAX_FRAME => bail!("frame larger than {MAX_FRAME} bytes"),
            None => return Ok(None),
        },
    };
    let mut whole = buf.split_to(frame_end + 1);
    whole.advance(body_start);
    whole.truncate(frame_end - body_start);
    Ok(Some(Frame {
        command,
        headers,
        body: whole.freeze(),
    }))
}

/// Finds the empty line ending the headers: returns (length of command+headers without the
/// final line terminator, offset of the first body byte).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut start = 0;
    while let Some(p) = buf[start..].iter().position(|&b| b == b'\n') {
        let nl = start + p;
        let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        // `line_end == line_start` means an empty line.
        let line_start = start;
        if line_end == line_start && line_start > 0 {
            // Header text ends before the previous line's terminator.
            let prev_nl = line_start - 1;
            let head_len = if prev_nl > 0 && buf[prev_nl - 1] == b'\r' {
                prev_nl - 1
            } else {
                prev_nl
            };
            return Some((head_len, nl + 1));
        }
        start = nl + 1;
    }
    None
}

fn unescape(s: &str) -> anyhow::Result<String> {
    if !s.contains('\\') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('c') => out.push(':'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => bail!("invalid header escape \\{other:?} in {s:?}"),
        }
    }
    Ok(out)
}

/// Appends a frame to `out`: `command`, escaped headers, then `body` with a `content-length`
/// header added whenever the body is non-empty.
pub fn encode(out: &mut Vec<u8>, command: &str, headers: &[(&str, &str)], body: &[u8]) {
    out.extend_from_slice(command.as_bytes());
    out.push(b'\n');
    let escape = command != "CONNECT" && command != "STOMP";
    for (k, v) in headers {
        push_escaped(out, k, escape);
        out.push(b':');
        push_escaped(out, v, escape);
        out.push(b'\n');
    }
    if !body.is_empty() {
        out.extend_from_slice(b"content-length:");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(0);
}

fn push_escaped(out: &mut Vec<u8>, s: &str, escape: bool) {
    if !escape || !s.bytes().any(|b| matches!(b, b'\\' | b':' | b'\n' | b'\r')) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b':' => out.extend_from_slice(b"\\c"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_eols_and_nul_body() {
        let mut out = b"\n\r\n".to_vec();
        encode(
            &mut out,
            "SEND",
            &[("destination", "/q/a:b"), ("p", "1")],
            b"a\0b",
        );
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(b"RECEIPT\r\nreceipt-id:7\r\n\r\n\0");
        let mut buf = BytesMut::from(&out[..]);
        let f = decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.command, "SEND");
        assert_eq!(f.header("destination"), Some("/q/a:b"));
        assert_eq!(&f.body[..], b"a\0b");
        let r = decode(&mut buf).unwrap().unwrap();
        assert_eq!(r.command, "RECEIPT");
        assert_eq!(r.header("receipt-id"), Some("7"));
        assert!(r.body.is_empty());
        assert!(decode(&mut buf).unwrap().is_none());
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut out = Vec::new();
        encode(&mut out, "MESSAGE", &[("s", "5")], b"hello");
        for cut in 0..out.len() {
            let mut buf = BytesMut::from(&out[..cut]);
            assert!(decode(&mut buf).unwrap().is_none(), "cut at {cut}");
        }
        let mut buf = BytesMut::from(&out[..]);
        assert_eq!(&decode(&mut buf).unwrap().unwrap().body[..], b"hello");
    }

    #[test]
    fn first_repeated_header_wins_and_no_length_body() {
        let mut buf = BytesMut::from(&b"ERROR\nmessage:a\nmessage:b\n\noops\0"[..]);
        let f = decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.header("message"), Some("a"));
        assert_eq!(&f.body[..], b"oops");
    }
}
