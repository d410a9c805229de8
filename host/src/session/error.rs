//! Session errors and the one place that turns them into ERROR frames.
//!
//! Client errors carry a clear, single-line `message` for the ERROR frame (and the offending
//! frame's `receipt`, echoed as `receipt-id`); they are logged at debug level since they are the
//! client's doing. I/O errors end the connection without an ERROR (the socket is gone).
//!
//! Every ERROR carries an `error-code` header: [`SessionError::code`] gives each error its
//! [`ErrorCode`] by an exhaustive match, so a new kind of error cannot be added without one.

use bytes::Bytes;

use crate::codec::{Command, DecodeError, Frame, ReadBufferError, ReadError};

use super::error_code::{self, ErrorCode};

/// Why a session ends abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The bytes did not form a valid frame.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// A well-formed frame the broker refuses.
    #[error("{message}")]
    Client {
        /// Why, for the ERROR's `error-code` header (and metrics).
        code: ErrorCode,
        /// A plugin's own code (`plugin.<name>.<code>`), sent instead of `code`.
        plugin_code: Option<Box<str>>,
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
    /// The login's credentials expired and the client did not re-authenticate before.
    #[error("credentials expired")]
    CredentialsExpired,
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

/// Shorthand for a client error with its code and message.
pub fn client_error(code: ErrorCode, message: impl Into<String>) -> SessionError {
    SessionError::Client {
        code,
        plugin_code: None,
        message: message.into(),
        headers: Vec::new(),
        receipt: None,
    }
}

/// A client error for a refusal of the plugin chain, `message` saying what was refused: its
/// code is the plugin's own when its reason carries one (`[code] rest`, then `rest` is the
/// reason shown), else the broker's code for how the plugin refused.
pub fn plugin_error(
    rejection: &crate::plugin::Rejection,
    message: impl FnOnce(&str) -> String,
) -> SessionError {
    SessionError::Client {
        code: error_code::rejection_code(rejection),
        plugin_code: error_code::plugin_code(rejection).map(String::into_boxed_str),
        message: message(rejection.message()),
        headers: Vec::new(),
        receipt: None,
    }
}

impl SessionError {
    /// The code of the ERROR this error sends; `None` when it sends none (the socket failed).
    /// A plugin's own code is in [`wire_code`](Self::wire_code); this is the broker's.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            SessionError::Decode(err) => error_code::decode_code(&err.kind),
            SessionError::Client { code, .. } => *code,
            SessionError::HeartbeatTimeout(_) => ErrorCode::FlowHeartbeatTimeout,
            SessionError::Idle(_) => ErrorCode::FlowIdle,
            SessionError::CredentialsExpired => ErrorCode::AuthExpired,
            SessionError::ConnectTimeout(_) => ErrorCode::ProtocolConnectTimeout,
            SessionError::Shutdown => ErrorCode::ServerShutdown,
            SessionError::ClosedByAdmin => ErrorCode::ServerAdminClose,
            SessionError::SlowConsumer => ErrorCode::FlowSlowConsumer,
            SessionError::ReadBuffer(err) => error_code::read_buffer_code(err),
            SessionError::Io(_) => return None,
        })
    }

    /// The ERROR's `error-code` value: a plugin's own code when it gave one, else
    /// [`code`](Self::code).
    pub fn wire_code(&self) -> Option<&str> {
        match self {
            SessionError::Client {
                plugin_code: Some(code),
                ..
            } => Some(code),
            _ => self.code().map(ErrorCode::as_str),
        }
    }

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
        let code = self.wire_code()?.to_owned();
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
            .header("error-code", code)
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
        let frame = client_error(ErrorCode::ProtocolInvalidHeader, "bad\nthing")
            .with_receipt(Some(&receipt))
            .to_frame()
            .unwrap();
        assert_eq!(frame.command, Command::Error);
        assert_eq!(frame.get(b"receipt-id").unwrap().as_ref(), b"r-1");
        assert_eq!(frame.get(b"message").unwrap().as_ref(), b"bad thing");
        assert_eq!(frame.get(b"content-type").unwrap().as_ref(), b"text/plain");
        assert_eq!(
            frame.get(b"error-code").unwrap().as_ref(),
            b"protocol.invalid-header"
        );
    }

    #[test]
    fn every_error_that_sends_a_frame_has_a_code() {
        let errors = [
            SessionError::HeartbeatTimeout(1),
            SessionError::Idle(1),
            SessionError::CredentialsExpired,
            SessionError::ConnectTimeout(1),
            SessionError::Shutdown,
            SessionError::ClosedByAdmin,
            SessionError::SlowConsumer,
            SessionError::ReadBuffer(ReadBufferError::OutOfMemory { bytes: 1 }),
        ];
        for err in errors {
            let frame = err.to_frame().unwrap();
            let code = err.code().unwrap().as_str();
            assert_eq!(frame.get(b"error-code").unwrap().as_ref(), code.as_bytes());
        }
        assert_eq!(
            SessionError::SlowConsumer.code(),
            Some(ErrorCode::FlowSlowConsumer)
        );
    }

    #[test]
    fn a_plugin_code_replaces_the_generic_one_on_the_wire_only() {
        use crate::plugin::{RejectCause, Rejection};
        let rejection = Rejection {
            plugin: "router".into(),
            cause: RejectCause::Verdict,
            reason: "[no-route] nothing for 'xx'".into(),
        };
        let err = plugin_error(&rejection, |reason| format!("message rejected: {reason}"));
        assert_eq!(err.code(), Some(ErrorCode::PluginRejected));
        let frame = err.to_frame().unwrap();
        assert_eq!(
            frame.get(b"error-code").unwrap().as_ref(),
            b"plugin.router.no-route"
        );
        assert_eq!(
            frame.get(b"message").unwrap().as_ref(),
            b"message rejected: nothing for 'xx'"
        );
    }

    #[test]
    fn io_errors_have_no_frame() {
        let err = SessionError::Io(std::io::Error::other("gone"));
        assert!(err.to_frame().is_none());
    }
}
