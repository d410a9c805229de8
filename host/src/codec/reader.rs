//! The read side of a connection: the buffer its bytes are read into and the [`Decoder`] that
//! turns them into frames, with the rule for how far that buffer may grow.
//!
//! A peer decides how many bytes arrive and what `content-length` it announces, so every growth
//! of the buffer is sized from numbers the decoder has already checked against the limits: the
//! buffer never holds more than one partial frame (at most `max_frame_bytes`) plus one read's
//! worth of spare room, whatever the peer sends. Growth is computed with checked arithmetic and
//! allocated fallibly, so an allocation failure is an error for this connection, not an abort
//! of the broker.
//!
//! Every byte read is charged to the broker's memory budget as it arrives, to the buffer it was
//! read into ([`BufferCharge`]); each completed frame, a slice of that buffer, holds a share of
//! its charge ([`FrameReader::next_charged`]), and the buffer's bytes are released when its
//! memory is: once the reader has moved to another buffer (or reuses it in place) and the last
//! frame of it is gone. A connection in the middle
//! of a large frame stops reading while the budget is over its limit (small frames, such as a
//! consumer's ACKs, are always read).
//!
//! The same reader serves any byte stream (a TCP socket, or the payloads of WebSocket messages
//! appended with [`FrameReader::extend`]).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::budget::{Account, BufferCharge, Charge, MemoryBudget};

use super::decode::{DecodeError, Decoder, Limits};
use super::frame::{Frame, Version};

/// A read never gets less room than this (small enough not to waste memory on idle
/// connections, large enough that a burst of small frames arrives in one read).
const MIN_SPARE: usize = 4 * 1024;
/// New buffers are whole multiples of this: freed read buffers are then the size the next one
/// needs, and the allocator hands back the same (cache-warm) memory instead of fragmenting
/// (measured: 16 KiB bodies, VmHWM 185 -> 100 MiB).
const CHUNK: usize = 64 * 1024;

/// The read buffer could not grow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadBufferError {
    /// The allocator refused the memory.
    #[error("the broker could not allocate {bytes} bytes to read this frame")]
    OutOfMemory {
        /// The buffer size asked for (`usize::MAX` when computing it overflowed).
        bytes: usize,
    },
    /// Bytes appended in one piece (a WebSocket message) would exceed the frame limit.
    #[error("{bytes} bytes arrived at once, more than a frame may hold (limit {limit} bytes)")]
    TooLarge {
        /// The size of the piece.
        bytes: usize,
        /// [`Limits::max_frame_bytes`].
        limit: usize,
    },
}

/// A connection's read buffer and decoder.
#[derive(Debug)]
pub struct FrameReader {
    decoder: Decoder,
    buf: BytesMut,
    /// Charged for every byte read.
    budget: Option<Arc<MemoryBudget>>,
    /// The connection's principal's account, once it is known.
    account: Option<Arc<Account>>,
    /// The charge of the bytes read into `buf`'s memory (none before the first read).
    charge: Option<Arc<BufferCharge>>,
}

impl FrameReader {
    /// A reader for a new connection (CONNECT framing until [`FrameReader::set_version`]).
    pub fn new(limits: Limits) -> FrameReader {
        FrameReader {
            decoder: Decoder::new(limits),
            buf: BytesMut::new(),
            budget: None,
            account: None,
            charge: None,
        }
    }

    /// Charges the bytes read to `budget`.
    pub fn charged_to(mut self, budget: Arc<MemoryBudget>) -> FrameReader {
        self.budget = Some(budget);
        self
    }

    /// Charges what is read from now on (and what is buffered) to `account` too.
    pub fn set_account(&mut self, account: Arc<Account>) {
        self.account = Some(account);
        self.new_charge();
    }

    /// Starts a new buffer charge for what `buf` holds now: after its memory was replaced, or
    /// when the account changes (the frames of the previous memory keep its charge).
    fn new_charge(&mut self) {
        let bytes = self.buf.len() as u64;
        self.charge = match (&self.account, &self.budget) {
            (Some(account), _) => Some(BufferCharge::to_account(account, bytes)),
            (None, Some(budget)) => Some(BufferCharge::to_budget(budget, bytes)),
            (None, None) => None,
        };
    }

    fn charge_read(&mut self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        match &self.charge {
            Some(charge) => charge.grow(bytes as u64),
            None => {
                // The first read: `buf` holds just these bytes.
                self.new_charge();
            }
        }
    }

    /// Limits for the frames from now on (a connection's limits grow once it is
    /// authenticated). Call it between frames.
    pub fn set_limits(&mut self, limits: Limits) {
        self.decoder.set_limits(limits);
    }

    /// The negotiated version (see [`Decoder::set_version`]).
    pub fn set_version(&mut self, version: Version) {
        self.decoder.set_version(version);
    }

    /// The limits in force (see [`FrameReader::set_limits`]).
    pub fn limits(&self) -> Limits {
        self.decoder.limits()
    }

    /// The next frame already buffered, if a whole one is (see [`Decoder::decode`]).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        self.next_charged().map(|next| next.map(|(frame, _)| frame))
    }

    /// [`next_frame`](Self::next_frame), with the charge of the frame's bytes.
    pub fn next_charged(&mut self) -> Result<Option<(Frame, Charge)>, DecodeError> {
        let Some(frame) = self.decoder.decode(&mut self.buf)? else {
            return Ok(None);
        };
        let charge = self.charge.as_ref().map(BufferCharge::share);
        Ok(Some((frame, charge.unwrap_or_default())))
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The buffer's allocated size (for tests and the fuzz target: it stays bounded).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The most a reader of `limits` ever allocates for its buffer.
    pub fn capacity_bound(limits: Limits) -> usize {
        limits
            .max_frame_bytes
            .saturating_add(MIN_SPARE)
            .div_ceil(CHUNK)
            .saturating_mul(CHUNK)
            .saturating_add(CHUNK)
    }

    /// Makes room for the next read. Call it only after [`next_frame`](Self::next_frame)
    /// returned `Ok(None)`: the buffer then holds one partial frame, shorter than the frame
    /// limit. Once that frame's length is known (its `content-length`, already checked against
    /// the limits by the decoder) the buffer makes room for all of it at once, so a large body
    /// is not copied again each time the buffer fills (measured: 16 KiB bodies 18-21 -> 14.5 us
    /// of broker CPU per message, 1 MiB 1150-1400 -> 475-550 us).
    pub fn reserve(&mut self) -> Result<(), ReadBufferError> {
        let len = self.buf.len();
        let spare = self.buf.capacity() - len;
        let max_frame = self.decoder.limits().max_frame_bytes;
        // The hint never exceeds the frame limit (the decoder refuses such a frame first);
        // capping it again keeps a decoder bug from turning into a huge allocation.
        let want = self
            .decoder
            .frame_len_hint()
            .unwrap_or(0)
            .min(max_frame)
            .saturating_sub(len);
        if spare >= MIN_SPARE && spare >= want {
            return Ok(());
        }
        let additional = want.max(MIN_SPARE);
        // A buffer whose frames are all gone is reused in place (the partial frame moved to
        // the front).
        if self.buf.try_reclaim(additional) {
            // No frame refers to this memory any more: only what it still holds stays charged
            // (a frame that outlived its bytes, e.g. rewritten by a plugin, keeps the old charge).
            match self.charge.as_mut().and_then(Arc::get_mut) {
                Some(charge) => charge.reset(len as u64),
                None => self.new_charge(),
            }
            return Ok(());
        }
        let bytes = len
            .checked_add(additional)
            .and_then(|needed| needed.div_ceil(CHUNK).checked_mul(CHUNK))
            .ok_or(ReadBufferError::OutOfMemory { bytes: usize::MAX })?;
        let mut fresh: Vec<u8> = Vec::new();
        fresh
            .try_reserve_exact(bytes)
            .map_err(|_| ReadBufferError::OutOfMemory { bytes })?;
        fresh.extend_from_slice(&self.buf);
        // `Bytes` keeps the vector's whole capacity (its length is below it: `additional` > 0),
        // and so does the unique `BytesMut` made from it.
        self.buf = BytesMut::from(Bytes::from(fresh));
        self.new_charge();
        Ok(())
    }

    /// Room left for a read without growing.
    pub fn spare(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    /// Makes room and reads once from `source`; `Ok(0)` at end of stream.
    ///
    /// In the middle of a frame larger than a chunk, while the memory budget is over its
    /// limit, it first waits until the budget has room (the peer is paused by TCP
    /// backpressure). Cancel-safe.
    pub async fn read_from<R: AsyncRead + Unpin>(
        &mut self,
        source: &mut R,
    ) -> Result<usize, ReadError> {
        if self.buf.len() > CHUNK {
            if let Some(budget) = &self.budget {
                budget.wait_for_room(self.account.as_deref()).await;
            }
        }
        self.reserve()?;
        let n = source.read_buf(&mut self.buf).await?;
        self.charge_read(n);
        Ok(n)
    }

    /// Copies as much of `bytes` as fits in the spare room (as one socket read would, after
    /// [`reserve`](Self::reserve)); returns how many bytes it took.
    pub fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.spare());
        self.buf.extend_from_slice(&bytes[..n]);
        self.charge_read(n);
        n
    }

    /// Appends bytes that arrived in one piece (a WebSocket message's payload). A piece larger
    /// than a whole frame is refused before anything is copied, so the buffer holds at most one
    /// partial frame plus one piece: less than twice the frame limit.
    pub fn extend(&mut self, bytes: &[u8]) -> Result<(), ReadBufferError> {
        let limit = self.decoder.limits().max_frame_bytes;
        if bytes.len() > limit {
            return Err(ReadBufferError::TooLarge {
                bytes: bytes.len(),
                limit,
            });
        }
        if self.spare() < bytes.len() {
            let total = self.buf.len() + bytes.len();
            let mut grown: Vec<u8> = Vec::new();
            grown
                .try_reserve_exact(total.max(MIN_SPARE))
                .map_err(|_| ReadBufferError::OutOfMemory { bytes: total })?;
            grown.extend_from_slice(&self.buf);
            self.buf = BytesMut::from(Bytes::from(grown));
            self.new_charge();
        }
        self.buf.extend_from_slice(bytes);
        self.charge_read(bytes.len());
        Ok(())
    }
}

/// Reading from the stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The buffer could not make room for the read.
    #[error(transparent)]
    Buffer(#[from] ReadBufferError),
    /// The stream's read failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_frame: usize) -> Limits {
        Limits {
            max_frame_bytes: max_frame,
            max_headers: 16,
            max_header_line_bytes: 1024,
            max_body_bytes: max_frame,
        }
    }

    /// Feeds `wire` through reserve/fill as the session's reads do; returns the frames, the
    /// error if any, and the largest capacity the buffer had.
    fn feed(limits: Limits, wire: &[u8], read: usize) -> (Vec<Frame>, Option<DecodeError>, usize) {
        let mut reader = FrameReader::new(limits);
        reader.set_version(Version::V1_2);
        let mut frames = Vec::new();
        let mut most = 0;
        let mut rest = wire;
        loop {
            loop {
                match reader.next_frame() {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(err) => return (frames, Some(err), most),
                }
            }
            if rest.is_empty() {
                return (frames, None, most);
            }
            reader.reserve().expect("reserve");
            most = most.max(reader.capacity());
            let n = reader.fill(&rest[..read.min(rest.len())]);
            assert!(n > 0, "reserve left no room");
            rest = &rest[n..];
        }
    }

    #[test]
    fn a_frame_with_a_known_length_gets_room_for_all_of_it_at_once() {
        let body = vec![b'x'; 300_000];
        let mut wire =
            format!("SEND\ndestination:/q\ncontent-length:{}\n\n", body.len()).into_bytes();
        wire.extend_from_slice(&body);
        wire.push(0);
        let mut reader = FrameReader::new(limits(1 << 20));
        reader.reserve().unwrap();
        let head = wire.iter().position(|&b| b == b'\n').unwrap() + 40;
        reader.fill(&wire[..head.min(wire.len())]);
        assert!(reader.next_frame().unwrap().is_none());
        reader.reserve().unwrap();
        assert!(reader.spare() + reader.buffered() >= wire.len());
        let n = reader.fill(&wire[head..]);
        assert_eq!(head + n, wire.len(), "the rest fits without growing");
        assert_eq!(reader.next_frame().unwrap().unwrap().body.len(), body.len());
    }

    #[test]
    fn an_announced_length_past_the_limits_is_refused_before_any_room_is_made() {
        // The attack of the hardening issue: a body-less frame announcing 4 EiB, and values
        // around 2^63 and u64::MAX, for commands with and without a body.
        for command in [
            "ACK\nid:0.0",
            "SEND\ndestination:/q",
            "SUBSCRIBE\nid:1\ndestination:/q",
        ] {
            for length in [
                "4611686018427387904",
                "9223372036854775807",
                "9223372036854775808",
                "18446744073709551615",
                "1048577",
            ] {
                let wire = format!("{command}\ncontent-length:{length}\n\n");
                let (frames, err, most) = feed(limits(1 << 20), wire.as_bytes(), 7);
                assert!(frames.is_empty());
                assert!(err.is_some(), "{command} {length}: accepted");
                assert!(
                    most <= FrameReader::capacity_bound(limits(1 << 20)),
                    "{most}"
                );
            }
        }
    }

    #[test]
    fn the_buffer_stays_within_its_bound_for_frames_in_any_read_sizes() {
        let lim = limits(64 * 1024);
        let body = vec![b'y'; 60_000];
        let mut wire = Vec::new();
        for with_length in [true, false] {
            wire.extend_from_slice(b"SEND\ndestination:/q\n");
            if with_length {
                wire.extend_from_slice(format!("content-length:{}\n", body.len()).as_bytes());
            }
            wire.extend_from_slice(b"\n");
            wire.extend_from_slice(&body);
            wire.extend_from_slice(b"\0\n\n");
        }
        for read in [1, 100, 4096, 70_000, 1 << 20] {
            let (frames, err, most) = feed(lim, &wire, read);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(frames.len(), 2);
            assert!(
                most <= FrameReader::capacity_bound(lim),
                "read {read}: {most}"
            );
        }
    }

    #[test]
    fn bytes_read_are_charged_and_frames_take_their_charge() {
        let budget = MemoryBudget::new(1 << 20, 0);
        let mut reader = FrameReader::new(limits(1024)).charged_to(budget.clone());
        reader
            .extend(b"\nSEND\ndestination:/q\n\nhi\0SEND\ndesti")
            .unwrap();
        assert_eq!(budget.used(), 35);
        let (frame, charge) = reader.next_charged().unwrap().unwrap();
        assert_eq!(frame.body.as_ref(), b"hi");
        assert!(reader.next_charged().unwrap().is_none());
        // The buffer's bytes stay charged while the reader or a frame of it lives.
        drop(reader);
        assert_eq!(budget.used(), 35, "the frame still holds its buffer");
        drop((frame, charge));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_buffer_moved_from_stays_charged_while_a_frame_of_it_lives() {
        let budget = MemoryBudget::new(1 << 20, 0);
        let mut reader = FrameReader::new(limits(1024)).charged_to(budget.clone());
        // A 24-byte frame and 7 bytes of the next.
        reader
            .extend(b"SEND\ndestination:/q\n\nhi\0SEND\nde")
            .unwrap();
        let kept = reader.next_charged().unwrap().unwrap();
        assert!(reader.next_charged().unwrap().is_none());
        reader.reserve().unwrap(); // a new buffer: the partial frame moves
        assert_eq!(
            budget.used(),
            31 + 7,
            "the old buffer, held by its frame, and the new one"
        );
        drop(kept);
        assert_eq!(budget.used(), 7);
        // Once its frames are gone a buffer is reused in place, charged for what it holds.
        reader.extend(b"stination:/q\n\nhi\0").unwrap();
        let frame = reader.next_charged().unwrap().unwrap();
        drop(frame);
        assert_eq!(budget.used(), 24);
        reader.reserve().unwrap();
        assert_eq!(
            budget.used(),
            24,
            "room left: charged up to the buffer's size"
        );
        for _ in 0..62 {
            reader.extend(&[b'\n'; 1000]).unwrap(); // heart-beats
            assert!(reader.next_charged().unwrap().is_none());
        }
        assert_eq!(budget.used(), 62_024);
        reader.reserve().unwrap(); // little room left: reused in place
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn extend_refuses_a_piece_larger_than_a_frame() {
        let mut reader = FrameReader::new(limits(100));
        assert!(reader.extend(&[b'\n'; 50]).is_ok());
        assert_eq!(
            reader.extend(&[b'x'; 101]),
            Err(ReadBufferError::TooLarge {
                bytes: 101,
                limit: 100
            })
        );
        assert!(reader.extend(b"SEND\ndestination:/q\n\nhi\0").is_ok());
        assert_eq!(reader.next_frame().unwrap().unwrap().body.as_ref(), b"hi");
    }
}
