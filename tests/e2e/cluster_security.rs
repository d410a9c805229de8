//! Cluster mode's connection to NATS (docs/cluster.md, "Securing the link to NATS"): TLS with a
//! client certificate (certificates made in the test), an nkey seed file, a credentials file on
//! an operator-mode server (JWTs made in the test), and the clear refusal to start when NATS
//! refuses the edge (a bad certificate, a wrong password, a user without permission for
//! JetStream's API, a forged JWT). nats-server as in `cluster.rs`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use plugboard_test_support::broker::exit_within;
use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};
use plugboard_test_support::tls::Pki;

use super::cluster::{
    client, cluster_name, edge_on, message_within, plugboard, target_dir, ACROSS,
};

/// How long an edge that cannot log in may take to give up (its connect and publish
/// timeouts are a few seconds in these tests).
const REFUSED_WITHIN: Duration = Duration::from_secs(60);

/// Starts an edge on `toml` that must refuse to start; returns its stderr.
fn refused_start(toml: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("plugboard.toml");
    std::fs::write(&config, toml).expect("write config");
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(plugboard())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn plugboard");
    let Some(status) = exit_within(&mut child, REFUSED_WITHIN) else {
        panic!(
            "the edge did not give up within {REFUSED_WITHIN:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !status.success(),
        "the edge must refuse to start:\n{stderr}"
    );
    stderr
}

/// The `[cluster]` section of an edge in cluster `name` on `nats`, with `extra` lines (which
/// may end with a `[cluster.tls]` table).
fn cluster_toml(nats: &NatsCluster, name: &str, extra: &str) -> String {
    format!(
        "[cluster]\nnats = [\"{}\"]\nname = \"{name}\"\nconnect_timeout_ms = 3000\npublish_timeout_ms = 1500\n{extra}\n",
        nats.nodes[0].url()
    )
}

/// A SEND with a receipt on `edge` comes back through JetStream to a subscriber on the same
/// edge (the publish was acknowledged, the consumer pulled it).
async fn round_trip(edge: &plugboard_test_support::broker::Broker, body: &str) {
    let dest = "/queue/secured";
    let mut p = client(edge).await;
    p.send_r(dest, body).await;
    let mut c = client(edge).await;
    c.subscribe("s", dest, "client-individual").await;
    let m = message_within(&mut c, ACROSS).await;
    assert_eq!(m.body_str(), body);
    c.ack(&m).await;
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.to_str().expect("UTF-8 path"))
}

#[tokio::test]
async fn cluster_tls_to_nats_with_a_client_certificate_and_refusals_that_say_why() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_tls_to_nats") else {
        return;
    };
    let pki = Pki::new();
    std::fs::write(pki.path("edge.pem"), &pki.sensor.cert_pem).expect("write");
    std::fs::write(pki.path("edge.key"), &pki.sensor.key_pem).expect("write");
    std::fs::write(pki.path("rogue-edge.pem"), &pki.rogue_sensor.cert_pem).expect("write");
    std::fs::write(pki.path("rogue-edge.key"), &pki.rogue_sensor.key_pem).expect("write");
    // The client port speaks TLS only and verifies client certificates against the test CA.
    let tls = format!(
        "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: true\n  timeout: 2\n}}",
        quoted(&pki.path("server.pem")),
        quoted(&pki.path("server.key")),
        quoted(&pki.path("ca.pem")),
    );
    let nats = NatsCluster::start_with(&bin, 1, &tls);
    let name = cluster_name();
    let with_tls = |ca: &str, cert: &str, key: &str| {
        format!(
            "[cluster.tls]\nca = {}\ncert = {}\nkey = {}\n",
            quoted(&pki.path(ca)),
            quoted(&pki.path(cert)),
            quoted(&pki.path(key)),
        )
    };
    let urls = [nats.nodes[0].url()];
    let edge = edge_on(&urls, &name, &with_tls("ca.pem", "edge.pem", "edge.key"));
    round_trip(&edge, "over TLS").await;

    // A client certificate from a CA the server does not trust: refused at start.
    let err = refused_start(&cluster_toml(
        &nats,
        &name,
        &with_tls("ca.pem", "rogue-edge.pem", "rogue-edge.key"),
    ));
    assert!(
        err.contains("cluster mode") && err.contains("connecting to NATS"),
        "{err}"
    );
    // A server certificate the edge does not trust: refused at start.
    let err = refused_start(&cluster_toml(
        &nats,
        &name,
        &with_tls("rogue-ca.pem", "edge.pem", "edge.key"),
    ));
    assert!(err.contains("connecting to NATS"), "{err}");
    // Without TLS the server (which requires it) is not reached either.
    let err = refused_start(&cluster_toml(&nats, &name, ""));
    assert!(err.contains("connecting to NATS"), "{err}");
    // A key file that is not a key is named before anything is tried.
    let err = refused_start(&cluster_toml(
        &nats,
        &name,
        &with_tls("ca.pem", "edge.pem", "edge.pem"),
    ));
    assert!(
        err.contains("[cluster] tls.key") && err.contains("no private key"),
        "{err}"
    );
}

#[tokio::test]
async fn cluster_nkey_login_works_and_a_user_without_permission_is_refused_clearly() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_nkey_login") else {
        return;
    };
    let edge_key = nkeys::KeyPair::new_user();
    // The `reader` may not use JetStream's API (it could only read core subjects).
    let authorization = format!(
        "authorization {{\n  users = [\n    {{ nkey: \"{}\" }}\n    {{ user: \"reader\", password: \"reader-pass\", permissions: {{ publish: {{ deny: [\"$JS.API.>\"] }} }} }}\n  ]\n}}",
        edge_key.public_key()
    );
    let nats = NatsCluster::start_with(&bin, 1, &authorization);
    let name = cluster_name();
    let dir = tempfile::tempdir().expect("tempdir");
    let seed_file = dir.path().join("edge.nk");
    std::fs::write(&seed_file, edge_key.seed().expect("seed")).expect("write seed");

    let urls = [nats.nodes[0].url()];
    let edge = edge_on(&urls, &name, &format!("nkey = {}", quoted(&seed_file)));
    round_trip(&edge, "signed in with an nkey").await;

    // A user NATS knows but who may not make streams: the start fails and says why.
    let err = refused_start(&cluster_toml(
        &nats,
        &name,
        "user = \"reader\"\npassword = \"reader-pass\"",
    ));
    assert!(
        err.contains("Permissions Violation") && err.contains("$JS.API"),
        "the refusal names NATS's permissions violation: {err}"
    );
    assert!(
        !err.contains("reader-pass"),
        "no password in the log: {err}"
    );
    // A wrong password: NATS's authorization violation, at once.
    let err = refused_start(&cluster_toml(
        &nats,
        &name,
        "user = \"reader\"\npassword = \"wrong\"",
    ));
    assert!(err.contains("authorization violation"), "{err}");
    // Another user's seed: refused the same way.
    let stranger = dir.path().join("stranger.nk");
    std::fs::write(&stranger, nkeys::KeyPair::new_user().seed().expect("seed"))
        .expect("write seed");
    let err = refused_start(&cluster_toml(
        &nats,
        &name,
        &format!("nkey = {}", quoted(&stranger)),
    ));
    assert!(err.contains("authorization violation"), "{err}");
}

/// A NATS JWT (`ed25519-nkey`) with `claims` (`iss` and `sub` filled in), signed by `issuer`.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, mut claims: serde_json::Value) -> String {
    use data_encoding::BASE64URL_NOPAD;
    claims["iss"] = issuer.public_key().into();
    claims["sub"] = subject.into();
    claims["iat"] = 1_700_000_000u64.into();
    claims["jti"] = unique_jti(subject).into();
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

fn unique_jti(subject: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{subject}-{}", std::process::id()).as_bytes());
    data_encoding::BASE32_NOPAD.encode(&digest)
}

#[tokio::test]
async fn cluster_creds_file_logs_in_with_a_user_jwt_on_an_operator_mode_server() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_creds_file") else {
        return;
    };
    // Operator → account (JetStream allowed) → user, as `nsc` would make them (made here,
    // with nkeys, for this run only).
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        serde_json::json!({"name": "test-operator", "nats": {"type": "operator", "version": 2}}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        serde_json::json!({"name": "edges", "nats": {"limits": unlimited, "type": "account", "version": 2}}),
    );
    let user_jwt = nats_jwt(
        &account,
        &user.public_key(),
        serde_json::json!({"name": "edge", "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}}),
    );
    // The system account JetStream needs in operator mode.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        serde_json::json!({"name": "SYS", "nats": {"type": "account", "version": 2}}),
    );
    let server = format!(
        "operator: \"{operator_jwt}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{account_jwt}\"\n  {}: \"{system_jwt}\"\n}}",
        system.public_key(),
        account.public_key(),
        system.public_key()
    );
    let nats = NatsCluster::start_with(&bin, 1, &server);
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = dir.path().join("edge.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().expect("seed")
        ),
    )
    .expect("write creds");
    let name = cluster_name();
    let urls = [nats.nodes[0].url()];
    let edge = edge_on(&urls, &name, &format!("creds = {}", quoted(&creds)));
    round_trip(&edge, "signed in with a credentials file").await;

    // A user JWT the operator's account did not sign: refused at start.
    let stranger_account = nkeys::KeyPair::new_account();
    let forged = nats_jwt(
        &stranger_account,
        &user.public_key(),
        serde_json::json!({"name": "edge", "nats": {"pub": {}, "sub": {}, "type": "user", "version": 2}}),
    );
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{forged}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().expect("seed")
        ),
    )
    .expect("write creds");
    let err = refused_start(&cluster_toml(
        &nats,
        &name,
        &format!("creds = {}", quoted(&creds)),
    ));
    assert!(err.contains("authorization violation"), "{err}");
}
