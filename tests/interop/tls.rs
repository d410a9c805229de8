//! stomp.py over TLS (`stomp_py_tls.py`): TLS 1.3 and 1.2 pinned on the client, against a
//! broker on a CA and certificates made at run time; then with mutual TLS required, with the
//! client certificate and without it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plugboard_test_support::broker::{Broker, Launch};
use plugboard_test_support::tls::Pki;

fn tls_broker(pki: &Pki, extra: &str) -> Broker {
    Launch::config_text(
        Path::new(env!("CARGO_BIN_EXE_plugboard")),
        &pki.tls_section(extra),
    )
    .tls_line()
    .start()
}

/// Runs the script; its exit status and output.
fn stomp_py_tls(broker: &Broker, pki: &Pki, tls: &str, with_cert: bool) -> (bool, String) {
    let python = super::venv_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/stomp_py_tls.py");
    if with_cert {
        std::fs::write(pki.path("client.pem"), &pki.sensor.cert_pem).unwrap();
        std::fs::write(pki.path("client.key"), &pki.sensor.key_pem).unwrap();
    }
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg("--port")
        .arg(broker.tls_addr().port().to_string())
        .arg("--ca")
        .arg(pki.path("ca.pem"))
        .arg("--tls")
        .arg(tls);
    if with_cert {
        command
            .arg("--cert")
            .arg(pki.path("client.pem"))
            .arg("--key")
            .arg(pki.path("client.key"));
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("script output");
    let text = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = status.unwrap_or_else(|| panic!("stomp.py over TLS hung (killed)\n{text}"));
    (status.success(), text)
}

#[test]
fn stomp_py_over_tls_1_3() {
    let pki = Pki::new();
    let broker = tls_broker(&pki, "");
    let (ok, out) = stomp_py_tls(&broker, &pki, "1.3", false);
    assert!(ok && out.contains("OK: stomp.py over TLSv1.3"), "{out}");
}

#[test]
fn stomp_py_over_tls_1_2() {
    let pki = Pki::new();
    let broker = tls_broker(&pki, "");
    let (ok, out) = stomp_py_tls(&broker, &pki, "1.2", false);
    assert!(ok && out.contains("OK: stomp.py over TLSv1.2"), "{out}");
}

#[test]
fn stomp_py_with_mutual_tls_needs_its_certificate() {
    let pki = Pki::new();
    let ca = format!("client_ca = {:?}", pki.path("ca.pem"));
    let broker = tls_broker(&pki, &ca);
    let (ok, out) = stomp_py_tls(&broker, &pki, "1.3", true);
    assert!(ok, "with its certificate: {out}");
    let (ok, out) = stomp_py_tls(&broker, &pki, "1.2", false);
    assert!(!ok, "without a certificate the connection must fail: {out}");
}
