//! Session errors and the one place that turns them into ERROR frames.
//!
//! Client errors carry a clear, single-line `message` for the ERROR frame (and the offending
//! frame's `receipt`, echoed as `receipt-id`); they are logged at debug level since they are the
//! client's doing. I/O errors end the connection without an ERROR (the socket is gone).

use bytes::Bytes;

use crate::codec::{Command, DecodeError, Frame, ReadBufferError, ReadError};

/// Why a session ends abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The bytes did not form a valid frame.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// A well-formed frame the broker refuses.
    #[error("{message}")]
    Client {
        /// The ERROR frame's `message` header: one line, meant for the client.
        message: String,
        /// Extra ERROR headers (e.g. `version` on a failed negotiation).
        headers: Vec<(Bytes, Bytes)>,
        /// The offending frame's `receipt`, echoed as the ERROR's `receipt-id`.
        receipt: Option<Bytes>,
    },
    /// The client stopped heart-beating.
    #[error("no heart-beat from the client for {0} ms: connection considered dead")]
    HeartbeatTimeout(u64),
    /// The connection held no subscription and sent nothing for the idle limit.
    #[error("idle: nothing received for {0} ms and no subscription held: connection closed")]
    Idle(u64),
    /// The client did not send CONNECT in time.
    #[error("no CONNECT frame within {0} ms")]
    ConnectTimeout(u64),
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    Shutdown,
    /// An administrator closed the connection (the console's "close connection" action).
    #[error("closed by the administrator")]
    ClosedByAdmin,
    /// The connection could not keep up with its topic deliveries.
    #[error("slow consumer: the connection's outbound queue is full")]
    SlowConsumer,
    /// The read buffer could not take the frame (out of memory, or too large at once).
    #[error("{0}")]
    ReadBuffer(#[from] ReadBufferError),
    /// The socket failed; no ERROR can be sent.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ReadError> for SessionError {
    fn from(err: ReadError) -> SessionError {
        match err {
            ReadError::Buffer(err) => SessionError::ReadBuffer(err),
            ReadError::Io(err) => SessionError::Io(err),
        }
    }
}

/// Shorthand for a client error with a message.
pub fn client_error(message: impl Into<String>) -> SessionError {
    SessionError::Client {
        message: message.into(),
        headers: Vec::new(),
        receipt: None,
    }
}

impl SessionError {
    /// Attaches the offending frame's `receipt` so the ERROR carries `receipt-id`.
    pub fn with_receipt(mut self, receipt: Option<&Bytes>) -> SessionError {
        if let SessionError::Client { receipt: slot, .. } = &mut self {
            if slot.is_none() {
                *slot = receipt.cloned();
            }
        }
        self
    }

    /// The ERROR frame for this error, or `None` when the socket cannot take one.
    pub fn to_frame(&self) -> Option<Frame> {
        let (receipt, extra): (Option<&Bytes>, &[(Bytes, Bytes)]) = match self {
            SessionError::Io(_) => return None,
            SessionError::Decode(err) => (err.receipt.as_ref(), &[]),
            SessionError::Client {
                receipt, headers, ..
            } => (receipt.as_ref(), headers),
            _ => (None, &[]),
        };
        let message = single_line(&self.to_string());
        let mut frame = Frame::new(Command::Error);
        if let Some(receipt) = receipt {
            frame = frame.header("receipt-id", receipt.clone());
        }
        for (name, value) in extra {
            frame = frame.header(name.clone(), value.clone());
        }
        frame = frame
            .header("message", message.clone())
            .header("content-type", "text/plain");
        Some(frame.body(message + "\n"))
    }
}

/// ERROR `message` values stay on one line whatever the cause text holds.
fn single_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_error_carries_receipt_and_message() {
        let receipt = Bytes::from_static(b"r-1");
        let frame = client_error("bad\nthing")
            .with_receipt(Some(&receipt))
            .to_frame()
            .unwrap();
        assert_eq!(frame.command, Command::Error);
        assert_eq!(frame.get(b"receipt-id").unwrap().as_ref(), b"r-1");
        assert_eq!(frame.get(b"message").unwrap().as_ref(), b"bad thing");
        assert_eq!(frame.get(b"content-type").unwrap().as_ref(), b"text/plain");
    }

    #[test]
    fn io_errors_have_no_frame() {
        let err = SessionError::Io(std::io::Error::other("gone"));
        assert!(err.to_frame().is_none());
    }
}
