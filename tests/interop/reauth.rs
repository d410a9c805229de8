//! Re-authentication (`reauth:true`) through stomp.py (`stomp_py_reauth.py` holds the checks),
//! with the broker's built-in users: the hook that runs again is the same for every
//! authenticator, plugins included (their expiry is tested with `jwt-auth` in the plugin tests).

use std::time::Duration;

use super::run_stomp_py;

const CONFIG: &str = "[[users]]\nlogin = \"alice\"\npasscode = \"alice-pw\"\n";

fn stomp_py_reauth(version: &str) {
    let within = Duration::from_secs(60);
    run_stomp_py(
        "stomp_py_reauth.py",
        "re-authentication",
        CONFIG,
        version,
        within,
    );
}

#[test]
fn stomp_py_reauth_1_1() {
    stomp_py_reauth("1.1");
}

#[test]
fn stomp_py_reauth_1_2() {
    stomp_py_reauth("1.2");
}
