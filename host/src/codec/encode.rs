//! Frame and header encoding.
//!
//! One encoder, [`encode_with`], writes every frame: [`encode_frame`] for a [`Frame`] and the
//! connection writer for MESSAGE (with its server headers and a body it may keep by reference).
//! It owns `content-length`: any `content-length` among the headers is ignored and the right one
//! is written, first ([`encode_frame`]) or last (the writer's MESSAGE): always on SEND, MESSAGE
//! and ERROR, even for an empty body, P14; on other frames only when the body is not empty. Every frame ends with NUL plus one LF, which
//! clients expect (checklist §1.10, last row).

use bytes::{BufMut, Bytes, BytesMut};

use super::escape::Escaping;
use super::frame::{Command, Frame, Header, Version};

const CONTENT_LENGTH: &[u8] = b"content-length";

/// Writes one `name:value` header line (with its LF), escaping name and value.
///
/// Returns `false`, and writes nothing, when the header cannot be carried with `escaping`:
/// an empty name; with `Escaping::None` (1.0, CONNECT/STOMP/CONNECTED) a name containing LF,
/// CR or `:`, or a value containing LF or CR; with `Escaping::V11` a value ending in CR (1.1
/// has no `\r` escape and readers take it as a CRLF line end). `V12` carries every byte.
pub fn encode_header(out: &mut BytesMut, name: &[u8], value: &[u8], escaping: Escaping) -> bool {
    if !escaping.can_encode(name, false) || !escaping.can_encode(value, true) {
        return false;
    }
    out.reserve(name.len() + value.len() + 2);
    escaping.escape_into(out, name);
    out.put_u8(b':');
    escaping.escape_into(out, value);
    out.put_u8(b'\n');
    true
}

/// [`encode_header`] for one of the broker's own header names (`destination`, `subscription`):
/// `name` is given with its colon and is written as it is (no name of the broker's needs
/// escaping), only the value is escaped.
pub fn encode_broker_header(
    out: &mut BytesMut,
    name_colon: &'static [u8],
    value: &[u8],
    escaping: Escaping,
) -> bool {
    debug_assert!(
        name_colon.ends_with(b":") && !name_colon[..name_colon.len() - 1].contains(&b':')
    );
    if !escaping.can_encode(value, true) {
        return false;
    }
    out.reserve(name_colon.len() + value.len() + 1);
    out.extend_from_slice(name_colon);
    escaping.escape_into(out, value);
    out.put_u8(b'\n');
    true
}

/// Where an encoded frame goes: its head (command and headers) is appended to a buffer; its
/// body may be kept by reference instead (the connection writer sends large bodies from their
/// own buffer, never copied).
pub trait FrameSink {
    /// The buffer the head is appended to.
    fn buf(&mut self) -> &mut BytesMut;
    /// Appends the body.
    fn body(&mut self, body: &Bytes) {
        self.buf().extend_from_slice(body);
    }
}

impl FrameSink for BytesMut {
    fn buf(&mut self) -> &mut BytesMut {
        self
    }
}

/// Where [`encode_with`] writes `content-length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthAt {
    /// Right after the command line ([`encode_frame`]).
    First,
    /// After every other header (the connection writer's MESSAGE).
    Last,
}

/// Appends the wire form of `frame` for a session of `version`: command, `content-length`
/// (see the module docs), headers (escaped per version, never for CONNECT/STOMP/CONNECTED), a
/// blank line, the body, NUL and one LF.
///
/// Headers that cannot be carried (see [`encode_header`]) are dropped, e.g. a value containing
/// LF sent to a 1.0 subscriber (checklist E-05).
pub fn encode_frame(frame: &Frame, version: Version, out: &mut BytesMut) {
    encode_with(
        out,
        frame.command,
        version,
        LengthAt::First,
        |_, _| {},
        &frame.headers,
        &frame.body,
    );
}

/// The one frame encoder: command; `content-length` first or last (`length_at`; always on SEND,
/// MESSAGE and ERROR, on other frames only for a non-empty body); the caller's own headers,
/// which `head` appends (with the frame's escaping, e.g. through [`encode_header`]); `headers`
/// escaped per version (any `content-length` among them is dropped: the encoder owns it); a
/// blank line; the body (through the sink); NUL and one LF.
pub fn encode_with<S: FrameSink + ?Sized>(
    out: &mut S,
    command: Command,
    version: Version,
    length_at: LengthAt,
    head: impl FnOnce(&mut BytesMut, Escaping),
    headers: &[Header],
    body: &Bytes,
) {
    let escaping = Escaping::for_frame(command, version);
    let name = command.as_bytes();
    let headers_len: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    let length = command.may_have_body() || !body.is_empty();
    let buf = out.buf();
    buf.reserve(name.len() + headers_len + 128);
    buf.extend_from_slice(name);
    buf.put_u8(b'\n');
    if length && length_at == LengthAt::First {
        put_length(buf, body.len());
    }
    head(buf, escaping);
    for (name, value) in headers {
        if name.as_ref() != CONTENT_LENGTH {
            encode_header(buf, name, value, escaping);
        }
    }
    if length && length_at == LengthAt::Last {
        put_length(buf, body.len());
    }
    buf.put_u8(b'\n');
    out.body(body);
    out.buf().extend_from_slice(b"\0\n");
}

fn put_length(out: &mut BytesMut, len: usize) {
    // On every MESSAGE: the line is built on the stack, digits first (from the end), then the
    // name in front of them, and copied into the buffer once.
    const NAME: &[u8] = b"content-length:";
    let mut line = [0u8; NAME.len() + 20 + 1];
    let end = line.len() - 1;
    line[end] = b'\n';
    let mut at = crate::text::Decimal::write_before(len as u64, &mut line[..end]);
    at -= NAME.len();
    line[at..at + NAME.len()].copy_from_slice(NAME);
    out.extend_from_slice(&line[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &[u8], value: &[u8], e: Escaping) -> Option<Vec<u8>> {
        let mut out = BytesMut::new();
        let ok = encode_header(&mut out, name, value, e);
        assert_eq!(ok, !out.is_empty(), "false must write nothing");
        ok.then(|| out.to_vec())
    }

    fn frame(f: &Frame, v: Version) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(f, v, &mut out);
        out.to_vec()
    }

    #[test]
    fn header_escaping_per_version() {
        let e12 = Escaping::V12;
        assert_eq!(header(b"k", b"v", e12).unwrap(), b"k:v\n");
        // E-03: names are escaped too.
        assert_eq!(header(b"a:b", b"c\nd", e12).unwrap(), b"a\\cb:c\\nd\n");
        assert_eq!(header(b"k", b"\r", e12).unwrap(), b"k:\\r\n");
        assert_eq!(header(b"k", b"a\rb", Escaping::V11).unwrap(), b"k:a\rb\n");
        assert_eq!(header(b"k", b"a\r", Escaping::V11), None);
        // E-05 / P30: 1.0 never escapes and refuses what it cannot carry.
        assert_eq!(
            header(b"k", b"a:b\\c", Escaping::None).unwrap(),
            b"k:a:b\\c\n"
        );
        assert_eq!(header(b"k", b"a\nb", Escaping::None), None);
        assert_eq!(header(b"k", b"a\rb", Escaping::None), None);
        assert_eq!(header(b"a:b", b"v", Escaping::None), None);
        assert_eq!(header(b"a\nb", b"v", Escaping::None), None);
        assert_eq!(header(b"", b"v", e12), None);
        // F-15: no trimming.
        assert_eq!(header(b" k ", b" v ", e12).unwrap(), b" k : v \n");
    }

    #[test]
    fn frames() {
        let f = Frame::new(Command::Receipt).header("receipt-id", "r:1");
        assert_eq!(
            frame(&f, Version::V1_2),
            b"RECEIPT\nreceipt-id:r\\c1\n\n\0\n"
        );
        assert_eq!(frame(&f, Version::V1_0), b"RECEIPT\nreceipt-id:r:1\n\n\0\n");
        // P14: content-length always on MESSAGE; the caller's content-length is replaced.
        let m = Frame::new(Command::Message)
            .header("content-length", "99")
            .header("destination", "/q")
            .body(&b"a\0b"[..]);
        assert_eq!(
            frame(&m, Version::V1_1),
            b"MESSAGE\ncontent-length:3\ndestination:/q\n\na\0b\0\n"
        );
        let e = Frame::new(Command::Error);
        assert_eq!(frame(&e, Version::V1_2), b"ERROR\ncontent-length:0\n\n\0\n");
        // E-04: CONNECTED is never escaped.
        let c = Frame::new(Command::Connected)
            .header("version", "1.2")
            .header("server", "a:b\\c")
            .header("bad", "x\ny");
        assert_eq!(
            frame(&c, Version::V1_2),
            b"CONNECTED\nversion:1.2\nserver:a:b\\c\n\n\0\n"
        );
        // A body on a frame that normally has none still gets its content-length.
        let r = Frame::new(Command::Receipt).body("x");
        assert_eq!(
            frame(&r, Version::V1_2),
            b"RECEIPT\ncontent-length:1\n\nx\0\n"
        );
    }

    /// A sink that keeps bodies by reference, as the connection writer's does for large ones.
    #[derive(Default)]
    struct Chunks {
        head: BytesMut,
        parts: Vec<Vec<u8>>,
    }

    impl FrameSink for Chunks {
        fn buf(&mut self) -> &mut BytesMut {
            &mut self.head
        }

        fn body(&mut self, body: &Bytes) {
            self.parts.push(self.head.split().to_vec());
            self.parts.push(body.to_vec());
        }
    }

    #[test]
    fn the_writers_message_form_has_its_headers_first_and_content_length_last() {
        let headers = vec![
            (Bytes::from_static(b"x"), Bytes::from_static(b"a:b")),
            (
                Bytes::from_static(b"content-length"),
                Bytes::from_static(b"1"),
            ),
        ];
        let mut out = Chunks::default();
        let body = Bytes::from_static(b"hello");
        encode_with(
            &mut out,
            Command::Message,
            Version::V1_2,
            LengthAt::Last,
            |buf, escaping| {
                encode_header(buf, b"destination", b"/q", escaping);
                buf.extend_from_slice(b"message-id:m-1\n");
            },
            &headers,
            &body,
        );
        out.parts.push(out.head.to_vec());
        assert_eq!(
            out.parts,
            [
                &b"MESSAGE\ndestination:/q\nmessage-id:m-1\nx:a\\cb\ncontent-length:5\n\n"[..],
                b"hello",
                b"\0\n"
            ]
        );
    }
}
