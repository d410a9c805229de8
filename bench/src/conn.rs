//! One STOMP connection: CONNECT handshake, buffered frame writes and frame reads.
//!
//! Writes are encoded into a reusable scratch buffer and go through a 64 KiB `BufWriter`, so
//! they reach the socket only when the buffer fills or on an explicit [`Conn::flush`].

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

use crate::codec::{self, Frame};

/// How long the CONNECT and SUBSCRIBE handshakes may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Credentials and address shared by every connection of a run.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: String,
    pub login: Option<String>,
    pub passcode: Option<String>,
    /// STOMP over TLS, trusting this connector's roots (`--tls-ca`).
    pub tls: Option<Arc<tokio_rustls::TlsConnector>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("login", &self.login)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A TLS connector trusting the CA certificates of the PEM file `ca` (`--tls-ca`).
pub fn tls_connector(ca: &std::path::Path) -> anyhow::Result<Arc<tokio_rustls::TlsConnector>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("PEM in {}", ca.display()))?)?;
    }
    #[allow(deprecated)] // the ring provider, as the broker uses (no post-quantum key exchange)
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tokio_rustls::TlsConnector::from(Arc::new(config))))
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// A connected STOMP 1.2 session.
pub struct Conn {
    reader: Reader,
    rbuf: BytesMut,
    /// Over WebSocket: raw bytes read and not yet stripped of their message framing.
    ws_raw: Option<BytesMut>,
    writer: BufWriter<Writer>,
    scratch: Vec<u8>,
    /// Frames queued with [`Conn::send`] since the last flush.
    pub unflushed: usize,
}

impl Conn {
    /// Opens a TCP connection (TCP_NODELAY), sends CONNECT and waits for CONNECTED.
    /// An address `ws://HOST:PORT/PATH` speaks STOMP over WebSocket.
    pub async fn connect(ep: &Endpoint) -> anyhow::Result<Conn> {
        let ws = crate::ws::parse_url(&ep.addr);
        let addr = ws
            .as_ref()
            .map_or(ep.addr.as_str(), |(host, _)| host.as_str());
        let mut stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {} timed out", ep.addr))?
            .with_context(|| format!("connecting to {}", ep.addr))?;
        stream.set_nodelay(true)?;
        let (reader, writer): (Reader, Writer) = match &ep.tls {
            None => {
                if let Some((host, path)) = &ws {
                    tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        crate::ws::upgrade(&mut stream, host, path),
                    )
                    .await
                    .context("WebSocket upgrade timed out")??;
                }
                let (reader, writer) = stream.into_split();
                (Box::new(reader), Box::new(writer))
            }
            Some(connector) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .with_context(|| format!("TLS server name {host}"))?;
                let mut tls =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream))
                        .await
                        .context("TLS handshake timed out")?
                        .context("TLS handshake")?;
                // wss:// is ws:// with --tls-ca.
                if let Some((host, path)) = &ws {
                    tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        crate::ws::upgrade(&mut tls, host, path),
                    )
                    .await
                    .context("WebSocket upgrade timed out")??;
                }
                let (reader, writer) = tokio::io::split(tls);
                (Box::new(reader), Box::new(writer))
            }
        };
        let mut conn = Conn {
            reader,
            rbuf: BytesMut::with_capacity(128 * 1024),
            ws_raw: ws.map(|_| BytesMut::with_capacity(128 * 1024)),
            writer: BufWriter::with_capacity(64 * 1024, writer),
            scratch: Vec::with_capacity(4096),
            unflushed: 0,
        };
        let mut headers = vec![
            ("accept-version", "1.2"),
            ("host", "/"),
            ("heart-beat", "0,0"),
        ];
        if let Some(login) = &ep.login {
            headers.push(("login", login));
        }
        if let Some(passcode) = &ep.passcode {
            headers.push(("passcode", passcode));
        }
        conn.send("CONNECT", &headers, b"").await?;
        conn.flush().await?;
        let reply = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.read_frame())
            .await
            .context("no CONNECTED within 10 s")??;
        if reply.command != "CONNECTED" {
            bail!("CONNECT refused: {}", reply.describe());
        }
        if let Some(v) = reply.header("version") {
            if v != "1.2" {
                bail!("broker negotiated STOMP {v}, expected 1.2");
            }
        }
        Ok(conn)
    }

    /// Queues one frame in the write buffer (it may reach the socket if the buffer is full).
    pub async fn send(
        &mut self,
        command: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<()> {
        self.scratch.clear();
        codec::encode(&mut self.scratch, command, headers, body);
        if self.ws_raw.is_some() {
            let mut message = Vec::with_capacity(self.scratch.len() + 14);
            crate::ws::encode(&mut message, &self.scratch);
            self.scratch = message;
        }
        self.writer
            .write_all(&self.scratch)
            .await
            .with_context(|| format!("writing {command}"))?;
        self.unflushed += 1;
        Ok(())
    }

    /// Pushes every buffered frame to the socket.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.writer
            .flush()
            .await
            .context("flushing to the broker")?;
        self.unflushed = 0;
        Ok(())
    }

    /// A frame already in the read buffer, without touching the socket.
    pub fn buffered_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        codec::decode(&mut self.rbuf)
    }

    /// Reads from the socket until one whole frame is available. Cancel-safe: bytes read
    /// before a cancellation stay in the buffer.
    pub async fn read_frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(frame) = codec::decode(&mut self.rbuf)? {
                return Ok(frame);
            }
            let buf = self.ws_raw.as_mut().unwrap_or(&mut self.rbuf);
            buf.reserve(64 * 1024);
            let n = self
                .reader
                .read_buf(buf)
                .await
                .context("reading from the broker")?;
            if n == 0 {
                bail!("broker closed the connection");
            }
            if let Some(raw) = &mut self.ws_raw {
                crate::ws::decode(raw, &mut self.rbuf)?;
            }
        }
    }

    /// Reads frames until the RECEIPT for `id`; anything else but MESSAGE is an error
    /// (MESSAGE frames are handed to `on_message`).
    pub async fn await_receipt(
        &mut self,
        id: &str,
        mut on_message: impl FnMut(Frame),
    ) -> anyhow::Result<()> {
        loop {
            let frame = self.read_frame().await?;
            match frame.command.as_str() {
                "RECEIPT" if frame.header("receipt-id") == Some(id) => return Ok(()),
                "MESSAGE" => on_message(frame),
                _ => bail!("waiting for RECEIPT {id}, got {}", frame.describe()),
            }
        }
    }

    /// After a failure, looks (for up to a second) for an ERROR frame the broker may have sent
    /// before closing, which explains the failure better than a broken pipe.
    pub async fn find_error(&mut self) -> Option<String> {
        let look = async {
            loop {
                match self.read_frame().await {
                    Ok(frame) if frame.command == "ERROR" => return Some(frame.describe()),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(1), look)
            .await
            .ok()
            .flatten()
    }

    /// Sends DISCONNECT with a receipt and waits (briefly) for it; errors are ignored since the
    /// run's results are already known.
    pub async fn disconnect(mut self) {
        let polite = async {
            self.send("DISCONNECT", &[("receipt", "bye")], b"").await?;
            self.flush().await?;
            self.await_receipt("bye", |_| {}).await
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), polite).await;
    }
}

/// The SUBSCRIBE handshake, with a receipt: returns once the subscription is known active,
/// with any MESSAGE frames that arrived before the RECEIPT (left over from earlier runs).
/// A non-zero `prefetch` is sent under both names brokers use for the window:
/// `prefetch-count` (RabbitMQ) and `activemq.prefetchSize` (ActiveMQ); `extra` headers follow.
pub async fn subscribe(
    conn: &mut Conn,
    destination: &str,
    ack: &str,
    prefetch: u64,
    extra: &[(String, String)],
) -> anyhow::Result<Vec<Frame>> {
    let prefetch = prefetch.to_string();
    let mut headers = vec![
        ("id", "0"),
        ("destination", destination),
        ("ack", ack),
        ("receipt", "sub"),
    ];
    if prefetch != "0" {
        headers.push(("prefetch-count", &prefetch));
        headers.push(("activemq.prefetchSize", &prefetch));
    }
    headers.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    conn.send("SUBSCRIBE", &headers, b"").await?;
    conn.flush().await?;
    let mut early = Vec::new();
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        conn.await_receipt("sub", |f| early.push(f)),
    )
    .await
    .context("no RECEIPT for SUBSCRIBE within 10 s")??;
    Ok(early)
}
