//! The incoming side of RFC 6455 framing, as a stream: the payload bytes of data messages
//! (text and binary alike) come out in order, frame and message boundaries erased, so a STOMP
//! frame may span WebSocket messages and a message may hold several STOMP frames (RabbitMQ's
//! behaviour). Nothing is buffered beyond a frame header and one control frame (125 bytes):
//! payload is unmasked in place, in the caller's buffer, so memory stays the STOMP frame
//! reader's, under its limits and budget charges.
//!
//! Violations end the connection with the close code RFC 6455 gives them: 1002 (protocol
//! error: unmasked client frame, reserved bits or opcodes, bad fragmentation, oversized or
//! fragmented control frame), 1007 (a text message that is not UTF-8), 1009 (a message larger
//! than the broker's frame limit).

/// A close code and the reason sent with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket close {code}: {reason}")]
pub struct Violation {
    /// The close code (1002, 1007, 1009).
    pub code: u16,
    /// Why, for the close frame and the log.
    pub reason: &'static str,
}

/// Close codes.
pub mod code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Going away (the broker shuts down).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Data inconsistent with the message type (text that is not UTF-8).
    pub const INVALID_DATA: u16 = 1007;
    /// A message too big to process.
    pub const TOO_BIG: u16 = 1009;
}

const fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// What the decoder is in the middle of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a frame header into `head`.
    Header,
    /// Payload of a data frame.
    Data { remaining: u64, fin: bool },
    /// Payload of a control frame (collected in `control`).
    Control { opcode: u8, remaining: u8 },
    /// A close frame was received: nothing more is read.
    Closed,
}

/// A control frame the connection must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Answer with a pong carrying this payload.
    Ping(Vec<u8>),
    /// The client closed: answer with this code (its own, echoed, or 1000).
    Close(u16),
}

/// The decoder of one connection.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    head: [u8; 14],
    head_len: usize,
    mask: [u8; 4],
    /// Position in the mask of the next payload byte.
    mask_at: usize,
    control: Vec<u8>,
    /// The message in progress: `Some(true)` text, `Some(false)` binary.
    message: Option<bool>,
    message_bytes: u64,
    max_message: u64,
    utf8: Utf8Stream,
    /// Control frames to answer, oldest first (a ping replaced by a newer one).
    answers: Vec<Control>,
}

impl Decoder {
    /// A decoder refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            state: State::Header,
            head: [0; 14],
            head_len: 0,
            mask: [0; 4],
            mask_at: 0,
            control: Vec::new(),
            message: None,
            message_bytes: 0,
            max_message: max_message as u64,
            utf8: Utf8Stream::default(),
            answers: Vec::new(),
        }
    }

    /// Whether the client's close frame arrived (nothing after it is read).
    pub fn closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Control frames to answer since the last call.
    pub fn take_answers(&mut self) -> Vec<Control> {
        std::mem::take(&mut self.answers)
    }

    /// Decodes the raw bytes in `data` in place: the payload bytes they hold are moved to the
    /// front, unmasked; returns how many. Stops at a close frame.
    pub fn process(&mut self, data: &mut [u8]) -> Result<usize, Violation> {
        let mut at = 0;
        let mut out = 0;
        while at < data.len() {
            match self.state {
                State::Closed => break,
                State::Header => {
                    at += self.header_byte(data[at])?;
                }
                State::Data { remaining, fin } => {
                    let n = (remaining.min((data.len() - at) as u64)) as usize;
                    let piece = &mut data[at..at + n];
                    self.unmask(piece);
                    if self.message == Some(true) && !self.utf8.feed(piece) {
                        return Err(violation(code::INVALID_DATA, "a text message is not UTF-8"));
                    }
                    data.copy_within(at..at + n, out);
                    at += n;
                    out += n;
                    let remaining = remaining - n as u64;
                    self.state = State::Data { remaining, fin };
                    if remaining == 0 {
                        self.end_data_frame(fin)?;
                    }
                }
                State::Control { opcode, remaining } => {
                    let n = (remaining as usize).min(data.len() - at);
                    let start = self.control.len();
                    self.control.extend_from_slice(&data[at..at + n]);
                    let mut piece = std::mem::take(&mut self.control);
                    self.unmask(&mut piece[start..]);
                    self.control = piece;
                    at += n;
                    let remaining = remaining - n as u8;
                    self.state = State::Control { opcode, remaining };
                    if remaining == 0 {
                        self.end_control_frame(opcode)?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Takes one header byte; returns 1.
    fn header_byte(&mut self, byte: u8) -> Result<usize, Violation> {
        self.head[self.head_len] = byte;
        self.head_len += 1;
        if self.head_len < 2 {
            return Ok(1);
        }
        let (b0, b1) = (self.head[0], self.head[1]);
        let extended = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let masked = b1 & 0x80 != 0;
        let needed = 2 + extended + if masked { 4 } else { 0 };
        if self.head_len < needed {
            return Ok(1);
        }
        self.head_len = 0;
        if !masked {
            return Err(violation(code::PROTOCOL, "client frames must be masked"));
        }
        if b0 & 0x70 != 0 {
            return Err(violation(
                code::PROTOCOL,
                "reserved bits set (no extension was negotiated)",
            ));
        }
        let length = match extended {
            0 => u64::from(b1 & 0x7F),
            2 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            _ => {
                let mut eight = [0; 8];
                eight.copy_from_slice(&self.head[2..10]);
                u64::from_be_bytes(eight)
            }
        };
        if length >> 63 != 0 {
            return Err(violation(code::PROTOCOL, "frame length out of range"));
        }
        self.mask
            .copy_from_slice(&self.head[2 + extended..2 + extended + 4]);
        self.mask_at = 0;
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(violation(code::PROTOCOL, "fragmented control frame"));
                }
                if length > 125 {
                    return Err(violation(
                        code::PROTOCOL,
                        "control frame longer than 125 bytes",
                    ));
                }
                self.control.clear();
                self.state = State::Control {
                    opcode,
                    remaining: length as u8,
                };
                if length == 0 {
                    self.end_control_frame(opcode)?;
                }
            }
            OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                match (opcode, self.message) {
                    (OP_CONTINUATION, None) => {
                        return Err(violation(
                            code::PROTOCOL,
                            "continuation frame outside a message",
                        ))
                    }
                    (OP_CONTINUATION, Some(_)) => {}
                    (_, Some(_)) => {
                        return Err(violation(
                            code::PROTOCOL,
                            "a new message started before the previous one ended",
                        ))
                    }
                    (op, None) => {
                        self.message = Some(op == OP_TEXT);
                        self.message_bytes = 0;
                    }
                }
                self.message_bytes = self.message_bytes.saturating_add(length);
                if self.message_bytes > self.max_message {
                    return Err(violation(
                        code::TOO_BIG,
                        "message larger than the broker's frame limit",
                    ));
                }
                self.state = State::Data {
                    remaining: length,
                    fin,
                };
                if length == 0 {
                    self.end_data_frame(fin)?;
                }
            }
            _ => return Err(violation(code::PROTOCOL, "reserved opcode")),
        }
        Ok(1)
    }

    /// Unmasks `bytes` (continuing where the previous piece of the frame stopped), eight
    /// bytes at a time.
    fn unmask(&mut self, bytes: &mut [u8]) {
        let at = self.mask_at;
        let m = [
            self.mask[at],
            self.mask[(at + 1) & 3],
            self.mask[(at + 2) & 3],
            self.mask[(at + 3) & 3],
        ];
        let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
        let (words, rest) = bytes.as_chunks_mut::<8>();
        for word in words {
            *word = (u64::from_ne_bytes(*word) ^ wide).to_ne_bytes();
        }
        for (i, byte) in rest.iter_mut().enumerate() {
            *byte ^= m[i & 3];
        }
        self.mask_at = (at + bytes.len()) & 3;
    }

    fn end_data_frame(&mut self, fin: bool) -> Result<(), Violation> {
        self.state = State::Header;
        if fin {
            let text = self.message.take() == Some(true);
            if text && !self.utf8.finish() {
                return Err(violation(
                    code::INVALID_DATA,
                    "a text message ends inside a UTF-8 sequence",
                ));
            }
        }
        Ok(())
    }

    fn end_control_frame(&mut self, opcode: u8) -> Result<(), Violation> {
        self.state = State::Header;
        match opcode {
            OP_PING => {
                // Only the latest unanswered ping needs its pong (RFC 6455 5.5.3).
                self.answers.retain(|a| !matches!(a, Control::Ping(_)));
                self.answers
                    .push(Control::Ping(std::mem::take(&mut self.control)));
            }
            OP_PONG => {}
            _ => {
                let echo = close_code(&self.control)?;
                self.answers.push(Control::Close(echo));
                self.state = State::Closed;
            }
        }
        Ok(())
    }
}

/// The code to answer a close frame with (its own code, or 1000 when it has none).
fn close_code(payload: &[u8]) -> Result<u16, Violation> {
    match payload {
        [] => Ok(code::NORMAL),
        [_] => Err(violation(
            code::PROTOCOL,
            "close frame with a one-byte payload",
        )),
        [hi, lo, reason @ ..] => {
            let value = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(value, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(violation(code::PROTOCOL, "invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(violation(code::INVALID_DATA, "close reason is not UTF-8"));
            }
            Ok(value)
        }
    }
}

/// Validates UTF-8 arriving in pieces (a sequence may be split between them).
#[derive(Debug, Default)]
pub(super) struct Utf8Stream {
    carry: [u8; 4],
    len: usize,
}

impl Utf8Stream {
    /// False when the bytes so far cannot be UTF-8.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.len > 0 {
            let width = match self.carry[0] {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (width - self.len).min(bytes.len());
            self.carry[self.len..self.len + take].copy_from_slice(&bytes[..take]);
            self.len += take;
            bytes = &bytes[take..];
            if self.len < width {
                return incomplete_or_valid(&self.carry[..self.len]);
            }
            if std::str::from_utf8(&self.carry[..width]).is_err() {
                return false;
            }
            self.len = 0;
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(err) if err.error_len().is_some() => false,
            Err(err) => {
                let tail = &bytes[err.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.len = tail.len();
                true
            }
        }
    }

    /// False when the text ended inside a sequence.
    pub(super) fn finish(&mut self) -> bool {
        let complete = self.len == 0;
        self.len = 0;
        complete
    }
}

/// Whether `bytes` is valid UTF-8 or a valid beginning of a sequence.
fn incomplete_or_valid(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .err()
        .is_none_or(|err| err.error_len().is_none())
}

#[cfg(test)]
mod tests;
