//! TLS for tests: a throwaway public-key infrastructure made at run time ([`Pki`]: a CA, a
//! server certificate for 127.0.0.1, client certificates; another CA nobody trusts), written
//! as PEM files into a temporary directory, and a TLS client on the same rustls (ring provider)
//! the broker uses ([`connect`]), which hands back a STOMP [`Client`]. Nothing secret is ever
//! committed: every key exists only for one test run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use tokio::net::TcpStream;

use crate::stomp::{Client, T};

/// A certificate authority that signs certificates for a test.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    /// Its certificate, PEM.
    pub pem: String,
}

impl Authority {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Plugboard tests");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("self-sign CA").pem();
        Authority { params, key, pem }
    }

    /// A certificate for the broker: `CN=<cn>`, SANs 127.0.0.1 and localhost.
    pub fn server(&self, cn: &str) -> Issued {
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate with subject `CN=<cn>,O=<org>` and an e-mail SAN `<cn>@example.com`.
    pub fn client(&self, cn: &str, org: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(
            format!("{cn}@example.com").try_into().expect("ia5 string"),
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// The PEM files of one test: the CA clients trust and the broker verifies clients against
/// (`ca.pem`), the broker's certificate and key, a client certificate `CN=sensor-7,O=Example`
/// signed by the CA, and another CA with a server and a client certificate of its own.
pub struct Pki {
    /// Where the files are (removed on drop).
    pub dir: tempfile::TempDir,
    /// The trusted CA.
    pub ca: Authority,
    /// Another CA, trusted by nobody.
    pub rogue: Authority,
    /// `CN=sensor-7,O=Example`, signed by [`Pki::ca`].
    pub sensor: Issued,
    /// `CN=sensor-7,O=Example` again, but signed by [`Pki::rogue`].
    pub rogue_sensor: Issued,
}

impl Pki {
    /// A new CA, server certificate (`CN=plugboard-test-server`) and client certificates.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::new("Plugboard test CA");
        let rogue = Authority::new("Rogue CA");
        let server = ca.server("plugboard-test-server");
        let sensor = ca.client("sensor-7", "Example");
        let rogue_sensor = rogue.client("sensor-7", "Example");
        let pki = Pki {
            dir,
            ca,
            rogue,
            sensor,
            rogue_sensor,
        };
        std::fs::write(pki.path("ca.pem"), &pki.ca.pem).expect("write");
        std::fs::write(pki.path("rogue-ca.pem"), &pki.rogue.pem).expect("write");
        pki.install_server(&server);
        pki
    }

    /// A file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `issued` as the broker's `server.pem` and `server.key`, each by atomic rename
    /// (as a certificate renewal tool does).
    pub fn install_server(&self, issued: &Issued) {
        write_atomically(&self.path("server.key"), &issued.key_pem);
        write_atomically(&self.path("server.pem"), &issued.cert_pem);
    }

    /// The `[tls]` section for a broker on these files, listening on 127.0.0.1:0, with the
    /// extra lines `more` (e.g. `client_ca = ...`).
    pub fn tls_section(&self, more: &str) -> String {
        format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n{more}\n",
            self.path("server.pem"),
            self.path("server.key"),
        )
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).expect("write");
    std::fs::rename(&temp, path).expect("rename");
}

/// How a test client connects.
pub struct ClientOptions<'a> {
    /// PEM of the CA it trusts.
    pub trust: &'a str,
    /// The certificate it presents, if any.
    pub identity: Option<&'a Issued>,
    /// Only this TLS version (`None`: 1.2 and 1.3).
    pub version: Option<ProtocolVersion>,
}

impl<'a> ClientOptions<'a> {
    /// Trusting `trust`, no client certificate, any version.
    pub fn trusting(trust: &'a str) -> ClientOptions<'a> {
        ClientOptions {
            trust,
            identity: None,
            version: None,
        }
    }

    /// Presenting `identity`.
    pub fn with_identity(mut self, identity: &'a Issued) -> ClientOptions<'a> {
        self.identity = Some(identity);
        self
    }

    /// Only `version` (`ProtocolVersion::TLSv1_2` or `TLSv1_3`).
    pub fn only(mut self, version: ProtocolVersion) -> ClientOptions<'a> {
        self.version = Some(version);
        self
    }
}

/// A TLS connection to `addr` (server name 127.0.0.1) with the handshake done, as a STOMP
/// [`Client`] (nothing sent yet) and the negotiated TLS version and server certificate (DER);
/// `Err` with the reason when the handshake fails.
pub async fn connect(
    addr: SocketAddr,
    options: &ClientOptions<'_>,
) -> Result<(Client, ProtocolVersion, Vec<u8>), String> {
    let stream = open(addr, options).await?;
    let (_, connection) = stream.get_ref();
    let version = connection.protocol_version().expect("negotiated version");
    let server_cert = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((Client::from_io(stream), version, server_cert))
}

/// The TLS stream of [`connect`] itself, for a protocol on top of it (WSS).
pub async fn open(
    addr: SocketAddr,
    options: &ClientOptions<'_>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(options.trust.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let versions: Vec<&'static SupportedProtocolVersion> = match options.version {
        Some(ProtocolVersion::TLSv1_2) => vec![&rustls::version::TLS12],
        Some(ProtocolVersion::TLSv1_3) => vec![&rustls::version::TLS13],
        Some(other) => panic!("unsupported version {other:?}"),
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    };
    #[allow(deprecated)] // the ring provider, as the broker uses (see its listen/tls.rs)
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .expect("versions")
        .with_root_certificates(roots);
    let config = match options.identity {
        None => builder.with_no_client_auth(),
        Some(issued) => {
            let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert PEM");
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::time::timeout(T, TcpStream::connect(addr))
        .await
        .map_err(|_| "TCP connect timed out".to_string())?
        .map_err(|e| format!("TCP connect: {e}"))?;
    tcp.set_nodelay(true).ok();
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    tokio::time::timeout(T, connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))
}
