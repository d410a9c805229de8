//! A small raw-STOMP client with a frame parser of its own (deliberately independent of the
//! broker's codec), shared by the end-to-end test binaries.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Default bound on every read that is expected to succeed.
pub const T: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);
/// Bound on waiting for the broker to close a connection.
pub const CLOSE_T: Duration = Duration::from_secs(5);

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A name no other test (or other call in the same test) uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V10,
    V11,
    V12,
}

pub const ALL_VERSIONS: [Version; 3] = [Version::V10, Version::V11, Version::V12];

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V10 => "1.0",
            Version::V11 => "1.1",
            Version::V12 => "1.2",
        }
    }

    pub fn parse(s: &str) -> Option<Version> {
        match s {
            "1.0" => Some(Version::V10),
            "1.1" => Some(Version::V11),
            "1.2" => Some(Version::V12),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A STOMP frame with decoded (unescaped) headers, in order, repeats kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.command)?;
        for (k, v) in &self.headers {
            write!(f, " [{k:?}: {v:?}]")?;
        }
        let body = String::from_utf8_lossy(&self.body);
        let shown: String = body.chars().take(200).collect();
        write!(f, " body({} bytes)={shown:?}", self.body.len())
    }
}

impl Frame {
    pub fn new(command: &str) -> Frame {
        Frame {
            command: command.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (kept in order, repeats allowed).
    pub fn h(mut self, name: &str, value: &str) -> Frame {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Frame {
        self.body = body.into();
        self
    }

    /// Sets the body and a matching `content-length` header.
    pub fn body_cl(self, body: impl Into<Vec<u8>>) -> Frame {
        let body = body.into();
        let len = body.len().to_string();
        self.h("content-length", &len).body(body)
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of a header, which must be present.
    pub fn must(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("header {name:?} missing in {self:?}"))
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or_else(|_| panic!("body is not UTF-8 in {self:?}"))
    }

    pub fn is(&self, command: &str) -> bool {
        self.command == command
    }

    /// Wire bytes for a session of `version` (CONNECT/STOMP are never escaped).
    pub fn encode(&self, version: Version) -> Vec<u8> {
        let escape =
            version >= Version::V11 && self.command != "CONNECT" && self.command != "STOMP";
        let mut out = Vec::with_capacity(64 + self.body.len());
        out.extend_from_slice(self.command.as_bytes());
        out.push(b'\n');
        for (k, v) in &self.headers {
            if escape {
                escape_into(&mut out, k, version);
                out.push(b':');
                escape_into(&mut out, v, version);
            } else {
                out.extend_from_slice(k.as_bytes());
                out.push(b':');
                out.extend_from_slice(v.as_bytes());
            }
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out.push(0);
        out
    }
}

fn escape_into(out: &mut Vec<u8>, s: &str, version: Version) {
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b':' => out.extend_from_slice(b"\\c"),
            b'\r' if version >= Version::V12 => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn unescape(raw: &[u8], version: Version) -> Result<String, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            let next = raw.get(i + 1).copied();
            match next {
                Some(b'\\') => out.push(b'\\'),
                Some(b'n') => out.push(b'\n'),
                Some(b'c') => out.push(b':'),
                Some(b'r') if version >= Version::V12 => out.push(b'\r'),
                _ => {
                    return Err(format!(
                        "undefined escape in header {:?} (version {version})",
                        String::from_utf8_lossy(raw)
                    ))
                }
            }
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| format!("header not UTF-8: {:?}", String::from_utf8_lossy(raw)))
}

/// Parses one frame from the front of `buf` (leading EOLs must already be skipped).
/// Returns the frame and the bytes consumed (including one optional EOL after the NUL),
/// `Ok(None)` when more bytes are needed.
pub fn parse_frame(buf: &[u8], version: Version) -> Result<Option<(Frame, usize)>, String> {
    let mut pos = 0;
    let mut lines: Vec<&[u8]> = Vec::new();
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let mut line = &buf[pos..pos + nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        pos += nl + 1;
        if line.is_empty() {
            if lines.is_empty() {
                // Still an EOL before the command: callers skip these, be lenient.
                continue;
            }
            break;
        }
        lines.push(line);
    }
    let command =
        String::from_utf8(lines[0].to_vec()).map_err(|_| "command not UTF-8".to_string())?;
    if command.bytes().any(|b| b == 0) {
        return Err(format!("NUL in command {command:?}"));
    }
    let raw_headers = command != "CONNECTED" && command != "CONNECT";
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| {
            format!(
                "header line without colon: {:?}",
                String::from_utf8_lossy(line)
            )
        })?;
        let (k, v) = (&line[..colon], &line[colon + 1..]);
        let (k, v) = if raw_headers && version >= Version::V11 {
            (unescape(k, version)?, unescape(v, version)?)
        } else {
            (
                String::from_utf8(k.to_vec()).map_err(|_| "header not UTF-8".to_string())?,
                String::from_utf8(v.to_vec()).map_err(|_| "header not UTF-8".to_string())?,
            )
        };
        headers.push((k, v));
    }
    let content_length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.clone());
    let (body, end) = match content_length {
        Some(cl) => {
            let n: usize = cl
                .parse()
                .map_err(|_| format!("bad content-length {cl:?}"))?;
            if buf.len() < pos + n + 1 {
                return Ok(None);
            }
            if buf[pos + n] != 0 {
                return Err(format!(
                    "content-length {n} body not followed by NUL in {command}"
                ));
            }
            (buf[pos..pos + n].to_vec(), pos + n + 1)
        }
        None => match buf[pos..].iter().position(|&b| b == 0) {
            Some(z) => (buf[pos..pos + z].to_vec(), pos + z + 1),
            None => return Ok(None),
        },
    };
    let mut consumed = end;
    if buf.get(consumed) == Some(&b'\n') {
        consumed += 1;
    } else if buf.get(consumed) == Some(&b'\r') && buf.get(consumed + 1) == Some(&b'\n') {
        consumed += 2;
    }
    Ok(Some((
        Frame {
            command,
            headers,
            body,
        },
        consumed,
    )))
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// The start of the `RecvError::Protocol` text when the peer closed in the middle of a frame.
pub const CLOSED_INSIDE_FRAME: &str = "connection closed inside a frame";

#[derive(Debug)]
pub enum RecvError {
    Timeout,
    Closed,
    Protocol(String),
}

/// A raw STOMP client over TCP.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    pos: usize,
    pending: VecDeque<Frame>,
    eof: bool,
    pub version: Version,
    /// Arrival times of heart-beat EOLs received between frames.
    pub beats: Vec<Instant>,
    /// The CONNECTED frame, when connected through the helpers.
    pub connected: Option<Frame>,
    receipt_seq: usize,
}

impl Client {
    /// A TCP connection with no STOMP traffic yet.
    pub async fn open(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(T, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect");
        Client::from_stream(stream)
    }

    /// A TCP connection with a small receive buffer (to play a slow consumer).
    pub async fn open_small_rcvbuf(addr: SocketAddr, bytes: u32) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = tokio::time::timeout(T, socket.connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect");
        Client::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).ok();
        Client {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
            pending: VecDeque::new(),
            eof: false,
            version: Version::V10,
            beats: Vec::new(),
            connected: None,
            receipt_seq: 0,
        }
    }

    /// The CONNECT frame a client of `version` sends (1.0: no accept-version).
    pub fn connect_frame(version: Version) -> Frame {
        let mut f = Frame::new("CONNECT");
        if version >= Version::V11 {
            f = f
                .h("accept-version", version.as_str())
                .h("host", "localhost");
        }
        f
    }

    /// Connects and negotiates exactly `version`.
    pub async fn connect(addr: SocketAddr, version: Version) -> Client {
        let (client, reply) = Client::connect_with(addr, Client::connect_frame(version)).await;
        assert!(reply.is("CONNECTED"), "expected CONNECTED, got {reply:?}");
        assert_eq!(client.version, version, "negotiated version in {reply:?}");
        client
    }

    /// Opens a connection, sends `connect` and returns the first reply (CONNECTED or ERROR).
    pub async fn connect_with(addr: SocketAddr, connect: Frame) -> (Client, Frame) {
        let mut c = Client::open(addr).await;
        c.write(&connect).await;
        let reply = c.recv().await;
        if reply.is("CONNECTED") {
            c.version = match reply.get("version") {
                Some(v) => {
                    Version::parse(v).unwrap_or_else(|| panic!("unknown version in {reply:?}"))
                }
                None => Version::V10,
            };
            c.connected = Some(reply.clone());
        }
        (c, reply)
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(T, self.stream.write_all(bytes))
            .await
            .expect("write timed out (is the broker reading?)")
            .expect("write failed");
    }

    /// Writes, tolerating a broker that already closed the socket.
    pub async fn write_raw_lossy(&mut self, bytes: &[u8]) {
        let _ = tokio::time::timeout(T, self.stream.write_all(bytes)).await;
    }

    pub async fn write(&mut self, frame: &Frame) {
        let bytes = frame.encode(self.version);
        self.write_raw(&bytes).await;
    }

    /// Writes several frames in one write call.
    pub async fn write_all(&mut self, frames: &[Frame]) {
        let mut bytes = Vec::new();
        for f in frames {
            bytes.extend_from_slice(&f.encode(self.version));
        }
        self.write_raw(&bytes).await;
    }

    /// Parses one buffered frame if a whole one is buffered.
    fn parse_buffered(&mut self) -> Result<Option<Frame>, String> {
        loop {
            let rest = &self.buf[self.pos..];
            if rest.first() == Some(&b'\n') {
                self.pos += 1;
                self.beats.push(Instant::now());
                continue;
            }
            if rest.starts_with(b"\r\n") {
                self.pos += 2;
                self.beats.push(Instant::now());
                continue;
            }
            break;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            return Ok(None);
        }
        match parse_frame(&self.buf[self.pos..], self.version)? {
            Some((frame, used)) => {
                self.pos += used;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Whether a complete frame is already buffered (no I/O).
    pub fn has_buffered_frame(&mut self) -> bool {
        if !self.pending.is_empty() {
            return true;
        }
        match self.parse_buffered() {
            Ok(Some(f)) => {
                self.pending.push_back(f);
                true
            }
            _ => false,
        }
    }

    /// Reads the next frame within `timeout`.
    pub async fn try_recv(&mut self, timeout: Duration) -> Result<Frame, RecvError> {
        if let Some(f) = self.pending.pop_front() {
            return Ok(f);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(f) = self.parse_buffered().map_err(RecvError::Protocol)? {
                return Ok(f);
            }
            if self.eof {
                return Err(RecvError::Closed);
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(RecvError::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.eof = true;
                    if !self.buf[self.pos..]
                        .iter()
                        .all(|&b| b == b'\n' || b == b'\r')
                    {
                        let rest = &self.buf[self.pos..];
                        return Err(RecvError::Protocol(format!(
                            "{CLOSED_INSIDE_FRAME}; {} unparsed bytes, starting {:?}",
                            rest.len(),
                            String::from_utf8_lossy(&rest[..rest.len().min(200)])
                        )));
                    }
                    return Err(RecvError::Closed);
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads the next frame (bounded by `T`); panics on timeout, close or a parse error.
    pub async fn recv(&mut self) -> Frame {
        self.recv_within(T).await
    }

    pub async fn recv_within(&mut self, timeout: Duration) -> Frame {
        match self.try_recv(timeout).await {
            Ok(f) => f,
            Err(e) => panic!("expected a frame within {timeout:?}, got {e:?}"),
        }
    }

    /// Reads the next frame and checks its command.
    pub async fn expect(&mut self, command: &str) -> Frame {
        let f = self.recv().await;
        assert_eq!(f.command, command, "expected {command}, got {f:?}");
        f
    }

    /// Expects a MESSAGE.
    pub async fn msg(&mut self) -> Frame {
        self.expect("MESSAGE").await
    }

    /// Reads `n` MESSAGEs.
    pub async fn msgs(&mut self, n: usize) -> Vec<Frame> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let f = match self.try_recv(T).await {
                Ok(f) => f,
                Err(e) => panic!("message {i} of {n}: {e:?} (got so far: {out:?})"),
            };
            assert!(
                f.is("MESSAGE"),
                "message {i} of {n}: expected MESSAGE, got {f:?}"
            );
            out.push(f);
        }
        out
    }

    /// Asserts that no frame arrives within `within` (heart-beats are fine).
    pub async fn expect_silence(&mut self, within: Duration) {
        match self.try_recv(within).await {
            Err(RecvError::Timeout) => {}
            Ok(f) => panic!("expected nothing within {within:?}, got {f:?}"),
            Err(e) => panic!("expected nothing within {within:?}, got {e:?}"),
        }
    }

    /// Reads until the broker closes the connection; returns the frames read on the way.
    pub async fn expect_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            match self.try_recv(CLOSE_T).await {
                Ok(f) => frames.push(f),
                Err(RecvError::Closed) => return frames,
                Err(RecvError::Timeout) => {
                    panic!("connection not closed within {CLOSE_T:?}; frames read: {frames:?}")
                }
                Err(RecvError::Protocol(e)) => {
                    panic!("protocol error while waiting for close: {e}")
                }
            }
        }
    }

    /// Expects an ERROR frame (with `message` and a text/plain content-type), then the close.
    pub async fn expect_error_close(&mut self) -> Frame {
        let f = match self.try_recv(T).await {
            Ok(f) => f,
            Err(e) => panic!("expected ERROR, got {e:?}"),
        };
        assert_error_frame(&f);
        let rest = self.expect_closed().await;
        assert!(rest.is_empty(), "frames after ERROR: {rest:?}");
        f
    }

    pub fn next_receipt(&mut self) -> String {
        self.receipt_seq += 1;
        format!("rcpt-{}", self.receipt_seq)
    }

    /// Sends `frame` with a fresh receipt and waits for its RECEIPT; frames arriving before it
    /// are kept for later `recv` calls. Panics on ERROR.
    pub async fn roundtrip(&mut self, frame: Frame) -> Frame {
        let id = self.next_receipt();
        self.write(&frame.h("receipt", &id)).await;
        self.wait_receipt(&id).await
    }

    /// Waits for RECEIPT `id`, keeping other frames for later.
    pub async fn wait_receipt(&mut self, id: &str) -> Frame {
        let mut held = Vec::new();
        let result = loop {
            let f = match self.try_recv(T).await {
                Ok(f) => f,
                Err(e) => panic!("waiting for RECEIPT {id}: {e:?}; other frames: {held:?}"),
            };
            if f.is("RECEIPT") && f.get("receipt-id") == Some(id) {
                break f;
            }
            assert!(!f.is("ERROR"), "waiting for RECEIPT {id}: got {f:?}");
            held.push(f);
        };
        for f in held.into_iter().rev() {
            self.pending.push_front(f);
        }
        result
    }

    /// A no-op round trip that proves every earlier frame was processed.
    pub async fn sync(&mut self) {
        let dest = format!("/topic/{}", unique("sync"));
        self.roundtrip(Frame::new("SEND").h("destination", &dest).body("sync"))
            .await;
    }

    pub async fn send(&mut self, dest: &str, body: &str) {
        self.write(&Frame::new("SEND").h("destination", dest).body(body))
            .await;
    }

    /// SEND with a receipt, waiting for it.
    pub async fn send_r(&mut self, dest: &str, body: &str) {
        self.roundtrip(Frame::new("SEND").h("destination", dest).body(body))
            .await;
    }

    /// SUBSCRIBE with a receipt, waiting for it (the subscription is then active).
    pub async fn subscribe(&mut self, id: &str, dest: &str, ack: &str) {
        self.roundtrip(
            Frame::new("SUBSCRIBE")
                .h("id", id)
                .h("destination", dest)
                .h("ack", ack),
        )
        .await;
    }

    /// SUBSCRIBE with extra headers, with a receipt.
    pub async fn subscribe_with(
        &mut self,
        id: &str,
        dest: &str,
        ack: &str,
        extra: &[(&str, &str)],
    ) {
        let mut f = Frame::new("SUBSCRIBE")
            .h("id", id)
            .h("destination", dest)
            .h("ack", ack);
        for (k, v) in extra {
            f = f.h(k, v);
        }
        self.roundtrip(f).await;
    }

    pub async fn unsubscribe(&mut self, id: &str) {
        self.roundtrip(Frame::new("UNSUBSCRIBE").h("id", id)).await;
    }

    /// The ACK (or NACK) frame for `msg` in this session's version.
    pub fn ack_frame(&self, command: &str, msg: &Frame) -> Frame {
        let f = Frame::new(command);
        match self.version {
            Version::V10 => f.h("message-id", msg.must("message-id")),
            Version::V11 => f
                .h("message-id", msg.must("message-id"))
                .h("subscription", msg.must("subscription")),
            Version::V12 => f.h("id", msg.must("ack")),
        }
    }

    /// ACKs `msg` and waits for the receipt.
    pub async fn ack(&mut self, msg: &Frame) {
        let f = self.ack_frame("ACK", msg);
        self.roundtrip(f).await;
    }

    pub async fn nack(&mut self, msg: &Frame) {
        let f = self.ack_frame("NACK", msg);
        self.roundtrip(f).await;
    }

    /// DISCONNECT with a receipt: the RECEIPT, then the close.
    pub async fn disconnect(mut self) {
        let id = self.next_receipt();
        self.write(&Frame::new("DISCONNECT").h("receipt", &id))
            .await;
        let frames = self.expect_closed().await;
        let last = frames
            .last()
            .unwrap_or_else(|| panic!("no RECEIPT for DISCONNECT"));
        assert!(
            last.is("RECEIPT") && last.get("receipt-id") == Some(id.as_str()),
            "DISCONNECT receipt must be the last frame: {frames:?}"
        );
    }

    /// Drops the socket without DISCONNECT (an abrupt close).
    pub fn drop_abruptly(self) {
        drop(self);
    }
}

// ---------------------------------------------------------------------------------------------
// Common checks and frames
// ---------------------------------------------------------------------------------------------

/// An ERROR frame as decided: a non-empty `message`, text/plain, content-length with a body.
pub fn assert_error_frame(f: &Frame) {
    assert!(f.is("ERROR"), "expected ERROR, got {f:?}");
    assert!(
        f.get("message").is_some_and(|m| !m.is_empty()),
        "ERROR without message: {f:?}"
    );
    let ct = f.get("content-type").unwrap_or("");
    assert!(
        ct.starts_with("text/plain"),
        "ERROR content-type should be text/plain: {f:?}"
    );
    if !f.body.is_empty() {
        assert!(
            f.get("content-length").is_some(),
            "ERROR with a body has content-length: {f:?}"
        );
    }
}

/// `s` is non-empty and made only of `[A-Za-z0-9._-]`.
pub fn is_safe_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A SEND with these extra headers and a body.
pub fn send_frame(dest: &str, headers: &[(&str, &str)], body: &str) -> Frame {
    let mut f = Frame::new("SEND").h("destination", dest);
    for (k, v) in headers {
        f = f.h(k, v);
    }
    f.body(body.as_bytes().to_vec())
}
