//! Fuzzes a connection's read path as the session runs it: the read buffer's growth
//! (`FrameReader::reserve`) and the decoder, with reads of sizes taken from the input.
//!
//! Checks: no panic and no allocation past the bound (a frame's announced `content-length` is
//! checked before the buffer is sized from it, so `content-length:18446744073709551615` costs
//! nothing); every reserve leaves room to read; read sizes never change the frames decoded nor
//! whether the input is an error.
//!
//! Run with `cargo +nightly fuzz run read --fuzz-dir fuzz` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plugboard::codec::{Frame, FrameReader, Limits, Version};

const LIMITS: Limits = Limits {
    max_frame_bytes: 96 * 1024,
    max_headers: 8,
    max_header_line_bytes: 64,
    max_body_bytes: 80 * 1024,
};

/// Reads `input` in pieces of `sizes` (cycled) through reserve + fill; returns the frames and
/// whether decoding failed.
fn run(version: Version, input: &[u8], sizes: &[u8]) -> (Vec<Frame>, bool) {
    let mut reader = FrameReader::new(LIMITS);
    reader.set_version(version);
    let bound = FrameReader::capacity_bound(LIMITS);
    let mut frames = Vec::new();
    let mut rest = input;
    let mut turn = 0;
    loop {
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
        if rest.is_empty() {
            return (frames, false);
        }
        assert!(reader.buffered() < LIMITS.max_frame_bytes);
        reader.reserve().expect("a bounded reservation succeeds");
        assert!(reader.spare() > 0, "no room to read");
        assert!(reader.capacity() <= bound, "{} > {bound}", reader.capacity());
        // Read sizes from 1 byte to a whole large frame.
        let size = match sizes.get(turn % sizes.len().max(1)) {
            Some(&s) => usize::from(s).pow(2) * 2 + 1,
            None => rest.len(),
        };
        turn += 1;
        let n = reader.fill(&rest[..size.min(rest.len())]);
        rest = &rest[n..];
    }
}

fuzz_target!(|data: &[u8]| {
    let [control, n_sizes, data @ ..] = data else {
        return;
    };
    let n_sizes = usize::from(*n_sizes % 16).min(data.len());
    let (sizes, input) = data.split_at(n_sizes);
    let version = Version::ALL[usize::from(control % 3)];
    // A large body is cheap to ask for: expand a marker byte into a long run, so that frames
    // near the limits appear without megabytes of fuzz input.
    let input: Vec<u8> = if control & 0x40 != 0 {
        input
            .iter()
            .flat_map(|&b| std::iter::repeat_n(b, if b == b'~' { 4096 } else { 1 }))
            .collect()
    } else {
        input.to_vec()
    };
    let whole = run(version, &input, &[]);
    assert_eq!(run(version, &input, sizes), whole, "reads of sizes {sizes:?}");
});
