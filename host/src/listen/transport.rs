//! What a listener hands the one session engine: a connection as a [`Transport`] (a byte
//! stream the session reads frames from, and a [`FrameWriter`] the writer task hands encoded
//! frames to) and a [`Peer`] saying who is on the other end. The session knows nothing of the
//! listener it came from beyond that.
//!
//! Plain TCP splits its socket without a lock ([`TcpStream::into_split`]); any other stream
//! (TLS) goes through [`ByteStream`], which splits it with [`tokio::io::split`]. A transport
//! with messages of its own (WebSocket) implements [`FrameWriter`] itself: it is given every
//! frame in order, and where each one ends.

use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::identity::{ClientCertificate, UpgradeCredentials};

/// Most buffers handed to one vectored write.
const MAX_IOV: usize = 64;

/// Which kind of listener accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// STOMP over plain TCP.
    Tcp,
    /// STOMP over TLS.
    Tls,
    /// STOMP over WebSocket.
    WebSocket,
    /// STOMP over WebSocket over TLS.
    SecureWebSocket,
}

impl ListenerKind {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Tls => "tls",
            ListenerKind::WebSocket => "ws",
            ListenerKind::SecureWebSocket => "wss",
        }
    }
}

/// What is known of the other end of a connection before it sends anything: what the
/// authenticate step (and an authenticate plugin) gets beside the CONNECT frame.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address (from the socket).
    pub address: SocketAddr,
    /// The listener that accepted it.
    pub listener: ListenerKind,
    /// The client certificate, when the connection is TLS and the client presented one the
    /// broker verified against its `client_ca` (never an unverified one).
    pub tls: Option<Arc<ClientCertificate>>,
    /// Credentials from a WebSocket HTTP upgrade, when it carried any.
    pub upgrade: Option<UpgradeCredentials>,
}

impl Peer {
    /// A client of `listener` at `address`, nothing else known yet.
    pub fn new(address: SocketAddr, listener: ListenerKind) -> Peer {
        Peer {
            address,
            listener,
            tls: None,
            upgrade: None,
        }
    }

    /// A client on plain TCP.
    pub fn tcp(address: SocketAddr) -> Peer {
        Peer::new(address, ListenerKind::Tcp)
    }

    /// With the verified client certificate of its TLS handshake.
    pub fn with_certificate(mut self, certificate: Option<Arc<ClientCertificate>>) -> Peer {
        self.tls = certificate;
        self
    }

    /// With the credentials of its WebSocket upgrade.
    pub fn with_upgrade(mut self, upgrade: Option<UpgradeCredentials>) -> Peer {
        self.upgrade = upgrade;
        self
    }
}

/// A connection the session engine can serve: split into the half frames are read from and
/// the half they are written to (by the writer task, concurrently with the reads).
pub trait Transport: Send + 'static {
    /// The byte stream frames are decoded from.
    type Reader: AsyncRead + Unpin + Send + 'static;
    /// Where encoded frames go.
    type Writer: FrameWriter;

    /// Splits the connection.
    fn split(self) -> (Self::Reader, Self::Writer);
}

/// The writing half of a connection, driven by the session's writer task.
pub trait FrameWriter: Send + 'static {
    /// Whether frames must be told apart: a transport with messages of its own (WebSocket)
    /// sends one message per frame. A byte stream leaves it false, and the writer then packs
    /// small frames together without marking where each ends.
    const MESSAGE_PER_FRAME: bool = false;

    /// Writes `chunks` in order and empties it. With [`Self::MESSAGE_PER_FRAME`],
    /// `frame_ends` are the indexes (into `chunks`, exclusive) where each frame ends, the last
    /// one equal to `chunks.len()`, and a heart-beat is a frame of its own (`"\n"`); without
    /// it, `frame_ends` is empty.
    fn write_frames(
        &mut self,
        chunks: &mut Vec<Bytes>,
        frame_ends: &[usize],
    ) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Ends the connection after the last frame (a FIN on TCP).
    fn close(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl Transport for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl FrameWriter for OwnedWriteHalf {
    async fn write_frames(
        &mut self,
        chunks: &mut Vec<Bytes>,
        _frame_ends: &[usize],
    ) -> std::io::Result<()> {
        write_vectored_all(self, chunks).await
    }

    async fn close(&mut self) -> std::io::Result<()> {
        self.shutdown().await
    }
}

/// Any other byte stream (TLS): split with [`tokio::io::split`].
#[derive(Debug)]
pub struct ByteStream<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Send + 'static> Transport for ByteStream<S> {
    type Reader = ReadHalf<S>;
    type Writer = ByteStreamWriter<S>;

    fn split(self) -> (ReadHalf<S>, ByteStreamWriter<S>) {
        let (read, write) = tokio::io::split(self.0);
        (read, ByteStreamWriter(write))
    }
}

/// The writing half of a [`ByteStream`].
#[derive(Debug)]
pub struct ByteStreamWriter<S>(WriteHalf<S>);

impl<S: AsyncRead + AsyncWrite + Send + 'static> FrameWriter for ByteStreamWriter<S> {
    async fn write_frames(
        &mut self,
        chunks: &mut Vec<Bytes>,
        _frame_ends: &[usize],
    ) -> std::io::Result<()> {
        write_vectored_all(&mut self.0, chunks).await
    }

    async fn close(&mut self) -> std::io::Result<()> {
        self.0.shutdown().await
    }
}

/// Writes every chunk, many per syscall, and empties `chunks`.
pub async fn write_vectored_all<W: AsyncWrite + Unpin>(
    socket: &mut W,
    chunks: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut start = 0;
    while start < chunks.len() {
        let end = (start + MAX_IOV).min(chunks.len());
        let slices: Vec<IoSlice<'_>> = chunks[start..end].iter().map(|c| IoSlice::new(c)).collect();
        let mut written = socket.write_vectored(&slices).await?;
        drop(slices);
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let chunk = &mut chunks[start];
            if written >= chunk.len() {
                written -= chunk.len();
                start += 1;
            } else {
                chunk.advance(written);
                written = 0;
            }
        }
    }
    chunks.clear();
    Ok(())
}
