//! The STOMP wire codec: turning bytes into [`Frame`]s and back.
//!
//! The codec owns everything that is about bytes on the wire and nothing about meaning:
//!
//! - framing: command line, header lines, blank line, body, NUL; LF or CRLF line ends in every
//!   version; EOLs between frames (heart-beats) are skipped;
//! - `content-length`: the first occurrence is honoured on input; on output the encoder writes
//!   the correct one itself;
//! - STOMP 1.0's `name: value`: in 1.0 the spaces and tabs around header names and values are
//!   dropped as the line is split (no extra pass; 1.1+ keep every byte), and
//!   [`Frame::trim_header_blanks`] does the same to a CONNECT once it negotiated 1.0;
//! - header escaping per version (none in 1.0 and on CONNECT/STOMP/CONNECTED, `\n \c \\` in 1.1,
//!   plus `\r` in 1.2), decoded in a single pass;
//! - size limits ([`Limits`]), enforced before the bytes they bound are buffered, and the read
//!   buffer that grows only as far as they allow ([`FrameReader`]);
//! - the body rule: only SEND, MESSAGE and ERROR carry a body (dropped in 1.0, an error later).
//!
//! Which commands are allowed when, required headers, version negotiation and heart-beat timing
//! belong to the session. The decoder decodes every command it knows, client or server side.

mod decode;
mod encode;
mod escape;
mod frame;
mod reader;

pub use decode::{DecodeError, DecodeErrorKind, Decoder, Limits};
pub use encode::{
    encode_broker_header, encode_frame, encode_header, encode_with, FrameSink, LengthAt,
};
pub use escape::Escaping;
pub use frame::{is_server_owned, Command, Frame, Header, Version, SERVER_OWNED};
pub use reader::{FrameReader, ReadBufferError, ReadError};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
