//! A WebSocket connection as the session engine's [`Transport`]: the reader yields the payload
//! bytes of data messages as one stream ([`decode`](super::decode)); the writer sends one
//! message per STOMP frame (text when the frame is valid UTF-8 and `message_type = "auto"`,
//! binary otherwise), heart-beats included (a `"\n"` message each).
//!
//! Control frames the reader must answer (a pong for a ping, the close handshake, a close with
//! 1002/1007/1009 after a violation) are written by a short task of their own through the
//! same lock as the writer's frames, so they never land inside a data message; at most one
//! pong waits (a newer ping replaces it), so a ping flood costs no memory. After a close frame
//! no data frame goes out.

use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::decode::{code, Control, Decoder, Utf8Stream};
use crate::listen::transport::write_vectored_all;
use crate::listen::{FrameWriter, Transport};

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PONG: u8 = 0xA;

/// Frames at least this large are written from their own buffers, behind a header of their
/// own; smaller ones are copied behind their header into one buffer.
const ZERO_COPY: usize = 8 * 1024;
/// A control frame is written within this long, or the connection is cut.
const CONTROL_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream a WebSocket runs on, split in two halves: plain TCP (without a lock) or TLS (WSS).
pub trait Halves: Send + 'static {
    /// The reading half.
    type Read: AsyncRead + Unpin + Send + 'static;
    /// The writing half.
    type Write: AsyncWrite + Unpin + Send + 'static;

    /// Splits the stream.
    fn halves(self) -> (Self::Read, Self::Write);
}

impl Halves for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    fn halves(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl Halves for tokio_rustls::server::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;

    fn halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// An upgraded connection, ready for a session.
#[derive(Debug)]
pub struct WsConnection<S> {
    stream: S,
    /// Bytes read with the upgrade request that belong to the WebSocket stream.
    rest: Bytes,
    max_message: usize,
    binary_only: bool,
}

impl<S> WsConnection<S> {
    /// Wraps an upgraded socket. `rest`: bytes already read past the request; messages larger
    /// than `max_message` bytes are refused (1009); `binary_only`: every frame goes out as a
    /// binary message.
    pub fn new(stream: S, rest: Bytes, max_message: usize, binary_only: bool) -> WsConnection<S> {
        WsConnection {
            stream,
            rest,
            max_message,
            binary_only,
        }
    }
}

impl<S: Halves> Transport for WsConnection<S> {
    type Reader = WsReader<S::Read, S::Write>;
    type Writer = WsWriter<S::Read, S::Write>;

    fn split(self) -> (Self::Reader, Self::Writer) {
        let (read, write) = self.stream.halves();
        let shared = Arc::new(Shared {
            socket: tokio::sync::Mutex::new(Socket {
                write,
                closed: false,
            }),
            pong: Mutex::new(None),
            close: Mutex::new(None),
            control_running: AtomicBool::new(false),
        });
        let reader = WsReader {
            socket: Some(read),
            rest: self.rest,
            decoder: Decoder::new(self.max_message),
            shared: shared.clone(),
            eof: false,
        };
        let writer = WsWriter {
            shared,
            binary_only: self.binary_only,
            heads: BytesMut::new(),
            out: Vec::new(),
        };
        (reader, writer)
    }
}

/// The socket's write half, and whether the close frame went out.
#[derive(Debug)]
struct Socket<W> {
    write: W,
    closed: bool,
}

impl<W: AsyncWrite + Unpin> Socket<W> {
    /// Sends the close frame, ends the output, and (after a violation) drains the input for a
    /// moment on a task of its own.
    async fn send_close<R: AsyncRead + Unpin + Send + 'static>(
        &mut self,
        close: Close<R>,
    ) -> std::io::Result<()> {
        self.closed = true;
        self.write
            .write_all(&close_frame(close.code, close.reason))
            .await?;
        let shut = self.write.shutdown().await;
        if let Some(read) = close.linger {
            tokio::spawn(discard(read));
        }
        shut
    }
}

/// What the reader and the writer share.
#[derive(Debug)]
struct Shared<R, W> {
    socket: tokio::sync::Mutex<Socket<W>>,
    /// The pong to send (the latest ping's payload).
    pong: Mutex<Option<Vec<u8>>>,
    /// The close to send on the reader's behalf.
    close: Mutex<Option<Close<R>>>,
    /// A control task is running.
    control_running: AtomicBool,
}

impl<R, W> Shared<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the control task unless one runs; it writes what is pending, then ends.
    fn kick(self: &Arc<Self>) {
        if self.control_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            loop {
                let write = async {
                    // What is pending is taken under the socket's lock, so that a close the
                    // writer sends (it takes a pending one the same way) is never overtaken.
                    let mut socket = shared.socket.lock().await;
                    let pong = Self::lock(&shared.pong).take();
                    let close = Self::lock(&shared.close).take();
                    if pong.is_none() && close.is_none() {
                        return Ok(false);
                    }
                    if socket.closed {
                        return Ok(true);
                    }
                    if let Some(pong) = pong {
                        socket
                            .write
                            .write_all(&control_frame(OP_PONG, &pong))
                            .await?;
                    }
                    if let Some(close) = close {
                        socket.send_close(close).await?;
                    }
                    Ok::<bool, std::io::Error>(true)
                };
                match tokio::time::timeout(CONTROL_WRITE_TIMEOUT, write).await {
                    Ok(Ok(true)) => continue,
                    Ok(Ok(false)) => {
                        shared.control_running.store(false, Ordering::Release);
                        // Something queued after the look and before the flag cleared: go on.
                        let pending = Self::lock(&shared.pong).is_some()
                            || Self::lock(&shared.close).is_some();
                        if pending && !shared.control_running.swap(true, Ordering::AcqRel) {
                            continue;
                        }
                        return;
                    }
                    // The peer does not read: the session's own write timeout ends it.
                    _ => {
                        shared.control_running.store(false, Ordering::Release);
                        return;
                    }
                }
            }
        });
    }

    fn send_pong(self: &Arc<Self>, payload: Vec<u8>) {
        *Self::lock(&self.pong) = Some(payload);
        self.kick();
    }

    fn send_close(self: &Arc<Self>, code: u16, reason: &'static str, linger: Option<R>) {
        *Self::lock(&self.close) = Some(Close {
            code,
            reason,
            linger,
        });
        self.kick();
    }
}

/// Reads and discards until EOF, [`LINGER`] or [`LINGER_BYTES`].
async fn discard<R: AsyncRead + Unpin>(mut read: R) {
    let mut scratch = vec![0u8; 16 * 1024];
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + LINGER;
    while total < LINGER_BYTES {
        match tokio::time::timeout_at(
            deadline,
            tokio::io::AsyncReadExt::read(&mut read, &mut scratch),
        )
        .await
        {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}

/// A close frame the reader asked for.
#[derive(Debug)]
struct Close<R> {
    code: u16,
    reason: &'static str,
    /// After a violation the reader gives up its socket: it is read and discarded for a
    /// moment after the close frame, so that the client's unread bytes do not make the kernel
    /// reset the connection and destroy the close frame before the client reads it.
    linger: Option<R>,
}

/// How long, and how much, a violating client is read after its close frame went out.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// The reading half: payload bytes of data messages, as one stream.
#[derive(Debug)]
pub struct WsReader<R, W> {
    /// `None` once given up after a violation.
    socket: Option<R>,
    rest: Bytes,
    decoder: Decoder,
    shared: Arc<Shared<R, W>>,
    /// The client's close frame arrived or the socket ended.
    eof: bool,
}

impl<R, W> AsyncRead for WsReader<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let start = buf.filled().len();
            if this.rest.has_remaining() {
                let n = this.rest.len().min(buf.remaining());
                buf.put_slice(&this.rest[..n]);
                this.rest.advance(n);
            } else {
                let Some(socket) = this.socket.as_mut() else {
                    return Poll::Ready(Ok(()));
                };
                ready!(Pin::new(socket).poll_read(cx, buf))?;
                if buf.filled().len() == start {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
            }
            let decoded = this.decoder.process(&mut buf.filled_mut()[start..]);
            for answer in this.decoder.take_answers() {
                match answer {
                    Control::Ping(payload) => this.shared.send_pong(payload),
                    Control::Close(code) => this.shared.send_close(code, "", None),
                }
            }
            match decoded {
                Ok(n) => {
                    buf.set_filled(start + n);
                    if this.decoder.closed() {
                        this.eof = true;
                    }
                    if n > 0 || this.eof {
                        return Poll::Ready(Ok(()));
                    }
                }
                Err(violation) => {
                    buf.set_filled(start);
                    this.eof = true;
                    this.shared
                        .send_close(violation.code, violation.reason, this.socket.take());
                    return Poll::Ready(Err(std::io::Error::new(
                        ErrorKind::InvalidData,
                        violation,
                    )));
                }
            }
        }
    }
}

/// The writing half: one message per STOMP frame.
#[derive(Debug)]
pub struct WsWriter<R, W> {
    shared: Arc<Shared<R, W>>,
    binary_only: bool,
    /// Message headers of the batch being written.
    heads: BytesMut,
    out: Vec<Bytes>,
}

impl<R, W> FrameWriter for WsWriter<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    const MESSAGE_PER_FRAME: bool = true;

    async fn write_frames(
        &mut self,
        chunks: &mut Vec<Bytes>,
        frame_ends: &[usize],
    ) -> std::io::Result<()> {
        self.out.clear();
        let mut start = 0;
        let ends = frame_ends
            .iter()
            .copied()
            // Anything after the last end (never, by the writer's contract) is one more message.
            .chain(
                (frame_ends.last().copied().unwrap_or(0) < chunks.len()).then_some(chunks.len()),
            );
        for end in ends {
            let frame = &chunks[start..end];
            start = end;
            let length: usize = frame.iter().map(Bytes::len).sum();
            let opcode = if !self.binary_only && is_utf8(frame) {
                OP_TEXT
            } else {
                OP_BINARY
            };
            put_header(&mut self.heads, opcode, length);
            if length < ZERO_COPY {
                // Small frames are copied behind their header: one buffer for many messages.
                for chunk in frame {
                    self.heads.extend_from_slice(chunk);
                }
            } else {
                self.out.push(self.heads.split().freeze());
                self.out.extend(frame.iter().cloned());
            }
        }
        if !self.heads.is_empty() {
            self.out.push(self.heads.split().freeze());
        }
        chunks.clear();
        let mut socket = self.shared.socket.lock().await;
        if socket.closed {
            self.out.clear();
            return Err(ErrorKind::BrokenPipe.into());
        }
        let written = write_vectored_all(&mut socket.write, &mut self.out).await;
        self.out.clear();
        written
    }

    async fn close(&mut self) -> std::io::Result<()> {
        let mut socket = self.shared.socket.lock().await;
        if socket.closed {
            return Ok(());
        }
        // A close the reader asked for (a violation, the client's close) wins over ours.
        let close = Shared::<R, W>::lock(&self.shared.close)
            .take()
            .unwrap_or(Close {
                code: code::NORMAL,
                reason: "",
                linger: None,
            });
        socket.send_close(close).await
    }
}

/// Whether the frame's chunks together are UTF-8.
fn is_utf8(chunks: &[Bytes]) -> bool {
    match chunks {
        [one] => std::str::from_utf8(one).is_ok(),
        _ => {
            let mut check = Utf8Stream::default();
            chunks.iter().all(|c| check.feed(c)) && check.finish()
        }
    }
}

/// A server (unmasked) frame header with FIN set.
fn put_header(out: &mut BytesMut, opcode: u8, length: usize) {
    out.put_u8(0x80 | opcode);
    if length < 126 {
        out.put_u8(length as u8);
    } else if length <= usize::from(u16::MAX) {
        out.put_u8(126);
        out.put_u16(length as u16);
    } else {
        out.put_u8(127);
        out.put_u64(length as u64);
    }
}

fn control_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mut out = BytesMut::with_capacity(2 + payload.len());
    put_header(&mut out, opcode, payload.len());
    out.extend_from_slice(payload);
    out.to_vec()
}

fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    // A close payload holds at most 125 bytes; reasons here are short ASCII.
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    control_frame(OP_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_text_only_when_their_chunks_together_are_utf8() {
        let chunks = |parts: &[&[u8]]| {
            parts
                .iter()
                .map(|p| Bytes::copy_from_slice(p))
                .collect::<Vec<_>>()
        };
        assert!(is_utf8(&chunks(&[b"MESSAGE\n\nh\xc3\xa9llo\0"])));
        // A two-byte sequence split between the head and the body chunk.
        assert!(is_utf8(&chunks(&[b"MESSAGE\n\nh\xc3", b"\xa9llo\0"])));
        assert!(is_utf8(&chunks(&[b"a\xf0\x9f", b"\x98", b"\x80z"])));
        assert!(!is_utf8(&chunks(&[b"MESSAGE\n\n\xff\0"])));
        assert!(!is_utf8(&chunks(&[b"a\xc3", b"(b"])));
        assert!(!is_utf8(&chunks(&[b"a\xc3"])));
        assert!(!is_utf8(&chunks(&[b"a", b"\xe2\x82"])));
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        let header = |len| {
            let mut out = BytesMut::new();
            put_header(&mut out, OP_TEXT, len);
            out.to_vec()
        };
        assert_eq!(header(1), [0x81, 1]);
        assert_eq!(header(125), [0x81, 125]);
        assert_eq!(header(126), [0x81, 126, 0, 126]);
        assert_eq!(header(65535), [0x81, 126, 0xff, 0xff]);
        assert_eq!(header(65536), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(close_frame(1002, "x"), [0x88, 3, 0x03, 0xea, b'x']);
    }
}
