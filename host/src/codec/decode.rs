//! Incremental, zero-copy STOMP frame decoder.
//!
//! The decoder keeps its scan position between calls, so a frame arriving byte by byte is
//! examined once (linear time). The bytes of the frame stay in the caller's buffer until the
//! frame is complete; then they are split off in one piece and every header and the body become
//! `Bytes` slices of it (a header that had escapes gets its own decoded copy).

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use super::escape::{BadEscape, Escaping};
use super::frame::{Command, Frame, Header, Version};
use crate::text::printable;

/// Size limits applied while decoding (checklist F-16). Every limit is checked before the bytes
/// it bounds are buffered, so a peer can never make the decoder wait for more than
/// `max_frame_bytes` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole frame, from the first byte of the command to the terminating NUL included
    /// (EOLs between frames do not count).
    pub max_frame_bytes: usize,
    /// Header lines per frame, repeats included.
    pub max_headers: usize,
    /// One header line, or the command line, without its EOL, before unescaping.
    pub max_header_line_bytes: usize,
    /// The body, without the terminating NUL.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_bytes: 16 * 1024 * 1024,
            max_headers: 128,
            max_header_line_bytes: 16 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A fatal decoding error. The connection must send an ERROR frame (its `message` header can be
/// the `Display` of this error) and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    /// What was wrong; its `Display` is the error's.
    pub kind: DecodeErrorKind,
    /// The offending frame's `receipt` header, when the error was found after its header block
    /// was read (for the ERROR frame's `receipt-id`).
    pub receipt: Option<Bytes>,
}

/// What was wrong. The messages are single-line, printable and meant for the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The command line is not a STOMP command (a lowercase spelling is not); the line as
    /// [`printable`] text, cut after 40 characters.
    #[error("unknown command \"{0}\" (commands are case-sensitive)")]
    UnknownCommand(String),
    /// A header line or the command line exceeds [`Limits::max_header_line_bytes`].
    #[error("header line longer than the limit of {limit} bytes")]
    HeaderLineTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The frame has more header lines than [`Limits::max_headers`].
    #[error("frame has more than the limit of {limit} headers")]
    TooManyHeaders {
        /// The limit, in header lines.
        limit: usize,
    },
    /// The frame would exceed [`Limits::max_frame_bytes`].
    #[error("frame larger than the limit of {limit} bytes")]
    FrameTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body (announced by `content-length`, or read so far) exceeds
    /// [`Limits::max_body_bytes`].
    #[error("{}", body_too_large_message(*.size, *.limit))]
    BodyTooLarge {
        /// The body's size in bytes when known (announced, or its NUL found); `None` when the
        /// body was still being read without a `content-length`.
        size: Option<u64>,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A header line has no `:`.
    #[error("header line without a ':' separator")]
    MissingColon,
    /// A header line starts with `:`.
    #[error("header with an empty name")]
    EmptyHeaderName,
    /// A backslash escape the negotiated version does not define (or a trailing backslash).
    #[error("undefined escape sequence \"{sequence}\" in a header")]
    InvalidEscape {
        /// The offending sequence as quoted to the peer (`\t`, `\<0x01>`, `\<end of header>`).
        sequence: String,
    },
    /// A CR inside a header line (1.2 only: earlier versions keep it in the value).
    #[error("bare CR not followed by LF in a header line")]
    BareCr,
    /// The first `content-length` is not a decimal `u64`; its value as [`printable`] text, cut
    /// after 40 characters.
    #[error("invalid content-length \"{0}\": expected a decimal number of bytes")]
    InvalidContentLength(String),
    /// The byte `content-length` says ends the body is not NUL.
    #[error("frame body is not followed by a NUL byte where content-length says it ends")]
    MissingNul,
    /// A frame that may not have a body has one (1.1 and later; 1.0 drops it).
    #[error("{} frames must not have a body", .0.as_str())]
    BodyNotAllowed(Command),
}

fn body_too_large_message(size: Option<u64>, limit: usize) -> String {
    match size {
        Some(size) => format!("frame body of {size} bytes exceeds the limit of {limit} bytes"),
        None => format!("frame body exceeds the limit of {limit} bytes"),
    }
}

/// A decoded header name or value: a range of the frame's bytes, or its unescaped copy.
#[derive(Debug)]
enum Field {
    Raw(Range<usize>),
    Decoded(Bytes),
}

impl Field {
    fn bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match self {
            Field::Raw(range) => &buf[range.clone()],
            Field::Decoded(bytes) => bytes,
        }
    }

    fn into_bytes(self, frame: &Bytes) -> Bytes {
        match self {
            Field::Raw(range) => frame.slice(range),
            Field::Decoded(bytes) => bytes,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Command,
    Headers,
    Body,
}

/// Turns a byte stream into frames. One per connection; see [`Decoder::decode`].
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    version: Version,
    phase: Phase,
    /// Where the search for the next LF (or NUL, in the body) resumes, as a buffer offset.
    scan: usize,
    /// Start of the header line being read.
    line_start: usize,
    command: Command,
    headers: Vec<(Field, Field)>,
    content_length_at: Option<usize>,
    receipt_at: Option<usize>,
    body_start: usize,
    /// The body length the frame announced, once checked against the limits.
    content_length: Option<usize>,
    failed: Option<DecodeError>,
    /// Bytes searched so far, to test that decoding is linear.
    #[cfg(test)]
    examined: usize,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new(Limits::default())
    }
}

impl Decoder {
    /// A decoder for a new connection: frames are read with 1.2 framing rules until
    /// [`Decoder::set_version`] is called (CONNECT and STOMP headers are never unescaped).
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            version: Version::V1_2,
            phase: Phase::Command,
            scan: 0,
            line_start: 0,
            command: Command::Connect,
            headers: Vec::new(),
            content_length_at: None,
            receipt_at: None,
            body_start: 0,
            content_length: None,
            failed: None,
            #[cfg(test)]
            examined: 0,
        }
    }

    /// Sets the negotiated version, which selects the header escaping, whether a bare CR is an
    /// error (1.2) and whether a body on a frame that may not have one is dropped (1.0) or an
    /// error (1.1+). Call it between frames, once CONNECTED is sent.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// Changes the limits; call it between frames.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The version set by [`Decoder::set_version`] (1.2 until then).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Headers held for the frame being read.
    #[cfg(test)]
    pub(crate) fn headers_pending(&self) -> usize {
        self.headers.len()
    }

    /// Decodes the next frame from the front of `buf`.
    ///
    /// Returns `Ok(Some(frame))` after removing exactly that frame's bytes (and any EOLs
    /// before it, which are heart-beats) from `buf`, or `Ok(None)` when more bytes are needed.
    /// An incomplete frame's bytes are left in `buf`: append to it, never consume from it,
    /// between calls. After an error the decoder keeps returning that error.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.step(buf).map_err(|kind| {
            let receipt = match (self.phase, self.receipt_at) {
                (Phase::Body, Some(i)) => Some(match &self.headers[i].1 {
                    Field::Raw(range) => Bytes::copy_from_slice(&buf[range.clone()]),
                    Field::Decoded(bytes) => bytes.clone(),
                }),
                _ => raw_receipt(buf).map(|raw| match self.version {
                    Version::V1_0 => raw.slice(super::frame::blank_trimmed(&raw)),
                    _ => raw,
                }),
            };
            let err = DecodeError { kind, receipt };
            self.failed = Some(err.clone());
            err
        })
    }

    /// Total length (from the buffer's start, NUL included) of the frame being decoded, once
    /// its header block is complete and its end is known: what the buffer must hold. Never more
    /// than `max_frame_bytes` (the content-length was checked against the limits).
    pub fn frame_len_hint(&self) -> Option<usize> {
        if self.phase != Phase::Body || self.failed.is_some() {
            return None;
        }
        if !self.command.may_have_body() && self.version != Version::V1_0 {
            // Ends with a NUL right after the header block, whatever content-length says.
            return Some(self.body_start + 1);
        }
        self.content_length
            .and_then(|n| self.body_start.checked_add(n)?.checked_add(1))
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeErrorKind> {
        if self.phase == Phase::Command && !self.read_command(buf)? {
            return Ok(None);
        }
        if self.phase == Phase::Headers && !self.read_headers(buf)? {
            return Ok(None);
        }
        self.read_body(buf)
    }

    /// Finds `byte` at or after the scan position; when absent, the next search starts at
    /// the end of what was searched.
    fn find(&mut self, buf: &[u8], byte: u8) -> Option<usize> {
        let from = self.scan;
        #[cfg(test)]
        {
            self.examined += buf.len() - from;
        }
        match buf[from..].iter().position(|&b| b == byte) {
            Some(i) => Some(from + i),
            None => {
                self.scan = buf.len();
                None
            }
        }
    }

    /// Limits for an incomplete line that starts at `line_start` and runs to the buffer's end.
    fn check_pending_line(&self, buf: &[u8], line_start: usize) -> Result<(), DecodeErrorKind> {
        // The line may still end with CR before its LF, hence the + 1.
        let limit = self.limits.max_header_line_bytes;
        if buf.len() - line_start > limit.saturating_add(1) {
            return Err(DecodeErrorKind::HeaderLineTooLong { limit });
        }
        // The NUL at least is still missing.
        self.check_frame_end(buf.len())
    }

    /// Fails when a frame whose NUL is at `nul` (or later) would exceed the frame limit.
    fn check_frame_end(&self, nul: usize) -> Result<(), DecodeErrorKind> {
        let limit = self.limits.max_frame_bytes;
        if nul >= limit {
            return Err(DecodeErrorKind::FrameTooLarge { limit });
        }
        Ok(())
    }

    fn read_command(&mut self, buf: &mut BytesMut) -> Result<bool, DecodeErrorKind> {
        let heart_beats = leading_eols(buf);
        if heart_beats > 0 {
            buf.advance(heart_beats);
            self.scan = 0;
        }
        let Some(lf) = self.find(buf, b'\n') else {
            self.check_pending_line(buf, 0)?;
            return Ok(false);
        };
        let line = strip_cr(&buf[..lf]);
        let limit = self.limits.max_header_line_bytes;
        if line.len() > limit {
            return Err(DecodeErrorKind::HeaderLineTooLong { limit });
        }
        self.command = Command::parse(line)
            .ok_or_else(|| DecodeErrorKind::UnknownCommand(printable(line, 40)))?;
        self.phase = Phase::Headers;
        self.line_start = lf + 1;
        self.scan = lf + 1;
        self.headers.clear();
        self.content_length_at = None;
        self.receipt_at = None;
        Ok(true)
    }

    fn read_headers(&mut self, buf: &[u8]) -> Result<bool, DecodeErrorKind> {
        loop {
            let Some(lf) = self.find(buf, b'\n') else {
                self.check_pending_line(buf, self.line_start)?;
                return Ok(false);
            };
            let start = self.line_start;
            let end = start + strip_cr(&buf[start..lf]).len();
            let limit = self.limits.max_header_line_bytes;
            if end - start > limit {
                return Err(DecodeErrorKind::HeaderLineTooLong { limit });
            }
            self.check_frame_end(lf + 1)?;
            self.line_start = lf + 1;
            self.scan = lf + 1;
            if start == end {
                self.phase = Phase::Body;
                self.body_start = lf + 1;
                self.content_length = match self.content_length_at {
                    None => None,
                    Some(i) => {
                        let mut value = self.headers[i].1.bytes(buf);
                        if self.command.is_never_escaped() {
                            // A CONNECT is read before its version is known: a 1.0 client's
                            // `content-length: 0` must not fail it.
                            value = &value[super::frame::blank_trimmed(value)];
                        }
                        let n = parse_decimal(value).ok_or_else(|| {
                            DecodeErrorKind::InvalidContentLength(printable(value, 40))
                        })?;
                        Some(self.check_content_length(n)?)
                    }
                };
                return Ok(true);
            }
            self.read_header_line(buf, start..end)?;
        }
    }

    /// Checks an announced body length against the limits as soon as the header block is
    /// read, for every command (even one whose body is then ignored): nothing is sized from
    /// it before it passed.
    fn check_content_length(&self, n: u64) -> Result<usize, DecodeErrorKind> {
        let limit = self.limits.max_body_bytes;
        let too_large = DecodeErrorKind::BodyTooLarge {
            size: Some(n),
            limit,
        };
        let n = usize::try_from(n).map_err(|_| too_large.clone())?;
        if n > limit {
            return Err(too_large);
        }
        let nul = self
            .body_start
            .checked_add(n)
            .ok_or(DecodeErrorKind::FrameTooLarge {
                limit: self.limits.max_frame_bytes,
            })?;
        self.check_frame_end(nul)?;
        Ok(n)
    }

    fn read_header_line(&mut self, buf: &[u8], line: Range<usize>) -> Result<(), DecodeErrorKind> {
        let text = &buf[line.clone()];
        if self.version == Version::V1_2 && text.contains(&b'\r') {
            return Err(DecodeErrorKind::BareCr);
        }
        let limit = self.limits.max_headers;
        if self.headers.len() >= limit {
            return Err(DecodeErrorKind::TooManyHeaders { limit });
        }
        let colon = line.start
            + text
                .iter()
                .position(|&b| b == b':')
                .ok_or(DecodeErrorKind::MissingColon)?;
        let (name, value) = if self.version == Version::V1_0 {
            // 1.0 clients write `name: value`: spaces and tabs around both are not part of
            // them (as ActiveMQ and RabbitMQ read them). 1.1+ keep every byte.
            (
                trim_blanks(buf, line.start..colon),
                trim_blanks(buf, colon + 1..line.end),
            )
        } else {
            (line.start..colon, colon + 1..line.end)
        };
        if name.is_empty() {
            return Err(DecodeErrorKind::EmptyHeaderName);
        }
        let escaping = Escaping::for_frame(self.command, self.version);
        let name = decode_field(escaping, buf, name)?;
        let value = decode_field(escaping, buf, value)?;
        let index = self.headers.len();
        match name.bytes(buf) {
            b"content-length" if self.content_length_at.is_none() => {
                self.content_length_at = Some(index);
            }
            b"receipt" if self.receipt_at.is_none() => self.receipt_at = Some(index),
            _ => {}
        }
        self.headers.push((name, value));
        Ok(())
    }

    fn read_body(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeErrorKind> {
        let start = self.body_start;
        let body_allowed = self.command.may_have_body();
        if !body_allowed {
            // A NUL right after the header block ends the frame, whatever content-length says:
            // some clients copy a MESSAGE's headers, content-length included, into their ACK
            // (checklist P29).
            let Some(&first) = buf.get(start) else {
                return Ok(None);
            };
            if first == 0 {
                return Ok(Some(self.complete(buf, start)));
            }
            if self.version != Version::V1_0 {
                return Err(DecodeErrorKind::BodyNotAllowed(self.command));
            }
            // 1.0: "the body of the SUBSCRIBE command is ignored": read it, then drop it.
        }
        let body_limit = self.limits.max_body_bytes;
        let nul = match self.content_length {
            Some(n) => {
                // Checked against the limits with the header block (`check_content_length`).
                let nul = start + n;
                match buf.get(nul) {
                    None => return Ok(None),
                    Some(0) => nul,
                    Some(_) => return Err(DecodeErrorKind::MissingNul),
                }
            }
            None => match self.find(buf, 0) {
                Some(nul) => {
                    if nul - start > body_limit {
                        return Err(DecodeErrorKind::BodyTooLarge {
                            size: Some((nul - start) as u64),
                            limit: body_limit,
                        });
                    }
                    self.check_frame_end(nul)?;
                    nul
                }
                None => {
                    if buf.len() - start > body_limit {
                        return Err(DecodeErrorKind::BodyTooLarge {
                            size: None,
                            limit: body_limit,
                        });
                    }
                    self.check_frame_end(buf.len())?;
                    return Ok(None);
                }
            },
        };
        let mut frame = self.complete(buf, nul);
        if !body_allowed {
            frame.body = Bytes::new();
        }
        Ok(Some(frame))
    }

    /// Splits the finished frame (NUL at `nul`) off the buffer and resets for the next one.
    fn complete(&mut self, buf: &mut BytesMut, nul: usize) -> Frame {
        let bytes = buf.split_to(nul + 1).freeze();
        let headers: Vec<Header> = self
            .headers
            .drain(..)
            .map(|(name, value)| (name.into_bytes(&bytes), value.into_bytes(&bytes)))
            .collect();
        let body = bytes.slice(self.body_start..nul);
        self.phase = Phase::Command;
        self.scan = 0;
        Frame {
            command: self.command,
            headers,
            body,
        }
    }
}

fn decode_field(
    escaping: Escaping,
    buf: &[u8],
    range: Range<usize>,
) -> Result<Field, DecodeErrorKind> {
    match escaping.unescape(&buf[range.clone()]) {
        Ok(None) => Ok(Field::Raw(range)),
        Ok(Some(decoded)) => Ok(Field::Decoded(Bytes::from(decoded))),
        Err(BadEscape { next }) => Err(DecodeErrorKind::InvalidEscape {
            sequence: match next {
                Some(b) if b.is_ascii_graphic() => format!("\\{}", b as char),
                Some(b) => format!("\\<0x{b:02x}>"),
                None => "\\<end of header>".to_owned(),
            },
        }),
    }
}

/// The length of the EOLs (`LF` or `CR LF`) at the front of `buf`: heart-beats.
fn leading_eols(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i) {
            Some(b'\n') => i += 1,
            Some(b'\r') if buf.get(i + 1) == Some(&b'\n') => i += 2,
            _ => return i,
        }
    }
}

/// `range` of `buf` without the spaces and tabs at either end (STOMP 1.0 headers).
fn trim_blanks(buf: &[u8], range: Range<usize>) -> Range<usize> {
    let inner = super::frame::blank_trimmed(&buf[range.clone()]);
    range.start + inner.start..range.start + inner.end
}

/// A line without the one CR that may precede its LF (accepted in every version).
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A non-empty string of ASCII digits that fits in a u64.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Most bytes searched for a `receipt` header when the frame failed before its header block
/// was parsed: four header lines of the default limit, enough for any real client's frame,
/// and a bound on the work an error costs.
const RECEIPT_SCAN: usize = 64 * 1024;

/// Best effort for an error found before the header block was parsed (unknown command, bad
/// escape, overlong line...): the raw value of the first complete `receipt:` line of the
/// frame at the front of `buf`, so the ERROR can still carry `receipt-id`.
fn raw_receipt(buf: &[u8]) -> Option<Bytes> {
    let start = buf.iter().position(|&b| b != b'\n' && b != b'\r')?;
    let window = &buf[start..buf.len().min(start + RECEIPT_SCAN)];
    let mut lines = window.split(|&b| b == b'\n');
    lines.next(); // the command line
    let complete = window.iter().filter(|&&b| b == b'\n').count();
    for line in lines.take(complete.saturating_sub(1)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.contains(&0) {
            break;
        }
        if let Some(value) = line.strip_prefix(b"receipt:") {
            return Some(Bytes::copy_from_slice(value));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_length_is_known_once_the_headers_are() {
        let mut decoder = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"SEND\ncontent-len"[..]);
        assert!(decoder.decode(&mut buf).unwrap().is_none());
        assert_eq!(decoder.frame_len_hint(), None);
        buf.extend_from_slice(b"gth:5\n\nab");
        assert!(decoder.decode(&mut buf).unwrap().is_none());
        let head = b"SEND\ncontent-length:5\n\n".len();
        assert_eq!(decoder.frame_len_hint(), Some(head + 5 + 1));
    }

    #[test]
    fn content_length_is_checked_against_the_limits_when_the_headers_end() {
        let limits = Limits {
            max_frame_bytes: 1000,
            max_headers: 8,
            max_header_line_bytes: 100,
            max_body_bytes: 500,
        };
        for (head, n, frame_limit) in [
            ("ACK\nid:1", "4611686018427387904", false),
            ("ACK\nid:1", "18446744073709551615", false),
            ("SEND\ndestination:/q", "501", false),
            ("SEND\ndestination:/q", "9223372036854775808", false),
            ("SUBSCRIBE\nid:1\ndestination:/q", "501", false),
        ] {
            for version in Version::ALL {
                let mut decoder = Decoder::new(limits);
                decoder.set_version(version);
                let mut buf = BytesMut::from(format!("{head}\ncontent-length:{n}\n\n").as_bytes());
                let err = decoder.decode(&mut buf).unwrap_err();
                assert!(
                    matches!(err.kind, DecodeErrorKind::BodyTooLarge { .. }) != frame_limit,
                    "{head} {n} {version:?}: {err}"
                );
                assert_eq!(decoder.frame_len_hint(), None, "{head} {n}");
            }
        }
        // Within the body limit, but the headers push the frame past the frame limit.
        let mut decoder = Decoder::new(Limits {
            max_frame_bytes: 520,
            ..limits
        });
        let mut buf = BytesMut::from(&b"SEND\ndestination:/q\ncontent-length:500\n\n"[..]);
        let err = decoder.decode(&mut buf).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::FrameTooLarge { limit: 520 });
    }

    #[test]
    fn a_frame_that_may_not_have_a_body_needs_room_for_its_nul_only() {
        let mut decoder = Decoder::new(Limits::default());
        decoder.set_version(Version::V1_2);
        let mut buf = BytesMut::from(&b"ACK\nid:1\ncontent-length:1000\n\n"[..]);
        assert!(decoder.decode(&mut buf).unwrap().is_none());
        assert_eq!(decoder.frame_len_hint(), Some(buf.len() + 1));
        buf.extend_from_slice(b"\0");
        assert!(
            decoder.decode(&mut buf).unwrap().is_some(),
            "P29: the ACK ends at the NUL"
        );
    }

    #[test]
    fn errors_before_the_header_block_still_find_the_receipt() {
        let mut decoder = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"\nFOO\nreceipt:r-1\n\n\0"[..]);
        let err = decoder.decode(&mut buf).unwrap_err();
        assert_eq!(err.receipt.as_deref(), Some(&b"r-1"[..]));
        let mut decoder = Decoder::new(Limits::default());
        decoder.set_version(Version::V1_2);
        let mut buf = BytesMut::from(&b"SEND\nreceipt:r-2\r\nx:a\\tb\n\n\0"[..]);
        let err = decoder.decode(&mut buf).unwrap_err();
        assert_eq!(err.receipt.as_deref(), Some(&b"r-2"[..]));
        assert_eq!(raw_receipt(b"FOO\nreceipt:x"), None, "incomplete line");
    }

    #[test]
    fn helpers() {
        assert_eq!(leading_eols(b"\n\r\n\nX"), 4);
        assert_eq!(leading_eols(b"\r"), 0);
        assert_eq!(leading_eols(b"\r\r\n"), 0);
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"0012"), Some(12));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"0x10",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    /// Feeding a large frame byte by byte examines each byte a bounded number of times.
    #[test]
    fn incremental_scan_is_linear() {
        let body = vec![b'x'; 200_000];
        let long_value = vec![b'v'; 10_000];
        for with_length in [false, true] {
            let mut wire = b"SEND\ndestination:/q\nlong:".to_vec();
            wire.extend_from_slice(&long_value);
            wire.push(b'\n');
            if with_length {
                wire.extend_from_slice(format!("content-length:{}\n", body.len()).as_bytes());
            }
            wire.push(b'\n');
            wire.extend_from_slice(&body);
            wire.push(0);
            let mut decoder = Decoder::default();
            let mut buf = BytesMut::new();
            let mut frames = Vec::new();
            for &b in &wire {
                buf.extend_from_slice(&[b]);
                if let Some(f) = decoder.decode(&mut buf).unwrap() {
                    frames.push(f);
                }
            }
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].body.len(), body.len());
            assert!(buf.is_empty());
            assert!(decoder.examined <= 2 * wire.len(), "{}", decoder.examined);
        }
    }

    #[test]
    fn stomp_1_0_headers_lose_the_blanks_around_names_and_values() {
        let wire =
            b"SUBSCRIBE\ndestination: /queue/x\n ack :\tclient \r\nid:\t\nreceipt: r 1 \n\n\0";
        let mut decoder = Decoder::default();
        decoder.set_version(Version::V1_0);
        let frame = decoder
            .decode(&mut BytesMut::from(&wire[..]))
            .unwrap()
            .unwrap();
        let headers: Vec<(&[u8], &[u8])> = frame
            .headers
            .iter()
            .map(|(n, v)| (n.as_ref(), v.as_ref()))
            .collect();
        assert_eq!(
            headers,
            [
                (&b"destination"[..], &b"/queue/x"[..]),
                (b"ack", b"client"),
                (b"id", b""),
                (b"receipt", b"r 1"),
            ]
        );
        // 1.1 and 1.2 keep every byte (a bare CR is an error in 1.2, hence no CR here).
        for version in [Version::V1_1, Version::V1_2] {
            let mut decoder = Decoder::default();
            decoder.set_version(version);
            let wire = b"SEND\ndestination: /queue/x \n k\t:\tv \n\n\0";
            let frame = decoder
                .decode(&mut BytesMut::from(&wire[..]))
                .unwrap()
                .unwrap();
            assert_eq!(frame.get(b"destination").unwrap().as_ref(), b" /queue/x ");
            assert_eq!(frame.headers[1].0.as_ref(), b" k\t", "{version:?}");
            assert_eq!(frame.headers[1].1.as_ref(), b"\tv ", "{version:?}");
        }
    }

    #[test]
    fn stomp_1_0_blanks_do_not_make_a_name_or_hide_a_content_length() {
        let mut decoder = Decoder::default();
        decoder.set_version(Version::V1_0);
        let mut buf = BytesMut::from(&b"SEND\n \t:v\n\n\0"[..]);
        let err = decoder.decode(&mut buf).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::EmptyHeaderName);
        let mut decoder = Decoder::default();
        decoder.set_version(Version::V1_0);
        let mut buf = BytesMut::from(&b"SEND\ncontent-length: 3 \n\na\0b\0"[..]);
        let frame = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.body.as_ref(), b"a\0b");
        // A CONNECT is read before its version is known: its content-length may have blanks.
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::from(&b"CONNECT\ncontent-length: 0\nlogin: a\n\n\0"[..]);
        let frame = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            frame.get(b"login").unwrap().as_ref(),
            b" a",
            "trimmed by the session"
        );
        // An error's receipt-id is trimmed in 1.0 too.
        let mut decoder = Decoder::default();
        decoder.set_version(Version::V1_0);
        let mut buf = BytesMut::from(&b"SEND\nreceipt: r-9 \nbad\n\n\0"[..]);
        let err = decoder.decode(&mut buf).unwrap_err();
        assert_eq!(err.receipt.as_deref(), Some(&b"r-9"[..]));
    }

    #[test]
    fn errors_are_sticky() {
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(&b"send\n\n\0SEND\n\n\0"[..]);
        let first = d.decode(&mut buf).unwrap_err();
        assert_eq!(d.decode(&mut buf).unwrap_err(), first);
    }
}
