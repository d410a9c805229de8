//! STOMP over TLS (`[tls]`): rustls on the `ring` provider, TLS 1.2 and 1.3, certificates and
//! keys read from PEM files, optional mutual TLS against `client_ca`.
//!
//! [`Acceptor`] is the broker's TLS state (in [`Broker::tls`](crate::broker::Broker::tls)): the
//! server configuration in force, swapped whole by [`Acceptor::reload`] (a renewed certificate
//! applies to new handshakes; open connections keep theirs; a bad new one is refused and the
//! old one kept), and [`Acceptor::accept`], the handshake with its timeout, which the TLS
//! listener here and the WebSocket listener's `wss` use alike.
//!
//! Hostile input: the handshake runs in the connection's own task, holding a connection slot
//! and an address slot (see [`super::accept`]), and must finish within
//! `tls.handshake_timeout_ms`; a failure or timeout is counted, logged at debug and closes the
//! connection. rustls bounds what a peer may send during the handshake (message sizes,
//! certificate chain length).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tracing::{debug, error, info};

use super::accept::{self, Accepted, Gate, Handler};
use super::{ByteStream, ClientCertificate, ListenerKind, Peer};
use crate::broker::Broker;
use crate::config::{ClientAuth, Config};

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or held no usable PEM item.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file (`certificate`, `key`, `client CA`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the combination (e.g. a key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Why a handshake did not give a connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not finished within `tls.handshake_timeout_ms`.
    #[error("TLS handshake timed out")]
    TimedOut,
    /// The peer spoke no TLS, offered nothing in common, or presented a certificate that did
    /// not verify (or none when one is required).
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
    /// The client certificate verified but its subject could not be read.
    #[error(transparent)]
    Certificate(#[from] super::identity::CertificateError),
}

/// Handshake counters (for status output and tests).
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Handshakes completed.
    pub handshakes: AtomicU64,
    /// Handshakes that failed (bad input, no common parameters, certificate refused).
    pub handshake_failures: AtomicU64,
    /// Handshakes not completed in time.
    pub handshake_timeouts: AtomicU64,
    /// Certificate reloads that took effect.
    pub reloads: AtomicU64,
    /// Certificate reloads refused (the previous configuration kept serving).
    pub reload_failures: AtomicU64,
}

/// The files a TLS configuration is read from, resolved against the config file's directory.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_auth: ClientAuth,
}

/// A loaded server configuration and a digest of the files it came from.
struct Loaded {
    config: Arc<ServerConfig>,
    digest: [u8; 32],
}

/// The broker's TLS state: the configuration in force (swapped on reload) and the handshake.
pub struct Acceptor {
    files: Files,
    current: ArcSwap<Loaded>,
    handshake_timeout: Duration,
    /// Handshake and reload counters.
    pub stats: TlsStats,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// The TLS state `config` asks for: `None` without a `[tls]` listener or a WSS listener
    /// (`[websocket] tls_listen`, on the same certificates); an error when its files do not load.
    pub fn from_config(config: &Config) -> Result<Option<Arc<Acceptor>>, TlsError> {
        let tls = &config.tls;
        if tls.listen.is_none() && config.websocket.tls_listen.is_none() {
            return Ok(None);
        }
        let resolve = |path: &Option<PathBuf>| path.as_ref().map(|p| config.base_dir.join(p));
        let missing = |what| TlsError::Config(format!("[tls] listen needs `{what}`"));
        let files = Files {
            cert: resolve(&tls.cert).ok_or_else(|| missing("cert"))?,
            key: resolve(&tls.key).ok_or_else(|| missing("key"))?,
            client_ca: resolve(&tls.client_ca),
            client_auth: tls.client_auth,
        };
        let loaded = load(&files)?;
        Ok(Some(Arc::new(Acceptor {
            files,
            current: ArcSwap::from_pointee(loaded),
            handshake_timeout: Duration::from_millis(tls.handshake_timeout_ms),
            stats: TlsStats::default(),
        })))
    }

    /// The files a reload re-reads (for the file watcher).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.files.cert.clone(), self.files.key.clone()];
        files.extend(self.files.client_ca.clone());
        files
    }

    /// Re-reads the certificate, key and client CA files: when they changed and load, new
    /// handshakes use them (`Ok(true)`); when they fail to load, the configuration in force
    /// keeps serving and the error is logged and returned. Open connections are not touched.
    pub fn reload(&self) -> Result<bool, TlsError> {
        match load(&self.files) {
            Ok(loaded) if loaded.digest == self.current.load().digest => Ok(false),
            Ok(loaded) => {
                self.current.store(Arc::new(loaded));
                self.stats.reloads.fetch_add(1, Relaxed);
                info!("TLS certificate reloaded: new connections use it");
                Ok(true)
            }
            Err(err) => {
                self.stats.reload_failures.fetch_add(1, Relaxed);
                error!(%err, "TLS certificate reload refused; the previous certificate keeps serving");
                Err(err)
            }
        }
    }

    /// Runs the server side of a TLS handshake on `tcp` with the configuration in force,
    /// within the handshake timeout. Counts the outcome; a failure is logged at debug.
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load().config.clone());
        let outcome = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await
        {
            Err(_) => Err(HandshakeError::TimedOut),
            Ok(Err(err)) => Err(HandshakeError::Failed(err)),
            Ok(Ok(stream)) => Ok(stream),
        };
        match &outcome {
            Ok(_) => self.stats.handshakes.fetch_add(1, Relaxed),
            Err(HandshakeError::TimedOut) => self.stats.handshake_timeouts.fetch_add(1, Relaxed),
            Err(_) => self.stats.handshake_failures.fetch_add(1, Relaxed),
        };
        if let Err(err) = &outcome {
            debug!(%err, "TLS handshake did not complete");
        }
        outcome
    }
}

/// The verified client certificate of a completed handshake, when the client presented one
/// (rustls only completes a handshake whose client certificate verified against `client_ca`).
pub fn client_certificate(
    stream: &TlsStream<TcpStream>,
) -> Result<Option<Arc<ClientCertificate>>, HandshakeError> {
    let (_, connection) = stream.get_ref();
    match connection
        .peer_certificates()
        .and_then(|chain| chain.first())
    {
        None => Ok(None),
        Some(leaf) => Ok(Some(Arc::new(ClientCertificate::from_der(leaf)?))),
    }
}

/// Reads the files and builds a server configuration.
fn load(files: &Files) -> Result<Loaded, TlsError> {
    let mut digest = Sha256::new();
    let certs = read_certificates("certificate", &files.cert, &mut digest)?;
    let key_pem = read("key", &files.key, &mut digest)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
        what: "key",
        path: files.key.clone(),
        reason: format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    let provider = Arc::new(ring_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certificates("client CA", path, &mut digest)? {
                roots.add(ca).map_err(|e| TlsError::File {
                    what: "client CA",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match files.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Config(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
    Ok(Loaded {
        config: Arc::new(config),
        digest: digest.finalize().into(),
    })
}

/// rustls's `ring` provider: TLS 1.2/1.3 suites, X25519 and the NIST curves. Deprecated since
/// rustls 0.23.48 only because ring lacks the post-quantum hybrid key exchange
/// (X25519MLKEM768) that the aws-lc-rs provider has; that provider needs a C build of aws-lc,
/// which this project avoids (docs/tls.md).
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Largest PEM file read (a certificate chain or CA bundle is a few KiB to a few hundred).
const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

fn read(what: &'static str, path: &Path, digest: &mut Sha256) -> Result<Vec<u8>, TlsError> {
    let fail = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .len();
    if size > MAX_PEM_BYTES {
        return Err(fail(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    digest.update((bytes.len() as u64).to_le_bytes());
    digest.update(&bytes);
    Ok(bytes)
}

fn read_certificates(
    what: &'static str,
    path: &Path,
    digest: &mut Sha256,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path, digest)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            what,
            path: path.to_path_buf(),
            reason: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            what,
            path: path.to_path_buf(),
            reason: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

/// Accepts STOMP-over-TLS connections until `shutdown` fires, then drains.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
    gate: Arc<Gate>,
    acceptor: Arc<Acceptor>,
) -> std::io::Result<()> {
    accept::serve(listener, broker, shutdown, gate, Tls(acceptor)).await
}

/// Runs the handshake, then a session on the TLS stream.
#[derive(Clone)]
struct Tls(Arc<Acceptor>);

impl Handler for Tls {
    async fn serve(self, c: Accepted) {
        let _ = c.stream.set_nodelay(true);
        let Ok(stream) = self.0.accept(c.stream).await else {
            return;
        };
        let certificate = match client_certificate(&stream) {
            Ok(certificate) => certificate,
            Err(err) => {
                self.0.stats.handshake_failures.fetch_add(1, Relaxed);
                debug!(%err, "TLS connection closed");
                return;
            }
        };
        let peer = Peer::new(c.address, ListenerKind::Tls).with_certificate(certificate);
        crate::session::serve(ByteStream(stream), peer, c.broker, c.number, c.shutdown).await;
    }

    /// A plain-text ERROR would be garbage to a TLS client, and a handshake costs more than
    /// the refusal is worth: the connection is just closed.
    async fn refuse(self, stream: TcpStream, message: String) {
        debug!(%message, "TLS connection refused");
        drop(stream);
    }
}
