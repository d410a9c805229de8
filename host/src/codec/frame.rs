//! The STOMP frame as the broker sees it: a command, an ordered header list that keeps repeats,
//! and a body. Header names and values are `Bytes` slices of the read buffer (no allocation per
//! header unless the value had to be unescaped).

use bytes::Bytes;

/// The STOMP protocol versions the broker speaks, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping, no NACK, a body on a frame that may not have one is
    /// dropped.
    V1_0,
    /// STOMP 1.1: header escaping (`\n \c \\`), NACK and heart-beats.
    V1_1,
    /// STOMP 1.2: 1.1 plus `\r` escaping; a bare CR in a header line is an error.
    V1_2,
}

impl Version {
    /// Every version we support, lowest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The wire spelling (`1.0`, `1.1`, `1.2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses the wire spelling; anything else is `None`.
    pub fn parse(s: &[u8]) -> Option<Version> {
        match s {
            b"1.0" => Some(Version::V1_0),
            b"1.1" => Some(Version::V1_1),
            b"1.2" => Some(Version::V1_2),
            _ => None,
        }
    }
}

/// Every STOMP command, client and server side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    // Client commands.
    /// Opens a session: version negotiation, credentials, heart-beats.
    Connect,
    /// CONNECT under the name 1.1 added for it (same meaning, headers never escaped).
    Stomp,
    /// Publishes a message to a destination; may carry a body.
    Send,
    /// Starts a subscription to a destination, under a client-chosen `id` (optional in 1.0).
    Subscribe,
    /// Ends a subscription, named by its `id` (or, in 1.0, its destination).
    Unsubscribe,
    /// Acknowledges a delivered message (client and client-individual ack modes).
    Ack,
    /// Refuses a delivered message (1.1 and later).
    Nack,
    /// Opens a transaction.
    Begin,
    /// Applies a transaction's SENDs, ACKs and NACKs.
    Commit,
    /// Discards a transaction's SENDs, ACKs and NACKs.
    Abort,
    /// Ends the session, optionally asking for a RECEIPT first.
    Disconnect,
    // Server commands.
    /// The broker's answer to CONNECT or STOMP.
    Connected,
    /// A message delivered to a subscription; may carry a body.
    Message,
    /// Confirms a client frame that had a `receipt` header.
    Receipt,
    /// Reports a fatal error before the broker closes the connection; may carry a body.
    Error,
}

impl Command {
    /// Every command, client commands first.
    pub const ALL: [Command; 15] = [
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

    /// The wire spelling. Commands are case-sensitive.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Command::Connect => b"CONNECT",
            Command::Stomp => b"STOMP",
            Command::Send => b"SEND",
            Command::Subscribe => b"SUBSCRIBE",
            Command::Unsubscribe => b"UNSUBSCRIBE",
            Command::Ack => b"ACK",
            Command::Nack => b"NACK",
            Command::Begin => b"BEGIN",
            Command::Commit => b"COMMIT",
            Command::Abort => b"ABORT",
            Command::Disconnect => b"DISCONNECT",
            Command::Connected => b"CONNECTED",
            Command::Message => b"MESSAGE",
            Command::Receipt => b"RECEIPT",
            Command::Error => b"ERROR",
        }
    }

    /// Parses a command line (without its EOL). Unknown or lowercase commands are `None`.
    pub fn parse(line: &[u8]) -> Option<Command> {
        Some(match line {
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"SEND" => Command::Send,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"ACK" => Command::Ack,
            b"NACK" => Command::Nack,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            b"CONNECTED" => Command::Connected,
            b"MESSAGE" => Command::Message,
            b"RECEIPT" => Command::Receipt,
            b"ERROR" => Command::Error,
            _ => return None,
        })
    }

    /// CONNECT, STOMP and CONNECTED headers are never escaped, in any version.
    pub fn is_never_escaped(self) -> bool {
        matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }

    /// Only SEND, MESSAGE and ERROR may carry a body.
    pub fn may_have_body(self) -> bool {
        matches!(self, Command::Send | Command::Message | Command::Error)
    }

    /// The wire spelling as text, for messages and logs.
    pub fn as_str(self) -> &'static str {
        // The spellings are ASCII.
        std::str::from_utf8(self.as_bytes()).unwrap_or("?")
    }
}

/// Headers that belong to the broker, not to a message: those it writes itself on a MESSAGE
/// (`destination`, `message-id`, `subscription`, `ack`, `redelivered`, `redelivery-count`,
/// `content-length`, a message group's `JMSXGroupFirstForConsumer`, listed in lower case as
/// every name here is compared ignoring case) and those that belong to one client frame (`receipt`, `receipt-id`,
/// `transaction`). A client's SEND does not pass them on, and a plugin cannot set them.
/// `content-type` is the message's own.
pub const SERVER_OWNED: [&str; 11] = [
    "destination",
    "message-id",
    "subscription",
    "ack",
    "redelivered",
    "redelivery-count",
    "content-length",
    "receipt",
    "receipt-id",
    "transaction",
    "jmsxgroupfirstforconsumer",
];

/// Whether `name` is one of [`SERVER_OWNED`], in any case (a reader that ignores case must not
/// take a message's `Content-Length` for the broker's).
pub fn is_server_owned(name: &[u8]) -> bool {
    // This runs for every header of every SEND: by length first (most names have none of
    // these lengths), then one branch-free comparison per candidate.
    match name.len() {
        3 => same_name(name, b"ack"),
        7 => same_name(name, b"receipt"),
        10 => same_name(name, b"message-id") || same_name(name, b"receipt-id"),
        11 => {
            same_name(name, b"destination")
                || same_name(name, b"redelivered")
                || same_name(name, b"transaction")
        }
        12 => same_name(name, b"subscription"),
        14 => same_name(name, b"content-length"),
        16 => same_name(name, b"redelivery-count"),
        25 => same_name(name, b"jmsxgroupfirstforconsumer"),
        _ => false,
    }
}

/// Whether `name` is `owned` (lower-case letters and `-`) in any case. A letter's case is its
/// 0x20 bit: setting it on the name's byte must give the letter (so only the letter and its
/// upper case match); a `-` is compared exactly.
fn same_name<const N: usize>(name: &[u8], owned: &[u8; N]) -> bool {
    let Ok(name) = <&[u8; N]>::try_from(name) else {
        return false;
    };
    let mut diff = 0;
    for (&b, &o) in name.iter().zip(owned) {
        let fold = (o & 0x40) >> 1; // 0x20 for a letter, 0 for '-'
        diff |= (b | fold) ^ o;
    }
    diff == 0
}

/// One header line, decoded (unescaped). Repeats are kept in order.
pub type Header = (Bytes, Bytes);

/// A decoded STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame asks for or reports.
    pub command: Command,
    /// The header lines in wire order, unescaped, repeats kept (see [`Frame::get`]).
    pub headers: Vec<Header>,
    /// The body without its terminating NUL; empty when the frame has none.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and an empty body (add them with [`Frame::header`] and
    /// [`Frame::body`]).
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header at the end (builder style).
    pub fn header(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Frame {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body (builder style).
    pub fn body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }

    /// The first value of a header: a repeated header keeps its first value for the broker.
    pub fn get(&self, name: &[u8]) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v)
    }

    /// The first value of a header as UTF-8 text, when it is valid UTF-8.
    pub fn get_str(&self, name: &[u8]) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Removes the spaces and tabs around every header name and value, as a STOMP 1.0 session
    /// reads them (`name: value`). The decoder does this itself for frames read in 1.0; this is
    /// for the CONNECT/STOMP frame, read before its version is known, once it negotiated 1.0.
    /// The trimmed headers stay slices of the same bytes (nothing is copied). A header whose
    /// name is only blanks keeps an empty name (no session header has one).
    pub fn trim_header_blanks(&mut self) {
        for (name, value) in &mut self.headers {
            *name = name.slice(blank_trimmed(name));
            *value = value.slice(blank_trimmed(value));
        }
    }
}

/// The part of `bytes` between its leading and trailing spaces and tabs, as a range.
pub(crate) fn blank_trimmed(bytes: &[u8]) -> std::ops::Range<usize> {
    let blank = |b: &u8| matches!(b, b' ' | b'\t');
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    start..end
}
