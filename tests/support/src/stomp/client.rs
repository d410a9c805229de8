//! The raw STOMP client over TCP: writes [`Frame`]s or arbitrary bytes, reads frames with
//! bounded waits (heart-beats recorded), and the round trips tests are made of (receipts,
//! subscribe, ack, disconnect). Also the shared timeouts and [`unique`] names.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{assert_error_frame, parse_frame, Frame, Version};

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

/// The start of the `RecvError::Protocol` text when the peer closed in the middle of a frame.
pub const CLOSED_INSIDE_FRAME: &str = "connection closed inside a frame";

/// Why [`Client::try_recv`] returned no frame.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing within the timeout.
    Timeout,
    /// The connection is closed (between frames).
    Closed,
    /// Bytes that are no frame, or a close inside a frame (see [`CLOSED_INSIDE_FRAME`]).
    Protocol(String),
}

/// A byte stream a [`Client`] runs on: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Io for S {}

/// A raw STOMP client over TCP (or any other byte stream, see [`Client::from_io`]).
pub struct Client {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    pos: usize,
    pending: VecDeque<Frame>,
    eof: bool,
    /// The session's version (frames are encoded and parsed for it).
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
        Client::from_io(stream)
    }

    /// A client on an established byte stream (e.g. a TLS connection), no STOMP traffic yet.
    pub fn from_io(stream: impl Io + 'static) -> Client {
        Client {
            stream: Box::new(stream),
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

    /// Writes these bytes (bounded by `T`); panics when the write fails.
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

    /// Writes `frame`, encoded for the session's version.
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

    /// Reads the next frame within `timeout`; panics on timeout, close or a parse error.
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

    /// A receipt id not used before on this connection.
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

    /// SEND without a receipt.
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

    /// UNSUBSCRIBE with a receipt, waiting for it.
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

    /// NACKs `msg` and waits for the receipt.
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
