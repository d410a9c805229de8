//! Property tests: encode/decode round trip, split-point independence, and robustness of the
//! decoder against arbitrary bytes under tight limits.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

const COMMANDS: [Command; 15] = [
    Command::Connect,
    Command::Stomp,
    Command::Send,
    Command::Subscribe,
    Command::Unsubscribe,
    Command::Ack,
    Command::Nack,
    Command::Begin,
    Command::Commit,
    Command::Abort,
    Command::Disconnect,
    Command::Connected,
    Command::Message,
    Command::Receipt,
    Command::Error,
];

/// Bytes biased towards the ones that matter to framing and escaping.
fn field(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => any::<u8>(),
        2 => prop::sample::select(b"\n\r:\\\0cnrt \t".to_vec()),
        2 => prop::sample::select(b"abc-_/.".to_vec()),
    ];
    prop::collection::vec(byte, 0..max)
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let name = prop_oneof![
        4 => field(10),
        1 => Just(b"content-length".to_vec()),
        1 => Just(b"receipt".to_vec()),
    ];
    (
        prop::sample::select(COMMANDS.to_vec()),
        prop::collection::vec((name, field(16)), 0..6),
        field(48),
    )
        .prop_map(|(command, headers, body)| Frame {
            command,
            headers: headers
                .into_iter()
                .map(|(n, v)| (Bytes::from(n), Bytes::from(v)))
                .collect(),
            body: if command.may_have_body() {
                Bytes::from(body)
            } else {
                Bytes::new()
            },
        })
}

fn arb_version() -> impl Strategy<Value = Version> {
    prop::sample::select(Version::ALL.to_vec())
}

/// What `frame` must decode to after `encode_frame`: the encoder's content-length first, then
/// the headers that `version` can carry, without the blanks around them in 1.0. `None` when
/// the decoder must refuse it: a 1.0 header name that is only blanks.
fn expected(frame: &Frame, version: Version) -> Option<Frame> {
    let escaping = Escaping::for_frame(frame.command, version);
    let trim = |b: &Bytes| match version {
        Version::V1_0 => b.slice(super::frame::blank_trimmed(b)),
        _ => b.clone(),
    };
    let mut headers = Vec::new();
    if frame.command.may_have_body() || !frame.body.is_empty() {
        let len = frame.body.len().to_string();
        headers.push((Bytes::from_static(b"content-length"), Bytes::from(len)));
    }
    for (name, value) in &frame.headers {
        let mut scratch = BytesMut::new();
        if name.as_ref() != b"content-length" && encode_header(&mut scratch, name, value, escaping)
        {
            headers.push((trim(name), trim(value)));
        }
    }
    if headers.iter().any(|(name, _)| name.is_empty()) {
        return None;
    }
    Some(Frame {
        command: frame.command,
        headers,
        body: frame.body.clone(),
    })
}

/// Spaces and tabs, one per byte of `b` (an even byte is a space).
fn blanks(b: &[u8]) -> Vec<u8> {
    b.iter()
        .map(|&c| if c % 2 == 0 { b' ' } else { b'\t' })
        .collect()
}

/// `b` without the bytes that end, split or escape a header (so every version reads it as is).
fn clean(b: &[u8]) -> Vec<u8> {
    b.iter()
        .copied()
        .filter(|c| !b"\n\r:\\\0".contains(c))
        .collect()
}

/// Feeds `chunks` one after the other, decoding all that can be decoded after each.
fn feed<'a>(
    version: Version,
    limits: Limits,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Frame>, DecodeError> {
    let mut decoder = Decoder::new(limits);
    decoder.set_version(version);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = decoder.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    Ok(frames)
}

/// Feeds `chunks`, checking the limits after every step; returns the frames and whether
/// decoding failed.
fn checked_run<'a>(
    version: Version,
    limits: Limits,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(Vec<Frame>, bool), TestCaseError> {
    let mut decoder = Decoder::new(limits);
    decoder.set_version(version);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    prop_assert!(frame.headers.len() <= limits.max_headers);
                    prop_assert!(frame.body.len() <= limits.max_body_bytes);
                    for (name, value) in &frame.headers {
                        prop_assert!(name.len() + value.len() < limits.max_header_line_bytes);
                    }
                    frames.push(frame);
                }
                Ok(None) => {
                    prop_assert!(
                        buf.len() < limits.max_frame_bytes,
                        "waiting on {}",
                        buf.len()
                    );
                    prop_assert!(decoder.headers_pending() <= limits.max_headers);
                    break;
                }
                Err(e) => {
                    let text = e.to_string();
                    prop_assert!(!text.chars().any(char::is_control), "{:?}", text);
                    return Ok((frames, true));
                }
            }
        }
    }
    Ok((frames, false))
}

proptest! {
    /// (1) Anything the encoder writes decodes back to the same frame.
    #[test]
    fn round_trip(frame in arb_frame(), version in arb_version()) {
        let mut wire = BytesMut::new();
        encode_frame(&frame, version, &mut wire);
        let decoded = feed(version, Limits::default(), [&wire[..]]);
        match expected(&frame, version) {
            Some(want) => prop_assert_eq!(decoded.unwrap(), vec![want]),
            None => prop_assert_eq!(decoded.unwrap_err().kind, DecodeErrorKind::EmptyHeaderName),
        }
    }

    /// (1b) STOMP 1.0 reads `name: value` without the spaces and tabs around name and value;
    /// 1.1 and 1.2 keep every byte. Decoding in 1.0 is the 1.1 decoding, trimmed.
    #[test]
    fn stomp_1_0_trims_blanks_and_later_versions_keep_them(
        headers in prop::collection::vec(
            (field(8), field(8), field(3), field(3), field(3), field(3)), 1..5),
        command in prop::sample::select(vec![Command::Send, Command::Subscribe, Command::Ack]),
    ) {
        let mut wire = command.as_bytes().to_vec();
        wire.push(b'\n');
        for (name, value, a, b, c, d) in &headers {
            let name = [blanks(a), clean(name), b"n".to_vec(), blanks(b)].concat();
            let value = [blanks(c), clean(value), blanks(d)].concat();
            wire.extend_from_slice(&[name, b":".to_vec(), value, b"\n".to_vec()].concat());
        }
        wire.extend_from_slice(b"\n\0");
        let exact = feed(Version::V1_1, Limits::default(), [&wire[..]]).unwrap();
        prop_assert_eq!(&feed(Version::V1_2, Limits::default(), [&wire[..]]).unwrap(), &exact);
        let mut trimmed = exact[0].clone();
        trimmed.trim_header_blanks();
        for (name, value) in &trimmed.headers {
            for field in [name, value] {
                let edges = [field.first(), field.last()];
                let blank = edges.into_iter().flatten().any(|b| b" \t".contains(b));
                prop_assert!(!blank, "{:?}", field);
            }
        }
        for split in [1, wire.len() / 2, wire.len() - 1] {
            let (a, b) = wire.split_at(split);
            let decoded = feed(Version::V1_0, Limits::default(), [a, b]).unwrap();
            prop_assert_eq!(&decoded, &vec![trimmed.clone()]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// (2) Several frames with heart-beats between them decode the same whatever the split.
    #[test]
    fn split_anywhere(
        frames in prop::collection::vec((arb_frame(), prop::collection::vec(any::<bool>(), 0..3)), 1..4),
        version in arb_version(),
    ) {
        let mut wire = BytesMut::new();
        let mut want = Vec::new();
        for (frame, heart_beats) in &frames {
            for &crlf in heart_beats {
                wire.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            }
            encode_frame(frame, version, &mut wire);
            let Some(frame) = expected(frame, version) else {
                // A blank 1.0 name is refused: the round trip (1) checks that.
                return Ok(());
            };
            want.push(frame);
        }
        let limits = Limits::default();
        prop_assert_eq!(&feed(version, limits, [&wire[..]]).unwrap(), &want);
        for split in 0..=wire.len() {
            let (a, b) = wire.split_at(split);
            prop_assert_eq!(&feed(version, limits, [a, b]).unwrap(), &want, "split at {}", split);
        }
        prop_assert_eq!(&feed(version, limits, wire.chunks(1)).unwrap(), &want);
    }

    /// (3) Arbitrary bytes, in arbitrary chunks, never panic the decoder, and it never waits
    /// on more bytes than the limits allow.
    #[test]
    fn arbitrary_bytes(
        tokens in prop::collection::vec(prop_oneof![
            field(12),
            prop::sample::select(vec![
                b"SEND\n".to_vec(), b"CONNECT\n".to_vec(), b"ACK\n".to_vec(),
                b"SUBSCRIBE\r\n".to_vec(), b"content-length:3\n".to_vec(),
                b"content-length:0\n".to_vec(), b"receipt:r\n".to_vec(), b"k:v\\c\n".to_vec(),
                b"\n".to_vec(), b"\r\n".to_vec(), b"\0".to_vec(),
            ]),
        ], 0..40),
        chunk_sizes in prop::collection::vec(1usize..20, 1..10),
        version in arb_version(),
    ) {
        let limits = Limits {
            max_frame_bytes: 64,
            max_headers: 3,
            max_header_line_bytes: 16,
            max_body_bytes: 24,
        };
        let input = tokens.concat();
        let mut chunks = Vec::new();
        let mut rest = &input[..];
        for &size in chunk_sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        let chunked = checked_run(version, limits, chunks)?;
        // Chunking changes neither the frames nor whether the input fails.
        prop_assert_eq!(chunked, checked_run(version, limits, [&input[..]])?);
    }
}
