//! Fuzzes the STOMP frame decoder: arbitrary bytes, fed in two pieces split at a point taken
//! from the input (or byte by byte), under tight limits.
//!
//! Checks: no panic; while waiting for more bytes the decoder never holds a frame larger than
//! `max_frame_bytes`; decoded frames respect the limits; in 1.0 no header name or value starts
//! or ends with a space or tab, and no name is empty (a CONNECT read before its version is known
//! gets the same from `Frame::trim_header_blanks`, a slice of what it had); and the split never
//! changes the frames decoded nor whether the input is an error.
//!
//! Run with `cargo +nightly fuzz run decode --fuzz-dir fuzz` from the repository root (the
//! `read` target drives the same decoder through the read buffer as a session does).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use plugboard::codec::{Decoder, Frame, Limits, Version};

const LIMITS: Limits = Limits {
    max_frame_bytes: 256,
    max_headers: 8,
    max_header_line_bytes: 64,
    max_body_bytes: 128,
};

/// Decodes `chunks` in order; returns the frames and whether decoding failed.
fn run<'a>(version: Version, chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Frame>, bool) {
    let mut decoder = Decoder::new(LIMITS);
    decoder.set_version(version);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.headers.len() <= LIMITS.max_headers);
                    assert!(frame.body.len() <= LIMITS.max_body_bytes);
                    if version == Version::V1_0 {
                        assert_trimmed(&frame, false);
                    } else {
                        let mut trimmed = frame.clone();
                        trimmed.trim_header_blanks();
                        assert_trimmed(&trimmed, true);
                        for ((name, value), (short_name, short_value)) in
                            frame.headers.iter().zip(&trimmed.headers)
                        {
                            assert!(contains(name, short_name) && contains(value, short_value));
                        }
                    }
                    frames.push(frame);
                }
                Ok(None) => {
                    assert!(
                        buf.len() < LIMITS.max_frame_bytes,
                        "holding {} bytes",
                        buf.len()
                    );
                    break;
                }
                Err(err) => {
                    let text = err.to_string();
                    assert!(!text.chars().any(char::is_control), "{text:?}");
                    return (frames, true);
                }
            }
        }
    }
    (frames, false)
}

fn is_blank(b: &u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// No header name or value with a blank at either end; no empty name unless `empty_names`.
fn assert_trimmed(frame: &Frame, empty_names: bool) {
    for (name, value) in &frame.headers {
        assert!(empty_names || !name.is_empty(), "{frame:?}");
        for field in [name, value] {
            let edges = [field.first(), field.last()];
            assert!(!edges.into_iter().flatten().any(is_blank), "{frame:?}");
        }
    }
}

/// Whether `part` is `whole` without blanks at its ends.
fn contains(whole: &[u8], part: &[u8]) -> bool {
    let start = whole.iter().take_while(|b| is_blank(b)).count();
    whole[start..].starts_with(part) && whole[start + part.len()..].iter().all(is_blank)
}

fuzz_target!(|data: &[u8]| {
    let [control, split, input @ ..] = data else {
        return;
    };
    let version = Version::ALL[usize::from(control % 3)];
    let whole = run(version, [input]);
    let split_at = usize::from(*split) * input.len() / 255;
    let (a, b) = input.split_at(split_at);
    assert_eq!(run(version, [a, b]), whole, "split at {split_at}");
    if control & 0x80 != 0 {
        assert_eq!(run(version, input.chunks(1)), whole, "byte by byte");
    }
});
