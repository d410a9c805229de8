//! stomp.py over TLS (`stomp_py_tls.py`): TLS 1.3 and 1.2 pinned on the client, against a
//! broker on a CA and certificates made at run time; then with mutual TLS required, with the
//! client certificate and without it.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

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
    let mut args: Vec<OsString> = vec![
        "--port".into(),
        broker.tls_addr().port().to_string().into(),
        "--ca".into(),
        pki.path("ca.pem").into(),
        "--tls".into(),
        tls.into(),
    ];
    if with_cert {
        args.extend([
            "--cert".into(),
            pki.path("client.pem").into(),
            "--key".into(),
            pki.path("client.key").into(),
        ]);
    }
    let run = super::run_bounded(&python, &script, &args, Duration::from_secs(120));
    let text = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        run.stdout, run.stderr
    );
    let status = run
        .status
        .unwrap_or_else(|| panic!("stomp.py over TLS hung (killed)\n{text}"));
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
