//! Re-authentication (`reauth:true`) through stomp.py (`stomp_py_reauth.py` holds the checks),
//! with the broker's built-in users: the hook that runs again is the same for every
//! authenticator, plugins included (their expiry is tested with `jwt-auth` in the plugin tests).

use std::path::Path;
use std::time::Duration;

use super::harness::Broker;
use super::{run_script, venv_python};

const CONFIG: &str = "[[users]]\nlogin = \"alice\"\npasscode = \"alice-pw\"\n";

fn stomp_py_reauth(version: &str) {
    let python = venv_python();
    let broker = Broker::with_config(CONFIG);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/stomp_py_reauth.py");
    let args = [
        "--host".to_string(),
        broker.addr.ip().to_string(),
        "--port".to_string(),
        broker.addr.port().to_string(),
        "--version".to_string(),
        version.to_string(),
    ];
    let stdout = run_script(
        &format!("stomp.py re-authentication for STOMP {version}"),
        &python,
        &script,
        &args,
        Duration::from_secs(60),
    );
    eprintln!("{}", stdout.trim());
}

#[test]
fn stomp_py_reauth_1_1() {
    stomp_py_reauth("1.1");
}

#[test]
fn stomp_py_reauth_1_2() {
    stomp_py_reauth("1.2");
}
