//! How an edge logs in to NATS and secures its connection: `[cluster]`'s user and password,
//! token, credentials file or nkey seed file, and `[cluster.tls]`, turned into async-nats'
//! connect options. Every file is read and checked here, at start, so that a missing or
//! malformed one is refused with its setting's name before any connection is tried (and no
//! secret reaches an error message). Also keeps the last error a NATS server reported (a
//! permissions violation, an authorization failure) so that a start that fails says why, and
//! joins a vhost's streams patiently ([`Cluster::join_vhost`]).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerError};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use super::config::{ClusterConfig, NatsTls};
use super::{Cluster, VhostLink};

/// The largest credentials, seed, certificate or key file read (they are a few KiB).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The pause before a vhost's streams are asked for again at start.
const JOIN_RETRY_PAUSE: Duration = Duration::from_millis(500);

impl Cluster {
    /// [`Cluster::vhost`], asked again while it fails within `connect_timeout_ms` (JetStream
    /// answers nothing while a new NATS cluster elects its meta leader, or while it is busy
    /// with edges that start together); after that, or at once when the NATS server reported
    /// a permissions violation, the failure with what the server said.
    pub async fn join_vhost(
        &self,
        vhost: &str,
        queues: &[crate::config::QueuePolicy],
    ) -> anyhow::Result<Arc<VhostLink>> {
        let deadline = tokio::time::Instant::now() + self.config.connect_timeout();
        loop {
            let err = match self.vhost(vhost, queues).await {
                Ok(link) => return Ok(link),
                Err(err) => err,
            };
            let refused = self
                .server_errors
                .last()
                .is_some_and(|said| said.contains("Permissions Violation"));
            if refused || tokio::time::Instant::now() + JOIN_RETRY_PAUSE >= deadline {
                return Err(anyhow::anyhow!(self
                    .server_errors
                    .explain(format!("{err:#}"))));
            }
            info!(error = %format!("{err:#}"), "cluster mode: JetStream not ready yet; asking again");
            tokio::time::sleep(JOIN_RETRY_PAUSE).await;
        }
    }
}

/// The last error a NATS server sent this edge's client, for error messages at start.
#[derive(Debug, Default)]
pub(crate) struct ServerErrors {
    last: Mutex<Option<String>>,
}

impl ServerErrors {
    /// What the server said last, if it said anything.
    pub(crate) fn last(&self) -> Option<String> {
        self.last.lock().ok().and_then(|last| last.clone())
    }

    /// `text` with what the server said last, if anything.
    pub(crate) fn explain(&self, text: String) -> String {
        match self.last() {
            Some(said) => format!("{text}; the NATS server said: {said}"),
            None => text,
        }
    }

    fn record(&self, error: &ServerError) {
        let text = match error {
            ServerError::AuthorizationViolation => "authorization violation".to_string(),
            ServerError::SlowConsumer(_) => return,
            ServerError::Other(text) => crate::text::shown(text.as_bytes()),
        };
        warn!(error = %text, "cluster mode: the NATS server reported an error");
        if let Ok(mut last) = self.last.lock() {
            *last = Some(text);
        }
    }
}

/// The connect options of `config` (paths relative to `base_dir`): login, TLS, and a record
/// of the server's errors in `errors`. Fails, naming the setting, when a file is missing,
/// too large or malformed.
pub(crate) fn options(
    config: &ClusterConfig,
    base_dir: &Path,
    errors: Arc<ServerErrors>,
) -> anyhow::Result<ConnectOptions> {
    let mut options = ConnectOptions::new().event_callback(move |event| {
        let errors = errors.clone();
        async move {
            if let Event::ServerError(error) = event {
                errors.record(&error);
            }
        }
    });
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(creds) = &config.creds {
        let path = base_dir.join(creds);
        let text = read_text("creds", &path)?;
        options = options.credentials(&text).map_err(|err| {
            anyhow::anyhow!(
                "[cluster] creds {}: not a NATS credentials file (a user JWT and its nkey seed): {err}",
                path.display()
            )
        })?;
    }
    if let Some(nkey) = &config.nkey {
        let path = base_dir.join(nkey);
        options = options.nkey(read_seed(&path)?);
    }
    if let Some(tls) = &config.tls {
        options = with_tls(options, tls, base_dir)?;
    }
    Ok(options)
}

/// `options` with TLS required, trusting `tls.ca` (or the system's roots) and presenting
/// `tls.cert` when set; each file checked first.
fn with_tls(
    mut options: ConnectOptions,
    tls: &NatsTls,
    base_dir: &Path,
) -> anyhow::Result<ConnectOptions> {
    options = options.require_tls(true);
    if tls.handshake_first {
        options = options.tls_first();
    }
    if let Some(ca) = &tls.ca {
        let path = base_dir.join(ca);
        check_certificates("tls.ca", &path)?;
        options = options.add_root_certificates(path);
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        let (cert, key) = (base_dir.join(cert), base_dir.join(key));
        check_certificates("tls.cert", &cert)?;
        let pem = read("tls.key", &key)?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
            anyhow::anyhow!(
                "[cluster] tls.key {}: no private key (PEM: PKCS#8, PKCS#1 or SEC1): {err}",
                key.display()
            )
        })?;
        options = options.add_client_certificate(cert, key);
    }
    Ok(options)
}

/// Checks that `path` holds at least one PEM certificate, all of them readable.
fn check_certificates(setting: &str, path: &Path) -> anyhow::Result<()> {
    let pem = read(setting, path)?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|err| {
            anyhow::anyhow!(
                "[cluster] {setting} {}: unreadable certificate: {err}",
                path.display()
            )
        })?;
        count += 1;
    }
    anyhow::ensure!(
        count > 0,
        "[cluster] {setting} {}: no PEM certificate in the file",
        path.display()
    );
    Ok(())
}

/// The nkey seed in `path`: its first line that is neither empty nor a comment, which must be
/// a user seed (`SU...`). The error never shows the seed.
fn read_seed(path: &Path) -> anyhow::Result<String> {
    let text = read_text("nkey", path)?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with("//"))
        .unwrap_or_default();
    let pair = nkeys::KeyPair::from_seed(seed).map_err(|_| {
        anyhow::anyhow!(
            "[cluster] nkey {}: no valid nkey seed in the file (a user seed, SU...)",
            path.display()
        )
    })?;
    anyhow::ensure!(
        pair.key_pair_type() == nkeys::KeyPairType::User,
        "[cluster] nkey {}: the seed is not a user's (SU...)",
        path.display()
    );
    Ok(seed.to_string())
}

/// The text of `path`, read for `setting` (UTF-8, at most [`MAX_FILE_BYTES`]).
fn read_text(setting: &str, path: &Path) -> anyhow::Result<String> {
    String::from_utf8(read(setting, path)?)
        .map_err(|_| anyhow::anyhow!("[cluster] {setting} {}: not UTF-8 text", path.display()))
}

/// The bytes of `path`, read for `setting` (at most [`MAX_FILE_BYTES`]).
fn read(setting: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let fail = |err: std::io::Error| {
        anyhow::anyhow!("[cluster] {setting} {}: cannot read: {err}", path.display())
    };
    let size = std::fs::metadata(path).map_err(fail)?.len();
    anyhow::ensure!(
        size <= MAX_FILE_BYTES,
        "[cluster] {setting} {}: {size} bytes, more than the {MAX_FILE_BYTES} a credentials, key or certificate file may have",
        path.display()
    );
    std::fs::read(path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(edit: impl FnOnce(&mut ClusterConfig)) -> ClusterConfig {
        let mut config = ClusterConfig {
            nats: vec!["nats://127.0.0.1:4222".to_string()],
            ..ClusterConfig::default()
        };
        edit(&mut config);
        config
    }

    fn refused(config: &ClusterConfig, dir: &Path) -> String {
        options(config, dir, Arc::default())
            .map(|_| ())
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn a_user_seed_file_is_accepted_and_a_bad_one_is_named_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let pair = nkeys::KeyPair::new_user();
        let seed = pair.seed().unwrap();
        std::fs::write(dir.path().join("edge.nk"), format!("# edge\n{seed}\n")).unwrap();
        let good = config(|c| c.nkey = Some("edge.nk".into()));
        options(&good, dir.path(), Arc::default()).expect("a user seed");

        let account = nkeys::KeyPair::new_account().seed().unwrap();
        std::fs::write(dir.path().join("account.nk"), &account).unwrap();
        let err = refused(&config(|c| c.nkey = Some("account.nk".into())), dir.path());
        assert!(
            err.contains("not a user's") && !err.contains(&account),
            "{err}"
        );

        std::fs::write(dir.path().join("bad.nk"), "SUnotaseed").unwrap();
        let err = refused(&config(|c| c.nkey = Some("bad.nk".into())), dir.path());
        assert!(
            err.contains("[cluster] nkey") && err.contains("bad.nk"),
            "{err}"
        );
        assert!(!err.contains("SUnotaseed"), "{err}");

        let err = refused(&config(|c| c.nkey = Some("missing.nk".into())), dir.path());
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn a_credentials_file_must_hold_a_jwt_and_a_seed() {
        let dir = tempfile::tempdir().unwrap();
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        std::fs::write(dir.path().join("edge.creds"), creds).unwrap();
        options(
            &config(|c| c.creds = Some("edge.creds".into())),
            dir.path(),
            Arc::default(),
        )
        .expect("a well-formed credentials file");

        std::fs::write(dir.path().join("bad.creds"), "just text").unwrap();
        let err = refused(&config(|c| c.creds = Some("bad.creds".into())), dir.path());
        assert!(
            err.contains("[cluster] creds") && err.contains("bad.creds"),
            "{err}"
        );
    }

    #[test]
    fn tls_files_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["edge".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("edge.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("edge.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("empty.pem"), "nothing here").unwrap();
        let tls = |ca: &str, cert: &str, key: &str| {
            config(|c| {
                c.tls = Some(NatsTls {
                    ca: Some(ca.into()),
                    cert: Some(cert.into()),
                    key: Some(key.into()),
                    handshake_first: false,
                })
            })
        };
        options(
            &tls("ca.pem", "edge.pem", "edge.key"),
            dir.path(),
            Arc::default(),
        )
        .expect("good files");
        let err = refused(&tls("empty.pem", "edge.pem", "edge.key"), dir.path());
        assert!(
            err.contains("tls.ca") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = refused(&tls("ca.pem", "edge.key", "edge.key"), dir.path());
        assert!(err.contains("tls.cert"), "{err}");
        let err = refused(&tls("ca.pem", "edge.pem", "edge.pem"), dir.path());
        assert!(
            err.contains("tls.key") && err.contains("no private key"),
            "{err}"
        );
        let err = refused(&tls("ca.pem", "edge.pem", "gone.key"), dir.path());
        assert!(
            err.contains("tls.key") && err.contains("cannot read"),
            "{err}"
        );
    }

    #[test]
    fn the_last_server_error_explains_a_failure() {
        let errors = ServerErrors::default();
        assert_eq!(errors.explain("failed".into()), "failed");
        errors.record(&ServerError::Other(
            "Permissions Violation for Publish to \"$JS.API.STREAM.CREATE.x\"".into(),
        ));
        let text = errors.explain("failed".into());
        assert!(text.contains("Permissions Violation"), "{text}");
    }
}
