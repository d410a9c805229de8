//! Table tests for the checklist rows F-01..F-16, E-01..E-07 and the framing pitfalls
//! (P4, P6-P10, P12-P14, P29, P30) of `shared/stomp-checklist.md`.

use bytes::{Bytes, BytesMut};

use super::*;
use Command::*;
use Version::*;

/// Decodes everything in `input` in one go: the frames, or the first error.
fn decode_all_with(
    input: &[u8],
    version: Version,
    limits: Limits,
) -> Result<Vec<Frame>, DecodeError> {
    let mut decoder = Decoder::new(limits);
    decoder.set_version(version);
    let mut buf = BytesMut::from(input);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf)? {
        frames.push(frame);
    }
    assert!(buf.len() < limits.max_frame_bytes);
    Ok(frames)
}

fn decode_all(input: &[u8], version: Version) -> Result<Vec<Frame>, DecodeError> {
    decode_all_with(input, version, Limits::default())
}

fn frame(command: Command, headers: &[(&[u8], &[u8])], body: &[u8]) -> Frame {
    Frame {
        command,
        headers: headers
            .iter()
            .map(|(n, v)| (Bytes::copy_from_slice(n), Bytes::copy_from_slice(v)))
            .collect(),
        body: Bytes::copy_from_slice(body),
    }
}

type Expect = Result<Vec<Frame>, DecodeErrorKind>;

fn ok(frames: Vec<Frame>) -> Expect {
    Ok(frames)
}

fn err(kind: DecodeErrorKind) -> Expect {
    Err(kind)
}

fn bad_escape(sequence: &str) -> Expect {
    err(DecodeErrorKind::InvalidEscape {
        sequence: sequence.to_owned(),
    })
}

/// `(row, versions, input, expected)`; every row is also checked byte by byte.
#[rustfmt::skip]
fn table() -> Vec<(&'static str, Vec<Version>, &'static [u8], Expect)> {
    let all = || Version::ALL.to_vec();
    let v11_12 = || vec![V1_1, V1_2];
    let send = |headers: &[(&[u8], &[u8])], body: &[u8]| vec![frame(Send, headers, body)];
    vec![
        ("F-01 body", all(), b"SEND\ndestination:/q\n\nhello\0", ok(send(&[(b"destination", b"/q")], b"hello"))),
        ("F-01 trailing EOLs", all(), b"SEND\n\nx\0\n\n\r\n", ok(send(&[], b"x"))),
        ("F-02 lowercase", all(), b"send\n\n\0", err(DecodeErrorKind::UnknownCommand("send".into()))),
        ("F-02 header names", all(), b"SEND\nContent-Length:1\n\nab\0", ok(send(&[(b"Content-Length", b"1")], b"ab"))),
        ("F-03 NACK decodes", all(), b"NACK\nid:1\n\n\0", ok(vec![frame(Nack, &[(b"id", b"1")], b"")])),
        ("F-04 unknown", all(), b"FOO\n\n\0", err(DecodeErrorKind::UnknownCommand("FOO".into()))),
        ("F-04 control chars", all(), b"\x01X\r\r\n", err(DecodeErrorKind::UnknownCommand("\\u{1}X\\r".into()))),
        ("F-05 1.1+", v11_12(), b"SUBSCRIBE\nid:1\n\nxyz\0", err(DecodeErrorKind::BodyNotAllowed(Subscribe))),
        ("F-05 1.0 ignored", vec![V1_0], b"SUBSCRIBE\nid:1\n\nxyz\0", ok(vec![frame(Subscribe, &[(b"id", b"1")], b"")])),
        ("F-05 1.0 with length", vec![V1_0], b"SUBSCRIBE\ncontent-length:3\n\na\0b\0SEND\n\n\0",
            ok(vec![frame(Subscribe, &[(b"content-length", b"3")], b""), frame(Send, &[], b"")])),
        ("F-06", all(), b"SEND\ncontent-length:3\n\nabcd\0", err(DecodeErrorKind::MissingNul)),
        ("F-07", all(), b"SEND\n\nabc\0", ok(send(&[], b"abc"))),
        ("F-08", all(), b"SEND\ncontent-length:5\n\na\0b\0c\0", ok(send(&[(b"content-length", b"5")], b"a\0b\0c"))),
        ("F-09 utf-8", all(), "SEND\ncontent-length:6\n\nhéllo\0".as_bytes(), ok(send(&[(b"content-length", b"6")], "héllo".as_bytes()))),
        ("F-09 off by one", all(), b"SEND\ncontent-length:2\n\nab\0", ok(send(&[(b"content-length", b"2")], b"ab"))),
        ("F-10", all(), b"ACK\nid:1\ncontent-length:0\n\n\0", ok(vec![frame(Ack, &[(b"id", b"1"), (b"content-length", b"0")], b"")])),
        ("F-11", all(), b"\n\n\r\nSEND\n\n\0\n\r\n\nBEGIN\ntransaction:t\n\n\0\r\n",
            ok(vec![frame(Send, &[], b""), frame(Begin, &[(b"transaction", b"t")], b"")])),
        ("F-12 CRLF", all(), b"SEND\r\ndestination:/q\r\n\r\nbody\0\r\n", ok(send(&[(b"destination", b"/q")], b"body"))),
        ("F-12 bare CR 1.2", vec![V1_2], b"SEND\r\nk:a\rb\r\n\r\n\0", err(DecodeErrorKind::BareCr)),
        ("F-12 CR is data 1.0/1.1", vec![V1_0, V1_1], b"SEND\r\nk:a\rb\r\n\r\n\0", ok(send(&[(b"k", b"a\rb")], b""))),
        ("F-13 empty value", all(), b"SEND\nk:\n\n\0", ok(send(&[(b"k", b"")], b""))),
        ("F-13 first colon", all(), b"SEND\nk:a:b:c\n\n\0", ok(send(&[(b"k", b"a:b:c")], b""))),
        ("F-13 no colon", all(), b"SEND\nnocolon\n\n\0", err(DecodeErrorKind::MissingColon)),
        ("F-13 empty name", all(), b"SEND\n:v\n\n\0", err(DecodeErrorKind::EmptyHeaderName)),
        ("F-14 utf-8", all(), "SEND\nk:日本\n\n\0".as_bytes(), ok(send(&[(b"k", "日本".as_bytes())], b""))),
        ("F-14 non-utf-8 passes", all(), b"SEND\n\xffk:\xfe\n\n\0", ok(send(&[(b"\xffk", b"\xfe")], b""))),
        ("F-15", v11_12(), b"SEND\n k : v \n\n\0", ok(send(&[(b" k ", b" v ")], b""))),
        ("F-15 1.0 trims blanks", vec![V1_0], b"SEND\n k :\t v \n\n\0", ok(send(&[(b"k", b"v")], b""))),
        ("F-15 1.0 blank name", vec![V1_0], b"SEND\n \t: v\n\n\0", err(DecodeErrorKind::EmptyHeaderName)),
        ("E-01", vec![V1_1], b"SEND\nk:a\\n\\c\\\\\n\n\0", ok(send(&[(b"k", b"a\n:\\")], b""))),
        ("E-01 \\r in 1.1", vec![V1_1], b"SEND\nk:\\r\n\n\0", bad_escape("\\r")),
        ("E-02 \\r in 1.2", vec![V1_2], b"SEND\nk:a\\rb\n\n\0", ok(send(&[(b"k", b"a\rb")], b""))),
        ("E-02 \\t", v11_12(), b"SEND\nk:\\t\n\n\0", bad_escape("\\t")),
        ("E-02 trailing", v11_12(), b"SEND\nk:ab\\\n\n\0", bad_escape("\\<end of header>")),
        ("E-02 control", v11_12(), b"SEND\nk:\\\x01\n\n\0", bad_escape("\\<0x01>")),
        ("E-03 name", v11_12(), b"SEND\na\\cb:v\n\n\0", ok(send(&[(b"a:b", b"v")], b""))),
        ("E-04 CONNECT", all(), b"CONNECT\nlogin:u\npasscode:p:a\\ss\n\n\0",
            ok(vec![frame(Connect, &[(b"login", b"u"), (b"passcode", b"p:a\\ss")], b"")])),
        ("E-04 CONNECTED", all(), b"CONNECTED\nserver:a\\t\n\n\0", ok(vec![frame(Connected, &[(b"server", b"a\\t")], b"")])),
        ("E-05 / P30 no escapes in 1.0", vec![V1_0], b"SEND\nk:a\\nb\\c\\t\n\n\0", ok(send(&[(b"k", b"a\\nb\\c\\t")], b""))),
        ("E-06", v11_12(), b"SEND\na:\\\\n\nb:\\\\c\nc:\\\\\\\\\nd:\\\\r\n\n\0",
            ok(send(&[(b"a", b"\\n"), (b"b", b"\\c"), (b"c", b"\\\\"), (b"d", b"\\r")], b""))),
        ("P4 raw colon", all(), b"SEND\ndestination:/q:1\n\n\0", ok(send(&[(b"destination", b"/q:1")], b""))),
        ("P7 undefined escape", v11_12(), b"SEND\ndestination:/q\\t\n\n\0", bad_escape("\\t")),
        ("P8 STOMP", all(), b"STOMP\npasscode:a\\cb:c\n\n\0", ok(vec![frame(Stomp, &[(b"passcode", b"a\\cb:c")], b"")])),
        ("P9 repeats kept", all(), b"SEND\nfoo:1\nfoo:2\n\n\0", ok(send(&[(b"foo", b"1"), (b"foo", b"2")], b""))),
        ("P10 mixed EOLs", all(), b"SEND\r\nk:v\n\r\nbody\0\n", ok(send(&[(b"k", b"v")], b"body"))),
        ("P13 content-type anywhere", all(), b"ACK\nid:1\ncontent-length:0\ncontent-type:text/plain\n\n\0",
            ok(vec![frame(Ack, &[(b"id", b"1"), (b"content-length", b"0"), (b"content-type", b"text/plain")], b"")])),
        ("P13 MESSAGE length", all(), b"MESSAGE\ncontent-length:2\n\n\0\0\0", ok(vec![frame(Message, &[(b"content-length", b"2")], b"\0\0")])),
        ("P13 first length wins", all(), b"ERROR\ncontent-length:1\ncontent-length:x\n\n\0\0",
            ok(vec![frame(Error, &[(b"content-length", b"1"), (b"content-length", b"x")], b"\0")])),
        ("P13 invalid length", all(), b"SEND\ncontent-length:-1\n\n\0", err(DecodeErrorKind::InvalidContentLength("-1".into()))),
        ("P13 empty length", all(), b"SEND\ncontent-length:\n\n\0", err(DecodeErrorKind::InvalidContentLength("".into()))),
        ("P13 body longer", all(), b"SEND\ncontent-length:1\n\nab\0", err(DecodeErrorKind::MissingNul)),
        ("P29 ACK with copied headers", all(), b"ACK\nid:1\ncontent-length:5\ndestination:/q\n\n\0",
            ok(vec![frame(Ack, &[(b"id", b"1"), (b"content-length", b"5"), (b"destination", b"/q")], b"")])),
    ]
}

#[test]
fn checklist_table() {
    for (row, versions, input, expected) in table() {
        for version in versions {
            let whole = decode_all(input, version).map_err(|e| e.kind);
            assert_eq!(whole, expected, "{row} {version:?} whole");
            // The same bytes fed one at a time give the same result.
            let mut d = Decoder::default();
            d.set_version(version);
            let mut buf = BytesMut::new();
            let mut frames = Vec::new();
            let mut result = Ok(());
            for &b in input {
                buf.extend_from_slice(&[b]);
                match d.decode(&mut buf) {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => {}
                    Err(e) => {
                        result = Err(e.kind);
                        break;
                    }
                }
            }
            let bytewise = result.map(|()| frames);
            assert_eq!(bytewise, expected, "{row} {version:?} byte by byte");
        }
    }
}

#[test]
fn f01_every_command() {
    for command in Command::ALL {
        let mut wire = command.as_bytes().to_vec();
        wire.extend_from_slice(b"\nk:v\n\n\0\n");
        let frames = decode_all(&wire, V1_2).unwrap();
        assert_eq!(frames, vec![frame(command, &[(b"k", b"v")], b"")]);
    }
}

fn small_limits() -> Limits {
    Limits {
        max_frame_bytes: 64,
        max_headers: 3,
        max_header_line_bytes: 20,
        max_body_bytes: 20,
    }
}

fn limit_error(input: &[u8]) -> DecodeError {
    decode_all_with(input, V1_2, small_limits()).unwrap_err()
}

#[test]
fn f16_limits() {
    use DecodeErrorKind::*;
    let limits = small_limits();
    assert_eq!(
        limit_error(b"SEND\na:1\nb:2\nc:3\nd:4\n\n\0").kind,
        TooManyHeaders { limit: 3 }
    );
    assert!(decode_all_with(b"SEND\na:1\nb:2\nc:3\n\n\0", V1_2, limits).is_ok());
    // A line of exactly the limit is fine, one more byte is not; CRLF does not count.
    assert!(decode_all_with(b"SEND\nk:345678901234567890\r\n\n\0", V1_2, limits).is_ok());
    assert_eq!(
        limit_error(b"SEND\nk:3456789012345678901\n\n\0").kind,
        HeaderLineTooLong { limit: 20 }
    );
    // Detected without waiting for the EOL, and for the command line too.
    assert_eq!(
        limit_error(b"SEND\nk:34567890123456789012").kind,
        HeaderLineTooLong { limit: 20 }
    );
    assert_eq!(
        limit_error(b"SENDSENDSENDSENDSENDSEND").kind,
        HeaderLineTooLong { limit: 20 }
    );
    // Body: announced too large is refused before the bytes arrive.
    let e = limit_error(b"SEND\nreceipt:r1\ncontent-length:21\n\n");
    assert_eq!(
        e.kind,
        BodyTooLarge {
            size: Some(21),
            limit: 20
        }
    );
    assert_eq!(e.receipt.as_deref(), Some(&b"r1"[..]));
    assert_eq!(
        limit_error(b"SEND\n\n123456789012345678901").kind,
        BodyTooLarge {
            size: None,
            limit: 20
        }
    );
    assert_eq!(
        limit_error(b"SEND\n\n123456789012345678901\0").kind,
        BodyTooLarge {
            size: Some(21),
            limit: 20
        }
    );
    assert!(decode_all_with(b"SEND\n\n12345678901234567890\0", V1_2, limits).is_ok());
    // The frame limit covers headers and body together: 64 bytes with the NUL is fine.
    let mut exact = b"SEND\nk:012345678901234567\nl:012345678901234567\n\n".to_vec();
    exact.extend_from_slice(&[b'x'; 64 - 48 - 1]);
    exact.push(0);
    assert_eq!(exact.len(), 64);
    assert!(decode_all_with(&exact, V1_2, limits).is_ok());
    let mut over = exact.clone();
    over.insert(50, b'y');
    assert_eq!(
        decode_all_with(&over, V1_2, limits).unwrap_err().kind,
        FrameTooLarge { limit: 64 }
    );
    let e = limit_error(b"SEND\nk:0123456789\nreceipt:7\ncontent-length:20\n\n");
    assert_eq!(e.kind, FrameTooLarge { limit: 64 });
    assert_eq!(e.receipt.as_deref(), Some(&b"7"[..]));
}

#[test]
fn errors_carry_the_receipt_after_the_header_block() {
    let e = decode_all(b"SEND\nreceipt:r\\c1\ncontent-length:x\n\n\0", V1_2).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::InvalidContentLength("x".into()));
    assert_eq!(e.receipt.as_deref(), Some(&b"r:1"[..]));
    let e = decode_all(b"SUBSCRIBE\nreceipt:1\nreceipt:2\n\nbody\0", V1_2).unwrap_err();
    assert_eq!(e.receipt.as_deref(), Some(&b"1"[..]));
    let e = decode_all(b"SEND\nreceipt:1\nk:\\t\n\n\0", V1_2).unwrap_err();
    // Found by the raw fallback scan (not unescaped), so the ERROR still carries it.
    assert_eq!(
        e.receipt.as_deref(),
        Some(&b"1"[..]),
        "error inside the header block"
    );
    let e = decode_all(b"SEND\nreceipt:r1\ncontent-length:1\n\nab\0", V1_2).unwrap_err();
    assert_eq!(e.receipt.as_deref(), Some(&b"r1"[..]));
    assert_eq!(
        e.to_string(),
        "frame body is not followed by a NUL byte where content-length says it ends"
    );
}

#[test]
fn before_set_version_frames_use_1_2_framing() {
    let mut d = Decoder::default();
    assert_eq!(d.version(), V1_2);
    let mut buf = BytesMut::from(&b"CONNECT\r\npasscode:a\\b\r\n\r\n\0"[..]);
    let f = d.decode(&mut buf).unwrap().unwrap();
    assert_eq!(f.get(b"passcode").unwrap().as_ref(), b"a\\b");
    buf.extend_from_slice(b"CONNECT\nk:a\rb\n\n\0");
    assert_eq!(
        d.decode(&mut buf).unwrap_err().kind,
        DecodeErrorKind::BareCr
    );
}

#[test]
fn zero_copy_slices_of_the_read_buffer() {
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(b"SEND\ndestination:/q\nk:a\\cb\n\nhello\0");
    let base = buf.as_ptr() as usize;
    let range = base..base + buf.len();
    let f = Decoder::default().decode(&mut buf).unwrap().unwrap();
    let inside = |b: &Bytes| range.contains(&(b.as_ptr() as usize));
    assert!(inside(&f.headers[0].0) && inside(&f.headers[0].1) && inside(&f.body));
    assert!(inside(&f.headers[1].0));
    assert!(!inside(&f.headers[1].1), "unescaped values are copies");
    assert_eq!(f.headers[1].1, "a:b");
}

/// E-03, E-04, E-05, P6, P10, P14: what the encoder writes decodes back to the same headers.
#[test]
fn encoder_vectors() {
    let encode = |f: &Frame, v: Version| {
        let mut out = BytesMut::new();
        encode_frame(f, v, &mut out);
        out
    };
    // P6: values holding literal escape sequences.
    let m = Frame::new(Message)
        .header("a", &b"\\c"[..])
        .header("b", &b"\\n"[..])
        .header("c", &b"\\\\"[..])
        .header("d:e", "x\r\ny")
        .body(&b"bin\0ary"[..]);
    let wire = encode(&m, V1_2);
    assert_eq!(
        &wire[..],
        &b"MESSAGE\ncontent-length:7\na:\\\\c\nb:\\\\n\nc:\\\\\\\\\nd\\ce:x\\r\\ny\n\nbin\0ary\0\n"
            [..]
    );
    let back = decode_all(&wire, V1_2).unwrap();
    assert_eq!(back[0].headers[1..], m.headers[..]);
    assert_eq!(back[0].body, m.body);
    // 1.1 has no `\r` escape but carries a CR that does not end the value raw.
    let back = decode_all(&encode(&m, V1_1), V1_1).unwrap();
    assert_eq!(back[0].headers[1..], m.headers[..]);
    // E-05: 1.0 drops what it cannot carry, keeps the rest verbatim.
    let wire = encode(&m, V1_0);
    let back = decode_all(&wire, V1_0).unwrap();
    assert_eq!(back[0].headers[1..], m.headers[..3]);
    assert_eq!(back[0].body, m.body);
}

#[test]
fn error_display_has_no_control_characters() {
    let inputs: [&[u8]; 6] = [
        b"\x07\x1b[2J\n\n\0",
        b"SEND\nk:\\\x7f\n\n\0",
        b"SEND\ncontent-length:\r\x01\n\n\0",
        b"SEND\nno colon\n\n\0",
        b"SEND\nk:\r\r\n\n\0",
        b"\xff\xfe\n\n\0",
    ];
    for input in inputs {
        let e = decode_all(input, V1_2).unwrap_err();
        let text = e.to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(!text.is_empty());
    }
}

#[test]
fn error_messages_are_single_line() {
    let kinds = [
        DecodeErrorKind::UnknownCommand(crate::text::printable(b"SEND\rX\n", 40)),
        DecodeErrorKind::BodyTooLarge {
            size: Some(20_000_000),
            limit: 16_777_216,
        },
        DecodeErrorKind::BodyTooLarge {
            size: None,
            limit: 10,
        },
        DecodeErrorKind::BodyNotAllowed(Subscribe),
    ];
    for kind in kinds {
        let text = kind.to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
    assert_eq!(
        DecodeErrorKind::BodyTooLarge {
            size: Some(20_000_000),
            limit: 16_777_216
        }
        .to_string(),
        "frame body of 20000000 bytes exceeds the limit of 16777216 bytes"
    );
    assert_eq!(
        DecodeErrorKind::BodyNotAllowed(Subscribe).to_string(),
        "SUBSCRIBE frames must not have a body"
    );
}

#[test]
fn server_owned_headers_in_any_case_and_nothing_else() {
    use super::{is_server_owned, SERVER_OWNED};
    for name in SERVER_OWNED {
        assert!(is_server_owned(name.as_bytes()), "{name}");
        assert!(is_server_owned(name.to_uppercase().as_bytes()), "{name}");
    }
    for name in [
        "content-type",
        "reply-to",
        "acks",
        "x-destination",
        "",
        "receipts",
        "persistent",
        "content\rlength",
        "content_length",
        "destinatio\u{e}",
    ] {
        assert!(!is_server_owned(name.as_bytes()), "{name:?}");
    }
    assert!(is_server_owned(b"Content-Length"));
    // Every one-byte change of every owned name agrees with a plain comparison ignoring case.
    for owned in SERVER_OWNED {
        for at in 0..owned.len() {
            for byte in 0..=255u8 {
                let mut name = owned.as_bytes().to_vec();
                name[at] = byte;
                let expected = SERVER_OWNED
                    .iter()
                    .any(|o| name.eq_ignore_ascii_case(o.as_bytes()));
                assert_eq!(is_server_owned(&name), expected, "{name:?}");
            }
        }
    }
}
