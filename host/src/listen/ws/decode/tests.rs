use proptest::prelude::*;

use super::*;

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn text(payload: &[u8]) -> Vec<u8> {
    frame(true, OP_TEXT, payload)
}

/// Feeds `wire` in pieces of `step` bytes; the payload stream, or the first violation.
fn decode_in_steps(decoder: &mut Decoder, wire: &[u8], step: usize) -> Result<Vec<u8>, Violation> {
    let mut out = Vec::new();
    for piece in wire.chunks(step.max(1)) {
        let mut piece = piece.to_vec();
        let n = decoder.process(&mut piece)?;
        out.extend_from_slice(&piece[..n]);
    }
    Ok(out)
}

fn decode(wire: &[u8]) -> Result<Vec<u8>, Violation> {
    decode_in_steps(&mut Decoder::new(1 << 20), wire, wire.len())
}

fn code_of(wire: &[u8]) -> u16 {
    decode(wire).expect_err("a violation").code
}

#[test]
fn payloads_of_text_and_binary_messages_form_one_stream() {
    let mut wire = text(b"SEND\ndestination:/queue/a\n\nhel");
    wire.extend(frame(true, OP_BINARY, b"lo\0\nSEND\n"));
    wire.extend(text(b"\n"));
    assert_eq!(
        decode(&wire).unwrap(),
        b"SEND\ndestination:/queue/a\n\nhello\0\nSEND\n\n"
    );
}

#[test]
fn fragmented_messages_and_lengths_of_every_form_decode() {
    let big = vec![b'x'; 70_000];
    let medium = vec![b'y'; 300];
    let mut wire = frame(false, OP_TEXT, b"ab");
    wire.extend(frame(false, OP_CONTINUATION, &medium));
    // A ping between fragments is allowed and answered.
    wire.extend(frame(true, OP_PING, b"p"));
    wire.extend(frame(true, OP_CONTINUATION, &big));
    let mut decoder = Decoder::new(1 << 20);
    let out = decode_in_steps(&mut decoder, &wire, wire.len()).unwrap();
    assert_eq!(out.len(), 2 + 300 + 70_000);
    assert_eq!(decoder.take_answers(), vec![Control::Ping(b"p".to_vec())]);
}

#[test]
fn every_split_of_the_bytes_decodes_the_same() {
    let mut wire = text("h\u{e9}llo \u{1F600}".as_bytes());
    wire.extend(frame(true, OP_PING, b"abc"));
    wire.extend(frame(true, OP_BINARY, &[0, 1, 2, 0xff]));
    let whole = decode(&wire).unwrap();
    for step in 1..wire.len() {
        let mut decoder = Decoder::new(1 << 20);
        assert_eq!(
            decode_in_steps(&mut decoder, &wire, step).unwrap(),
            whole,
            "step {step}"
        );
        assert_eq!(decoder.take_answers(), vec![Control::Ping(b"abc".to_vec())]);
    }
}

#[test]
fn protocol_violations_close_with_1002() {
    let unmasked = vec![0x81, 0x01, b'a'];
    assert_eq!(code_of(&unmasked), code::PROTOCOL);
    let mut rsv = text(b"a");
    rsv[0] |= 0x40;
    assert_eq!(code_of(&rsv), code::PROTOCOL);
    assert_eq!(code_of(&frame(true, 0x3, b"a")), code::PROTOCOL);
    assert_eq!(code_of(&frame(true, 0xB, b"")), code::PROTOCOL);
    assert_eq!(code_of(&frame(true, OP_PING, &[0; 126])), code::PROTOCOL);
    assert_eq!(code_of(&frame(false, OP_PING, b"")), code::PROTOCOL);
    assert_eq!(code_of(&frame(true, OP_CONTINUATION, b"a")), code::PROTOCOL);
    let mut interleaved = frame(false, OP_TEXT, b"a");
    interleaved.extend(text(b"b"));
    assert_eq!(code_of(&interleaved), code::PROTOCOL);
    // A 64-bit length with its top bit set.
    let mut huge = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
    huge.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(code_of(&huge), code::PROTOCOL);
    assert_eq!(code_of(&frame(true, OP_CLOSE, &[3])), code::PROTOCOL);
    assert_eq!(
        code_of(&frame(true, OP_CLOSE, &1005u16.to_be_bytes())),
        code::PROTOCOL
    );
}

#[test]
fn text_that_is_not_utf8_closes_with_1007() {
    assert_eq!(code_of(&text(b"SEND\n\n\xff\0")), code::INVALID_DATA);
    // A sequence split across fragments is fine; one left open at the end is not.
    let mut split = frame(false, OP_TEXT, b"\xc3");
    split.extend(frame(true, OP_CONTINUATION, b"\xa9"));
    assert_eq!(decode(&split).unwrap(), "\u{e9}".as_bytes());
    assert_eq!(code_of(&text(b"a\xc3")), code::INVALID_DATA);
    let mut reason = 1000u16.to_be_bytes().to_vec();
    reason.push(0xff);
    assert_eq!(code_of(&frame(true, OP_CLOSE, &reason)), code::INVALID_DATA);
    // Binary messages carry any bytes.
    assert_eq!(
        decode(&frame(true, OP_BINARY, b"\xff\xc3")).unwrap(),
        b"\xff\xc3"
    );
}

#[test]
fn a_message_over_the_limit_closes_with_1009_before_its_payload_arrives() {
    let mut decoder = Decoder::new(100);
    let wire = frame(true, OP_BINARY, &[0; 101]);
    // The header alone is enough to refuse.
    let err = decode_in_steps(&mut decoder, &wire[..8], 8).unwrap_err();
    assert_eq!(err.code, code::TOO_BIG);
    // Counted over the whole message, across fragments.
    let mut fragments = frame(false, OP_BINARY, &[0; 60]);
    fragments.extend(frame(true, OP_CONTINUATION, &[0; 60]));
    let err = decode_in_steps(&mut Decoder::new(100), &fragments, fragments.len()).unwrap_err();
    assert_eq!(err.code, code::TOO_BIG);
    assert!(decode_in_steps(
        &mut Decoder::new(100),
        &frame(true, OP_BINARY, &[0; 100]),
        200
    )
    .is_ok());
}

#[test]
fn only_the_latest_ping_is_answered_and_a_close_ends_the_stream() {
    let mut wire = frame(true, OP_PING, b"1");
    wire.extend(frame(true, OP_PING, b"2"));
    wire.extend(frame(true, OP_PONG, b"ignored"));
    wire.extend(text(b"x"));
    let mut close = 4000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    wire.extend(frame(true, OP_CLOSE, &close));
    wire.extend(text(b"after the close"));
    let mut decoder = Decoder::new(1 << 20);
    assert_eq!(
        decode_in_steps(&mut decoder, &wire, wire.len()).unwrap(),
        b"x"
    );
    assert!(decoder.closed());
    assert_eq!(
        decoder.take_answers(),
        vec![Control::Ping(b"2".to_vec()), Control::Close(4000)]
    );
    let mut empty_close = Decoder::new(10);
    decode_in_steps(&mut empty_close, &frame(true, OP_CLOSE, b""), 100).unwrap();
    assert_eq!(
        empty_close.take_answers(),
        vec![Control::Close(code::NORMAL)]
    );
}

proptest! {
    #[test]
    fn arbitrary_messages_and_splits_give_back_the_payloads(
        messages in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300), 1usize..4),
            0..8,
        ),
        step in 1usize..64,
    ) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for (is_text, payload, parts) in &messages {
            let payload: Vec<u8> = if *is_text {
                String::from_utf8_lossy(payload).into_owned().into_bytes()
            } else {
                payload.clone()
            };
            let chunk = payload.len().div_ceil(*parts).max(1);
            let pieces: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(chunk).collect() };
            for (i, piece) in pieces.iter().enumerate() {
                let opcode = if i > 0 { OP_CONTINUATION } else if *is_text { OP_TEXT } else { OP_BINARY };
                wire.extend(frame(i + 1 == pieces.len(), opcode, piece));
            }
            expected.extend_from_slice(&payload);
        }
        let mut decoder = Decoder::new(1 << 20);
        prop_assert_eq!(decode_in_steps(&mut decoder, &wire, step).unwrap(), expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), step in 1usize..32) {
        let mut decoder = Decoder::new(1 << 10);
        let _ = decode_in_steps(&mut decoder, &bytes, step);
    }
}
